//! The offline editor: Edit Script (AI) on the built-in training tasks when no helper LLM is configured.
//!
//! MLAgentBench hands an edit instruction to a second LLM, which rewrites the script. Offline there is no such model,
//! but every idea of a task's pool is a [`Plan`] that compiles to a complete `train.py`. The editor therefore knows a
//! fixed catalogue of changes ([`changes`]): each pool idea as worded, each idea tuned one step either way
//! ([`tunings`]), and each idea simplified after a failure ([`simplified`]). An instruction is matched to the most
//! similar change by word-bigram Dice similarity ([`similarity`]); at or above [`MIN_SIMILARITY`] the editor writes that
//! change's program, below it the edit fails with the nearest change in the message. It implements no free-form
//! instruction: the catalogue is the whole of what it can do, and the observation says which change it made.

use super::adapters::adapter;
use super::{Ensemble, IdeaError, Model, Plan, Scaling, Validation, pool, program};
use std::collections::HashMap;

/// Instructions less similar than this to every known change are refused.
pub const MIN_SIMILARITY: f64 = 0.6;

/// One change the offline editor can make: its words and the recipe of the resulting script.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The change in words (an idea's text, or an idea's text with its tuning or simplification).
    pub text: String,
    /// The recipe of the script it writes.
    pub plan: Plan,
}

/// The neighbouring hyperparameter settings of a plan's model (one step up and one down where they differ), each with
/// words for it.
pub fn tunings(plan: &Plan) -> Vec<(Plan, String)> {
    let step = |up: bool| -> (Model, String) {
        match plan.model.clone() {
            Model::Knn { k, weighted } => {
                let k2 = if up || k <= 2 { k * 2 + 1 } else { k / 2 };
                (Model::Knn { k: k2, weighted }, format!("use k = {k2} neighbours instead of {k}"))
            }
            Model::Ridge { lambda } => {
                let l2 = if up { lambda * 10.0 } else { lambda / 10.0 };
                (Model::Ridge { lambda: l2 }, format!("change the ridge penalty from {lambda} to {l2}"))
            }
            Model::Linear { lr, epochs, l2 } => {
                if up {
                    (Model::Linear { lr, epochs: epochs * 2, l2 }, format!("train for {} epochs instead of {epochs}", epochs * 2))
                } else {
                    let lr2 = lr * 3.0;
                    (Model::Linear { lr: lr2, epochs, l2 }, format!("raise the learning rate from {lr} to {lr2}"))
                }
            }
            Model::NaiveBayes { smoothing } => {
                let s2 = if up { smoothing * 10.0 } else { smoothing / 10.0 };
                (Model::NaiveBayes { smoothing: s2 }, format!("change the variance smoothing from {smoothing} to {s2}"))
            }
            Model::Boosting { rounds, lr } => {
                (Model::Boosting { rounds: rounds * 2, lr }, format!("boost for {} rounds instead of {rounds}", rounds * 2))
            }
            Model::Mlp { hidden, epochs, lr } => {
                (Model::Mlp { hidden, epochs: epochs * 2, lr }, format!("train the network for {} epochs", epochs * 2))
            }
            Model::Centroid { cosine } => (
                Model::Centroid { cosine: !cosine },
                format!("score centroids by {}", if cosine { "Euclidean distance" } else { "cosine similarity" }),
            ),
        }
    };
    let mut out: Vec<(Plan, String)> = Vec::with_capacity(2);
    for up in [true, false] {
        let (model, words) = step(up);
        if !out.iter().any(|(_, w)| *w == words) {
            out.push((Plan { model, ..plan.clone() }, words));
        }
    }
    out
}

/// A simpler, faster variant of a plan, for after a crash or timeout, with words for it.
pub fn simplified(plan: &Plan) -> (Plan, String) {
    let model = match plan.model {
        Model::Mlp { .. } | Model::Boosting { .. } | Model::Linear { .. } => Model::Ridge { lambda: 0.01 },
        Model::Knn { k, weighted } => Model::Knn { k: k.min(15), weighted },
        ref m => m.clone(),
    };
    (
        Plan { model, scaling: Scaling::Standard, ensemble: Ensemble::None, validation: Validation::None, ..plan.clone() },
        "drop the ensemble and validation extras, standardise the features and use a simpler, faster model".into(),
    )
}

