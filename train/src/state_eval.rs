//! The end-of-SFT check: the model's greedy action on states it was not trained on, run through
//! the real environment and scored by the reward of eq. 6.

use crate::actor::PromptCodec;
use crate::episodes::GenConfig;
use crate::error::{Result, TrainError};
use crate::rl::StatesPool;
use crate::rl::rollout::stepwise;
use mlagent_agent::episode::EpisodeConfig;
use mlagent_engine::{Qwen2, SamplingParams};
use mlagent_kernels::KernelBackend;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Valid-action rate and reward of greedy actions on a set of states.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatesEval {
    /// States acted on.
    pub states: usize,
    /// Share of actions that parsed into a known action with the right keys.
    pub valid_rate: f64,
    /// Mean reward of eq. 6.
    pub mean_reward: f64,
    /// Actions per kind of eq. 6 (`invalid`, `error`, `non_edit`, …).
    pub kinds: BTreeMap<String, usize>,
}

/// `count` states spread evenly over the pool (all of them when `count` ≥ its size).
pub fn spread(pool_len: usize, count: usize) -> Vec<usize> {
    let n = count.min(pool_len);
    (0..n).map(|i| i * pool_len / n).collect()
}

/// Acts greedily once in each of `count` states of `pool`, in episodes under `work`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_states<B: KernelBackend>(
    model: &Qwen2<B>,
    codec: &PromptCodec,
    pool: &StatesPool,
    count: usize,
    max_new_tokens: usize,
    config: &EpisodeConfig,
    workers: usize,
    work: &Path,
    device: &B::Device,
) -> Result<StatesEval> {
    if pool.is_empty() {
        return Err(TrainError::Config("no states to evaluate on".into()));
    }
    let picks = spread(pool.len(), count);
    let generation = GenConfig { sampling: SamplingParams::greedy(), max_new_tokens, batch: 8 };
    let tr = stepwise(model, codec, pool, &picks, config, generation, workers, work, 0, device)?;
    let mut kinds = BTreeMap::new();
    for t in &tr {
        *kinds.entry(t.kind.name().to_string()).or_insert(0) += 1;
    }
    let n = tr.len().max(1) as f64;
    Ok(StatesEval {
        states: tr.len(),
        valid_rate: tr.iter().filter(|t| t.valid).count() as f64 / n,
        mean_reward: tr.iter().map(|t| t.reward).sum::<f64>() / n,
        kinds,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn spread_is_even_and_bounded() {
        assert_eq!(super::spread(10, 4), vec![0, 2, 5, 7]);
        assert_eq!(super::spread(3, 10), vec![0, 1, 2]);
        assert!(super::spread(0, 5).is_empty());
    }
}
