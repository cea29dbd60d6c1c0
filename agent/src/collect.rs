//! Expert data collection (ML-Agent §3.1): idea pools → embeddings → the most diverse ideas → expert episodes in
//! parallel → trajectories, SFT samples and a report.
//!
//! Output folder:
//! ```text
//! ideas/<task>.json          the pool, its selected (diverse) ids, and the random baseline ids
//! episodes/<task>/<NNNN>/    each episode's folder (work/, trace.jsonl)
//! trajectories.jsonl         one Trajectory per line, in (task, index) order
//! sft_sharegpt.jsonl         one sample per step: {"conversations": [{"from": "human"}, {"from": "gpt"}], ...}
//! sft_messages.jsonl         the same samples as OpenAI chat messages
//! report.json, report.md     per task: trajectories, valid-step rate, beat-starter share, best gain, diversity
//! ```
//! A sample's prompt is [`State::render`] of the state before the step, rebuilt from the trajectory by
//! [`step_states`] — the same function the RL states pool uses — so it is exactly the text the policy saw.

use crate::embed::{self, EmbedError, Embedder};
use crate::episode::{Episode, EpisodeConfig, EpisodeError};
use crate::ideas::{self, Idea, IdeaError};
use crate::policy::{Policy, PolicyError, Prompt};
use crate::prompt::State;
use crate::reward::ActionKind;
use crate::rng::Rng;
use crate::suite;
use crate::task::{TaskError, TaskSpec};
use crate::trace::{self, Trajectory};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How to collect.
#[derive(Debug, Clone)]
pub struct CollectConfig {
    /// Task names or folders.
    pub tasks: Vec<String>,
    /// Episodes per task.
    pub trajectories_per_task: usize,
    /// Pool size per task.
    pub ideas: usize,
    /// Diverse ideas kept per task.
    pub diverse: usize,
    /// Ideas given to the expert per episode (sampled uniformly in this range from the diverse ones).
    pub ideas_per_episode: (usize, usize),
    /// Parallel episodes.
    pub workers: usize,
    /// Seed of idea sampling, per-episode idea choice and the scripted expert.
    pub seed: u64,
    /// Seed of the built-in task suite.
    pub suite_seed: u64,
    /// Output folder.
    pub out: PathBuf,
    /// Episode settings (step limit, timeouts, history).
    pub episode: EpisodeConfig,
}

/// Where the idea pools come from.
pub enum IdeaSource<'a> {
    /// The offline generator ([`ideas::sample_pool`]).
    Offline,
    /// An LLM ([`ideas::llm_pool`]).
    Llm(&'a dyn crate::helper::Helper),
}

/// Progress of a collection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A task's pool was built and its diverse ideas selected.
    Selected {
        /// Task.
        task: String,
        /// Pool size.
        pool: usize,
    },
    /// Episodes are about to start.
    Started {
        /// Total episodes.
        episodes: usize,
    },
    /// One episode finished.
    EpisodeDone {
        /// Task.
        task: String,
        /// Steps taken.
        steps: usize,
        /// The final metric, if graded.
        metric: Option<f64>,
    },
}

/// Collection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    /// A task could not be loaded.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// An idea pool could not be built.
    #[error(transparent)]
    Ideas(#[from] IdeaError),
    /// Embedding failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// An episode failed (not a failed action: those are data).
    #[error("episode {episode}: {source}")]
    Episode {
        /// The episode id.
        episode: String,
        /// The cause.
        source: EpisodeError,
    },
    /// The policy failed.
    #[error("episode {episode}: the policy failed: {source}")]
    Policy {
        /// The episode id.
        episode: String,
        /// The cause.
        source: PolicyError,
    },
    /// An output file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
}

/// A task's pool and selection, as written to `ideas/<task>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Selection {
    /// Task.
    pub task: String,
    /// The pool.
    pub pool: Vec<Idea>,
    /// Indices into `pool` of the diverse ideas, in selection order.
    pub selected: Vec<usize>,
    /// Indices of as many random ideas (the comparison of the report).
    pub random: Vec<usize>,
    /// Mean pairwise cosine distance of the selected ideas.
    pub selected_distance: f64,
    /// Mean pairwise cosine distance of the random ideas.
    pub random_distance: f64,
}

