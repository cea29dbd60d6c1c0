//! `mlagent info`: what a model directory holds.

use anyhow::Result;
use mlagent_engine::{Qwen2Config, TextTokenizer};
use std::path::PathBuf;

/// Describe a model directory: architecture, parameter count, dtype, tokenizer and chat template.
///
/// Reads only config.json and the tokenizer files, so it is instant even for large models.
///
/// Example: mlagent info --model models/tiny
#[derive(clap::Args)]
pub struct Args {
    /// HF model directory.
    #[arg(long)]
    model: PathBuf,
    /// Output format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

/// Parameters of a Qwen2 model with this config (value head excluded).
pub fn parameter_count(c: &Qwen2Config) -> usize {
    let (e, f, v, d) = (c.hidden_size, c.intermediate_size, c.vocab_size, c.head_dim());
    let (h, k) = (c.num_attention_heads, c.num_key_value_heads);
    let attn = e * h * d + h * d + 2 * (e * k * d + k * d) + h * d * e;
    let layer = attn + 3 * e * f + 2 * e;
    v * e + c.num_hidden_layers * layer + e + if c.tie_word_embeddings { 0 } else { v * e }
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let c = Qwen2Config::from_dir(&args.model)?;
    let tok = if args.model.join("tokenizer.json").is_file() { Some(TextTokenizer::from_dir(&args.model)?) } else { None };
    let eos = mlagent_engine::tokenizer::eos_ids(&args.model, tok.as_ref())?;
    let params = parameter_count(&c);
    let value_head = args.model.join(mlagent_engine::io::VALUE_HEAD_FILE).is_file();
    if args.format == "json" {
        let v = serde_json::json!({
            "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
            "num_key_value_heads": c.num_key_value_heads, "head_dim": c.head_dim(), "rope_theta": c.rope_theta,
            "max_position_embeddings": c.max_position_embeddings, "tie_word_embeddings": c.tie_word_embeddings,
            "dtype": c.dtype.hf_name(), "parameters": params, "value_head": value_head,
            "tokenizer_vocab": tok.as_ref().map(|t| t.vocab_size()), "eos_token_ids": eos,
            "chat_template": tok.as_ref().map(|t| t.chat_template().is_ok()),
        });
        println!("{v}");
        return Ok(());
    }
    println!("model        {}", args.model.display());
    println!("architecture Qwen2: {} layers, hidden {}, intermediate {}", c.num_hidden_layers, c.hidden_size, c.intermediate_size);
    println!("attention    {} query heads, {} key/value heads, head dim {}, rope θ {}", c.num_attention_heads, c.num_key_value_heads, c.head_dim(), c.rope_theta);
    println!("vocab        {} (embeddings {})", c.vocab_size, if c.tie_word_embeddings { "tied" } else { "untied" });
    println!("positions    {}", c.max_position_embeddings);
    println!("parameters   {params} ({:.1}M), stored as {}", params as f64 / 1e6, c.dtype.hf_name());
    println!("value head   {}", if value_head { "yes" } else { "no" });
    match &tok {
        Some(t) => println!(
            "tokenizer    {} tokens, chat template {}, EOS ids {eos:?}",
            t.vocab_size(),
            if t.chat_template().is_ok() { "yes" } else { "no" }
        ),
        None => println!("tokenizer    none (no tokenizer.json)"),
    }
    Ok(())
}
