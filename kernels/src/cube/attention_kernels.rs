//! Portable flash-attention kernels (FlashAttention-2, Dao 2023, arXiv 2307.08691).
//!
//! One unit owns one query row (forward, dQ) or one key row (dK/dV) and keeps its row and its
//! accumulators in local arrays of `head_dim` f32; the cube stages the other side's tiles in shared
//! memory as f32. No plane operations and no `cmma`, so the same code runs on lavapipe (8-wide
//! planes, no tensor cores) and on CUDA. Inputs may be f32, f16 or bf16 (`#[define]`); all
//! arithmetic is f32. Masking is index arithmetic: key `j` is visible to query `i` of batch row
//! `b` iff `j >= pad[b]` and, if causal, `j <= q_offset + i`. GQA: query head `h` reads KV head
//! `h / (H / K)`; K and V are never repeated.
//!
//! Tile loads are unrolled, and so are the loops over `head_dim` when `unroll_rows` (head dims up to
//! [`UNROLL_MAX_HEAD_DIM`]; the per-row arrays are then indexed by constants). That matters on Mesa's
//! lavapipe/llvmpipe: its shader compiler (gallivm) gives each shader invocation a single loop
//! limiter of 65535 iterations, shared by all its loops, and once it runs out every loop exits
//! after one pass, so results are silently wrong (`LP_MAX_TGSI_LOOP_ITERATIONS`, `lp_exec_endloop`
//! in Mesa). With one iteration per element of `head_dim` that happened from 326 keys at head dim
//! 64 and 165 at 128 in the backward, and from ~450 keys at head dim 64 in the forward.
//! [`fwd_loop_iterations`] and its siblings count the passes; the launcher checks them against the
//! limit on software adapters and uses plain burn ops past it. Larger head dims stay rolled because
//! lavapipe compiles the unrolled kernels slowly (measured without Mesa's shader cache: 4 minutes
//! at head dim 64 against 7 s rolled, 12 s unrolled at 32); unrolling in chunks of 32 instead
//! indexes the arrays dynamically and was slower still (76 s at 128, 336 s at 64).

use cubecl::prelude::*;

/// Units per cube of the query-row and key-row kernels (rows owned by one cube).
pub const UNITS: usize = 32;

/// Largest head dim whose loops are unrolled.
pub const UNROLL_MAX_HEAD_DIM: usize = 32;

/// Whether the loops over `head_dim` are unrolled (`unroll_rows` of the kernels).
pub fn unroll_rows(head_dim: usize) -> bool {
    head_dim <= UNROLL_MAX_HEAD_DIM
}

/// What one loop over a row of `head_dim` costs gallivm's limiter: every pass of a loop counts,
/// the one that exits included (n + 1 for n iterations), and an unrolled loop costs nothing.
fn row_loop(head_dim: usize) -> usize {
    if unroll_rows(head_dim) { 0 } else { head_dim + 1 }
}

/// Loop passes one unit of [`flash_fwd_kernel`] makes at most (the unit that sees every key): per
/// key tile, one pass of the tile loop, two loops over the tile's `block_k` keys with two row loops
/// per key, and one rescale of the accumulator; plus the row loops before and after.
pub fn fwd_loop_iterations(tk: usize, head_dim: usize, block_k: usize) -> usize {
    let row = row_loop(head_dim);
    tk.div_ceil(block_k) * (1 + 2 * (block_k + 1) + block_k * 2 * row + row) + 2 * row + 1
}

/// Loop passes one unit of [`flash_dq_kernel`] makes at most (three row loops per key).
pub fn dq_loop_iterations(tk: usize, head_dim: usize, block_k: usize) -> usize {
    let row = row_loop(head_dim);
    tk.div_ceil(block_k) * (1 + (block_k + 1) + block_k * 3 * row) + 2 * row + 1
}

/// Loop passes one unit of [`flash_dkv_kernel`] makes at most: every query tile of each of the
/// `groups` query heads that share the unit's KV head (three row loops per query).
pub fn dkv_loop_iterations(tq: usize, head_dim: usize, block_q: usize, groups: usize) -> usize {
    let row = row_loop(head_dim);
    groups * (2 + tq.div_ceil(block_q) * (1 + (block_q + 1) + block_q * 3 * row)) + 2 * row + 1
}