/// Per-task numbers of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// Task.
    pub task: String,
    /// Episodes.
    pub trajectories: usize,
    /// Steps in all episodes.
    pub steps: usize,
    /// Share of steps whose response was a valid action.
    pub valid_step_rate: f64,
    /// Share of episodes whose final submission beats the starter (m_init).
    pub beat_starter: f64,
    /// The best final relative gain s·(m − m_init)/|m_init| over the episodes.
    pub best_relative_gain: Option<f64>,
    /// Mean pairwise distance of the selected ideas.
    pub selected_distance: f64,
    /// Mean pairwise distance of random ideas.
    pub random_distance: f64,
}

/// The collection report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// One row per task.
    pub tasks: Vec<TaskReport>,
    /// SFT samples written.
    pub samples: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl Report {
    /// A Markdown table.
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| task | trajectories | steps | valid steps | beat starter | best rel. gain | dist. selected | dist. random |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for t in &self.tasks {
            s.push_str(&format!(
                "| {} | {} | {} | {:.1}% | {:.1}% | {} | {:.3} | {:.3} |\n",
                t.task,
                t.trajectories,
                t.steps,
                100.0 * t.valid_step_rate,
                100.0 * t.beat_starter,
                t.best_relative_gain.map_or("-".into(), |g| format!("{:+.1}%", 100.0 * g)),
                t.selected_distance,
                t.random_distance
            ));
        }
        s.push_str(&format!("\n{} SFT samples in {:.1} s.\n", self.samples, self.seconds));
        s
    }
}

/// The states before every step of a trajectory, rebuilt exactly as the live episode rendered them.
pub fn step_states(task: &TaskSpec, description: &str, traj: &Trajectory, config: &EpisodeConfig) -> Vec<State> {
    (0..traj.steps.len())
        .map(|i| {
            State::from_steps(
                &task.name,
                description,
                task.metric,
                task.direction(),
                &traj.steps[..i],
                config.history,
            )
        })
        .collect()
}

/// One SFT sample: a prompt and the expert's response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Task.
    pub task: String,
    /// Episode id.
    pub episode: String,
    /// Step index.
    pub step: usize,
    /// `State::render()` before the step.
    pub prompt: String,
    /// The expert's response.
    pub response: String,
}

impl Sample {
    /// ShareGPT form (as LLaMA-Factory reads it).
    pub fn sharegpt(&self) -> serde_json::Value {
        serde_json::json!({
            "conversations": [{"from": "human", "value": self.prompt}, {"from": "gpt", "value": self.response}],
            "task": self.task, "episode": self.episode, "step": self.step,
        })
    }

    /// OpenAI chat-messages form.
    pub fn messages(&self) -> serde_json::Value {
        serde_json::json!({
            "messages": [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.response}],
            "task": self.task, "episode": self.episode, "step": self.step,
        })
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CollectError + '_ {
    move |source| CollectError::Io { path: path.to_path_buf(), source }
}

/// Build a task's pool, embed it and select the most diverse ideas (and a random comparison set).
pub fn select(task: &str, source: &IdeaSource<'_>, description: &str, cfg: &CollectConfig, embedder: &dyn Embedder) -> Result<Selection, CollectError> {
    let pool = match source {
        IdeaSource::Offline => ideas::sample_pool(task, cfg.ideas, cfg.seed)?,
        IdeaSource::Llm(h) => ideas::llm_pool(*h, task, description, cfg.ideas)?,
    };
    let texts: Vec<String> = pool.iter().map(|i| i.text.clone()).collect();
    let vectors = embedder.embed(&texts)?;
    let dist = embed::distance_matrix(&vectors);
    let selected = embed::farthest_point(&dist, cfg.diverse);
    let mut idx: Vec<usize> = (0..pool.len()).collect();
    Rng::new(cfg.seed, &format!("random-ideas/{task}")).shuffle(&mut idx);
    let random: Vec<usize> = idx.into_iter().take(selected.len()).collect();
    Ok(Selection {
        task: task.into(),
        selected_distance: embed::mean_pairwise_distance(&dist, &selected),
        random_distance: embed::mean_pairwise_distance(&dist, &random),
        pool,
        selected,
        random,
    })
}

