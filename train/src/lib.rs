//! Trainers and the model-backed policy for mlagent. Today: the tokenizer corpus of the embedded
//! default model. SFT and step-wise PPO (their own issues) build here on the engine, the kernels
//! and the agent crate.

pub mod corpus;
