//! The metric formulas on plain vectors, matching scikit-learn / scipy / the Kaggle reference code.
//!
//! Inputs are already matched by row id and parsed; each function returns `Err(reason)` for inputs the formula is undefined
//! on (e.g. AUC of a column with one class), which [`super::grade`] turns into a message naming the column.

/// Probability clipping used by Kaggle's and MLE-bench's log loss.
pub const LOGLOSS_EPS: f64 = 1e-15;

/// Fraction of equal entries.
pub fn accuracy(matches: &[bool]) -> f64 {
    matches.iter().filter(|m| **m).count() as f64 / matches.len() as f64
}

/// ROC AUC of scores against binary labels (sklearn `roc_auc_score`): the Mann–Whitney U statistic with tied scores
/// given their average rank.
pub fn auc(y: &[bool], score: &[f64]) -> Result<f64, String> {
    let pos = y.iter().filter(|v| **v).count();
    let neg = y.len() - pos;
    if pos == 0 || neg == 0 {
        return Err("only one class present in the answers; AUC is undefined".into());
    }
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && score[order[j + 1]] == score[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += order[i..=j].iter().filter(|&&k| y[k]).count() as f64 * avg_rank;
        i = j + 1;
    }
    let (p, n) = (pos as f64, neg as f64);
    Ok((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

/// Binary log loss with probabilities clipped to [ε, 1 − ε].
pub fn binary_logloss(y: &[bool], p: &[f64]) -> f64 {
    let total: f64 = y
        .iter()
        .zip(p)
        .map(|(&y, &p)| {
            let p = p.clamp(LOGLOSS_EPS, 1.0 - LOGLOSS_EPS);
            if y { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    total / y.len() as f64
}

/// Multiclass log loss: `truth[i]` is the answer's class index, `p[i]` the row's probabilities, clipped to [ε, 1 − ε]
/// and renormalised per row (the Kaggle convention).
pub fn multiclass_logloss(truth: &[usize], p: &[Vec<f64>]) -> f64 {
    let total: f64 = truth
        .iter()
        .zip(p)
        .map(|(&t, row)| {
            let clipped: Vec<f64> = row.iter().map(|v| v.clamp(LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)).collect();
            let sum: f64 = clipped.iter().sum();
            -(clipped[t] / sum).ln()
        })
        .sum();
    total / truth.len() as f64
}

/// Mean absolute error.
pub fn mae(y: &[f64], p: &[f64]) -> f64 {
    y.iter().zip(p).map(|(a, b)| (a - b).abs()).sum::<f64>() / y.len() as f64
}

/// Root mean squared error.
pub fn rmse(y: &[f64], p: &[f64]) -> f64 {
    (y.iter().zip(p).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / y.len() as f64).sqrt()
}

/// Root mean squared log error (sklearn `root_mean_squared_log_error`); values must be > −1.
pub fn rmsle(y: &[f64], p: &[f64]) -> Result<f64, String> {
    if let Some(v) = y.iter().chain(p).find(|v| **v <= -1.0) {
        return Err(format!("RMSLE needs values greater than -1, found {v}"));
    }
    let ly: Vec<f64> = y.iter().map(|v| v.ln_1p()).collect();
    let lp: Vec<f64> = p.iter().map(|v| v.ln_1p()).collect();
    Ok(rmse(&ly, &lp))
}

/// Quadratic weighted kappa (sklearn `cohen_kappa_score(weights="quadratic")`) between integer ratings.
pub fn qwk(y: &[i64], p: &[i64]) -> Result<f64, String> {
    let mut labels: Vec<i64> = y.iter().chain(p).copied().collect();
    labels.sort_unstable();
    labels.dedup();
    let k = labels.len();
    let idx = |v: i64| labels.binary_search(&v).expect("label collected above");
    let mut observed = vec![vec![0.0f64; k]; k];
    for (&a, &b) in y.iter().zip(p) {
        observed[idx(a)][idx(b)] += 1.0;
    }
    let n = y.len() as f64;
    let row: Vec<f64> = observed.iter().map(|r| r.iter().sum()).collect();
    let col: Vec<f64> = (0..k).map(|j| observed.iter().map(|r| r[j]).sum()).collect();
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..k {
        for j in 0..k {
            // sklearn weights by the distance between label indices, not label values.
            let w = ((i as f64) - (j as f64)).powi(2);
            num += w * observed[i][j];
            den += w * row[i] * col[j] / n;
        }
    }
    if den == 0.0 {
        return Err("all ratings are identical; kappa is undefined".into());
    }
    Ok(1.0 - num / den)
}

/// Mean average precision at 5 with one true label per row (Kaggle's `mapk`): 1/rank of the first correct prediction
/// among the first five, repeated predictions ignored.
pub fn map_at_5(truth: &[String], predicted: &[Vec<String>]) -> f64 {
    let total: f64 = truth
        .iter()
        .zip(predicted)
        .map(|(t, preds)| {
            let mut seen: Vec<&str> = Vec::new();
            let mut score = 0.0;
            for (i, p) in preds.iter().take(5).enumerate() {
                if p == t && !seen.contains(&p.as_str()) {
                    score = 1.0 / (i as f64 + 1.0);
                    break;
                }
                seen.push(p);
            }
            score
        })
        .sum();
    total / truth.len() as f64
}

/// Pearson correlation coefficient (scipy `pearsonr`).
pub fn pearson(y: &[f64], p: &[f64]) -> Result<f64, String> {
    let n = y.len() as f64;
    let (my, mp) = (y.iter().sum::<f64>() / n, p.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in y.iter().zip(p) {
        sxy += (a - my) * (b - mp);
        sxx += (a - my).powi(2);
        syy += (b - mp).powi(2);
    }
    if sxx == 0.0 || syy == 0.0 {
        return Err("a constant column has no correlation".into());
    }
    Ok((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} != {b}");
    }

    #[test]
    fn auc_matches_sklearn_with_ties() {
        // sklearn.metrics.roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        close(auc(&[false, false, true, true], &[0.1, 0.4, 0.35, 0.8]).unwrap(), 0.75);
        // A tie between a positive and a negative counts one half: pairs (p,n): (0.5>0.2)=1, (0.5=0.5)=0.5 → 0.75.
        close(auc(&[true, false, false], &[0.5, 0.5, 0.2]).unwrap(), 0.75);
        assert!(auc(&[true, true], &[0.1, 0.2]).is_err());
    }

    #[test]
    fn logloss_hand_values() {
        // −(ln 0.9 + ln 0.8) / 2
        close(binary_logloss(&[true, false], &[0.9, 0.2]), -(0.9f64.ln() + 0.8f64.ln()) / 2.0);
        // Clipping: p = 0 for a positive gives −ln(1e−15) = 34.538776…
        close(binary_logloss(&[true], &[0.0]), 34.538_776_394_910_684);
        // Renormalisation: [0.2, 0.2, 0.4] sums to 0.8 → true class 2 has 0.5.
        close(multiclass_logloss(&[2], &[vec![0.2, 0.2, 0.4]]), -(0.5f64).ln());
    }

    #[test]
    fn regression_errors() {
        close(mae(&[1.0, 2.0, 3.0], &[2.0, 2.0, 5.0]), 1.0);
        close(rmse(&[1.0, 2.0, 3.0], &[2.0, 2.0, 5.0]), (5.0f64 / 3.0).sqrt());
        // sqrt(((ln 2 − ln 3)² + 0) / 2)
        close(rmsle(&[1.0, 1.0], &[2.0, 1.0]).unwrap(), ((2f64.ln() - 3f64.ln()).powi(2) / 2.0).sqrt());
        assert!(rmsle(&[1.0], &[-2.0]).is_err());
    }

    #[test]
    fn qwk_matches_sklearn() {
        // sklearn cohen_kappa_score([1,2,3,4,3],[1,2,4,4,2], weights="quadratic") == 0.8387096774193549 (26/31)
        close(qwk(&[1, 2, 3, 4, 3], &[1, 2, 4, 4, 2]).unwrap(), 0.838_709_677_419_354_9);
        close(qwk(&[1, 2, 3], &[1, 2, 3]).unwrap(), 1.0);
        assert!(qwk(&[2, 2], &[2, 2]).is_err());
    }

    #[test]
    fn map5_and_pearson() {
        let t = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let p = vec![
            vec!["a".into(), "x".into()],
            vec!["x".into(), "x".into(), "b".into()],
            vec!["x".into(), "y".into(), "z".into(), "w".into(), "v".into(), "c".into()],
        ];
        // 1 + 1/3 + 0 (c is sixth) over 3 rows.
        close(map_at_5(&t, &p), (1.0 + 1.0 / 3.0) / 3.0);
        // scipy.stats.pearsonr([1,2,3,4],[1,3,2,4]) == 0.8
        close(pearson(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap(), 0.8);
        assert!(pearson(&[1.0, 2.0], &[3.0, 3.0]).is_err());
        close(accuracy(&[true, false, true, true]), 0.75);
    }
}
