//! Tensor-core flash-attention forward (FlashAttention-2, Dao 2023, arXiv 2307.08691) through
//! CubeCL's `cmma` (16×16×16 tiles, f16/bf16 inputs, f32 accumulation).
//!
//! Cube: 4 planes of 32 units (`CubeDim (32, 4)`); plane `p` owns query rows `16p..16p+16` of the
//! cube's 64-row query tile. Per 64-key tile:
//! 1. all units stage K and V `[64, D]` in shared memory (input dtype, no conversion);
//! 2. each plane computes its scores `S = Q Kᵀ` `[16, 64]` with `cmma` into shared f32;
//! 3. units 0..16 of the plane each own one row: mask, online softmax (running max `m`, sum `l`),
//!    `P` `[16, 64]` in the input dtype and the row's correction `exp(m_old − m_new)`;
//! 4. the plane rescales its f32 output rows `O` `[16, D]` (shared) by the corrections and adds
//!    `P V` with `cmma`, loading and storing `O` as the accumulator.
//!
//! The output and log-sum-exp match [`super::attention_kernels::flash_fwd_kernel`] (the portable
//! path, which also serves f32, head dims that are not a multiple of 16, and runtimes without
//! `cmma`): same masking (`visible`), same `lse = m + ln l`, and `lse = f32::MAX` with a zero output
//! for rows that see no key.

use super::attention_kernels::{key_range, visible};
use cubecl::prelude::*;

/// Query rows per plane (the `cmma` M dimension).
pub const ROWS_PER_PLANE: usize = 16;
/// Planes per cube.
pub const PLANES: usize = 4;
/// Query rows per cube.
pub const BLOCK_Q: usize = ROWS_PER_PLANE * PLANES;
/// Keys per shared-memory tile.
pub const BLOCK_K: usize = 64;
/// Units per plane this kernel is written for (CUDA's warp).
pub const PLANE: usize = 32;

/// Row strides (elements) of the shared tiles, padded past the row length so that the units of a
/// plane reading one column of different rows hit different banks (`cmma` wants multiples of 16
/// bytes): Q/K/V and P in the input dtype get 8 extra elements, S and O in f32 get 4.
pub const fn ld_half(cols: usize) -> usize {
    cols + 8
}
/// See [`ld_half`].
pub const fn ld_f32(cols: usize) -> usize {
    cols + 4
}

/// Shared memory the kernel takes, in bytes, for head dim `d` and input element size `elem`.
pub fn shared_bytes(d: usize, elem: usize) -> usize {
    // Q, K, V tiles and P in the input dtype; S and O in f32; per-row correction and sum.
    let half = (BLOCK_Q + 2 * BLOCK_K) * ld_half(d) + BLOCK_Q * ld_half(BLOCK_K);
    let f32s = BLOCK_Q * ld_f32(BLOCK_K) + BLOCK_Q * ld_f32(d) + 2 * BLOCK_Q;
    half * elem + f32s * 4
}

