//! `mlagent tasks`: the built-in offline task suite.

use anyhow::{Context, Result, bail};
use mlagent_agent::suite::{self, DEFAULT_SEED, SUITE};
use std::path::PathBuf;

/// The built-in task suite: 9 training and 10 held-out miniature Kaggle tasks, generated from a seed.
///
/// Example: mlagent tasks list
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Generate tasks (task.toml, description.md, public/, private/) into a folder.
    ///
    /// Generation is deterministic: the same seed gives byte-identical files.
    ///
    /// Example: mlagent tasks prepare --out tasks
    Prepare {
        /// Output folder; each task goes to OUT/<name>.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the generators.
        #[arg(long, default_value_t = DEFAULT_SEED)]
        seed: u64,
        /// Only these tasks (repeatable); all by default.
        #[arg(long = "task")]
        tasks: Vec<String>,
    },
    /// List the built-in tasks: name, split, metric, direction and the starter's baseline score.
    ///
    /// Example: mlagent tasks list --format json
    List {
        /// Output format: text or json.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Prepare { out, seed, tasks } => {
            let chosen: Vec<&'static suite::Builtin> = if tasks.is_empty() {
                SUITE.iter().collect()
            } else {
                tasks
                    .iter()
                    .map(|t| suite::builtin(t).with_context(|| format!("unknown task `{t}` (see `mlagent tasks list`)")))
                    .collect::<Result<_>>()?
            };
            for b in chosen {
                let dir = out.join(b.name);
                let spec = suite::prepare(b, seed, &dir).with_context(|| format!("preparing {}", b.name))?;
                println!("{:50} {} (m_init {:.6}, m_best {:.6})", spec.name, dir.display(), spec.m_init, spec.m_best);
            }
            Ok(())
        }
        Command::List { format } => {
            if SUITE.is_empty() {
                bail!("the suite is empty");
            }
            if format == "json" {
                let rows: Vec<serde_json::Value> = SUITE
                    .iter()
                    .map(|b| {
                        serde_json::json!({
                            "name": b.name, "split": b.split.name(), "metric": b.metric.name(),
                            "direction": b.metric.direction(), "baseline": b.baseline,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:48} {:9} {:9} {:9} {:>12}", "name", "split", "metric", "direction", "baseline");
                for b in &SUITE {
                    let dir = format!("{:?}", b.metric.direction()).to_lowercase();
                    println!("{:48} {:9} {:9} {:9} {:>12.6}", b.name, b.split.name(), b.metric.name(), dir, b.baseline);
                }
            }
            Ok(())
        }
    }
}
