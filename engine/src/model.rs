//! The Qwen2 decoder (Qwen2 / Qwen2.5 checkpoints), read bottom-up: rotary embedding, RMSNorm,
//! linear, SwiGLU MLP, attention, decoder layer, model, heads.
//!
//! Shapes: B batch, T new tokens, S = past + T keys, E hidden, H query heads, K key/value heads,
//! D head dim, F intermediate, V vocab. Module fields copy the HF checkpoint keys, and linear
//! weights keep HF's `[out, in]` layout, so loading and saving are a mechanical mapping.

use crate::cache::KvCache;
use burn::module::{Module, Param};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};
use mlagent_kernels::{AttentionMask, KernelBackend, attention};

/// Rotary position tables `cos`, `sin_rot`: `[P, D]` with each frequency repeated in both halves
/// (HF `rotate_half` layout: `emb = cat(freqs, freqs)`, RoFormer arXiv 2104.09864 eq. 34).
/// `sin_rot` carries `rotate_half`'s sign: its first half is `−sin` (see [`apply_rope`]).
#[derive(Module, Debug)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 2>,
    sin_rot: Tensor<B, 2>,
}

/// One forward's rotary tables, materialised in the projections' own layout `[B, T, heads, D]` for
/// the query heads and for the key heads, so that the rotation multiplies contiguous tensors of equal
/// shape (the CPU backends' vectorised path; a broadcast over heads of a transposed tensor walked
/// element by element and took about half of a tiny-model prefill). Built once, used by every layer.
#[derive(Debug, Clone)]
pub struct RopeTables<B: Backend> {
    /// `(cos, sin_rot)` for the query heads, `[B, T, H, D]`.
    pub q: (Tensor<B, 4>, Tensor<B, 4>),
    /// `(cos, sin_rot)` for the key heads, `[B, T, K, D]`.
    pub k: (Tensor<B, 4>, Tensor<B, 4>),
}

impl<B: Backend> Rope<B> {
    /// Tables for positions `0..max_positions`: `inv_freq_i = θ^(−2i/D)`, angle = position · inv_freq.
    pub fn new(head_dim: usize, theta: f64, max_positions: usize, dtype: FloatDType, device: &B::Device) -> Self {
        let half = head_dim / 2;
        // HF computes inv_freq in f32, then position · inv_freq in f32: reproduce that rounding.
        let inv: Vec<f32> = (0..half).map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32).collect();
        let mut cos = Vec::with_capacity(max_positions * head_dim);
        let mut sin_rot = Vec::with_capacity(max_positions * head_dim);
        for p in 0..max_positions {
            for sign in [-1.0, 1.0] {
                for f in &inv {
                    let angle = (p as f32 * f) as f64;
                    cos.push(angle.cos() as f32);
                    sin_rot.push(sign * angle.sin() as f32);
                }
            }
        }
        let shape = [max_positions, head_dim];
        Self {
            cos: crate::weights::to_device(cos, shape, dtype, device),
            sin_rot: crate::weights::to_device(sin_rot, shape, dtype, device),
        }
    }

    /// Longest position + 1 the tables cover.
    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// The tables for `positions` `[B, T]`, for `heads` query and `kv_heads` key heads.
    pub fn tables(&self, positions: &Tensor<B, 2, Int>, heads: usize, kv_heads: usize) -> RopeTables<B> {
        let [b, t] = positions.dims();
        let d = self.cos.dims()[1];
        let flat = positions.clone().reshape([b * t]);
        let cos = self.cos.clone().select(0, flat.clone()).reshape([b, t, 1, d]);
        let sin = self.sin_rot.clone().select(0, flat).reshape([b, t, 1, d]);
        let per = |n: usize| (cos.clone().repeat_dim(2, n), sin.clone().repeat_dim(2, n));
        RopeTables { q: per(heads), k: per(kv_heads) }
    }
}

/// `x·cos + rotate_half(x)·sin` (RoFormer eq. 34 in HF's layout), with `rotate_half([x1, x2]) =
/// [−x2, x1]` over the last axis, computed as `x·cos + [x2, x1]·sin_rot` where `sin_rot = [−sin,
/// sin]` holds the sign (exactly the same products).
///
/// # Shapes
/// `x`, `cos`, `sin_rot`: `[B, T, heads, D]`.
pub fn apply_rope<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin_rot: &Tensor<B, 4>) -> Tensor<B, 4> {
    let d = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.clone().narrow(3, d / 2, d / 2);
    x * cos.clone() + Tensor::cat(vec![x2, x1], 3) * sin_rot.clone()
}

