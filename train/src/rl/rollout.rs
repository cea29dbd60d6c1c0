//! Rollouts: the transitions one RL iteration learns from.
//!
//! - **Step-wise** (ML-Agent §3.2): states sampled from the expert pool; the policy acts once in
//!   each; each action runs in a fresh episode restored to its state, in parallel workers, and is
//!   scored by eq. 6. One transition per state.
//! - **Episode-wise** (the Fig. 4 baseline): whole episodes from the task start; one transition
//!   per step, grouped by episode for GAE.

use super::pool::StatesPool;
use crate::actor::{PromptCodec, sample_actions};
use crate::episodes::{GenConfig, parallel_map, run_episodes};
use crate::error::{Result, TrainError};
use mlagent_agent::ActionKind;
use mlagent_agent::episode::EpisodeConfig;
use mlagent_engine::Qwen2;
use mlagent_kernels::KernelBackend;
use std::path::Path;

/// One action and what it earned.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The task.
    pub task: String,
    /// Which episode it belongs to (each step-wise transition is its own).
    pub episode: usize,
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// The action's token ids.
    pub action: Vec<u32>,
    /// The reward of eq. 6.
    pub reward: f64,
    /// The case of eq. 6.
    pub kind: ActionKind,
    /// A known action with the right keys.
    pub valid: bool,
}

/// Step-wise rollout over the pool states `picks`, each restored in `work/slot-J`.
#[allow(clippy::too_many_arguments)]
pub fn stepwise<B: KernelBackend>(
    policy: &Qwen2<B>,
    codec: &PromptCodec,
    pool: &StatesPool,
    picks: &[usize],
    config: &EpisodeConfig,
    generation: GenConfig,
    workers: usize,
    work: &Path,
    seed: u64,
    device: &B::Device,
) -> Result<Vec<Transition>> {
    let prompts = picks.iter().map(|&i| codec.encode(&pool.state(i, config).render())).collect::<Result<Vec<_>>>()?;
    let actions = sample_actions(policy, codec, &prompts, generation.sampling, generation.max_new_tokens, generation.batch, seed, device)?;
    let jobs: Vec<(usize, String)> = picks.iter().copied().zip(actions.iter().map(|a| a.text.clone())).collect();
    let outcomes = parallel_map(jobs, workers, |slot, (i, text)| -> Result<_> {
        let dir = work.join(format!("slot-{slot}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        }
        let mut ep = pool.restore(i, &dir, config)?;
        ep.step(&text).map_err(|e| TrainError::Env(format!("{}: {e}", pool.task_of(i))))
    });
    let mut out = Vec::with_capacity(picks.len());
    for (n, ((&i, p), (a, o))) in picks.iter().zip(prompts).zip(actions.into_iter().zip(outcomes)).enumerate() {
        let o = o?;
        out.push(Transition {
            task: pool.task_of(i).to_string(),
            episode: n,
            prompt: p,
            action: a.ids,
            reward: o.reward,
            kind: o.kind,
            valid: o.valid && o.kind != ActionKind::Invalid,
        });
    }
    Ok(out)
}

/// Episode-wise rollout: `count` episodes from the start of the pool's tasks (round robin from
/// `offset`), `max_steps` each.
#[allow(clippy::too_many_arguments)]
pub fn episodewise<B: KernelBackend>(
    policy: &Qwen2<B>,
    codec: &PromptCodec,
    pool: &StatesPool,
    count: usize,
    offset: usize,
    max_steps: usize,
    config: &EpisodeConfig,
    generation: GenConfig,
    workers: usize,
    work: &Path,
    seed: u64,
    device: &B::Device,
) -> Result<Vec<Transition>> {
    let names = pool.task_names();
    if names.is_empty() {
        return Err(TrainError::Config("the states pool has no task".into()));
    }
    let episodes = (0..count)
        .map(|e| {
            let name = &names[(offset + e) % names.len()];
            (pool.task(name).expect("pool task").clone(), work.join(format!("episode-{e}")))
        })
        .collect();
    let results = run_episodes(policy, codec, episodes, config, max_steps, generation, workers, seed, device, &|_| {})?;
    let mut out = Vec::new();
    for (e, r) in results.into_iter().enumerate() {
        for ((step, p), a) in r.trajectory.steps.iter().zip(r.prompts).zip(r.actions) {
            out.push(Transition {
                task: r.trajectory.task.clone(),
                episode: e,
                prompt: p,
                action: a,
                reward: step.reward,
                kind: step.kind,
                valid: step.valid && step.kind != ActionKind::Invalid,
            });
        }
    }
    Ok(out)
}
