//! Next-token cross-entropy on labelled positions only.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};

/// Sum over labelled positions of `−log p(ids[t+1] | ids[..=t])`.
///
/// # Shapes
/// - `logits`: `[B, T, V]` for inputs `ids[.., ..T]`
/// - `targets`: `[B, T]` the next tokens `ids[.., 1..=T]`
/// - `mask`: `[B, T]` 1.0 where the target is labelled, else 0.0
/// - returns a scalar `[1]`
pub fn masked_nll_sum<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>, mask: Tensor<B, 2>) -> Tensor<B, 1> {
    let [b, t, _] = logits.dims();
    let logp = log_softmax(logits.cast(FloatDType::F32), 2); // [B, T, V]
    let picked = logp.gather(2, targets.reshape([b, t, 1])).reshape([b, t]); // [B, T]
    (picked * mask).sum().neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn matches_a_hand_computed_value() {
        let dev = Default::default();
        // Row 0: logits [0, ln 3] over 2 tokens → p(1) = 3/4; row 0 step 1 is masked.
        let logits = Tensor::<Flex, 3>::from_data(TensorData::new(vec![0.0, 3f32.ln(), 5.0, 1.0], [1, 2, 2]), &dev);
        let targets = Tensor::<Flex, 2, Int>::from_data(TensorData::new(vec![1i64, 0], [1, 2]), &dev);
        let mask = Tensor::<Flex, 2>::from_data(TensorData::new(vec![1.0f32, 0.0], [1, 2]), &dev);
        let v = masked_nll_sum(logits, targets, mask).into_scalar();
        assert!((v - (4.0f32 / 3.0).ln()).abs() < 1e-6, "{v}");
    }
}