/// Whether key `key` is visible to query `row`.
#[cube]
pub(crate) fn visible(key: usize, row: usize, tk: usize, pad: usize, q_offset: usize, #[comptime] causal: bool) -> bool {
    let mut ok = key < tk && key >= pad;
    if causal {
        ok = ok && key <= q_offset + row;
    }
    ok
}

/// End of the keys visible to query `row`: they are `pad..visible_end` (see [`visible`]).
#[cube]
pub(crate) fn visible_end(row: usize, tk: usize, q_offset: usize, #[comptime] causal: bool) -> usize {
    let mut end = tk;
    if causal {
        let last = q_offset + row + 1;
        if last < end {
            end = last;
        }
    }
    end
}

/// `log2 e`: scores scaled by `scale · LOG2_E` and offsets kept in base 2 give FlashAttention-2's
/// `P = 2^(s·scale·log2 e − m₂) = exp(s·scale − m)` (its `exp2f` with the scale folded in).
pub const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// `2^x`. On CUDA this is `__powf(2, x)`, which NVRTC folds to the bare `ex2.approx` (`MUFU.EX2`
/// and its subnormal fix-up); `exp` (`__expf`) is the same instruction after a multiply by
/// `log2 e`, one more instruction per score. 0 for `x = -inf`.
#[cube]
pub(crate) fn exp2(x: f32) -> f32 {
    f32::new(2.0).powf(x)
}

/// A row's log-sum-exp in base 2 (`lse · log2 e`, for `2^(s·scale₂ − lse₂)`); `f32::MAX`, the
/// mark of a row that sees no key, stays `f32::MAX` so that its `P` stays 0 without an infinity.
#[cube]
pub(crate) fn lse_base2(lse: f32) -> f32 {
    select(lse < f32::max_value(), lse * LOG2_E, lse)
}

/// The batch row and head of a register-tile cube: grid x runs over the `B·heads` (batch, head)
/// pairs, fastest, and y over the tiles ([`query_tile`], [`key_tile`]). With the pairs fastest, the
/// hardware's in-order dispatch starts every head's longest tile before any head's shorter ones
/// (longest-processing-time-first over the whole grid: with tiles fastest, the last heads' longest
/// tiles started near the end and ran alone, a third of the causal forward's time at 4096 tokens
/// on an H200).
#[cube]
pub(crate) fn batch_head(heads: usize) -> (usize, usize) {
    let bh = CUBE_POS_X as usize;
    (bh / heads, bh % heads)
}

/// The query tile this cube takes: its grid position along y, reversed when `causal`, so that the
/// tiles with the most visible keys (the last ones) start first and the short ones fill the tail of
/// the grid (see [`batch_head`]).
#[cube]
#[allow(arithmetic_overflow)] // rustc const-evaluates CubeCL's host-side stand-ins for CUBE_COUNT_Y and CUBE_POS_Y
pub(crate) fn query_tile(#[comptime] causal: bool) -> usize {
    let (tiles, pos) = (CUBE_COUNT_Y as usize, CUBE_POS_Y as usize);
    let mut tile = pos;
    if causal {
        tile = tiles - 1 - pos;
    }
    tile
}

/// The key tile this cube takes: its grid position along y. Causal, the first key tiles are seen by
/// the most queries, so in grid order they already start first (see [`batch_head`]).
#[cube]
pub(crate) fn key_tile() -> usize {
    CUBE_POS_Y as usize
}

/// Copies rows `first..first + rows` of the `[.., T, D]` slice at `base` into `sh` as f32, zero
/// past `t`. All [`UNITS`] units of the cube take part; the loop is unrolled (see the module doc).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_tile<F: Float>(
    src: &Tensor<F>,
    base: usize,
    first: usize,
    t: usize,
    sh: &mut SharedMemory<f32>,
    #[comptime] rows: usize,
    #[comptime] head_dim: usize,
) {
    let st = src.stride(2);
    let sd = src.stride(3);
    let n = comptime!(rows * head_dim);
    #[unroll]
    for i in 0..comptime!(n.div_ceil(UNITS)) {
        let idx = i * UNITS + UNIT_POS_X as usize;
        if idx < n {
            let r = first + idx / head_dim;
            let d = idx % head_dim;
            let mut x = f32::new(0.0);
            if r < t {
                x = f32::cast_from(src[base + r * st + d * sd]);
            }
            sh[idx] = x;
        }
    }
}

