//! The backend-extension trait through which the fused ops run.
//!
//! Each method's default body is the plain-burn reference (the CPU path for NdArray, and for Flex
//! except attention, which Flex runs through [`crate::cpu_attention`]); `CubeBackend` overrides them with CubeCL kernels (`cube/`), `Fusion<B>` records them as custom
//! operations that call the inner backend, and `Autodiff<B>` attaches the custom backward.
//! Primitives are used instead of `Tensor` because that is the level at which backends compose.

use crate::attention_ops::{FlashParams, flash_bwd_reference, flash_fwd_reference};
use crate::ppo::{PpoTokenParams, token_loss, token_loss_grad};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{FloatDType, IndexingUpdateOp, Int, Tensor, TensorPrimitive};

pub(crate) fn ft<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

pub(crate) fn fp<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// Fused ops over `[N, V]` logits. Per-token tensors (`[N]`) are f32 whatever the logits' dtype.
pub trait KernelBackend: Backend {
    /// Whether [`KernelBackend::flash_attention_fwd`] is a fused kernel here (CubeCL backends), so
    /// that [`crate::attention::attention`] should take it rather than the plain-ops reference.
    fn fused_attention() -> bool {
        false
    }

    /// Fewest query tokens for which [`crate::attention::attention`] takes the fused op (below, the
    /// reference). The CPU's host implementation copies K and V out of the backend's tensors, which
    /// costs more than it saves for a one-token decode step.
    fn fused_attention_min_queries() -> usize {
        1
    }

    /// Target log-probs and row log-sum-exps: `logits [N, V]`, `targets [N]` → `(logp [N], lse [N])`.
    fn logprobs_fwd(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        logprobs_fwd_reference::<Self>(logits, targets)
    }

    /// `dlogits = grad[n]·(onehot(t[n]) − softmax(logits[n]))`, from the saved `lse`; dtype of `logits`.
    fn logprobs_bwd(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        logprobs_bwd_reference::<Self>(logits, targets, lse, grad)
    }

    /// Per-token PPO terms in one pass over the logits: `[loss, dloss/dlogp, logp, lse]`, each `[N]`.
    ///
    /// `loss` is [`crate::ppo::token_loss`]; its gradient with respect to the logits is
    /// `g·coef·(onehot − softmax)`, which [`KernelBackend::logprobs_bwd`] writes.
    fn ppo_token_fwd(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        old_logp: FloatTensor<Self>,
        ref_logp: FloatTensor<Self>,
        advantages: FloatTensor<Self>,
        params: PpoTokenParams,
    ) -> [FloatTensor<Self>; 4] {
        let (logp, lse) = Self::logprobs_fwd(logits, targets);
        let (lp, old, rf, adv) = (ft::<Self, 1>(logp), ft(old_logp), ft(ref_logp), ft(advantages));
        let loss = token_loss(lp.clone(), old.clone(), rf.clone(), adv.clone(), &params);
        let coef = token_loss_grad(lp.clone(), old, rf, adv, &params);
        [fp(loss), fp(coef), fp(lp), lse]
    }

    /// Flash attention forward: `q [B, H, Tq, D]`, `k`, `v [B, K, Tk, D]`, left-pad lengths `pad [B]`
    /// → `(out [B, H, Tq, D], lse [B, H, Tq] f32)`; see [`crate::attention_ops`].
    fn flash_attention_fwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pad: IntTensor<Self>,
        params: FlashParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        flash_fwd_reference::<Self>(q, k, v, pad, params)
    }

    /// Flash attention backward from the saved `out` and `lse`: `(dq, dk, dv)`.
    #[allow(clippy::too_many_arguments)]
    fn flash_attention_bwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        pad: IntTensor<Self>,
        params: FlashParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        flash_bwd_reference::<Self>(q, k, v, out, lse, dout, pad, params)
    }
}

/// Reference forward of [`KernelBackend::logprobs_fwd`] (f32 math).
pub fn logprobs_fwd_reference<B: Backend>(logits: FloatTensor<B>, targets: IntTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let x: Tensor<B, 2> = ft::<B, 2>(logits).cast(FloatDType::F32);
    let [n, _] = x.dims();
    let t = Tensor::<B, 1, Int>::from_primitive(targets).reshape([n, 1]);
    let m = x.clone().max_dim(1);
    let lse = (x.clone() - m.clone()).exp().sum_dim(1).log() + m; // [N, 1]
    let logp = x.gather(1, t) - lse.clone();
    (fp(logp.reshape([n])), fp(lse.reshape([n])))
}

/// Reference backward of [`KernelBackend::logprobs_bwd`].
pub fn logprobs_bwd_reference<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let x: Tensor<B, 2> = ft(logits);
    let dtype = x.dtype();
    let x = x.cast(FloatDType::F32);
    let [n, _] = x.dims();
    let t = Tensor::<B, 1, Int>::from_primitive(targets).reshape([n, 1]);
    let g = ft::<B, 1>(grad).cast(FloatDType::F32).reshape([n, 1]);
    let p = (x - ft::<B, 1>(lse).cast(FloatDType::F32).reshape([n, 1])).exp();
    let out = (p * g.clone()).neg().scatter(1, t, g, IndexingUpdateOp::Add);
    fp(out.cast(dtype))
}

impl KernelBackend for burn::backend::NdArray<f32> {}
impl KernelBackend for burn::backend::NdArray<f64> {}
/// The CPU backend: attention through the fused host implementation ([`crate::cpu_attention`]),
/// unless `MLAGENT_CPU_ATTENTION=reference` asks for the plain-ops reference (for A/B benchmarks).
impl KernelBackend for burn::backend::Flex {
    fn fused_attention() -> bool {
        static FUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FUSED.get_or_init(|| std::env::var("MLAGENT_CPU_ATTENTION").map_or(true, |v| v != "reference"))
    }

    fn fused_attention_min_queries() -> usize {
        2 // decode steps (one query) take the reference: measured faster (BENCHMARKS.md)
    }

    fn flash_attention_fwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pad: IntTensor<Self>,
        params: FlashParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        crate::cpu_attention::flash_fwd_host(q, k, v, pad, params)
    }

    fn flash_attention_bwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        pad: IntTensor<Self>,
        params: FlashParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        crate::cpu_attention::flash_bwd_host(q, k, v, out, lse, dout, pad, params)
    }
}
