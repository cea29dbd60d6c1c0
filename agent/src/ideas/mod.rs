//! Idea pools: for each task, at least 100 distinct, concrete ideas, each realisable as a change to the task's starter.
//!
//! ML-Agent (arXiv 2505.23723, §3.1, "exploration-enriched fine-tuning") generates a pool of candidate ideas per task,
//! keeps the 10 most diverse by embedding distance, and prompts the expert with 1–3 of them. Offline, the pool comes
//! from a generator over *families × parameters*: a [`Plan`] names a feature set, a scaling, a model with its
//! hyperparameters, a data-handling step, a validation scheme, an ensemble and a post-processing step; each family
//! varies one or two of these around a sensible default, so ideas differ in what they try, not only in wording. Every
//! plan compiles to a real standard-library Python `train.py` ([`program::program`]); the scripted expert writes that
//! file. With an LLM endpoint, [`llm_pool`] asks the model for ideas and deduplicates them (those carry no plan and are
//! for the LLM expert).

pub mod adapters;
pub mod editor;
pub mod program;

use crate::helper::{Helper, HelperError};
use adapters::{Adapter, Kind};
use serde::{Deserialize, Serialize};

/// A model and its hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Model {
    /// Nearest class centroid with softmax scores (classification).
    Centroid {
        /// Cosine similarity instead of Euclidean distance.
        cosine: bool,
    },
    /// k nearest neighbours averaging the neighbours' targets.
    Knn {
        /// Neighbours.
        k: usize,
        /// Inverse-distance weights.
        weighted: bool,
    },
    /// Closed-form ridge regression (on one-hot targets for classification).
    Ridge {
        /// Penalty, multiplied by the number of rows.
        lambda: f64,
    },
    /// Softmax regression / least squares by SGD.
    Linear {
        /// Initial learning rate.
        lr: f64,
        /// Passes over the data.
        epochs: usize,
        /// Weight decay.
        l2: f64,
    },
    /// Gaussian naive Bayes (classification).
    NaiveBayes {
        /// Variance smoothing.
        smoothing: f64,
    },
    /// Gradient-boosted decision stumps.
    Boosting {
        /// Rounds.
        rounds: usize,
        /// Shrinkage.
        lr: f64,
    },
    /// One-hidden-layer tanh network by SGD.
    Mlp {
        /// Hidden units.
        hidden: usize,
        /// Passes over the data.
        epochs: usize,
        /// Initial learning rate.
        lr: f64,
    },
}

/// Feature scaling fitted on the training rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scaling {
    /// Raw features.
    None,
    /// Zero mean, unit variance.
    Standard,
    /// Rescaled to [0, 1].
    MinMax,
}

/// A data-handling step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum DataStep {
    /// Nothing.
    None,
    /// Add left-right mirrored training images.
    FlipAugment,
    /// Oversample classes to the largest class size.
    Balance,
    /// Drop rows whose target is more than `z` standard deviations out.
    DropOutliers {
        /// Threshold.
        z: f64,
    },
    /// Fit log1p of the (non-negative) targets.
    LogTarget,
    /// Clip features to their `[q, 1 − q]` training quantiles.
    Winsorize {
        /// Lower quantile.
        q: f64,
    },
}

/// How the script checks itself before the final fit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case")]
pub enum Validation {
    /// None.
    None,
    /// Hold out a share of the rows, report, refit on all.
    Holdout {
        /// Held-out share in percent.
        percent: usize,
    },
    /// K-fold cross-validation choosing the ridge penalty (replaces the model by the chosen ridge).
    KFoldRidge {
        /// Folds.
        folds: usize,
    },
}

/// Combining several models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Ensemble {
    /// One model.
    None,
    /// Average with a second model.
    Blend {
        /// The second model.
        with: Model,
    },
    /// Average of `n` models fitted on bootstrap resamples.
    Bagging {
        /// Members.
        n: usize,
    },
}

