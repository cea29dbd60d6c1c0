//! One file per subcommand; shared argument helpers here.

pub mod bench;
pub mod chat_template;
pub mod collect;
pub mod demo;
pub mod env;
pub mod eval;
pub mod generate;
pub mod grade;
pub mod info;
pub mod init_model;
pub mod kernels;
pub mod logits;
pub mod rl;
pub mod sft;
pub mod tasks;

use anyhow::{Context, Result, bail};
use mlagent_agent::episode::EpisodeConfig;

/// Environment options of every command that runs episodes.
#[derive(clap::Args, Debug, Clone)]
pub struct EnvOpts {
    /// Parallel environment workers (default: the number of CPUs).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Seed of the built-in task suite.
    #[arg(long, default_value_t = mlagent_agent::suite::DEFAULT_SEED)]
    pub suite_seed: u64,
    /// Wall-clock limit of one script run, seconds (default: the task's).
    #[arg(long)]
    pub exec_timeout: Option<u64>,
    /// Run scripts without PID/network namespaces.
    #[arg(long)]
    pub no_namespaces: bool,
}

impl EnvOpts {
    /// --workers or the number of CPUs.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1)
    }

    /// The episode settings these options ask for (the rest default).
    pub fn episode(&self) -> EpisodeConfig {
        EpisodeConfig { exec_timeout_secs: self.exec_timeout, namespaces: !self.no_namespaces, ..Default::default() }
    }
}

/// Parses `1,2,3` into token ids.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let ids = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u32>().with_context(|| format!("token id {t:?} is not a non-negative integer")))
        .collect::<Result<Vec<u32>>>()?;
    if ids.is_empty() {
        bail!("no token ids given");
    }
    Ok(ids)
}

/// Models under this many parameters (the tiny preset) get the small-model defaults below.
pub const SMALL_MODEL_PARAMS: usize = 100_000_000;
/// Small models: SFT samples are cut to this many tokens ...
pub const SMALL_CUTOFF: usize = 640;
/// ... of which actions (and generation) get up to this many ...
pub const SMALL_MAX_NEW_TOKENS: usize = 256;
/// ... and prompts the rest: `sft`, `rl` and `eval` all default to it, so a small model acts on
/// prompts fitted exactly as it was trained on (measured: BENCHMARKS.md, "Unseen-state valid rate").
pub const SMALL_MAX_PROMPT_TOKENS: usize = SMALL_CUTOFF - SMALL_MAX_NEW_TOKENS;

/// Whether the model in `dir` takes the small-model defaults (false if its config cannot be read).
pub fn is_small(dir: &std::path::Path) -> bool {
    mlagent_engine::Qwen2Config::from_dir(dir).is_ok_and(|c| info::parameter_count(&c) < SMALL_MODEL_PARAMS)
}

/// Copies the files of `from` into a fresh `to`.
pub fn copy_model_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to).with_context(|| format!("{}", to.display()))?;
    }
    std::fs::create_dir_all(to).with_context(|| format!("{}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("{}", from.display()))? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).with_context(|| format!("{}", e.path().display()))?;
        }
    }
    Ok(())
}
