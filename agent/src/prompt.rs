//! What the policy sees before one action: the task header and the last k steps, rendered by one function.
//!
//! The same [`State::render`] is used for expert collection, SFT samples, step-wise and episode-wise RL, and evaluation,
//! so a model is always trained on the prompts it is run with. The layout follows MLAgentBench's research-assistant
//! prompt (tool list, research problem, response format); ML-Agent keeps a short memory of recent steps (k = 3).

use crate::actions;
use crate::metric::{Direction, Metric};
use crate::trace::Step;
use serde::{Deserialize, Serialize};

/// How many recent steps a state shows by default.
pub const HISTORY: usize = 3;

/// One past step as the policy sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// 0-based step index.
    pub index: usize,
    /// The policy's response.
    pub response: String,
    /// The environment's observation.
    pub observation: String,
}

/// One chat message (role `system` or `user`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// "system" or "user".
    pub role: String,
    /// The text.
    pub content: String,
}

/// The state before one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Task name.
    pub task: String,
    /// The research problem (description.md).
    pub description: String,
    /// The metric.
    pub metric: Metric,
    /// Its direction.
    pub direction: Direction,
    /// The index of the step about to be taken.
    pub step: usize,
    /// The most recent steps, oldest first (at most the episode's history length).
    pub history: Vec<Exchange>,
}

const INTRO: &str = "You are a helpful research assistant. You have access to the following tools:";

const FORMAT: &str = "Always respond in this format exactly:\n\
Thought: What you are currently doing, what actions to perform and why\n\
Action: the action to take, should be one of the names of the tools\n\
Action Input: the input to the action as a valid JSON string\n\
Observation: the result of the action";

impl State {
    /// The state after `steps` (only the last `history` of them are kept).
    pub fn from_steps(
        task: &str,
        description: &str,
        metric: Metric,
        direction: Direction,
        steps: &[Step],
        history: usize,
    ) -> State {
        let recent = steps
            .iter()
            .skip(steps.len().saturating_sub(history))
            .map(|s| Exchange { index: s.index, response: s.response.clone(), observation: s.observation.clone() })
            .collect();
        State {
            task: task.into(),
            description: description.into(),
            metric,
            direction,
            step: steps.len(),
            history: recent,
        }
    }

    /// The task header: tools, research problem, rules and response format (identical for every step of a task).
    pub fn header(&self) -> String {
        let better = match self.direction {
            Direction::Maximize => "higher is better",
            Direction::Minimize => "lower is better",
        };
        format!(
            "{INTRO}\n{tools}\n\nResearch Problem: {desc}\n\nYour submission.csv in the work folder is graded by \
             {metric} ({better}) on hidden test answers each time a script that writes it runs successfully. Improve \
             the metric by editing the training script and running it. Scripts run in the work folder with a time \
             limit; Final Answer ends the episode.\n\n{FORMAT}",
            tools = actions::tools_prompt(),
            desc = self.description.trim(),
            metric = self.metric,
        )
    }

    /// The whole prompt: header, the recent steps, and the cue for the next step.
    pub fn render(&self) -> String {
        let mut out = self.header();
        if self.history.is_empty() {
            out.push_str("\n\nYou do not know anything about this problem so far.");
        } else {
            out.push_str(&format!("\n\nHere are the last {} steps:", self.history.len()));
            for ex in &self.history {
                out.push_str(&format!(
                    "\n\nStep {}:\n{}\nObservation:\n```\n{}\n```",
                    ex.index,
                    ex.response.trim(),
                    ex.observation.trim_end()
                ));
            }
        }
        // The cue names the step but not the episode's step limit (MLAgentBench's prompt does not
        // either): a state then renders the same whatever limit an episode runs under, so the SFT
        // samples, the RL states pool and evaluation episodes show the model the same text.
        out.push_str(&format!("\n\nStep {}. Now respond with Thought, Action and Action Input.", self.step));
        out
    }

    /// The prompt as chat messages: the rendered state as one user message (the chat template adds the rest).
    pub fn messages(&self) -> Vec<Message> {
        vec![Message { role: "user".into(), content: self.render() }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::ActionKind;
    use crate::trace::Durations;

    fn step(i: usize) -> Step {
        Step {
            task: "t".into(),
            index: i,
            response: format!("Action: List Files\nAction Input: {{\"dir_path\": \"{i}\"}}"),
            action: None,
            valid: true,
            kind: ActionKind::NonEdit,
            observation: format!("obs {i}"),
            reward: 0.5,
            metric_before: 0.0,
            metric: None,
            done: false,
            durations: Durations::default(),
            snapshots: Default::default(),
        }
    }

    #[test]
    fn renders_header_tools_and_last_three_steps() {
        let steps: Vec<Step> = (0..5).map(step).collect();
        let s = State::from_steps("t", "Predict y.", Metric::Rmse, Direction::Minimize, &steps, HISTORY);
        let text = s.render();
        assert!(text.contains("Research Problem: Predict y."));
        assert!(text.contains("rmse (lower is better)"));
        for a in actions::ACTIONS.iter() {
            assert!(text.contains(&format!("- {}:", a.name)), "{} missing", a.name);
        }
        assert!(!text.contains("obs 1") && text.contains("obs 2") && text.contains("obs 4"));
        assert!(text.ends_with("Step 5. Now respond with Thought, Action and Action Input."));
        let fresh = State::from_steps("t", "d", Metric::Auc, Direction::Maximize, &[], HISTORY);
        assert!(fresh.render().contains("You do not know anything about this problem so far."));
        assert_eq!(fresh.messages().len(), 1);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<State>(&json).unwrap(), s);
    }
}