/// One episode: reset, ask the policy until done (or the step limit), return the trajectory.
pub fn run_episode(task: &TaskSpec, id: &str, ideas: &[Idea], dir: &Path, config: &EpisodeConfig, policy: &dyn Policy) -> Result<Trajectory, CollectError> {
    let ep_err = |source| CollectError::Episode { episode: id.into(), source };
    let mut ep = Episode::reset(task.clone(), dir, config.clone()).map_err(ep_err)?;
    let limit = config.max_steps.unwrap_or(50);
    while !ep.done() && ep.step_index() < limit {
        let prompt = Prompt { episode: id.into(), state: ep.state(), ideas: ideas.to_vec() };
        let reply = policy
            .respond(std::slice::from_ref(&prompt))
            .map_err(|source| CollectError::Policy { episode: id.into(), source })?;
        let text = reply.into_iter().next().ok_or_else(|| CollectError::Policy {
            episode: id.into(),
            source: PolicyError::Model("no response".into()),
        })?;
        ep.step(&text).map_err(ep_err)?;
    }
    policy.end_episode(id);
    let steps = trace::read(&ep.trace_path()).map_err(|e| ep_err(EpisodeError::Trace(e)))?;
    Ok(Trajectory { task: task.name.clone(), ideas: ideas.iter().map(|i| i.text.clone()).collect(), steps })
}

/// The final metric of an episode: Final Answer's grade, else the last measured metric.
pub fn final_metric(traj: &Trajectory) -> Option<f64> {
    traj.steps.iter().rev().find_map(|s| s.metric)
}

/// Relative gain of `m` over `task`'s starter, positive when better.
pub fn relative_gain(task: &TaskSpec, m: f64) -> f64 {
    task.direction().sign() * (m - task.m_init) / task.m_init.abs().max(1e-12)
}

fn write_lines(path: &Path, lines: impl Iterator<Item = String>) -> Result<(), CollectError> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(io(path))
}

