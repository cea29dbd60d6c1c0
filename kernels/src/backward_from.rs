//! The backward pass from a given output gradient, PyTorch's `out.backward(dO)`.
//!
//! burn's `Tensor::backward` seeds its root with ones. Reaching a non-scalar output's gradient `dO`
//! that way takes a root such as `(out ∘ dO)`, whose backward multiplies the ones by `dO`: two
//! elementwise products over the output and a fill, each a kernel launch on a GPU. FlashAttention's
//! benchmarks call `out.backward(dO)`, so `kernels bench --bwd` times the backward as they do through
//! [`backward_from`]: a one-element root whose own backward hands `dO` to `out` unchanged.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::tensor::{
    Shape, Tensor,
    backend::{AutodiffBackend, Backend},
    ops::FloatTensor,
};

/// Why [`backward_from`] could not run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BackwardFromError {
    /// `dO` must have the output's shape.
    #[error("the output gradient has shape {dout:?}, the output {out:?}")]
    Shape { out: Vec<usize>, dout: Vec<usize> },
    /// Nothing upstream of the output requires a gradient.
    #[error("the output does not depend on any tensor that requires a gradient")]
    Untracked,
}

/// Backends whose graph can be seeded with an output gradient (burn's `Autodiff`).
pub trait BackwardFrom: AutodiffBackend {
    /// Gradients of `⟨out, dout⟩` with respect to every tracked input, `None` when `out` is not
    /// tracked. Shapes are the caller's to check (see [`backward_from`]).
    fn backward_from(out: FloatTensor<Self>, dout: FloatTensor<Self::InnerBackend>) -> Option<Self::Gradients>;
}

/// The seed's backward: the ones burn gives the one-element root are dropped and `dO` goes to `out`.
#[derive(Debug)]
struct SeedBackward;

impl<B: Backend> Backward<B, 1> for SeedBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [parent] = ops.parents;
        drop(grads.consume::<B>(&ops.node));
        if let Some(parent) = parent {
            grads.register::<B>(parent.id, ops.state);
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> BackwardFrom for Autodiff<B, C> {
    fn backward_from(out: FloatTensor<Self>, dout: FloatTensor<B>) -> Option<Self::Gradients> {
        let device = B::float_device(&out.primitive);
        let dtype = burn::tensor::TensorMetadata::dtype(&out.primitive);
        match SeedBackward.prepare::<C>([out.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                // The root's value is never read: one element, zero.
                let root = prep.finish(dout, B::float_zeros(Shape::new([1]), &device, dtype.into()));
                Some(<Self as AutodiffBackend>::backward(root))
            }
            OpsKind::UnTracked(_) => None,
        }
    }
}

/// Runs the backward pass with `dout` as the gradient of `out`: the gradients of `⟨out, dout⟩`,
/// as PyTorch's `out.backward(dout)`, without the elementwise product and fill a scalar root costs.
pub fn backward_from<B: BackwardFrom, const D: usize>(
    out: Tensor<B, D>,
    dout: Tensor<B::InnerBackend, D>,
) -> Result<B::Gradients, BackwardFromError> {
    let (out_shape, dout_shape) = (out.dims().to_vec(), dout.dims().to_vec());
    if out_shape != dout_shape {
        return Err(BackwardFromError::Shape { out: out_shape, dout: dout_shape });
    }
    let dout = dout.cast(out.dtype());
    B::backward_from(out.into_primitive().tensor(), dout.into_primitive().tensor()).ok_or(BackwardFromError::Untracked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Distribution, Tensor};

    type B = Autodiff<NdArray<f32>>;

    /// Gradients through a small graph (a product, a softmax, an exp) seeded with `dO` equal the
    /// ones burn's scalar root `(out ∘ dO)` gives; a wrong shape and an untracked output are errors.
    #[test]
    fn seeded_backward_matches_the_product_root() {
        let dev = Default::default();
        let x0 = Tensor::<NdArray<f32>, 2>::random([3, 5], Distribution::Uniform(-1.0, 1.0), &dev);
        let w0 = Tensor::<NdArray<f32>, 2>::random([5, 4], Distribution::Uniform(-1.0, 1.0), &dev);
        let dout = Tensor::<NdArray<f32>, 2>::random([3, 4], Distribution::Uniform(-1.0, 1.0), &dev);
        let graph = |x: &Tensor<B, 2>, w: &Tensor<B, 2>| burn::tensor::activation::softmax(x.clone().matmul(w.clone()), 1) + x.clone().exp().sum_dim(1);
        let leaves = || (Tensor::<B, 2>::from_inner(x0.clone()).require_grad(), Tensor::<B, 2>::from_inner(w0.clone()).require_grad());

        let (x, w) = leaves();
        let grads = backward_from(graph(&x, &w), dout.clone()).unwrap();
        let (gx, gw) = (x.grad(&grads).unwrap(), w.grad(&grads).unwrap());

        let (x, w) = leaves();
        let grads = (graph(&x, &w) * Tensor::<B, 2>::from_inner(dout.clone())).backward();
        let (rx, rw) = (x.grad(&grads).unwrap(), w.grad(&grads).unwrap());

        gx.into_data().assert_approx_eq::<f32>(&rx.into_data(), burn::tensor::Tolerance::absolute(1e-6));
        gw.into_data().assert_approx_eq::<f32>(&rw.into_data(), burn::tensor::Tolerance::absolute(1e-6));

        let (x, w) = leaves();
        let wrong = Tensor::<NdArray<f32>, 2>::zeros([4, 3], &dev);
        assert_eq!(
            backward_from(graph(&x, &w), wrong).err(),
            Some(BackwardFromError::Shape { out: vec![3, 4], dout: vec![4, 3] })
        );
        let constant = Tensor::<B, 2>::from_inner(x0.clone());
        assert_eq!(backward_from(constant, x0).err(), Some(BackwardFromError::Untracked));
    }
}
