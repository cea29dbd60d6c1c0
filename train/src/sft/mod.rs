//! Stage 1 of ML-Agent: supervised fine-tuning on expert trajectories, loss on the actions only.

pub mod data;
pub mod loss;
pub mod schedule;
pub mod trainer;
pub mod validate;

pub use data::{Sample, fit_messages, fit_user_text, prompt_keep, read_conversations, tokenize, truncate};
pub use trainer::{SftConfig, SftRun, StepMetrics};
pub use validate::{Validation, validate};
