//! Flash attention as a fused op: parameters, the plain-burn forward and backward that
//! [`crate::KernelBackend`] falls back to, and the public entry points.
//!
//! Semantics follow FlashAttention-2 (Dao 2023, arXiv 2307.08691): the forward returns the output
//! and the per-row log-sum-exp `lse = log Σ_j exp(s_ij)`, and the backward recomputes
//! `P = exp(S − lse)` from it, with `Dᵢ = rowsum(dO∘O)ᵢ` (FA2 Algorithm 2):
//! `dV = Pᵀ·dO`, `dS = P∘(dO·Vᵀ − D)`, `dQ = dS·K·scale`, `dK = dSᵀ·Q·scale`.
//! Query head `h` reads KV head `h / G`; dK and dV sum over the G query heads of a group.
//! A query that sees no key at all (a left-padding query) gets output 0, `lse = f32::MAX` and zero
//! gradients, where [`crate::attention::attention_reference`] returns the mean of V: only padding
//! rows differ, and nothing reads them.

use std::sync::atomic::{AtomicU8, Ordering};
use crate::KernelBackend;
use crate::attention::AttentionMask;
use crate::ops::{fp, ft};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Bool, DType, FloatDType, Int, Tensor, TensorData};

/// Score given to invisible keys before the softmax (finite, so nothing becomes NaN).
const MASKED_SCORE: f64 = -1.0e9;

/// Masking and scaling of one attention call; the mask itself is index arithmetic on these and
/// the per-row left-pad lengths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlashParams {
    /// Key `j` is visible to query `i` only if `j <= q_offset + i`.
    pub causal: bool,
    /// Index in the key sequence of the first query.
    pub q_offset: usize,
    /// Score scale, normally `1/√D`.
    pub scale: f32,
}

fn ref_dtype(d: DType) -> FloatDType {
    if d == DType::F64 { FloatDType::F64 } else { FloatDType::F32 }
}

/// `[B, 1, Tq, Tk]`, true where key `j` is visible to query `i` of row `b`.
fn visible<B: Backend>(pad: Tensor<B, 1, Int>, tq: usize, tk: usize, p: &FlashParams) -> Tensor<B, 4, Bool> {
    let dev = pad.device();
    let [b] = pad.dims();
    let shape = [b, 1, tq, tk];
    let j = Tensor::<B, 1, Int>::arange(0..tk as i64, &dev).reshape([1, 1, 1, tk]).expand(shape);
    let mut vis = j.clone().greater_equal(pad.reshape([b, 1, 1, 1]).expand(shape));
    if p.causal {
        let last = Tensor::<B, 1, Int>::arange(p.q_offset as i64..(p.q_offset + tq) as i64, &dev).reshape([1, 1, tq, 1]);
        vis = vis.bool_and(j.lower_equal(last.expand(shape)));
    }
    vis
}

/// Scores `[B, H, Tq, Tk]` (scaled, invisible keys at −1e9) and the visibility mask expanded to them.
fn scores<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    pad: Tensor<B, 1, Int>,
    p: &FlashParams,
) -> (Tensor<B, 4>, Tensor<B, 4, Bool>) {
    let [b, h, tq, d] = q.dims();
    let [_, kh, tk, _] = k.dims();
    let s = q.clone().reshape([b, kh, (h / kh) * tq, d]).matmul(k.clone().swap_dims(2, 3)).mul_scalar(p.scale);
    let vis = visible(pad, tq, tk, p).expand([b, h, tq, tk]);
    (s.reshape([b, h, tq, tk]).mask_fill(vis.clone().bool_not(), MASKED_SCORE), vis)
}

/// Reference forward: `(out [B, H, Tq, D] in q's dtype, lse [B, H, Tq] in f32)`.
pub fn flash_fwd_reference<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    pad: IntTensor<B>,
    p: FlashParams,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let q: Tensor<B, 4> = ft(q);
    let dtype = q.dtype();
    let dt = ref_dtype(dtype);
    let (q, k, v) = (q.cast(dt), ft::<B, 4>(k).cast(dt), ft::<B, 4>(v).cast(dt));
    let [b, h, tq, d] = q.dims();
    let [_, kh, tk, _] = k.dims();
    let (s, vis) = scores(&q, &k, Tensor::from_primitive(pad), &p);
    let m = s.clone().max_dim(3);
    let lse = (s.clone() - m.clone()).exp().sum_dim(3).log() + m; // [B, H, Tq, 1]
    let probs = (s - lse.clone()).exp().mask_fill(vis.clone().bool_not(), 0.0);
    let out = probs.reshape([b, kh, (h / kh) * tq, tk]).matmul(v).reshape([b, h, tq, d]);
    let none_visible = vis.int().sum_dim(3).equal_elem(0);
    let lse = lse.mask_fill(none_visible, f32::MAX).reshape([b, h, tq]).cast(FloatDType::F32);
    (fp(out.cast(dtype)), fp(lse))
}

/// 0: not set (read `MLAGENT_ATTENTION_BWD`), else a [`BackwardChoice`] as `u8`.
static BACKWARD_KERNEL: AtomicU8 = AtomicU8::new(0);

