//! Fused attention on the CPU (burn-flex, f32): the forward and backward of
//! [`crate::attention_ops`] on host slices, in blocks of query rows.
//!
//! Per query-row block it computes only the keys some row of the block can see (a causal block
//! stops at its last row's diagonal, a left-padded batch row starts at its first real key), with
//! `gemm` for the three products and a vectorised `exp` for the softmax. Against the plain-burn
//! reference this skips the masked half of a causal `[Tq, Tk]` score matrix, the `-1e9` fill, the
//! scalar `exp` of masked scores and the strided copies between ops. Same semantics as the CubeCL
//! kernels: FlashAttention-2 (Dao 2023, arXiv 2307.08691) forward returning `lse`, backward from it,
//! and a query that sees no key gets output 0, `lse = f32::MAX` and zero gradients.
//!
//! Layouts are contiguous row-major: `q, out, dout [B, H, Tq, D]`, `k, v [B, K, Tk, D]`,
//! `lse [B, H, Tq]`, `pad [B]`.

use crate::attention_ops::{FlashParams, flash_bwd_reference, flash_fwd_reference};
use crate::ops::ft;
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::ops::IntTensor;
use burn::tensor::{DType, Int, Tensor, TensorData};
use rayon::prelude::*;

/// Query rows per block: the score block is `ROWS × Tk` floats.
const ROWS: usize = 64;

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dims {
    /// B
    pub batch: usize,
    /// H
    pub heads: usize,
    /// K (divides H)
    pub kv_heads: usize,
    /// Tq
    pub q_len: usize,
    /// Tk
    pub k_len: usize,
    /// D
    pub head_dim: usize,
}

impl Dims {
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Keys `lo..hi` visible to query `i` of a row with `pad` left-pad keys (empty when `hi <= lo`).
fn visible_keys(i: usize, pad: usize, dims: &Dims, p: &FlashParams) -> (usize, usize) {
    let hi = if p.causal { (p.q_offset + i + 1).min(dims.k_len) } else { dims.k_len };
    (pad.min(dims.k_len), hi)
}

/// `dst[m, n] (+)= alpha · Σ_k lhs[m, k]·rhs[k, n]` with explicit (row, column) strides.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    alpha: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n, "cpu attention: dst too short");
    assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs, "cpu attention: lhs too short");
    assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs, "cpu attention: rhs too short");
    // SAFETY: the asserts above bound every index gemm reads or writes; the slices do not alias
    // (one is `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `exp(x)` to about 2 ulp, in plain arithmetic that vectorises (Cephes `expf`: `x = n·ln2 + r`,
/// a degree-6 polynomial on `|r| ≤ ln2/2`, `2ⁿ` from the exponent bits). Inputs are clamped to
/// `[-87.3, 88]`, so it never overflows and a very negative input gives about 1e-38, not 0.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const SHIFTER: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer in the low bits
    let x = x.clamp(-87.3, 88.0);
    let t = x * LOG2E + SHIFTER;
    let n = t - SHIFTER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut y = 1.987_569_1e-4_f32;
    y = y * r + 1.398_199_9e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 1.666_666_5e-1;
    y = y * r + 5e-1;
    let p = y * r * r + r + 1.0;
    let e = (t.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32); // n
    p * f32::from_bits(((e + 127) << 23) as u32)
}

/// One softmax row in place over `row` (all visible): `row ← exp(scale·row − m)/l`; returns
/// `lse = m + ln l` of the scaled scores.
#[inline(always)]
fn softmax_row_body(row: &mut [f32]) -> f32 {
    let mut mx = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            mx[l] = mx[l].max(c[l]);
        }
    }
    let m = tail.iter().fold(mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)), |a, &b| a.max(b));
    for x in row.iter_mut() {
        *x = exp_approx(*x - m);
    }
    let mut acc = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    let l = acc.iter().sum::<f32>() + tail.iter().sum::<f32>();
    let inv = 1.0 / l;
    for x in row.iter_mut() {
        *x *= inv;
    }
    m + l.ln()
}

/// `row ← exp(row − lse)` (the backward's recomputed probabilities).
#[inline(always)]
fn probs_from_lse_body(row: &mut [f32], lse: f32) {
    for x in row.iter_mut() {
        *x = exp_approx(*x - lse);
    }
}

