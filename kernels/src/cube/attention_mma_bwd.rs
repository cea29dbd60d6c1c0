//! Flash-attention backward with register-resident tiles (FlashAttention-2 Algorithm 2, Dao 2023,
//! arXiv 2307.08691) on `mma.sync.m16n8k16` ([`super::mma_frags`]), from the forward's
//! log-sum-exp and `D = rowsum(dO∘O)` ([`super::attention_kernels::flash_delta_kernel`]):
//! `P = exp(scale·S − lse)` (computed as `2^(scale·log2 e·S − lse·log2 e)`,
//! [`super::attention_kernels::exp2`]), `dP = dO Vᵀ`, `dS = P∘(dP − D)`, `dQ = scale·dS K`,
//! `dK = scale·dSᵀ Q`, `dV = Pᵀ dO`.
//!
//! Two kernels, as the tensor-core ones of [`super::attention_cmma_bwd`]:
//! - [`flash_dq_mma_kernel`]: cube = `16·mtiles·planes` query rows of one head; per 64-key tile
//!   each plane computes `S` and `dP` (`[16, 64]`, or `[32, 32]` twice with two M tiles) in
//!   accumulators, turns them into `dS` in registers, and adds `dS K` to its dQ accumulators (the
//!   `dS` accumulator pairs are the A fragments).
//! - [`flash_dkv_mma_kernel`]: cube = `16·planes` key rows and one query head; loops over the head's
//!   32-query tiles (with grouped-query attention each head's share of dK and dV, added up per KV
//!   head by [`super::attention_kernels::group_sum_kernel`]); each plane
//!   computes `Sᵀ = K Qᵀ` and `dPᵀ = V dOᵀ` `[16, 32]`, then `Pᵀ` and `dSᵀ` in registers, and adds
//!   `Pᵀ dO` and `dSᵀ Q` to its dV and dK accumulators.
//! - Fused (`fused = true`, FlashAttention-2's single backward kernel): the dK/dV kernel also
//!   stores each step's `dS` in shared memory and adds `dS K` (`[32, 16·planes] ×
//!   [16·planes, D]`, K already resident) to an f32 dQ with atomic adds ([`add_dq`]), scaled and
//!   cast by the launcher; the dQ kernel does not run. Five products per (key, query) tile instead of seven; the atomic
//!   order makes dQ's last bits vary from run to run.
//!
//! Q, K, V and dO are staged 16 bytes at a time. With one M tile per plane the dQ kernel holds its
//! rows' Q and dO fragments in registers (`D/4` each per unit, beside `D/2 + 32 + 32` of
//! accumulators); with two it re-reads them for each 32-key half (accumulators `D + 32 + 32`); the
//! dK/dV kernel re-reads K's and V's for each step (its accumulators take `D + 16 + 16`). `P` and `dS` are cast
//! to the input dtype for their products, as FA2 does. Masking as the forward: key `j` is visible
//! to query `i` of batch row `b` iff `j ≥ pad[b]` and, if causal, `j ≤ q_offset + i`; padding
//! queries carry `lse = f32::MAX`, which zeroes their `P`. `ldmatrix` and `emulate` as in
//! [`super::attention_mma`].

use super::attention_kernels::{LOG2_E, batch_head, exp2, key_range, key_tile, lse_base2, query_tile, visible_end};
use super::attention_mma::{MAX_HEAD_DIM, ROWS_PER_PLANE, ld_tile};
use super::mma_frags::{PLANE, load_a, load_at, load_b_pair, load_bt_pair, mma_pair_tiles, scratch_len, stage_rows_vec};
use super::tile_copy::{TileCopy, commit_to, copy_row_pair, wait_for};
use cubecl::prelude::*;

/// Keys per step of the dQ kernel.
pub const BLOCK_K: usize = 64;
/// Queries per step of the dK/dV kernel.
pub const BLOCK_Q: usize = 32;

/// Shared memory of [`flash_dq_mma_kernel`] with `mtiles` M tiles per plane in bytes: Q and dO
/// rows, two K and two V tiles, the emulation scratch, two fences.
pub fn dq_shared_bytes(d: usize, elem: usize, planes: usize, mtiles: usize, emulate: bool) -> usize {
    (2 * planes * mtiles * ROWS_PER_PLANE + 4 * BLOCK_K) * ld_tile(d) * elem + 4 * scratch_len(planes, emulate) + 16
}

/// Shared memory of [`flash_dkv_mma_kernel`] in bytes: K and V rows, two Q and two dO tiles, the
/// tiles' lse and D, the emulation scratch, `dS` when fused, two fences.
pub fn dkv_shared_bytes(d: usize, elem: usize, planes: usize, emulate: bool, fused: bool) -> usize {
    (2 * planes * ROWS_PER_PLANE + 4 * BLOCK_Q) * ld_tile(d) * elem
        + 4 * (4 * BLOCK_Q + scratch_len(planes, emulate))
        + ds_len(planes, fused) * elem
        + 16
}

/// Elements of the fused kernel's `dS` tile, `[BLOCK_Q, 16·planes + 8]` (rows padded by 16 bytes
/// of f16 against bank conflicts, as `ld_tile`); 8, never read, when not fused.
pub const fn ds_len(planes: usize, fused: bool) -> usize {
    if fused { BLOCK_Q * ds_ld(planes) } else { 8 }
}

/// Row stride of the fused kernel's `dS` tile in elements.
pub const fn ds_ld(planes: usize) -> usize {
    planes * ROWS_PER_PLANE + 8
}

