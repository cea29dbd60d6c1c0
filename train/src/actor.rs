//! The model as an agent: prompt encoding (chat template + head/tail truncation, the same as SFT),
//! batched action sampling, and the per-token log-probs PPO needs.

use crate::error::{Result, TrainError};
use crate::sft::{fit_user_text, prompt_keep};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use mlagent_engine::{ChatMessage, ForwardInput, GenerateOptions, Qwen2, SamplingParams, TextTokenizer};
use mlagent_kernels::KernelBackend;
use std::path::Path;

/// Stop generating an action once the model starts writing the environment's part.
pub const STOP_STRINGS: [&str; 1] = ["\nObservation:"];

/// Turns states into token ids and sampled ids back into text, for one model directory.
pub struct PromptCodec {
    /// The tokenizer (with its chat template).
    pub tokenizer: TextTokenizer,
    /// Ids that end an action.
    pub eos: Vec<u32>,
    /// Left-padding id.
    pub pad: u32,
    /// Longest prompt in tokens; longer ones are fitted by their structure ([`fit_user_text`]),
    /// then keep their head (60 %) and tail (40 %) ([`prompt_keep`]) if still too long, by the same
    /// functions as SFT's samples: act with the `max_prompt_tokens` the model was trained with.
    pub max_prompt_tokens: usize,
}

impl PromptCodec {
    /// Reads the tokenizer and EOS ids of a model directory.
    pub fn from_dir(dir: &Path, max_prompt_tokens: usize) -> Result<Self> {
        let tokenizer = TextTokenizer::from_dir(dir)?;
        tokenizer.chat_template()?;
        let eos = mlagent_engine::tokenizer::eos_ids(dir, Some(&tokenizer))?;
        let pad = tokenizer.pad_id().or_else(|| eos.first().copied()).unwrap_or(0);
        if max_prompt_tokens < 16 {
            return Err(TrainError::Config(format!("max prompt tokens {max_prompt_tokens} is too small (≥ 16)")));
        }
        Ok(Self { tokenizer, eos, pad, max_prompt_tokens })
    }

    /// The user turn `text` with the generation prompt, tokenised and truncated.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let text = fit_user_text(&self.tokenizer, text, self.max_prompt_tokens)?;
        let prompt = self.tokenizer.apply_chat_template(&[ChatMessage::new("user", &text)], true)?;
        let ids = self.tokenizer.encode(&prompt, false)?;
        Ok(prompt_keep(ids.len(), self.max_prompt_tokens).into_iter().map(|i| ids[i]).collect())
    }

    /// The text of an action's tokens (special tokens dropped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(self.tokenizer.decode(ids, true)?)
    }
}

/// One sampled action.
#[derive(Debug, Clone)]
pub struct Action {
    /// The action's token ids (EOS included when produced).
    pub ids: Vec<u32>,
    /// Its text, as the environment receives it.
    pub text: String,
}

/// Samples one action per prompt, `batch` prompts per generate call (each call with its own seed).
#[allow(clippy::too_many_arguments)]
pub fn sample_actions<B: KernelBackend>(
    model: &Qwen2<B>,
    codec: &PromptCodec,
    prompts: &[Vec<u32>],
    sampling: SamplingParams,
    max_new_tokens: usize,
    batch: usize,
    seed: u64,
    device: &B::Device,
) -> Result<Vec<Action>> {
    let mut out = Vec::with_capacity(prompts.len());
    for (i, chunk) in prompts.chunks(batch.max(1)).enumerate() {
        let opts = GenerateOptions {
            max_new_tokens,
            sampling,
            seed: seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            eos_ids: codec.eos.clone(),
            stop_strings: STOP_STRINGS.iter().map(|s| s.to_string()).collect(),
            pad_id: codec.pad,
        };
        for g in mlagent_engine::generate(model, chunk, &opts, Some(&codec.tokenizer), device)? {
            let text = codec.decode(&g.token_ids)?;
            out.push(Action { ids: g.token_ids, text });
        }
    }
    Ok(out)
}

/// A right-padded batch of `prompt ++ action` sequences and where the action tokens sit.
pub struct SeqBatch<B: Backend> {
    /// The forward input `[B, T]` (right padding needs no mask under causal attention).
    pub input: ForwardInput<B>,
    /// Flat indices into `[B·T]` of the positions whose logits predict action tokens `[N]`.
    pub action_rows: Tensor<B, 1, Int>,
    /// The action tokens `[N]`.
    pub targets: Tensor<B, 1, Int>,
    /// Flat indices into `[B·T]` of each sequence's last prompt token `[B]` (where V(s) is read).
    pub state_rows: Tensor<B, 1, Int>,
    /// Action tokens per sequence.
    pub lens: Vec<usize>,
}

