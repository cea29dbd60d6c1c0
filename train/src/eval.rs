//! Evaluation (ML-Agent §4): K full episodes per task with the model as the agent; avg@K and
//! best@K of the final metric, their relative gain over the task's starter script, and the
//! valid-action rate.
//!
//! **Final metric** of an episode: the last metric it measured (a scored run or Final Answer's
//! grade). An episode that never produced a gradable submission scores the starter's `m_init`
//! (relative gain 0), as the untouched starter would, and is counted in `graded` as a miss.

use crate::actor::PromptCodec;
use crate::episodes::{GenConfig, run_episodes};
use crate::error::Result;
use mlagent_agent::collect::{final_metric, relative_gain};
use mlagent_agent::episode::EpisodeConfig;
use mlagent_agent::{ActionKind, Direction, TaskSpec};
use mlagent_engine::Qwen2;
use mlagent_kernels::KernelBackend;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// The tasks.
    pub tasks: Vec<TaskSpec>,
    /// Episodes per task.
    pub k: usize,
    /// Steps per episode.
    pub max_steps: usize,
    /// Action generation.
    pub generation: GenConfig,
    /// Parallel environment workers.
    pub workers: usize,
    /// Seed of token sampling.
    pub seed: u64,
    /// Environment settings.
    pub episode: EpisodeConfig,
    /// Folder for the episodes.
    pub work: PathBuf,
}

/// One task's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskEval {
    /// Task name.
    pub task: String,
    /// Its metric.
    pub metric: String,
    /// Whether higher is better.
    pub higher_is_better: bool,
    /// The starter's score.
    pub m_init: f64,
    /// Each episode's final metric (`None`: nothing graded; counted as `m_init`).
    pub finals: Vec<Option<f64>>,
    /// Mean final metric over the K episodes.
    pub avg_at_k: f64,
    /// Best final metric over the K episodes.
    pub best_at_k: f64,
    /// Relative gain of avg@K over the starter (positive = better).
    pub avg_relative_gain: f64,
    /// Relative gain of best@K.
    pub best_relative_gain: f64,
    /// Valid actions / all actions.
    pub valid_rate: f64,
    /// Actions taken.
    pub steps: usize,
    /// Episodes with a graded submission.
    pub graded: usize,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    /// The model directory.
    pub model: String,
    /// Episodes per task.
    pub k: usize,
    /// Steps per episode.
    pub max_steps: usize,
    /// Sampling temperature (0 = greedy).
    pub temperature: f32,
    /// Seed.
    pub seed: u64,
    /// Per task.
    pub tasks: Vec<TaskEval>,
    /// Mean over tasks of the avg@K relative gain.
    pub avg_relative_gain: f64,
    /// Mean over tasks of the best@K relative gain.
    pub best_relative_gain: f64,
    /// Valid actions / all actions, over every task.
    pub valid_action_rate: f64,
    /// Wall seconds.
    pub seconds: f64,
}

/// avg@K and best@K of final metrics (misses count as `m_init`), direction-aware.
pub fn avg_best(finals: &[Option<f64>], m_init: f64, direction: Direction) -> (f64, f64) {
    let ms: Vec<f64> = finals.iter().map(|m| m.filter(|v| v.is_finite()).unwrap_or(m_init)).collect();
    if ms.is_empty() {
        return (m_init, m_init);
    }
    // The mean as m_init plus the mean offset from it: exactly m_init (relative gain exactly 0)
    // when every episode ends at the starter's score, where Σm / K can miss it by an ulp.
    let avg = m_init + ms.iter().map(|m| m - m_init).sum::<f64>() / ms.len() as f64;
    let best = ms.iter().copied().fold(f64::NAN, |b, m| if b.is_nan() || direction.sign() * (m - b) > 0.0 { m } else { b });
    (avg, best)
}

