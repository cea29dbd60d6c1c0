//! Advantages and returns: the single-step advantage of step-wise PPO and GAE for the episode-wise
//! baseline, plus batch whitening. Pure functions over host vectors (one value per action).

/// Step-wise advantage (ML-Agent §3.2, eq. 4 with a one-step episode): `A = r − V(s)`, and the
/// return the critic regresses to is `r` itself.
pub fn single_step(rewards: &[f64], values: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let adv = rewards.iter().zip(values).map(|(r, v)| r - v).collect();
    (adv, rewards.to_vec())
}

/// Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438, eq. 16) over one
/// episode of `T` steps: `δ_t = r_t + γ V(s_{t+1}) − V(s_t)`, `A_t = Σ_l (γλ)^l δ_{t+l}`, with
/// `V(s_T) = 0` after the last step (terminal or truncated, as verl treats the last token).
/// Returns `(advantages, returns = A + V)`.
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lambda: f64) -> (Vec<f64>, Vec<f64>) {
    let n = rewards.len();
    assert_eq!(values.len(), n, "gae: {n} rewards but {} values", values.len());
    let mut adv = vec![0.0; n];
    let mut next_adv = 0.0;
    for t in (0..n).rev() {
        let next_v = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_v - values[t];
        next_adv = delta + gamma * lambda * next_adv;
        adv[t] = next_adv;
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
}

/// Whitening over the batch, as verl's `masked_whiten`: `(x − mean) / sqrt(var + 1e-8)` with the
/// unbiased variance. A batch of one is only centred.
pub fn whiten(x: &[f64]) -> Vec<f64> {
    let n = x.len();
    if n == 0 {
        return Vec::new();
    }
    let mean = x.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return vec![x[0] - mean];
    }
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let scale = 1.0 / (var + 1e-8).sqrt();
    x.iter().map(|v| (v - mean) * scale).collect()
}

/// Mean and (population) standard deviation, for metrics.
pub fn mean_std(x: &[f64]) -> (f64, f64) {
    if x.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    (mean, (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_step_is_reward_minus_value() {
        let (a, r) = single_step(&[1.0, 0.0, 0.5], &[0.25, 0.5, 0.5]);
        assert_eq!(a, vec![0.75, -0.5, 0.0]);
        assert_eq!(r, vec![1.0, 0.0, 0.5]);
    }

    #[test]
    fn gae_by_hand() {
        // γ = λ = 1: A_t = Σ_{l≥t} r_l − V_t (Monte-Carlo return minus value).
        let (a, r) = gae(&[0.5, 0.0, 1.0], &[0.2, 0.4, 0.6], 1.0, 1.0);
        for (x, y) in a.iter().zip([1.5 - 0.2, 1.0 - 0.4, 1.0 - 0.6]) {
            assert!((x - y).abs() < 1e-12);
        }
        for (x, y) in r.iter().zip([1.5, 1.0, 1.0]) {
            assert!((x - y).abs() < 1e-12);
        }
        // λ = 0: one-step TD errors.
        let (a, _) = gae(&[0.5, 0.0, 1.0], &[0.2, 0.4, 0.6], 0.9, 0.0);
        for (x, y) in a.iter().zip([0.5 + 0.9 * 0.4 - 0.2, 0.9 * 0.6 - 0.4, 1.0 - 0.6]) {
            assert!((x - y).abs() < 1e-12);
        }
        // γ = 0.5, λ = 0.5 on two steps.
        let (a, _) = gae(&[1.0, 1.0], &[0.0, 0.0], 0.5, 0.5);
        assert!((a[1] - 1.0).abs() < 1e-12 && (a[0] - 1.25).abs() < 1e-12, "{a:?}");
    }

    #[test]
    fn whiten_has_zero_mean_unit_variance() {
        let w = whiten(&[1.0, 2.0, 3.0, 6.0]);
        let (m, _) = mean_std(&w);
        let var = w.iter().map(|v| v * v).sum::<f64>() / 3.0;
        assert!(m.abs() < 1e-12 && (var - 1.0).abs() < 1e-6, "{w:?}");
        assert_eq!(whiten(&[3.0]), vec![0.0]);
        assert!(whiten(&[2.0, 2.0]).iter().all(|v| v.abs() < 1e-12));
    }
}
