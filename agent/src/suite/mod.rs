//! The built-in offline task suite: 9 training and 10 held-out miniatures of the Kaggle competitions ML-Agent uses
//! (arXiv 2505.23723, Table 1), generated deterministically from a seed.
//!
//! Each generator draws data with a real, learnable signal, writes a standard-library starter `train.py` that runs in a
//! few seconds and scores `baseline` (recorded here and checked by the test suite), and private answers. `m_best` is
//! the score of the generating process's own noise-free predictions, computed by our graders at preparation time.

mod common;
mod graph;
mod images;
mod tabular;
mod text;

pub use common::Generated;

use crate::csvio::CsvError;
use crate::grade::{self, GradeError};
use crate::metric::Metric;
use crate::rng::Rng;
use crate::task::{Split, TaskError, TaskSpec};
use std::path::{Path, PathBuf};

/// The seed of the published suite.
pub const DEFAULT_SEED: u64 = 250_523_723;

/// Bumped whenever a generator changes, so cached copies are regenerated.
pub const SUITE_VERSION: u32 = 1;

/// One built-in task.
pub struct Builtin {
    /// Kaggle slug.
    pub name: &'static str,
    /// Train or held-out.
    pub split: Split,
    /// Metric.
    pub metric: Metric,
    /// The starter's score on the suite generated with [`DEFAULT_SEED`] (m_init).
    pub baseline: f64,
    /// Generate the task.
    pub generate: fn(&mut Rng) -> Generated,
}

macro_rules! task {
    ($name:literal, $split:ident, $metric:ident, $baseline:expr, $f:path) => {
        Builtin { name: $name, split: Split::$split, metric: Metric::$metric, baseline: $baseline, generate: $f }
    };
}

/// The suite, training tasks first.
pub static SUITE: [Builtin; 19] = [
    task!("cifar-10", Train, Accuracy, 0.396, images::cifar10),
    task!("aerial-cactus-identification", Train, Auc, 0.8993260612797888, images::aerial_cactus),
    task!("dogs-vs-cats-redux-kernels-edition", Train, LogLoss, 0.6767927126771142, images::dogs_vs_cats),
    task!("plant-pathology-2020-fgvc7", Train, Auc, 0.8549606693566637, images::plant_pathology),
    task!("home-data-for-ml-course", Train, Mae, 52432.7, tabular::home_data),
    task!("spaceship-titanic", Train, Accuracy, 0.6366666666666667, tabular::spaceship),
    task!("nomad2018-predict-transparent-conductors", Train, Rmsle, 0.13581930531468625, tabular::nomad),
    task!("feedback-prize-english-language-learning", Train, Mcrmse, 0.5354814863941824, text::feedback),
    task!("ogbn-arxiv", Train, Accuracy, 0.696, graph::ogbn_arxiv),
    task!("denoising-dirty-documents", HeldOut, Rmse, 0.2126232621732332, images::denoising),
    task!("leaf-classification", HeldOut, LogLoss, 1.0977062789873702, images::leaf),
    task!("statoil-iceberg-classifier-challenge", HeldOut, LogLoss, 0.6184125144585445, images::statoil),
    task!("whale-categorization-playground", HeldOut, MapAt5, 0.27788888888888896, images::whale),
    task!("learning-agency-lab-automated-essay-scoring-2", HeldOut, Qwk, 0.38341917591125196, text::aes2),
    task!("detecting-insults-in-social-commentary", HeldOut, Accuracy, 0.606, text::insults),
    task!("spooky-author-identification", HeldOut, LogLoss, 1.0406789918162187, text::spooky),
    task!("jigsaw-toxic-comment-classification-challenge", HeldOut, Auc, 0.6874005081491283, text::jigsaw),
    task!("us-patent-phrase-to-phrase-matching", HeldOut, Pearson, 0.6177244689325477, text::patent),
    task!("tabular-playground-series-dec-2021", HeldOut, Accuracy, 0.20333333333333334, tabular::tps_dec2021),
];

/// A built-in task by name.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    SUITE.iter().find(|b| b.name == name)
}

/// Preparing a task failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuiteError {
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A table could not be written.
    #[error(transparent)]
    Csv(#[from] CsvError),
    /// The oracle could not be graded (a generator bug).
    #[error("{task}: grading the oracle failed: {source}")]
    Oracle {
        /// The task.
        task: &'static str,
        /// The grader's error.
        source: GradeError,
    },
}

fn write(path: &Path, content: &str) -> Result<(), SuiteError> {
    let io = |source| SuiteError::Io { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, content).map_err(io)
}

/// Generate one task into `dir` (task.toml, description.md, public/, private/).
pub fn prepare(b: &'static Builtin, seed: u64, dir: &Path) -> Result<TaskSpec, SuiteError> {
    let mut rng = Rng::new(seed, b.name);
    let g = (b.generate)(&mut rng);
    let m_best = grade::grade_tables(b.metric, &g.answers, &g.oracle)
        .map_err(|source| SuiteError::Oracle { task: b.name, source })?;
    write(&dir.join("description.md"), &g.description)?;
    for f in &g.public {
        write(&dir.join("public").join(&f.path), &f.content)?;
    }
    g.answers.write(&dir.join("private/answers.csv"))?;
    let spec = TaskSpec {
        name: b.name.into(),
        description: "description.md".into(),
        metric: b.metric,
        direction: None,
        run: "python3 {script}".into(),
        script: "train.py".into(),
        time_limit_secs: 60,
        memory_mb: 4096,
        m_init: b.baseline,
        m_best,
        read_only: g.read_only.clone(),
        split: b.split,
        submission: "submission.csv".into(),
        answers: "answers.csv".into(),
        root: dir.to_path_buf(),
        layout: String::new(),
    };
    let header = format!("# Generated by mlagent (suite version {SUITE_VERSION}, seed {seed}); do not edit.\n");
    write(&dir.join("task.toml"), &(header + &spec.to_toml()))?;
    Ok(spec)
}

/// Generate every task into `out/<name>`.
pub fn prepare_all(seed: u64, out: &Path) -> Result<Vec<TaskSpec>, SuiteError> {
    SUITE.iter().map(|b| prepare(b, seed, &out.join(b.name))).collect()
}

/// Where generated tasks are cached: `$MLAGENT_CACHE`, else `$XDG_CACHE_HOME/mlagent`, else `~/.cache/mlagent`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("MLAGENT_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("mlagent");
    }
    std::env::var_os("HOME").map_or_else(|| std::env::temp_dir().join("mlagent-cache"), |h| PathBuf::from(h).join(".cache/mlagent"))
}

/// A task by folder or built-in name; built-in tasks are generated on demand into the cache.
pub fn resolve(name_or_dir: &str, seed: u64) -> Result<TaskSpec, TaskError> {
    let p = Path::new(name_or_dir);
    if p.is_dir() {
        return TaskSpec::load(p);
    }
    let b = builtin(name_or_dir).ok_or_else(|| TaskError::Unknown(name_or_dir.into()))?;
    let dir = cache_root().join(format!("v{SUITE_VERSION}-seed{seed}")).join(b.name);
    if !dir.join("task.toml").is_file() {
        // Generate into a temporary sibling and rename, so concurrent processes never see half a task.
        let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        prepare(b, seed, &tmp).map_err(|e| TaskError::Io { path: tmp.clone(), source: std::io::Error::other(e.to_string()) })?;
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another process won the race; use its copy.
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    TaskSpec::load(&dir)
}

#[cfg(test)]
mod tests;
