//! HF chat templates rendered with minijinja, configured to behave as transformers'
//! `apply_chat_template`: `trim_blocks` and `lstrip_blocks` on, Python string methods
//! (`startswith`, `split`, `strip`, ...) through minijinja-contrib's pycompat, `tojson` with
//! Python's `json.dumps` spacing, `raise_exception`, and the special tokens in the context.

use crate::error::{EngineError, Result};
use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One chat message (`{"role": ..., "content": ...}`); templates may read other keys too,
/// so rendering also accepts raw JSON messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// A compiled chat template plus the special-token strings it may reference.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    special: BTreeMap<String, String>,
    source: PathBuf,
}

/// Serialises like Python's `json.dumps(x, ensure_ascii=False)`: `", "` and `": "` separators,
/// keys in insertion order, non-ASCII characters kept.
fn py_json(v: &serde_json::Value, indent: Option<usize>, level: usize, out: &mut String) {
    use serde_json::Value as J;
    let (nl, pad, pad_in, item_sep) = match indent {
        Some(n) => ("\n", " ".repeat(n * level), " ".repeat(n * (level + 1)), ","),
        None => ("", String::new(), String::new(), ", "),
    };
    match v {
        J::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                out.push_str(if i > 0 { item_sep } else { "" });
                out.push_str(nl);
                out.push_str(&pad_in);
                py_json(x, indent, level + 1, out);
            }
            out.push_str(nl);
            out.push_str(&pad);
            out.push(']');
        }
        J::Object(m) if !m.is_empty() => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                out.push_str(if i > 0 { item_sep } else { "" });
                out.push_str(nl);
                out.push_str(&pad_in);
                out.push_str(&serde_json::to_string(k).expect("string"));
                out.push_str(": ");
                py_json(x, indent, level + 1, out);
            }
            out.push_str(nl);
            out.push_str(&pad);
            out.push('}');
        }
        other => out.push_str(&serde_json::to_string(other).expect("json")),
    }
}

fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> std::result::Result<Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value).map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    py_json(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn raise_exception(message: String) -> std::result::Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> String {
    // Dates in prompts make runs irreproducible; the template gets a fixed, documented date.
    let _ = format;
    "26 Nov 2026".to_string()
}

impl ChatTemplate {
    /// Compiles `template`; `special` maps `bos_token`, `eos_token`, ... to their strings.
    pub fn new(template: String, special: BTreeMap<String, String>, source: PathBuf) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", template)
            .map_err(|e| EngineError::Template { path: source.clone(), message: e.to_string() })?;
        Ok(Self { env, special, source })
    }

    /// Renders `messages` (a JSON array of message objects) as HF `apply_chat_template(messages,
    /// add_generation_prompt=..., tokenize=False)` does.
    pub fn render_json(&self, messages: &serde_json::Value, add_generation_prompt: bool) -> Result<String> {
        let err = |message: String| EngineError::Template { path: self.source.clone(), message };
        if !messages.is_array() {
            return Err(err("messages must be a JSON array of {\"role\", \"content\"} objects".into()));
        }
        let tmpl = self.env.get_template("chat").map_err(|e| err(e.to_string()))?;
        let mut ctx: BTreeMap<String, Value> =
            self.special.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
        ctx.insert("messages".into(), Value::from_serialize(messages));
        ctx.insert("add_generation_prompt".into(), Value::from(add_generation_prompt));
        tmpl.render(ctx).map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            err(msg)
        })
    }

    /// Renders typed messages.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_json(&serde_json::to_value(messages).expect("messages serialise"), add_generation_prompt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml() {
        let t = ChatTemplate::new(CHATML.into(), BTreeMap::new(), "t".into()).unwrap();
        let text = t.render(&[ChatMessage::new("user", "hi")], true).unwrap();
        assert_eq!(text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn python_methods_tojson_and_exceptions() {
        let src = "{% set ns = namespace(n=0) %}{% for m in messages[::-1] %}{% if m.content.startswith('a') %}{% set ns.n = ns.n + 1 %}{% endif %}{% endfor %}{{ ns.n }}|{{ messages[0].content.split(',')[-1].strip() }}|{{ {'k': [1, 'é<']} | tojson }}{% if messages|length > 2 %}{{ raise_exception('too many') }}{% endif %}";
        let t = ChatTemplate::new(src.into(), BTreeMap::new(), "t".into()).unwrap();
        let msgs = [ChatMessage::new("user", "ab, cd "), ChatMessage::new("user", "b")];
        assert_eq!(t.render(&msgs, false).unwrap(), "1|cd|{\"k\": [1, \"é<\"]}");
        let three = [msgs[0].clone(), msgs[1].clone(), msgs[1].clone()];
        assert!(t.render(&three, false).unwrap_err().to_string().contains("too many"));
    }
}
