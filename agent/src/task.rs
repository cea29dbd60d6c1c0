//! The task format: `task.toml` + `public/` + `private/`, and the MLE-bench adapter.
//!
//! ```text
//! my-task/
//!   task.toml          name, metric, run command, limits, m_init, m_best, read-only patterns (see [`TaskSpec`])
//!   description.md     the research problem shown to the agent
//!   public/            copied into the agent's work/ folder: data, sample_submission.csv, starter train.py
//!   private/answers.csv  the test answers (first column: id), never visible to the agent
//! ```
//! A prepared MLE-bench competition (`description.md`, `prepared/public/`, `prepared/private/`) is read as a task too:
//! see [`TaskSpec::load`].

use crate::csvio::Table;
use crate::grade;
use crate::metric::{Direction, Metric};
use crate::reward::RewardScale;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which part of the suite a task belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Used to collect expert trajectories and for RL.
    Train,
    /// Only for evaluation.
    HeldOut,
    /// Anything else (e.g. an MLE-bench competition).
    External,
}

impl Split {
    /// The name in `task.toml` and `tasks list`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::HeldOut => "held-out",
            Split::External => "external",
        }
    }
}

fn default_run() -> String {
    "python3 {script}".into()
}
fn default_script() -> String {
    "train.py".into()
}
fn default_time() -> u64 {
    60
}
fn default_memory() -> u64 {
    4096
}
fn default_submission() -> String {
    "submission.csv".into()
}
fn default_answers() -> String {
    "answers.csv".into()
}

/// A task, as written in `task.toml`; paths are relative to the task folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Task name (the Kaggle competition's slug for built-in tasks).
    pub name: String,
    /// The Markdown file holding the research problem.
    #[serde(default = "default_description")]
    pub description: String,
    /// The metric the submission is graded by.
    pub metric: Metric,
    /// Better direction; defaults to the metric's own.
    #[serde(default)]
    pub direction: Option<Direction>,
    /// The command Execute Script runs in `work/`, split on whitespace (no shell); `{script}` is replaced by the
    /// action's `script_name`.
    #[serde(default = "default_run")]
    pub run: String,
    /// The starter script in `public/`.
    #[serde(default = "default_script")]
    pub script: String,
    /// Wall-clock limit of one run, in seconds.
    #[serde(default = "default_time")]
    pub time_limit_secs: u64,
    /// Address-space limit of one run, in MiB.
    #[serde(default = "default_memory")]
    pub memory_mb: u64,
    /// Baseline metric m_init: the unmodified starter's score (m_t before the first scored run).
    pub m_init: f64,
    /// Reference best m_best: sets the reward scale α = 100 / |m_best − m_init|.
    pub m_best: f64,
    /// Glob patterns (relative to `work/`) of files no action may overwrite, e.g. the data.
    #[serde(default)]
    pub read_only: Vec<String>,
    /// Train / held-out / external.
    #[serde(default = "default_split")]
    pub split: Split,
    /// The file the agent must write in `work/`.
    #[serde(default = "default_submission")]
    pub submission: String,
    /// The answers file in `private/`.
    #[serde(default = "default_answers")]
    pub answers: String,
    /// The task folder (set when loading; not part of the file).
    #[serde(skip)]
    pub root: PathBuf,
    /// Where `public/` and `private/` live relative to `root` (`prepared/` for MLE-bench; empty otherwise).
    #[serde(skip)]
    pub layout: String,
}

fn default_description() -> String {
    "description.md".into()
}
fn default_split() -> Split {
    Split::External
}

/// Loading a task failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `task.toml` is not valid.
    #[error("{path}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key).
        message: String,
    },
    /// The folder is neither a task nor a prepared MLE-bench competition.
    #[error("{0}: not a task folder (expected task.toml, or description.md with prepared/public and prepared/private)")]
    NotATask(PathBuf),
    /// An MLE-bench competition whose metric is not one of ours or cannot be recognised.
    #[error("{path}: cannot tell the metric from description.md; add a task.toml naming one of our metrics")]
    UnknownMetric {
        /// The competition folder.
        path: PathBuf,
    },
    /// The MLE-bench private folder has no single answers CSV.
    #[error("{0}: expected answers.csv (or exactly one CSV file) in prepared/private")]
    NoAnswers(PathBuf),
    /// The name is neither an existing folder nor a built-in task.
    #[error("unknown task `{0}`: not a folder and not a built-in task (see `mlagent tasks list`)")]
    Unknown(String),
    /// The sample submission could not be graded to set m_init.
    #[error("{path}: cannot grade the sample submission to set m_init: {source}")]
    Baseline {
        /// The sample submission.
        path: PathBuf,
        /// The grader's error.
        source: Box<grade::GradeError>,
    },
}

