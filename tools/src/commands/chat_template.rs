//! `mlagent chat-template`: render messages as HF `apply_chat_template` does.

use anyhow::{Context, Result};
use mlagent_engine::TextTokenizer;
use std::path::PathBuf;

/// Render a chat with a model's chat template and tokenize it, exactly as HF transformers'
/// `apply_chat_template(messages, add_generation_prompt=...)` does.
///
/// The directory may hold only tokenizer.json and tokenizer_config.json. The messages file is a
/// JSON array of {"role": ..., "content": ...} objects.
///
/// Example: mlagent chat-template --model models/tiny --messages chat.json --add-generation-prompt --format json
#[derive(clap::Args)]
pub struct Args {
    /// Directory with tokenizer.json and tokenizer_config.json (a model dir works).
    #[arg(long)]
    model: PathBuf,
    /// JSON file with the messages array.
    #[arg(long)]
    messages: PathBuf,
    /// Append the assistant turn header, as for generation.
    #[arg(long)]
    add_generation_prompt: bool,
    /// Output format: json prints {"text": ..., "input_ids": [...]}; text prints the rendered text.
    #[arg(long, default_value = "json", value_parser = ["text", "json"])]
    format: String,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let tok = TextTokenizer::from_dir(&args.model)?;
    let text = std::fs::read_to_string(&args.messages).with_context(|| format!("{}", args.messages.display()))?;
    let messages: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", args.messages.display()))?;
    let (rendered, ids) = tok.chat_ids_json(&messages, args.add_generation_prompt)?;
    if args.format == "json" {
        println!("{}", serde_json::json!({"text": rendered, "input_ids": ids}));
    } else {
        print!("{rendered}");
    }
    Ok(())
}