/// `Σ_d a[d]·sh[off + d]`.
#[cube]
fn dot_shared(a: &Array<f32>, sh: &SharedMemory<f32>, off: usize, #[comptime] head_dim: usize, #[comptime] unroll_rows: bool) -> f32 {
    let mut s = f32::new(0.0);
    #[unroll(unroll_rows)]
    for d in 0..head_dim {
        s += a[d] * sh[off + d];
    }
    s
}

/// Range of key tiles a query tile of `rows` rows starting at `first_row` needs: from the tile
/// holding the first unpadded key to the last key the tile's last query may see (cube-uniform, so
/// `sync_cube` inside the loop is safe).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn key_range(
    first_row: usize,
    rows: usize,
    tq: usize,
    tk: usize,
    pad: usize,
    q_offset: usize,
    #[comptime] block_k: usize,
    #[comptime] causal: bool,
) -> (usize, usize) {
    let start = (pad / block_k) * block_k;
    let mut end = tk;
    if causal {
        let mut rows_end = first_row + rows;
        if rows_end > tq {
            rows_end = tq;
        }
        if q_offset + rows_end < tk {
            end = q_offset + rows_end;
        }
    }
    (start, end)
}

/// Forward: cube (query tile, head, batch); out `[B, H, Tq, D]` and lse `[B, H, Tq]` contiguous.
#[cube(launch, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
pub fn flash_fwd_kernel<F: Float, I: Numeric>(
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
    #[comptime] unroll_rows: bool,
    #[comptime] block_k: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let tid = UNIT_POS_X as usize;
    let first_row = CUBE_POS_X as usize * UNITS;
    let row = first_row + tid;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let (nh, tq) = (q.shape(1), q.shape(2));
    let (nkv, tk) = (k.shape(1), k.shape(2));
    let kvh = h / (nh / nkv);
    let pad_b = u32::cast_from(pad[b * pad.stride(0)]) as usize;
    let row_ok = row < tq;

    let mut qa = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    let mut sc = Array::<f32>::new(block_k);
    let qb = b * q.stride(0) + h * q.stride(1) + row * q.stride(2);
    #[unroll(unroll_rows)]
    for d in 0..head_dim {
        acc[d] = f32::new(0.0);
        qa[d] = f32::new(0.0);
        if row_ok {
            qa[d] = f32::cast_from(q[qb + d * q.stride(3)]) * scale;
        }
    }
    let mut ks = SharedMemory::<f32>::new(block_k * head_dim);
    let mut vs = SharedMemory::<f32>::new(block_k * head_dim);
    let kb = b * k.stride(0) + kvh * k.stride(1);
    let vb = b * v.stride(0) + kvh * v.stride(1);
    let lowest = f32::min_value();
    let mut m = lowest;
    let mut l = f32::new(0.0);
    let (start, end) = key_range(first_row, UNITS, tq, tk, pad_b, q_offset, block_k, causal);
    let mut kt = start;
    while kt < end {
        load_tile::<F>(k, kb, kt, tk, &mut ks, block_k, head_dim);
        load_tile::<F>(v, vb, kt, tk, &mut vs, block_k, head_dim);
        sync_cube();
        if row_ok {
            let mut mt = lowest;
            for j in 0..block_k {
                let mut s = lowest;
                if visible(kt + j, row, tk, pad_b, q_offset, causal) {
                    s = dot_shared(&qa, &ks, j * head_dim, head_dim, unroll_rows);
                    mt = mt.max(s);
                }
                sc[j] = s;
            }
            if mt > lowest {
                // Online softmax (FA2): rescale the running sum and accumulator once per tile.
                let m_new = m.max(mt);
                let corr = (m - m_new).exp();
                l *= corr;
                #[unroll(unroll_rows)]
                for d in 0..head_dim {
                    acc[d] *= corr;
                }
                for j in 0..block_k {
                    if visible(kt + j, row, tk, pad_b, q_offset, causal) {
                        let p = (sc[j] - m_new).exp();
                        l += p;
                        #[unroll(unroll_rows)]
                        for d in 0..head_dim {
                            acc[d] += p * vs[j * head_dim + d];
                        }
                    }
                }
                m = m_new;
            }
        }
        sync_cube();
        kt += block_k;
    }
    if row_ok {
        let r = (b * nh + h) * tq + row;
        if l > f32::new(0.0) {
            let inv = f32::new(1.0) / l;
            #[unroll(unroll_rows)]
            for d in 0..head_dim {
                out[r * head_dim + d] = F::cast_from(acc[d] * inv);
            }
            lse[r] = m + l.ln();
        } else {
            // No visible key (a padding query): output 0, and an lse that zeroes every P in backward.
            #[unroll(unroll_rows)]
            for d in 0..head_dim {
                out[r * head_dim + d] = F::new(0.0);
            }
            lse[r] = f32::max_value();
        }
    }
}