/// How the fused kernel's planes share its dQ product `[BLOCK_Q, D]` (2 M tiles × `D/16` column
/// pairs): `(m_split, d_split)`, planes per M tile and per column range. Planes past
/// `m_split · d_split` (when `D/16` has no fitting divisor) repeat another plane's product and
/// write nothing.
pub const fn dq_split(planes: usize, head_dim: usize) -> (usize, usize) {
    let m_split = if planes >= 2 { 2 } else { 1 };
    let pairs = head_dim / 16;
    let mut d = planes / m_split;
    while d > 1 && !pairs.is_multiple_of(d) {
        d -= 1;
    }
    (m_split, d)
}

/// Planes per cube when emulating: the most (≤ 4) for which the kernels that run (both, the dQ
/// kernel with `dq_mtiles` M tiles per plane, or the fused one) fit `max_shared` bytes; `None`
/// when none does or the head dim is not a multiple of 16 (at most [`MAX_HEAD_DIM`]).
pub fn emulation_planes(d: usize, elem: usize, max_shared: usize, fused: bool, dq_mtiles: usize) -> Option<usize> {
    if !d.is_multiple_of(16) || d > MAX_HEAD_DIM {
        return None;
    }
    [4, 2, 1].into_iter().find(|&p| {
        let dq = if fused { 0 } else { dq_shared_bytes(d, elem, p, dq_mtiles, true) };
        dq.max(dkv_shared_bytes(d, elem, p, true, fused)) <= max_shared
    })
}

/// Loop passes one unit makes at most, the larger of the two kernels (the dQ kernel with
/// `dq_mtiles` M tiles per plane; for the software adapter's loop limit; every other loop is
/// unrolled): tile loops and staging.
pub fn loop_iterations(tq: usize, tk: usize, d: usize, planes: usize, dq_mtiles: usize) -> usize {
    let units = planes * PLANE;
    let stage = |rows: usize| (rows * d).div_ceil(units) + 1;
    let edges = |mtiles: usize| 2 * stage(planes * mtiles * ROWS_PER_PLANE) + 1;
    // Per key tile: the loop pass, the K/V staging, and the dQ kernel's `dq_mtiles` halves (a loop
    // when emulated: its exiting pass counts too).
    let dq = tk.div_ceil(BLOCK_K) * (1 + 2 * stage(BLOCK_K) + dq_mtiles + 1) + edges(dq_mtiles);
    let dkv = 1 + tq.div_ceil(BLOCK_Q) * (1 + 2 * stage(BLOCK_Q)) + edges(1);
    dq.max(dkv)
}

/// `a · b` fragments for `[16·mtiles, D] × [D, 16·pairs]` into `acc` (M tile `mt`, column pair
/// `jp` in vectors `mt·stride + 4jp .. + 4`): A's rows at element `a_off` of `a_sh` (M tile `mt`
/// 16 rows further per tile), or with `held` (one M tile) A's fragments from [`hold_a`] in
/// `a_regs`; B's columns the rows of `b_sh` from element `b_off` (`X Yᵀ`). Each B fragment serves
/// every M tile.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn abt<F: Float, N: Size>(
    a_sh: &SharedMemory<Vector<F, N>>,
    a_off: usize,
    a_regs: &Array<Vector<F, Const<2>>>,
    b_sh: &SharedMemory<Vector<F, N>>,
    b_off: usize,
    acc: &mut Array<Vector<f32, Const<2>>>,
    xs: &mut SharedMemory<f32>,
    #[comptime] pairs: usize,
    #[comptime] mtiles: usize,
    #[comptime] stride: usize,
    #[comptime] ld: usize,
    #[comptime] head_dim: usize,
    #[comptime] vs: usize,
    #[comptime] ldmatrix: bool,
    #[comptime] emulate: bool,
    #[comptime] held: bool,
) {
    #[unroll]
    for kk in 0..comptime!(head_dim / 16) {
        let mut a = Array::<Vector<F, Const<2>>>::new(comptime!(4 * mtiles));
        if comptime!(held) {
            #[unroll]
            for i in 0..4usize {
                a[i] = a_regs[4 * kk + i];
            }
        } else {
            #[unroll]
            for mt in 0..mtiles {
                let f = load_a::<F, N>(a_sh, a_off + mt * 16 * ld + kk * 16, ld, vs, ldmatrix);
                #[unroll]
                for i in 0..4usize {
                    a[mt * 4 + i] = f[i];
                }
            }
        }
        #[unroll]
        for jp in 0..pairs {
            let f = load_bt_pair::<F, N>(b_sh, b_off + jp * 16 * ld + kk * 16, ld, vs, ldmatrix);
            mma_pair_tiles::<F>(&a, &f, acc, mtiles, stride, comptime!(jp * 4), xs, emulate);
        }
    }
}

/// The A fragments of the 16 rows at element `off` of `sh`, all `D/16` of them (4 vectors each):
/// held in registers by the dQ kernel, whose Q and dO rows stay the same over its key tiles.
#[cube]
fn hold_a<F: Float, N: Size>(sh: &SharedMemory<Vector<F, N>>, off: usize, #[comptime] ld: usize, #[comptime] head_dim: usize, #[comptime] vs: usize, #[comptime] ldmatrix: bool) -> Array<Vector<F, Const<2>>> {
    let mut regs = Array::<Vector<F, Const<2>>>::new(comptime!(4 * (head_dim / 16)));
    #[unroll]
    for kk in 0..comptime!(head_dim / 16) {
        let a = load_a::<F, N>(sh, off + kk * 16, ld, vs, ldmatrix);
        #[unroll]
        for i in 0..4usize {
            regs[4 * kk + i] = a[i];
        }
    }
    regs
}

