//! Trainers and the model-backed policy for mlagent: the tokenizer corpus of the embedded default
//! model and SFT (stage 1 of ML-Agent). Step-wise PPO (its own issue) builds here too, on the
//! engine, the kernels and the agent crate.

pub mod actor;
pub mod corpus;
pub mod episodes;
pub mod eval;
pub mod error;
pub mod local_helper;
pub mod plot;
pub mod rl;
pub mod sft;

pub use error::{Result, TrainError};
