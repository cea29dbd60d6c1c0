//! The mlagent engine: a Qwen2 / Qwen2.5 transformer on burn that loads HF checkpoints and computes
//! what HF transformers computes, with a KV cache, batched sampling, a tokenizer with chat
//! templates, a value head for PPO, and HF-format saving.
//!
//! Shape letters used throughout: B batch, T tokens, S cached + new keys, E hidden, H query heads,
//! K key/value heads, D head dim, F intermediate, V vocab.

pub mod cache;
pub mod chat_template;
pub mod config;
pub mod device;
pub mod error;
pub mod generate;
pub mod io;
pub mod model;
pub mod preset;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use cache::KvCache;
pub use chat_template::{ChatMessage, ChatTemplate};
pub use config::{Qwen2Config, StorageDType};
pub use device::{AutodiffTask, BackendTask, DeviceKind};
pub use error::{EngineError, Result};
pub use generate::{FinishReason, GenerateOptions, Generation, generate, left_padded_input};
pub use model::{ForwardInput, Qwen2};
pub use sampling::SamplingParams;
pub use tokenizer::TextTokenizer;
