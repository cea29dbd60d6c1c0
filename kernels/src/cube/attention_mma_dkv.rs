//! dK and dV with FlashAttention-2's warp layout (Dao 2023, arXiv 2307.08691; its CUDA backward
//! for head dim 128 on sm80 takes 128 keys and 64 queries per step with 8 warps, `AtomLayoutMSdP
//! = 2`, `AtomLayoutNdKV = 4`): `P` and `dS` go through shared memory between two differently
//! tiled halves of each step, so every warp's products are `[32, 32]` or `[32, D/2]` tiles instead
//! of the `[16, 32]` and `[16, D]` ones of [`super::attention_mma_bwd::flash_dkv_mma_kernel`].
//!
//! Cube: `16·planes` keys (`planes` even: 8 gives FA2's 128) of one query head, looping over the
//! head's 64-query steps. Plane `p` is `(kr, c) = (p / 2, p % 2)`:
//! 1. it computes `Sᵀ = K Qᵀ` and `dPᵀ = V dOᵀ` for keys `32kr..32kr + 32` and the step's queries
//!    `32c..32c + 32` (`[32, D] × [D, 32]`: 4 fragment loads per 8 tensor-core operations, against
//!    3 per 4 with 16 key rows per plane), turns them into `Pᵀ` and `dSᵀ = Pᵀ∘(dPᵀ − D)` in
//!    registers and stores both, in the input dtype, to shared memory;
//! 2. after a barrier, it adds `Pᵀ dO` and `dSᵀ Q` (`[32, 64] × [64, D/2]`: 6 loads per 16
//!    operations, against 8 per 16 with A in registers) to its dV and dK accumulators for keys
//!    `32kr..32kr + 32` and head-dim columns `c·D/2..(c + 1)·D/2`.
//!
//! Per step and plane: 112 fragment loads (`ldmatrix.x4`, 512 bytes each) and 4 KiB of `P`/`dS`
//! stores for 256 tensor-core operations, where the 16-row kernel takes 80 loads for 128: 0.45
//! loads per operation against 0.63. Registers: dK and dV 64 each (the same as the 16-row
//! kernel's), `Sᵀ` and `dPᵀ` 32 each (twice its).
//!
//! 3. fused (`MLAGENT_MMA_BWD=wide-fused`, FA2's whole backward in one kernel): it adds its share
//!    of `dQ += dS K` (`[64, 16·planes] × [16·planes, D]`, A fragments from the stored `dSᵀ` by
//!    transposed loads, K already resident; with 8 planes `[32, D/4]` per plane, FA2's
//!    `AtomLayoutMdQ = 2`) to an f32 dQ by atomic adds. Five products per (key, query) tile instead
//!    of seven, and no extra barrier: the loop's first one already keeps `dSᵀ` until every plane
//!    has read it.
//!
//! Masking, lse (`f32::MAX` for rows that see no key), the cast of `P`/`dS` to the input dtype and
//! the GQA shares (`A`, summed per KV head by [`super::attention_kernels::group_sum_kernel`]) are as
//! in [`super::attention_mma_bwd`]; dQ comes from its dQ kernel unless fused. Where `D/16` is odd (head dim
//! 16 or 48), both planes of a key group compute all of `D` and plane `c = 0` writes it.

use super::attention_kernels::{LOG2_E, batch_head, exp2, key_tile};
use super::attention_mma::{MAX_HEAD_DIM, ROWS_PER_PLANE, ld_tile};
use super::attention_mma_bwd::{abt, add_dq, load_rows, store_rows, zeros};
use super::mma_frags::{PLANE, load_a, load_b_pair, mma_pair_tiles, scratch_len, stage_rows_vec};
use super::tile_copy::{TileCopy, commit_to, copy_row_pair, wait_for};
use cubecl::prelude::*;

/// Queries per step.
pub const BLOCK_Q: usize = 64;
/// Keys per plane's tile (two 16-row M tiles).
pub const PLANE_KEYS: usize = 32;
/// Queries per plane's `Sᵀ`/`dPᵀ` tile: half the step.
const HALF_Q: usize = BLOCK_Q / 2;
/// Row stride of the shared `Pᵀ` and `dSᵀ` tiles in elements: 16 bytes of f16 padding, as
/// [`ld_tile`], so the 8 rows an `ldmatrix` reads hit distinct banks.
pub const LD_P: usize = BLOCK_Q + 8;