/// `acc[16·mtiles, D] += p[16·mtiles, 16·steps] · b_sh[16·steps, D]` (`b_sh`'s rows from element
/// `b_off`): `p`'s accumulator pairs (M tile `mt`'s blocks of 8 columns in vectors `mt·p_stride +
/// 2j`, `+ 1`) cast to the input dtype as A fragments; `acc`'s M tile `mt` from vector
/// `mt·acc_stride`. Each B fragment serves every M tile.
#[cube]
#[allow(clippy::too_many_arguments)]
fn pv<F: Float, N: Size>(
    p: &Array<Vector<f32, Const<2>>>,
    b_sh: &SharedMemory<Vector<F, N>>,
    b_off: usize,
    acc: &mut Array<Vector<f32, Const<2>>>,
    xs: &mut SharedMemory<f32>,
    #[comptime] steps: usize,
    #[comptime] mtiles: usize,
    #[comptime] p_stride: usize,
    #[comptime] acc_stride: usize,
    #[comptime] ld: usize,
    #[comptime] head_dim: usize,
    #[comptime] vs: usize,
    #[comptime] ldmatrix: bool,
    #[comptime] emulate: bool,
) {
    #[unroll]
    for kk in 0..steps {
        let mut a = Array::<Vector<F, Const<2>>>::new(comptime!(4 * mtiles));
        #[unroll]
        for mt in 0..mtiles {
            #[unroll]
            for i in 0..4usize {
                // Register i: row half i % 2, column block 2kk + i / 2.
                a[mt * 4 + i] = Vector::<F, Const<2>>::cast_from(p[mt * p_stride + 2 * (2 * kk + i / 2) + i % 2]);
            }
        }
        #[unroll]
        for dp in 0..comptime!(head_dim / 16) {
            let f = load_b_pair::<F, N>(b_sh, b_off + kk * 16 * ld + dp * 16, ld, vs, ldmatrix);
            mma_pair_tiles::<F>(&a, &f, acc, mtiles, acc_stride, comptime!(dp * 4), xs, emulate);
        }
    }
}

/// The dK/dV kernel's step inputs into buffer `buf`: rows `qt..qt + BLOCK_Q` of one query head's
/// Q and dO (their rows at elements `qb` and `ob`, `q_rs` and `o_rs` apart) through `C`; the
/// caller commits and synchronises. Their lse and D come through [`load_rows`] and
/// [`store_rows`]. Addresses come precomputed: shapes and strides read here would be global loads
/// on every step (the compiler cannot hoist them past the loop's stores).
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage_q_tile<F: Float, N: Size, C: TileCopy>(
    q: &Tensor<Vector<F, N>>,
    dout: &Tensor<Vector<F, N>>,
    qb: usize,
    q_rs: usize,
    ob: usize,
    o_rs: usize,
    qt: usize,
    tq: usize,
    qs: &mut SharedMemory<Vector<F, N>>,
    dos: &mut SharedMemory<Vector<F, N>>,
    buf: usize,
    #[comptime] ld: usize,
    #[comptime] head_dim: usize,
    #[comptime] vs: usize,
    #[comptime] units: usize,
) {
    let off = buf * comptime!(BLOCK_Q * ld / vs);
    copy_row_pair::<F, N, C>(q, qb, q_rs, dout, ob, o_rs, qt, tq, qs, dos, off, BLOCK_Q, ld, head_dim, vs, units);
}

/// The lse and D of query `qt + tid` for unit `tid < block` (the step's queries; the head's rows from `rb` on), as
/// `(lse, D)`: plain loads, issued a step before [`store_rows`] stores them, so that their
/// latency passes under the step's products (stored right away, they stalled the first plane
/// on every step while the others waited at the next barrier). Rows past Tq get lse = f32::MAX,
/// so their P is 0.
#[cube]
pub(super) fn load_rows(lse: &Tensor<f32>, delta: &Tensor<f32>, rb: usize, qt: usize, tq: usize, tid: usize, #[comptime] block: usize) -> (f32, f32) {
    let mut l = f32::max_value();
    let mut dd = f32::new(0.0);
    if tid < block && qt + tid < tq {
        l = lse[rb + qt + tid];
        dd = delta[rb + qt + tid];
    }
    (l, dd)
}

/// Stores [`load_rows`]'s lse `l` and D `dd` into buffer `buf` of `lse_s` (in base 2, [`lse_base2`]) and
/// `delta_s`; the caller synchronises.
#[cube]
pub(super) fn store_rows(l: f32, dd: f32, lse_s: &mut SharedMemory<f32>, delta_s: &mut SharedMemory<f32>, buf: usize, tid: usize, #[comptime] block: usize) {
    if tid < block {
        lse_s[buf * block + tid] = lse_base2(l);
        delta_s[buf * block + tid] = dd;
    }
}

