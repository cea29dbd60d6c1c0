//! Flash-attention forward with register-resident tiles (FlashAttention-2, Dao 2023, arXiv
//! 2307.08691, Algorithm 1) on PTX `mma.sync.m16n8k16` through CubeCL's manual MMA
//! ([`super::mma_frags`]).
//!
//! Cube: `planes` planes of 32 units (`CubeDim (32, planes)`, 4 on CUDA); plane `p` owns `mtiles`
//! 16-row M tiles of the cube's query tile (rows `16·mtiles·p ..`; `mtiles` 2 by default, 1 with
//! `MLAGENT_MMA_ROWS=16`), and each unit holds two rows of each (`g` and `g + 8` of the tile's 16,
//! in the accumulator layout). With one M tile Q's fragments are loaded once into registers; with
//! two they are re-read from shared memory per key tile. Per 64-key tile:
//! 1. all units start staging the next K and V `[64, D]` tiles into the second pair of shared
//!    buffers (input dtype, rows padded by 8 elements so that fragment loads hit distinct banks)
//!    and wait for this tile's ([`super::tile_copy`]: with `cp.async` on CUDA the next tile's copies
//!    land during steps 2–4);
//! 2. `S = Q Kᵀ` `[16, 64]` per M tile into f32 accumulators (8 × D/16 products), each K fragment
//!    serving every M tile of the plane;
//! 3. the online softmax on those registers (hidden keys masked only in tiles some row of the cube
//!    cannot fully see): each unit's row maximum over its 16 scores, then over its quad (the 4
//!    units sharing the row) by shuffles; lazy rescaling (FlashAttention-4, as
//!    [`super::attention_cmma`]): a row's reference maximum `m` moves only when a tile's exceeds
//!    it by more than [`RESCALE_THRESHOLD`], and only then are `l` and the output accumulators
//!    scaled by `exp(m_old − m_new)`; `P = exp(s·scale − m) ≤ e^8`, computed as FlashAttention-2
//!    does, `2^(s·scale·log2 e − m₂)` with the maximum kept in base 2 ([`exp2`]);
//! 4. `O += P V` `[16, D]` per M tile, with `P`'s accumulator pairs used directly as the A
//!    fragments, each V fragment serving every M tile.
//!
//! No shared-memory round trip for `S`, `P` or `O` (the tensor-core kernel of
//! [`super::attention_cmma`] needs one per tile, since `cmma` fragments are opaque). Each unit keeps
//! a partial row sum `l`; the quads add them once, at the end. The output and log-sum-exp match
//! [`super::attention_kernels::flash_fwd_kernel`]: same masking, `lse = m + ln l`, and `lse =
//! f32::MAX` with a zero output for rows that see no key.
//!
//! `ldmatrix` chooses CUDA's `ldmatrix` for the fragment loads (else element reads at the layout's
//! positions); `emulate` runs the products and quad reductions through shared memory (see
//! [`super::mma_frags`]) so that the whole kernel runs on lavapipe in CI.

use super::attention_cmma::RESCALE_THRESHOLD;
use super::attention_kernels::{LOG2_E, batch_head, exp2, key_range, query_tile, visible_end};
use super::mma_frags::{PLANE, load_a, load_b_pair, load_bt_pair, mma_pair_tiles, quad_max, quad_sum, scratch_len, stage_rows_vec};
use super::tile_copy::{TileCopy, commit_to, copy_row_pair, wait_for};
use cubecl::prelude::*;

/// Query rows per plane (the MMA's M).
pub const ROWS_PER_PLANE: usize = 16;
/// Planes per cube on CUDA.
pub const PLANES: usize = 4;
/// Keys per shared-memory tile.
pub const BLOCK_K: usize = 64;
/// Largest head dim: Q's fragments (`D/2` registers) and O's accumulators (`D/2`) live in
/// registers beside S's 32; past 128 they would spill.
pub const MAX_HEAD_DIM: usize = 128;

/// [`RESCALE_THRESHOLD`] in base 2 (the unit of the kernel's row maxima).
const RESCALE_THRESHOLD_LOG2: f32 = RESCALE_THRESHOLD * LOG2_E;

