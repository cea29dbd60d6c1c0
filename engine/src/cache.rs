//! Key/value cache for incremental decoding: per layer, the keys and values of every token seen.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Cached keys and values `[B, K, S, D]` per layer, and the number S of cached positions.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers], len: 0 }
    }

    /// S: positions cached so far (the same for every layer after a full forward).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends new keys/values `[B, K, T, D]` to layer `layer`, returning all of them `[B, K, S+T, D]`.
    pub fn append(&mut self, layer: usize, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let (k, v) = match self.layers[layer].take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        (k, v)
    }

    /// Records that `t` positions were appended to every layer.
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }
}

impl<B: Backend> KvCache<B> {
    /// Keeps only the batch rows listed in `rows` `[B']` (finished rows leave the batch).
    pub fn select_rows(&mut self, rows: burn::tensor::Tensor<B, 1, burn::tensor::Int>) {
        for kv in self.layers.iter_mut().flatten() {
            kv.0 = kv.0.clone().select(0, rows.clone());
            kv.1 = kv.1.clone().select(0, rows.clone());
        }
    }
}