/// Which attention backward CubeCL backends run: the flash-attention backward *kernels* or the
/// closed-form [`flash_bwd_reference`] from plain burn ops.
///
/// The reference materialises `[Tq, Tk]` probabilities (like the CPU path) but runs on burn's
/// tensor-core matmuls. By default ([`BackwardChoice::Auto`]) the kernels run where they are the
/// register-tile ones (`crate::cube::attention_mma_bwd`: CUDA, f16/bf16, head dim a multiple of 16
/// and at most 128; 2.0–2.1 ms forward + backward queued at B 1, 28/4 heads, 4096 tokens causal, D 128
/// on an H200, BENCHMARKS.md) and the reference elsewhere: the portable kernels reached 2.34 TFLOP/s
/// forward+backward on an H200, slower than the reference at training lengths, and the emulated
/// ones are for tests. Training here runs in f32, so it gets the reference.
/// `MLAGENT_ATTENTION_BWD=kernel` or `=reference` (or [`set_backward_kernel`], which `mlagent
/// kernels check/bench` call) chooses for every shape; `MLAGENT_ATTENTION=portable` keeps the
/// portable kernels.
///
/// Both failures that once made the kernels' gradients wrong are explained and fixed: on CUDA,
/// outputs allocated with padded rows (see `crate::cube`); on lavapipe, Mesa's per-invocation loop
/// limit of 65535 passes (see `crate::cube::attention_kernels`), past which the launcher now uses
/// this reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BackwardChoice {
    /// The kernels for every shape they take.
    Kernels = 1,
    /// The closed-form reference.
    Reference = 2,
    /// The kernels where the register-tile ones apply, else the reference (the default).
    Auto = 3,
}

/// This process's [`BackwardChoice`]: [`set_backward_kernel`]'s, else `MLAGENT_ATTENTION_BWD`'s
/// (`kernel`, `reference`; anything else or unset is `Auto`), read once.
pub fn backward_choice() -> BackwardChoice {
    // The environment decides once (this runs on every attention backward).
    let read = || match std::env::var("MLAGENT_ATTENTION_BWD").as_deref() {
        Ok("kernel") => BackwardChoice::Kernels,
        Ok("reference") => BackwardChoice::Reference,
        _ => BackwardChoice::Auto,
    } as u8;
    match crate::cube::setting(&BACKWARD_KERNEL, read) {
        c if c == BackwardChoice::Kernels as u8 => BackwardChoice::Kernels,
        c if c == BackwardChoice::Reference as u8 => BackwardChoice::Reference,
        _ => BackwardChoice::Auto,
    }
}

/// Chooses the backward for this process: the kernels (`true`) or the reference for every shape;
/// see [`backward_choice`].
pub fn set_backward_kernel(kernels: bool) {
    let choice = if kernels { BackwardChoice::Kernels } else { BackwardChoice::Reference };
    BACKWARD_KERNEL.store(choice as u8, Ordering::Relaxed);
}

/// Reference backward (FA2 Algorithm 2 with whole matrices): `(dq, dk, dv)` in the inputs' dtypes.
#[allow(clippy::too_many_arguments)]
pub fn flash_bwd_reference<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    dout: FloatTensor<B>,
    pad: IntTensor<B>,
    p: FlashParams,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let q: Tensor<B, 4> = ft(q);
    let (dtq, dtk) = (q.dtype(), ft::<B, 4>(k.clone()).dtype());
    let dt = ref_dtype(dtq);
    let (q, k, v) = (q.cast(dt), ft::<B, 4>(k).cast(dt), ft::<B, 4>(v).cast(dt));
    let (out, dout) = (ft::<B, 4>(out).cast(dt), ft::<B, 4>(dout).cast(dt));
    let [b, h, tq, d] = q.dims();
    let [_, kh, tk, _] = k.dims();
    let gq = (h / kh) * tq;
    let (s, vis) = scores(&q, &k, Tensor::from_primitive(pad), &p);
    let lse = ft::<B, 3>(lse).cast(dt).reshape([b, h, tq, 1]);
    let probs = (s - lse).exp().mask_fill(vis.bool_not(), 0.0); // [B, H, Tq, Tk]
    let delta = (dout.clone() * out).sum_dim(3); // [B, H, Tq, 1]
    let dout_g = dout.reshape([b, kh, gq, d]);
    let dv = probs.clone().reshape([b, kh, gq, tk]).swap_dims(2, 3).matmul(dout_g.clone());
    let dp = dout_g.matmul(v.swap_dims(2, 3)).reshape([b, h, tq, tk]);
    let ds = (probs * (dp - delta)).reshape([b, kh, gq, tk]);
    let dq = ds.clone().matmul(k).mul_scalar(p.scale).reshape([b, h, tq, d]);
    let dk = ds.swap_dims(2, 3).matmul(q.reshape([b, kh, gq, d])).mul_scalar(p.scale);
    (fp(dq.cast(dtq)), fp(dk.cast(dtk)), fp(dv.cast(dtk)))
}

