//! Steps, trajectories and the JSONL trace of an episode.
//!
//! Each step of an episode appends one JSON line to `DIR/trace.jsonl`: the raw response, the parsed action, the
//! observation, the kind and reward of eq. 6, the metric, durations, and a snapshot of every file in `work/` the step
//! changed (scripts written, the submission a run produced). Replaying the snapshots of steps `0..k` onto a fresh copy
//! of the task's public files recreates the state before step `k` (see [`crate::Episode::restore`]).

use crate::reward::ActionKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The action a response was parsed into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParsedAction {
    /// Canonical action name, e.g. "Execute Script".
    pub name: String,
    /// The JSON arguments as given.
    pub input: serde_json::Value,
}

/// Wall-clock durations of a step, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Durations {
    /// Parsing the response.
    pub parse_ms: f64,
    /// Running the action (including a script run).
    pub action_ms: f64,
    /// Grading the submission, when a run or Final Answer produced one.
    pub grade_ms: f64,
    /// The whole step, including the trace write.
    pub total_ms: f64,
}

/// One step of an episode: what the policy said and what the environment did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The task's name.
    pub task: String,
    /// 0-based index in the episode.
    pub index: usize,
    /// The raw model response.
    pub response: String,
    /// The parsed action, `None` when the response was invalid before an action was recognised.
    pub action: Option<ParsedAction>,
    /// Whether the response parsed into a known action with the right argument keys.
    pub valid: bool,
    /// The case of eq. 6.
    pub kind: ActionKind,
    /// What the environment answered.
    pub observation: String,
    /// The reward of eq. 6.
    pub reward: f64,
    /// m_t before the step.
    pub metric_before: f64,
    /// The metric this step measured, if it scored a submission.
    pub metric: Option<f64>,
    /// Whether the episode ended with this step.
    pub done: bool,
    /// Timings.
    pub durations: Durations,
    /// Files in `work/` this step changed: path relative to `work/` → new content (`None` when removed).
    #[serde(default)]
    pub snapshots: BTreeMap<String, Option<String>>,
}

/// A whole episode, as one JSONL line of a trajectories file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// The task's name.
    pub task: String,
    /// The ideas the expert was given, if any.
    #[serde(default)]
    pub ideas: Vec<String>,
    /// Every step.
    pub steps: Vec<Step>,
}

/// Reading or writing a trace failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not a step.
    #[error("{path}: line {line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The JSON error.
        message: String,
    },
}

/// Append one step to a JSONL trace.
pub fn append(path: &Path, step: &Step) -> Result<(), TraceError> {
    let io = |source| TraceError::Io { path: path.to_path_buf(), source };
    let mut line = serde_json::to_string(step).expect("Step serializes");
    line.push('\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
    f.write_all(line.as_bytes()).map_err(io)
}

/// Read every step of a JSONL trace (blank lines are skipped).
pub fn read(path: &Path) -> Result<Vec<Step>, TraceError> {
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io { path: path.to_path_buf(), source })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| TraceError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_through_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        let mut s = Step {
            task: "t".into(),
            index: 0,
            response: "Action: List Files".into(),
            action: Some(ParsedAction { name: "List Files".into(), input: serde_json::json!({"dir_path": "."}) }),
            valid: true,
            kind: ActionKind::NonEdit,
            observation: "train.py".into(),
            reward: 0.5,
            metric_before: 0.1,
            metric: None,
            done: false,
            durations: Durations::default(),
            snapshots: BTreeMap::new(),
        };
        append(&p, &s).unwrap();
        s.index = 1;
        s.snapshots.insert("train.py".into(), Some("print(2)".into()));
        append(&p, &s).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1], s);
        std::fs::write(&p, "{\"bad\": 1}\n").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("line 1"));
    }
}
