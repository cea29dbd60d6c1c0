//! `mlagent collect`: exploration-enriched expert data (ML-Agent §3.1).

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use mlagent_agent::collect::{self, CollectConfig, Event, IdeaSource};
use mlagent_agent::embed::{Embedder, OpenAiEmbedder, TfIdf};
use mlagent_agent::episode::EpisodeConfig;
use mlagent_agent::expert::{LlmExpert, ScriptedExpert};
use mlagent_agent::helper::{Helper, OpenAiHelper};
use mlagent_agent::policy::Policy;
use mlagent_agent::suite::{self, SUITE};
use mlagent_agent::task::Split;
use std::path::PathBuf;

/// Collect expert trajectories and SFT data: per task, an idea pool (--ideas), its most diverse ideas by embedding
/// distance (--diverse, greedy farthest-point), and expert episodes each given 1–3 of them, run in parallel.
///
/// Writes DIR/trajectories.jsonl, DIR/sft_sharegpt.jsonl (LLaMA-Factory ShareGPT), DIR/sft_messages.jsonl (OpenAI
/// messages), DIR/ideas/<task>.json, DIR/episodes/ and DIR/report.{md,json}.
///
/// Example: mlagent collect --tasks train --trajectories-per-task 2 --ideas 100 --diverse 10 --out data/sft
#[derive(clap::Args)]
pub struct Args {
    /// `train` (the nine training tasks) or comma-separated task names or folders.
    #[arg(long, default_value = "train")]
    tasks: String,
    /// Episodes per task.
    #[arg(long, default_value_t = 2)]
    trajectories_per_task: usize,
    /// Idea pool size per task.
    #[arg(long, default_value_t = 100)]
    ideas: usize,
    /// Diverse ideas kept per task.
    #[arg(long, default_value_t = 10)]
    diverse: usize,
    /// Output folder (created; must be empty or new).
    #[arg(long)]
    out: PathBuf,
    /// The expert: `scripted` (offline) or `openai` (an OpenAI-compatible chat model at --url).
    #[arg(long, default_value = "scripted", value_parser = ["scripted", "openai"])]
    expert: String,
    /// OpenAI-compatible base URL for the openai expert (and LLM ideas / embeddings), e.g. http://127.0.0.1:8000/v1.
    #[arg(long)]
    url: Option<String>,
    /// Model name for the openai expert.
    #[arg(long)]
    model: Option<String>,
    /// Environment variable holding the endpoint's API key.
    #[arg(long)]
    key_env: Option<String>,
    /// Sampling temperature of the openai expert.
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    /// Ask the --url model for the idea pools instead of the offline generator.
    #[arg(long)]
    llm_ideas: bool,
    /// Embed ideas with this model at --url's /embeddings instead of the offline TF-IDF.
    #[arg(long, conflicts_with = "embedding_model_dir")]
    embedding_model: Option<String>,
    /// Embed ideas with a local HF model directory instead: the mean of its final-norm hidden states over
    /// each idea's tokens (on the CPU), e.g. the model you will fine-tune.
    #[arg(long)]
    embedding_model_dir: Option<PathBuf>,
    /// Seed of idea sampling and the scripted expert.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most ideas given to one episode (at least 1 each).
    #[arg(long, default_value_t = 3)]
    max_ideas_per_episode: usize,
    /// Step limit per episode.
    #[arg(long, default_value_t = 30)]
    max_steps: usize,
    #[command(flatten)]
    env: super::EnvOpts,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let tasks: Vec<String> = if args.tasks == "train" {
        SUITE.iter().filter(|b| b.split == Split::Train).map(|b| b.name.to_string()).collect()
    } else {
        args.tasks.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect()
    };
    if tasks.is_empty() {
        bail!("--tasks names no task");
    }
    for t in &tasks {
        if suite::builtin(t).is_none() && !std::path::Path::new(t).is_dir() {
            bail!("--tasks: unknown task `{t}` (not a folder and not a built-in task; see `mlagent tasks list`)");
        }
    }
    if args.trajectories_per_task == 0 {
        bail!("--trajectories-per-task must be at least 1");
    }
    if args.max_ideas_per_episode == 0 {
        bail!("--max-ideas-per-episode must be at least 1");
    }
    if args.out.exists() && std::fs::read_dir(&args.out).with_context(|| format!("{}", args.out.display()))?.next().is_some() {
        bail!("--out {}: exists and is not empty; choose a new folder", args.out.display());
    }
    let workers = args.env.workers();
    let cfg = CollectConfig {
        tasks,
        trajectories_per_task: args.trajectories_per_task,
        ideas: args.ideas,
        diverse: args.diverse,
        ideas_per_episode: (1, args.max_ideas_per_episode),
        workers,
        seed: args.seed,
        suite_seed: args.env.suite_seed,
        out: args.out.clone(),
        episode: EpisodeConfig { max_steps: Some(args.max_steps), ..args.env.episode() },
    };

    let need_url = |what: &str| -> Result<String> {
        args.url.clone().with_context(|| format!("{what} needs --url http://host:port/v1"))
    };
    let policy: Box<dyn Policy> = match args.expert.as_str() {
        "openai" => {
            let url = need_url("--expert openai")?;
            let model = args.model.clone().context("--expert openai needs --model")?;
            Box::new(LlmExpert::new(&url, &model, args.key_env.as_deref(), args.temperature).context("--url")?)
        }
        _ => {
            if args.llm_ideas {
                bail!("--llm-ideas gives ideas without code; use them with --expert openai");
            }
            Box::new(ScriptedExpert::new(args.seed))
        }
    };
    let helper: Option<OpenAiHelper> = if args.llm_ideas {
        let url = need_url("--llm-ideas")?;
        let model = args.model.clone().context("--llm-ideas needs --model")?;
        Some(OpenAiHelper::new(&url, &model, args.key_env.as_deref()).context("--url")?)
    } else {
        None
    };
    let source = match &helper {
        Some(h) => IdeaSource::Llm(h as &dyn Helper),
        None => IdeaSource::Offline,
    };
    let embedder: Box<dyn Embedder> = match (&args.embedding_model, &args.embedding_model_dir) {
        (Some(m), _) => Box::new(OpenAiEmbedder::new(&need_url("--embedding-model")?, m, args.key_env.as_deref()).context("--url")?),
        (None, Some(dir)) => Box::new(
            mlagent_train::embed::ModelEmbedder::load(dir, 256).with_context(|| format!("--embedding-model-dir {}", dir.display()))?,
        ),
        (None, None) => Box::new(TfIdf::default()),
    };

    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} episodes {msg}")
            .expect("valid template"),
    );
    let on_event = |e: &Event| match e {
        Event::Selected { task, pool } => bar.set_message(format!("{task}: {pool} ideas embedded")),
        Event::Started { episodes } => {
            bar.set_length(*episodes as u64);
            bar.set_message(format!("{workers} workers"));
        }
        Event::EpisodeDone { task, steps, metric } => {
            bar.inc(1);
            bar.set_message(format!("{task}: {steps} steps, final {}", metric.map_or("-".into(), |m| format!("{m:.4}"))));
        }
        _ => {}
    };
    let report = collect::collect(&cfg, &source, embedder.as_ref(), policy.as_ref(), &on_event)
        .with_context(|| format!("collecting into {}", args.out.display()))?;
    bar.finish_and_clear();
    print!("{}", report.markdown());
    println!("Wrote {}", args.out.display());
    Ok(())
}