/// The words of an idea tuned by `words`.
pub fn tuned_text(idea: &str, words: &str) -> String {
    format!("{idea} Tuned: {words}.")
}

/// The words of an idea simplified by `words`.
pub fn simplified_text(idea: &str, words: &str) -> String {
    format!("{idea} Simplified: {words}.")
}

/// Every change the offline editor knows for `task`, in a fixed order: each pool idea followed by its tunings and its
/// simplification.
pub fn changes(task: &str) -> Result<Vec<Change>, IdeaError> {
    let mut out = Vec::new();
    for idea in pool(task)? {
        let Some(plan) = idea.plan else { continue };
        out.push(Change { text: idea.text.clone(), plan: plan.clone() });
        for (p, words) in tunings(&plan) {
            out.push(Change { text: tuned_text(&idea.text, &words), plan: p });
        }
        let (p, words) = simplified(&plan);
        out.push(Change { text: simplified_text(&idea.text, &words), plan: p });
    }
    Ok(out)
}

/// Lower-case alphanumeric words (keeping `.` inside numbers such as `0.01`).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let in_number = c == '.' && !cur.is_empty() && cur.chars().all(|d| d.is_ascii_digit())
            && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit());
        if c.is_alphanumeric() || in_number {
            cur.extend(c.to_lowercase());
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

type Bigrams = HashMap<(String, String), usize>;

fn bigrams(text: &str) -> Bigrams {
    let w = words(text);
    let mut m = HashMap::new();
    if w.len() == 1 {
        *m.entry((w[0].clone(), String::new())).or_insert(0) += 1;
    }
    for pair in w.windows(2) {
        *m.entry((pair[0].clone(), pair[1].clone())).or_insert(0) += 1;
    }
    m
}

fn dice(x: &Bigrams, y: &Bigrams) -> f64 {
    let (nx, ny): (usize, usize) = (x.values().sum(), y.values().sum());
    if nx + ny == 0 {
        return 0.0;
    }
    let common: usize = x.iter().map(|(k, &c)| c.min(*y.get(k).unwrap_or(&0))).sum();
    2.0 * common as f64 / (nx + ny) as f64
}

/// Dice similarity of the word-bigram multisets of `a` and `b`: 2·|A∩B| / (|A| + |B|), in [0, 1]; 1 for the same
/// words in the same order, whatever the case and punctuation.
pub fn similarity(a: &str, b: &str) -> f64 {
    dice(&bigrams(a), &bigrams(b))
}

/// A task's known changes, ready for matching.
pub struct Catalogue {
    task: String,
    /// The changes, in [`changes`] order.
    pub changes: Vec<Change>,
    grams: Vec<Bigrams>,
}

impl Catalogue {
    /// The catalogue of a built-in training task.
    pub fn new(task: &str) -> Result<Self, IdeaError> {
        let changes = changes(task)?;
        let grams = changes.iter().map(|c| bigrams(&c.text)).collect();
        Ok(Catalogue { task: task.into(), changes, grams })
    }

    /// The index of the change most similar to `instruction` (the first on ties) and its similarity.
    pub fn nearest(&self, instruction: &str) -> Option<(usize, f64)> {
        let g = bigrams(instruction);
        let mut best: Option<(usize, f64)> = None;
        for (i, c) in self.grams.iter().enumerate() {
            let s = dice(&g, c);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
        best
    }

    /// The change `instruction` asks for and the script it writes: the nearest change when its similarity is at
    /// least [`MIN_SIMILARITY`].
    pub fn edit(&self, instruction: &str) -> Result<Edit, EditorError> {
        let Some((i, similarity)) = self.nearest(instruction) else {
            return Err(EditorError::NoMatch { nearest: String::new(), similarity: 0.0 });
        };
        let change = self.changes[i].clone();
        if similarity < MIN_SIMILARITY {
            return Err(EditorError::NoMatch { nearest: change.text, similarity });
        }
        let a = adapter(&self.task).ok_or_else(|| IdeaError::NoGenerator(self.task.clone()))?;
        let program = program::program(a, &change.plan, &change.text)?;
        Ok(Edit { change, similarity, program })
    }
}

/// What the offline editor did with an instruction.
#[derive(Debug, Clone)]
pub struct Edit {
    /// The change it made.
    pub change: Change,
    /// How similar the instruction was to it.
    pub similarity: f64,
    /// The complete new script.
    pub program: String,
}

/// Refusals of the offline editor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditorError {
    /// The task has no offline catalogue.
    #[error(transparent)]
    Ideas(#[from] IdeaError),
    /// No known change is similar enough to the instruction.
    #[error(
        "the offline editor implements only the task's catalogued changes, and none matches this instruction (the \
         nearest, at similarity {similarity:.2} < {MIN_SIMILARITY}, is \"{nearest}\"); write the script with Write File instead"
    )]
    NoMatch {
        /// The most similar change.
        nearest: String,
        /// Its similarity.
        similarity: f64,
    },
}

