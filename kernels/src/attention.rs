//! Scaled dot-product attention with causal masking, grouped-query heads and left padding.
//!
//! `softmax(Q·Kᵀ/√D + mask)·V` (Vaswani et al. 2017, eq. 1) where query head `h` reads KV head
//! `h / G` (GQA, Ainslie et al. 2023). The reference path groups the G query heads that share a KV
//! head into one matrix instead of repeating K and V, computes the softmax in f32 whatever the
//! compute dtype (as HF transformers' eager attention does), and fills masked scores with a large
//! finite negative number so that fully masked rows (padding queries) yield finite values, not NaN.

use crate::KernelBackend;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, FloatDType, Int, Tensor, TensorData};

/// Score given to masked key positions; finite so that an all-masked row stays NaN-free.
const MASKED_SCORE: f32 = -1.0e9;

/// Which keys each query may attend to.
///
/// Key `j` is visible to query `i` of row `b` when `j >= pad_lens[b]` (left padding) and, if
/// causal, `j <= q_offset + i` (the query's index in the key sequence; `q_offset` is the number of
/// cached keys that precede the current queries).
#[derive(Debug, Clone)]
pub struct AttentionMask<B: Backend> {
    /// Causal masking on or off.
    pub causal: bool,
    /// Index in the key sequence of the first query (the KV-cache length before this call).
    pub q_offset: usize,
    /// Left-padding length of each batch row (keys `0..pad_lens[b]` are never visible).
    pub pad_lens: Option<Vec<usize>>,
    /// `[B or 1, 1, Tq, Tk]`, true where the score is masked out; `None` when nothing is masked.
    dense: Option<Tensor<B, 4, Bool>>,
}

impl<B: Backend> AttentionMask<B> {
    /// Builds the mask for `tq` queries over `tk` keys once, to be shared by every layer.
    ///
    /// # Panics
    /// If `q_offset + tq > tk` (queries beyond the keys) or a pad length exceeds `tk`.
    pub fn new(
        causal: bool,
        q_offset: usize,
        pad_lens: Option<Vec<usize>>,
        tq: usize,
        tk: usize,
        device: &B::Device,
    ) -> Self {
        assert!(q_offset + tq <= tk, "attention mask: {q_offset} + {tq} queries > {tk} keys");
        let pad_lens = pad_lens.filter(|p| p.iter().any(|&n| n > 0));
        if let Some(p) = &pad_lens {
            assert!(p.iter().all(|&n| n <= tk), "attention mask: pad length > {tk} keys");
        }
        // Query i sees keys 0..=q_offset+i, so some key is hidden iff the first query misses one.
        let needs_causal = causal && tk > q_offset + 1;
        let dense = if !needs_causal && pad_lens.is_none() {
            None
        } else {
            let rows = pad_lens.as_ref().map_or(1, Vec::len);
            let mut m = vec![false; rows * tq * tk];
            for r in 0..rows {
                let pad = pad_lens.as_ref().map_or(0, |p| p[r]);
                for i in 0..tq {
                    for j in 0..tk {
                        m[(r * tq + i) * tk + j] = j < pad || (causal && j > q_offset + i);
                    }
                }
            }
            Some(Tensor::from_data(TensorData::new(m, [rows, 1, tq, tk]), device))
        };
        Self { causal, q_offset, pad_lens, dense }
    }

    /// The dense boolean mask `[B or 1, 1, Tq, Tk]` (true = masked), if any position is masked.
    pub fn dense(&self) -> Option<&Tensor<B, 4, Bool>> {
        self.dense.as_ref()
    }

    /// Left-pad lengths as a device tensor `[B]`, for kernels that mask by index arithmetic.
    pub fn pad_lens_tensor(&self, device: &B::Device) -> Option<Tensor<B, 1, Int>> {
        self.pad_lens.as_ref().map(|p| {
            let v: Vec<i64> = p.iter().map(|&n| n as i64).collect();
            Tensor::from_data(TensorData::new(v, [p.len()]), device)
        })
    }
}

/// Attention used by every layer of the engine: the fused flash-attention kernel on backends that
/// have one ([`KernelBackend::fused_attention`]: CUDA and WGPU, with or without autodiff), the
/// plain-burn reference elsewhere (CPU). The two agree on every query that sees at least one key;
/// a query that sees none (a left-padding position, never read) gets zeros from the kernel.
///
/// # Shapes
/// - `q`: `[B, H, Tq, D]`, `k`, `v`: `[B, K, Tk, D]` with `H % K == 0`
/// - returns `[B, H, Tq, D]`
///
/// # Panics
/// On inconsistent shapes (a model bug, not user input).
pub fn attention<B: KernelBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &AttentionMask<B>,
) -> Tensor<B, 4> {
    if B::fused_attention() && q.dims()[2] >= B::fused_attention_min_queries() {
        crate::flash_attention(q, k, v, mask)
    } else {
        attention_reference(q, k, v, mask)
    }
}

