//! Attention and loss ops for mlagent.
//!
//! Every op has a plain-burn reference implementation here: it is the readable specification, the
//! CPU path, and what the CubeCL kernels are tested against. The engine calls [`attention::attention`]
//! for every attention in the model, so a fused kernel replaces the reference in one place.
//!
//! Letters used in shape comments: B batch, H query heads, K key/value heads, G = H / K query heads
//! per KV head, Tq query tokens, Tk key tokens, D head dim.

pub mod attention;

pub use attention::{AttentionMask, attention};
