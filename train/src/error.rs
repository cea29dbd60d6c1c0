//! The trainers' error type.

use std::path::PathBuf;

/// What can go wrong while preparing data or training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A dataset line is malformed.
    #[error("{path}:{line}: {message}")]
    Data {
        /// The dataset file.
        path: PathBuf,
        /// 1-based line (0 = the file as a whole).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The chat template cannot be used for label placement.
    #[error("chat template: {0}")]
    Template(String),
    /// A checkpoint is missing a file or does not match the run.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The environment failed (a task, an episode folder, a trace), not an action.
    #[error("environment: {0}")]
    Env(String),
    /// A chart could not be drawn or saved (the message names the output file).
    #[error("plot: {0}")]
    Plot(String),
    /// The engine failed (model, tokenizer, template).
    #[error(transparent)]
    Engine(#[from] mlagent_engine::EngineError),
}

impl TrainError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Result with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;