/// Planes sharing the head dim of a key group's dK/dV: 2, or 1 where `D/16` is odd.
pub const fn col_split(head_dim: usize) -> usize {
    if (head_dim / 16).is_multiple_of(2) { 2 } else { 1 }
}

/// Shared memory of [`flash_dkv_wide_kernel`] in bytes: K and V rows, two Q and two dO tiles,
/// `Pᵀ` and `dSᵀ`, the tiles' lse and D, the emulation scratch, two fences.
pub fn shared_bytes(d: usize, elem: usize, planes: usize, emulate: bool) -> usize {
    let keys = planes * ROWS_PER_PLANE;
    (2 * keys + 4 * BLOCK_Q) * ld_tile(d) * elem + 2 * keys * LD_P * elem + 4 * (4 * BLOCK_Q + scratch_len(planes, emulate)) + 16
}

/// Planes per cube: `want` (2, 4 or 8) where its shared memory fits `max_shared` bytes, else the
/// most of 8, 4, 2 that fit; `None` where none does or the head dim is not a multiple of 16 (at most
/// [`MAX_HEAD_DIM`]).
pub fn planes(d: usize, elem: usize, max_shared: usize, want: usize, emulate: bool) -> Option<usize> {
    if !d.is_multiple_of(16) || d > MAX_HEAD_DIM {
        return None;
    }
    [want, 8, 4, 2].into_iter().find(|&p| p % 2 == 0 && shared_bytes(d, elem, p, emulate) <= max_shared)
}

/// Loop passes one unit makes at most (for the software adapter's loop limit; every other loop is
/// unrolled): the query-step loop with its Q/dO staging and, emulated, the two `ps_b` loops over
/// the step's 16-query chunks (each pass counts, the exiting one included), and K/V staging. The
/// fused dQ share (`add_dq`) is unrolled.
pub fn loop_iterations(tq: usize, d: usize, planes: usize) -> usize {
    let units = planes * PLANE;
    let stage = |rows: usize| (rows * d).div_ceil(units) + 1;
    let products = 2 * (BLOCK_Q / 16 + 1);
    1 + tq.div_ceil(BLOCK_Q) * (1 + 2 * stage(BLOCK_Q) + products) + 2 * stage(planes * ROWS_PER_PLANE) + 1
}

/// `acc[32, 16·pairs] += a_sh[32 rows from a_off, 16·steps] · b_sh[16·steps rows from b_off,
/// 16·pairs]`: A from the shared `Pᵀ`/`dSᵀ` tile (row stride [`LD_P`]), B from a Q or dO tile;
/// each B fragment serves both M tiles. `acc`'s M tile `mt` from vector `mt·2·(2·pairs)`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn ps_b<F: Float, N: Size>(
    a_sh: &SharedMemory<Vector<F, Const<2>>>,
    a_off: usize,
    b_sh: &SharedMemory<Vector<F, N>>,
    b_off: usize,
    acc: &mut Array<Vector<f32, Const<2>>>,
    xs: &mut SharedMemory<f32>,
    #[comptime] steps: usize,
    #[comptime] pairs: usize,
    #[comptime] ld: usize,
    #[comptime] vs: usize,
    #[comptime] ldmatrix: bool,
    #[comptime] emulate: bool,
) {
    // Unrolled on a GPU; emulated (lavapipe), a loop: its shader compiler is slow on the
    // unrolled products.
    #[unroll(!emulate)]
    for kk in 0..steps {
        let mut a = Array::<Vector<F, Const<2>>>::new(8usize);
        #[unroll]
        for mt in 0..2usize {
            let f = load_a::<F, Const<2>>(a_sh, a_off + mt * 16 * LD_P + kk * 16, LD_P, 2usize, ldmatrix);
            #[unroll]
            for i in 0..4usize {
                a[mt * 4 + i] = f[i];
            }
        }
        #[unroll]
        for dp in 0..pairs {
            let f = load_b_pair::<F, N>(b_sh, b_off + kk * 16 * ld + dp * 16, ld, vs, ldmatrix);
            mma_pair_tiles::<F>(&a, &f, acc, 2usize, comptime!(4 * pairs), comptime!(4 * dp), xs, emulate);
        }
    }
}