impl TaskSpec {
    /// The effective direction.
    pub fn direction(&self) -> Direction {
        self.direction.unwrap_or(self.metric.direction())
    }

    /// The constants of the reward, eq. 6.
    pub fn reward_scale(&self) -> RewardScale {
        RewardScale { direction: self.direction(), m_init: self.m_init, m_best: self.m_best }
    }

    /// The folder copied into `work/`.
    pub fn public_dir(&self) -> PathBuf {
        self.root.join(&self.layout).join("public")
    }

    /// The private answers CSV.
    pub fn answers_path(&self) -> PathBuf {
        self.root.join(&self.layout).join("private").join(&self.answers)
    }

    /// The research problem text.
    pub fn description_text(&self) -> Result<String, TaskError> {
        let p = self.root.join(&self.description);
        std::fs::read_to_string(&p).map_err(|source| TaskError::Io { path: p, source })
    }

    /// The argv of Execute Script for `script` (a path relative to `work/`).
    pub fn run_argv(&self, script: &str) -> Vec<String> {
        self.run.split_whitespace().map(|w| w.replace("{script}", script)).collect()
    }

    /// Read `task.toml` from a task folder, or adapt a prepared MLE-bench competition.
    pub fn load(dir: &Path) -> Result<TaskSpec, TaskError> {
        let toml_path = dir.join("task.toml");
        let mut spec = if toml_path.is_file() {
            let text = std::fs::read_to_string(&toml_path)
                .map_err(|source| TaskError::Io { path: toml_path.clone(), source })?;
            let mut spec: TaskSpec =
                toml::from_str(&text).map_err(|e| TaskError::Toml { path: toml_path.clone(), message: e.to_string() })?;
            spec.root = dir.to_path_buf();
            if !dir.join("public").is_dir() && dir.join("prepared/public").is_dir() {
                spec.layout = "prepared".into();
            }
            spec
        } else if dir.join("description.md").is_file() && dir.join("prepared/public").is_dir() {
            mle_bench(dir)?
        } else {
            return Err(TaskError::NotATask(dir.to_path_buf()));
        };
        spec.root = std::fs::canonicalize(dir).map_err(|source| TaskError::Io { path: dir.to_path_buf(), source })?;
        Ok(spec)
    }

    /// Serialize as `task.toml` text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("TaskSpec serializes to TOML")
    }
}

/// Our metric for a description's evaluation section (MLE-bench competitions carry no machine-readable metric in the
/// prepared folder). The more specific phrases are tested first.
pub fn metric_from_description(text: &str) -> Option<Metric> {
    let t = text.to_ascii_lowercase();
    let eval = t.find("evaluation").map(|i| &t[i..]).unwrap_or(&t);
    const RULES: [(&str, Metric); 14] = [
        ("quadratic weighted kappa", Metric::Qwk),
        ("mcrmse", Metric::Mcrmse),
        ("columnwise root mean squared", Metric::Mcrmse),
        ("map@5", Metric::MapAt5),
        ("mean average precision", Metric::MapAt5),
        ("rmsle", Metric::Rmsle),
        ("root mean squared logarithmic", Metric::Rmsle),
        ("pearson", Metric::Pearson),
        ("log loss", Metric::LogLoss),
        ("logarithmic loss", Metric::LogLoss),
        ("area under the roc", Metric::Auc),
        ("mean absolute error", Metric::Mae),
        ("root mean squared error", Metric::Rmse),
        ("accuracy", Metric::Accuracy),
    ];
    RULES.iter().find(|(k, _)| eval.contains(k)).map(|(_, m)| *m)
}