/// Plain-burn attention: the specification the fused kernels are tested against.
///
/// # Shapes
/// As [`attention`].
pub fn attention_reference<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &AttentionMask<B>,
) -> Tensor<B, 4> {
    let [b, h, tq, d] = q.dims();
    let [bk, kh, tk, dk] = k.dims();
    assert!(bk == b && dk == d && kh > 0 && h % kh == 0, "attention: q {:?} vs k {:?}", q.dims(), k.dims());
    assert_eq!(v.dims(), k.dims(), "attention: k and v shapes differ");
    let g = h / kh;
    let dtype = q.dtype();
    let scale = 1.0 / (d as f64).sqrt();
    // Heads h = kv·G + j share KV head kv: fold them into the query axis, no K/V repetition.
    let q = q.reshape([b, kh, g * tq, d]); // [B, K, G·Tq, D]
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale); // [B, K, G·Tq, Tk]
    let mut scores = scores.reshape([b, h, tq, tk]).cast(FloatDType::F32); // [B, H, Tq, Tk]
    if let Some(m) = mask.dense() {
        scores = scores.mask_fill(m.clone().expand([b, h, tq, tk]), MASKED_SCORE);
    }
    let probs = softmax(scores, 3).cast(dtype).reshape([b, kh, g * tq, tk]);
    probs.matmul(v).reshape([b, h, tq, d]) // [B, H, Tq, D]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn rand4(shape: [usize; 4], seed: u64) -> Tensor<B, 4> {
        let mut s = seed;
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32 * 2.0
            })
            .collect();
        Tensor::from_data(TensorData::new(data, shape), &Default::default())
    }

    /// Per-element loop over heads, rows and keys: the formula with nothing folded.
    fn naive(q: &[f32], k: &[f32], v: &[f32], dims: [usize; 6], causal: bool, off: usize, pads: &[usize]) -> Vec<f32> {
        let [b, h, kh, tq, tk, d] = dims;
        let g = h / kh;
        let mut out = vec![0.0; b * h * tq * d];
        for bi in 0..b {
            for hi in 0..h {
                let kv = hi / g;
                for i in 0..tq {
                    let vis = |j: usize| j >= pads[bi] && (!causal || j <= off + i);
                    let s: Vec<f64> = (0..tk)
                        .map(|j| {
                            if !vis(j) {
                                return f64::NEG_INFINITY;
                            }
                            (0..d)
                                .map(|x| q[((bi * h + hi) * tq + i) * d + x] as f64 * k[((bi * kh + kv) * tk + j) * d + x] as f64)
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    if m == f64::NEG_INFINITY {
                        // Fully masked (a padding query): undefined by the formula, checked finite below.
                        for x in 0..d {
                            out[((bi * h + hi) * tq + i) * d + x] = f32::NAN;
                        }
                        continue;
                    }
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for x in 0..d {
                        out[((bi * h + hi) * tq + i) * d + x] = (0..tk)
                            .map(|j| (s[j] - m).exp() / z * v[((bi * kh + kv) * tk + j) * d + x] as f64)
                            .sum::<f64>() as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_loop_with_gqa_causal_offset_and_padding() {
        let dev = Default::default();
        for (h, kh, tq, tk, off, causal, pads) in [
            (4, 2, 5, 5, 0, true, vec![0, 2]),
            (6, 2, 1, 7, 6, true, vec![3, 0]),
            (3, 3, 4, 6, 2, true, vec![0, 0]),
            (7, 1, 3, 3, 0, false, vec![1, 0]),
        ] {
            let (b, d) = (2, 8);
            let q = rand4([b, h, tq, d], 1);
            let k = rand4([b, kh, tk, d], 2);
            let v = rand4([b, kh, tk, d], 3);
            let mask = AttentionMask::<B>::new(causal, off, Some(pads.clone()), tq, tk, &dev);
            let got = attention_reference(q.clone(), k.clone(), v.clone(), &mask).into_data().to_vec::<f32>().unwrap();
            let want = naive(
                &q.into_data().to_vec().unwrap(),
                &k.into_data().to_vec().unwrap(),
                &v.into_data().to_vec().unwrap(),
                [b, h, kh, tq, tk, d],
                causal,
                off,
                &pads,
            );
            for (i, (a, w)) in got.iter().zip(&want).enumerate() {
                assert!(a.is_finite(), "non-finite output at {i}");
                assert!(w.is_nan() || (a - w).abs() < 1e-5, "h={h} kh={kh} tq={tq} tk={tk}: {a} vs {w} at {i}");
            }
        }
    }

    #[test]
    fn fully_masked_rows_are_finite() {
        let dev = Default::default();
        // Row 0 is all padding for its first 3 queries under causal masking.
        let mask = AttentionMask::<B>::new(true, 0, Some(vec![3, 0]), 4, 4, &dev);
        let out = attention_reference(rand4([2, 2, 4, 4], 5), rand4([2, 1, 4, 4], 6), rand4([2, 1, 4, 4], 7), &mask);
        assert!(out.into_data().to_vec::<f32>().unwrap().iter().all(|x| x.is_finite()));
    }

    #[test]
    fn no_mask_needed_for_single_query_decode() {
        let mask = AttentionMask::<B>::new(true, 5, None, 1, 6, &Default::default());
        assert!(mask.dense().is_none());
        let mask = AttentionMask::<B>::new(true, 0, None, 3, 3, &Default::default());
        assert!(mask.dense().is_some());
    }
}
