//! The MLAgentBench actions (Huang et al., arXiv 2310.03302, `low_level_actions.py` / `high_level_actions.py`), each a
//! type with a serde argument struct (`deny_unknown_fields`) and a `run` taking the environment context explicitly.
//!
//! [`ACTIONS`] is the single list: it renders the prompt's tool section ([`tools_prompt`]) and drives parsing
//! ([`crate::parse`]), so an action cannot be described one way and parsed another.

pub(crate) mod edit;
mod files;
mod run;

use crate::helper::{Helper, HelperError};
use crate::reward::ActionKind;
use crate::sandbox::{Limits, SandboxError};
use crate::task::TaskSpec;
use crate::workspace::{PathError, Workspace};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How Execute Script runs: limits, namespaces and the complete environment of the child.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Time, memory, file-size, CPU and output limits.
    pub limits: Limits,
    /// Try PID and network namespaces.
    pub namespaces: bool,
    /// The child's whole environment (nothing is inherited).
    pub env: Vec<(String, String)>,
}

impl SandboxConfig {
    /// A scrubbed environment: a fixed `PATH`, UTF-8 locale, unbuffered Python, thread counts pinned to the CPU limit,
    /// and `HOME`/`TMPDIR` inside the work folder. No variable of the parent (tokens, keys) reaches the script.
    pub fn scrubbed_env(work: &std::path::Path, cpus: usize) -> Vec<(String, String)> {
        let w = work.display().to_string();
        let n = cpus.max(1).to_string();
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ("HOME".into(), w.clone()),
            ("TMPDIR".into(), w),
            ("LANG".into(), "C.UTF-8".into()),
            ("LC_ALL".into(), "C.UTF-8".into()),
            ("PYTHONUNBUFFERED".into(), "1".into()),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
            ("PYTHONHASHSEED".into(), "0".into()),
            ("MPLBACKEND".into(), "Agg".into()),
        ];
        for var in ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"] {
            env.push((var.into(), n.clone()));
        }
        env
    }
}

/// The episode's progress that actions read and update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// m_t: the last scored metric, `m_init` before the first scored run.
    pub m_t: f64,
    /// A file was edited since the last scored run.
    pub pending_edit: bool,
    /// Hash of the last graded `submission.csv`, to tell a new submission from a stale one.
    pub last_submission: Option<u64>,
}

/// Everything an action may touch, passed explicitly.
pub struct Ctx<'a> {
    /// The episode folder and path rules.
    pub ws: &'a Workspace,
    /// The task.
    pub task: &'a TaskSpec,
    /// How scripts run.
    pub sandbox: &'a SandboxConfig,
    /// The helper LLM for Understand File and Edit Script (AI), when configured.
    pub helper: Option<&'a dyn Helper>,
    /// Progress, updated by runs and edits.
    pub progress: &'a mut Progress,
}

/// What an action did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The text the agent sees.
    pub observation: String,
    /// The case of eq. 6.
    pub kind: ActionKind,
    /// The metric measured by this action (a scored run, or Final Answer).
    pub metric: Option<f64>,
    /// Files in `work/` this action changed.
    pub changed: Vec<PathBuf>,
    /// The episode ends.
    pub done: bool,
    /// Time spent grading, in milliseconds.
    pub grade_ms: f64,
}

impl Outcome {
    fn new(observation: String, kind: ActionKind) -> Self {
        Outcome { observation, kind, metric: None, changed: Vec::new(), done: false, grade_ms: 0.0 }
    }
}

/// A valid action that failed; the message is shown to the agent and the step is of kind [`ActionKind::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// A path argument was refused or not found.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A file could not be read or written.
    #[error("`{path}`: {source}")]
    Io {
        /// The argument.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An argument has a value the action cannot use (e.g. a line range over 100 lines).
    #[error("{0}")]
    BadArgument(String),
    /// Edit Script (AI) without a configured helper LLM on a task the offline editor does not know.
    #[error(
        "no editor is configured for Edit Script (AI) on this task (the offline editor knows only the built-in \
         training tasks); use Write File with the complete new content instead (or start the environment with a \
         helper LLM endpoint)"
    )]
    NoEditor,
    /// The helper LLM failed.
    #[error("the helper LLM failed: {0}")]
    Helper(#[from] HelperError),
    /// The script could not be started.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// Undo with nothing to undo.
    #[error("there is no change to undo for `{0}`")]
    NothingToUndo(String),
}

