//! The metrics a task can be scored by, and which way is better.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A Kaggle/MLE-bench metric implemented by [`crate::grade`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Metric {
    /// Fraction of rows whose predicted label equals the answer (every target column must match).
    #[serde(rename = "accuracy")]
    Accuracy,
    /// ROC AUC per target column, averaged over columns.
    #[serde(rename = "auc")]
    Auc,
    /// Binary (one column) or multiclass (several one-hot columns) log loss, probabilities clipped and renormalised.
    #[serde(rename = "logloss")]
    LogLoss,
    /// Mean absolute error over all target cells.
    #[serde(rename = "mae")]
    Mae,
    /// Root mean squared error over all target cells.
    #[serde(rename = "rmse")]
    Rmse,
    /// Root mean squared log error per column, averaged over columns.
    #[serde(rename = "rmsle")]
    Rmsle,
    /// Mean column-wise root mean squared error (Feedback Prize ELL).
    #[serde(rename = "mcrmse")]
    Mcrmse,
    /// Quadratic weighted kappa between integer ratings.
    #[serde(rename = "qwk")]
    Qwk,
    /// Mean average precision at 5 over space-separated predicted labels.
    #[serde(rename = "map@5")]
    MapAt5,
    /// Pearson correlation coefficient.
    #[serde(rename = "pearson")]
    Pearson,
}

/// Whether a larger or a smaller metric value is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Larger is better (accuracy, auc, qwk, map@5, pearson).
    Maximize,
    /// Smaller is better (losses and errors).
    Minimize,
}

impl Direction {
    /// The sign `s` of the paper's eq. 6: +1 when higher is better, −1 otherwise.
    pub fn sign(self) -> f64 {
        match self {
            Direction::Maximize => 1.0,
            Direction::Minimize => -1.0,
        }
    }
}

impl Metric {
    /// Every metric, in the order of the CLI help.
    pub const ALL: [Metric; 10] = [
        Metric::Accuracy,
        Metric::Auc,
        Metric::LogLoss,
        Metric::Mae,
        Metric::Rmse,
        Metric::Rmsle,
        Metric::Mcrmse,
        Metric::Qwk,
        Metric::MapAt5,
        Metric::Pearson,
    ];

    /// The name used in `task.toml`, on the command line and in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Auc => "auc",
            Metric::LogLoss => "logloss",
            Metric::Mae => "mae",
            Metric::Rmse => "rmse",
            Metric::Rmsle => "rmsle",
            Metric::Mcrmse => "mcrmse",
            Metric::Qwk => "qwk",
            Metric::MapAt5 => "map@5",
            Metric::Pearson => "pearson",
        }
    }

    /// The natural direction of the metric.
    pub fn direction(self) -> Direction {
        match self {
            Metric::Accuracy | Metric::Auc | Metric::Qwk | Metric::MapAt5 | Metric::Pearson => Direction::Maximize,
            Metric::LogLoss | Metric::Mae | Metric::Rmse | Metric::Rmsle | Metric::Mcrmse => Direction::Minimize,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of [`Metric::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric `{0}` (expected one of accuracy, auc, logloss, mae, rmse, rmsle, mcrmse, qwk, map@5, pearson)")]
pub struct UnknownMetric(pub String);

impl FromStr for Metric {
    type Err = UnknownMetric;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let alias = match lower.as_str() {
            "map5" | "map_at_5" | "mapk" => "map@5",
            "log_loss" | "cross_entropy" => "logloss",
            "roc_auc" => "auc",
            other => other,
        };
        Metric::ALL.into_iter().find(|m| m.name() == alias).ok_or_else(|| UnknownMetric(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
        }
        assert_eq!("MAP@5".parse::<Metric>().unwrap(), Metric::MapAt5);
        assert!("f1".parse::<Metric>().unwrap_err().to_string().contains("`f1`"));
        assert_eq!(Metric::Rmse.direction().sign(), -1.0);
    }
}
