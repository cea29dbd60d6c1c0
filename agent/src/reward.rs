//! The agentic reward of ML-Agent (arXiv 2505.23723, eq. 6) as one pure function.
//!
//! ```text
//!            ⎧ 0                          invalid response or error (parse failure, unknown action, refused path,
//!            ⎪                            crashing script, unreadable submission)
//! R(a_t) =   ⎨ 0.5                        valid non-edit action (list, inspect, understand, copy, a run with nothing
//!            ⎪                            new to score) or corner case (timeout, memory exhaustion)
//!            ⎩ σ(α·s·(m_{t+1} − m_t))     edit, scored by the run that measures it
//! ```
//! with σ the logistic function, s = +1 when the metric is maximised and −1 otherwise, and α = 100 / |m_best − m_init|
//! so that the same relative progress gives the same reward on every task.
//!
//! **What counts as an edit**: an action that changes a file in `work/` (Write File, Edit Script (AI), Undo Edit Script).
//! The edit itself has not changed the metric yet, so its own reward is σ(0) = 0.5; the next Execute Script that runs
//! successfully and produces a new, gradable `submission.csv` is the step that measures it, is of kind [`ActionKind::Edit`]
//! and gets σ(α·s·(m_{t+1} − m_t)). A successful run with no edit since the last scored run is a non-edit (0.5).
//!
//! **m_t before the first run** is the task's `m_init`, the score of the unmodified starter script, so the first measured
//! edit is rewarded relative to the baseline. After each scored run m_t becomes the new metric.
//!
//! Final Answer ([`ActionKind::Final`]) ends the episode: 0.5 when `submission.csv` grades, else it is an error (0).

use crate::metric::Direction;
use serde::{Deserialize, Serialize};

/// The reward-relevant category of one step (the cases of eq. 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// The response could not be parsed, named an unknown action, or had the wrong argument keys.
    Invalid,
    /// A valid action that failed: refused path, missing file, crashing script, ungradable submission.
    Error,
    /// A valid action that does not change any file (list, inspect, understand, copy, a run with nothing to score).
    NonEdit,
    /// A run stopped by its limits: wall-clock timeout or memory exhaustion.
    CornerCase,
    /// A file-changing action, or the run that scores the changes made since the previous scored run.
    Edit,
    /// Final Answer: the episode ends.
    Final,
}

impl ActionKind {
    /// The name used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Invalid => "invalid",
            ActionKind::Error => "error",
            ActionKind::NonEdit => "non_edit",
            ActionKind::CornerCase => "corner_case",
            ActionKind::Edit => "edit",
            ActionKind::Final => "final",
        }
    }
}

/// The per-task constants eq. 6 needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RewardScale {
    /// Whether higher metric values are better.
    pub direction: Direction,
    /// The starter script's score.
    pub m_init: f64,
    /// A reference best score (see the task's `m_best`).
    pub m_best: f64,
}

impl RewardScale {
    /// α = 100 / |m_best − m_init|; a degenerate task (m_best == m_init) falls back to α = 100.
    pub fn alpha(&self) -> f64 {
        let gap = (self.m_best - self.m_init).abs();
        if gap > 1e-12 && gap.is_finite() { 100.0 / gap } else { 100.0 }
    }
}

/// The logistic function.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The reward of one step, eq. 6 of ML-Agent.
///
/// `m_prev` is m_t (the metric before the step, `m_init` before any scored run) and `m_next` is m_{t+1}, the metric the
/// step measured; it is used only for [`ActionKind::Edit`]. An edit step with no measurement (`m_next == None`, e.g.
/// Write File itself) gets σ(0) = 0.5. Non-finite metrics count as no measurement.
pub fn reward(kind: ActionKind, m_prev: f64, m_next: Option<f64>, task: &RewardScale) -> f64 {
    match kind {
        ActionKind::Invalid | ActionKind::Error => 0.0,
        ActionKind::NonEdit | ActionKind::CornerCase | ActionKind::Final => 0.5,
        ActionKind::Edit => match m_next {
            Some(m) if m.is_finite() && m_prev.is_finite() => {
                sigmoid(task.alpha() * task.direction.sign() * (m - m_prev))
            }
            _ => 0.5,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACC: RewardScale = RewardScale { direction: Direction::Maximize, m_init: 0.5, m_best: 0.9 };
    const LOSS: RewardScale = RewardScale { direction: Direction::Minimize, m_init: 0.7, m_best: 0.2 };

    #[test]
    fn invalid_and_error_give_zero() {
        assert_eq!(reward(ActionKind::Invalid, 0.5, Some(0.9), &ACC), 0.0);
        assert_eq!(reward(ActionKind::Error, 0.5, None, &ACC), 0.0);
    }

    #[test]
    fn non_edit_corner_case_and_final_give_half() {
        for k in [ActionKind::NonEdit, ActionKind::CornerCase, ActionKind::Final] {
            assert_eq!(reward(k, 0.5, Some(0.9), &ACC), 0.5);
        }
        assert_eq!(reward(ActionKind::Edit, 0.5, None, &ACC), 0.5);
    }

    #[test]
    fn edit_reward_is_scaled_sigmoid_of_improvement() {
        // α = 100 / 0.4 = 250; +0.01 accuracy → σ(2.5) = 0.924141…
        let r = reward(ActionKind::Edit, 0.5, Some(0.51), &ACC);
        assert!((r - 0.924_141_819_978_756_7).abs() < 1e-12, "{r}");
        // α = 100 / 0.5 = 200; loss 0.7 → 0.71 is worse: σ(−2) = 0.119202…
        let r = reward(ActionKind::Edit, 0.7, Some(0.71), &LOSS);
        assert!((r - 0.119_202_922_022_117_58).abs() < 1e-12, "{r}");
        // No change → 0.5 exactly; huge changes saturate without overflow.
        assert_eq!(reward(ActionKind::Edit, 0.7, Some(0.7), &LOSS), 0.5);
        assert_eq!(reward(ActionKind::Edit, 0.0, Some(1e9), &ACC), 1.0);
        assert_eq!(reward(ActionKind::Edit, 0.0, Some(-1e9), &ACC), 0.0);
        assert_eq!(reward(ActionKind::Edit, 0.5, Some(f64::NAN), &ACC), 0.5);
    }

    #[test]
    fn degenerate_scale_falls_back() {
        let s = RewardScale { direction: Direction::Maximize, m_init: 0.3, m_best: 0.3 };
        assert_eq!(s.alpha(), 100.0);
        assert_eq!(ACC.alpha(), 250.0);
    }
}
