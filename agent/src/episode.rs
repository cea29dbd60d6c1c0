//! An episode: a task copied into `DIR/work`, stepped one response at a time, persisted so that separate processes
//! (`mlagent env step`) can continue it, and restorable from a trace (`mlagent env replay`, the RL states pool).

use crate::actions::{Ctx, Outcome, Progress, RunError, SandboxConfig, edit};
use crate::helper::{Helper, OpenAiHelper};
use crate::parse;
use crate::prompt::{Exchange, HISTORY, State};
use crate::reward::{ActionKind, reward};
use crate::sandbox::Limits;
use crate::task::{TaskError, TaskSpec};
use crate::trace::{self, Durations, Step, TraceError};
use crate::workspace::{PathError, Workspace};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A helper LLM endpoint (see [`crate::helper::OpenAiHelper`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelperConfig {
    /// Base URL, e.g. `http://127.0.0.1:8000/v1`.
    pub url: String,
    /// Model name sent to the endpoint.
    pub model: String,
    /// Environment variable holding the API key.
    pub api_key_env: Option<String>,
}

/// How an episode runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeConfig {
    /// Wall-clock limit of one Execute Script; `None` uses the task's `time_limit_secs`.
    pub exec_timeout_secs: Option<u64>,
    /// CPUs a script may use.
    pub cpus: usize,
    /// Largest file a script may write, MiB.
    pub file_size_mb: u64,
    /// Characters of script output kept in an observation.
    pub output_chars: usize,
    /// Try PID/network namespaces for scripts.
    pub namespaces: bool,
    /// Recent steps shown in the prompt.
    pub history: usize,
    /// End the episode after this many steps.
    pub max_steps: Option<usize>,
    /// The helper LLM for Edit Script (AI) and Understand File.
    pub helper: Option<HelperConfig>,
}

impl Default for EpisodeConfig {
    fn default() -> Self {
        EpisodeConfig {
            exec_timeout_secs: None,
            cpus: 1,
            file_size_mb: 512,
            output_chars: 10_000,
            namespaces: true,
            history: HISTORY,
            max_steps: None,
            helper: None,
        }
    }
}

/// What `env step` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// The canonical action name, `None` when none was recognised.
    pub action: Option<String>,
    /// The response named a known action with the right keys.
    pub valid: bool,
    /// The case of eq. 6.
    pub kind: ActionKind,
    /// The observation.
    pub observation: String,
    /// The reward of eq. 6.
    pub reward: f64,
    /// The episode is over.
    pub done: bool,
    /// The metric measured by this step.
    pub metric: Option<f64>,
}

/// Starting, continuing or restoring an episode failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EpisodeError {
    /// The task could not be loaded.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A file of the episode folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The folder holds something that is not an episode.
    #[error("{0}: exists and is not an episode folder; choose an empty or new folder")]
    NotEmpty(PathBuf),
    /// `episode.json` is missing or broken.
    #[error("{path}: not a valid episode ({message}); start one with `mlagent env reset`")]
    NotAnEpisode {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The episode already ended.
    #[error("the episode in {0} is over; start a new one with `mlagent env reset`")]
    Done(PathBuf),
    /// A workspace path problem.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The trace could not be read or written.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The step to restore is out of range.
    #[error("cannot restore step {step}: the trace has {len} steps{ended}")]
    StepOutOfRange {
        /// The step asked for.
        step: usize,
        /// Steps in the trace.
        len: usize,
        /// Note when the trace ended before that step.
        ended: &'static str,
    },
    /// The helper LLM is misconfigured.
    #[error(transparent)]
    Helper(#[from] crate::helper::HelperError),
}

/// What `episode.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    task_dir: PathBuf,
    task: String,
    config: EpisodeConfig,
    progress: Progress,
    step: usize,
    done: bool,
    recent: Vec<Exchange>,
}

/// A live episode.
pub struct Episode {
    task: TaskSpec,
    description: String,
    ws: Workspace,
    sandbox: SandboxConfig,
    helper: Option<Box<dyn Helper>>,
    saved: Saved,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> EpisodeError + '_ {
    move |source| EpisodeError::Io { path: path.to_path_buf(), source }
}

