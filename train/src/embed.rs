//! Idea embeddings from a local model: mean-pooled final-norm hidden states.
//!
//! ML-Agent (arXiv 2505.23723, §3.1) embeds each candidate idea and keeps the most diverse ones by
//! pairwise distance. [`ModelEmbedder`] is the "hidden states of a local model" choice of
//! [`mlagent_agent::embed::Embedder`] (beside the offline TF-IDF and an `/embeddings` endpoint): the
//! text is tokenised without special tokens, run through the engine in left-padded batches, and
//! the final-norm hidden states of its tokens are averaged (padding excluded).

use burn::backend::Flex;
use burn::tensor::{FloatDType, Tensor, TensorData};
use mlagent_agent::embed::{EmbedError, Embedder};
use mlagent_engine::{Qwen2, TextTokenizer, left_padded_input};
use mlagent_kernels::KernelBackend;
use std::path::Path;

/// Texts per forward call.
const BATCH: usize = 16;

/// Mean-pooled hidden states of a local model (on the CPU, burn-flex, f32).
pub struct ModelEmbedder<B: KernelBackend = Flex> {
    model: Qwen2<B>,
    tokenizer: TextTokenizer,
    device: B::Device,
    pad_id: u32,
    max_tokens: usize,
}

impl ModelEmbedder<Flex> {
    /// Loads an HF model directory (config, weights and tokenizer) onto the CPU; texts longer than
    /// `max_tokens` tokens are cut to their first `max_tokens`.
    pub fn load(dir: &Path, max_tokens: usize) -> crate::Result<Self> {
        let device = burn::backend::flex::FlexDevice;
        let (model, _) = mlagent_engine::io::load::<Flex>(dir, FloatDType::F32, &device)?;
        let tokenizer = TextTokenizer::from_dir(dir)?;
        Ok(Self::new(model, tokenizer, device, max_tokens))
    }
}

impl<B: KernelBackend> ModelEmbedder<B> {
    /// Wraps a loaded model and its tokenizer.
    pub fn new(model: Qwen2<B>, tokenizer: TextTokenizer, device: B::Device, max_tokens: usize) -> Self {
        let pad_id = tokenizer.pad_id().or(tokenizer.eos_id()).unwrap_or(0);
        let max_tokens = max_tokens.clamp(1, model.max_positions());
        Self { model, tokenizer, device, pad_id, max_tokens }
    }

    /// Token ids of each text: at most `max_tokens`, and the pad token for an empty text (so every
    /// row has a position to pool); all within the model's vocabulary.
    fn ids(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, EmbedError> {
        let rows = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut ids = self.tokenizer.encode(t, false).map_err(|e| EmbedError::Model(format!("text {i}: {e}")))?;
                ids.truncate(self.max_tokens);
                if ids.is_empty() {
                    ids.push(self.pad_id);
                }
                Ok(ids)
            })
            .collect::<Result<Vec<_>, EmbedError>>()?;
        mlagent_engine::generate::check_ids(&rows, self.model.vocab_size()).map_err(|e| EmbedError::Model(e.to_string()))?;
        Ok(rows)
    }
}

/// Mean over the unpadded positions of left-padded hidden states.
///
/// # Shapes
/// `hidden` `[B, T, E]`, `pad_lens` B values → `[B, E]`.
fn mean_pool<B: burn::tensor::backend::Backend>(hidden: Tensor<B, 3>, pad_lens: &[usize]) -> Tensor<B, 2> {
    let [b, t, _] = hidden.dims();
    let mut weights = Vec::with_capacity(b * t);
    for &p in pad_lens {
        let n = (t - p) as f32;
        weights.extend((0..t).map(|j| if j < p { 0.0 } else { 1.0 / n }));
    }
    let w = Tensor::<B, 2>::from_data(TensorData::new(weights, [b, t]), &hidden.device()).unsqueeze_dim::<3>(2); // [B, T, 1]
    (hidden * w).sum_dim(1).squeeze_dim::<2>(1)
}

impl<B: KernelBackend> Embedder for ModelEmbedder<B>
where
    Qwen2<B>: Send + Sync,
    B::Device: Send + Sync,
{
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let rows = self.ids(texts)?;
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(BATCH) {
            let input = left_padded_input::<B>(chunk, self.pad_id, &self.device);
            let pads = input.pad_lens.clone().unwrap_or_else(|| vec![0; chunk.len()]);
            let pooled = mean_pool(self.model.forward_hidden(&input, None), &pads); // [b, E]
            let e = pooled.dims()[1];
            let v = pooled.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| EmbedError::Model(format!("{e:?}")))?;
            out.extend(v.chunks(e).map(<[f32]>::to_vec));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlagent_agent::embed::cosine_distance;
    use mlagent_engine::preset::{Preset, write_preset};

    #[test]
    fn pools_per_text_independent_of_batch_padding() {
        let dir = tempfile::tempdir().unwrap();
        write_preset::<Flex>(Preset::Tiny, &crate::corpus::tokenizer_corpus(), 0, dir.path(), &Default::default()).unwrap();
        let emb = ModelEmbedder::load(dir.path(), 64).unwrap();
        let short = "use a random forest with 200 trees".to_string();
        let long = "standardise the features, then fit gradient boosting with depth 3 and learning rate 0.05 on 5 folds".to_string();
        let alone = emb.embed(std::slice::from_ref(&short)).unwrap();
        let batch = emb.embed(&[long.clone(), short.clone(), short.clone(), String::new()]).unwrap();
        assert_eq!(batch.len(), 4);
        assert_eq!(alone[0].len(), 256, "hidden size of the tiny preset");
        // Left padding and batch-mates do not change a text's vector.
        let diff = alone[0].iter().zip(&batch[1]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "padded vs alone: max |diff| {diff}");
        assert_eq!(batch[1], batch[2]);
        assert!(cosine_distance(&batch[0], &batch[1]) > 1e-3, "different texts, different vectors");
        assert!(batch[3].iter().all(|x| x.is_finite()));
    }

    #[test]
    fn mean_pool_skips_padding() {
        let dev = Default::default();
        // [2, 3, 2]: row 0 unpadded, row 1 with one pad position holding a value that must not count.
        let h = Tensor::<Flex, 3>::from_data(TensorData::new(vec![1.0f32, 2., 3., 4., 5., 6., 100., 100., 2., 2., 4., 6.], [2, 3, 2]), &dev);
        let v = mean_pool(h, &[0, 1]).into_data().to_vec::<f32>().unwrap();
        assert_eq!(v, vec![3.0, 4.0, 3.0, 4.0]);
    }
}
