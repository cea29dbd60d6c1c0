//! Tensor-core flash-attention forward (FlashAttention-2, Dao 2023, arXiv 2307.08691) through
//! CubeCL's `cmma` (16×16×16 tiles, f16/bf16 inputs, f32 accumulation).
//!
//! Cube: `planes` planes of 32 units (`CubeDim (32, planes)`, 4 on CUDA); plane `p` owns query rows
//! `16p..16p+16` of the cube's query tile. Per 64-key tile:
//! 1. all units stage K and V `[64, D]` in shared memory (input dtype, no conversion);
//! 2. each plane computes its scores `S = Q Kᵀ` `[16, 64]` with `cmma` into shared f32;
//! 3. online softmax, two units per row (the plane's 32 units for its 16 rows, 32 keys each,
//!    combined through shared memory): `P` `[16, 64]` in the input dtype, running sum `l`;
//! 4. the plane adds `P V` to its output accumulators `O` `[16, D]`, which stay in `cmma`
//!    fragments for the whole key loop.
//!
//! **Lazy rescaling** (as FlashAttention-4 does): a row keeps its reference maximum `m` until a
//! tile's maximum exceeds it by more than [`RESCALE_THRESHOLD`]; only then is `m` raised and `O`
//! (and `l`) multiplied by `exp(m_old − m_new)`. `P = exp(s − m)` is then at most `e^8 ≈ 2981`,
//! fine in f16/bf16, and `lse = m + ln l`, `O / l` are exact whichever `m` was used. A rescale
//! takes the fragments through shared memory (CubeCL's `cmma` has no per-element access); with
//! the threshold it happens only when a later tile's scores rise well above the earlier ones.
//!
//! `emulate` (comptime) replaces the two tile products by scalar code on the same shared tiles and
//! keeps `O` in shared memory: everything else (staging, masking, the softmax, the rescale
//! decision, the epilogue) is the same code, so the kernel's logic runs and is tested on devices
//! without tensor cores (lavapipe in CI). The `cmma` calls themselves are checked on CUDA
//! (`mlagent kernels check --device cuda --dtype bf16`).
//!
//! The output and log-sum-exp match [`super::attention_kernels::flash_fwd_kernel`] (the portable
//! path, which also serves f32, head dims that are not a multiple of 16, and runtimes without
//! `cmma`): same masking, same `lse`, and `lse = f32::MAX` with a zero output for rows that see no
//! key.

use super::attention_kernels::{key_range, visible_end};
use super::cmma_tiles::{ab_acc_16xn, abt_16xn, load_acc, stage_rows, store_acc, zero_acc, zero_rows};
use cubecl::prelude::*;

/// Query rows per plane (the `cmma` M dimension).
pub const ROWS_PER_PLANE: usize = 16;
/// Planes per cube on CUDA.
pub const PLANES: usize = 4;
/// Keys per shared-memory tile.
pub const BLOCK_K: usize = 64;
/// Units per plane this kernel is written for (CUDA's warp).
pub const PLANE: usize = 32;
/// How far (natural-log units) a tile's maximum score may exceed a row's reference maximum before
/// the row rescales; `e^8 ≈ 2981` stays well inside f16's range for `P`.
pub const RESCALE_THRESHOLD: f32 = 8.0;

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

/// Shared memory the kernel takes, in bytes, for head dim `d`, input element size `elem` and
/// `planes` planes per cube.
pub fn shared_bytes(d: usize, elem: usize, planes: usize) -> usize {
    let (block_q, units) = (planes * ROWS_PER_PLANE, planes * PLANE);
    // Q, K, V tiles and P in the input dtype.
    let half = (block_q + 2 * BLOCK_K) * ld_half(d) + block_q * ld_half(BLOCK_K);
    // S and O in f32; per-row correction and sum; two partials per unit; the rescale flag (8 words).
    let f32s = block_q * ld_f32(BLOCK_K) + block_q * ld_f32(d) + 2 * block_q + 2 * units + 8;
    half * elem + f32s * 4
}

/// Planes per cube for the emulated kernel: the most (≤ [`PLANES`]) whose tiles fit in
/// `max_shared` bytes; `None` when even one plane's do not, or the head dim is not a multiple of 16
/// (at most 256).
pub fn emulation_planes(d: usize, elem: usize, max_shared: usize) -> Option<usize> {
    if !d.is_multiple_of(16) || d > 256 {
        return None;
    }
    [4, 2, 1].into_iter().find(|&p| shared_bytes(d, elem, p) <= max_shared)
}

