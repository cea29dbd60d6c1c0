//! Embedded default models: a randomly initialised Qwen2 of a named shape plus a byte-level BPE
//! tokenizer trained on a given corpus (the agent's own prompts, actions and task scripts), with
//! Qwen's special tokens and a ChatML template. Everything is deterministic for a seed.

use crate::config::{Qwen2Config, StorageDType};
use crate::error::{EngineError, Result};
use crate::io::{init_random, save, write_atomic};
use burn::tensor::FloatDType;
use burn::tensor::backend::Backend;
use std::path::Path;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// Qwen's control tokens, in Qwen2.5's order; the first three matter for chat (`<|endoftext|>`
/// pads and ends documents, `<|im_start|>`/`<|im_end|>` frame ChatML turns).
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// ChatML as Qwen2.5 uses it, without the default system prompt or tool sections.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// Named model shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// hidden 256, intermediate 704, 4 layers, 4/2 heads, vocab 8192: trains on a CPU.
    Tiny,
    /// Qwen2.5-0.5B's shape: hidden 896, intermediate 4864, 24 layers, 14/2 heads, vocab 151936.
    Qwen05b,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tiny" => Ok(Self::Tiny),
            "0.5b" | "qwen2.5-0.5b" => Ok(Self::Qwen05b),
            other => Err(format!("unknown preset {other:?}: use tiny or 0.5b")),
        }
    }
}

impl Preset {
    /// The architecture of this preset (f32 storage).
    pub fn config(self) -> Qwen2Config {
        let (vocab, hidden, inter, layers, heads, kv, max_pos, tied) = match self {
            Self::Tiny => (8192, 256, 704, 4, 4, 2, 8192, true),
            Self::Qwen05b => (151_936, 896, 4864, 24, 14, 2, 32_768, true),
        };
        let json = serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": vocab,
            "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "rms_norm_eps": 1e-6,
            "rope_theta": 1_000_000.0, "max_position_embeddings": max_pos, "tie_word_embeddings": tied,
            "hidden_act": "silu", "use_sliding_window": false, "sliding_window": null,
            "torch_dtype": "float32", "attention_dropout": 0.0, "initializer_range": 0.02,
            "bos_token_id": null, "eos_token_id": 2,
        });
        Qwen2Config::from_value(json, Path::new("<preset>")).expect("presets are valid")
    }
}

/// Trains a byte-level BPE tokenizer of at most `vocab_size` tokens on `corpus`, with
/// [`SPECIAL_TOKENS`] as ids 0, 1, 2.
pub fn train_tokenizer(corpus: &[String], vocab_size: usize) -> Result<Tokenizer> {
    let err = |e: tokenizers::Error| EngineError::Tokenizer { path: "<trained>".into(), message: e.to_string() };
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_post_processor(Some(ByteLevel::new(false, true, true)));
    let specials = SPECIAL_TOKENS.iter().map(|t| AddedToken::from(t.to_string(), true)).collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer.train(&mut trainer, corpus.iter()).map_err(err)?;
    Ok(tokenizer)
}

/// Writes a preset model with a tokenizer trained on `corpus` into `out` as an HF model dir.
pub fn write_preset<B: Backend>(preset: Preset, corpus: &[String], seed: u64, out: &Path, device: &B::Device) -> Result<Qwen2Config> {
    let config = preset.config();
    let tokenizer = train_tokenizer(corpus, config.vocab_size.min(8192))?;
    if tokenizer.get_vocab_size(true) > config.vocab_size {
        return Err(EngineError::Input(format!("trained tokenizer has more tokens than vocab_size {}", config.vocab_size)));
    }
    std::fs::create_dir_all(out).map_err(|e| EngineError::io(out, e))?;
    let tok_json = tokenizer
        .to_string(true)
        .map_err(|e| EngineError::Tokenizer { path: out.join("tokenizer.json"), message: e.to_string() })?;
    write_atomic(&out.join("tokenizer.json"), tok_json.as_bytes())?;
    let tok_cfg = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": null, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": null, "add_bos_token": false,
        "clean_up_tokenization_spaces": false, "model_max_length": config.max_position_embeddings,
        "chat_template": CHATML_TEMPLATE,
        "added_tokens_decoder": SPECIAL_TOKENS.iter().enumerate().map(|(i, t)| (i.to_string(), serde_json::json!({
            "content": t, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true
        }))).collect::<serde_json::Map<_, _>>(),
    });
    write_atomic(&out.join("tokenizer_config.json"), serde_json::to_string_pretty(&tok_cfg).expect("json").as_bytes())?;
    let model = init_random::<B>(&config, seed, 0.02, FloatDType::F32, device);
    save(&model, &config, out, StorageDType::F32, &[2, 0])?;
    Ok(config)
}