/// Adapt a prepared MLE-bench competition: metric from description.md (or a built-in task of the same name), m_init
/// from grading `sample_submission.csv`, m_best = the metric's ideal value. The agent writes its own script.
fn mle_bench(dir: &Path) -> Result<TaskSpec, TaskError> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "competition".into());
    let desc_path = dir.join("description.md");
    let text = std::fs::read_to_string(&desc_path).map_err(|source| TaskError::Io { path: desc_path, source })?;
    let metric = crate::suite::builtin(&name)
        .map(|b| b.metric)
        .or_else(|| metric_from_description(&text))
        .ok_or_else(|| TaskError::UnknownMetric { path: dir.to_path_buf() })?;
    let private = dir.join("prepared/private");
    let answers = if private.join("answers.csv").is_file() {
        "answers.csv".to_string()
    } else {
        let csvs: Vec<String> = std::fs::read_dir(&private)
            .map_err(|source| TaskError::Io { path: private.clone(), source })?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".csv"))
            .collect();
        match csvs.as_slice() {
            [one] => one.clone(),
            _ => return Err(TaskError::NoAnswers(dir.to_path_buf())),
        }
    };
    let ideal = match metric.direction() {
        Direction::Maximize => 1.0,
        Direction::Minimize => 0.0,
    };
    let sample = dir.join("prepared/public/sample_submission.csv");
    let m_init = if sample.is_file() {
        let answers_table = Table::read(&private.join(&answers))
            .map_err(|e| TaskError::Baseline { path: sample.clone(), source: Box::new(e.into()) })?;
        let sample_table =
            Table::read(&sample).map_err(|e| TaskError::Baseline { path: sample.clone(), source: Box::new(e.into()) })?;
        grade::grade_tables(metric, &answers_table, &sample_table)
                .map_err(|e| TaskError::Baseline { path: sample.clone(), source: Box::new(e) })?
    } else {
        // Without a sample submission the baseline is the ideal's opposite end of a unit scale.
        1.0 - ideal
    };
    Ok(TaskSpec {
        name,
        description: "description.md".into(),
        metric,
        direction: None,
        run: default_run(),
        script: default_script(),
        time_limit_secs: 600,
        memory_mb: default_memory(),
        m_init,
        m_best: ideal,
        read_only: vec!["*.csv".into()],
        split: Split::External,
        submission: default_submission(),
        answers,
        root: dir.to_path_buf(),
        layout: "prepared".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_toml_round_trips_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("public")).unwrap();
        std::fs::write(dir.path().join("task.toml"), "name = \"t\"\nmetric = \"rmse\"\nm_init = 2.0\nm_best = 0.5\n")
            .unwrap();
        let t = TaskSpec::load(dir.path()).unwrap();
        assert_eq!((t.run.as_str(), t.script.as_str(), t.time_limit_secs), ("python3 {script}", "train.py", 60));
        assert_eq!(t.direction(), Direction::Minimize);
        assert_eq!(t.run_argv("a b.py"), vec!["python3", "a b.py"], "a script name is one argument");
        assert_eq!(t.run_argv("x.py"), vec!["python3", "x.py"]);
        let back: TaskSpec = toml::from_str(&t.to_toml()).unwrap();
        assert_eq!(back.metric, Metric::Rmse);
        std::fs::write(dir.path().join("task.toml"), "name = \"t\"\nmetric = \"f1\"\nm_init = 2.0\nm_best = 0.5\n")
            .unwrap();
        let e = TaskSpec::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("task.toml") && e.contains("f1"), "{e}");
        assert!(matches!(TaskSpec::load(&dir.path().join("public")), Err(TaskError::NotATask(_))));
    }

    #[test]
    fn mle_bench_competition_is_adapted() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("random-acts-of-pizza");
        std::fs::create_dir_all(c.join("prepared/public")).unwrap();
        std::fs::create_dir_all(c.join("prepared/private")).unwrap();
        std::fs::write(c.join("description.md"), "# Pizza\n## Evaluation\nSubmissions are evaluated on area under the ROC curve.").unwrap();
        std::fs::write(c.join("prepared/private/test.csv"), "request_id,requester_received_pizza\na,1\nb,0\n").unwrap();
        std::fs::write(c.join("prepared/public/sample_submission.csv"), "request_id,requester_received_pizza\na,0\nb,0\n")
            .unwrap();
        let t = TaskSpec::load(&c).unwrap();
        assert_eq!((t.metric, t.m_init, t.m_best), (Metric::Auc, 0.5, 1.0));
        assert!(t.answers_path().ends_with("prepared/private/test.csv"));
        assert!(t.public_dir().ends_with("prepared/public"));
    }

    #[test]
    fn metric_phrases() {
        assert_eq!(metric_from_description("Evaluation: multi-class logarithmic loss"), Some(Metric::LogLoss));
        assert_eq!(metric_from_description("## Evaluation\nquadratic weighted kappa"), Some(Metric::Qwk));
        assert_eq!(metric_from_description("nothing here"), None);
    }
}