/// `ds ← p ∘ (dp − delta) · scale`, written into `dp`.
#[inline(always)]
fn dscores_body(p: &[f32], dp: &mut [f32], delta: f32, scale: f32) {
    for (d, &pv) in dp.iter_mut().zip(p) {
        *d = pv * (*d - delta) * scale;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(row: &mut [f32]) -> f32 {
    softmax_row_body(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn probs_from_lse_avx2(row: &mut [f32], lse: f32) {
    probs_from_lse_body(row, lse)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

fn softmax_row(row: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { softmax_row_avx2(row) };
    }
    softmax_row_body(row)
}

fn probs_from_lse(row: &mut [f32], lse: f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { probs_from_lse_avx2(row, lse) };
    }
    probs_from_lse_body(row, lse)
}

/// Query rows `i0..i1` of one (batch row, head) and the key range `lo..hi` that any of them sees.
#[derive(Debug, Clone, Copy)]
struct Block {
    i0: usize,
    i1: usize,
    lo: usize,
    hi: usize,
}

fn blocks(pad: usize, dims: &Dims, p: &FlashParams) -> impl Iterator<Item = Block> {
    let (p, dims) = (*p, *dims);
    (0..dims.q_len.div_ceil(ROWS)).map(move |r| {
        let (i0, i1) = (r * ROWS, ((r + 1) * ROWS).min(dims.q_len));
        let (lo, hi) = visible_keys(i1 - 1, pad, &dims, &p);
        Block { i0, i1, lo, hi: hi.max(lo) }
    })
}

/// Scaled scores of a block, `s[(i − i0)·n + j] = scale·q_i·k_{lo+j}`, `n = hi − lo`.
fn block_scores(s: &mut Vec<f32>, q: &[f32], k: &[f32], blk: Block, d: usize, scale: f32) {
    let (rows, n) = (blk.i1 - blk.i0, blk.hi - blk.lo);
    s.clear();
    s.resize(rows * n, 0.0);
    matmul(rows, n, d, s, n, false, &q[blk.i0 * d..], (d, 1), &k[blk.lo * d..], (1, d), scale);
}

/// Forward: `(out [B, H, Tq, D], lse [B, H, Tq])`.
///
/// # Panics
/// If a slice's length does not match `dims` (a caller bug).
pub fn forward(q: &[f32], k: &[f32], v: &[f32], pad: &[i64], dims: Dims, p: &FlashParams) -> (Vec<f32>, Vec<f32>) {
    let Dims { batch, heads, q_len, k_len, head_dim: d, .. } = dims;
    assert_eq!(q.len(), batch * heads * q_len * d, "cpu attention: q");
    assert_eq!(k.len(), batch * dims.kv_heads * k_len * d, "cpu attention: k");
    assert_eq!(v.len(), k.len(), "cpu attention: v");
    assert_eq!(pad.len(), batch, "cpu attention: pad");
    let mut out = vec![0.0f32; q.len()];
    let mut lse = vec![f32::MAX; batch * heads * q_len];
    let (qs, ks) = (q_len * d, k_len * d);
    out.par_chunks_mut(qs).zip(lse.par_chunks_mut(q_len)).enumerate().for_each(|(bh, (out, lse))| {
        let (b, h) = (bh / heads, bh % heads);
        let kv = b * dims.kv_heads + h / dims.group();
        let (q, k, v) = (&q[bh * qs..(bh + 1) * qs], &k[kv * ks..(kv + 1) * ks], &v[kv * ks..(kv + 1) * ks]);
        let padb = pad[b].max(0) as usize;
        let mut s = Vec::new();
        for blk in blocks(padb, &dims, p) {
            let n = blk.hi - blk.lo;
            if n == 0 {
                continue; // no row of the block sees a key: out stays 0, lse MAX
            }
            block_scores(&mut s, q, k, blk, d, p.scale);
            for i in blk.i0..blk.i1 {
                let row = &mut s[(i - blk.i0) * n..(i - blk.i0 + 1) * n];
                let (lo, hi) = visible_keys(i, padb, &dims, p);
                let seen = hi.saturating_sub(lo);
                if seen == 0 {
                    row.fill(0.0);
                    continue;
                }
                lse[i] = softmax_row(&mut row[..seen]);
                row[seen..].fill(0.0);
            }
            let rows = blk.i1 - blk.i0;
            matmul(rows, d, n, &mut out[blk.i0 * d..], d, false, &s, (n, 1), &v[blk.lo * d..], (d, 1), 1.0);
        }
    });
    (out, lse)
}

/// Backward from the saved `out` and `lse`: `(dq [B, H, Tq, D], dk, dv [B, K, Tk, D])`.
///
/// # Panics
/// If a slice's length does not match `dims` (a caller bug).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    pad: &[i64],
    dims: Dims,
    p: &FlashParams,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims { batch, heads, kv_heads, q_len, k_len, head_dim: d } = dims;
    assert_eq!(q.len(), batch * heads * q_len * d, "cpu attention: q");
    assert_eq!(k.len(), batch * kv_heads * k_len * d, "cpu attention: k");
    assert!(v.len() == k.len() && out.len() == q.len() && dout.len() == q.len(), "cpu attention: v/out/dout");
    assert_eq!(lse.len(), batch * heads * q_len, "cpu attention: lse");
    assert_eq!(pad.len(), batch, "cpu attention: pad");
    let (qs, ks) = (q_len * d, k_len * d);
    let mut dq = vec![0.0f32; q.len()];
    // Per query head: dK, dV of the keys it reads; summed over each KV head's group below.
    let mut dk_h = vec![0.0f32; batch * heads * ks];
    let mut dv_h = vec![0.0f32; batch * heads * ks];
    dq.par_chunks_mut(qs).zip(dk_h.par_chunks_mut(ks).zip(dv_h.par_chunks_mut(ks))).enumerate().for_each(
        |(bh, (dq, (dk, dv)))| {
            let (b, h) = (bh / heads, bh % heads);
            let kv = b * kv_heads + h / dims.group();
            let r = bh * qs..(bh + 1) * qs;
            let (q, out, dout) = (&q[r.clone()], &out[r.clone()], &dout[r]);
            let (k, v) = (&k[kv * ks..(kv + 1) * ks], &v[kv * ks..(kv + 1) * ks]);
            let lse = &lse[bh * q_len..(bh + 1) * q_len];
            let padb = pad[b].max(0) as usize;
            let (mut s, mut dp) = (Vec::new(), Vec::new());
            for blk in blocks(padb, &dims, p) {
                let (rows, n) = (blk.i1 - blk.i0, blk.hi - blk.lo);
                if n == 0 {
                    continue;
                }
                block_scores(&mut s, q, k, blk, d, p.scale);
                // dP = dO·Vᵀ  [rows, n]
                dp.clear();
                dp.resize(rows * n, 0.0);
                matmul(rows, n, d, &mut dp, n, false, &dout[blk.i0 * d..], (d, 1), &v[blk.lo * d..], (1, d), 1.0);
                for i in blk.i0..blk.i1 {
                    let o = (i - blk.i0) * n;
                    let (lo, hi) = visible_keys(i, padb, &dims, p);
                    let seen = hi.saturating_sub(lo);
                    let (prow, dprow) = (&mut s[o..o + n], &mut dp[o..o + n]);
                    if seen == 0 {
                        prow.fill(0.0);
                        dprow.fill(0.0);
                        continue;
                    }
                    probs_from_lse(&mut prow[..seen], lse[i]);
                    prow[seen..].fill(0.0);
                    // Dᵢ = rowsum(dO∘O)
                    let delta: f32 = dout[i * d..(i + 1) * d].iter().zip(&out[i * d..(i + 1) * d]).map(|(a, b)| a * b).sum();
                    dscores_body(prow, dprow, delta, p.scale);
                }
                // dV += Pᵀ·dO, dQ = dS·K, dK += dSᵀ·Q
                matmul(n, d, rows, &mut dv[blk.lo * d..], d, true, &s, (1, n), &dout[blk.i0 * d..], (d, 1), 1.0);
                matmul(rows, d, n, &mut dq[blk.i0 * d..], d, false, &dp, (n, 1), &k[blk.lo * d..], (d, 1), 1.0);
                matmul(n, d, rows, &mut dk[blk.lo * d..], d, true, &dp, (1, n), &q[blk.i0 * d..], (d, 1), 1.0);
            }
        },
    );
    let g = dims.group();
    let reduce = |per_head: Vec<f32>| -> Vec<f32> {
        let mut sum = vec![0.0f32; batch * kv_heads * ks];
        sum.par_chunks_mut(ks).enumerate().for_each(|(bk, dst)| {
            let (b, kvh) = (bk / kv_heads, bk % kv_heads);
            for j in 0..g {
                let h = b * heads + kvh * g + j;
                for (a, x) in dst.iter_mut().zip(&per_head[h * ks..(h + 1) * ks]) {
                    *a += x;
                }
            }
        });
        sum
    };
    (dq, reduce(dk_h), reduce(dv_h))
}

/// Row-major f32 copy and shape of a burn-flex tensor (callers check the dtype first), copied in
/// its contiguous blocks. Attention's inputs are `[B, T, H, D] → [B, H, T, D]` views: rows of D
/// contiguous floats, which burn-flex's own `into_data` would walk one element at a time.
fn host_f32(x: &FlexTensor) -> (Vec<f32>, [usize; 4]) {
    let layout = x.layout();
    let dims: [usize; 4] = layout.shape().dims();
    let data = x.storage::<f32>();
    let blocks = layout.strided_blocks();
    let len = blocks.block_len();
    let mut out = Vec::with_capacity(layout.num_elements());
    for start in blocks.block_starts() {
        out.extend_from_slice(&data[start..start + len]);
    }
    (out, dims)
}

/// A `[B, H, T, D]` result as a burn-flex tensor laid out `[B, T, H, D]` in memory (a transposed
/// view): the model's next step, `swap_dims(1, 2)` and a reshape to `[B, T, H·D]`, then moves no data.
fn heads_view(v: Vec<f32>, [b, h, t, d]: [usize; 4]) -> FlexTensor {
    let mut bthd = vec![0.0f32; v.len()];
    bthd.par_chunks_mut(t * h * d).zip(v.par_chunks(h * t * d)).for_each(|(dst, src)| {
        for (hi, head) in src.chunks(t * d).enumerate() {
            for (ti, row) in head.chunks(d).enumerate() {
                dst[(ti * h + hi) * d..(ti * h + hi + 1) * d].copy_from_slice(row);
            }
        }
    });
    FlexTensor::from_data(TensorData::new(bthd, [b, t, h, d])).transpose(1, 2)
}

fn host_lse(x: FlexTensor) -> Vec<f32> {
    ft::<Flex, 3>(x).into_data().convert::<f32>().into_vec::<f32>().expect("lse is f32")
}

fn host_pad(pad: IntTensor<Flex>) -> Vec<i64> {
    Tensor::<Flex, 1, Int>::from_primitive(pad).into_data().convert::<i64>().into_vec::<i64>().expect("pad lengths")
}

/// [`crate::KernelBackend::flash_attention_fwd`] on burn-flex through [`forward`] for f32 tensors;
/// other dtypes take [`flash_fwd_reference`].
pub fn flash_fwd_host(q: FlexTensor, k: FlexTensor, v: FlexTensor, pad: IntTensor<Flex>, p: FlashParams) -> (FlexTensor, FlexTensor) {
    if ![&q, &k, &v].iter().all(|x| x.dtype() == DType::F32) {
        return flash_fwd_reference::<Flex>(q, k, v, pad, p);
    }
    let ((q, [b, h, tq, d]), (k, [_, kh, tk, _]), (v, _)) = (host_f32(&q), host_f32(&k), host_f32(&v));
    let dims = Dims { batch: b, heads: h, kv_heads: kh, q_len: tq, k_len: tk, head_dim: d };
    let (out, lse) = forward(&q, &k, &v, &host_pad(pad), dims, &p);
    (heads_view(out, [b, h, tq, d]), FlexTensor::from_data(TensorData::new(lse, [b, h, tq])))
}

/// [`crate::KernelBackend::flash_attention_bwd`] on burn-flex through [`backward`] for f32
/// tensors; other dtypes take [`flash_bwd_reference`].
#[allow(clippy::too_many_arguments)]
pub fn flash_bwd_host(
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    out: FlexTensor,
    lse: FlexTensor,
    dout: FlexTensor,
    pad: IntTensor<Flex>,
    p: FlashParams,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    if ![&q, &k, &v, &out, &dout].iter().all(|x| x.dtype() == DType::F32) {
        return flash_bwd_reference::<Flex>(q, k, v, out, lse, dout, pad, p);
    }
    let ((q, [b, h, tq, d]), (k, [_, kh, tk, _]), (v, _), (out, _), (dout, _)) =
        (host_f32(&q), host_f32(&k), host_f32(&v), host_f32(&out), host_f32(&dout));
    let dims = Dims { batch: b, heads: h, kv_heads: kh, q_len: tq, k_len: tk, head_dim: d };
    let (dq, dk, dv) = backward(&q, &k, &v, &out, &host_lse(lse), &dout, &host_pad(pad), dims, &p);
    (heads_view(dq, [b, h, tq, d]), heads_view(dk, [b, kh, tk, d]), heads_view(dv, [b, kh, tk, d]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::backend::Backend;
    use crate::attention::{AttentionMask, attention_reference};
    use crate::check::{max_abs_diff, uniform, uniform_tensor as rand4};
    use burn::backend::{Autodiff, Flex, NdArray};

    fn host<Bk: Backend>(t: Tensor<Bk, 4>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    /// Output and gradients of `sum(attention(q, k, v) ∘ w)` on `Bk`; `fused` picks the flash path.
    fn run<Bk: crate::KernelBackend + burn::tensor::backend::AutodiffBackend>(
        shape: [usize; 6],
        causal: bool,
        off: usize,
        pads: &[usize],
        fused: bool,
    ) -> [Vec<f32>; 4] {
        let [b, h, kh, tq, tk, d] = shape;
        let dev = Default::default();
        let mask = AttentionMask::<Bk>::new(causal, off, Some(pads.to_vec()), tq, tk, &dev);
        // Zero weight on queries that see no key: the reference gives them the mean of V.
        let mut w = uniform(b * h * tq * d, 4);
        for (row, c) in w.chunks_mut(d).enumerate() {
            let (bi, i) = (row / (h * tq), row % tq);
            if causal && off + i < pads[bi] {
                c.fill(0.0);
            }
        }
        let w = Tensor::<Bk, 4>::from_data(TensorData::new(w, [b, h, tq, d]), &dev);
        // Inputs as the model passes them: `[B, T, H, D]` projections seen as `[B, H, T, D]` views.
        let qb = rand4::<Bk, 4>([b, tq, h, d], 1).require_grad();
        let kb = rand4::<Bk, 4>([b, tk, kh, d], 2).require_grad();
        let vb = rand4::<Bk, 4>([b, tk, kh, d], 3).require_grad();
        let (q, k, v) = (qb.clone().swap_dims(1, 2), kb.clone().swap_dims(1, 2), vb.clone().swap_dims(1, 2));
        let out = if fused {
            crate::flash_attention(q.clone(), k.clone(), v.clone(), &mask)
        } else {
            attention_reference(q.clone(), k.clone(), v.clone(), &mask)
        };
        let g = (out.clone() * w.clone()).sum().backward();
        [host(out * w), host(qb.grad(&g).unwrap()), host(kb.grad(&g).unwrap()), host(vb.grad(&g).unwrap())]
    }

    /// The Flex path (this module) against autodiff of the plain-burn reference on NdArray: across
    /// a query-block boundary (70 and 130 rows), GQA 3, causal with an offset (KV-cache prefill and
    /// one-token decode), left padding with queries that see nothing, and non-causal.
    #[test]
    fn flex_matches_reference_forward_and_backward() {
        assert!(<Flex as crate::KernelBackend>::fused_attention());
        let cases: [([usize; 6], bool, usize, &[usize]); 5] = [
            ([2, 6, 2, 70, 75, 16], true, 5, &[3, 0]),
            ([2, 6, 2, 70, 70, 16], true, 0, &[2, 0]),
            ([1, 4, 2, 130, 130, 8], true, 0, &[0]),
            ([2, 6, 2, 1, 40, 16], true, 39, &[4, 0]),
            ([2, 3, 1, 21, 33, 8], false, 0, &[0, 5]),
        ];
        for (shape, causal, off, pads) in cases {
            let got = run::<Autodiff<Flex>>(shape, causal, off, pads, true);
            let want = run::<Autodiff<NdArray<f32>>>(shape, causal, off, pads, false);
            for (i, name) in ["out", "dq", "dk", "dv"].iter().enumerate() {
                let err = max_abs_diff(&got[i], &want[i]);
                assert!(err < 2e-5, "{shape:?} causal={causal} off={off}: {name} differs by {err}");
            }
        }
    }

    #[test]
    fn exp_approx_is_within_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_approx(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(exp_approx(-1e4) < 1e-37 && exp_approx(-1e4) >= 0.0);
        assert!(exp_approx(1e4).is_finite());
    }
}
