//! Next-token cross-entropy on labelled positions only.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};

/// Sum over labelled positions of `−log p(target | prefix)`, from the logits of those positions only.
///
/// The trainer runs the LM head on the labelled positions alone (their hidden states gathered
/// first): unlabelled positions contribute nothing to the loss, and skipping their `E × V` head
/// matmul (forward and backward) saves most of the head's cost, since assistant tokens are a small
/// part of an agent prompt.
///
/// # Shapes
/// - `logits`: `[N, V]` at the N labelled positions
/// - `targets`: `[N]` the next token at each of them
/// - returns a scalar `[1]`
pub fn label_nll_sum<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let logp = log_softmax(logits.cast(FloatDType::F32), 1); // [N, V]
    logp.gather(1, targets.reshape([n, 1])).sum().neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn matches_a_hand_computed_value() {
        let dev = Default::default();
        // Row 0: logits [0, ln 3] over 2 tokens → p(1) = 3/4; row 1: [5, 1] → p(0) = e⁵/(e⁵ + e).
        let logits = Tensor::<Flex, 2>::from_data(TensorData::new(vec![0.0, 3f32.ln(), 5.0, 1.0], [2, 2]), &dev);
        let targets = Tensor::<Flex, 1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &dev);
        let v = label_nll_sum(logits, targets).into_scalar();
        let want = (4.0f64 / 3.0).ln() + (1.0 + (-4.0f64).exp()).ln();
        assert!((v as f64 - want).abs() < 1e-6, "{v} vs {want}");
    }
}
