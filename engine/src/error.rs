//! The engine's error type: every variant names the file, tensor or value at fault.

use std::path::PathBuf;

/// What can go wrong while loading, running or saving a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file (config, tokenizer config, index) is malformed or misses a field.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The model config asks for something this engine does not implement.
    #[error("{path}: unsupported setting: {message}")]
    Unsupported {
        /// The config file.
        path: PathBuf,
        /// The setting and why it is refused.
        message: String,
    },
    /// A safetensors file is truncated, corrupt or holds a tensor of the wrong shape or dtype.
    #[error("{path}: {message}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// The tensor and the problem.
        message: String,
    },
    /// A tokenizer file is missing or malformed, or the tokenizer failed on an input.
    #[error("{path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The chat template is missing or failed to render.
    #[error("chat template ({path}): {message}")]
    Template {
        /// The file the template comes from.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An input value is out of range (a token id ≥ vocab, an empty prompt, a bad sampling parameter).
    #[error("invalid input: {0}")]
    Input(String),
}

impl EngineError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Result with [`EngineError`].
pub type Result<T> = std::result::Result<T, EngineError>;