/// Pad lengths `[B]` as an int tensor (zeros when the mask has none).
fn pad_tensor<B: Backend>(mask: &AttentionMask<B>, b: usize, device: &B::Device) -> Tensor<B, 1, Int> {
    match &mask.pad_lens {
        Some(p) => {
            assert_eq!(p.len(), b, "flash attention: {} pad lengths for batch {b}", p.len());
            mask.pad_lens_tensor(device).expect("pad lengths")
        }
        None => Tensor::from_data(TensorData::new(vec![0i64; b], [b]), device),
    }
}

/// Fused attention, also returning the per-row log-sum-exp.
///
/// # Shapes
/// - `q`: `[B, H, Tq, D]`, `k`, `v`: `[B, K, Tk, D]` with `H % K == 0`
/// - returns `([B, H, Tq, D], lse [B, H, Tq] f32)`
///
/// # Panics
/// On inconsistent shapes (a model bug, not user input).
pub fn flash_attention_with_lse<B: KernelBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &AttentionMask<B>,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let [b, h, tq, d] = q.dims();
    let [bk, kh, tk, dk] = k.dims();
    assert!(bk == b && dk == d && kh > 0 && h % kh == 0, "flash attention: q {:?} vs k {:?}", q.dims(), k.dims());
    assert_eq!(v.dims(), k.dims(), "flash attention: k and v shapes differ");
    assert!(mask.q_offset + tq <= tk, "flash attention: {} + {tq} queries > {tk} keys", mask.q_offset);
    let p = FlashParams { causal: mask.causal, q_offset: mask.q_offset, scale: 1.0 / (d as f32).sqrt() };
    let pad = pad_tensor(mask, b, &q.device());
    let (o, lse) = B::flash_attention_fwd(fp(q), fp(k), fp(v), pad.into_primitive(), p);
    (ft(o), ft(lse))
}

/// Fused attention; see [`flash_attention_with_lse`].
pub fn flash_attention<B: KernelBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &AttentionMask<B>,
) -> Tensor<B, 4> {
    flash_attention_with_lse(q, k, v, mask).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::attention_reference;
    use crate::check::{max_abs_diff, uniform_tensor as rand4};
    use burn::backend::{Autodiff, NdArray};

    type A = Autodiff<NdArray<f32>>;

    fn v<Bk: Backend>(t: Tensor<Bk, 4>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    /// Forward equals the engine's reference on rows with a visible key; rows without one are 0.
    #[test]
    fn forward_matches_reference_and_zeroes_padding_queries() {
        type B = NdArray<f32>;
        let (b, h, kh, tq, tk, d) = (2, 6, 2, 5, 5, 4);
        let mask = AttentionMask::<B>::new(true, 0, Some(vec![2, 0]), tq, tk, &Default::default());
        let (q, k, vv) = (rand4::<B, 4>([b, h, tq, d], 1), rand4::<B, 4>([b, kh, tk, d], 2), rand4::<B, 4>([b, kh, tk, d], 3));
        let (got, lse) = flash_attention_with_lse(q.clone(), k.clone(), vv.clone(), &mask);
        let (got, want) = (v(got), v(attention_reference(q, k, vv, &mask)));
        let lse: Vec<f32> = lse.into_data().to_vec().unwrap();
        for (row, (g, w)) in got.chunks(d).zip(want.chunks(d)).enumerate() {
            let (bi, i) = (row / (h * tq), row % tq);
            if bi == 0 && i < 2 {
                assert!(g.iter().all(|x| *x == 0.0) && lse[row] == f32::MAX, "padding query {row}");
            } else {
                assert!(max_abs_diff(g, w) < 1e-6, "row {row}");
            }
        }
    }

    /// The closed-form backward equals burn's autodiff of the engine's reference (no padding
    /// queries here, where the two agree), with GQA, causal masking and an offset.
    #[test]
    fn backward_matches_autodiff_of_reference() {
        for (causal, off, tq, tk, pads) in [(true, 2, 4, 6, Some(vec![1, 0])), (false, 0, 3, 5, Some(vec![0, 2]))] {
            let (b, h, kh, d) = (2, 6, 2, 4);
            let mask = AttentionMask::<A>::new(causal, off, pads, tq, tk, &Default::default());
            let w = rand4::<A, 4>([b, h, tq, d], 4);
            let mut all = vec![];
            for fused in [true, false] {
                let q = rand4::<A, 4>([b, h, tq, d], 1).require_grad();
                let k = rand4::<A, 4>([b, kh, tk, d], 2).require_grad();
                let vv = rand4::<A, 4>([b, kh, tk, d], 3).require_grad();
                let out = if fused {
                    flash_attention(q.clone(), k.clone(), vv.clone(), &mask)
                } else {
                    attention_reference(q.clone(), k.clone(), vv.clone(), &mask)
                };
                let g = (out * w.clone()).sum().backward();
                all.push([q.grad(&g).unwrap(), k.grad(&g).unwrap(), vv.grad(&g).unwrap()].map(v));
            }
            for (i, (fused, plain)) in all[0].iter().zip(&all[1]).enumerate() {
                assert!(max_abs_diff(fused, plain) < 1e-5, "causal={causal} grad {i}");
            }
        }
    }
}
