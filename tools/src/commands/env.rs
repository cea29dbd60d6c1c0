//! `mlagent env`: the ML environment from the command line: start an episode, step it with a model response, restore a
//! state from a trace, and benchmark it.

use anyhow::{Context, Result};
use mlagent_agent::episode::HelperConfig;
use mlagent_agent::suite::{self, DEFAULT_SEED};
use mlagent_agent::{Episode, EpisodeConfig, TaskSpec};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The MLAgentBench-style environment: episodes, steps, replay and benchmark.
///
/// Example: mlagent env reset --task spaceship-titanic --workspace /tmp/ep --format json
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

/// How scripts run and what the agent sees (shared by reset, replay and bench).
#[derive(clap::Args, Clone)]
struct EpisodeFlags {
    /// Wall-clock limit of one Execute Script in seconds (default: the task's time_limit_secs).
    #[arg(long)]
    exec_timeout: Option<u64>,
    /// CPUs a script may use.
    #[arg(long, default_value_t = 1)]
    cpus: usize,
    /// End the episode after this many steps.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Recent steps shown in the prompt.
    #[arg(long, default_value_t = 3)]
    history: usize,
    /// Run scripts without PID/network namespaces (they then have network access).
    #[arg(long)]
    no_namespaces: bool,
    /// OpenAI-compatible endpoint of the helper LLM for Edit Script (AI) and Understand File, e.g.
    /// http://127.0.0.1:8000/v1.
    #[arg(long)]
    helper_url: Option<String>,
    /// Model name sent to the helper endpoint.
    #[arg(long, default_value = "default")]
    helper_model: String,
    /// Environment variable holding the helper endpoint's API key.
    #[arg(long)]
    helper_key_env: Option<String>,
    /// Seed of built-in task generation.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
}

impl EpisodeFlags {
    fn config(&self) -> EpisodeConfig {
        EpisodeConfig {
            exec_timeout_secs: self.exec_timeout,
            cpus: self.cpus.max(1),
            namespaces: !self.no_namespaces,
            history: self.history,
            max_steps: self.max_steps,
            helper: self.helper_url.as_ref().map(|url| HelperConfig {
                url: url.clone(),
                model: self.helper_model.clone(),
                api_key_env: self.helper_key_env.clone(),
            }),
            ..EpisodeConfig::default()
        }
    }
}