/// Forward: cube (query tile of 64 rows, head, batch); out `[B, H, Tq, D]` and lse `[B, H, Tq]`
/// contiguous. `head_dim` must be a multiple of 16.
#[cube(launch, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
pub fn flash_fwd_cmma_kernel<F: Float, I: Numeric>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    pad: &Tensor<I>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    scale: f32,
    q_offset: usize,
    #[comptime] causal: bool,
    #[comptime] head_dim: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let tid = plane * PLANE + lane;
    let units = comptime!(PLANE * PLANES);
    let first_row = CUBE_POS_X as usize * BLOCK_Q;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let (nh, tq) = (q.shape(1), q.shape(2));
    let (nkv, tk) = (k.shape(1), k.shape(2));
    let kvh = h / (nh / nkv);
    let pad_b = u32::cast_from(pad[b * pad.stride(0)]) as usize;

    // Row strides: `dl` for Q/K/V, `ol` for O, `sl` for S, `pl` for P.
    let dl = comptime!(ld_half(head_dim));
    let ol = comptime!(ld_f32(head_dim));
    let sl = comptime!(ld_f32(BLOCK_K));
    let pl = comptime!(ld_half(BLOCK_K));
    let mut qs = SharedMemory::<F>::new(comptime!(BLOCK_Q * ld_half(head_dim)));
    let mut ks = SharedMemory::<F>::new(comptime!(BLOCK_K * ld_half(head_dim)));
    let mut vs = SharedMemory::<F>::new(comptime!(BLOCK_K * ld_half(head_dim)));
    let mut ss = SharedMemory::<f32>::new(comptime!(BLOCK_Q * ld_f32(BLOCK_K)));
    let mut ps = SharedMemory::<F>::new(comptime!(BLOCK_Q * ld_half(BLOCK_K)));
    let mut os = SharedMemory::<f32>::new(comptime!(BLOCK_Q * ld_f32(head_dim)));
    let mut cs = SharedMemory::<f32>::new(BLOCK_Q);
    let mut ls = SharedMemory::<f32>::new(BLOCK_Q);

    // Q tile (zero past tq) and a zero output accumulator.
    let qb = b * q.stride(0) + h * q.stride(1);
    let mut idx = tid;
    while idx < BLOCK_Q * head_dim {
        let r = idx / head_dim;
        let d = idx % head_dim;
        let mut x = F::new(0.0);
        if first_row + r < tq {
            x = q[qb + (first_row + r) * q.stride(2) + d * q.stride(3)];
        }
        qs[r * dl + d] = x;
        os[r * ol + d] = f32::new(0.0);
        idx += units;
    }

    let (start, end) = key_range(first_row, BLOCK_Q, tq, tk, pad_b, q_offset, BLOCK_K, causal);

    // Row state, kept by units 0..16 of each plane for row `plane * 16 + lane`.
    let r_loc = plane * ROWS_PER_PLANE + lane;
    let row = first_row + r_loc;
    let owner = lane < ROWS_PER_PLANE;
    let row_ok = owner && row < tq;
    let lowest = f32::min_value();
    let mut m = lowest;
    let mut l = f32::new(0.0);
    let d16 = comptime!(head_dim / 16);
    let k16 = comptime!(BLOCK_K / 16);
    let q_off = plane * ROWS_PER_PLANE * dl;
    let o_off = plane * ROWS_PER_PLANE * ol;
    let s_off = plane * ROWS_PER_PLANE * sl;
    let p_off = plane * ROWS_PER_PLANE * pl;
    let (q_len, kv_len) = (comptime!(BLOCK_Q * ld_half(head_dim)), comptime!(BLOCK_K * ld_half(head_dim)));
    let (s_len, p_len, o_len) = (comptime!(BLOCK_Q * ld_f32(BLOCK_K)), comptime!(BLOCK_Q * ld_half(BLOCK_K)), comptime!(BLOCK_Q * ld_f32(head_dim)));
    let (dl32, ol32, sl32, pl32) = (comptime!(ld_half(head_dim) as u32), comptime!(ld_f32(head_dim) as u32), comptime!(ld_f32(BLOCK_K) as u32), comptime!(ld_half(BLOCK_K) as u32));
    sync_cube();

    let kb = b * k.stride(0) + kvh * k.stride(1);
    let vb = b * v.stride(0) + kvh * v.stride(1);
    let mut kt = start;
    while kt < end {
        // 1. K and V tiles.
        let mut i = tid;
        while i < BLOCK_K * head_dim {
            let r = i / head_dim;
            let d = i % head_dim;
            let mut kx = F::new(0.0);
            let mut vx = F::new(0.0);
            if kt + r < tk {
                kx = k[kb + (kt + r) * k.stride(2) + d * k.stride(3)];
                vx = v[vb + (kt + r) * v.stride(2) + d * v.stride(3)];
            }
            ks[r * dl + d] = kx;
            vs[r * dl + d] = vx;
            i += units;
        }
        sync_cube();

        // 2. S = Q Kᵀ for this plane's 16 rows: [16, D] × [D, 64].
        #[unroll]
        for j in 0..k16 {
            let c = cmma::Matrix::<f32>::from_value(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined, f32::new(0.0));
            #[unroll]
            for kk in 0..d16 {
                let a = cmma::Matrix::<F>::from_slice(
                    cmma::MatrixIdent::A,
                    16usize,
                    16usize,
                    16usize,
                    cmma::MatrixLayout::RowMajor,
                    &qs.slice(q_off + kk * 16, q_len),
                    dl32,
                );
                // Kᵀ: column n of B is key row n of the tile.
                let bm = cmma::Matrix::<F>::from_slice(
                    cmma::MatrixIdent::B,
                    16usize,
                    16usize,
                    16usize,
                    cmma::MatrixLayout::ColMajor,
                    &ks.slice(j * 16 * dl + kk * 16, kv_len),
                    dl32,
                );
                cmma::execute::<F, F, f32, f32>(&a, &bm, &c, &c);
            }
            let mut dst = ss.slice_mut(s_off + j * 16, s_len);
            cmma::store(&mut dst, &c, sl32, cmma::MatrixLayout::RowMajor);
        }
        sync_cube();

        // 3. Online softmax, one unit per row.
        if owner {
            let so = r_loc * sl;
            let po = r_loc * pl;
            let mut corr = f32::new(1.0);
            let mut mt = lowest;
            if row_ok {
                for j in 0..BLOCK_K {
                    if visible(kt + j, row, tk, pad_b, q_offset, causal) {
                        mt = mt.max(ss[so + j] * scale);
                    }
                }
            }
            if mt > lowest {
                let m_new = m.max(mt);
                corr = (m - m_new).exp();
                l *= corr;
                for j in 0..BLOCK_K {
                    let mut p = f32::new(0.0);
                    if visible(kt + j, row, tk, pad_b, q_offset, causal) {
                        p = (ss[so + j] * scale - m_new).exp();
                    }
                    l += p;
                    ps[po + j] = F::cast_from(p);
                }
                m = m_new;
            } else {
                for j in 0..BLOCK_K {
                    ps[po + j] = F::new(0.0);
                }
            }
            cs[r_loc] = corr;
        }
        sync_cube();

        // 4. O = O·corr + P V for this plane's rows: [16, 64] × [64, D].
        let mut e = lane;
        while e < ROWS_PER_PLANE * head_dim {
            let rr = plane * ROWS_PER_PLANE + e / head_dim;
            let oi = rr * ol + e % head_dim;
            os[oi] = os[oi] * cs[rr];
            e += PLANE;
        }
        sync_cube();
        #[unroll]
        for n in 0..d16 {
            let c = cmma::Matrix::<f32>::from_value(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined, f32::new(0.0));
            cmma::load_with_layout(&c, &os.slice(o_off + n * 16, o_len), ol32, cmma::MatrixLayout::RowMajor);
            #[unroll]
            for kk in 0..k16 {
                let a = cmma::Matrix::<F>::from_slice(
                    cmma::MatrixIdent::A,
                    16usize,
                    16usize,
                    16usize,
                    cmma::MatrixLayout::RowMajor,
                    &ps.slice(p_off + kk * 16, p_len),
                    pl32,
                );
                let bm = cmma::Matrix::<F>::from_slice(
                    cmma::MatrixIdent::B,
                    16usize,
                    16usize,
                    16usize,
                    cmma::MatrixLayout::RowMajor,
                    &vs.slice(kk * 16 * dl + n * 16, kv_len),
                    dl32,
                );
                cmma::execute::<F, F, f32, f32>(&a, &bm, &c, &c);
            }
            let mut dst = os.slice_mut(o_off + n * 16, o_len);
            cmma::store(&mut dst, &c, ol32, cmma::MatrixLayout::RowMajor);
        }
        sync_cube();
        kt += BLOCK_K;
    }

    // Row sums and lse by the row owners, then the normalised output by all units.
    if owner {
        let mut lv = f32::new(0.0);
        if row_ok {
            lv = l;
            let rr = (b * nh + h) * tq + row;
            if l > f32::new(0.0) {
                lse[rr] = m + l.ln();
            } else {
                // No visible key (a padding query): output 0, and an lse that zeroes every P in backward.
                lse[rr] = f32::max_value();
            }
        }
        ls[r_loc] = lv;
    }
    sync_cube();
    let mut o = tid;
    while o < BLOCK_Q * head_dim {
        let r = o / head_dim;
        let d = o % head_dim;
        if first_row + r < tq {
            let lv = ls[r];
            let mut y = f32::new(0.0);
            if lv > f32::new(0.0) {
                y = os[r * ol + d] / lv;
            }
            out[((b * nh + h) * tq + first_row + r) * head_dim + d] = F::cast_from(y);
        }
        o += units;
    }
}