/// The fused backward's dQ share of one step: `dq_acc[row_base + qt + i, :] += Σ_k dS[i, k]
/// K[k, :]` (the launcher scales the sums) for the step's `block_q` queries `i` and the cube's `16·planes` keys `k` (FA2
/// Algorithm 2, line 14, with atomic adds): `dS` `[block_q, 16·planes]` query-major in `dss`
/// (row stride `ld_s` elements, vectors of `s_vs`), or with `key_major` its transpose `dSᵀ`
/// `[16·planes, block_q]` (as [`super::attention_mma_dkv`] stores it); K's rows in `ks`. The planes
/// share the product as [`dq_split`] says; rows past `tq` are not written. All units call it, after
/// a barrier that orders `dss`'s stores.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn add_dq<F: Float, N: Size, S: Size>(
    dss: &SharedMemory<Vector<F, S>>,
    ks: &SharedMemory<Vector<F, N>>,
    dq_acc: &mut Tensor<Atomic<f32>>,
    row_base: usize,
    qt: usize,
    tq: usize,
    xs: &mut SharedMemory<f32>,
    #[comptime] planes: usize,
    #[comptime] block_q: usize,
    #[comptime] ld_s: usize,
    #[comptime] s_vs: usize,
    #[comptime] key_major: bool,
    #[comptime] ld: usize,
    #[comptime] head_dim: usize,
    #[comptime] vs: usize,
    #[comptime] ldmatrix: bool,
    #[comptime] emulate: bool,
) {
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let (g, t) = (lane / 4, lane % 4);
    let m_split = comptime!(dq_split(planes, head_dim).0);
    let d_split = comptime!(dq_split(planes, head_dim).1);
    // M tiles and column pairs per plane.
    let mts = comptime!(block_q / 16 / m_split);
    let pps = comptime!(head_dim / 16 / d_split);
    let active = comptime!(m_split * d_split);
    let slot = plane % active;
    let m0 = slot % m_split;
    let p0 = (slot / m_split) * pps;
    // Accumulators: M tile mi, pair dp in vectors 4·pps·mi + 4dp .. + 4.
    let mut acc = zeros(comptime!(4 * mts * pps));
    #[unroll]
    for kk in 0..comptime!(planes) {
        let mut a = Array::<Vector<F, Const<2>>>::new(comptime!(4 * mts));
        #[unroll]
        for mi in 0..mts {
            let q0 = (m0 + m_split * mi) * 16;
            let f = if comptime!(key_major) {
                load_at::<F, S>(dss, kk * 16 * ld_s + q0, ld_s, s_vs, ldmatrix)
            } else {
                load_a::<F, S>(dss, q0 * ld_s + kk * 16, ld_s, s_vs, ldmatrix)
            };
            #[unroll]
            for i in 0..4usize {
                a[4 * mi + i] = f[i];
            }
        }
        #[unroll]
        for dp in 0..pps {
            let f = load_b_pair::<F, N>(ks, kk * 16 * ld + (p0 + dp) * 16, ld, vs, ldmatrix);
            mma_pair_tiles::<F>(&a, &f, &mut acc, mts, comptime!(4 * pps), comptime!(4 * dp), xs, emulate);
        }
    }
    if plane < active {
        #[unroll]
        for mi in 0..mts {
            #[unroll]
            for r in 0..2usize {
                let qi = qt + (m0 + m_split * mi) * 16 + g + 8 * r;
                if qi < tq {
                    let base = (row_base + qi) * head_dim + p0 * 16 + 2 * t;
                    #[unroll]
                    for dp in 0..pps {
                        #[unroll]
                        for h in 0..2usize {
                            let y = acc[comptime!(4 * pps * mi + 4 * dp + 2 * h) + r];
                            let at = base + dp * 16 + 8 * h;
                            dq_acc[at].fetch_add(y[0]);
                            dq_acc[at + 1].fetch_add(y[1]);
                        }
                    }
                }
            }
        }
    }
}

/// `n` zero accumulator vectors.
#[cube]
pub(super) fn zeros(#[comptime] n: usize) -> Array<Vector<f32, Const<2>>> {
    let mut a = Array::<Vector<f32, Const<2>>>::new(n);
    #[unroll]
    for i in 0..n {
        a[i] = Vector::new(f32::new(0.0));
    }
    a
}