/// Post-processing of predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Post {
    /// None.
    None,
    /// Probabilities bounded below by `eps` (classification).
    ClipProba {
        /// Floor.
        eps: f64,
    },
    /// Probabilities raised to 1/t and renormalised (classification).
    Temperature {
        /// Temperature.
        t: f64,
    },
    /// Predictions clipped to the training target range (regression).
    ClipRange,
}

/// A complete recipe for the task's `train.py`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Feature set name (see the task's adapter).
    pub features: String,
    /// Scaling.
    pub scaling: Scaling,
    /// Model.
    pub model: Model,
    /// Ensemble.
    pub ensemble: Ensemble,
    /// Data handling.
    pub data: DataStep,
    /// Validation.
    pub validation: Validation,
    /// Post-processing.
    pub post: Post,
}

/// What kind of change an idea is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// A different model family.
    ModelFamily,
    /// The same family with other hyperparameters.
    Hyperparameters,
    /// Feature engineering.
    Features,
    /// Scaling / regularisation of the inputs.
    Regularisation,
    /// Data handling (augmentation, balancing, outliers, target transform).
    DataHandling,
    /// Validation scheme.
    Validation,
    /// Ensembling.
    Ensembling,
    /// Post-processing of predictions.
    PostProcessing,
    /// Proposed by an LLM.
    Proposed,
}

/// One candidate idea.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Idea {
    /// `task#NNN`, stable for a task.
    pub id: String,
    /// The task.
    pub task: String,
    /// What kind of change it is.
    pub family: Family,
    /// The idea in words (what the expert is told, what is embedded).
    pub text: String,
    /// The recipe, for generated ideas.
    pub plan: Option<Plan>,
}

/// Building an idea pool failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdeaError {
    /// No offline generator for the task.
    #[error("no offline idea generator for task `{0}` (available: the nine training tasks); use an LLM expert")]
    NoGenerator(String),
    /// Fewer ideas exist than were asked for.
    #[error("task `{task}`: asked for {wanted} ideas but the generator has {available}")]
    TooFew {
        /// The task.
        task: String,
        /// Requested.
        wanted: usize,
        /// Available.
        available: usize,
    },
    /// A plan does not fit its task.
    #[error("task `{task}`: {message}")]
    Plan {
        /// The task.
        task: String,
        /// What was wrong.
        message: String,
    },
    /// The LLM could not be asked.
    #[error("idea generation by LLM failed: {0}")]
    Helper(#[from] HelperError),
}

fn fmt(x: f64) -> String {
    format!("{x}")
}

impl Model {
    fn describe(&self, kind: Kind) -> String {
        let role = if kind == Kind::Classify { "classifier" } else { "regressor" };
        match self {
            Model::Centroid { cosine } => format!(
                "a nearest-centroid classifier scoring classes by {}",
                if *cosine { "cosine similarity" } else { "scaled Euclidean distance" }
            ),
            Model::Knn { k, weighted } => format!(
                "a {k}-nearest-neighbour {role} with {} votes",
                if *weighted { "inverse-distance weighted" } else { "uniform" }
            ),
            Model::Ridge { lambda } => format!(
                "closed-form ridge regression (penalty {} x n){}",
                fmt(*lambda),
                if kind == Kind::Classify { " on one-hot class indicators" } else { "" }
            ),
            Model::Linear { lr, epochs, l2 } => format!(
                "{} trained by SGD (learning rate {}, {epochs} epochs, weight decay {})",
                if kind == Kind::Classify { "multinomial logistic regression" } else { "a linear least-squares model" },
                fmt(*lr),
                fmt(*l2)
            ),
            Model::NaiveBayes { smoothing } => format!("Gaussian naive Bayes with variance smoothing {}", fmt(*smoothing)),
            Model::Boosting { rounds, lr } => {
                format!("gradient-boosted decision stumps ({rounds} rounds, shrinkage {})", fmt(*lr))
            }
            Model::Mlp { hidden, epochs, lr } => format!(
                "a one-hidden-layer tanh neural network with {hidden} units ({epochs} epochs of SGD, learning rate {})",
                fmt(*lr)
            ),
        }
    }

