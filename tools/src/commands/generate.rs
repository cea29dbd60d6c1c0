//! `mlagent generate`: text or token continuation from a model directory.

use anyhow::{Result, bail};
use burn::tensor::FloatDType;
use burn::tensor::backend::Backend;
use mlagent_engine::{BackendTask, ChatMessage, DeviceKind, GenerateOptions, SamplingParams, TextTokenizer};
use std::path::PathBuf;

/// Generate a continuation of a prompt: greedy (temperature 0) or sampled with temperature,
/// top-k and top-p; several --prompt flags run as one left-padded batch with a KV cache.
///
/// Stops at an EOS token (generation_config.json, config.json or the tokenizer's eos_token),
/// a --stop string, or --max-new-tokens. With --format json the last stdout line is
/// {"token_ids": [new tokens only], "text": "..."} (one line per prompt).
///
/// Examples:
///   mlagent generate --model models/tiny --prompt "List the files" --chat --max-new-tokens 64 --temperature 0
///   mlagent generate --model models/tiny --prompt-ids 1,2,3 --max-new-tokens 8 --temperature 0.7 --top-p 0.9 --seed 1 --format json
#[derive(clap::Args)]
pub struct Args {
    /// HF model directory.
    #[arg(long)]
    model: PathBuf,
    /// Prompt text (repeat for a batch). Needs tokenizer.json in the model directory.
    #[arg(long, conflicts_with = "prompt_ids")]
    prompt: Vec<String>,
    /// Wrap each --prompt as a user message with the chat template and an assistant header.
    #[arg(long, requires = "prompt")]
    chat: bool,
    /// Prompt as comma-separated token ids.
    #[arg(long, value_parser = super::parse_ids)]
    prompt_ids: Option<std::vec::Vec<u32>>,
    /// Most new tokens per prompt.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// 0 = greedy; otherwise the sampling temperature.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this total probability.
    #[arg(long)]
    top_p: Option<f32>,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Random seed (same seed, same output).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the output contains this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Output: text (the continuation) or json ({"token_ids", "text"} per prompt).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// Backend: cpu, ndarray, wgpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
    /// Compute in bf16 (CUDA only).
    #[arg(long)]
    bf16: bool,
}

struct Task<'a> {
    args: Args,
    prompts: Vec<Vec<u32>>,
    tokenizer: Option<&'a TextTokenizer>,
    eos: Vec<u32>,
}

impl BackendTask for Task<'_> {
    type Output = Result<Vec<mlagent_engine::Generation>>;
    fn run<B: Backend + mlagent_kernels::KernelBackend>(self, device: B::Device, dtype: FloatDType) -> Self::Output {
        let a = &self.args;
        let (model, _) = mlagent_engine::io::load::<B>(&a.model, dtype, &device)?;
        let opts = GenerateOptions {
            max_new_tokens: a.max_new_tokens,
            sampling: SamplingParams { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p },
            seed: a.seed,
            eos_ids: self.eos.clone(),
            stop_strings: a.stop.clone(),
            pad_id: self.tokenizer.and_then(TextTokenizer::pad_id).unwrap_or(0),
        };
        Ok(mlagent_engine::generate(&model, &self.prompts, &opts, self.tokenizer, &device)?)
    }
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let tokenizer =
        if args.model.join("tokenizer.json").is_file() { Some(TextTokenizer::from_dir(&args.model)?) } else { None };
    let prompts: Vec<Vec<u32>> = match (&args.prompt_ids, args.prompt.is_empty()) {
        (Some(ids), _) => vec![ids.clone()],
        (None, false) => {
            let Some(tok) = &tokenizer else {
                bail!("{}: no tokenizer.json, so --prompt text cannot be encoded (use --prompt-ids)", args.model.display())
            };
            args.prompt
                .iter()
                .map(|p| {
                    if args.chat {
                        let text = tok.apply_chat_template(&[ChatMessage::new("user", p.clone())], true)?;
                        tok.encode(&text, false)
                    } else {
                        tok.encode(p, false)
                    }
                })
                .collect::<Result<_, _>>()?
        }
        (None, true) => bail!("give --prompt TEXT or --prompt-ids 1,2,3"),
    };
    let eos = mlagent_engine::tokenizer::eos_ids(&args.model, tokenizer.as_ref())?;
    let (device, bf16, json) = (args.device, args.bf16, args.format == "json");
    let task = Task { args, prompts, tokenizer: tokenizer.as_ref(), eos };
    let outputs = device.run(task, bf16)?;
    for g in outputs {
        let text = match &tokenizer {
            Some(t) => t.decode(&g.token_ids, true)?,
            None => String::new(),
        };
        if json {
            println!("{}", serde_json::json!({"token_ids": g.token_ids, "text": text, "finish_reason": g.finish}));
        } else {
            println!("{text}");
        }
    }
    Ok(())
}
