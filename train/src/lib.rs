//! Trainers and the model-backed policy for mlagent: the tokenizer corpus for the embedded
//! default model today; SFT (issue "SFT trainer") and step-wise PPO (issue "Step-wise PPO") build
//! here on the engine, the kernels and the agent crate.
