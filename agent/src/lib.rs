//! The ML-Agent environment: everything an agent needs to act on a machine-learning task, and no model code.
//!
//! ML-Agent (arXiv 2505.23723) trains an LLM agent by letting it act in an MLAgentBench-style environment
//! (Huang et al., arXiv 2310.03302): the agent reads files, edits a training script, runs it, and is rewarded by how much
//! the task's metric moves (the paper's eq. 6). This crate provides, from the bottom up:
//!
//! - [`task`]: the task format (`task.toml` + `public/` + `private/`), loading, and the MLE-bench adapter;
//! - [`suite`]: the built-in offline suite of 19 miniature Kaggle tasks, generated deterministically from a seed;
//! - [`grade`]: Kaggle/MLE-bench graders (accuracy, auc, logloss, …) over CSV files matched by id;
//! - [`sandbox`]: one child process per script run, with a wall-clock timeout that kills the whole tree, rlimits, a
//!   scrubbed environment and no network;
//! - [`workspace`]: path resolution that keeps every action inside `work/`;
//! - [`actions`]: the MLAgentBench actions, each a type, listed once in [`actions::ACTIONS`];
//! - [`parse`]: tolerant parsing of `Thought / Action / Action Input` responses;
//! - [`reward`]: eq. 6 as one pure function;
//! - [`episode`]: reset / step / restore, traces with file snapshots;
//! - [`prompt`]: the one [`prompt::State`] rendering used by collection, SFT, RL and evaluation;
//! - [`ideas`]: per-task idea pools (≥ 100 concrete ideas, each compiled to a real `train.py`);
//! - [`embed`]: embedders (offline TF-IDF, OpenAI-compatible), cosine distance, farthest-point selection;
//! - [`policy`]: the [`policy::Policy`] trait every actor implements;
//! - [`expert`]: the scripted expert and the LLM expert;
//! - [`collect`]: parallel expert collection into trajectories, SFT samples and a report.

pub mod actions;
pub mod bench;
pub mod collect;
pub mod csvio;
pub mod embed;
pub mod episode;
pub mod expert;
pub mod grade;
pub mod helper;
pub mod http;
pub mod ideas;
pub mod metric;
pub mod parse;
pub mod policy;
pub mod prompt;
pub mod prompt_fit;
pub mod reward;
pub mod rng;
pub mod sandbox;
pub mod suite;
pub mod task;
pub mod trace;
pub mod workspace;

pub use episode::{Episode, EpisodeConfig, StepOutcome};
pub use metric::{Direction, Metric};
pub use policy::{Policy, Prompt};
pub use prompt::State;
pub use reward::{ActionKind, reward};
pub use task::TaskSpec;
pub use trace::{Step, Trajectory};