/// dQ: cube (batch·head, `16·mtiles·planes` query rows, 1) (see
/// [`super::attention_kernels::batch_head`]); dq `[B, H, Tq, D]`, lse and delta `[B, H, Tq]`
/// contiguous; Q, K, V, dO as vectors of `N` (see [`super::attention_mma::flash_fwd_mma_kernel`]).
/// Each plane owns `mtiles` 16-row M tiles. With 1 it holds its rows' Q and dO fragments and
/// takes each 64-key tile at once; with 2 (32 rows, as the forward's default) its accumulators
/// double, so it takes the tile as two 32-key halves (`S` and `dP` `[32, 32]`) and re-reads Q's
/// and dO's fragments: 80 fragment loads per 192 tensor-core operations instead of 96.
#[cube(launch_unchecked, address_type = "dynamic", fast_math = FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf)]
#[allow(clippy::too_many_arguments)]
pub fn flash_dq_mma_kernel<F: Float, I: Numeric, N: Size, C: TileCopy>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    dout: &Tensor<Vector<F, N>>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    pad: &Tensor<I>,
    dq: &mut Tensor<F>,
    scale: f32,
    q_offset: usize,
    #[comptime] causal: bool,
    #[comptime] head_dim: usize,
    #[comptime] planes: usize,
    #[comptime] mtiles: usize,
    #[comptime] ldmatrix: bool,
    #[comptime] emulate: bool,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let units = comptime!(PLANE * planes);
    let plane_rows = comptime!(ROWS_PER_PLANE * mtiles);
    let rows = comptime!(plane_rows * planes);
    let (nh, tq) = (q.shape(1), q.shape(2));
    let (b, h) = batch_head(nh);
    // Causal: the longest query tiles first.
    let first_row = query_tile(causal) * rows;
    let (nkv, tk) = (k.shape(1), k.shape(2));
    let kvh = h / (nh / nkv);
    let pad_b = u32::cast_from(pad[b * pad.stride(0)]) as usize;
    let ld = comptime!(ld_tile(head_dim));
    let vs = q.vector_size();
    let nd = comptime!(head_dim / 8);
    // Keys per product step and the accumulators' vectors per M tile (S/dP and dQ).
    let sub = comptime!(if mtiles == 1 { BLOCK_K } else { BLOCK_K / 2 });
    let sl = comptime!(2 * sub / 8);
    let ol = comptime!(2 * nd);
    let nr = comptime!(2 * mtiles);
    let held = comptime!(mtiles == 1);

    let mut qs = SharedMemory::<Vector<F, N>>::new(comptime!(rows * ld_tile(head_dim) / vs));
    let mut dos = SharedMemory::<Vector<F, N>>::new(comptime!(rows * ld_tile(head_dim) / vs));
    // K and V: two buffers each (see `tile_copy`).
    let kv_tile = comptime!(BLOCK_K * ld_tile(head_dim) / vs);
    let mut ks = SharedMemory::<Vector<F, N>>::new(comptime!(2 * kv_tile));
    let mut vt = SharedMemory::<Vector<F, N>>::new(comptime!(2 * kv_tile));
    let mut xs = SharedMemory::<f32>::new(comptime!(scratch_len(planes, emulate)));
    let fence0 = C::fence();
    let fence1 = C::fence();

    let qb = b * q.stride(0) + h * q.stride(1);
    let ob = b * dout.stride(0) + h * dout.stride(1);
    stage_rows_vec::<F, N>(q, qb, q.stride(2), first_row, tq, &mut qs, 0usize, rows, ld, head_dim, vs, units);
    stage_rows_vec::<F, N>(dout, ob, dout.stride(2), first_row, tq, &mut dos, 0usize, rows, ld, head_dim, vs, units);

    // This unit's rows: i = 2·mt + r is row g + 16·mt + 8·r of its plane. Visible keys [pad_b,
    // hi), lse and D.
    let g = lane / 4;
    let t = lane % 4;
    let row0 = first_row + plane * plane_rows + g;
    let mut hi = Array::<usize>::new(nr);
    // P = 2^(s·scale₂ − lse₂): lse in base 2.
    let scale2 = scale * LOG2_E;
    let mut lse_r = Array::<f32>::new(nr);
    let mut delta_r = Array::<f32>::new(nr);
    #[unroll]
    for i in 0..nr {
        let row = row0 + comptime!(16 * (i / 2) + 8 * (i % 2));
        hi[i] = visible_end(row, tk, q_offset, causal);
        lse_r[i] = f32::max_value();
        delta_r[i] = f32::new(0.0);
        if row < tq {
            lse_r[i] = lse_base2(lse[(b * nh + h) * tq + row]);
            delta_r[i] = delta[(b * nh + h) * tq + row];
        }
    }
    let q_off = plane * plane_rows * ld;
    let mut acc = zeros(comptime!(mtiles * ol));
    // With one M tile, Q's and dO's fragments once (after a barrier that orders their staging):
    // without them each key tile re-read 16 of its 112 fragment loads.
    sync_cube();
    let mut qa = Array::<Vector<F, Const<2>>>::new(comptime!(if mtiles == 1 { 4 * (head_dim / 16) } else { 1usize }));
    let mut oa = Array::<Vector<F, Const<2>>>::new(comptime!(if mtiles == 1 { 4 * (head_dim / 16) } else { 1usize }));
    if comptime!(held) {
        let fq = hold_a::<F, N>(&qs, q_off, ld, head_dim, vs, ldmatrix);
        let fo = hold_a::<F, N>(&dos, q_off, ld, head_dim, vs, ldmatrix);
        #[unroll]
        for i in 0..comptime!(4 * (head_dim / 16)) {
            qa[i] = fq[i];
            oa[i] = fo[i];
        }
    }

    let kb = b * k.stride(0) + kvh * k.stride(1);
    let vb = b * v.stride(0) + kvh * v.stride(1);
    let (k_rs, v_rs) = (k.stride(2), v.stride(2));
    let (start, end) = key_range(first_row, rows, tq, tk, pad_b, q_offset, BLOCK_K, causal);
    let full_end = visible_end(first_row, tk, q_offset, causal);
    // The first K/V tile into buffer 0 (Q and dO are staged; the loop's barrier orders them).
    if start < end {
        copy_row_pair::<F, N, C>(k, kb, k_rs, v, vb, v_rs, start, tk, &mut ks, &mut vt, 0usize, BLOCK_K, ld, head_dim, vs, units);
        C::commit(&fence0);
    }
    let mut kt = start;
    let mut buf = 0usize;
    while kt < end {
        // Every plane is done with the other buffer; the next tile goes there (see `tile_copy`).
        sync_cube();
        let next = kt + BLOCK_K;
        if next < end {
            let other = (1 - buf) * kv_tile;
            copy_row_pair::<F, N, C>(k, kb, k_rs, v, vb, v_rs, next, tk, &mut ks, &mut vt, other, BLOCK_K, ld, head_dim, vs, units);
            commit_to::<C>(1 - buf, &fence0, &fence1);
        }
        wait_for::<C>(buf, &fence0, &fence1);
        // Unrolled on a GPU; emulated (lavapipe), a loop: its compiler took minutes more for the
        // unrolled halves.
        #[unroll(!emulate)]
        for half in 0..comptime!(BLOCK_K / sub) {
            // This step's keys: `sub` of them from key `k0`, their K/V rows from element `kvo`.
            let kvo = buf * comptime!(BLOCK_K * ld_tile(head_dim)) + half * comptime!(sub * ld_tile(head_dim));
            let k0 = kt + half * sub;
            // S = Q Kᵀ and dP = dO Vᵀ: [16·mtiles, D] × [D, sub].
            let mut s = zeros(comptime!(mtiles * sl));
            let mut dp = zeros(comptime!(mtiles * sl));
            abt::<F, N>(&qs, q_off, &qa, &ks, kvo, &mut s, &mut xs, comptime!(sub / 16), mtiles, sl, ld, head_dim, vs, ldmatrix, emulate, held);
            abt::<F, N>(&dos, q_off, &oa, &vt, kvo, &mut dp, &mut xs, comptime!(sub / 16), mtiles, sl, ld, head_dim, vs, ldmatrix, emulate, held);
            // dS = P∘(dP − D), into s; then, only in a step some row of the cube cannot fully
            // see, zero on hidden keys (selects, not branches: P may be inf there). Rows past Tq
            // and padding queries have lse = f32::MAX, so P = 0.
            #[unroll]
            for mt in 0..mtiles {
                #[unroll]
                for j in 0..comptime!(sub / 8) {
                    #[unroll]
                    for r in 0..2usize {
                        let x = s[mt * sl + 2 * j + r];
                        let y = dp[mt * sl + 2 * j + r];
                        let mut ds = Vector::<f32, Const<2>>::empty();
                        #[unroll]
                        for e in 0..2usize {
                            let p = exp2(x[e] * scale2 - lse_r[2 * mt + r]);
                            ds[e] = p * (y[e] - delta_r[2 * mt + r]);
                        }
                        s[mt * sl + 2 * j + r] = ds;
                    }
                }
            }
            if k0 < pad_b || k0 + sub > full_end {
                #[unroll]
                for mt in 0..mtiles {
                    #[unroll]
                    for j in 0..comptime!(sub / 8) {
                        #[unroll]
                        for r in 0..2usize {
                            let mut ds = s[mt * sl + 2 * j + r];
                            #[unroll]
                            for e in 0..2usize {
                                let key = k0 + 8 * j + 2 * t + e;
                                ds[e] = select(key >= pad_b && key < hi[2 * mt + r], ds[e], f32::new(0.0));
                            }
                            s[mt * sl + 2 * j + r] = ds;
                        }
                    }
                }
            }
            // dQ += dS K: [16·mtiles, sub] × [sub, D].
            pv::<F, N>(&s, &ks, kvo, &mut acc, &mut xs, comptime!(sub / 16), mtiles, sl, ol, ld, head_dim, vs, ldmatrix, emulate);
        }
        kt = next;
        buf = 1 - buf;
    }

    #[unroll]
    for i in 0..nr {
        let row = row0 + comptime!(16 * (i / 2) + 8 * (i % 2));
        if row < tq {
            let base = ((b * nh + h) * tq + row) * head_dim + 2 * t;
            #[unroll]
            for n in 0..nd {
                let y = acc[comptime!((i / 2) * ol + 2 * n + i % 2)] * Vector::new(scale);
                dq[base + 8 * n] = F::cast_from(y[0]);
                dq[base + 8 * n + 1] = F::cast_from(y[1]);
            }
        }
    }
}