/// `delta[r] = Σ_d dO[r, d]·O[r, d]` (FA2's D), one unit per row, the row read as `D/N` vectors of
/// `N` elements (16 bytes where the head dim and strides allow: a unit's loads hit a row 256 bytes
/// from its neighbours', so scalar loads made every 2-byte element its own memory request); both
/// inputs contiguous. `unroll_rows` as the other kernels' (with `D/N` passes).
#[cube(launch, address_type = "dynamic")]
#[allow(clippy::assign_op_pattern)] // `acc = acc + …`: the vector form the other kernels use (no `+=` on CubeCL vectors there)
pub fn flash_delta_kernel<F: Float, N: Size>(
    out: &Tensor<Vector<F, N>>,
    dout: &Tensor<Vector<F, N>>,
    delta: &mut Tensor<f32>,
    #[comptime] head_dim: usize,
    #[comptime] unroll_rows: bool,
    #[define(F)] _dtype: StorageType,
) {
    let r = ABSOLUTE_POS;
    if r >= delta.len() {
        terminate!();
    }
    let width = out.vector_size();
    let vecs = comptime!(head_dim / width);
    let mut acc = Vector::<f32, N>::new(f32::new(0.0));
    #[unroll(unroll_rows)]
    for i in 0..vecs {
        acc = acc + Vector::<f32, N>::cast_from(out[r * vecs + i]) * Vector::<f32, N>::cast_from(dout[r * vecs + i]);
    }
    let mut s = acc[0];
    #[unroll]
    for e in 1..width {
        s += acc[e];
    }
    delta[r] = s;
}

/// dK and dV of grouped-query attention from the query heads' f32 shares (FlashAttention-2's
/// `dk_expanded.sum`): `dk[b, j] = Σ_g part_k[b, j·G + g]` for the `groups` (G) query heads of KV
/// head `j`, shares `[B, H, Tk, D]` (`H = G·KV`) into `[B, KV, Tk, D]` in the input dtype, all
/// contiguous. One unit per vector of `N` output elements (16-byte share loads where `D` allows:
/// with one element per unit it ran at under half the memory's bandwidth), the G loads of each
/// share unrolled so that they are in flight together, adding in head order from 0 (the same bits
/// as one element at a time, and on every run).
#[cube(launch, address_type = "dynamic")]
#[allow(clippy::assign_op_pattern)] // `s = s + …`: CubeCL vectors have no `+=` here
pub fn group_sum_kernel<F: Float, N: Size>(
    part_k: &Tensor<Vector<f32, N>>,
    part_v: &Tensor<Vector<f32, N>>,
    dk: &mut Tensor<Vector<F, N>>,
    dv: &mut Tensor<Vector<F, N>>,
    #[comptime] groups: usize,
    #[define(F)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= dk.len() {
        terminate!();
    }
    // Vectors per head; output vector i is (b·KV + j, e), its shares (b·H + j·G + g, e).
    let per_head = dk.shape(2) * dk.shape(3) / dk.vector_size();
    let first = (i / per_head) * groups * per_head + i % per_head;
    let mut sk = Vector::<f32, N>::new(f32::new(0.0));
    let mut sv = Vector::<f32, N>::new(f32::new(0.0));
    #[unroll]
    for g in 0..groups {
        sk = sk + part_k[first + g * per_head];
        sv = sv + part_v[first + g * per_head];
    }
    dk[i] = Vector::<F, N>::cast_from(sk);
    dv[i] = Vector::<F, N>::cast_from(sv);
}