/// Copy a folder's regular files and subfolders (symlinks are skipped: nothing outside may leak in).
fn copy_tree(from: &Path, to: &Path) -> Result<(), EpisodeError> {
    std::fs::create_dir_all(to).map_err(io_err(to))?;
    for entry in std::fs::read_dir(from).map_err(io_err(from))? {
        let entry = entry.map_err(io_err(from))?;
        let ft = entry.file_type().map_err(io_err(from))?;
        let target = to.join(entry.file_name());
        if ft.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if ft.is_file() {
            std::fs::copy(entry.path(), &target).map_err(io_err(&target))?;
        }
    }
    Ok(())
}

impl Episode {
    /// Start an episode of `task` in `dir` (created if needed). An existing episode in `dir` is replaced; any other
    /// non-empty folder is refused.
    pub fn reset(task: TaskSpec, dir: &Path, config: EpisodeConfig) -> Result<Episode, EpisodeError> {
        if dir.exists() {
            let is_episode = dir.join("episode.json").is_file();
            let empty = std::fs::read_dir(dir).map_err(io_err(dir))?.next().is_none();
            if !is_episode && !empty {
                return Err(EpisodeError::NotEmpty(dir.to_path_buf()));
            }
            for name in ["work", "backups"] {
                let p = dir.join(name);
                if p.exists() {
                    make_writable(&p);
                    std::fs::remove_dir_all(&p).map_err(io_err(&p))?;
                }
            }
            for name in ["trace.jsonl", "episode.json"] {
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
        let work = dir.join("work");
        copy_tree(&task.public_dir(), &work)?;
        let description = task.description_text()?;
        let ws = Workspace::open(dir, &task.read_only)?;
        protect(&ws, ws.work());
        std::fs::write(ws.root().join("trace.jsonl"), b"").map_err(io_err(dir))?;
        let saved = Saved {
            task_dir: task.root.clone(),
            task: task.name.clone(),
            progress: Progress { m_t: task.m_init, pending_edit: false, last_submission: None },
            config,
            step: 0,
            done: false,
            recent: Vec::new(),
        };
        let ep = Episode::assemble(task, description, ws, saved)?;
        ep.save()?;
        Ok(ep)
    }

    /// Continue the episode saved in `dir`.
    pub fn open(dir: &Path) -> Result<Episode, EpisodeError> {
        let path = dir.join("episode.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| EpisodeError::NotAnEpisode { path: path.clone(), message: e.to_string() })?;
        let saved: Saved = serde_json::from_str(&text)
            .map_err(|e| EpisodeError::NotAnEpisode { path: path.clone(), message: e.to_string() })?;
        let task = TaskSpec::load(&saved.task_dir)?;
        let description = task.description_text()?;
        let ws = Workspace::open(dir, &task.read_only)?;
        Episode::assemble(task, description, ws, saved)
    }

    fn assemble(task: TaskSpec, description: String, ws: Workspace, saved: Saved) -> Result<Episode, EpisodeError> {
        let c = &saved.config;
        let limits = Limits {
            wall: Duration::from_secs(c.exec_timeout_secs.unwrap_or(task.time_limit_secs).max(1)),
            memory_mb: Some(task.memory_mb),
            file_size_mb: Some(c.file_size_mb),
            cpus: Some(c.cpus.max(1)),
            output_chars: c.output_chars,
        };
        let sandbox =
            SandboxConfig { env: SandboxConfig::scrubbed_env(ws.work(), c.cpus), limits, namespaces: c.namespaces };
        let helper: Option<Box<dyn Helper>> = match &c.helper {
            Some(h) => Some(Box::new(OpenAiHelper::new(&h.url, &h.model, h.api_key_env.as_deref())?)),
            None => None,
        };
        Ok(Episode { task, description, ws, sandbox, helper, saved })
    }

    /// Use another helper LLM (e.g. a local model supplied by the trainers) for this process.
    pub fn set_helper(&mut self, helper: Box<dyn Helper>) {
        self.helper = Some(helper);
    }

    fn save(&self) -> Result<(), EpisodeError> {
        let path = self.ws.root().join("episode.json");
        let tmp = self.ws.root().join("episode.json.tmp");
        let text = serde_json::to_string_pretty(&self.saved).expect("Saved serializes");
        std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// The task.
    pub fn task(&self) -> &TaskSpec {
        &self.task
    }

    /// The episode folder.
    pub fn workspace(&self) -> &Workspace {
        &self.ws
    }

    /// m_t.
    pub fn metric(&self) -> f64 {
        self.saved.progress.m_t
    }

    /// Whether the episode has ended.
    pub fn done(&self) -> bool {
        self.saved.done
    }

    /// The index of the next step.
    pub fn step_index(&self) -> usize {
        self.saved.step
    }

    /// The trace file.
    pub fn trace_path(&self) -> PathBuf {
        self.ws.root().join("trace.jsonl")
    }

    /// The state the policy sees now.
    pub fn state(&self) -> State {
        State {
            task: self.task.name.clone(),
            description: self.description.clone(),
            metric: self.task.metric,
            direction: self.task.direction(),
            step: self.saved.step,
            history: self.saved.recent.clone(),
        }
    }

    /// The prompt for the next step.
    pub fn observation(&self) -> String {
        self.state().render()
    }

    /// Parse and execute one raw response; append it to the trace.
    pub fn step(&mut self, response: &str) -> Result<StepOutcome, EpisodeError> {
        if self.saved.done {
            return Err(EpisodeError::Done(self.ws.root().to_path_buf()));
        }
        let t0 = Instant::now();
        let parsed = parse::parse(response);
        let parse_ms = t0.elapsed().as_secs_f64() * 1e3;
        let m_prev = self.saved.progress.m_t;
        let t1 = Instant::now();
        let (action, valid, outcome) = match parsed {
            Err(e) => (None, false, Outcome::invalid(format!("Invalid response: {e}"))),
            Ok((def, pa)) => {
                let mut ctx = Ctx {
                    ws: &self.ws,
                    task: &self.task,
                    sandbox: &self.sandbox,
                    helper: self.helper.as_deref(),
                    progress: &mut self.saved.progress,
                };
                match (def.run)(&mut ctx, pa.input.clone()) {
                    Ok(o) => (Some(pa), true, o),
                    Err(RunError::Arguments(m)) => (
                        Some(pa),
                        false,
                        Outcome::invalid(format!("Invalid response: bad Action Input for {}: {m}. Usage:\n{}", def.name, def.usage())),
                    ),
                    Err(RunError::Action(e)) => (Some(pa), true, Outcome::error(format!("Error: {e}"))),
                }
            }
        };
        let action_ms = t1.elapsed().as_secs_f64() * 1e3 - outcome.grade_ms;
        let r = reward(outcome.kind, m_prev, outcome.metric, &self.task.reward_scale());
        if let Some(m) = outcome.metric {
            self.saved.progress.m_t = m;
        }
        let mut snapshots = std::collections::BTreeMap::new();
        for p in &outcome.changed {
            let content = std::fs::read(p).ok().map(|b| String::from_utf8_lossy(&b).into_owned());
            snapshots.insert(self.ws.relative(p), content);
        }
        let index = self.saved.step;
        self.saved.step += 1;
        let out_of_steps = self.saved.config.max_steps.is_some_and(|m| self.saved.step >= m);
        let done = outcome.done || out_of_steps;
        self.saved.done = done;
        let mut step = Step {
            task: self.task.name.clone(),
            index,
            response: response.to_string(),
            action: action.clone(),
            valid,
            kind: outcome.kind,
            observation: outcome.observation.clone(),
            reward: r,
            metric_before: m_prev,
            metric: outcome.metric,
            done,
            durations: Durations { parse_ms, action_ms, grade_ms: outcome.grade_ms, total_ms: 0.0 },
            snapshots,
        };
        self.saved.recent.push(Exchange { index, response: response.to_string(), observation: outcome.observation.clone() });
        let keep = self.saved.config.history;
        if self.saved.recent.len() > keep {
            self.saved.recent.drain(..self.saved.recent.len() - keep);
        }
        step.durations.total_ms = t0.elapsed().as_secs_f64() * 1e3;
        trace::append(&self.trace_path(), &step)?;
        self.save()?;
        Ok(StepOutcome {
            action: action.map(|a| a.name),
            valid,
            kind: outcome.kind,
            observation: outcome.observation,
            reward: r,
            done,
            metric: outcome.metric,
        })
    }

    /// Recreate the state before step `k` of `steps` (a trace of `task`) as a new episode in `dir`: the public files,
    /// then every file snapshot of steps `0..k` in order (with the undo stacks they imply), m_t, the pending-edit flag and
    /// the recent history. The trace of the new episode starts with those `k` steps.
    pub fn restore(task: TaskSpec, steps: &[Step], k: usize, dir: &Path, config: EpisodeConfig) -> Result<Episode, EpisodeError> {
        if k > steps.len() {
            return Err(EpisodeError::StepOutOfRange { step: k, len: steps.len(), ended: "" });
        }
        if steps[..k].iter().any(|s| s.done) {
            return Err(EpisodeError::StepOutOfRange { step: k, len: steps.len(), ended: " and ended before that step" });
        }
        let mut ep = Episode::reset(task, dir, config)?;
        for s in &steps[..k] {
            let name = s.action.as_ref().map(|a| a.name.as_str()).unwrap_or("");
            for (rel, content) in &s.snapshots {
                let path = ep.ws.work().join(rel);
                match name {
                    "Undo Edit Script" => edit::pop_backup(&ep.ws, &path),
                    "Write File" | "Copy File" | "Edit Script (AI)" => {
                        edit::push_backup(&ep.ws, &path).map_err(|e| EpisodeError::Io {
                            path: path.clone(),
                            source: std::io::Error::other(e.to_string()),
                        })?;
                    }
                    _ => {}
                }
                match content {
                    Some(text) => {
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
                        }
                        std::fs::write(&path, text).map_err(io_err(&path))?;
                    }
                    None => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            let p = &mut ep.saved.progress;
            if let Some(m) = s.metric {
                p.m_t = m;
                if s.kind != ActionKind::Final {
                    p.pending_edit = false;
                    let sub = ep.ws.work().join(&ep.task.submission);
                    p.last_submission = std::fs::read(&sub).ok().map(|b| {
                        use std::hash::{Hash, Hasher};
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        b.hash(&mut h);
                        h.finish()
                    });
                }
            } else if s.kind == ActionKind::Edit {
                p.pending_edit = true;
            }
            trace::append(&ep.trace_path(), s)?;
        }
        let keep = ep.saved.config.history;
        ep.saved.recent = steps[k.saturating_sub(keep)..k]
            .iter()
            .map(|s| Exchange { index: s.index, response: s.response.clone(), observation: s.observation.clone() })
            .collect();
        ep.saved.step = k;
        ep.save()?;
        Ok(ep)
    }
}

impl Outcome {
    fn invalid(observation: String) -> Outcome {
        Outcome { observation, kind: ActionKind::Invalid, metric: None, changed: Vec::new(), done: false, grade_ms: 0.0 }
    }

    fn error(observation: String) -> Outcome {
        Outcome { observation, kind: ActionKind::Error, metric: None, changed: Vec::new(), done: false, grade_ms: 0.0 }
    }
}

/// Make read-only data files read-only on disk too (actions refuse them regardless).
fn protect(ws: &Workspace, dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            protect(ws, &p);
        } else if ws.is_read_only(&p) {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444));
        }
    }
}

/// Undo [`protect`] before removing a folder.
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            make_writable(&p);
        } else {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644));
        }
    }
}

#[cfg(test)]
mod tests;