/// Loop passes one unit of the emulated kernel makes at most (see `attention_kernels` on Mesa's
/// per-invocation loop limit; the `cmma` kernel's tile products are unrolled and it never runs
/// on lavapipe): per key tile, the two staging loops, the emulated `S` (32 elements per unit, `d` each)
/// and `P V` (`16·d/32` elements, 64 each), the two softmax loops, the rescale check and scaling.
pub fn emulated_loop_iterations(tk: usize, d: usize, planes: usize) -> usize {
    let (block_q, units) = (planes * ROWS_PER_PLANE, planes * PLANE);
    let o_elems = (ROWS_PER_PLANE * d).div_ceil(PLANE);
    let tile = 1
        + 2 * ((BLOCK_K * d).div_ceil(units) + 1)
        + (ROWS_PER_PLANE * BLOCK_K / PLANE) * (d + 1)
        + 1
        + 2 * (BLOCK_K / 2 + 1)
        + (o_elems + 1)
        + o_elems * (BLOCK_K + 1)
        + 1;
    tk.div_ceil(BLOCK_K) * tile + 3 * ((block_q * d).div_ceil(units) + 1) + 1
}

/// Forward: cube (query tile of `16·planes` rows, head, batch); out `[B, H, Tq, D]` and lse
/// `[B, H, Tq]` contiguous. `head_dim` must be a multiple of 16.
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
    #[comptime] planes: usize,
    #[comptime] emulate: bool,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let tid = plane * PLANE + lane;
    let units = comptime!(PLANE * planes);
    let block_q = comptime!(ROWS_PER_PLANE * planes);
    let first_row = CUBE_POS_X as usize * block_q;
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
    let mut qs = SharedMemory::<F>::new(comptime!(block_q * ld_half(head_dim)));
    let mut ks = SharedMemory::<F>::new(comptime!(BLOCK_K * ld_half(head_dim)));
    let mut vs = SharedMemory::<F>::new(comptime!(BLOCK_K * ld_half(head_dim)));
    let mut ss = SharedMemory::<f32>::new(comptime!(block_q * ld_f32(BLOCK_K)));
    let mut ps = SharedMemory::<F>::new(comptime!(block_q * ld_half(BLOCK_K)));
    let mut os = SharedMemory::<f32>::new(comptime!(block_q * ld_f32(head_dim)));
    let mut cs = SharedMemory::<f32>::new(block_q);
    let mut ls = SharedMemory::<f32>::new(block_q);
    let mut part_max = SharedMemory::<f32>::new(units);
    let mut part_sum = SharedMemory::<f32>::new(units);
    // 8 entries, one used: CubeCL packs the shared arrays one after another, and `cmma` wants every
    // tile pointer 32-byte aligned, so every array here is a multiple of 32 bytes long.
    let mut rescale = SharedMemory::<u32>::new(8usize);

    // Q tile (zero past tq) and a zero output (the accumulator when emulating).
    let qb = b * q.stride(0) + h * q.stride(1);
    stage_rows::<F>(q, qb, first_row, tq, &mut qs, block_q, dl, head_dim, units);
    zero_rows(&mut os, block_q, ol, head_dim, units);

    let (start, end) = key_range(first_row, block_q, tq, tk, pad_b, q_offset, BLOCK_K, causal);

    // Softmax state: units 2r and 2r + 1 (of the plane that owns row r) share row r and keep
    // identical copies of its reference maximum `m` and sum `l`.
    let r_loc = tid / 2;
    let half = tid % 2;
    let partner = tid - half + (1 - half);
    let row = first_row + r_loc;
    let row_ok = row < tq;
    // Keys visible to the row: [pad_b, hi).
    let hi = visible_end(row, tk, q_offset, causal);
    let lowest = f32::min_value();
    let mut m = lowest;
    let mut l = f32::new(0.0);
    let q_off = plane * ROWS_PER_PLANE * dl;
    let o_off = plane * ROWS_PER_PLANE * ol;
    let s_off = plane * ROWS_PER_PLANE * sl;
    let p_off = plane * ROWS_PER_PLANE * pl;
    let (q_len, kv_len) = (comptime!(block_q * ld_half(head_dim)), comptime!(BLOCK_K * ld_half(head_dim)));
    let (s_len, p_len, o_len) = (comptime!(block_q * ld_f32(BLOCK_K)), comptime!(block_q * ld_half(BLOCK_K)), comptime!(block_q * ld_f32(head_dim)));

    // The plane's output accumulators, one 16×16 fragment per 16 columns of D.
    let acc = zero_acc(head_dim, emulate);
    sync_cube();

    let kb = b * k.stride(0) + kvh * k.stride(1);
    let vb = b * v.stride(0) + kvh * v.stride(1);
    let mut kt = start;
    while kt < end {
        // 1. K and V tiles; the rescale flag is cleared (its last reader passed the loop's final sync).
        if tid == 0 {
            rescale[0] = 0;
        }
        stage_rows::<F>(k, kb, kt, tk, &mut ks, BLOCK_K, dl, head_dim, units);
        stage_rows::<F>(v, vb, kt, tk, &mut vs, BLOCK_K, dl, head_dim, units);
        sync_cube();

        // 2. S = Q Kᵀ for this plane's 16 rows: [16, D] × [D, 64].
        abt_16xn::<F>(&qs, q_off, &ks, 0, &mut ss, s_off, dl, sl, q_len, kv_len, s_len, head_dim, BLOCK_K, emulate);
        sync_cube();

        // 3. Online softmax, two units per row: unit `half` takes keys 2i + half of the tile.
        let so = r_loc * sl;
        let po = r_loc * pl;
        let mut mt = lowest;
        if row_ok {
            for i in 0..BLOCK_K / 2 {
                let j = 2 * i + half;
                let key = kt + j;
                if key >= pad_b && key < hi {
                    mt = mt.max(ss[so + j] * scale);
                }
            }
        }
        part_max[tid] = mt;
        sync_cube();
        mt = mt.max(part_max[partner]);
        let mut m_new = m;
        if mt > m + RESCALE_THRESHOLD {
            m_new = mt;
        }
        // 1 when m stays; 0 when the row saw no key before (l and O are 0 then).
        let corr = (m - m_new).exp();
        let mut psum = f32::new(0.0);
        for i in 0..BLOCK_K / 2 {
            let j = 2 * i + half;
            let key = kt + j;
            let mut p = f32::new(0.0);
            if row_ok && key >= pad_b && key < hi {
                p = (ss[so + j] * scale - m_new).exp();
            }
            psum += p;
            ps[po + j] = F::cast_from(p);
        }
        part_sum[tid] = psum;
        // O needs the correction only when it holds something (l > 0) and m moved.
        let moved = m_new > m && l > f32::new(0.0);
        if half == 0 {
            let mut c = f32::new(1.0);
            if moved {
                c = corr;
                rescale[0] = 1;
            }
            cs[r_loc] = c;
        }
        l *= corr;
        m = m_new;
        sync_cube();
        // Both units add the two partials (a + b == b + a: their copies of l stay identical).
        l += part_sum[tid] + part_sum[partner];

        // 4. O = O·corr when any row of the cube moved its maximum (cube-uniform), then O += P V.
        if rescale[0] == 1 {
            store_acc(&acc, &mut os, o_off, ol, o_len, head_dim, emulate);
            sync_cube();
            let mut e = lane;
            while e < ROWS_PER_PLANE * head_dim {
                let rr = plane * ROWS_PER_PLANE + e / head_dim;
                let oi = rr * ol + e % head_dim;
                os[oi] = os[oi] * cs[rr];
                e += PLANE;
            }
            sync_cube();
            load_acc(&acc, &os, o_off, ol, o_len, head_dim, emulate);
        }
        // [16, 64] × [64, D].
        ab_acc_16xn::<F>(&ps, p_off, &vs, &acc, &mut os, o_off, pl, dl, ol, p_len, kv_len, head_dim, BLOCK_K, emulate);
        sync_cube();
        kt += BLOCK_K;
    }

    // The accumulators to shared memory; row sums and lse by one unit per row; then the
    // normalised output by all units.
    store_acc(&acc, &mut os, o_off, ol, o_len, head_dim, emulate);
    if half == 0 {
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
    while o < block_q * head_dim {
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
