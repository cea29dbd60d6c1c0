//! Fitting a rendered state ([`crate::prompt::State::render`]) into a small token budget by its
//! structure, for models whose context is far shorter than the prompt.
//!
//! A plain head-and-tail cut of the token ids keeps what comes first — the tool manual, identical
//! in every state — and the last tokens of the last observation, so the model sees neither the task
//! nor what it did last. [`fit`] instead shortens, in order of how little each says about the state:
//! the tool manual becomes one line of tool names, the response format and the grading paragraph
//! are dropped, the research problem keeps its title line, and the observations are cut in the
//! middle (their first lines say what the action did, their last lines the metric), the newest given
//! the most room. Every step's response (Thought, Action, Action Input) and the cue stay whole.
//! Older steps are dropped only if the responses alone do not fit.
//!
//! The result depends only on the text, the budget and the token counter, so training (SFT
//! samples) and acting (RL, evaluation) that fit with the same budget see identical prompts.
//! Text that does not parse as a rendered state is returned unchanged.

use crate::actions::ACTIONS;

const INTRO: &str = "You are a helpful research assistant. You have access to the following tools:\n";
const PROBLEM: &str = "\n\nResearch Problem: ";
const GRADING: &str = "\n\nYour submission.csv in the work folder";
const HISTORY: &str = "\n\nHere are the last ";
const NO_HISTORY: &str = "\n\nYou do not know anything about this problem so far.";
const CUE_END: &str = "Now respond with Thought, Action and Action Input.";
const OBSERVATION: &str = "\nObservation:\n```\n";
/// Marks where an observation was cut.
pub const ELISION: &str = "\n[…]\n";

/// One past step of a rendered state.
#[derive(Debug, Clone, PartialEq)]
struct Past {
    /// `"Step 3:"`
    label: String,
    /// Thought, Action, Action Input.
    response: String,
    /// The observation without its fence.
    observation: String,
}

/// The parts of a rendered state that [`fit`] keeps.
#[derive(Debug, Clone, PartialEq)]
struct Parts {
    /// The research problem's first line (its title).
    title: String,
    /// `"Here are the last 3 steps:"`, or the no-history sentence.
    history_line: String,
    steps: Vec<Past>,
    /// `"Step 4. Now respond …"`
    cue: String,
}

fn parse(text: &str) -> Option<Parts> {
    let rest = text.strip_prefix(INTRO)?;
    let (_, rest) = rest.split_once(PROBLEM)?;
    let (description, rest) = rest.split_once(GRADING)?;
    let title = description.lines().find(|l| !l.trim().is_empty())?.trim().to_string();
    // The cue is the last paragraph.
    let (body, cue) = rest.rsplit_once("\n\n")?;
    if !cue.starts_with("Step ") || !cue.ends_with(CUE_END) {
        return None;
    }
    if body.ends_with(NO_HISTORY) {
        return Some(Parts { title, history_line: NO_HISTORY.trim().into(), steps: vec![], cue: cue.into() });
    }
    let at = body.find(HISTORY)?;
    let history = &body[at + 2..];
    let (history_line, mut rest) = history.split_once("\n\n")?;
    let mut steps = Vec::new();
    loop {
        let (label, after) = rest.split_once('\n')?;
        if !(label.starts_with("Step ") && label.ends_with(':')) {
            return None;
        }
        let (response, after) = after.split_once(OBSERVATION)?;
        // The observation ends at the fence before the next step's label (or at the end).
        let (observation, next) = match find_step_start(after) {
            Some(i) => (&after[..i], Some(&after[i + 2..])),
            None => (after, None),
        };
        let observation = observation.strip_suffix("\n```")?;
        steps.push(Past { label: label.into(), response: response.into(), observation: observation.into() });
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    Some(Parts { title, history_line: history_line.into(), steps, cue: cue.into() })
}

/// Index of the `"\n```\n\nStep N:\n"` that closes an observation and opens the next step (the
/// index of its `"\n\n"`), if any.
fn find_step_start(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find("\n```\n\nStep ") {
        let at = from + i + 4; // the "\n\n"
        let line = s[at + 2..].split('\n').next().unwrap_or("");
        let digits = line.strip_prefix("Step ").and_then(|l| l.strip_suffix(':'));
        if digits.is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())) {
            return Some(at);
        }
        from = at;
    }
    None
}

fn render(p: &Parts, steps: &[Past], observations: &[String]) -> String {
    let names: Vec<&str> = ACTIONS.iter().map(|a| a.name).collect();
    let mut out = format!(
        "You are a helpful research assistant. Tools: {}.\n\nResearch Problem: {}\n\n{}",
        names.join(", "),
        p.title,
        p.history_line
    );
    for (s, o) in steps.iter().zip(observations) {
        out.push_str(&format!("\n\n{}\n{}{OBSERVATION}{}\n```", s.label, s.response, o));
    }
    out.push_str("\n\n");
    out.push_str(&p.cue);
    out
}

