//! The LLM expert: an OpenAI-compatible chat model driven with our prompt.

use crate::helper::OpenAiHelper;
use crate::policy::{Policy, PolicyError, Prompt};

/// An OpenAI-compatible chat model acting as the expert. The user message is exactly [`crate::State::render`]; the
/// ideas to try go in a system message, so the SFT sample (state → response) never contains them.
#[derive(Debug, Clone)]
pub struct LlmExpert {
    client: OpenAiHelper,
    temperature: f64,
}

impl LlmExpert {
    /// `base_url` like `http://127.0.0.1:8000/v1`; `api_key_env` names the environment variable holding the key.
    pub fn new(base_url: &str, model: &str, api_key_env: Option<&str>, temperature: f64) -> Result<Self, PolicyError> {
        Ok(LlmExpert { client: OpenAiHelper::new(base_url, model, api_key_env)?, temperature })
    }

    /// The chat messages sent for one prompt.
    pub fn messages(prompt: &Prompt) -> serde_json::Value {
        let mut msgs = Vec::new();
        if !prompt.ideas.is_empty() {
            let list: Vec<String> = prompt.ideas.iter().map(|i| format!("- {}", i.text)).collect();
            msgs.push(serde_json::json!({
                "role": "system",
                "content": format!(
                    "You are an expert machine-learning engineer. In this episode, implement and evaluate these ideas \
                     (one at a time: edit the script, execute it, read the metric, keep what helps), then give the \
                     Final Answer:\n{}",
                    list.join("\n")
                ),
            }));
        }
        msgs.push(serde_json::json!({"role": "user", "content": prompt.text()}));
        serde_json::Value::Array(msgs)
    }
}

impl Policy for LlmExpert {
    fn respond(&self, prompts: &[Prompt]) -> Result<Vec<String>, PolicyError> {
        prompts.iter().map(|p| Ok(self.client.chat(Self::messages(p), self.temperature)?)).collect()
    }
}