/// Collect: see the module docs. `on_event` is called from worker threads.
pub fn collect(
    cfg: &CollectConfig,
    source: &IdeaSource<'_>,
    embedder: &dyn Embedder,
    policy: &dyn Policy,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<Report, CollectError> {
    let t0 = std::time::Instant::now();
    let (lo, hi) = cfg.ideas_per_episode;
    if lo == 0 || hi < lo {
        return Err(CollectError::Config(format!("ideas per episode must be 1 ≤ lo ≤ hi, got {lo}..={hi}")));
    }
    if cfg.diverse == 0 || cfg.diverse > cfg.ideas {
        return Err(CollectError::Config(format!("--diverse {} must be between 1 and --ideas {}", cfg.diverse, cfg.ideas)));
    }
    std::fs::create_dir_all(cfg.out.join("ideas")).map_err(io(&cfg.out))?;
    let mut tasks = Vec::new();
    let mut selections = Vec::new();
    for name in &cfg.tasks {
        let task = suite::resolve(name, cfg.suite_seed)?;
        let description = task.description_text()?;
        let sel = select(&task.name, source, &description, cfg, embedder)?;
        let path = cfg.out.join("ideas").join(format!("{}.json", task.name));
        std::fs::write(&path, serde_json::to_string_pretty(&sel).expect("Selection serializes")).map_err(io(&path))?;
        on_event(&Event::Selected { task: task.name.clone(), pool: sel.pool.len() });
        tasks.push((task, description));
        selections.push(sel);
    }

    // Jobs in a fixed order; each job's ideas come from its own seeded stream.
    struct Job {
        task: usize,
        index: usize,
        id: String,
        ideas: Vec<Idea>,
    }
    let mut jobs = Vec::new();
    for (t, sel) in selections.iter().enumerate() {
        for index in 0..cfg.trajectories_per_task {
            let id = format!("{}/{index:04}", tasks[t].0.name);
            let mut rng = Rng::new(cfg.seed, &format!("episode-ideas/{id}"));
            let n = (lo + rng.below(hi - lo + 1)).min(sel.selected.len());
            let mut pick = sel.selected.clone();
            rng.shuffle(&mut pick);
            let ideas = pick[..n].iter().map(|&i| sel.pool[i].clone()).collect();
            jobs.push(Job { task: t, index, id, ideas });
        }
    }
    on_event(&Event::Started { episodes: jobs.len() });
    let results: Vec<Mutex<Option<Result<Trajectory, CollectError>>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..cfg.workers.max(1).min(jobs.len().max(1)) {
            s.spawn(|| {
                loop {
                    let j = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(j) else { break };
                    let task = &tasks[job.task].0;
                    let dir = cfg.out.join("episodes").join(&task.name).join(format!("{:04}", job.index));
                    let r = run_episode(task, &job.id, &job.ideas, &dir, &cfg.episode, policy);
                    if let Ok(traj) = &r {
                        on_event(&Event::EpisodeDone { task: task.name.clone(), steps: traj.steps.len(), metric: final_metric(traj) });
                    }
                    let failed = r.is_err();
                    *results[j].lock().expect("result lock") = Some(r);
                    if failed {
                        // Stop handing out work; the first error is reported.
                        next.store(jobs.len(), Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let mut trajectories = Vec::new();
    for (job, r) in jobs.iter().zip(results) {
        match r.into_inner().expect("result lock") {
            Some(Ok(t)) => trajectories.push((job, t)),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }

    // Outputs.
    let traj_path = cfg.out.join("trajectories.jsonl");
    write_lines(&traj_path, trajectories.iter().map(|(_, t)| serde_json::to_string(t).expect("Trajectory serializes")))?;
    let mut samples = Vec::new();
    for (job, traj) in &trajectories {
        let (task, description) = &tasks[job.task];
        for (state, step) in step_states(task, description, traj, &cfg.episode).into_iter().zip(&traj.steps) {
            samples.push(Sample {
                task: task.name.clone(),
                episode: job.id.clone(),
                step: step.index,
                prompt: state.render(),
                response: step.response.clone(),
            });
        }
    }
    write_lines(&cfg.out.join("sft_sharegpt.jsonl"), samples.iter().map(|s| s.sharegpt().to_string()))?;
    write_lines(&cfg.out.join("sft_messages.jsonl"), samples.iter().map(|s| s.messages().to_string()))?;

    let mut rows = Vec::new();
    for (t, (task, _)) in tasks.iter().enumerate() {
        let mine: Vec<&Trajectory> = trajectories.iter().filter(|(j, _)| j.task == t).map(|(_, tr)| tr).collect();
        let steps: usize = mine.iter().map(|tr| tr.steps.len()).sum();
        let valid: usize = mine.iter().map(|tr| tr.steps.iter().filter(|s| s.valid && s.kind != ActionKind::Invalid).count()).sum();
        let finals: Vec<f64> = mine.iter().filter_map(|tr| final_metric(tr)).collect();
        let beat = finals.iter().filter(|&&m| relative_gain(task, m) > 0.0).count();
        rows.push(TaskReport {
            task: task.name.clone(),
            trajectories: mine.len(),
            steps,
            valid_step_rate: if steps == 0 { 0.0 } else { valid as f64 / steps as f64 },
            beat_starter: if mine.is_empty() { 0.0 } else { beat as f64 / mine.len() as f64 },
            best_relative_gain: finals.iter().map(|&m| relative_gain(task, m)).reduce(f64::max),
            selected_distance: selections[t].selected_distance,
            random_distance: selections[t].random_distance,
        });
    }
    let report = Report { tasks: rows, samples: samples.len(), seconds: t0.elapsed().as_secs_f64() };
    let rp = cfg.out.join("report.json");
    std::fs::write(&rp, serde_json::to_string_pretty(&report).expect("Report serializes")).map_err(io(&rp))?;
    let md = cfg.out.join("report.md");
    std::fs::write(&md, report.markdown()).map_err(io(&md))?;
    Ok(report)
}

#[cfg(test)]
mod tests;