    fn family_key(&self) -> &'static str {
        match self {
            Model::Centroid { .. } => "centroid",
            Model::Knn { .. } => "knn",
            Model::Ridge { .. } => "ridge",
            Model::Linear { .. } => "linear",
            Model::NaiveBayes { .. } => "nb",
            Model::Boosting { .. } => "boosting",
            Model::Mlp { .. } => "mlp",
        }
    }
}

impl Plan {
    /// The idea in words.
    fn describe(&self, family: Family, a: &Adapter) -> String {
        let feats = a.feature_set(&self.features).map_or(self.features.as_str(), |f| f.text);
        let model = self.model.describe(a.kind);
        let scaling = match self.scaling {
            Scaling::None => "raw unscaled inputs",
            Scaling::Standard => "features standardised to zero mean and unit variance",
            Scaling::MinMax => "features min-max rescaled to [0, 1]",
        };
        let data = match self.data {
            DataStep::None => String::new(),
            DataStep::FlipAugment => "Augment the training set with left-right mirrored images".into(),
            DataStep::Balance => "Oversample minority classes to balance the training set".into(),
            DataStep::DropOutliers { z } => format!("Drop training rows whose target lies beyond {} standard deviations", fmt(z)),
            DataStep::LogTarget => "Train on log1p-transformed targets and invert with expm1".into(),
            DataStep::Winsorize { q } => format!("Winsorize every feature at its {} and {} training quantiles", fmt(q), fmt(1.0 - q)),
        };
        let validation = match self.validation {
            Validation::None => String::new(),
            Validation::Holdout { percent } => format!("Hold out {percent}% of the training rows as a validation split"),
            Validation::KFoldRidge { folds } => format!("Choose the ridge penalty by {folds}-fold cross-validation"),
        };
        let ensemble = match &self.ensemble {
            Ensemble::None => String::new(),
            Ensemble::Blend { with } => format!("blend (average) its predictions with {}", with.describe(a.kind)),
            Ensemble::Bagging { n } => format!("bag {n} copies fitted on bootstrap resamples and average them"),
        };
        let post = match self.post {
            Post::None => String::new(),
            Post::ClipProba { eps } => format!("Clip predicted probabilities at {} before writing", fmt(eps)),
            Post::Temperature { t } => format!("Apply temperature {} to the predicted probabilities", fmt(t)),
            Post::ClipRange => "Clip predictions to the range seen in the training targets".into(),
        };
        match family {
            Family::ModelFamily => format!("Replace the starter's model with {model}, using {feats} and {scaling}."),
            Family::Hyperparameters => format!("Tune the model: use {model} on {feats} with {scaling}."),
            Family::Features => format!("Feature engineering: feed {feats} to {model} ({scaling})."),
            Family::Regularisation => format!("Input preprocessing: use {scaling} for {model} on {feats}."),
            Family::DataHandling => format!("{data}, then fit {model} on {feats} with {scaling}."),
            Family::Validation => {
                format!("{validation} to check {model} on {feats} ({scaling}), then refit on all rows.")
            }
            Family::Ensembling => format!("Ensemble: fit {model} on {feats} ({scaling}) and {ensemble}."),
            Family::PostProcessing => format!("{post}; the model is {model} on {feats} with {scaling}."),
            Family::Proposed => format!("{model} on {feats}"),
        }
    }
}

