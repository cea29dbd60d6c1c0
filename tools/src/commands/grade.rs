//! `mlagent grade`: score a submission CSV against an answers CSV with one of the Kaggle metrics.

use anyhow::{Context, Result};
use mlagent_agent::Metric;
use std::path::PathBuf;

/// Grade a submission against answers, Kaggle/MLE-bench style.
///
/// The first column of each file is the row id whatever its header; rows are matched by id, target columns by name.
/// The last line of output is `{"metric": …, "value": …}` with --format json. Missing, duplicate or extra ids, missing
/// columns and non-numeric cells fail with a message naming the row or column.
///
/// Example: mlagent grade --metric auc --answers private/answers.csv --submission work/submission.csv --format json
#[derive(clap::Args)]
pub struct Args {
    /// Metric: accuracy, auc, logloss, mae, rmse, rmsle, mcrmse, qwk, map@5 or pearson.
    #[arg(long)]
    metric: String,
    /// The answers CSV (first column: id; then the target columns).
    #[arg(long)]
    answers: PathBuf,
    /// The submission CSV (first column: id; target columns by header name).
    #[arg(long)]
    submission: PathBuf,
    /// Output format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let metric: Metric = args.metric.parse()?;
    let value = mlagent_agent::grade::grade(metric, &args.answers, &args.submission)
        .with_context(|| format!("grading {} against {}", args.submission.display(), args.answers.display()))?;
    if args.format == "json" {
        println!("{}", serde_json::json!({"metric": metric.name(), "value": value}));
    } else {
        println!("{metric} = {value:.6}");
    }
    Ok(())
}
