//! `Wgpu` and `Cuda` with burn's `fusion` feature are `Fusion<CubeBackend<..>>`, which records ops
//! lazily. Each fused op is registered as an `OperationIr::Custom`; when the stream runs, its
//! `execute` hands the real tensors to the inner backend's kernels (the burn-vision 0.21 pattern).

use crate::KernelBackend;
use crate::attention_ops::FlashParams;
use crate::ppo::PpoTokenParams;
use burn::backend::ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use burn::tensor::{
    DType, Shape,
    ops::{FloatTensor, IntTensor},
};
use burn_fusion::{
    Fusion, FusionBackend, FusionRuntime,
    stream::{Operation, OperationStreams},
};
use core::marker::PhantomData;

type Handles<B> = HandleContainer<<<B as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle>;

/// Which op a recorded custom operation runs, with its non-tensor arguments.
#[derive(Debug, Clone, Copy)]
enum Kind {
    LogprobsFwd,
    LogprobsBwd,
    PpoFwd(PpoTokenParams),
    FlashFwd(FlashParams),
    FlashBwd(FlashParams),
}

#[derive(Debug)]
struct Op<B> {
    desc: CustomOpIr,
    kind: Kind,
    _b: PhantomData<B>,
}

impl<B: FusionBackend + KernelBackend> Operation<B::FusionRuntime> for Op<B> {
    fn execute(&self, h: &mut Handles<B>) {
        match self.kind {
            Kind::LogprobsFwd => {
                let ([logits, targets], [logp, lse]) = self.desc.as_fixed();
                let (a, b) = B::logprobs_fwd(h.get_float_tensor::<B>(logits), h.get_int_tensor::<B>(targets));
                h.register_float_tensor::<B>(&logp.id, a);
                h.register_float_tensor::<B>(&lse.id, b);
            }
            Kind::LogprobsBwd => {
                let ([logits, targets, lse, grad], [out]) = self.desc.as_fixed();
                let r = B::logprobs_bwd(
                    h.get_float_tensor::<B>(logits),
                    h.get_int_tensor::<B>(targets),
                    h.get_float_tensor::<B>(lse),
                    h.get_float_tensor::<B>(grad),
                );
                h.register_float_tensor::<B>(&out.id, r);
            }
            Kind::PpoFwd(params) => {
                let ([logits, targets, old, rf, adv], outs) = self.desc.as_fixed::<5, 4>();
                let res = B::ppo_token_fwd(
                    h.get_float_tensor::<B>(logits),
                    h.get_int_tensor::<B>(targets),
                    h.get_float_tensor::<B>(old),
                    h.get_float_tensor::<B>(rf),
                    h.get_float_tensor::<B>(adv),
                    params,
                );
                for (o, t) in outs.iter().zip(res) {
                    h.register_float_tensor::<B>(&o.id, t);
                }
            }
            Kind::FlashFwd(p) => {
                let ([q, k, v, pad], [o, lse]) = self.desc.as_fixed();
                let (a, b) = B::flash_attention_fwd(
                    h.get_float_tensor::<B>(q),
                    h.get_float_tensor::<B>(k),
                    h.get_float_tensor::<B>(v),
                    h.get_int_tensor::<B>(pad),
                    p,
                );
                h.register_float_tensor::<B>(&o.id, a);
                h.register_float_tensor::<B>(&lse.id, b);
            }
            Kind::FlashBwd(p) => {
                let ([q, k, v, o, lse, dout, pad], [dq, dk, dv]) = self.desc.as_fixed();
                let (a, b, c) = B::flash_attention_bwd(
                    h.get_float_tensor::<B>(q),
                    h.get_float_tensor::<B>(k),
                    h.get_float_tensor::<B>(v),
                    h.get_float_tensor::<B>(o),
                    h.get_float_tensor::<B>(lse),
                    h.get_float_tensor::<B>(dout),
                    h.get_int_tensor::<B>(pad),
                    p,
                );
                h.register_float_tensor::<B>(&dq.id, a);
                h.register_float_tensor::<B>(&dk.id, b);
                h.register_float_tensor::<B>(&dv.id, c);
            }
        }
    }
}

impl<B: FusionBackend + KernelBackend> KernelBackend for Fusion<B> {
    fn fused_attention() -> bool {
        B::fused_attention()
    }

    fn fused_attention_min_queries() -> usize {
        B::fused_attention_min_queries()
    }