/// The models a task can afford, with the hyperparameter grids the pool explores.
fn model_grid(a: &Adapter) -> Vec<Model> {
    let mut out = Vec::new();
    if a.kind == Kind::Classify {
        out.push(Model::Centroid { cosine: false });
        out.push(Model::Centroid { cosine: true });
    }
    for k in [1, 3, 5, 7, 11, 15, 21, 31] {
        for weighted in [false, true] {
            out.push(Model::Knn { k, weighted });
        }
    }
    for lambda in [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0] {
        out.push(Model::Ridge { lambda });
    }
    for lr in [0.003, 0.01, 0.03, 0.1] {
        for epochs in [5, 10] {
            for l2 in [0.0, 0.001] {
                out.push(Model::Linear { lr, epochs, l2 });
            }
        }
    }
    if a.kind == Kind::Classify {
        for smoothing in [0.001, 0.01, 0.1] {
            out.push(Model::NaiveBayes { smoothing });
        }
    }
    if a.boosting {
        for rounds in [20, 50, 100] {
            for lr in [0.1, 0.3] {
                out.push(Model::Boosting { rounds, lr });
            }
        }
    }
    for hidden in [8, 16] {
        for epochs in [4, 8] {
            out.push(Model::Mlp { hidden, epochs, lr: 0.05 });
        }
    }
    out
}

/// The offline idea pool of a task: every idea the generator knows, in a fixed order, with distinct texts.
pub fn pool(task: &str) -> Result<Vec<Idea>, IdeaError> {
    let a = adapters::adapter(task).ok_or_else(|| IdeaError::NoGenerator(task.into()))?;
    let default_features = a.features[0].name.to_string();
    let base = |model: Model| Plan {
        features: default_features.clone(),
        scaling: Scaling::Standard,
        model,
        ensemble: Ensemble::None,
        data: DataStep::None,
        validation: Validation::None,
        post: Post::None,
    };
    let knn = Model::Knn { k: 11, weighted: true };
    let ridge = Model::Ridge { lambda: 0.01 };
    let linear = Model::Linear { lr: 0.03, epochs: 8, l2: 0.0 };
    let third = if a.kind == Kind::Classify { Model::Centroid { cosine: false } } else { Model::Boosting { rounds: 50, lr: 0.3 } };
    let trio = [knn.clone(), ridge.clone(), linear.clone()];

    let mut plans: Vec<(Family, Plan)> = Vec::new();
    // Model families and their hyperparameters.
    let mut seen_family = Vec::new();
    for m in model_grid(a) {
        let fam = if seen_family.contains(&m.family_key()) { Family::Hyperparameters } else { Family::ModelFamily };
        seen_family.push(m.family_key());
        plans.push((fam, base(m)));
    }
    // Feature engineering.
    for f in a.features.iter().skip(1) {
        for m in &trio {
            plans.push((Family::Features, Plan { features: f.name.into(), ..base(m.clone()) }));
        }
    }
    // Input scaling.
    for s in [Scaling::None, Scaling::MinMax] {
        for m in &trio {
            plans.push((Family::Regularisation, Plan { scaling: s, ..base(m.clone()) }));
        }
    }
    // Data handling.
    let mut steps = vec![DataStep::Winsorize { q: 0.01 }, DataStep::Winsorize { q: 0.05 }];
    if a.image {
        steps.push(DataStep::FlipAugment);
    }
    match a.kind {
        Kind::Classify => steps.push(DataStep::Balance),
        Kind::Regress => {
            steps.push(DataStep::DropOutliers { z: 3.0 });
            steps.push(DataStep::DropOutliers { z: 2.5 });
            if a.nonneg_targets {
                steps.push(DataStep::LogTarget);
            }
        }
    }
    for d in steps {
        for m in &trio {
            plans.push((Family::DataHandling, Plan { data: d, ..base(m.clone()) }));
        }
    }
    // Validation.
    for percent in [10, 20, 30] {
        for m in [&knn, &linear] {
            plans.push((Family::Validation, Plan { validation: Validation::Holdout { percent }, ..base(m.clone()) }));
        }
    }
    for folds in [3, 5] {
        plans.push((Family::Validation, Plan { validation: Validation::KFoldRidge { folds }, ..base(ridge.clone()) }));
    }
    // Ensembles.
    let pairs = [(&knn, &ridge), (&knn, &linear), (&ridge, &linear), (&knn, &third), (&linear, &third)];
    for (x, y) in pairs {
        plans.push((Family::Ensembling, Plan { ensemble: Ensemble::Blend { with: y.clone() }, ..base(x.clone()) }));
    }
    for n in [5, 10] {
        for m in [&ridge, &third] {
            plans.push((Family::Ensembling, Plan { ensemble: Ensemble::Bagging { n }, ..base(m.clone()) }));
        }
    }
    // Post-processing.
    let posts: Vec<Post> = match a.kind {
        Kind::Classify => vec![
            Post::ClipProba { eps: 0.005 },
            Post::ClipProba { eps: 0.02 },
            Post::ClipProba { eps: 0.05 },
            Post::Temperature { t: 0.7 },
            Post::Temperature { t: 1.5 },
        ],
        Kind::Regress => vec![Post::ClipRange],
    };
    for p in posts {
        for m in [&knn, &linear] {
            plans.push((Family::PostProcessing, Plan { post: p, ..base(m.clone()) }));
        }
    }

    let mut ideas: Vec<Idea> = Vec::new();
    for (family, plan) in plans {
        let text = plan.describe(family, a);
        if ideas.iter().any(|i| i.text == text) {
            continue;
        }
        ideas.push(Idea { id: format!("{task}#{:03}", ideas.len()), task: task.into(), family, text, plan: Some(plan) });
    }
    Ok(ideas)
}

