//! Batched generation with a KV cache: left-pad the prompts, prefill once, then decode one token
//! per row per step; rows leave the batch as they finish (EOS, stop string, length).

use crate::cache::KvCache;
use crate::error::{EngineError, Result};
use crate::model::{ForwardInput, Qwen2};
use crate::sampling::{SamplingParams, sample};
use crate::tokenizer::TextTokenizer;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Options for [`generate`].
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Most tokens to add per row.
    pub max_new_tokens: usize,
    /// Token choice.
    pub sampling: SamplingParams,
    /// RNG seed: the same seed, prompts and model give the same output.
    pub seed: u64,
    /// Tokens that end a row (kept in its output, as HF does).
    pub eos_ids: Vec<u32>,
    /// Strings that end a row once its decoded output contains one (needs a tokenizer).
    pub stop_strings: Vec<String>,
    /// Id used for left padding (never attended to).
    pub pad_id: u32,
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Produced an EOS token.
    Eos,
    /// Its text contains a stop string.
    Stop,
    /// Reached `max_new_tokens` or the model's position limit.
    Length,
}

/// One row's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// New tokens only.
    pub token_ids: Vec<u32>,
    /// Why it stopped.
    pub finish: FinishReason,
}

/// A left-padded batch: ids `[B, T]`, positions `cumsum(mask) − 1` (0 on pads), pad lengths.
pub fn left_padded_input<B: Backend>(prompts: &[Vec<u32>], pad_id: u32, device: &B::Device) -> ForwardInput<B> {
    let t = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(prompts.len() * t);
    let mut pos = Vec::with_capacity(prompts.len() * t);
    let mut pads = Vec::with_capacity(prompts.len());
    for p in prompts {
        let pad = t - p.len();
        pads.push(pad);
        ids.extend(std::iter::repeat_n(pad_id as i64, pad).chain(p.iter().map(|&x| x as i64)));
        pos.extend(std::iter::repeat_n(0, pad).chain(0..p.len() as i64));
    }
    let b = prompts.len();
    ForwardInput {
        input_ids: Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), device),
        positions: Tensor::<B, 2, Int>::from_data(TensorData::new(pos, [b, t]), device),
        pad_lens: if pads.iter().any(|&p| p > 0) { Some(pads) } else { None },
    }
}

/// Checks that every id is below `vocab` and every prompt is non-empty.
pub fn check_ids(prompts: &[Vec<u32>], vocab: usize) -> Result<()> {
    for (r, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(EngineError::Input(format!("prompt {r} is empty")));
        }
        if let Some(&bad) = p.iter().find(|&&x| x as usize >= vocab) {
            return Err(EngineError::Input(format!("token id {bad} in prompt {r} is ≥ the vocabulary size {vocab}")));
        }
    }
    Ok(())
}

/// Logits of the last position of each row, as host f32 rows `[B][V]`.
fn last_logits<B: Backend>(model: &Qwen2<B>, hidden: Tensor<B, 3>) -> Vec<Vec<f32>> {
    let [b, t, _] = hidden.dims();
    let logits = model.logits(hidden.narrow(1, t - 1, 1)); // [B, 1, V]
    let v = logits.dims()[2];
    let flat = logits.cast(FloatDType::F32).into_data().to_vec::<f32>().expect("f32 logits");
    (0..b).map(|r| flat[r * v..(r + 1) * v].to_vec()).collect()
}

/// Generates continuations for a batch of prompts.
pub fn generate<B: mlagent_kernels::KernelBackend>(
    model: &Qwen2<B>,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    tokenizer: Option<&TextTokenizer>,
    device: &B::Device,
) -> Result<Vec<Generation>> {
    opts.sampling.validate()?;
    check_ids(prompts, model.vocab_size())?;
    if !opts.stop_strings.is_empty() && tokenizer.is_none() {
        return Err(EngineError::Input("stop strings need a tokenizer".into()));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest >= model.max_positions() {
        return Err(EngineError::Input(format!(
            "prompt of {longest} tokens leaves no room: the model covers {} positions",
            model.max_positions()
        )));
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut outputs: Vec<Generation> =
        prompts.iter().map(|_| Generation { token_ids: Vec::new(), finish: FinishReason::Length }).collect();
    if opts.max_new_tokens == 0 {
        return Ok(outputs);
    }
    let input = left_padded_input::<B>(prompts, opts.pad_id, device);
    let mut pads = input.pad_lens.clone().unwrap_or_else(|| vec![0; prompts.len()]);
    let mut cache = KvCache::new(model.num_layers());
    let mut rows: Vec<Vec<f32>> = last_logits(model, model.forward_hidden(&input, Some(&mut cache)));
    let mut active: Vec<usize> = (0..prompts.len()).collect(); // batch slot → prompt index
    loop {
        let mut next = Vec::with_capacity(active.len());
        let mut keep = Vec::with_capacity(active.len());
        for (slot, &r) in active.iter().enumerate() {
            let tok = sample(&rows[slot], &opts.sampling, &mut rng);
            let out = &mut outputs[r];
            out.token_ids.push(tok);
            let finish = if opts.eos_ids.contains(&tok) {
                Some(FinishReason::Eos)
            } else if hit_stop(out, opts, tokenizer)? {
                Some(FinishReason::Stop)
            } else if out.token_ids.len() >= opts.max_new_tokens || cache.len() + 1 >= model.max_positions() {
                Some(FinishReason::Length)
            } else {
                None
            };
            match finish {
                Some(f) => out.finish = f,
                None => {
                    keep.push(slot);
                    next.push(tok);
                }
            }
        }
        if keep.is_empty() {
            return Ok(outputs);
        }
        if keep.len() < active.len() {
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(keep.iter().map(|&s| s as i64).collect::<Vec<_>>(), [keep.len()]), device);
            cache.select_rows(idx);
            active = keep.iter().map(|&s| active[s]).collect();
            pads = keep.iter().map(|&s| pads[s]).collect();
        }
        let b = active.len();
        let step_pos: Vec<i64> = pads.iter().map(|&p| (cache.len() - p) as i64).collect();
        let input = ForwardInput {
            input_ids: Tensor::from_data(TensorData::new(next.iter().map(|&x| x as i64).collect::<Vec<_>>(), [b, 1]), device),
            positions: Tensor::from_data(TensorData::new(step_pos, [b, 1]), device),
            pad_lens: if pads.iter().any(|&p| p > 0) { Some(pads.clone()) } else { None },
        };
        rows = last_logits(model, model.forward_hidden(&input, Some(&mut cache)));
    }
}

fn hit_stop(out: &crate::generate::Generation, opts: &GenerateOptions, tokenizer: Option<&TextTokenizer>) -> Result<bool> {
    let Some(tok) = tokenizer else { return Ok(false) };
    if opts.stop_strings.is_empty() {
        return Ok(false);
    }
    // Only the tail can complete a new match: decode enough tokens to cover the longest stop string.
    let longest = opts.stop_strings.iter().map(|s| s.len()).max().unwrap_or(0);
    let from = out.token_ids.len().saturating_sub(longest + 8);
    let text = tok.decode(&out.token_ids[from..], false)?;
    Ok(opts.stop_strings.iter().any(|s| text.contains(s.as_str())))
}