/// The first and last characters of `s` around [`ELISION`], about `chars` in all (char boundaries).
fn middle_cut(s: &str, chars: usize) -> String {
    let n = s.chars().count();
    if n <= chars {
        return s.to_string();
    }
    let head = chars / 2;
    let tail = chars - head;
    let a: String = s.chars().take(head).collect();
    let b: String = s.chars().skip(n - tail).collect();
    format!("{a}{ELISION}{b}")
}

/// Shortens a rendered state to at most about `budget` tokens as `count` counts them; see the
/// module doc. Returns `text` unchanged when it fits or is not a rendered state. The result can
/// still exceed `budget` slightly (token counts of pieces are not exactly additive) or a lot (when
/// the last response alone is longer): callers cut the token ids afterwards as before.
pub fn fit(text: &str, budget: usize, count: &dyn Fn(&str) -> usize) -> String {
    if count(text) <= budget {
        return text.to_string();
    }
    let Some(parts) = parse(text) else {
        return text.to_string();
    };
    // Keep as many recent steps as fit with empty observations.
    let mut first = 0;
    let empty = |from: usize| vec![String::new(); parts.steps.len() - from];
    while first < parts.steps.len() && count(&render(&parts, &parts.steps[first..], &empty(first))) > budget {
        first += 1;
    }
    let steps = &parts.steps[first..];
    let mut obs: Vec<String> = empty(first);
    let mut left = budget.saturating_sub(count(&render(&parts, steps, &obs)));
    // Newest first: each observation gets up to half of what is left (the newest two thirds).
    for (rank, i) in (0..steps.len()).rev().enumerate() {
        let full = &steps[i].observation;
        let share = if rank == 0 { left * 2 / 3 } else { left / 2 };
        let tokens = count(full);
        let piece = if tokens <= share {
            full.clone()
        } else if share < 8 {
            String::new()
        } else {
            // Characters per token of this observation turn the share into a length.
            let chars = full.chars().count();
            let want = (share.saturating_sub(4) * chars / tokens.max(1)) * 9 / 10;
            middle_cut(full, want)
        };
        left = left.saturating_sub(count(&piece));
        obs[i] = piece;
    }
    render(&parts, steps, &obs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::{Direction, Metric};
    use crate::prompt::{Exchange, State};

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn state(history: usize) -> State {
        State {
            task: "t".into(),
            description: "# Tiny task\n\nPredict y.\n\n## Data\nlots of words here".into(),
            metric: Metric::Accuracy,
            direction: Direction::Maximize,
            step: history,
            history: (0..history)
                .map(|i| Exchange {
                    index: i,
                    response: format!("Thought: step {i}\nAction: Execute Script\nAction Input: {{\"script_name\": \"train.py\"}}"),
                    observation: format!("first line {i}\n{}\nlast line {i}: metric 0.{i}", "filler word ".repeat(200)),
                })
                .collect(),
        }
    }

    #[test]
    fn short_prompts_are_unchanged_and_long_ones_keep_responses_and_ends_of_observations() {
        let s = state(3);
        let text = s.render();
        assert_eq!(fit(&text, 100_000, &words), text);
        let got = fit(&text, 300, &words);
        assert!(words(&got) <= 300, "{} words", words(&got));
        assert!(got.starts_with("You are a helpful research assistant. Tools: List Files, "));
        assert!(got.contains("Research Problem: # Tiny task\n\nHere are the last 3 steps:"));
        for i in 0..3 {
            assert!(got.contains(&s.history[i].response), "response {i}");
            assert!(got.contains(&format!("Step {i}:\n")));
        }
        // The newest observation keeps its first and last lines.
        assert!(got.contains("first line 2\n") && got.contains("last line 2: metric 0.2\n```"));
        assert!(got.contains(ELISION));
        assert!(got.ends_with("Step 3. Now respond with Thought, Action and Action Input."));
        // Deterministic.
        assert_eq!(fit(&text, 300, &words), got);
    }

    #[test]
    fn first_state_and_tight_budgets() {
        let text = state(0).render();
        let got = fit(&text, 100, &words);
        assert!(got.contains("You do not know anything about this problem so far.\n\nStep 0. Now respond"), "{got}");
        // So tight that only the newest response fits: older steps are dropped.
        let text = state(3).render();
        let got = fit(&text, 80, &words);
        assert!(!got.contains("Step 0:\n") && got.contains("Step 2:\n"), "{got}");
    }

    #[test]
    fn text_that_is_not_a_rendered_state_is_unchanged() {
        let text = "word ".repeat(500);
        assert_eq!(fit(&text, 10, &words), text);
        // An observation that itself contains a fence and a step-like line still parses.
        let mut s = state(2);
        s.history[0].observation = "```\nStep x:\n```\n\nStep 9 is not a label".into();
        let parsed = parse(&s.render()).expect("parses");
        assert_eq!(parsed.steps.len(), 2);
        assert_eq!(parsed.steps[0].observation, s.history[0].observation);
    }
}
