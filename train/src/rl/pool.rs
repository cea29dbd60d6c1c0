//! The states pool of step-wise RL (ML-Agent §3.2): every state an expert trajectory passed
//! through, each restorable as a live episode by replaying the trajectory's file snapshots.

use crate::error::{Result, TrainError};
use mlagent_agent::episode::{Episode, EpisodeConfig};
use mlagent_agent::task::Split;
use mlagent_agent::{State, TaskSpec, Trajectory, suite};
use std::collections::BTreeMap;
use std::path::Path;

/// Expert trajectories and the states before each of their steps.
pub struct StatesPool {
    tasks: BTreeMap<String, (TaskSpec, String)>,
    trajectories: Vec<Trajectory>,
    /// `(trajectory, k)`: the state before step `k`.
    states: Vec<(usize, usize)>,
}

impl StatesPool {
    /// Reads `trajectories.jsonl` (from `mlagent collect`), resolving task names in the built-in
    /// suite generated with `suite_seed`. Held-out tasks are refused: RL never trains on them.
    pub fn from_jsonl(path: &Path, suite_seed: u64) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let mut trajectories = Vec::new();
        let mut tasks = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |m: String| TrainError::Data { path: path.into(), line: n + 1, message: m };
            let t: Trajectory = serde_json::from_str(line).map_err(|e| bad(format!("not a trajectory: {e}")))?;
            if !tasks.contains_key(&t.task) {
                let spec = suite::resolve(&t.task, suite_seed).map_err(|e| bad(format!("task {}: {e}", t.task)))?;
                if spec.split == Split::HeldOut {
                    return Err(bad(format!("task {} is held out; the RL states pool takes training tasks only", t.task)));
                }
                let description = spec.description_text().map_err(|e| bad(e.to_string()))?;
                tasks.insert(t.task.clone(), (spec, description));
            }
            trajectories.push(t);
        }
        Ok(Self::new(tasks, trajectories))
    }

    fn new(tasks: BTreeMap<String, (TaskSpec, String)>, trajectories: Vec<Trajectory>) -> Self {
        let mut states = Vec::new();
        for (i, t) in trajectories.iter().enumerate() {
            for k in 0..t.steps.len() {
                // A state after the episode ended is not a state.
                if t.steps[..k].iter().any(|s| s.done) {
                    break;
                }
                states.push((i, k));
            }
        }
        Self { tasks, trajectories, states }
    }

    /// Number of states.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// True when the pool has no state.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Tasks in the pool (sorted).
    pub fn task_names(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }

    /// A task of the pool.
    pub fn task(&self, name: &str) -> Option<&TaskSpec> {
        self.tasks.get(name).map(|(t, _)| t)
    }

    /// The task name of state `i`.
    pub fn task_of(&self, i: usize) -> &str {
        &self.trajectories[self.states[i].0].task
    }

    /// The state `i` as the policy sees it (rendered by the same function as collection).
    pub fn state(&self, i: usize, config: &EpisodeConfig) -> State {
        let (t, k) = self.states[i];
        let traj = &self.trajectories[t];
        let (task, description) = &self.tasks[&traj.task];
        State::from_steps(&task.name, description, task.metric, task.direction(), &traj.steps[..k], config.history)
    }

    /// A live episode in `dir` restored to state `i`.
    pub fn restore(&self, i: usize, dir: &Path, config: &EpisodeConfig) -> Result<Episode> {
        let (t, k) = self.states[i];
        let traj = &self.trajectories[t];
        let (task, _) = &self.tasks[&traj.task];
        Episode::restore(task.clone(), &traj.steps, k, dir, config.clone()).map_err(|e| TrainError::Env(format!("restoring {} step {k}: {e}", traj.task)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_and_malformed_lines_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("t.jsonl");
        std::fs::write(&p, "{\"task\": \"leaf-classification\", \"steps\": []}\n").unwrap();
        let e = StatesPool::from_jsonl(&p, suite::DEFAULT_SEED).err().unwrap().to_string();
        assert!(e.contains(":1:") && e.contains("held out"), "{e}");
        std::fs::write(&p, "\n{not json\n").unwrap();
        let e = StatesPool::from_jsonl(&p, suite::DEFAULT_SEED).err().unwrap().to_string();
        assert!(e.contains(":2:") && e.contains("not a trajectory"), "{e}");
    }
}