/// dK, dV of one query head with FA2's warp layout (see the module doc): cube (batch·head,
/// `16·planes` key rows, 1) (see [`super::attention_kernels::batch_head`]); arguments and outputs
/// as [`super::attention_mma_bwd::flash_dkv_mma_kernel`]'s, `fused` included (dQ / scale added to
/// the zeroed f32 `dq_acc`; a stand-in the kernel does not touch otherwise). `planes` is even.
#[cube(launch_unchecked, address_type = "dynamic", fast_math = FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf)]
#[allow(clippy::too_many_arguments)]
pub fn flash_dkv_wide_kernel<F: Float, I: Numeric, A: Float, N: Size, C: TileCopy>(
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
    // Head-dim columns per plane of a key group, in 16-column pairs and 8-column blocks.
    let split = comptime!(col_split(head_dim));
    let pairs = comptime!(head_dim / 16 / split);
    let nd = comptime!(2 * pairs);
    // Accumulator vectors per M tile: Sᵀ/dPᵀ ([16, 32]) and dK/dV ([16, 16·pairs]).
    let sl = comptime!(2 * HALF_Q / 8);
    let ol = comptime!(2 * nd);

    let mut ks = SharedMemory::<Vector<F, N>>::new(comptime!(rows * ld_tile(head_dim) / vs));
    let mut vt = SharedMemory::<Vector<F, N>>::new(comptime!(rows * ld_tile(head_dim) / vs));
    // Q, dO and their rows' lse and D: two buffers each (see `tile_copy`).
    let q_tile = comptime!(BLOCK_Q * ld_tile(head_dim) / vs);
    let mut qs = SharedMemory::<Vector<F, N>>::new(comptime!(2 * q_tile));
    let mut dos = SharedMemory::<Vector<F, N>>::new(comptime!(2 * q_tile));
    // Pᵀ and dSᵀ of the step, [16·planes keys, BLOCK_Q queries], pairs of elements.
    let mut ps = SharedMemory::<Vector<F, Const<2>>>::new(comptime!(rows * LD_P / 2));
    let mut dss = SharedMemory::<Vector<F, Const<2>>>::new(comptime!(rows * LD_P / 2));
    let scale2 = scale * LOG2_E;
    let mut lse_s = SharedMemory::<f32>::new(comptime!(2 * BLOCK_Q));
    let mut delta_s = SharedMemory::<f32>::new(comptime!(2 * BLOCK_Q));
    let mut xs = SharedMemory::<f32>::new(comptime!(scratch_len(planes, emulate)));
    let fence0 = C::fence();
    let fence1 = C::fence();

    let kb = b * k.stride(0) + kvh * k.stride(1);
    let vb = b * v.stride(0) + kvh * v.stride(1);
    stage_rows_vec::<F, N>(k, kb, k.stride(2), first_key, tk, &mut ks, 0usize, rows, ld, head_dim, vs, units);
    stage_rows_vec::<F, N>(v, vb, v.stride(2), first_key, tk, &mut vt, 0usize, rows, ld, head_dim, vs, units);

    // This plane's key group and query / column half; this unit's key rows
    // `key0 + 16·mt + 8·r` (M tile mt, row half r) and query columns `8j + 2t + e` of its half.
    let g = lane / 4;
    let t = lane % 4;
    let kr = plane / 2;
    let c = plane % 2;
    let key0 = first_key + kr * PLANE_KEYS + g;
    let mut key_ok = Array::<bool>::new(4usize);
    #[unroll]
    for i in 0..4usize {
        let key = key0 + comptime!(16 * (i / 2) + 8 * (i % 2));
        key_ok[i] = key < tk && key >= pad_b;
    }
    // Every key row of the cube is a real, unpadded key.
    let keys_full = first_key >= pad_b && first_key + rows <= tk;
    let k_off = kr * PLANE_KEYS * ld;
    let p_off = kr * PLANE_KEYS * LD_P;
    // This plane's dK/dV columns (plane c = 1 repeats c = 0's where `split` is 1).
    let col0 = (c % split) * pairs * 16;
    let mut acc_k = zeros(comptime!(2 * ol));
    let mut acc_v = zeros(comptime!(2 * ol));
    // Causal: queries before `first_key − q_offset` see none of this cube's keys.
    let mut q_start = 0;
    if causal && first_key > q_offset {
        q_start = ((first_key - q_offset) / BLOCK_Q) * BLOCK_Q;
    }

    let (q_rs, o_rs) = (q.stride(2), dout.stride(2));
    let qh = b * q.stride(0) + h * q.stride(1);
    let oh = b * dout.stride(0) + h * dout.stride(1);
    let rh = (b * nh + h) * tq;
    let tid = plane * PLANE + lane;
    if q_start < tq {
        copy_row_pair::<F, N, C>(q, qh, q_rs, dout, oh, o_rs, q_start, tq, &mut qs, &mut dos, 0usize, BLOCK_Q, ld, head_dim, vs, units);
        C::commit(&fence0);
        let (l, dd) = load_rows(lse, delta, rh, q_start, tq, tid, BLOCK_Q);
        store_rows(l, dd, &mut lse_s, &mut delta_s, 0usize, tid, BLOCK_Q);
    }
    let no_regs = Array::<Vector<F, Const<2>>>::new(1usize);
    let mut buf = 0usize;
    let mut qt = q_start;
    while qt < tq {
        // Every plane is done with the other buffer and with the last step's Pᵀ/dSᵀ.
        sync_cube();
        let next_qt = qt + BLOCK_Q;
        if next_qt < tq {
            let other = (1 - buf) * q_tile;
            copy_row_pair::<F, N, C>(q, qh, q_rs, dout, oh, o_rs, next_qt, tq, &mut qs, &mut dos, other, BLOCK_Q, ld, head_dim, vs, units);
            commit_to::<C>(1 - buf, &fence0, &fence1);
        }
        let (next_l, next_d) = load_rows(lse, delta, rh, next_qt, tq, tid, BLOCK_Q);
        wait_for::<C>(buf, &fence0, &fence1);
        // This step's buffers: Q/dO in elements, lse/D in entries; this plane's query half.
        let qo = buf * comptime!(BLOCK_Q * ld_tile(head_dim));
        let so = buf * BLOCK_Q + c * HALF_Q;
        {
            // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ: [32, D] × [D, 32].
            let mut st = zeros(comptime!(2 * sl));
            let mut dpt = zeros(comptime!(2 * sl));
            let qc = qo + c * HALF_Q * ld;
            abt::<F, N>(&ks, k_off, &no_regs, &qs, qc, &mut st, &mut xs, 2usize, 2usize, sl, ld, head_dim, vs, ldmatrix, emulate, false);
            abt::<F, N>(&vt, k_off, &no_regs, &dos, qc, &mut dpt, &mut xs, 2usize, 2usize, sl, ld, head_dim, vs, ldmatrix, emulate, false);
            // Pᵀ (into st) and dSᵀ (into dpt); then, only in a step where some (key, query) pair
            // of the cube is hidden, zero on hidden pairs (selects: P may be inf there). Queries
            // past Tq have lse = f32::MAX, so P = 0.
            #[unroll]
            for mt in 0..2usize {
                #[unroll]
                for j in 0..comptime!(HALF_Q / 8) {
                    #[unroll]
                    for r in 0..2usize {
                        let x = st[mt * sl + 2 * j + r];
                        let y = dpt[mt * sl + 2 * j + r];
                        let mut p = Vector::<f32, Const<2>>::empty();
                        let mut ds = Vector::<f32, Const<2>>::empty();
                        #[unroll]
                        for e in 0..2usize {
                            let col = so + 8 * j + 2 * t + e;
                            let pe = exp2(x[e] * scale2 - lse_s[col]);
                            p[e] = pe;
                            ds[e] = pe * (y[e] - delta_s[col]);
                        }
                        st[mt * sl + 2 * j + r] = p;
                        dpt[mt * sl + 2 * j + r] = ds;
                    }
                }
            }
            if !keys_full || qt + BLOCK_Q > tq || (causal && first_key + rows > q_offset + qt + 1) {
                #[unroll]
                for mt in 0..2usize {
                    #[unroll]
                    for j in 0..comptime!(HALF_Q / 8) {
                        #[unroll]
                        for r in 0..2usize {
                            let mut p = st[mt * sl + 2 * j + r];
                            let mut ds = dpt[mt * sl + 2 * j + r];
                            #[unroll]
                            for e in 0..2usize {
                                let qi = qt + c * HALF_Q + 8 * j + 2 * t + e;
                                let mut vis = key_ok[2 * mt + r] && qi < tq;
                                if causal {
                                    vis = vis && key0 + 16 * mt + 8 * r <= q_offset + qi;
                                }
                                p[e] = select(vis, p[e], f32::new(0.0));
                                ds[e] = select(vis, ds[e], f32::new(0.0));
                            }
                            st[mt * sl + 2 * j + r] = p;
                            dpt[mt * sl + 2 * j + r] = ds;
                        }
                    }
                }
            }
            // Pᵀ and dSᵀ to shared memory: this unit's key rows, query columns 32c + 8j + 2t and
            // the next (one 4-byte store each; rows LD_P apart put a quad's 8 rows on distinct banks).
            #[unroll]
            for mt in 0..2usize {
                #[unroll]
                for j in 0..comptime!(HALF_Q / 8) {
                    #[unroll]
                    for r in 0..2usize {
                        let at = p_off + (16 * mt + 8 * r + g) * LD_P + c * HALF_Q + 8 * j + 2 * t;
                        ps[at / 2] = Vector::<F, Const<2>>::cast_from(st[mt * sl + 2 * j + r]);
                        dss[at / 2] = Vector::<F, Const<2>>::cast_from(dpt[mt * sl + 2 * j + r]);
                    }
                }
            }
        }
        // Both query halves of the group's Pᵀ/dSᵀ are stored.
        sync_cube();
        // dV += Pᵀ dO and dK += dSᵀ Q: [32, 64] × [64, 16·pairs].
        ps_b::<F, N>(&ps, p_off, &dos, qo + col0, &mut acc_v, &mut xs, comptime!(BLOCK_Q / 16), pairs, ld, vs, ldmatrix, emulate);
        ps_b::<F, N>(&dss, p_off, &qs, qo + col0, &mut acc_k, &mut xs, comptime!(BLOCK_Q / 16), pairs, ld, vs, ldmatrix, emulate);
        if comptime!(fused) {
            // dQ += dS K ([64, 16·planes] × [16·planes, D]) from the stored dSᵀ, by atomic adds; the
            // loop's next barrier keeps dSᵀ until every plane has read it.
            add_dq::<F, N, Const<2>>(&dss, &ks, dq_acc, rh, qt, tq, &mut xs, planes, BLOCK_Q, LD_P, 2usize, true, ld, head_dim, vs, ldmatrix, emulate);
        }
        // The other buffer is free since this step's first barrier; the next one orders these.
        store_rows(next_l, next_d, &mut lse_s, &mut delta_s, 1 - buf, tid, BLOCK_Q);
        buf = 1 - buf;
        qt = next_qt;
    }

    if c < split {
        #[unroll]
        for i in 0..4usize {
            let key = key0 + comptime!(16 * (i / 2) + 8 * (i % 2));
            if key < tk {
                let base = ((b * nh + h) * tk + key) * head_dim + col0 + 2 * t;
                #[unroll]
                for n in 0..nd {
                    let at = comptime!((i / 2) * ol + 2 * n + i % 2);
                    let yk = acc_k[at] * Vector::new(scale);
                    let yv = acc_v[at];
                    dk[base + 8 * n] = A::cast_from(yk[0]);
                    dk[base + 8 * n + 1] = A::cast_from(yk[1]);
                    dv[base + 8 * n] = A::cast_from(yv[0]);
                    dv[base + 8 * n + 1] = A::cast_from(yv[1]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_fit_shared_memory_and_stay_even() {
        // Head dim 128 in bf16: 8 planes (FA2's 128 keys) take 177 KB, within an H100's 227 KB.
        assert_eq!(shared_bytes(128, 2, 8, false), 177_200);
        assert_eq!(planes(128, 2, 232_448, 8, false), Some(8));
        assert_eq!(planes(128, 2, 232_448, 4, false), Some(4));
        // 100 KB: 4 planes (107 KB) do not fit either; 2 do.
        assert_eq!(planes(128, 2, 100_000, 8, false), Some(2));
        assert_eq!(planes(128, 2, 10_000, 8, false), None);
        assert_eq!(planes(24, 2, 232_448, 8, false), None);
        // Lavapipe's 32 KiB holds 2 emulated planes in f16 at head dim 16.
        assert_eq!(planes(16, 2, 32_768, 8, true), Some(2));
        assert_eq!(planes(16, 4, 32_768, 8, true), None);
        for p in [2, 4, 8] {
            // Every array after Pᵀ/dSᵀ stays 16-byte aligned.
            assert!((2 * p * ROWS_PER_PLANE * LD_P * 2).is_multiple_of(16));
        }
    }

    #[test]
    fn column_split_covers_the_head_dim_in_whole_pairs() {
        assert_eq!(col_split(128), 2);
        assert_eq!(col_split(64), 2);
        assert_eq!(col_split(16), 1);
        assert_eq!(col_split(48), 1);
        for d in (16..=MAX_HEAD_DIM).step_by(16) {
            assert_eq!((d / 16 / col_split(d)) * col_split(d) * 16, d);
        }
    }
}
