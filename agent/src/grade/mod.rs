//! Graders: score a submission CSV against an answers CSV, Kaggle/MLE-bench style.
//!
//! Convention: the first column of each file is the row id whatever its header (`id`, `essay_id`, `Image`, …); rows are
//! matched by id, never by order; target columns are matched by header name (the answers' columns after the id). Every
//! failure names the file, row id or column so that an agent (or a person) can fix the submission.

pub mod metrics;

use crate::csvio::{CsvError, Table};
use crate::metric::Metric;
use std::collections::HashMap;
use std::path::Path;

/// Why a submission could not be graded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GradeError {
    /// A file could not be read or is not CSV.
    #[error(transparent)]
    Csv(#[from] CsvError),
    /// The answers file has an id column but no target column.
    #[error("answers have no target column after the id column `{0}`")]
    NoTargets(String),
    /// A target column of the answers is absent from the submission.
    #[error("submission is missing column `{column}` (expected columns: {expected})")]
    MissingColumn {
        /// The missing column.
        column: String,
        /// Every column the submission needs.
        expected: String,
    },
    /// An id occurs twice in one file.
    #[error("{file} has duplicate id `{id}`")]
    DuplicateId {
        /// "submission" or "answers".
        file: &'static str,
        /// The repeated id.
        id: String,
    },
    /// The submission lacks rows for some answer ids.
    #[error("submission is missing {count} id(s), first `{id}` (one row per test id is required)")]
    MissingId {
        /// The first missing id, in answers order.
        id: String,
        /// How many are missing.
        count: usize,
    },
    /// The submission has ids that are not in the answers.
    #[error("submission has {count} unexpected id(s), first `{id}`")]
    ExtraId {
        /// The first unexpected id, in submission order.
        id: String,
        /// How many there are.
        count: usize,
    },
    /// A cell that must be a number (or an integer rating, or 0/1) is not.
    #[error("{file} row id `{id}`, column `{column}`: `{value}` is not {expected}")]
    BadCell {
        /// "submission" or "answers".
        file: &'static str,
        /// Row id.
        id: String,
        /// Column name.
        column: String,
        /// The offending text.
        value: String,
        /// What was expected ("a number", "0 or 1", …).
        expected: &'static str,
    },
    /// The metric is undefined on these inputs (e.g. AUC with one class, kappa of constant ratings).
    #[error("{metric} undefined for column `{column}`: {reason}")]
    Undefined {
        /// The metric.
        metric: Metric,
        /// The column.
        column: String,
        /// Why.
        reason: String,
    },
    /// The answers file has no rows.
    #[error("answers file has no rows")]
    NoRows,
}

/// The aligned data a metric sees: per target column, the answer and the submission cell of every answer row.
struct Aligned {
    ids: Vec<String>,
    columns: Vec<String>,
    /// `answers[c][r]`, `submitted[c][r]` for column c and answers row r.
    answers: Vec<Vec<String>>,
    submitted: Vec<Vec<String>>,
}

fn index_ids(t: &Table, file: &'static str) -> Result<HashMap<String, usize>, GradeError> {
    let mut map = HashMap::with_capacity(t.rows.len());
    for (i, row) in t.rows.iter().enumerate() {
        let id = row[0].trim().to_string();
        if map.insert(id.clone(), i).is_some() {
            return Err(GradeError::DuplicateId { file, id });
        }
    }
    Ok(map)
}

