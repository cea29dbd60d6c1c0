//! The environment's helper LLM (for Edit Script (AI) and Understand File) run locally by the
//! engine from a model directory, instead of over an OpenAI-compatible endpoint.

use burn::backend::Flex;
use burn::tensor::FloatDType;
use mlagent_agent::helper::{Helper, HelperError};
use mlagent_engine::{ChatMessage, GenerateOptions, Qwen2, SamplingParams, TextTokenizer};
use std::path::Path;

/// A local model answering helper prompts greedily on the CPU (burn-flex).
pub struct LocalHelper {
    model: Qwen2<Flex>,
    tokenizer: TextTokenizer,
    device: burn::backend::flex::FlexDevice,
    eos: Vec<u32>,
    max_new_tokens: usize,
}

impl LocalHelper {
    /// Loads `dir` (an HF model dir with a tokenizer and chat template).
    pub fn load(dir: &Path, max_new_tokens: usize) -> crate::Result<Self> {
        let device = burn::backend::flex::FlexDevice;
        let (model, _) = mlagent_engine::io::load::<Flex>(dir, FloatDType::F32, &device)?;
        let tokenizer = TextTokenizer::from_dir(dir)?;
        tokenizer.chat_template()?;
        let eos = mlagent_engine::tokenizer::eos_ids(dir, Some(&tokenizer))?;
        Ok(Self { model, tokenizer, device, eos, max_new_tokens })
    }
}

impl Helper for LocalHelper {
    fn complete(&self, prompt: &str) -> Result<String, HelperError> {
        let err = |e: mlagent_engine::EngineError| HelperError::Model(e.to_string());
        let text = self.tokenizer.apply_chat_template(&[ChatMessage::new("user", prompt)], true).map_err(err)?;
        let mut ids = self.tokenizer.encode(&text, false).map_err(err)?;
        // Keep the end of an over-long prompt (the instruction comes last).
        let room = self.model.max_positions().saturating_sub(self.max_new_tokens + 1);
        if ids.len() > room {
            ids.drain(..ids.len() - room);
        }
        let opts = GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            sampling: SamplingParams::greedy(),
            seed: 0,
            eos_ids: self.eos.clone(),
            stop_strings: vec![],
            pad_id: self.tokenizer.pad_id().unwrap_or(0),
        };
        let out = mlagent_engine::generate(&self.model, &[ids], &opts, Some(&self.tokenizer), &self.device).map_err(err)?;
        self.tokenizer.decode(&out[0].token_ids, true).map_err(err)
    }
}
