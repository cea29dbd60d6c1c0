//! Choosing the next token from a row of logits: greedy, or temperature → top-k → top-p
//! (nucleus, Holtzman et al. 2019) → a draw, in the order HF's logits warpers apply them.

use crate::error::{EngineError, Result};
use rand::RngExt;
use rand::rngs::StdRng;

/// How to pick the next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the k most likely tokens (`None` or 0 = off).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches p (`None` or 1 = off).
    pub top_p: Option<f32>,
}

impl SamplingParams {
    /// Argmax decoding.
    pub fn greedy() -> Self {
        Self { temperature: 0.0, top_k: None, top_p: None }
    }

    /// Checks ranges: temperature ≥ 0 and finite, top-p in (0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(EngineError::Input(format!("temperature {} must be a finite number ≥ 0", self.temperature)));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(EngineError::Input(format!("top-p {p} must be in (0, 1]")));
        }
        Ok(())
    }
}

/// Index of the largest logit (the first one on ties, as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Samples one token id from `logits` `[V]`.
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut StdRng) -> u32 {
    if params.temperature == 0.0 {
        return argmax(logits);
    }
    let t = params.temperature as f64;
    // Candidates sorted by logit, descending (stable, so ties keep index order).
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if let Some(k) = params.top_k.filter(|&k| k > 0) {
        idx.truncate(k.min(idx.len()));
    }
    let max = logits[idx[0]] as f64 / t;
    let weights: Vec<f64> = idx.iter().map(|&i| (logits[i] as f64 / t - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut keep = weights.len();
    if let Some(p) = params.top_p.filter(|&p| p < 1.0) {
        // Keep tokens until the cumulative probability reaches p (at least one).
        let mut cum = 0.0;
        for (j, w) in weights.iter().enumerate() {
            cum += w / total;
            if cum >= p as f64 {
                keep = j + 1;
                break;
            }
        }
    }
    let kept_total: f64 = weights[..keep].iter().sum();
    let mut u = rng.random::<f64>() * kept_total;
    for j in 0..keep {
        u -= weights[j];
        if u <= 0.0 {
            return idx[j] as u32;
        }
    }
    idx[keep - 1] as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn greedy_takes_first_max() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(sample(&[0.0, 1.0, 5.0], &SamplingParams::greedy(), &mut rng), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_cuts_the_tail() {
        let logits = [1.0, 4.0, 2.0, 3.9];
        let mut rng = StdRng::seed_from_u64(1);
        let k1 = SamplingParams { temperature: 1.0, top_k: Some(1), top_p: None };
        assert!((0..50).all(|_| sample(&logits, &k1, &mut rng) == 1));
        // p(1) ≈ 0.49, p(3) ≈ 0.44: top-p 0.9 keeps exactly {1, 3}.
        let p = SamplingParams { temperature: 1.0, top_k: None, top_p: Some(0.9) };
        let draws: Vec<u32> = (0..200).map(|_| sample(&logits, &p, &mut rng)).collect();
        assert!(draws.iter().all(|&d| d == 1 || d == 3));
        assert!(draws.contains(&1) && draws.contains(&3));
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = SamplingParams { temperature: 0.8, top_k: Some(20), top_p: Some(0.95) };
        let run = |s| {
            let mut rng = StdRng::seed_from_u64(s);
            (0..30).map(|_| sample(&logits, &p, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn validate_rejects_bad_values() {
        assert!(SamplingParams { temperature: -1.0, top_k: None, top_p: None }.validate().is_err());
        assert!(SamplingParams { temperature: 1.0, top_k: None, top_p: Some(0.0) }.validate().is_err());
        assert!(SamplingParams { temperature: 0.7, top_k: Some(5), top_p: Some(1.0) }.validate().is_ok());
    }
}