    fn logprobs_fwd(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let client = logits.client.clone();
        let n = logits.shape[0];
        let streams = OperationStreams::with_inputs([&logits, &targets]);
        let out = || TensorIr::uninit(client.create_empty_handle(), Shape::new([n]), DType::F32);
        let desc = CustomOpIr::new("mlagent_logprobs_fwd", &[logits.into_ir(), targets.into_ir()], &[out(), out()]);
        let op = Op::<B> { desc: desc.clone(), kind: Kind::LogprobsFwd, _b: PhantomData };
        let [logp, lse]: [_; 2] = client.register(streams, OperationIr::Custom(desc), op).try_into().expect("2 outputs");
        (logp, lse)
    }

    fn logprobs_bwd(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let client = logits.client.clone();
        let out = TensorIr::uninit(client.create_empty_handle(), logits.shape.clone(), logits.dtype);
        let streams = OperationStreams::with_inputs([&logits, &targets, &lse, &grad]);
        let desc = CustomOpIr::new(
            "mlagent_logprobs_bwd",
            &[logits.into_ir(), targets.into_ir(), lse.into_ir(), grad.into_ir()],
            &[out],
        );
        let op = Op::<B> { desc: desc.clone(), kind: Kind::LogprobsBwd, _b: PhantomData };
        let [out]: [_; 1] = client.register(streams, OperationIr::Custom(desc), op).try_into().expect("1 output");
        out
    }

    fn ppo_token_fwd(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        old_logp: FloatTensor<Self>,
        ref_logp: FloatTensor<Self>,
        advantages: FloatTensor<Self>,
        params: PpoTokenParams,
    ) -> [FloatTensor<Self>; 4] {
        let client = logits.client.clone();
        let n = logits.shape[0];
        let streams = OperationStreams::with_inputs([&logits, &targets, &old_logp, &ref_logp, &advantages]);
        let out = || TensorIr::uninit(client.create_empty_handle(), Shape::new([n]), DType::F32);
        let desc = CustomOpIr::new(
            "mlagent_ppo_fwd",
            &[logits.into_ir(), targets.into_ir(), old_logp.into_ir(), ref_logp.into_ir(), advantages.into_ir()],
            &[out(), out(), out(), out()],
        );
        let op = Op::<B> { desc: desc.clone(), kind: Kind::PpoFwd(params), _b: PhantomData };
        client.register(streams, OperationIr::Custom(desc), op).try_into().expect("4 outputs")
    }

    fn flash_attention_fwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pad: IntTensor<Self>,
        params: FlashParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let client = q.client.clone();
        let shape = q.shape.clone();
        let (b, h, tq) = (shape[0], shape[1], shape[2]);
        let streams = OperationStreams::with_inputs([&q, &k, &v, &pad]);
        let out = TensorIr::uninit(client.create_empty_handle(), shape, q.dtype);
        let lse = TensorIr::uninit(client.create_empty_handle(), Shape::new([b, h, tq]), DType::F32);
        let desc =
            CustomOpIr::new("mlagent_flash_fwd", &[q.into_ir(), k.into_ir(), v.into_ir(), pad.into_ir()], &[out, lse]);
        let op = Op::<B> { desc: desc.clone(), kind: Kind::FlashFwd(params), _b: PhantomData };
        let [o, lse]: [_; 2] = client.register(streams, OperationIr::Custom(desc), op).try_into().expect("2 outputs");
        (o, lse)
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
        let client = q.client.clone();
        let streams = OperationStreams::with_inputs([&q, &k, &v, &out, &lse, &dout, &pad]);
        let dq = TensorIr::uninit(client.create_empty_handle(), q.shape.clone(), q.dtype);
        let dk = TensorIr::uninit(client.create_empty_handle(), k.shape.clone(), k.dtype);
        let dv = TensorIr::uninit(client.create_empty_handle(), k.shape.clone(), k.dtype);
        let desc = CustomOpIr::new(
            "mlagent_flash_bwd",
            &[q.into_ir(), k.into_ir(), v.into_ir(), out.into_ir(), lse.into_ir(), dout.into_ir(), pad.into_ir()],
            &[dq, dk, dv],
        );
        let op = Op::<B> { desc: desc.clone(), kind: Kind::FlashBwd(params), _b: PhantomData };
        let [dq, dk, dv]: [_; 3] = client.register(streams, OperationIr::Custom(desc), op).try_into().expect("3 outputs");
        (dq, dk, dv)
    }
}