fn align(answers: &Table, submission: &Table) -> Result<Aligned, GradeError> {
    if answers.header.len() < 2 {
        return Err(GradeError::NoTargets(answers.header.first().cloned().unwrap_or_default()));
    }
    if answers.rows.is_empty() {
        return Err(GradeError::NoRows);
    }
    let columns: Vec<String> = answers.header[1..].to_vec();
    let mut sub_cols = Vec::with_capacity(columns.len());
    for c in &columns {
        // Exact header first; a case or whitespace difference is forgiven, as Kaggle's own checker does for headers.
        let found = submission.column(c).or_else(|| {
            submission.header.iter().skip(1).position(|h| h.trim().eq_ignore_ascii_case(c.trim())).map(|i| i + 1)
        });
        match found {
            Some(i) if i > 0 => sub_cols.push(i),
            _ => return Err(GradeError::MissingColumn { column: c.clone(), expected: answers.header.join(",") }),
        }
    }
    index_ids(answers, "answers")?;
    let sub_index = index_ids(submission, "submission")?;
    let missing: Vec<&str> =
        answers.rows.iter().map(|r| r[0].trim()).filter(|id| !sub_index.contains_key(*id)).collect();
    if let Some(first) = missing.first() {
        return Err(GradeError::MissingId { id: first.to_string(), count: missing.len() });
    }
    if submission.rows.len() > answers.rows.len() {
        let ans: std::collections::HashSet<&str> = answers.rows.iter().map(|r| r[0].trim()).collect();
        let extra: Vec<&str> = submission.rows.iter().map(|r| r[0].trim()).filter(|id| !ans.contains(id)).collect();
        return Err(GradeError::ExtraId { id: extra[0].to_string(), count: extra.len() });
    }
    let ids: Vec<String> = answers.rows.iter().map(|r| r[0].trim().to_string()).collect();
    let answers_cols = (1..answers.header.len())
        .map(|c| answers.rows.iter().map(|r| r[c].trim().to_string()).collect())
        .collect();
    let submitted = sub_cols
        .iter()
        .map(|&c| ids.iter().map(|id| submission.rows[sub_index[id]][c].trim().to_string()).collect())
        .collect();
    Ok(Aligned { ids, columns, answers: answers_cols, submitted })
}

impl Aligned {
    fn numbers(&self, c: usize, from_submission: bool) -> Result<Vec<f64>, GradeError> {
        let (cells, file) =
            if from_submission { (&self.submitted[c], "submission") } else { (&self.answers[c], "answers") };
        cells
            .iter()
            .enumerate()
            .map(|(r, v)| match v.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(x),
                _ => Err(self.bad(file, r, c, v, "a finite number")),
            })
            .collect()
    }

    fn binary(&self, c: usize) -> Result<Vec<bool>, GradeError> {
        self.answers[c]
            .iter()
            .enumerate()
            .map(|(r, v)| match parse_bool(v) {
                Some(b) => Ok(b),
                None => Err(self.bad("answers", r, c, v, "0 or 1")),
            })
            .collect()
    }

    fn integers(&self, c: usize, from_submission: bool) -> Result<Vec<i64>, GradeError> {
        let file = if from_submission { "submission" } else { "answers" };
        let xs = self.numbers(c, from_submission)?;
        let cells = if from_submission { &self.submitted[c] } else { &self.answers[c] };
        xs.iter()
            .enumerate()
            .map(|(r, x)| {
                if x.fract() == 0.0 { Ok(*x as i64) } else { Err(self.bad(file, r, c, &cells[r], "an integer rating")) }
            })
            .collect()
    }

    fn bad(&self, file: &'static str, r: usize, c: usize, v: &str, expected: &'static str) -> GradeError {
        GradeError::BadCell { file, id: self.ids[r].clone(), column: self.columns[c].clone(), value: v.into(), expected }
    }

    fn undefined(&self, metric: Metric, c: usize, reason: String) -> GradeError {
        GradeError::Undefined { metric, column: self.columns[c].clone(), reason }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "1.0" | "true" => Some(true),
        "0" | "0.0" | "false" => Some(false),
        _ => None,
    }
}

