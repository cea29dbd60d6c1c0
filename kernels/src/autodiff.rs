//! `Autodiff<B>`: the fused ops as graph nodes with their own backward, so the gradient with
//! respect to the logits is written once by [`KernelBackend::logprobs_bwd`] and no `[N, V]`
//! softmax is kept between forward and backward (only the logits, which the model holds anyway,
//! and the `[N]` log-sum-exp).

use crate::KernelBackend;
use crate::attention_ops::FlashParams;
use crate::ppo::PpoTokenParams;
use burn::backend::autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::tensor::{
    backend::AutodiffBackend,
    ops::{FloatTensor, IntTensor},
};

/// Backward of a per-row function of the target log-prob: `dlogits = g·coef·(onehot − softmax)`;
/// `coef` is `None` for the log-prob itself (coefficient 1).
#[derive(Debug)]
struct LogitsRowBackward;

impl<B: KernelBackend> Backward<B, 1> for LogitsRowBackward {
    type State = (NodeId, IntTensor<B>, FloatTensor<B>, Option<FloatTensor<B>>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [parent] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        let (logits_id, targets, lse, coef) = ops.state;
        let logits: FloatTensor<B> = checkpointer.retrieve_node_output(logits_id);
        if let Some(parent) = parent {
            let g = match coef {
                Some(c) => B::float_mul(B::float_cast(g, burn::tensor::FloatDType::F32), c),
                None => g,
            };
            grads.register::<B>(parent.id, B::logprobs_bwd(logits, targets, lse, g));
        }
    }
}

/// Backward of flash attention: FA2's backward from the saved output and log-sum-exp; q, k, v are
/// kept as they are (the model holds them anyway), no `[Tq, Tk]` matrix is stored.
#[derive(Debug)]
struct FlashBackward;

impl<B: KernelBackend> Backward<B, 3> for FlashBackward {
    #[allow(clippy::type_complexity)]
    type State = ([FloatTensor<B>; 5], IntTensor<B>, FlashParams);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [pq, pk, pv] = ops.parents;
        let dout = grads.consume::<B>(&ops.node);
        let ([q, k, v, out, lse], pad, params) = ops.state;
        let (dq, dk, dv) = B::flash_attention_bwd(q, k, v, out, lse, dout, pad, params);
        for (parent, g) in [(pq, dq), (pk, dk), (pv, dv)] {
            if let Some(p) = parent {
                grads.register::<B>(p.id, g);
            }
        }
    }
}

impl<B: KernelBackend, C: CheckpointStrategy> KernelBackend for Autodiff<B, C> {
    fn fused_attention() -> bool {
        B::fused_attention()
    }

    fn fused_attention_min_queries() -> usize {
        B::fused_attention_min_queries()
    }

    fn flash_attention_fwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pad: IntTensor<Self>,
        params: FlashParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let constant = <Self as AutodiffBackend>::from_inner;
        let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
        match FlashBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (o, lse) =
                    B::flash_attention_fwd(q.primitive.clone(), k.primitive.clone(), v.primitive.clone(), pad.clone(), params);
                let state = ([q.primitive, k.primitive, v.primitive, o.clone(), lse.clone()], pad, params);
                (prep.finish(state, o), constant(lse))
            }
            OpsKind::UnTracked(prep) => {
                let (o, lse) = B::flash_attention_fwd(q.primitive, k.primitive, v.primitive, pad, params);
                (prep.finish(o), constant(lse))
            }
        }
    }

    fn logprobs_fwd(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match LogitsRowBackward.prepare::<C>([logits.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let id = prep.checkpoint(&logits);
                let (logp, lse) = B::logprobs_fwd(logits.primitive.clone(), targets.clone());
                let logp = prep.finish((id, targets, lse.clone(), None), logp);
                (logp, <Self as AutodiffBackend>::from_inner(lse))
            }
            OpsKind::UnTracked(prep) => {
                let (logp, lse) = B::logprobs_fwd(logits.primitive, targets);
                (prep.finish(logp), <Self as AutodiffBackend>::from_inner(lse))
            }
        }
    }

    fn ppo_token_fwd(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        old_logp: FloatTensor<Self>,
        ref_logp: FloatTensor<Self>,
        advantages: FloatTensor<Self>,
        params: PpoTokenParams,
    ) -> [FloatTensor<Self>; 4] {
        // Old/reference log-probs and advantages are data, not parameters: no gradient flows to them.
        let inner = |t: FloatTensor<Self>| t.primitive;
        let constant = <Self as AutodiffBackend>::from_inner;
        match LogitsRowBackward.prepare::<C>([logits.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let id = prep.checkpoint(&logits);
                let [loss, coef, logp, lse] = B::ppo_token_fwd(
                    logits.primitive.clone(),
                    targets.clone(),
                    inner(old_logp),
                    inner(ref_logp),
                    inner(advantages),
                    params,
                );
                let loss = prep.finish((id, targets, lse.clone(), Some(coef.clone())), loss);
                [loss, constant(coef), constant(logp), constant(lse)]
            }
            OpsKind::UnTracked(prep) => {
                let [loss, coef, logp, lse] =
                    B::ppo_token_fwd(logits.primitive, targets, inner(old_logp), inner(ref_logp), inner(advantages), params);
                [prep.finish(loss), constant(coef), constant(logp), constant(lse)]
            }
        }
    }
}
