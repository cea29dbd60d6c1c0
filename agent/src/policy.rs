//! The `Policy` trait: a batch of prompts in, one response each out.
//!
//! Everything that acts in the environment is a policy: the scripted expert and the OpenAI-compatible LLM expert
//! here ([`crate::expert`]), the engine-backed model in the trainers. A [`Prompt`] carries the [`State`] (rendered by
//! [`State::render`], the one prompt text used everywhere), the episode it belongs to (so a stateful policy such as
//! the scripted expert can keep per-episode memory), and the ideas an expert is asked to try (empty for the model
//! being trained, which must come up with its own).

use crate::ideas::Idea;
use crate::prompt::State;
use serde::{Deserialize, Serialize};

/// One request to a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    /// A stable id of the episode this prompt belongs to (e.g. `task/0003`).
    pub episode: String,
    /// What the policy sees.
    pub state: State,
    /// Ideas the policy is asked to try (experts only; empty otherwise).
    #[serde(default)]
    pub ideas: Vec<Idea>,
}

impl Prompt {
    /// The prompt text: [`State::render`].
    pub fn text(&self) -> String {
        self.state.render()
    }
}

/// A policy failed to answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The LLM endpoint failed.
    #[error(transparent)]
    Helper(#[from] crate::helper::HelperError),
    /// An idea cannot be turned into code.
    #[error(transparent)]
    Idea(#[from] crate::ideas::IdeaError),
    /// A model-backed policy failed (the trainers' implementations).
    #[error("policy model failed: {0}")]
    Model(String),
}

/// Given a batch of prompts, return one response each (in order).
pub trait Policy: Send + Sync {
    /// Answer every prompt.
    fn respond(&self, prompts: &[Prompt]) -> Result<Vec<String>, PolicyError>;

    /// Forget per-episode memory of a finished episode (no-op for stateless policies).
    fn end_episode(&self, _episode: &str) {}
}