/// Whether two label cells are equal: numerically when both are numbers ("3" = "3.0"), as booleans when both are
/// booleans ("True" = "true"), else as exact strings.
fn same_label(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => match (parse_bool(a), parse_bool(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

/// Grade two parsed tables. See the module docs for the conventions.
pub fn grade_tables(metric: Metric, answers: &Table, submission: &Table) -> Result<f64, GradeError> {
    let a = align(answers, submission)?;
    let n_cols = a.columns.len();
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    Ok(match metric {
        Metric::Accuracy => {
            let matches: Vec<bool> = (0..a.ids.len())
                .map(|r| (0..n_cols).all(|c| same_label(&a.answers[c][r], &a.submitted[c][r])))
                .collect();
            metrics::accuracy(&matches)
        }
        Metric::Auc => {
            let mut per = Vec::with_capacity(n_cols);
            for c in 0..n_cols {
                let (y, s) = (a.binary(c)?, a.numbers(c, true)?);
                per.push(metrics::auc(&y, &s).map_err(|e| a.undefined(metric, c, e))?);
            }
            mean(per)
        }
        Metric::LogLoss if n_cols == 1 => metrics::binary_logloss(&a.binary(0)?, &a.numbers(0, true)?),
        Metric::LogLoss => {
            let onehot: Vec<Vec<bool>> = (0..n_cols).map(|c| a.binary(c)).collect::<Result<_, _>>()?;
            let probs: Vec<Vec<f64>> = (0..n_cols).map(|c| a.numbers(c, true)).collect::<Result<_, _>>()?;
            let mut truth = Vec::with_capacity(a.ids.len());
            let mut rows = Vec::with_capacity(a.ids.len());
            for r in 0..a.ids.len() {
                let hot: Vec<usize> = (0..n_cols).filter(|&c| onehot[c][r]).collect();
                if hot.len() != 1 {
                    return Err(a.bad("answers", r, 0, "", "a one-hot row (exactly one 1 among the class columns)"));
                }
                truth.push(hot[0]);
                rows.push((0..n_cols).map(|c| probs[c][r]).collect());
            }
            metrics::multiclass_logloss(&truth, &rows)
        }
        Metric::Mae | Metric::Rmse => {
            let (mut y, mut p) = (Vec::new(), Vec::new());
            for c in 0..n_cols {
                y.extend(a.numbers(c, false)?);
                p.extend(a.numbers(c, true)?);
            }
            if metric == Metric::Mae { metrics::mae(&y, &p) } else { metrics::rmse(&y, &p) }
        }
        Metric::Rmsle => {
            let mut per = Vec::with_capacity(n_cols);
            for c in 0..n_cols {
                let (y, p) = (a.numbers(c, false)?, a.numbers(c, true)?);
                per.push(metrics::rmsle(&y, &p).map_err(|e| a.undefined(metric, c, e))?);
            }
            mean(per)
        }
        Metric::Mcrmse => {
            let mut per = Vec::with_capacity(n_cols);
            for c in 0..n_cols {
                per.push(metrics::rmse(&a.numbers(c, false)?, &a.numbers(c, true)?));
            }
            mean(per)
        }
        Metric::Qwk => {
            let (y, p) = (a.integers(0, false)?, a.integers(0, true)?);
            metrics::qwk(&y, &p).map_err(|e| a.undefined(metric, 0, e))?
        }
        Metric::MapAt5 => {
            let preds: Vec<Vec<String>> =
                a.submitted[0].iter().map(|cell| cell.split_whitespace().map(str::to_string).collect()).collect();
            metrics::map_at_5(&a.answers[0], &preds)
        }
        Metric::Pearson => {
            let (y, p) = (a.numbers(0, false)?, a.numbers(0, true)?);
            metrics::pearson(&y, &p).map_err(|e| a.undefined(metric, 0, e))?
        }
    })
}

/// Grade a submission file against an answers file.
pub fn grade(metric: Metric, answers: &Path, submission: &Path) -> Result<f64, GradeError> {
    grade_tables(metric, &Table::read(answers)?, &Table::read(submission)?)
}

#[cfg(test)]
mod tests;