/// `out = scale·acc` in the output dtype, elementwise (both contiguous, the same shape, vectors of
/// `N`): the fused backwards' dQ from its f32 sums of `dS K` (FlashAttention-2's `convert_dQ`), one
/// pass instead of a scaling and a cast.
#[cube(launch, address_type = "dynamic")]
pub fn scale_cast_kernel<F: Float, N: Size>(acc: &Tensor<Vector<f32, N>>, out: &mut Tensor<Vector<F, N>>, scale: f32, #[define(F)] _dtype: StorageType) {
    let i = ABSOLUTE_POS;
    if i >= out.len() {
        terminate!();
    }
    out[i] = Vector::<F, N>::cast_from(acc[i] * Vector::new(scale));
}

/// dQ: cube (query tile, head, batch), one unit per query row; dq `[B, H, Tq, D]` contiguous.
#[cube(launch, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
pub fn flash_dq_kernel<F: Float, I: Numeric>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    dout: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    pad: &Tensor<I>,
    dq: &mut Tensor<F>,
    scale: f32,
    q_offset: usize,
    #[comptime] causal: bool,
    #[comptime] head_dim: usize,
    #[comptime] unroll_rows: bool,
    #[comptime] block_k: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let tid = UNIT_POS_X as usize;
    let first_row = CUBE_POS_X as usize * UNITS;
    let row = first_row + tid;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let (nh, tq) = (q.shape(1), q.shape(2));
    let (nkv, tk) = (k.shape(1), k.shape(2));
    let kvh = h / (nh / nkv);
    let pad_b = u32::cast_from(pad[b * pad.stride(0)]) as usize;
    let row_ok = row < tq;
    let r = (b * nh + h) * tq + row;

    let mut qa = Array::<f32>::new(head_dim);
    let mut doa = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    let qb = b * q.stride(0) + h * q.stride(1) + row * q.stride(2);
    let ob = b * dout.stride(0) + h * dout.stride(1) + row * dout.stride(2);
    let mut lse_r = f32::new(0.0);
    let mut delta_r = f32::new(0.0);
    #[unroll(unroll_rows)]
    for d in 0..head_dim {
        acc[d] = f32::new(0.0);
        qa[d] = f32::new(0.0);
        doa[d] = f32::new(0.0);
        if row_ok {
            qa[d] = f32::cast_from(q[qb + d * q.stride(3)]) * scale;
            doa[d] = f32::cast_from(dout[ob + d * dout.stride(3)]);
        }
    }
    if row_ok {
        lse_r = lse[r];
        delta_r = delta[r];
    }
    let mut ks = SharedMemory::<f32>::new(block_k * head_dim);
    let mut vs = SharedMemory::<f32>::new(block_k * head_dim);
    let kb = b * k.stride(0) + kvh * k.stride(1);
    let vb = b * v.stride(0) + kvh * v.stride(1);
    let (start, end) = key_range(first_row, UNITS, tq, tk, pad_b, q_offset, block_k, causal);
    let mut kt = start;
    while kt < end {
        load_tile::<F>(k, kb, kt, tk, &mut ks, block_k, head_dim);
        load_tile::<F>(v, vb, kt, tk, &mut vs, block_k, head_dim);
        sync_cube();
        if row_ok {
            for j in 0..block_k {
                if visible(kt + j, row, tk, pad_b, q_offset, causal) {
                    let p = (dot_shared(&qa, &ks, j * head_dim, head_dim, unroll_rows) - lse_r).exp();
                    let ds = p * (dot_shared(&doa, &vs, j * head_dim, head_dim, unroll_rows) - delta_r);
                    #[unroll(unroll_rows)]
                    for d in 0..head_dim {
                        acc[d] += ds * ks[j * head_dim + d];
                    }
                }
            }
        }
        sync_cube();
        kt += block_k;
    }
    if row_ok {
        #[unroll(unroll_rows)]
        for d in 0..head_dim {
            dq[r * head_dim + d] = F::cast_from(acc[d] * scale);
        }
    }
}

