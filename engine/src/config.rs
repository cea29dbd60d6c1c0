//! `Qwen2Config` from an HF `config.json`, with transformers 4.x and 5.x key spellings.

use crate::error::{EngineError, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The storage dtype named by the config (`torch_dtype` in 4.x, `dtype` in 5.x).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDType {
    /// float32
    F32,
    /// bfloat16
    BF16,
    /// float16
    F16,
}

impl StorageDType {
    /// The HF spelling (`"float32"`, ...).
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::BF16 => "bfloat16",
            Self::F16 => "float16",
        }
    }

    /// Parses `"float32"`, `"bfloat16"`, `"float16"` (also `f32`, `bf16`, `f16`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "float32" | "f32" | "fp32" => Some(Self::F32),
            "bfloat16" | "bf16" => Some(Self::BF16),
            "float16" | "f16" | "fp16" | "half" => Some(Self::F16),
            _ => None,
        }
    }
}

/// Architecture hyper-parameters of a Qwen2 / Qwen2.5 checkpoint (HF field names).
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2Config {
    /// V: vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// H: query heads.
    pub num_attention_heads: usize,
    /// K: key/value heads (GQA); defaults to H.
    pub num_key_value_heads: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Longest sequence the rotary tables cover.
    pub max_position_embeddings: usize,
    /// The LM head reuses the embedding matrix (`lm_head.weight` is absent from the files).
    pub tie_word_embeddings: bool,
    /// Storage dtype recorded in the config.
    pub dtype: StorageDType,
    /// BOS token id(s) from the config, if any.
    pub bos_token_id: Option<u32>,
    /// EOS token id(s) from the config, if any.
    pub eos_token_id: Vec<u32>,
    /// The JSON it was read from, kept so that saving round-trips unknown keys.
    pub raw: Value,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
    use_sliding_window: Option<bool>,
    hidden_act: Option<String>,
    head_dim: Option<usize>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
}

fn ids(v: &Option<Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect(),
        _ => Vec::new(),
    }
}