/// Row stride (elements) of the shared Q/K/V tiles: 8 elements (16 bytes) of padding shift each row
/// by four banks, so the 8 rows an `ldmatrix` (or a quad's element reads) touches hit distinct banks,
/// and rows stay 16-byte aligned.
pub const fn ld_tile(head_dim: usize) -> usize {
    head_dim + 8
}

/// Shared memory the kernel takes, in bytes: the Q tile, two K and two V tiles, the emulation
/// scratch, and the two buffers' fences (8 bytes each).
pub fn shared_bytes(d: usize, elem: usize, planes: usize, mtiles: usize, emulate: bool) -> usize {
    (planes * mtiles * ROWS_PER_PLANE + 4 * BLOCK_K) * ld_tile(d) * elem + 4 * scratch_len(planes, emulate) + 16
}

/// Planes per cube when emulating: the most (≤ [`PLANES`]) that fit `max_shared` bytes; `None`
/// when none does or the head dim is not a multiple of 16 (at most [`MAX_HEAD_DIM`]).
pub fn emulation_planes(d: usize, elem: usize, mtiles: usize, max_shared: usize) -> Option<usize> {
    if !d.is_multiple_of(16) || d > MAX_HEAD_DIM {
        return None;
    }
    [4, 2, 1].into_iter().find(|&p| shared_bytes(d, elem, p, mtiles, true) <= max_shared)
}

/// Loop passes one unit makes (for the software adapter's loop limit; every other loop is
/// unrolled): the key-tile loop, K and V staging per tile, Q staging (an upper bound: staging is
/// unrolled where the cube's units divide the tile's vectors per row).
pub fn loop_iterations(tk: usize, d: usize, planes: usize, mtiles: usize) -> usize {
    let units = planes * PLANE;
    let stage = |rows: usize| (rows * d).div_ceil(units) + 1;
    tk.div_ceil(BLOCK_K) * (1 + 2 * stage(BLOCK_K)) + stage(planes * mtiles * ROWS_PER_PLANE) + 1
}