/// dK, dV: cube (key tile, KV head, batch), one unit per key row, looping over the G query heads
/// of the group and their query tiles; dk, dv `[B, K, Tk, D]` contiguous.
#[cube(launch, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
pub fn flash_dkv_kernel<F: Float, I: Numeric>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    dout: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    pad: &Tensor<I>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    scale: f32,
    q_offset: usize,
    #[comptime] causal: bool,
    #[comptime] head_dim: usize,
    #[comptime] unroll_rows: bool,
    #[comptime] block_q: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let tid = UNIT_POS_X as usize;
    let first_key = CUBE_POS_X as usize * UNITS;
    let key = first_key + tid;
    let kvh = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let (nh, tq) = (q.shape(1), q.shape(2));
    let (nkv, tk) = (k.shape(1), k.shape(2));
    let groups = nh / nkv;
    let pad_b = u32::cast_from(pad[b * pad.stride(0)]) as usize;
    let key_ok = key < tk && key >= pad_b;

    let mut ka = Array::<f32>::new(head_dim);
    let mut va = Array::<f32>::new(head_dim);
    let mut dka = Array::<f32>::new(head_dim);
    let mut dva = Array::<f32>::new(head_dim);
    let kb = b * k.stride(0) + kvh * k.stride(1) + key * k.stride(2);
    let vb = b * v.stride(0) + kvh * v.stride(1) + key * v.stride(2);
    #[unroll(unroll_rows)]
    for d in 0..head_dim {
        ka[d] = f32::new(0.0);
        va[d] = f32::new(0.0);
        dka[d] = f32::new(0.0);
        dva[d] = f32::new(0.0);
        if key < tk {
            ka[d] = f32::cast_from(k[kb + d * k.stride(3)]) * scale;
            va[d] = f32::cast_from(v[vb + d * v.stride(3)]);
        }
    }
    let mut qs = SharedMemory::<f32>::new(block_q * head_dim);
    let mut dos = SharedMemory::<f32>::new(block_q * head_dim);
    let mut lse_s = SharedMemory::<f32>::new(block_q);
    let mut delta_s = SharedMemory::<f32>::new(block_q);
    // Causal: queries before `first_key - q_offset` see none of this tile's keys.
    let mut q_start = 0;
    if causal && first_key > q_offset {
        q_start = ((first_key - q_offset) / block_q) * block_q;
    }
    for g in 0..groups {
        let h = kvh * groups + g;
        let qb = b * q.stride(0) + h * q.stride(1);
        let ob = b * dout.stride(0) + h * dout.stride(1);
        let rb = (b * nh + h) * tq;
        let mut qt = q_start;
        while qt < tq {
            load_tile::<F>(q, qb, qt, tq, &mut qs, block_q, head_dim);
            load_tile::<F>(dout, ob, qt, tq, &mut dos, block_q, head_dim);
            if tid < block_q {
                let i = qt + tid;
                let mut l = f32::max_value();
                let mut dl = f32::new(0.0);
                if i < tq {
                    l = lse[rb + i];
                    dl = delta[rb + i];
                }
                lse_s[tid] = l;
                delta_s[tid] = dl;
            }
            sync_cube();
            if key_ok {
                for r in 0..block_q {
                    let i = qt + r;
                    let mut vis = i < tq;
                    if causal {
                        vis = vis && key <= q_offset + i;
                    }
                    if vis {
                        let p = (dot_shared(&ka, &qs, r * head_dim, head_dim, unroll_rows) - lse_s[r]).exp();
                        let ds = p * (dot_shared(&va, &dos, r * head_dim, head_dim, unroll_rows) - delta_s[r]);
                        #[unroll(unroll_rows)]
                        for d in 0..head_dim {
                            dva[d] += p * dos[r * head_dim + d];
                            dka[d] += ds * qs[r * head_dim + d];
                        }
                    }
                }
            }
            sync_cube();
            qt += block_q;
        }
    }
    if key < tk {
        let o = ((b * nkv + kvh) * tk + key) * head_dim;
        #[unroll(unroll_rows)]
        for d in 0..head_dim {
            dk[o + d] = F::cast_from(dka[d] * scale);
            dv[o + d] = F::cast_from(dva[d]);
        }
    }
}