impl Qwen2Config {
    /// Reads `DIR/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("config.json"))
    }

    /// Reads and validates a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::Json { path: path.into(), message: e.to_string() })?;
        Self::from_value(value, path)
    }

    /// Validates a parsed config; `path` is only used in error messages.
    pub fn from_value(value: Value, path: &Path) -> Result<Self> {
        let json_err = |message: String| EngineError::Json { path: PathBuf::from(path), message };
        let unsupported = |message: String| EngineError::Unsupported { path: PathBuf::from(path), message };
        let raw: RawConfig = serde_json::from_value(value.clone()).map_err(|e| json_err(e.to_string()))?;
        if let Some(t) = &raw.model_type
            && t != "qwen2"
        {
            return Err(unsupported(format!("model_type {t:?} (only \"qwen2\")")));
        }
        if raw.use_sliding_window == Some(true) {
            return Err(unsupported("use_sliding_window = true (sliding-window attention)".into()));
        }
        if let Some(act) = &raw.hidden_act
            && act != "silu"
        {
            return Err(unsupported(format!("hidden_act {act:?} (only \"silu\")")));
        }
        // 5.x: rope_parameters {rope_theta, rope_type}; 4.x: rope_theta + rope_scaling (null when default).
        let mut rope_theta = raw.rope_theta;
        for (key, rope) in [("rope_parameters", &raw.rope_parameters), ("rope_scaling", &raw.rope_scaling)] {
            let Some(Value::Object(map)) = rope else { continue };
            let kind = map.get("rope_type").or_else(|| map.get("type")).and_then(Value::as_str).unwrap_or("default");
            if kind != "default" {
                return Err(unsupported(format!("{key}.rope_type {kind:?} (only \"default\" RoPE)")));
            }
            if let Some(t) = map.get("rope_theta").and_then(Value::as_f64) {
                rope_theta = Some(t);
            }
        }
        let (h, hidden) = (raw.num_attention_heads, raw.hidden_size);
        let kv = raw.num_key_value_heads.unwrap_or(h);
        if h == 0 || hidden % h != 0 || (hidden / h) % 2 != 0 {
            return Err(json_err(format!("hidden_size {hidden} must split into {h} heads of even size")));
        }
        if kv == 0 || h % kv != 0 {
            return Err(json_err(format!("num_attention_heads {h} is not a multiple of num_key_value_heads {kv}")));
        }
        if let Some(d) = raw.head_dim
            && d != hidden / h
        {
            return Err(unsupported(format!("head_dim {d} != hidden_size / num_attention_heads")));
        }
        let dtype_name = raw.dtype.or(raw.torch_dtype).unwrap_or_else(|| "float32".into());
        let dtype = StorageDType::parse(&dtype_name).ok_or_else(|| unsupported(format!("dtype {dtype_name:?}")))?;
        if raw.vocab_size == 0 || raw.num_hidden_layers == 0 || raw.intermediate_size == 0 {
            return Err(json_err("vocab_size, num_hidden_layers and intermediate_size must be > 0".into()));
        }
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: hidden,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: h,
            num_key_value_heads: kv,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: rope_theta.unwrap_or(10_000.0),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(32_768),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            dtype,
            bos_token_id: ids(&raw.bos_token_id).first().copied(),
            eos_token_id: ids(&raw.eos_token_id),
            raw: value,
        })
    }

    /// D: per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The config as HF `config.json` JSON, in transformers-4.x spelling (which 5.x also reads),
    /// keeping every key of the file it came from.
    pub fn to_json(&self, dtype: StorageDType) -> Value {
        let mut v = match &self.raw {
            Value::Object(_) => self.raw.clone(),
            _ => Value::Object(Default::default()),
        };
        let m = v.as_object_mut().expect("object");
        let set = |m: &mut serde_json::Map<String, Value>, k: &str, x: Value| {
            m.insert(k.to_string(), x);
        };
        set(m, "architectures", serde_json::json!(["Qwen2ForCausalLM"]));
        set(m, "model_type", "qwen2".into());
        set(m, "vocab_size", self.vocab_size.into());
        set(m, "hidden_size", self.hidden_size.into());
        set(m, "intermediate_size", self.intermediate_size.into());
        set(m, "num_hidden_layers", self.num_hidden_layers.into());
        set(m, "num_attention_heads", self.num_attention_heads.into());
        set(m, "num_key_value_heads", self.num_key_value_heads.into());
        set(m, "rms_norm_eps", self.rms_norm_eps.into());
        set(m, "max_position_embeddings", self.max_position_embeddings.into());
        set(m, "tie_word_embeddings", self.tie_word_embeddings.into());
        set(m, "hidden_act", "silu".into());
        set(m, "use_sliding_window", false.into());
        if m.contains_key("rope_parameters") {
            set(m, "rope_parameters", serde_json::json!({"rope_theta": self.rope_theta, "rope_type": "default"}));
        } else {
            set(m, "rope_theta", self.rope_theta.into());
        }
        if m.contains_key("dtype") {
            set(m, "dtype", dtype.hf_name().into());
        } else {
            set(m, "torch_dtype", dtype.hf_name().into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "qwen2", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24,
               "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2})
    }

    fn parse(v: Value) -> Result<Qwen2Config> {
        Qwen2Config::from_value(v, Path::new("config.json"))
    }

    #[test]
    fn reads_4x_and_5x_rope_and_dtype_keys() {
        let mut v4 = base();
        v4["rope_theta"] = json!(1_000_000.0);
        v4["torch_dtype"] = json!("bfloat16");
        v4["rope_scaling"] = Value::Null;
        let c = parse(v4).unwrap();
        assert_eq!((c.rope_theta, c.dtype), (1e6, StorageDType::BF16));
        let mut v5 = base();
        v5["rope_parameters"] = json!({"rope_theta": 500.0, "rope_type": "default"});
        v5["dtype"] = json!("float16");
        let c = parse(v5).unwrap();
        assert_eq!((c.rope_theta, c.dtype, c.head_dim()), (500.0, StorageDType::F16, 4));
    }

    #[test]
    fn refuses_sliding_window_and_scaled_rope() {
        let mut v = base();
        v["use_sliding_window"] = json!(true);
        assert!(parse(v).unwrap_err().to_string().contains("use_sliding_window"));
        let mut v = base();
        v["rope_scaling"] = json!({"type": "yarn", "factor": 4.0});
        assert!(parse(v).unwrap_err().to_string().contains("yarn"));
        let mut v = base();
        v["rope_parameters"] = json!({"rope_type": "linear", "rope_theta": 1.0});
        assert!(parse(v).unwrap_err().to_string().contains("linear"));
    }

    #[test]
    fn refuses_bad_head_split() {
        let mut v = base();
        v["num_key_value_heads"] = json!(3);
        assert!(parse(v).unwrap_err().to_string().contains("num_key_value_heads"));
    }

    #[test]
    fn to_json_keeps_spelling_and_unknown_keys() {
        let mut v = base();
        v["dtype"] = json!("float32");
        v["custom"] = json!(7);
        let c = parse(v).unwrap();
        let out = c.to_json(StorageDType::BF16);
        assert_eq!(out["dtype"], json!("bfloat16"));
        assert_eq!(out["custom"], json!(7));
        assert_eq!(parse(out).unwrap().vocab_size, 32);
    }
}