#[derive(clap::Subcommand)]
enum Command {
    /// Start an episode: copy the task's public files into WORKSPACE/work and print the initial prompt.
    ///
    /// Example: mlagent env reset --task cifar-10 --workspace /tmp/ep --exec-timeout 60 --format json
    Reset {
        /// A built-in task name (generated on demand) or a task folder (task.toml, or a prepared MLE-bench
        /// competition).
        #[arg(long)]
        task: String,
        /// The episode folder (created; an earlier episode there is replaced).
        #[arg(long)]
        workspace: PathBuf,
        #[command(flatten)]
        flags: EpisodeFlags,
        /// Output format: text or json.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Parse one raw model response, execute it, and print action, kind, observation, reward, done and metric.
    ///
    /// Example: mlagent env step --workspace /tmp/ep --response-file response.txt --format json
    Step {
        /// The episode folder.
        #[arg(long)]
        workspace: PathBuf,
        /// File holding the model's response (`-` for stdin).
        #[arg(long)]
        response_file: PathBuf,
        /// A local HF model dir to run as the helper LLM for Edit Script (AI) and Understand File
        /// (on the CPU), instead of the episode's --helper-url endpoint.
        #[arg(long)]
        helper_model_dir: Option<PathBuf>,
        /// Most tokens the local helper writes per answer.
        #[arg(long, default_value_t = 1024)]
        helper_max_tokens: usize,
        /// Output format: text or json.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Recreate the state before step K of a trace in a new episode and print its prompt.
    ///
    /// Example: mlagent env replay --trace /tmp/ep/trace.jsonl --step 3 --workspace /tmp/ep3 --format json
    Replay {
        /// A trace.jsonl written by an episode.
        #[arg(long)]
        trace: PathBuf,
        /// Restore the state before this 0-based step (after K steps).
        #[arg(long)]
        step: usize,
        /// The new episode folder.
        #[arg(long)]
        workspace: PathBuf,
        /// The task (default: from the trace's episode.json, else the trace's task name).
        #[arg(long)]
        task: Option<String>,
        #[command(flatten)]
        flags: EpisodeFlags,
        /// Output format: text or json.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Benchmark: steps/s of non-executing actions and the overhead of Execute Script over a plain run.
    ///
    /// Example: mlagent env bench --task spaceship-titanic --steps 2000 --runs 30
    Bench {
        /// The task to run on.
        #[arg(long, default_value = "spaceship-titanic")]
        task: String,
        /// Episode folder (default: a fresh folder in the temp dir, removed afterwards).
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Non-executing steps to time.
        #[arg(long, default_value_t = 1000)]
        steps: usize,
        /// Script executions to time.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        #[command(flatten)]
        flags: EpisodeFlags,
        /// Output format: text or json.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
}

/// The JSON printed by reset and replay, fields in this order.
#[derive(serde::Serialize)]
struct Start {
    task: String,
    workspace: String,
    observation: String,
}

fn print_start(ep: &Episode, format: &str) {
    if format == "json" {
        let v = Start {
            task: ep.task().name.clone(),
            workspace: ep.workspace().root().display().to_string(),
            observation: ep.observation(),
        };
        println!("{}", serde_json::to_string(&v).expect("strings serialize"));
    } else {
        println!("{}", ep.observation());
    }
}

fn replay_task(trace: &Path, task: Option<&str>, first: Option<&str>, seed: u64) -> Result<TaskSpec> {
    if let Some(t) = task {
        return Ok(suite::resolve(t, seed)?);
    }
    let saved = trace.parent().map(|d| d.join("episode.json"));
    if let Some(Ok(text)) = saved.map(std::fs::read_to_string) {
        let v: serde_json::Value = serde_json::from_str(&text).context("reading the trace's episode.json")?;
        if let Some(dir) = v["task_dir"].as_str().filter(|d| Path::new(d).is_dir()) {
            return Ok(TaskSpec::load(Path::new(dir))?);
        }
    }
    let name = first.context("the trace is empty and no --task was given")?;
    Ok(suite::resolve(name, seed)?)
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Reset { task, workspace, flags, format } => {
            let spec = suite::resolve(&task, flags.seed)?;
            let ep = Episode::reset(spec, &workspace, flags.config())
                .with_context(|| format!("starting an episode in {}", workspace.display()))?;
            print_start(&ep, &format);
        }
        Command::Step { workspace, response_file, helper_model_dir, helper_max_tokens, format } => {
            let response = if response_file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).context("reading the response from stdin")?;
                s
            } else {
                std::fs::read_to_string(&response_file)
                    .with_context(|| format!("reading the response {}", response_file.display()))?
            };
            let mut ep = Episode::open(&workspace)?;
            if let Some(dir) = &helper_model_dir {
                let helper = mlagent_train::local_helper::LocalHelper::load(dir, helper_max_tokens)
                    .with_context(|| format!("helper model {}", dir.display()))?;
                ep.set_helper(Box::new(helper));
            }
            let out = ep.step(&response)?;
            if format == "json" {
                println!("{}", serde_json::to_string(&out)?);
            } else {
                println!("{}\n[kind {} · reward {:.4} · done {}]", out.observation, out.kind.name(), out.reward, out.done);
            }
        }
        Command::Replay { trace, step, workspace, task, flags, format } => {
            let steps = mlagent_agent::trace::read(&trace)?;
            let spec = replay_task(&trace, task.as_deref(), steps.first().map(|s| s.task.as_str()), flags.seed)?;
            let ep = Episode::restore(spec, &steps, step, &workspace, flags.config())
                .with_context(|| format!("restoring step {step} of {}", trace.display()))?;
            print_start(&ep, &format);
        }
        Command::Bench { task, workspace, steps, runs, flags, format } => {
            let spec = suite::resolve(&task, flags.seed)?;
            let (dir, temporary) = match workspace {
                Some(w) => (w, false),
                None => (std::env::temp_dir().join(format!("mlagent-env-bench-{}", std::process::id())), true),
            };
            let report = mlagent_agent::bench::bench(spec, &dir, steps, runs, flags.config());
            if temporary {
                let _ = std::fs::remove_dir_all(&dir);
            }
            let r = report?;
            if format == "json" {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("non-executing steps: {:.0} steps/s (median {:.3} ms over {})", r.steps_per_sec, r.step_median_ms, r.steps);
                println!(
                    "Execute Script: {:.2} ms per step vs {:.2} ms plain run → overhead {:.2} ms (median of {}; namespaces {})",
                    r.execute_step_ms, r.plain_run_ms, r.execute_overhead_ms, r.runs, r.namespaces
                );
            }
        }
    }
    Ok(())
}
