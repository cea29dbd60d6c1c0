//! Trainers and the model-backed agent for mlagent, on the engine, the kernels and the agent crate:
//! SFT (stage 1 of ML-Agent), step-wise PPO and its episode-wise baseline (stage 2), evaluation,
//! PNG curves, the local helper LLM and the tokenizer corpus of the embedded default model.

pub mod actor;
pub mod corpus;
pub mod embed;
pub mod episodes;
pub mod eval;
pub mod error;
pub mod local_helper;
pub mod plot;
pub mod rl;
pub mod sft;
pub mod state_eval;

pub use error::{Result, TrainError};
