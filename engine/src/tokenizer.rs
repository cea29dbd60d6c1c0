//! Text ↔ token ids from an HF `tokenizer.json`, with `tokenizer_config.json`'s chat template and
//! special tokens, and the EOS ids generation stops on.

use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::error::{EngineError, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A tokenizer loaded from a model (or tokenizer-only) directory.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    template: Option<ChatTemplate>,
    eos_token: Option<String>,
    pad_token: Option<String>,
    dir: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("dir", &self.dir).field("vocab", &self.vocab_size()).finish()
    }
}

/// A special token in tokenizer_config.json: a string or `{"content": ...}`.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json` and, if present, `dir/tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(EngineError::Tokenizer { path: tok_path, message: "file not found".into() });
        }
        let inner = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| EngineError::Tokenizer { path: tok_path.clone(), message: e.to_string() })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = if cfg_path.is_file() {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| EngineError::io(&cfg_path, e))?;
            serde_json::from_str(&text).map_err(|e| EngineError::Json { path: cfg_path.clone(), message: e.to_string() })?
        } else {
            Value::Object(Default::default())
        };
        let mut special = BTreeMap::new();
        for key in ["bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"] {
            if let Some(s) = token_string(cfg.get(key)) {
                special.insert(key.to_string(), s);
            }
        }
        let template_src = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: use "default" (or the first).
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template").and_then(Value::as_str))
                .map(str::to_string),
            _ => None,
        };
        let template_src = match template_src {
            Some(s) => Some(s),
            None => {
                let jinja = dir.join("chat_template.jinja");
                if jinja.is_file() {
                    Some(std::fs::read_to_string(&jinja).map_err(|e| EngineError::io(&jinja, e))?)
                } else {
                    None
                }
            }
        };
        let template = template_src.map(|s| ChatTemplate::new(s, special.clone(), cfg_path.clone())).transpose()?;
        Ok(Self {
            inner,
            template,
            eos_token: special.get("eos_token").cloned(),
            pad_token: special.get("pad_token").cloned(),
            dir: dir.to_path_buf(),
        })
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Encodes text; `add_special_tokens` as in HF (false for already-templated chat text).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| EngineError::Tokenizer { path: self.dir.join("tokenizer.json"), message: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids to text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| EngineError::Tokenizer { path: self.dir.join("tokenizer.json"), message: e.to_string() })
    }

    /// The chat template, or an error naming the file that lacks one.
    pub fn chat_template(&self) -> Result<&ChatTemplate> {
        self.template.as_ref().ok_or_else(|| EngineError::Template {
            path: self.dir.join("tokenizer_config.json"),
            message: "this tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja)".into(),
        })
    }

    /// HF `apply_chat_template(messages, add_generation_prompt=..., tokenize=False)`.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.chat_template()?.render(messages, add_generation_prompt)
    }

    /// Renders JSON messages and encodes the text without adding special tokens, as HF's
    /// `apply_chat_template(..., tokenize=True)` does.
    pub fn chat_ids_json(&self, messages: &Value, add_generation_prompt: bool) -> Result<(String, Vec<u32>)> {
        let text = self.chat_template()?.render_json(messages, add_generation_prompt)?;
        let ids = self.encode(&text, false)?;
        Ok((text, ids))
    }

    /// Id of the tokenizer config's `eos_token`.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_id(t))
    }

    /// Id of the tokenizer config's `pad_token`.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_token.as_deref().and_then(|t| self.token_id(t))
    }
}

/// EOS ids for generation: `generation_config.json`'s `eos_token_id` if present, else
/// `config.json`'s, else the tokenizer's `eos_token`.
pub fn eos_ids(dir: &Path, tokenizer: Option<&TextTokenizer>) -> Result<Vec<u32>> {
    for file in ["generation_config.json", "config.json"] {
        let path = dir.join(file);
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| EngineError::io(&path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| EngineError::Json { path: path.clone(), message: e.to_string() })?;
        let ids: Vec<u32> = match v.get("eos_token_id") {
            Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|x| x as u32).collect(),
            _ => Vec::new(),
        };
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
    Ok(tokenizer.and_then(TextTokenizer::eos_id).into_iter().collect())
}
