//! Attention and loss ops for mlagent.
//!
//! Every op has a plain-burn reference implementation here: it is the readable specification, the
//! CPU path, and what the CubeCL kernels are tested against. The engine calls [`attention::attention`]
//! for every attention in the model, so a fused kernel replaces the reference in one place.
//! Fused ops go through [`KernelBackend`]: CubeCL kernels on `CubeBackend` (CUDA, WGPU), recorded
//! custom ops under `Fusion`, custom backward under `Autodiff`, a fused host implementation on the
//! CPU backend (burn-flex, f32), the reference everywhere else.
//!
//! Letters used in shape comments: B batch, H query heads, K key/value heads, G = H / K query heads
//! per KV head, Tq query tokens, Tk key tokens, D head dim, N tokens of a loss, V vocabulary.

mod adapter;
pub mod attention;
pub mod attention_ops;
mod autodiff;
pub mod backward_from;
pub mod check;
pub mod cpu_attention;
#[cfg(test)]
mod cuda_source_tests;
pub mod cube;
pub mod device_memory;
mod fusion;
pub mod ops;
pub mod ppo;
#[cfg(test)]
mod wgpu_tests;

pub use adapter::{gpu_adapter_present, wgpu_adapter_present};
pub use attention::{AttentionMask, attention};
pub use backward_from::{BackwardFrom, BackwardFromError, backward_from};
pub use attention_ops::{FlashParams, flash_attention, flash_attention_with_lse};
pub use ops::KernelBackend;
pub use ppo::{Aggregation, KlEstimator, KlPenalty, PpoBatch, PpoConfig, PpoMetrics, PpoTokenParams, logprobs, ppo_loss};
