//! `mlagent eval`: K full episodes per task with a model as the agent.

use anyhow::{Context, Result, bail};
use burn::tensor::FloatDType;
use burn::tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use mlagent_agent::suite::{self, SUITE};
use mlagent_agent::task::Split;
use mlagent_engine::{BackendTask, DeviceKind, SamplingParams};
use mlagent_kernels::KernelBackend;
use mlagent_train::actor::PromptCodec;
use mlagent_train::episodes::GenConfig;
use mlagent_train::eval::{EvalConfig, EvalReport, evaluate};
use std::path::{Path, PathBuf};

/// Evaluate a model as the agent: K full episodes per task from the task's start; avg@K and
/// best@K of the final metric, their relative gain over the task's starter script (sign-adjusted
/// for lower-is-better metrics) and the valid-action rate.
///
/// An episode's final metric is the last one it measured; an episode that never produced a
/// gradable submission counts as the starter's score (gain 0). Writes OUT/eval.json, OUT/eval.md,
/// OUT/eval.png and the episodes under OUT/episodes/.
///
/// Example: mlagent eval --model runs/rl/model --tasks heldout -k 3 --max-steps 10 --out runs/eval-rl
#[derive(clap::Args)]
pub struct Args {
    /// The model (HF dir with tokenizer and chat template).
    #[arg(long)]
    model: PathBuf,
    /// `heldout` (the 10 held-out tasks), `train` (the 9 training tasks), or comma-separated names or folders.
    #[arg(long, default_value = "heldout")]
    tasks: String,
    /// Episodes per task.
    #[arg(short = 'k', long = "k", default_value_t = 3)]
    k: usize,
    /// Steps per episode.
    #[arg(long, default_value_t = 10)]
    max_steps: usize,
    /// Sampling temperature (0 = greedy, which makes the K episodes identical).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Longest action in tokens.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Longest prompt in tokens: longer ones are shortened by their structure (tool manual to names, observations
    /// cut in the middle; responses and the cue kept), then cut to their first 60 % and last 40 % if still too long,
    /// exactly as `mlagent sft` cuts its samples; give the --max-prompt-tokens the model was trained with (default: 384 for small models,
    /// as `mlagent sft` trains them; 14000 otherwise).
    #[arg(long)]
    max_prompt_tokens: Option<usize>,
    /// Prompts per generate call.
    #[arg(long, default_value_t = 8)]
    gen_batch: usize,
    /// Seed of token sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Output format of the summary on stdout: text (Markdown table) or json (one line).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// Backend: cpu, wgpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
    #[command(flatten)]
    env: super::EnvOpts,
}

/// The task names `heldout`, `train` or a list stand for.
pub fn task_names(spec: &str) -> Result<Vec<String>> {
    let split = |s: Split| SUITE.iter().filter(|b| b.split == s).map(|b| b.name.to_string()).collect::<Vec<_>>();
    let names: Vec<String> = match spec {
        "heldout" | "held-out" => split(Split::HeldOut),
        "train" => split(Split::Train),
        list => list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect(),
    };
    if names.is_empty() {
        bail!("--tasks names no task");
    }
    for t in &names {
        if suite::builtin(t).is_none() && !Path::new(t).is_dir() {
            bail!("--tasks: unknown task `{t}` (not a folder and not a built-in task; see `mlagent tasks list`)");
        }
    }
    Ok(names)
}

/// Everything an evaluation needs besides the backend.
pub struct Job {
    /// The model directory.
    pub model: PathBuf,
    /// Longest prompt.
    pub max_prompt_tokens: usize,
    /// The evaluation.
    pub cfg: EvalConfig,
    /// Progress bar label.
    pub label: String,
}

impl BackendTask for Job {
    type Output = Result<EvalReport>;
    fn run<B: Backend + KernelBackend>(self, device: B::Device, dtype: FloatDType) -> Result<EvalReport> {
        let (model, _) = mlagent_engine::io::load::<B>(&self.model, dtype, &device)?;
        let codec = PromptCodec::from_dir(&self.model, self.max_prompt_tokens)?;
        if self.max_prompt_tokens + self.cfg.generation.max_new_tokens >= model.max_positions() {
            bail!(
                "--max-prompt-tokens {} + --max-new-tokens {} exceed the model's {} positions",
                self.max_prompt_tokens,
                self.cfg.generation.max_new_tokens,
                model.max_positions()
            );
        }
        let total = self.cfg.tasks.len() * self.cfg.k * self.cfg.max_steps;
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed_precise}] {bar:30} {pos}/{len} steps (at most)").expect("template"),
        );
        bar.set_prefix(self.label.clone());
        let report = evaluate(&model, &self.model.display().to_string(), &codec, &self.cfg, &device, &|n| bar.set_position(n as u64))?;
        bar.finish_and_clear();
        Ok(report)
    }
}

/// Writes eval.json, eval.md and eval.png into `out`.
pub fn write_report(report: &EvalReport, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("{}", out.display()))?;
    std::fs::write(out.join("eval.json"), serde_json::to_string_pretty(report)?)?;
    std::fs::write(out.join("eval.md"), report.markdown())?;
    let names: Vec<String> = report.tasks.iter().map(|t| t.task.clone()).collect();
    let groups = vec![
        ("avg@K".to_string(), report.tasks.iter().map(|t| 100.0 * t.avg_relative_gain).collect()),
        ("best@K".to_string(), report.tasks.iter().map(|t| 100.0 * t.best_relative_gain).collect()),
    ];
    mlagent_train::plot::grouped_bars(&out.join("eval.png"), &format!("relative gain over the starter (K = {})", report.k), "gain %", &names, &groups)?;
    Ok(())
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    if args.k == 0 || args.max_steps == 0 {
        bail!("-k and --max-steps must be at least 1");
    }
    let names = task_names(&args.tasks)?;
    let tasks = names
        .iter()
        .map(|n| suite::resolve(n, args.env.suite_seed).with_context(|| format!("task {n}")))
        .collect::<Result<Vec<_>>>()?;
    let max_prompt_tokens = args.max_prompt_tokens.unwrap_or(if super::is_small(&args.model) {
        super::SMALL_MAX_PROMPT_TOKENS
    } else {
        14_000
    });
    let job = Job {
        model: args.model.clone(),
        max_prompt_tokens,
        label: "eval".into(),
        cfg: EvalConfig {
            tasks,
            k: args.k,
            max_steps: args.max_steps,
            generation: GenConfig {
                sampling: SamplingParams { temperature: args.temperature, top_k: None, top_p: None },
                max_new_tokens: args.max_new_tokens,
                batch: args.gen_batch,
            },
            workers: args.env.workers(),
            seed: args.seed,
            episode: args.env.episode(),
            work: args.out.join("episodes"),
        },
    };
    let report = args.device.run(job, false)?;
    write_report(&report, &args.out)?;
    if args.format == "json" {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.markdown());
        println!("Wrote {}", args.out.display());
    }
    Ok(())
}
