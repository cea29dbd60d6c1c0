//! `mlagent demo`: the main job on the embedded default, end to end as far as it is built.

use anyhow::{Context, Result};
use burn::backend::Flex;
use burn::tensor::FloatDType;
use mlagent_agent::prompt::State;
use mlagent_agent::suite::{self, DEFAULT_SEED};
use mlagent_engine::preset::Preset;
use mlagent_engine::{ChatMessage, GenerateOptions, SamplingParams, TextTokenizer};
use std::path::PathBuf;

/// Run the embedded default end to end, on the CPU, in a few seconds.
///
/// Today: writes the tiny preset model (if --out has none), renders the agent's first prompt for a
/// built-in task, and lets the model choose one action, which the environment parses and scores
/// with the paper's reward. The untrained model's action is noise: this is what SFT (`mlagent
/// sft`) and step-wise PPO (`mlagent rl`) will teach, and `demo` will then run collect → SFT → RL
/// → evaluation on the tiny preset.
///
/// Example: mlagent demo --out out/demo
#[derive(clap::Args)]
pub struct Args {
    /// Working directory for the model and the episode.
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
    /// Built-in task to act on.
    #[arg(long, default_value = "spaceship-titanic")]
    task: String,
    /// Tokens the model may write for its action.
    #[arg(long, default_value_t = 48)]
    max_new_tokens: usize,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let model_dir = args.out.join("model");
    println!("[1/3] model: tiny preset in {}", model_dir.display());
    if !model_dir.join("model.safetensors").is_file() {
        super::init_model::init(Preset::Tiny, 0, &model_dir)?;
    }
    let tok = TextTokenizer::from_dir(&model_dir)?;
    let device = Default::default();
    let (model, _) = mlagent_engine::io::load::<Flex>(&model_dir, FloatDType::F32, &device)?;

    println!("[2/3] task: {} (environment episode in {})", args.task, args.out.join("episode").display());
    let task = suite::resolve(&args.task, DEFAULT_SEED).with_context(|| format!("task {}", args.task))?;
    let description = task.description_text()?;
    let state = State::from_steps(&task.name, &description, task.metric, task.direction(), &[], 3, None);
    let prompt = tok.apply_chat_template(&[ChatMessage::new("user", state.render())], true)?;
    let ids = tok.encode(&prompt, false)?;
    println!("      prompt: {} tokens ({} characters)", ids.len(), prompt.len());

    println!("[3/3] one action from the untrained model (greedy, {} tokens at most)", args.max_new_tokens);
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingParams::greedy(),
        seed: 0,
        eos_ids: mlagent_engine::tokenizer::eos_ids(&model_dir, Some(&tok))?,
        stop_strings: vec!["\nObservation:".into()],
        pad_id: tok.pad_id().unwrap_or(0),
    };
    let start = std::time::Instant::now();
    let out = mlagent_engine::generate(&model, &[ids], &opts, Some(&tok), &device)?;
    let response = tok.decode(&out[0].token_ids, true)?;
    let secs = start.elapsed().as_secs_f64();
    println!("      {} tokens in {secs:.2}s: ids {:?}", out[0].token_ids.len(), out[0].token_ids);
    println!("      text: {response:?}");

    let ws = args.out.join("episode");
    let mut episode = mlagent_agent::Episode::reset(task, &ws, mlagent_agent::EpisodeConfig::default())?;
    let step = episode.step(&response)?;
    println!("      environment: valid {}, kind {:?}, reward {}", step.valid, step.kind, step.reward);
    println!();
    println!("Next (their own issues): `mlagent collect` expert trajectories, `mlagent sft`, `mlagent rl`, and");
    println!("evaluation; then `demo` runs that whole pipeline on this tiny preset.");
    Ok(())
}