/// The change `instruction` asks for on `task`, and the script it writes (see [`Catalogue::edit`]).
pub fn edit(task: &str, instruction: &str) -> Result<Edit, EditorError> {
    Catalogue::new(task)?.edit(instruction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ideas::{adapters, program_for};

    #[test]
    fn similarity_ignores_case_and_punctuation_and_counts_shared_word_pairs() {
        assert_eq!(similarity("Use k = 23 neighbours.", "use K 23 neighbours"), 1.0);
        assert_eq!(similarity("ridge penalty 0.01", "ridge penalty 0.1"), 0.5);
        assert_eq!(similarity("a b c", "x y z"), 0.0);
        assert_eq!(similarity("", ""), 0.0);
    }

    /// Each known change of every training task is found again from its own words, so the scripted expert's
    /// instructions always produce the script it meant; and an idea's words write exactly its program.
    #[test]
    fn every_change_is_found_from_its_own_words() {
        for a in adapters::ADAPTERS {
            let (task, cat) = (a.task, Catalogue::new(a.task).unwrap());
            assert!(cat.changes.len() >= 300, "{task}: {}", cat.changes.len());
            for (i, c) in cat.changes.iter().enumerate() {
                let g = &cat.grams[i];
                let first_best = cat.grams.iter().map(|h| dice(g, h)).enumerate().fold((0, -1.0), |b, (j, s)| if s > b.1 { (j, s) } else { b });
                assert_eq!(cat.changes[first_best.0].plan, c.plan, "{task}: {:?} matched {:?}", c.text, cat.changes[first_best.0].text);
            }
        }
        let idea = &crate::ideas::pool("cifar-10").unwrap()[7];
        let e = edit("cifar-10", &idea.text).unwrap();
        assert_eq!((e.similarity, e.program), (1.0, program_for(idea).unwrap()));
    }

    #[test]
    fn near_instructions_match_and_far_ones_are_refused_with_the_nearest_change() {
        let idea = &crate::ideas::pool("spaceship-titanic").unwrap()[12];
        // A few words dropped: still the same change.
        let words: Vec<&str> = idea.text.split(' ').collect();
        let shorter = words[..words.len() - 2].join(" ");
        let e = edit("spaceship-titanic", &shorter).unwrap();
        assert_eq!(e.change.text, idea.text);
        assert!(e.similarity >= MIN_SIMILARITY && e.similarity < 1.0);
        let err = edit("spaceship-titanic", "add dropout and train a transformer for 100 epochs").unwrap_err().to_string();
        assert!(err.contains("none matches") && err.contains("nearest"), "{err}");
        assert!(matches!(edit("no-such-task", "x"), Err(EditorError::Ideas(IdeaError::NoGenerator(_)))));
    }
}
