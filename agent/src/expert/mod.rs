//! Expert policies that produce the SFT trajectories: the offline scripted expert and an OpenAI-compatible LLM.
//!
//! Both follow the MLAgentBench research-agent loop the paper's expert (GPT-4o-mini) runs: look at the files and the
//! starter, run it to get a baseline, then for each of its 1–3 ideas edit the script, execute it, read the metric from
//! the observation, keep or undo the change, and finish with Final Answer.

mod llm;
mod scripted;

pub use llm::LlmExpert;
pub use scripted::ScriptedExpert;

/// The metric a graded run reported (`Submission graded: <metric> (...) = X`), or the one an unchanged run restated.
pub fn observed_metric(observation: &str) -> Option<f64> {
    let at = observation.find("Submission graded:").or_else(|| observation.find("the metric stays"))?;
    let rest = &observation[at..];
    let eq = rest.find(" = ")?;
    let num: String = rest[eq + 3..].chars().take_while(|c| c.is_ascii_digit() || "+-.eE".contains(*c)).collect();
    num.trim_end_matches('.').parse().ok()
}

/// A response in the prompt's format: Thought, Action, Action Input (a JSON object with the keys in the order the
/// action's usage lists them, as MLAgentBench shows them).
pub fn response(thought: &str, action: &str, input: &[(&str, serde_json::Value)]) -> String {
    let fields: Vec<String> = input
        .iter()
        .map(|(k, v)| format!("    {}: {}", serde_json::to_string(k).expect("JSON"), serde_json::to_string(v).expect("JSON")))
        .collect();
    format!("Thought: {thought}\nAction: {action}\nAction Input: {{\n{}\n}}", fields.join(",\n"))
}

#[cfg(test)]
mod tests;
