//! The critic's clipped value loss (PPO2 / verl `compute_value_loss`).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `½ · mean(max((V − R)², (V_clip − R)²))` with `V_clip = V_old + clamp(V − V_old, ±clip)`:
/// the value may not move more than `clip` from the rollout's estimate per update (verl's
/// `cliprange_value`, default 0.5).
///
/// # Shapes
/// `vpred`, `old`, `returns`: `[N]`; returns the loss `[1]`.
pub fn clipped_value_loss<B: Backend>(vpred: Tensor<B, 1>, old: Tensor<B, 1>, returns: Tensor<B, 1>, clip: f32) -> Tensor<B, 1> {
    let clipped = old.clone() + (vpred.clone() - old).clamp(-clip, clip);
    let a = (vpred - returns.clone()).powi_scalar(2);
    let b = (clipped - returns).powi_scalar(2);
    a.max_pair(b).mean().mul_scalar(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    fn t(v: &[f32]) -> Tensor<Flex, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    #[test]
    fn by_hand() {
        // Row 0: inside the clip range → ½(0.6−1)² = 0.08.
        // Row 1: V moved +1 from 0 (clipped to 0.5); R = 0: max(1, 0.25) = 1 → 0.5.
        // Row 2: V moved −1 from 1 toward R = 0 (clipped to 0.5): max(0, 0.25) = 0.25 → 0.125.
        let l = clipped_value_loss(t(&[0.6, 1.0, 0.0]), t(&[0.5, 0.0, 1.0]), t(&[1.0, 0.0, 0.0]), 0.5);
        let got = l.into_scalar();
        assert!((got - (0.08 + 0.5 + 0.125) / 3.0).abs() < 1e-6, "{got}");
    }
}