/// RMSNorm (Zhang & Sennrich 2019): `w · x / sqrt(mean(x²) + ε)`, computed in f32 and cast back
/// before the weight multiply, as HF `Qwen2RMSNorm` does.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `[E]`
    pub weight: Param<Tensor<B, 1>>,
    /// ε
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// # Shapes
    /// `x`: `[B, T, E]` → `[B, T, E]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let dtype = x.dtype();
        let x32 = x.cast(FloatDType::F32);
        let var = x32.clone().powi_scalar(2).mean_dim(2); // [B, T, 1]
        let normed = (x32 * var.add_scalar(self.eps).sqrt().recip()).cast(dtype);
        normed * self.weight.val().unsqueeze::<3>()
    }
}

/// A linear map with HF's `[out, in]` weight layout: `y = x·Wᵀ + b`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[out, in]`
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    /// # Shapes
    /// `x`: `[B, T, in]` → `[B, T, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, i] = x.dims();
        let w = self.weight.val();
        let o = w.dims()[0];
        let y = x.reshape([b * t, i]).matmul(w.transpose()); // [B·T, out]
        let y = match &self.bias {
            Some(bias) => y + bias.val().unsqueeze::<2>(),
            None => y,
        };
        y.reshape([b, t, o])
    }
}

/// SwiGLU feed-forward (Shazeer 2020): `down(silu(gate(x)) ∘ up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[F, E]`
    pub gate_proj: Linear<B>,
    /// `[F, E]`
    pub up_proj: Linear<B>,
    /// `[E, F]`
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// `[B, T, E]` → `[B, T, E]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down_proj.forward(silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x))
    }
}

/// Multi-head attention with grouped KV heads, bias on q/k/v and none on o.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// `[H·D, E]` + bias
    pub q_proj: Linear<B>,
    /// `[K·D, E]` + bias
    pub k_proj: Linear<B>,
    /// `[K·D, E]` + bias
    pub v_proj: Linear<B>,
    /// `[E, H·D]`
    pub o_proj: Linear<B>,
    /// H
    pub num_heads: usize,
    /// K
    pub num_kv_heads: usize,
    /// D
    pub head_dim: usize,
}

impl<B: KernelBackend> SelfAttention<B> {
    /// # Shapes
    /// `x`: `[B, T, E]`; `rope`: this forward's tables; returns `[B, T, E]`. With a cache, the
    /// new keys/values are appended to it and attention runs over all `S` cached keys.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        mask: &AttentionMask<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (h, k, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // RoPE in the projections' layout [B, T, heads, D], then heads first.
        let q = self.q_proj.forward(x.clone()).reshape([b, t, h, d]);
        let q = apply_rope(q, &rope.q.0, &rope.q.1).swap_dims(1, 2); // [B, H, T, D]
        let key = self.k_proj.forward(x.clone()).reshape([b, t, k, d]);
        let key = apply_rope(key, &rope.k.0, &rope.k.1).swap_dims(1, 2); // [B, K, T, D]
        let val = self.v_proj.forward(x).reshape([b, t, k, d]).swap_dims(1, 2); // [B, K, T, D]
        let (key, val) = match cache {
            Some((cache, layer)) => cache.append(layer, key, val), // [B, K, S, D]
            None => (key, val),
        };
        let out = attention(q, key, val, mask); // [B, H, T, D]
        self.o_proj.forward(out.swap_dims(1, 2).reshape([b, t, h * d]))
    }
}

/// Pre-norm decoder layer: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Attention block.
    pub self_attn: SelfAttention<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// Feed-forward block.
    pub mlp: Mlp<B>,
}

impl<B: KernelBackend> DecoderLayer<B> {
    /// # Shapes
    /// `[B, T, E]` → `[B, T, E]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        mask: &AttentionMask<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.input_layernorm.forward(x), rope, mask, cache);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

/// Embedding matrix `[V, E]` (HF `model.embed_tokens`).
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    /// `[V, E]`
    pub weight: Param<Tensor<B, 2>>,
}

/// The backbone (HF `model.*`): embedding, decoder layers, final norm.
#[derive(Module, Debug)]
pub struct Qwen2Backbone<B: Backend> {
    /// Token embedding.
    pub embed_tokens: Embedding<B>,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final RMSNorm.
    pub norm: RmsNorm<B>,
}

