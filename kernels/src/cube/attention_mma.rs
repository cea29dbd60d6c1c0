//! Flash-attention forward with register-resident tiles (FlashAttention-2, Dao 2023, arXiv
//! 2307.08691, Algorithm 1) on PTX `mma.sync.m16n8k16` through CubeCL's manual MMA
//! ([`super::mma_frags`]).
//!
//! Cube: `planes` planes of 32 units (`CubeDim (32, planes)`, 4 on CUDA); plane `p` owns query rows
//! `16p..16p+16` of the cube's query tile, and each unit holds two of them (`g` and `g + 8` of the
//! plane's 16, in the accumulator layout). Q's fragments are loaded once into registers. Per
//! 64-key tile:
//! 1. all units stage K and V `[64, D]` in shared memory (input dtype, rows padded by 8 elements
//!    so that fragment loads hit distinct banks);
//! 2. `S = Q Kᵀ` `[16, 64]` per plane into f32 accumulators (8 × D/16 products);
//! 3. the online softmax on those registers: each unit's row maximum over its 16 scores, then over
//!    its quad (the 4 units sharing the row) by shuffles; the output accumulators scaled by
//!    `exp(m_old − m_new)`; `P = exp(s − m_new)`;
//! 4. `O += P V` `[16, D]`, with `P`'s accumulator pairs used directly as the A fragments.
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

use super::attention_kernels::{key_range, visible_end};
use super::mma_frags::{PLANE, load_a, load_b_pair, load_bt_pair, mma, quad_max, quad_sum, scratch_len, stage_rows_vec};
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

/// Row stride (elements) of the shared Q/K/V tiles: 8 elements (16 bytes) of padding shift each row
/// by four banks, so the 8 rows an `ldmatrix` (or a quad's element reads) touches hit distinct banks,
/// and rows stay 16-byte aligned.
pub const fn ld_tile(head_dim: usize) -> usize {
    head_dim + 8
}

/// Shared memory the kernel takes, in bytes: Q, K and V tiles, and the emulation scratch.
pub fn shared_bytes(d: usize, elem: usize, planes: usize, emulate: bool) -> usize {
    (planes * ROWS_PER_PLANE + 2 * BLOCK_K) * ld_tile(d) * elem + 4 * scratch_len(planes, emulate)
}

/// Planes per cube when emulating: the most (≤ [`PLANES`]) that fit `max_shared` bytes; `None`
/// when none does or the head dim is not a multiple of 16 (at most [`MAX_HEAD_DIM`]).
pub fn emulation_planes(d: usize, elem: usize, max_shared: usize) -> Option<usize> {
    if !d.is_multiple_of(16) || d > MAX_HEAD_DIM {
        return None;
    }
    [4, 2, 1].into_iter().find(|&p| shared_bytes(d, elem, p, true) <= max_shared)
}

/// Loop passes one unit makes (for the software adapter's loop limit; every other loop is
/// unrolled): the key-tile loop, K and V staging per tile, Q staging.
pub fn loop_iterations(tk: usize, d: usize, planes: usize) -> usize {
    let units = planes * PLANE;
    let stage = |rows: usize| (rows * d).div_ceil(units) + 1;
    tk.div_ceil(BLOCK_K) * (1 + 2 * stage(BLOCK_K)) + stage(planes * ROWS_PER_PLANE) + 1
}