/// Builds the batch for `(prompt, action)` pairs; empty actions contribute no rows.
pub fn seq_batch<B: Backend>(pairs: &[(&[u32], &[u32])], device: &B::Device) -> SeqBatch<B> {
    let b = pairs.len();
    let t = pairs.iter().map(|(p, a)| p.len() + a.len()).max().unwrap_or(1).max(1);
    let (mut ids, mut rows, mut targets, mut states, mut lens) = (vec![0i64; b * t], Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (r, (p, a)) in pairs.iter().enumerate() {
        for (i, &tok) in p.iter().chain(a.iter()).enumerate() {
            ids[r * t + i] = tok as i64;
        }
        for (j, &tok) in a.iter().enumerate() {
            rows.push((r * t + p.len() + j - 1) as i64);
            targets.push(tok as i64);
        }
        states.push((r * t + p.len().max(1) - 1) as i64);
        lens.push(a.len());
    }
    let n = rows.len();
    let input = ForwardInput {
        input_ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
        positions: Tensor::<B, 1, Int>::arange(0..t as i64, device).reshape([1, t]).repeat_dim(0, b),
        pad_lens: None,
    };
    SeqBatch {
        input,
        action_rows: Tensor::from_data(TensorData::new(rows, [n]), device),
        targets: Tensor::from_data(TensorData::new(targets, [n]), device),
        state_rows: Tensor::from_data(TensorData::new(states, [b]), device),
        lens,
    }
}

/// Logits at the action positions, divided by the sampling temperature (as verl does).
///
/// # Shapes
/// returns `[N, V]`.
pub fn action_logits<B: KernelBackend>(model: &Qwen2<B>, batch: &SeqBatch<B>, temperature: f32) -> Tensor<B, 2> {
    let hidden = model.forward_hidden(&batch.input, None); // [B, T, E]
    let logits = model.logits_at(hidden, batch.action_rows.clone()); // [N, V]
    if temperature > 0.0 && temperature != 1.0 { logits.div_scalar(temperature) } else { logits }
}

/// Per-token log-probs of the actions and the policy's mean entropy over them, without gradient.
///
/// # Shapes
/// returns `[N]` log-probs (host f32) and the entropy mean.
pub fn action_logprobs<B: KernelBackend>(model: &Qwen2<B>, batch: &SeqBatch<B>, temperature: f32) -> (Vec<f32>, f64) {
    if batch.targets.dims()[0] == 0 {
        return (Vec::new(), 0.0);
    }
    let logits = action_logits(model, batch, temperature).detach();
    let logp = mlagent_kernels::ppo::logprobs(logits.clone(), batch.targets.clone());
    let lsm = burn::tensor::activation::log_softmax(logits.cast(FloatDType::F32), 1);
    let entropy = (lsm.clone().exp() * lsm).sum_dim(1).neg().mean().into_scalar();
    (host(logp), burn::tensor::ElementConversion::elem::<f64>(entropy))
}

/// V(s) at each sequence's last prompt token, without gradient.
///
/// # Shapes
/// returns `[B]` (host f32).
pub fn state_values<B: KernelBackend>(critic: &Qwen2<B>, batch: &SeqBatch<B>) -> Result<Vec<f32>> {
    Ok(host(state_values_tensor(critic, batch)?.detach()))
}

/// V(s) at each sequence's last prompt token, differentiable.
///
/// # Shapes
/// returns `[B]`.
pub fn state_values_tensor<B: KernelBackend>(critic: &Qwen2<B>, batch: &SeqBatch<B>) -> Result<Tensor<B, 1>> {
    let hidden = critic.forward_hidden(&batch.input, None);
    let [b, t, _] = hidden.dims();
    let v = critic.values(hidden).ok_or_else(|| TrainError::Config("the critic has no value head".into()))?; // [B, T]
    Ok(v.reshape([b * t]).select(0, batch.state_rows.clone()).cast(FloatDType::F32))
}

/// A host copy of a float tensor.
pub fn host<B: Backend>(t: Tensor<B, 1>) -> Vec<f32> {
    t.cast(FloatDType::F32).into_data().to_vec::<f32>().expect("f32 data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn seq_batch_rows_point_at_predicting_positions() {
        let dev = Default::default();
        let p1: Vec<u32> = vec![1, 2, 3];
        let a1: Vec<u32> = vec![7, 8];
        let p2: Vec<u32> = vec![4];
        let a2: Vec<u32> = vec![9, 10, 11];
        let b = seq_batch::<Flex>(&[(&p1, &a1), (&p2, &a2)], &dev);
        let to = |t: Tensor<Flex, 1, Int>| t.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        // T = 5; row 0 predicts 7 at position 2 and 8 at 3; row 1 predicts 9 at 5+0, 10 at 5+1, 11 at 5+2.
        assert_eq!(to(b.action_rows), vec![2, 3, 5, 6, 7]);
        assert_eq!(to(b.targets), vec![7, 8, 9, 10, 11]);
        assert_eq!(to(b.state_rows), vec![2, 5]);
        assert_eq!(b.lens, vec![2, 3]);
    }
}