/// Qwen2 for causal LM with an optional value head (the PPO critic).
#[derive(Module, Debug)]
pub struct Qwen2<B: Backend> {
    /// The backbone (`model.*` in the checkpoint).
    pub model: Qwen2Backbone<B>,
    /// `lm_head.weight` `[V, E]`; `None` when tied to the embedding.
    pub lm_head: Option<Linear<B>>,
    /// Value head `[1, E]` + bias: one scalar per position, saved beside the model.
    pub value_head: Option<Linear<B>>,
    /// Rotary tables.
    pub rope: Rope<B>,
}

/// Inputs for one forward call.
#[derive(Debug, Clone)]
pub struct ForwardInput<B: Backend> {
    /// Token ids `[B, T]`.
    pub input_ids: Tensor<B, 2, Int>,
    /// Position ids `[B, T]` (`cumsum(mask) − 1` for left-padded rows).
    pub positions: Tensor<B, 2, Int>,
    /// Left-padding length per row (of the whole sequence, cache included), if any row is padded.
    pub pad_lens: Option<Vec<usize>>,
}

impl<B: KernelBackend> Qwen2<B> {
    /// Final-norm hidden states.
    ///
    /// # Shapes
    /// returns `[B, T, E]`.
    ///
    /// # Panics
    /// If a position exceeds the rotary tables (callers check lengths first, see
    /// [`Self::max_positions`]).
    pub fn forward_hidden(&self, input: &ForwardInput<B>, mut cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let [b, t] = input.input_ids.dims();
        let past = cache.as_ref().map_or(0, |c| c.len());
        let device = input.input_ids.device();
        let e = self.model.embed_tokens.weight.dims()[1];
        let x = self.model.embed_tokens.weight.val().select(0, input.input_ids.clone().reshape([b * t])).reshape([b, t, e]);
        let (h, k) = self.model.layers.first().map_or((1, 1), |l| (l.self_attn.num_heads, l.self_attn.num_kv_heads));
        let rope = self.rope.tables(&input.positions, h, k);
        let mask = AttentionMask::new(true, past, input.pad_lens.clone(), t, past + t, &device);
        let mut x = x;
        for (i, layer) in self.model.layers.iter().enumerate() {
            x = layer.forward(x, &rope, &mask, cache.as_deref_mut().map(|c| (c, i)));
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        self.model.norm.forward(x)
    }

    /// Forward to logits.
    ///
    /// # Shapes
    /// returns `[B, T, V]`.
    pub fn forward(&self, input: &ForwardInput<B>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        self.logits(self.forward_hidden(input, cache))
    }
}

impl<B: Backend> Qwen2<B> {
    /// LM logits for hidden states.
    ///
    /// # Shapes
    /// `[B, T, E]` → `[B, T, V]`.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let [b, t, e] = hidden.dims();
                let w = self.model.embed_tokens.weight.val(); // [V, E]
                let v = w.dims()[0];
                hidden.reshape([b * t, e]).matmul(w.transpose()).reshape([b, t, v])
            }
        }
    }

    /// Value estimates for hidden states, or `None` without a value head.
    ///
    /// # Shapes
    /// `[B, T, E]` → `[B, T]`.
    pub fn values(&self, hidden: Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        self.value_head.as_ref().map(|h| h.forward(hidden).squeeze_dim(2))
    }

    /// Positions covered by the rotary tables (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.rope.max_positions()
    }

    /// LM logits at chosen positions only: the hidden states of rows `at` (flat indices `b·T + t`)
    /// are gathered first, so the `E × V` head runs on those rows alone (the training losses need
    /// the head only where there is a target).
    ///
    /// # Shapes
    /// `hidden`: `[B, T, E]`, `at`: `[N]` → `[N, V]`.
    pub fn logits_at(&self, hidden: Tensor<B, 3>, at: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        let [b, t, e] = hidden.dims();
        let n = at.dims()[0];
        let picked = hidden.reshape([b * t, e]).select(0, at).reshape([1, n, e]); // [1, N, E]
        self.logits(picked).reshape([n, self.vocab_size()])
    }

    /// V
    pub fn vocab_size(&self) -> usize {
        self.model.embed_tokens.weight.dims()[0]
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.model.layers.len()
    }
}