/// One action: its name, what it does, its arguments, and how to run it.
pub struct ActionDef {
    /// The exact MLAgentBench name.
    pub name: &'static str,
    /// One-sentence description for the prompt.
    pub description: &'static str,
    /// Argument keys, in order, with the placeholder shown in the usage.
    pub args: &'static [(&'static str, &'static str)],
    /// What the observation will contain.
    pub observation: &'static str,
    /// Deserialize the arguments and run.
    pub run: fn(&mut Ctx<'_>, serde_json::Value) -> Result<Outcome, RunError>,
}

/// Running a parsed action failed either on its arguments (invalid response) or in execution (error observation).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The arguments did not deserialize (wrong type, unknown or missing key).
    #[error("{0}")]
    Arguments(String),
    /// The action failed.
    #[error(transparent)]
    Action(#[from] ActionError),
}

/// Deserialize `value` into `A` and run `f`; used by every [`ActionDef::run`].
fn dispatch<A: DeserializeOwned>(
    ctx: &mut Ctx<'_>,
    value: serde_json::Value,
    f: fn(&mut Ctx<'_>, A) -> Result<Outcome, ActionError>,
) -> Result<Outcome, RunError> {
    let args: A = serde_json::from_value(value).map_err(|e| RunError::Arguments(e.to_string()))?;
    Ok(f(ctx, args)?)
}

/// Every action, in the order of the prompt (MLAgentBench's order, then Write File).
pub static ACTIONS: [&ActionDef; 9] = [
    &files::LIST_FILES,
    &files::COPY_FILE,
    &edit::UNDO_EDIT_SCRIPT,
    &run::EXECUTE_SCRIPT,
    &run::FINAL_ANSWER,
    &files::UNDERSTAND_FILE,
    &files::INSPECT_SCRIPT_LINES,
    &edit::EDIT_SCRIPT_AI,
    &edit::WRITE_FILE,
];

impl ActionDef {
    /// The usage block shown in the prompt and in the observation of an invalid response.
    pub fn usage(&self) -> String {
        let fields: Vec<String> = self.args.iter().map(|(k, v)| format!("    \"{k}\": {v}")).collect();
        format!(
            "Action: {}\nAction Input: {{\n{}\n}}\nObservation: {}",
            self.name,
            fields.join(",\n"),
            self.observation
        )
    }

    /// The argument keys.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.args.iter().map(|(k, _)| *k)
    }
}

impl std::fmt::Debug for ActionDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionDef").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Look an action up by name: case, spacing and surrounding punctuation are forgiven, nothing else.
pub fn find(name: &str) -> Option<&'static ActionDef> {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase();
    let wanted = norm(name.trim_matches(|c: char| c == '*' || c == '`' || c == '"' || c == '\'' || c == ':'));
    ACTIONS.iter().copied().find(|a| norm(a.name) == wanted)
}

/// The tool section of the prompt, rendered from [`ACTIONS`].
pub fn tools_prompt() -> String {
    ACTIONS
        .iter()
        .map(|a| format!("- {}:\n{}\nUsage:\n```\n{}\n```", a.name, a.description, a.usage()))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Accept a line number written as a JSON number or a numeric string.
fn lenient_usize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        U(usize),
        S(String),
    }
    match N::deserialize(d)? {
        N::U(n) => Ok(n),
        N::S(s) => s.trim().parse().map_err(|_| serde::de::Error::custom(format!("`{s}` is not a line number"))),
    }
}

#[cfg(test)]
mod tests;