/// dK, dV of one query head: cube (batch·head, `16·planes` key rows, 1) (see
/// [`super::attention_kernels::batch_head`]), looping over the head's query tiles; dk, dv `[B, H,
/// Tk, D]` contiguous, in `A`: with grouped-query attention (G query heads per KV head) each head's
/// share, in f32, which [`super::attention_kernels::group_sum_kernel`] then adds up per KV head
/// (FlashAttention-2's `dk_expanded`); without, dK and dV themselves in the input dtype. (One
/// head per cube rather than the G of a group: at 4096 tokens, 4 KV heads and 64-key tiles, the
/// G-head cubes made one partial wave of 256 on 132 SMs whose longest cube took twice the
/// average.) `fused`: also dQ / scale, added to the zeroed f32 `dq_acc` `[B, H, Tq, D]`
/// (contiguous; not touched otherwise).
#[cube(launch_unchecked, address_type = "dynamic", fast_math = FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf)]
#[allow(clippy::too_many_arguments)]
pub fn flash_dkv_mma_kernel<F: Float, I: Numeric, A: Float, N: Size, C: TileCopy>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    dout: &Tensor<Vector<F, N>>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    pad: &Tensor<I>,
    dk: &mut Tensor<A>,
    dv: &mut Tensor<A>,
    dq_acc: &mut Tensor<Atomic<f32>>,
    scale: f32,
    q_offset: usize,
    #[comptime] causal: bool,
    #[comptime] head_dim: usize,
    #[comptime] planes: usize,
    #[comptime] ldmatrix: bool,
    #[comptime] emulate: bool,
    #[comptime] fused: bool,
    #[define(F, I, A)] _dtypes: [StorageType; 3],
) {
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let units = comptime!(PLANE * planes);
    let rows = comptime!(ROWS_PER_PLANE * planes);
    let (nh, tq) = (q.shape(1), q.shape(2));
    let (nkv, tk) = (k.shape(1), k.shape(2));
    let (b, h) = batch_head(nh);
    let kvh = h / (nh / nkv);
    let first_key = key_tile() * rows;
    let pad_b = u32::cast_from(pad[b * pad.stride(0)]) as usize;
    let ld = comptime!(ld_tile(head_dim));
    let vs = q.vector_size();
    let nd = comptime!(head_dim / 8);

    let mut ks = SharedMemory::<Vector<F, N>>::new(comptime!(rows * ld_tile(head_dim) / vs));
    let mut vt = SharedMemory::<Vector<F, N>>::new(comptime!(rows * ld_tile(head_dim) / vs));
    // Q, dO and their rows' lse and D: two buffers each (see `tile_copy`).
    let q_tile = comptime!(BLOCK_Q * ld_tile(head_dim) / vs);
    let mut qs = SharedMemory::<Vector<F, N>>::new(comptime!(2 * q_tile));
    let mut dos = SharedMemory::<Vector<F, N>>::new(comptime!(2 * q_tile));
    // lse (base 2: P = 2^(s·scale₂ − lse₂)) and D.
    let scale2 = scale * LOG2_E;
    let mut lse_s = SharedMemory::<f32>::new(comptime!(2 * BLOCK_Q));
    let mut delta_s = SharedMemory::<f32>::new(comptime!(2 * BLOCK_Q));
    let mut xs = SharedMemory::<f32>::new(comptime!(scratch_len(planes, emulate)));
    // Fused: the step's dS, query-major (see `add_dq`).
    let mut dss = SharedMemory::<Vector<F, Const<1>>>::new(comptime!(ds_len(planes, fused)));
    let fence0 = C::fence();
    let fence1 = C::fence();

    let kb = b * k.stride(0) + kvh * k.stride(1);
    let vb = b * v.stride(0) + kvh * v.stride(1);
    stage_rows_vec::<F, N>(k, kb, k.stride(2), first_key, tk, &mut ks, 0usize, rows, ld, head_dim, vs, units);
    stage_rows_vec::<F, N>(v, vb, v.stride(2), first_key, tk, &mut vt, 0usize, rows, ld, head_dim, vs, units);

    // This unit's key rows g and g + 8 of its plane.
    let g = lane / 4;
    let t = lane % 4;
    let key0 = first_key + plane * ROWS_PER_PLANE + g;
    let mut key_ok = Array::<bool>::new(2usize);
    #[unroll]
    for r in 0..2usize {
        key_ok[r] = key0 + 8 * r < tk && key0 + 8 * r >= pad_b;
    }
    // Every key row of the cube is a real, unpadded key.
    let keys_full = first_key >= pad_b && first_key + rows <= tk;
    let k_off = plane * ROWS_PER_PLANE * ld;
    let mut acc_k = zeros(comptime!(2 * (head_dim / 8)));
    let mut acc_v = zeros(comptime!(2 * (head_dim / 8)));
    // Causal: queries before `first_key − q_offset` see none of this cube's keys.
    let mut q_start = 0;
    if causal && first_key > q_offset {
        q_start = ((first_key - q_offset) / BLOCK_Q) * BLOCK_Q;
    }

    // Q/dO rows and lse/D entries of batch row b: bases and strides read once (see `stage_q_tile`).
    let (q_b, q_hs, q_rs) = (b * q.stride(0), q.stride(1), q.stride(2));
    let (o_b, o_hs, o_rs) = (b * dout.stride(0), dout.stride(1), dout.stride(2));
    let r_b = b * nh * tq;
    // The head's Q/dO rows and lse/D entries.
    let (qh, oh, rh) = (q_b + h * q_hs, o_b + h * o_hs, r_b + h * tq);
    // Each query tile's Q/dO tiles are copied during the step before.
    // units ≥ 32 = BLOCK_Q: the first plane moves lse and D.
    let tid = plane * PLANE + lane;
    if q_start < tq {
        stage_q_tile::<F, N, C>(q, dout, qh, q_rs, oh, o_rs, q_start, tq, &mut qs, &mut dos, 0usize, ld, head_dim, vs, units);
        C::commit(&fence0);
        let (l, dd) = load_rows(lse, delta, rh, q_start, tq, tid, BLOCK_Q);
        store_rows(l, dd, &mut lse_s, &mut delta_s, 0usize, tid, BLOCK_Q);
    }
    let no_regs = Array::<Vector<F, Const<2>>>::new(1usize);
    let mut buf = 0usize;
    let mut qt = q_start;
    while qt < tq {
        // Every plane is done with the other buffer; the next step's tiles go there.
        sync_cube();
        let next_qt = qt + BLOCK_Q;
        if next_qt < tq {
            stage_q_tile::<F, N, C>(q, dout, qh, q_rs, oh, o_rs, next_qt, tq, &mut qs, &mut dos, 1 - buf, ld, head_dim, vs, units);
            commit_to::<C>(1 - buf, &fence0, &fence1);
        }
        // The next step's lse and D, stored after this step's products.
        let (next_l, next_d) = load_rows(lse, delta, rh, next_qt, tq, tid, BLOCK_Q);
        wait_for::<C>(buf, &fence0, &fence1);
        // This step's buffers: Q/dO in elements, lse/D in entries.
        let qo = buf * comptime!(BLOCK_Q * ld_tile(head_dim));
        let so = buf * BLOCK_Q;
        {
            // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ: [16, D] × [D, 32].
            let mut st = zeros(comptime!(2 * BLOCK_Q / 8));
            let mut dpt = zeros(comptime!(2 * BLOCK_Q / 8));
            // K's and V's fragments are re-read (held, they would take 64 more registers).
            abt::<F, N>(&ks, k_off, &no_regs, &qs, qo, &mut st, &mut xs, comptime!(BLOCK_Q / 16), 1usize, 0usize, ld, head_dim, vs, ldmatrix, emulate, false);
            abt::<F, N>(&vt, k_off, &no_regs, &dos, qo, &mut dpt, &mut xs, comptime!(BLOCK_Q / 16), 1usize, 0usize, ld, head_dim, vs, ldmatrix, emulate, false);
            // Pᵀ (into st) and dSᵀ = Pᵀ∘(dPᵀ − D) (into dpt); then, only in a tile where some
            // (key, query) pair of the cube is hidden, zero on hidden pairs (selects: P may be
            // inf there). Queries past Tq have lse = f32::MAX, so P = 0.
            #[unroll]
            for j in 0..comptime!(BLOCK_Q / 8) {
                #[unroll]
                for r in 0..2usize {
                    let x = st[2 * j + r];
                    let y = dpt[2 * j + r];
                    let mut p = Vector::<f32, Const<2>>::empty();
                    let mut ds = Vector::<f32, Const<2>>::empty();
                    #[unroll]
                    for e in 0..2usize {
                        let col = 8 * j + 2 * t + e;
                        let pe = exp2(x[e] * scale2 - lse_s[so + col]);
                        p[e] = pe;
                        ds[e] = pe * (y[e] - delta_s[so + col]);
                    }
                    st[2 * j + r] = p;
                    dpt[2 * j + r] = ds;
                }
            }
            if !keys_full || qt + BLOCK_Q > tq || (causal && first_key + rows > q_offset + qt + 1) {
                #[unroll]
                for j in 0..comptime!(BLOCK_Q / 8) {
                    #[unroll]
                    for r in 0..2usize {
                        let mut p = st[2 * j + r];
                        let mut ds = dpt[2 * j + r];
                        #[unroll]
                        for e in 0..2usize {
                            let qi = qt + 8 * j + 2 * t + e;
                            let mut vis = key_ok[r] && qi < tq;
                            if causal {
                                vis = vis && key0 + 8 * r <= q_offset + qi;
                            }
                            p[e] = select(vis, p[e], f32::new(0.0));
                            ds[e] = select(vis, ds[e], f32::new(0.0));
                        }
                        st[2 * j + r] = p;
                        dpt[2 * j + r] = ds;
                    }
                }
            }
            if comptime!(fused) {
                // dS (query-major) for the cube's dQ product: this unit's key rows g, g + 8 of
                // its plane, queries 8j + 2t + e.
                #[unroll]
                for j in 0..comptime!(BLOCK_Q / 8) {
                    #[unroll]
                    for r in 0..2usize {
                        let ds = dpt[2 * j + r];
                        #[unroll]
                        for e in 0..2usize {
                            let at = (8 * j + 2 * t + e) * comptime!(ds_ld(planes)) + plane * ROWS_PER_PLANE + g + 8 * r;
                            dss[at] = Vector::<F, Const<1>>::new(F::cast_from(ds[e]));
                        }
                    }
                }
            }
            // dV += Pᵀ dO and dK += dSᵀ Q: [16, 32] × [32, D].
            pv::<F, N>(&st, &dos, qo, &mut acc_v, &mut xs, comptime!(BLOCK_Q / 16), 1usize, 0usize, 0usize, ld, head_dim, vs, ldmatrix, emulate);
            pv::<F, N>(&dpt, &qs, qo, &mut acc_k, &mut xs, comptime!(BLOCK_Q / 16), 1usize, 0usize, 0usize, ld, head_dim, vs, ldmatrix, emulate);
        }
        if comptime!(fused) {
            // Every plane's dS is stored (and the next step's stores come after the loop's
            // barrier).
            sync_cube();
            add_dq::<F, N, Const<1>>(&dss, &ks, dq_acc, rh, qt, tq, &mut xs, planes, BLOCK_Q, comptime!(ds_ld(planes)), 1usize, false, ld, head_dim, vs, ldmatrix, emulate);
        }
        // The other buffer is free since this step's first barrier; the next one orders these.
        store_rows(next_l, next_d, &mut lse_s, &mut delta_s, 1 - buf, tid, BLOCK_Q);
        buf = 1 - buf;
        qt = next_qt;
    }

    #[unroll]
    for r in 0..2usize {
        let key = key0 + 8 * r;
        if key < tk {
            let base = ((b * nh + h) * tk + key) * head_dim + 2 * t;
            #[unroll]
            for n in 0..nd {
                let yk = acc_k[2 * n + r] * Vector::new(scale);
                let yv = acc_v[2 * n + r];
                dk[base + 8 * n] = A::cast_from(yk[0]);
                dk[base + 8 * n + 1] = A::cast_from(yk[1]);
                dv[base + 8 * n] = A::cast_from(yv[0]);
                dv[base + 8 * n + 1] = A::cast_from(yv[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dq_split_covers_the_product_with_whole_column_ranges() {
        // (planes, head dim) → (planes per M tile, per column range).
        assert_eq!(dq_split(4, 128), (2, 2));
        assert_eq!(dq_split(8, 128), (2, 4));
        assert_eq!(dq_split(2, 64), (2, 1));
        assert_eq!(dq_split(1, 64), (1, 1));
        // One column pair: the other two planes of four repeat a product and write nothing.
        assert_eq!(dq_split(4, 16), (2, 1));
        // Three pairs: six of eight planes write.
        assert_eq!(dq_split(8, 48), (2, 3));
        for planes in [1, 2, 4, 8] {
            for d in (16..=MAX_HEAD_DIM).step_by(16) {
                let (m, c) = dq_split(planes, d);
                assert!(m * c <= planes && (BLOCK_Q / 16).is_multiple_of(m) && (d / 16).is_multiple_of(c), "planes {planes}, d {d}");
            }
        }
    }

    #[test]
    fn fused_shared_memory_keeps_16_byte_alignment() {
        // `ldmatrix` reads dS rows at 16-byte boundaries; the arrays after it stay aligned.
        for planes in [1, 2, 4, 8] {
            assert!((ds_ld(planes) * 2).is_multiple_of(16));
            for fused in [false, true] {
                assert!((ds_len(planes, fused) * 2).is_multiple_of(16));
            }
        }
        assert!(dkv_shared_bytes(128, 2, 4, false, true) > dkv_shared_bytes(128, 2, 4, false, false));
    }
}
