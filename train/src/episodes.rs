//! Whole episodes with the model as the agent, run in lockstep: each round, every live episode's
//! state is encoded, one batched generate call answers them all, and the environment steps run in
//! parallel workers. Used by evaluation and by the episode-wise RL baseline.

use crate::actor::{PromptCodec, sample_actions};
use crate::error::{Result, TrainError};
use mlagent_agent::episode::{Episode, EpisodeConfig};
use mlagent_agent::{TaskSpec, Trajectory, trace};
use mlagent_engine::{Qwen2, SamplingParams};
use mlagent_kernels::KernelBackend;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How actions are generated.
#[derive(Debug, Clone, Copy)]
pub struct GenConfig {
    /// Token choice (temperature 0 = greedy).
    pub sampling: SamplingParams,
    /// Longest action in tokens.
    pub max_new_tokens: usize,
    /// Prompts per generate call.
    pub batch: usize,
}

/// Applies `f` to every item on `workers` threads; results keep the input order.
pub fn parallel_map<T: Send, R: Send>(items: Vec<T>, workers: usize, f: impl Fn(usize, T) -> R + Sync) -> Vec<R> {
    let n = items.len();
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let out: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1).min(n.max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let item = slots[i].lock().expect("slot").take().expect("taken once");
                    let r = f(i, item);
                    *out[i].lock().expect("slot") = Some(r);
                }
            });
        }
    });
    out.into_iter().map(|m| m.into_inner().expect("slot").expect("every item ran")).collect()
}

/// One finished episode: its trajectory and the token ids of each step's prompt and action.
#[derive(Debug, Clone)]
pub struct EpisodeResult {
    /// The episode's trace.
    pub trajectory: Trajectory,
    /// Per step: the encoded prompt.
    pub prompts: Vec<Vec<u32>>,
    /// Per step: the sampled action's ids.
    pub actions: Vec<Vec<u32>>,
}

/// Runs one episode per `(task, dir)` from the task's start until done or `max_steps`.
/// `on_step(finished_steps)` is called after every round.
#[allow(clippy::too_many_arguments)]
pub fn run_episodes<B: KernelBackend>(
    model: &Qwen2<B>,
    codec: &PromptCodec,
    episodes: Vec<(TaskSpec, PathBuf)>,
    config: &EpisodeConfig,
    max_steps: usize,
    generation: GenConfig,
    workers: usize,
    seed: u64,
    device: &B::Device,
    on_step: &dyn Fn(usize),
) -> Result<Vec<EpisodeResult>> {
    let config = EpisodeConfig { max_steps: Some(max_steps), ..config.clone() };
    let mut live: Vec<Option<Episode>> = Vec::with_capacity(episodes.len());
    for (task, dir) in &episodes {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        }
        let ep = Episode::reset(task.clone(), dir, config.clone()).map_err(|e| TrainError::Env(format!("{}: {e}", task.name)))?;
        live.push(Some(ep));
    }
    let mut prompts: Vec<Vec<Vec<u32>>> = vec![Vec::new(); episodes.len()];
    let mut actions: Vec<Vec<Vec<u32>>> = vec![Vec::new(); episodes.len()];
    let mut steps_done = 0;
    for round in 0..max_steps {
        let active: Vec<usize> =
            (0..live.len()).filter(|&i| live[i].as_ref().is_some_and(|e| !e.done() && e.step_index() < max_steps)).collect();
        if active.is_empty() {
            break;
        }
        let encoded = active
            .iter()
            .map(|&i| codec.encode(&live[i].as_ref().expect("live").state().render()))
            .collect::<Result<Vec<_>>>()?;
        let acts = sample_actions(model, codec, &encoded, generation.sampling, generation.max_new_tokens, generation.batch, seed.wrapping_add(round as u64 * 7919), device)?;
        let jobs: Vec<(Episode, String)> =
            active.iter().zip(&acts).map(|(&i, a)| (live[i].take().expect("live"), a.text.clone())).collect();
        let stepped = parallel_map(jobs, workers, |_, (mut ep, text)| {
            let r = ep.step(&text);
            (ep, r)
        });
        for ((&i, (ep, r)), (p, a)) in active.iter().zip(stepped).zip(encoded.into_iter().zip(acts)) {
            r.map_err(|e| TrainError::Env(format!("{}: {e}", ep.task().name)))?;
            prompts[i].push(p);
            actions[i].push(a.ids);
            live[i] = Some(ep);
            steps_done += 1;
        }
        on_step(steps_done);
    }
    let mut out = Vec::with_capacity(live.len());
    for ((ep, p), a) in live.into_iter().zip(prompts).zip(actions) {
        let ep = ep.expect("every episode is back");
        let steps = trace::read(&ep.trace_path()).map_err(|e| TrainError::Env(e.to_string()))?;
        let trajectory = Trajectory { task: ep.task().name.clone(), ideas: Vec::new(), steps };
        out.push(EpisodeResult { trajectory, prompts: p, actions: a });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_keeps_order() {
        let v = parallel_map((0..50).collect(), 4, |i, x: i32| (i as i32) * 100 + x * 2);
        assert_eq!(v, (0..50).map(|x| x * 102).collect::<Vec<_>>());
        assert!(parallel_map(Vec::<i32>::new(), 3, |_, x| x).is_empty());
    }
}
