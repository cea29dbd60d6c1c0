//! `mlagent init-model`: write the embedded default model.

use anyhow::{Result, bail};
use burn::backend::Flex;
use mlagent_engine::preset::{Preset, write_preset};
use std::path::{Path, PathBuf};

/// Write a randomly initialised Qwen2 of a preset shape as an HF model directory (config.json,
/// model.safetensors, generation_config.json), with a byte-level BPE tokenizer trained on the
/// agent's own text (task prompts, actions, starter scripts) and a ChatML chat template.
///
/// Presets: tiny (hidden 256, 4 layers, 4/2 heads, vocab 8192; trains on a CPU) and 0.5b
/// (Qwen2.5-0.5B's shape, for benchmarks). Deterministic for a seed.
///
/// Example: mlagent init-model --preset tiny --out models/tiny
#[derive(clap::Args)]
pub struct Args {
    /// Model shape: tiny or 0.5b.
    #[arg(long, default_value = "tiny")]
    preset: Preset,
    /// Output directory (created; existing model files are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Seed for the weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Writes the preset into `out`, printing one line.
pub fn init(preset: Preset, seed: u64, out: &Path) -> Result<()> {
    if out.is_file() {
        bail!("{}: exists and is a file, not a directory", out.display());
    }
    let corpus = mlagent_train::corpus::tokenizer_corpus();
    let config = write_preset::<Flex>(preset, &corpus, seed, out, &Default::default())?;
    let params = super::info::parameter_count(&config);
    println!("wrote {preset:?} model ({:.1}M parameters, vocab {}) to {}", params as f64 / 1e6, config.vocab_size, out.display());
    Ok(())
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    init(args.preset, args.seed, &args.out)
}