/// `n` ideas of the offline pool: the whole pool when it has exactly `n`, otherwise a seeded sample keeping pool order.
pub fn sample_pool(task: &str, n: usize, seed: u64) -> Result<Vec<Idea>, IdeaError> {
    let all = pool(task)?;
    if n > all.len() {
        return Err(IdeaError::TooFew { task: task.into(), wanted: n, available: all.len() });
    }
    let mut idx: Vec<usize> = (0..all.len()).collect();
    crate::rng::Rng::new(seed, &format!("ideas/{task}")).shuffle(&mut idx);
    let mut keep: Vec<usize> = idx[..n].to_vec();
    keep.sort_unstable();
    Ok(keep.into_iter().map(|i| all[i].clone()).collect())
}

/// The Python `train.py` implementing an idea (generated ideas only).
pub fn program_for(idea: &Idea) -> Result<String, IdeaError> {
    let a = adapters::adapter(&idea.task).ok_or_else(|| IdeaError::NoGenerator(idea.task.clone()))?;
    let plan = idea.plan.as_ref().ok_or_else(|| IdeaError::Plan {
        task: idea.task.clone(),
        message: format!("idea {} has no plan (LLM ideas are for the LLM expert)", idea.id),
    })?;
    program::program(a, plan, &idea.text)
}

/// Ask an LLM for `n` ideas for a task (one per line), in rounds, deduplicated by normalised text.
pub fn llm_pool(helper: &dyn Helper, task: &str, description: &str, n: usize) -> Result<Vec<Idea>, IdeaError> {
    let mut ideas: Vec<Idea> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for round in 0..(n / 10 + 5) {
        if ideas.len() >= n {
            break;
        }
        let prompt = format!(
            "Research problem:\n{description}\n\nThe starter train.py is a weak standard-library Python baseline. List \
             {} distinct, concrete ideas to improve the metric, each realisable as a change to train.py (model family, \
             hyperparameters, feature engineering, regularisation, ensembling, data handling, validation). One idea per \
             line, no numbering. Round {round}: avoid these already listed:\n{}",
            (n - ideas.len()).min(25),
            ideas.iter().map(|i| i.text.as_str()).collect::<Vec<_>>().join("\n")
        );
        let reply = helper.complete(&prompt)?;
        for line in reply.lines() {
            let text = line.trim().trim_start_matches(|c: char| c.is_ascii_digit() || "-*.) ".contains(c)).trim();
            let key: String = text.to_lowercase().chars().filter(|c| c.is_alphanumeric()).collect();
            if text.len() < 12 || !seen.insert(key) || ideas.len() >= n {
                continue;
            }
            ideas.push(Idea {
                id: format!("{task}#{:03}", ideas.len()),
                task: task.into(),
                family: Family::Proposed,
                text: text.into(),
                plan: None,
            });
        }
    }
    Ok(ideas)
}

#[cfg(test)]
mod tests;
