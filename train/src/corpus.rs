//! The text the embedded default tokenizer is trained on: what the agent reads and writes.
//!
//! For every built-in task (generated in memory with the suite's seed): the initial prompt exactly
//! as the policy sees it (tools, research problem, response format), the starter script, the
//! first lines of each data file, and one well-formed response per action. A tokenizer trained on
//! this keeps prompts and actions short, which is what keeps CPU training fast.

use mlagent_agent::actions::ACTIONS;
use mlagent_agent::prompt::{Exchange, State};
use mlagent_agent::rng::Rng;
use mlagent_agent::suite::{DEFAULT_SEED, SUITE};

/// An example value for an action argument, by key.
fn example_value(key: &str, script: &str) -> serde_json::Value {
    match key {
        "dir_path" => ".".into(),
        "script_name" | "file_name" | "source" => "train.py".into(),
        "destination" | "save_name" => "train_v2.py".into(),
        "start_line_number" => 1.into(),
        "end_line_number" => 40.into(),
        "things_to_look_for" => "the model, the features and how the submission is written".into(),
        "edit_instruction" => "Standardise the features and add an L2-regularised logistic regression.".into(),
        "final_answer" => "The improved train.py writes submission.csv with a better validation score.".into(),
        "content" => script.into(),
        _ => "".into(),
    }
}

/// One response per action, in the format the prompt asks for.
fn example_responses(script: &str) -> Vec<String> {
    ACTIONS
        .iter()
        .map(|a| {
            let args: serde_json::Map<String, serde_json::Value> =
                a.keys().map(|k| (k.to_string(), example_value(k, script))).collect();
            format!(
                "Thought: I will use {} to make progress on the task.\nAction: {}\nAction Input: {}",
                a.name,
                a.name,
                serde_json::to_string_pretty(&serde_json::Value::Object(args)).expect("json")
            )
        })
        .collect()
}

/// The training corpus for the tokenizer (deterministic).
pub fn tokenizer_corpus() -> Vec<String> {
    let mut out = Vec::new();
    for b in SUITE.iter() {
        let g = (b.generate)(&mut Rng::new(DEFAULT_SEED, b.name));
        let script = g.public.iter().find(|f| f.path == "train.py").map(|f| f.content.clone()).unwrap_or_default();
        let responses = example_responses(&script);
        let first = State::from_steps(b.name, &g.description, b.metric, b.metric.direction(), &[], 3);
        out.push(first.render());
        // A later state with history, so step headers and observations are in the corpus too.
        let mut later = first.clone();
        later.step = 3;
        later.history = responses
            .iter()
            .take(3)
            .enumerate()
            .map(|(i, r)| Exchange { index: i, response: r.clone(), observation: format!("{} ran.", b.name) })
            .collect();
        out.push(later.render());
        out.extend(responses);
        for f in &g.public {
            // Data files: the header and a few rows teach the number and CSV formats.
            let text: String = f.content.lines().take(if f.path.ends_with(".py") { usize::MAX } else { 40 }).collect::<Vec<_>>().join("\n");
            out.push(text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_covers_every_task_and_action_and_is_deterministic() {
        let c = tokenizer_corpus();
        assert_eq!(c, tokenizer_corpus());
        let all = c.join("\n");
        for b in SUITE.iter() {
            assert!(all.contains(b.name), "{}", b.name);
        }
        for a in ACTIONS.iter() {
            assert!(all.contains(&format!("Action: {}", a.name)), "{}", a.name);
        }
    }
}