impl EvalReport {
    /// A Markdown table.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Model `{}`: K = {}, {} steps per episode, temperature {}, seed {}.\n\n\
             | task | metric | starter | avg@K | best@K | avg gain | best gain | valid actions | graded |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
            self.model, self.k, self.max_steps, self.temperature, self.seed
        );
        for t in &self.tasks {
            s.push_str(&format!(
                "| {} | {}{} | {:.4} | {:.4} | {:.4} | {:+.2}% | {:+.2}% | {:.0}% ({}) | {}/{} |\n",
                t.task,
                t.metric,
                if t.higher_is_better { " ↑" } else { " ↓" },
                t.m_init,
                t.avg_at_k,
                t.best_at_k,
                100.0 * t.avg_relative_gain,
                100.0 * t.best_relative_gain,
                100.0 * t.valid_rate,
                t.steps,
                t.graded,
                t.finals.len()
            ));
        }
        s.push_str(&format!(
            "| **mean** | | | | | **{:+.2}%** | **{:+.2}%** | **{:.0}%** | |\n\n{:.1} s.\n",
            100.0 * self.avg_relative_gain,
            100.0 * self.best_relative_gain,
            100.0 * self.valid_action_rate,
            self.seconds
        ));
        s
    }
}

/// Runs the evaluation: all `tasks × k` episodes in lockstep.
pub fn evaluate<B: KernelBackend>(
    model: &Qwen2<B>,
    model_name: &str,
    codec: &PromptCodec,
    cfg: &EvalConfig,
    device: &B::Device,
    on_step: &dyn Fn(usize),
) -> Result<EvalReport> {
    let t0 = std::time::Instant::now();
    let mut episodes = Vec::new();
    for t in &cfg.tasks {
        for j in 0..cfg.k {
            episodes.push((t.clone(), cfg.work.join(&t.name).join(format!("{j:02}"))));
        }
    }
    let results = run_episodes(model, codec, episodes, &cfg.episode, cfg.max_steps, cfg.generation, cfg.workers, cfg.seed, device, on_step)?;
    let mut tasks = Vec::new();
    let (mut all_steps, mut all_valid) = (0, 0);
    for (ti, t) in cfg.tasks.iter().enumerate() {
        let mine = &results[ti * cfg.k..(ti + 1) * cfg.k];
        let finals: Vec<Option<f64>> = mine.iter().map(|r| final_metric(&r.trajectory)).collect();
        let steps: usize = mine.iter().map(|r| r.trajectory.steps.len()).sum();
        let valid: usize =
            mine.iter().map(|r| r.trajectory.steps.iter().filter(|s| s.valid && s.kind != ActionKind::Invalid).count()).sum();
        all_steps += steps;
        all_valid += valid;
        let (avg, best) = avg_best(&finals, t.m_init, t.direction());
        tasks.push(TaskEval {
            task: t.name.clone(),
            metric: t.metric.name().into(),
            higher_is_better: t.direction().sign() > 0.0,
            m_init: t.m_init,
            graded: finals.iter().filter(|m| m.is_some_and(f64::is_finite)).count(),
            finals,
            avg_at_k: avg,
            best_at_k: best,
            avg_relative_gain: relative_gain(t, avg),
            best_relative_gain: relative_gain(t, best),
            valid_rate: if steps == 0 { 0.0 } else { valid as f64 / steps as f64 },
            steps,
        });
    }
    let n = tasks.len().max(1) as f64;
    Ok(EvalReport {
        model: model_name.into(),
        k: cfg.k,
        max_steps: cfg.max_steps,
        temperature: cfg.generation.sampling.temperature,
        seed: cfg.seed,
        avg_relative_gain: tasks.iter().map(|t| t.avg_relative_gain).sum::<f64>() / n,
        best_relative_gain: tasks.iter().map(|t| t.best_relative_gain).sum::<f64>() / n,
        valid_action_rate: if all_steps == 0 { 0.0 } else { all_valid as f64 / all_steps as f64 },
        tasks,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg_and_best_respect_direction_and_misses() {
        let f = [Some(0.7), None, Some(0.9)];
        let (a, b) = avg_best(&f, 0.5, Direction::Maximize);
        assert!((a - 0.7).abs() < 1e-12 && b == 0.9);
        let (a, b) = avg_best(&f, 0.5, Direction::Minimize);
        assert!((a - 0.7).abs() < 1e-12 && b == 0.5);
        assert_eq!(avg_best(&[], 0.3, Direction::Maximize), (0.3, 0.3));
        assert_eq!(avg_best(&[Some(f64::NAN)], 0.3, Direction::Maximize), (0.3, 0.3));
        // Three episodes at the starter's 0.1: Σm / 3 is 0.10000000000000002, a gain of 2e-16.
        assert_ne!((0.1f64 + 0.1 + 0.1) / 3.0, 0.1);
        assert_eq!(avg_best(&[Some(0.1), None, Some(0.1)], 0.1, Direction::Minimize), (0.1, 0.1));
    }
}