/// Forward: cube (query tile of `16·planes` rows, head, batch); out `[B, H, Tq, D]` and lse
/// `[B, H, Tq]` contiguous. `head_dim` must be a multiple of 16, at most [`MAX_HEAD_DIM`]; Q, K
/// and V come as vectors of `N` elements (a divisor of 8): their last dimension contiguous, every
/// stride a multiple of `N`.
///
/// `scale` must be positive (row maxima are taken before scaling). `exp` and `ln` compile to the
/// hardware's approximate instructions on CUDA (`__expf`: a few ulp, far below the input dtype's
/// precision; FlashAttention does the same with `exp2f`): masked scores are `f32::MIN`, never
/// `-inf`, and `exp` of `f32::MIN·scale − off` (or of its overflow to `-inf`) is 0.
#[cube(launch_unchecked, address_type = "dynamic", fast_math = FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf)]
#[allow(clippy::too_many_arguments)]
pub fn flash_fwd_mma_kernel<F: Float, I: Numeric, N: Size>(
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
    #[comptime] ldmatrix: bool,
    #[comptime] emulate: bool,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let units = comptime!(PLANE * planes);
    let block_q = comptime!(ROWS_PER_PLANE * planes);
    let first_row = CUBE_POS_X as usize * block_q;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let (nh, tq) = (q.shape(1), q.shape(2));
    let (nkv, tk) = (k.shape(1), k.shape(2));
    let kvh = h / (nh / nkv);
    let pad_b = u32::cast_from(pad[b * pad.stride(0)]) as usize;
    let ld = comptime!(ld_tile(head_dim));
    // Q, K and V are read and staged `vs` elements at a time (16 bytes on CUDA).
    let vs = q.vector_size();
    // Head-dim steps of 16 (S's reduction), column blocks of 8 (O's accumulators).
    let nk = comptime!(head_dim / 16);
    let nd = comptime!(head_dim / 8);

    let mut qs = SharedMemory::<Vector<F, N>>::new(comptime!(block_q * ld_tile(head_dim) / vs));
    let mut ks = SharedMemory::<Vector<F, N>>::new(comptime!(BLOCK_K * ld_tile(head_dim) / vs));
    let mut vt = SharedMemory::<Vector<F, N>>::new(comptime!(BLOCK_K * ld_tile(head_dim) / vs));
    let mut xs = SharedMemory::<f32>::new(comptime!(scratch_len(planes, emulate)));

    // Q's fragments, once: [16, D] per plane, 4 registers per 16 columns.
    let qb = b * q.stride(0) + h * q.stride(1);
    stage_rows_vec::<F, N>(q, qb, q.stride(2), first_row, tq, &mut qs, block_q, ld, head_dim, vs, units);
    sync_cube();
    let q_off = plane * ROWS_PER_PLANE * ld;
    let mut qa = Array::<Vector<F, Const<2>>>::new(comptime!(4 * (head_dim / 16)));
    #[unroll]
    for kk in 0..nk {
        let a = load_a::<F, N>(&qs, q_off + kk * 16, ld, vs, ldmatrix);
        #[unroll]
        for i in 0..4usize {
            qa[kk * 4 + i] = a[i];
        }
    }

    // This unit's two rows (r = 0, 1: plane row g + 8r) and their state: reference maximum m and
    // this unit's share of the row sum l.
    let g = lane / 4;
    let t = lane % 4;
    let row0 = first_row + plane * ROWS_PER_PLANE + g;
    let lowest = f32::min_value();
    let mut rows = Array::<usize>::new(2usize);
    let mut hi = Array::<usize>::new(2usize);
    let mut m = Array::<f32>::new(2usize);
    let mut l = Array::<f32>::new(2usize);
    #[unroll]
    for r in 0..2usize {
        rows[r] = row0 + 8 * r;
        // Keys visible to the row: [pad_b, hi).
        hi[r] = visible_end(row0 + 8 * r, tk, q_offset, causal);
        m[r] = lowest;
        l[r] = f32::new(0.0);
    }
    // O: column block n's accumulator in vectors 2n (row g) and 2n + 1 (row g + 8).
    let mut o = Array::<Vector<f32, Const<2>>>::new(comptime!(2 * (head_dim / 8)));
    #[unroll]
    for i in 0..comptime!(2 * nd) {
        o[i] = Vector::new(f32::new(0.0));
    }

    let (start, end) = key_range(first_row, block_q, tq, tk, pad_b, q_offset, BLOCK_K, causal);
    // Every row of the cube sees the keys [pad_b, full_end): tiles inside need no mask.
    let full_end = visible_end(first_row, tk, q_offset, causal);
    let kb = b * k.stride(0) + kvh * k.stride(1);
    let vb = b * v.stride(0) + kvh * v.stride(1);
    let (k_rs, v_rs) = (k.stride(2), v.stride(2));
    let mut kt = start;
    while kt < end {
        // 1. K and V tiles (the barrier first: the previous tile's fragment loads are done).
        sync_cube();
        stage_rows_vec::<F, N>(k, kb, k_rs, kt, tk, &mut ks, BLOCK_K, ld, head_dim, vs, units);
        stage_rows_vec::<F, N>(v, vb, v_rs, kt, tk, &mut vt, BLOCK_K, ld, head_dim, vs, units);
        sync_cube();

        // 2. S = Q Kᵀ: key block j (8 keys) in vectors 2j, 2j + 1.
        let mut s = Array::<Vector<f32, Const<2>>>::new(comptime!(2 * BLOCK_K / 8));
        #[unroll]
        for i in 0..comptime!(2 * BLOCK_K / 8) {
            s[i] = Vector::new(f32::new(0.0));
        }
        #[unroll]
        for jp in 0..comptime!(BLOCK_K / 16) {
            #[unroll]
            for kk in 0..nk {
                let kf = load_bt_pair::<F, N>(&ks, jp * 16 * ld + kk * 16, ld, vs, ldmatrix);
                let mut a = Array::<Vector<F, Const<2>>>::new(4usize);
                #[unroll]
                for i in 0..4usize {
                    a[i] = qa[kk * 4 + i];
                }
                mma::<F>(&a, kf[0], kf[1], &mut s, comptime!(jp * 4), &mut xs, emulate);
                mma::<F>(&a, kf[2], kf[3], &mut s, comptime!(jp * 4 + 2), &mut xs, emulate);
            }
        }

        // 3. The rows' maxima over the tile and the quad, taken on the raw scores (the launcher
        // runs this kernel only for scale > 0, so max(s)·scale = max(s·scale)). Only in a tile
        // that some row of the cube cannot fully see are hidden scores set to `lowest` first.
        let masked = kt < pad_b || kt + BLOCK_K > full_end;
        if masked {
            #[unroll]
            for j in 0..comptime!(BLOCK_K / 8) {
                #[unroll]
                for r in 0..2usize {
                    let mut x = s[2 * j + r];
                    #[unroll]
                    for e in 0..2usize {
                        let key = kt + 8 * j + 2 * t + e;
                        x[e] = select(key < pad_b || key >= hi[r], lowest, x[e]);
                    }
                    s[2 * j + r] = x;
                }
            }
        }
        let mut mt = Array::<f32>::new(2usize);
        #[unroll]
        for r in 0..2usize {
            mt[r] = lowest;
        }
        #[unroll]
        for j in 0..comptime!(BLOCK_K / 8) {
            #[unroll]
            for r in 0..2usize {
                let x = s[2 * j + r];
                mt[r] = mt[r].max(x[0].max(x[1]));
            }
        }
        // The exponents' offsets: the scaled row maxima, or 0 while a row has seen no key (its
        // hidden scores, lowest·scale, then give exp(…) = 0 without a test per score).
        let mut off = Array::<f32>::new(2usize);
        #[unroll]
        for r in 0..2usize {
            let tile_max = quad_max(mt[r], &mut xs, emulate);
            let m_new = m[r].max(select(tile_max > lowest, tile_max * scale, lowest));
            // 1 when m stays; 0 when the row saw no key before (l and O are 0 then).
            let corr = (m[r] - m_new).exp();
            m[r] = m_new;
            off[r] = select(m_new > lowest, m_new, f32::new(0.0));
            l[r] *= corr;
            // Once the maxima settle, most tiles keep them: skip the 2·D/8 multiplies then.
            if corr < f32::new(1.0) {
                #[unroll]
                for n in 0..nd {
                    o[2 * n + r] = o[2 * n + r] * Vector::new(corr);
                }
            }
        }

        // 4. O += P V, 16 keys at a time: key blocks 2kk and 2kk + 1 form P's A fragment.
        #[unroll]
        for kk in 0..comptime!(BLOCK_K / 16) {
            let mut pa = Array::<Vector<F, Const<2>>>::new(4usize);
            #[unroll]
            for i in 0..4usize {
                // Register i: row half i % 2, key block 2kk + i / 2. P = exp(s·scale − off): one
                // fused multiply-add per score before the exponential.
                let x = s[2 * (2 * kk + i / 2) + i % 2];
                let mut p = Vector::<f32, Const<2>>::empty();
                #[unroll]
                for e in 0..2usize {
                    p[e] = (x[e] * scale - off[i % 2]).exp();
                }
                l[i % 2] += p[0] + p[1];
                pa[i] = Vector::<F, Const<2>>::cast_from(p);
            }
            #[unroll]
            for dp in 0..comptime!(head_dim / 16) {
                let vf = load_b_pair::<F, N>(&vt, kk * 16 * ld + dp * 16, ld, vs, ldmatrix);
                mma::<F>(&pa, vf[0], vf[1], &mut o, comptime!(dp * 4), &mut xs, emulate);
                mma::<F>(&pa, vf[2], vf[3], &mut o, comptime!(dp * 4 + 2), &mut xs, emulate);
            }
        }
        kt += BLOCK_K;
    }

    // Row sums over the quads; the normalised output and the log-sum-exp.
    #[unroll]
    for r in 0..2usize {
        let lr = quad_sum(l[r], &mut xs, emulate);
        let row = rows[r];
        if row < tq {
            let rr = (b * nh + h) * tq + row;
            let mut inv = f32::new(0.0);
            if lr > f32::new(0.0) {
                inv = f32::new(1.0) / lr;
            }
            if t == 0 {
                if lr > f32::new(0.0) {
                    lse[rr] = m[r] + lr.ln();
                } else {
                    // No visible key (a padding query): output 0, and an lse that zeroes every P in backward.
                    lse[rr] = f32::max_value();
                }
            }
            #[unroll]
            for n in 0..nd {
                let y = o[2 * n + r] * Vector::new(inv);
                let at = rr * head_dim + 8 * n + 2 * t;
                out[at] = F::cast_from(y[0]);
                out[at + 1] = F::cast_from(y[1]);
            }
        }
    }
}