/// Forward: cube (batch·head, query tile of `16·mtiles·planes` rows, 1) (see
/// [`super::attention_kernels::batch_head`]); out `[B, H, Tq, D]` and
/// lse `[B, H, Tq]` contiguous. `head_dim` must be a multiple of 16, at most [`MAX_HEAD_DIM`]; Q, K
/// and V come as vectors of `N` elements (a divisor of 8): their last dimension contiguous, every
/// stride a multiple of `N`.
///
/// `C` fills the K/V buffers: [`super::tile_copy::AsyncCopy`] (`cp.async`, CUDA, 16-byte vectors)
/// or [`super::tile_copy::SyncCopy`].
///
/// `mtiles` is the number of 16-row M tiles per plane. With 1, Q's fragments stay in registers and
/// every plane reads the whole K and V tiles for its 16 rows. With 2 (FlashAttention-2's 32 rows
/// per warp), each K and V fragment serves both M tiles, so shared-memory reads per tensor-core
/// operation drop by about 40% (Q's fragments are then re-read from shared memory per key tile),
/// for twice the accumulator registers.
///
/// `scale` must be positive (row maxima are taken before scaling). `2^x` and `ln` compile to the
/// hardware's approximate instructions on CUDA (`ex2.approx`, `lg2.approx`: a few ulp, far below the
/// input dtype's precision; FlashAttention's `exp2f` is the same): masked scores are `f32::MIN`,
/// never `-inf`, and `2^x` of `f32::MIN·scale₂ − off` (or of its overflow to `-inf`) is 0.
#[cube(launch_unchecked, address_type = "dynamic", fast_math = FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf)]
#[allow(clippy::too_many_arguments)]
pub fn flash_fwd_mma_kernel<F: Float, I: Numeric, N: Size, C: TileCopy>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    pad: &Tensor<I>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
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
    let block_q = comptime!(plane_rows * planes);
    let (nh, tq) = (q.shape(1), q.shape(2));
    let (b, h) = batch_head(nh);
    // Causal: the longest query tiles first.
    let first_row = query_tile(causal) * block_q;
    let (nkv, tk) = (k.shape(1), k.shape(2));
    let kvh = h / (nh / nkv);
    let pad_b = u32::cast_from(pad[b * pad.stride(0)]) as usize;
    let ld = comptime!(ld_tile(head_dim));
    // Q, K and V are read and staged `vs` elements at a time (16 bytes on CUDA).
    let vs = q.vector_size();
    // Head-dim steps of 16 (S's reduction), column blocks of 8 (O's accumulators).
    let nk = comptime!(head_dim / 16);
    let nd = comptime!(head_dim / 8);
    // Per M tile: S's accumulator vectors (2 per 8 keys) and O's (2 per 8 columns); rows per unit.
    let sl = comptime!(2 * BLOCK_K / 8);
    let ol = comptime!(2 * nd);
    let nr = comptime!(2 * mtiles);
    let q_in_regs = comptime!(mtiles == 1);

    let mut qs = SharedMemory::<Vector<F, N>>::new(comptime!(block_q * ld_tile(head_dim) / vs));
    // K and V: two buffers each (the tile being read, the next one being filled).
    let kv_tile = comptime!(BLOCK_K * ld_tile(head_dim) / vs);
    let mut ks = SharedMemory::<Vector<F, N>>::new(comptime!(2 * kv_tile));
    let mut vt = SharedMemory::<Vector<F, N>>::new(comptime!(2 * kv_tile));
    let mut xs = SharedMemory::<f32>::new(comptime!(scratch_len(planes, emulate)));
    let fence0 = C::fence();
    let fence1 = C::fence();

    let qb = b * q.stride(0) + h * q.stride(1);
    stage_rows_vec::<F, N>(q, qb, q.stride(2), first_row, tq, &mut qs, 0usize, block_q, ld, head_dim, vs, units);
    sync_cube();
    let q_off = plane * plane_rows * ld;
    // With one M tile, Q's fragments once, into registers: 4 per 16 columns.
    let mut qa = Array::<Vector<F, Const<2>>>::new(comptime!(if mtiles == 1 { 4 * (head_dim / 16) } else { 4usize }));
    if comptime!(q_in_regs) {
        #[unroll]
        for kk in 0..nk {
            let a = load_a::<F, N>(&qs, q_off + kk * 16, ld, vs, ldmatrix);
            #[unroll]
            for i in 0..4usize {
                qa[kk * 4 + i] = a[i];
            }
        }
    }

    // Scores in base 2: P = 2^(s·scale₂ − m) with m the row's scaled maximum times log2 e.
    let scale2 = scale * LOG2_E;
    // This unit's rows (i = 2·mt + r: row0 + 16mt + 8r, row g + 8r of M tile mt) and their
    // state: reference maximum m (base 2) and this unit's share of the row sum l. (Row indices and
    // visible key ends are recomputed where needed rather than held: registers are scarce with two
    // M tiles.)
    let g = lane / 4;
    let t = lane % 4;
    let row0 = first_row + plane * plane_rows + g;
    let lowest = f32::min_value();
    let mut m = Array::<f32>::new(nr);
    let mut l = Array::<f32>::new(nr);
    #[unroll]
    for i in 0..nr {
        m[i] = lowest;
        l[i] = f32::new(0.0);
    }
    // O: M tile mt, column block n: vectors mt·ol + 2n (row g) and mt·ol + 2n + 1 (row g + 8).
    let mut o = Array::<Vector<f32, Const<2>>>::new(comptime!(mtiles * ol));
    #[unroll]
    for i in 0..comptime!(mtiles * ol) {
        o[i] = Vector::new(f32::new(0.0));
    }

    let (start, end) = key_range(first_row, block_q, tq, tk, pad_b, q_offset, BLOCK_K, causal);
    // Every row of the cube sees the keys [pad_b, full_end): tiles inside need no mask.
    let full_end = visible_end(first_row, tk, q_offset, causal);
    let kb = b * k.stride(0) + kvh * k.stride(1);
    let vb = b * v.stride(0) + kvh * v.stride(1);
    let (k_rs, v_rs) = (k.stride(2), v.stride(2));
    // The first K/V tile into buffer 0 (the fences were initialised before Q's barrier above).
    if start < end {
        copy_row_pair::<F, N, C>(k, kb, k_rs, v, vb, v_rs, start, tk, &mut ks, &mut vt, 0usize, BLOCK_K, ld, head_dim, vs, units);
        C::commit(&fence0);
    }
    let mut kt = start;
    let mut buf = 0usize;
    while kt < end {
        // 1. The barrier: every plane is done with the other buffer (the previous tile). Then the
        // next tile goes into it while this one is used (see `tile_copy`).
        sync_cube();
        let next = kt + BLOCK_K;
        if next < end {
            let other = (1 - buf) * kv_tile;
            copy_row_pair::<F, N, C>(k, kb, k_rs, v, vb, v_rs, next, tk, &mut ks, &mut vt, other, BLOCK_K, ld, head_dim, vs, units);
            commit_to::<C>(1 - buf, &fence0, &fence1);
        }
        wait_for::<C>(buf, &fence0, &fence1);
        // This tile's buffer, in elements.
        let kvo = buf * comptime!(BLOCK_K * ld_tile(head_dim));

        // 2. S = Q Kᵀ: M tile mt, key block j (8 keys) in vectors mt·sl + 2j, mt·sl + 2j + 1. Per
        // 16-wide step of the head dim, each K fragment serves every M tile.
        let mut s = Array::<Vector<f32, Const<2>>>::new(comptime!(mtiles * sl));
        #[unroll]
        for i in 0..comptime!(mtiles * sl) {
            s[i] = Vector::new(f32::new(0.0));
        }
        #[unroll]
        for kk in 0..nk {
            let mut a = Array::<Vector<F, Const<2>>>::new(comptime!(4 * mtiles));
            #[unroll]
            for mt in 0..mtiles {
                if comptime!(q_in_regs) {
                    #[unroll]
                    for i in 0..4usize {
                        a[i] = qa[kk * 4 + i];
                    }
                } else {
                    let f = load_a::<F, N>(&qs, q_off + mt * 16 * ld + kk * 16, ld, vs, ldmatrix);
                    #[unroll]
                    for i in 0..4usize {
                        a[mt * 4 + i] = f[i];
                    }
                }
            }
            #[unroll]
            for jp in 0..comptime!(BLOCK_K / 16) {
                let kf = load_bt_pair::<F, N>(&ks, kvo + jp * 16 * ld + kk * 16, ld, vs, ldmatrix);
                mma_pair_tiles::<F>(&a, &kf, &mut s, mtiles, sl, comptime!(jp * 4), &mut xs, emulate);
            }
        }

        // 3. The rows' maxima over the tile and the quad, taken on the raw scores (the launcher
        // runs this kernel only for scale > 0, so max(s)·scale = max(s·scale)). Only in a tile
        // that some row of the cube cannot fully see are hidden scores set to `lowest` first.
        let masked = kt < pad_b || kt + BLOCK_K > full_end;
        if masked {
            #[unroll]
            for mt in 0..mtiles {
                #[unroll]
                for j in 0..comptime!(BLOCK_K / 8) {
                    #[unroll]
                    for r in 0..2usize {
                        // Keys visible to the row: [pad_b, hi).
                        let hi = visible_end(row0 + comptime!(16 * mt + 8 * r), tk, q_offset, causal);
                        let mut x = s[mt * sl + 2 * j + r];
                        #[unroll]
                        for e in 0..2usize {
                            let key = kt + 8 * j + 2 * t + e;
                            x[e] = select(key < pad_b || key >= hi, lowest, x[e]);
                        }
                        s[mt * sl + 2 * j + r] = x;
                    }
                }
            }
        }
        let mut mx = Array::<f32>::new(nr);
        #[unroll]
        for i in 0..nr {
            mx[i] = lowest;
        }
        #[unroll]
        for mt in 0..mtiles {
            #[unroll]
            for j in 0..comptime!(BLOCK_K / 8) {
                #[unroll]
                for r in 0..2usize {
                    let x = s[mt * sl + 2 * j + r];
                    mx[mt * 2 + r] = mx[mt * 2 + r].max(x[0].max(x[1]));
                }
            }
        }
        // The exponents' offsets: the scaled row maxima (base 2), or 0 while a row has seen no key
        // (its hidden scores, lowest·scale₂, then give 2^(…) = 0 without a test per score).
        let mut off = Array::<f32>::new(nr);
        #[unroll]
        for i in 0..nr {
            let tile_max = quad_max(mx[i], &mut xs, emulate);
            let m_tile = select(tile_max > lowest, tile_max * scale2, lowest);
            // Lazy rescaling: the reference maximum moves only when the tile's exceeds it by more
            // than the threshold (always on a row's first visible tile: m is `lowest` until then,
            // and corr = 0 meets l = 0 and O = 0). Most tiles skip the correction's exponential
            // and the D/4 multiplies.
            if m_tile > m[i] + RESCALE_THRESHOLD_LOG2 {
                let corr = exp2(m[i] - m_tile);
                m[i] = m_tile;
                l[i] *= corr;
                #[unroll]
                for n in 0..nd {
                    let at = comptime!((i / 2) * ol + 2 * n + i % 2);
                    o[at] = o[at] * Vector::new(corr);
                }
            }
            off[i] = select(m[i] > lowest, m[i], f32::new(0.0));
        }

        // 4. O += P V, 16 keys at a time: key blocks 2kk and 2kk + 1 form P's A fragment; each V
        // fragment serves every M tile.
        #[unroll]
        for kk in 0..comptime!(BLOCK_K / 16) {
            let mut pa = Array::<Vector<F, Const<2>>>::new(comptime!(4 * mtiles));
            #[unroll]
            for mt in 0..mtiles {
                #[unroll]
                for i in 0..4usize {
                    // Register i: row half i % 2, key block 2kk + i / 2. P = 2^(s·scale₂ − off):
                    // one fused multiply-add per score before the exponential.
                    let x = s[mt * sl + 2 * (2 * kk + i / 2) + i % 2];
                    let ri = mt * 2 + i % 2;
                    let mut p = Vector::<f32, Const<2>>::empty();
                    #[unroll]
                    for e in 0..2usize {
                        p[e] = exp2(x[e] * scale2 - off[ri]);
                    }
                    l[ri] += p[0] + p[1];
                    pa[mt * 4 + i] = Vector::<F, Const<2>>::cast_from(p);
                }
            }
            #[unroll]
            for dp in 0..comptime!(head_dim / 16) {
                let vf = load_b_pair::<F, N>(&vt, kvo + kk * 16 * ld + dp * 16, ld, vs, ldmatrix);
                mma_pair_tiles::<F>(&pa, &vf, &mut o, mtiles, ol, comptime!(dp * 4), &mut xs, emulate);
            }
        }
        kt = next;
        buf = 1 - buf;
    }

    // Row sums over the quads; the normalised output and the log-sum-exp.
    #[unroll]
    for i in 0..nr {
        let lr = quad_sum(l[i], &mut xs, emulate);
        let row = row0 + comptime!(16 * (i / 2) + 8 * (i % 2));
        if row < tq {
            let rr = (b * nh + h) * tq + row;
            let mut inv = f32::new(0.0);
            if lr > f32::new(0.0) {
                inv = f32::new(1.0) / lr;
            }
            if t == 0 {
                if lr > f32::new(0.0) {
                    lse[rr] = m[i] * core::f32::consts::LN_2 + lr.ln();
                } else {
                    // No visible key (a padding query): output 0, and an lse that zeroes every P in backward.
                    lse[rr] = f32::max_value();
                }
            }
            #[unroll]
            for n in 0..nd {
                let y = o[comptime!((i / 2) * ol + 2 * n + i % 2)] * Vector::new(inv);
                let at = rr * head_dim + 8 * n + 2 * t;
                out[at] = F::cast_from(y[0]);
                out[at + 1] = F::cast_from(y[1]);
            }
        }
    }
}
