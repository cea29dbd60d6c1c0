//! SFT samples: conversations from ShareGPT (`conversations` with `from: human|gpt`, as
//! LLaMA-Factory reads) or OpenAI-messages JSONL, tokenised through the model's chat template with
//! labels only on assistant tokens, and truncated to a cutoff: user turns are first fitted to the
//! prompt budget by their structure (task title, recent responses, the ends of observations, the
//! cue), then whatever still overflows keeps the prompt's head and tail.

use crate::error::{Result, TrainError};
use mlagent_engine::{ChatMessage, TextTokenizer};
use serde_json::Value;
use std::path::Path;

/// One tokenised sample: `ids[i]` is trained to predict `ids[i+1]` where `labels[i+1]` is true.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Token ids.
    pub ids: Vec<u32>,
    /// True on tokens the loss covers (assistant text, including its end-of-turn token).
    pub labels: Vec<bool>,
}

impl Sample {
    /// Tokens the loss covers.
    pub fn label_count(&self) -> usize {
        self.labels.iter().skip(1).filter(|&&l| l).count()
    }
}

/// Reads a JSONL file of conversations in ShareGPT or OpenAI-messages form into chat messages.
pub fn read_conversations(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |m: String| TrainError::Data { path: path.into(), line: n + 1, message: m };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        out.push(to_messages(&v).map_err(bad)?);
    }
    if out.is_empty() {
        return Err(TrainError::Data { path: path.into(), line: 0, message: "no samples".into() });
    }
    Ok(out)
}

/// `{"conversations": [{"from", "value"}]}` or `{"messages": [{"role", "content"}]}` → messages.
fn to_messages(v: &Value) -> std::result::Result<Value, String> {
    let (list, role_key, text_key) = if let Some(c) = v.get("conversations") {
        (c, "from", "value")
    } else if let Some(m) = v.get("messages") {
        (m, "role", "content")
    } else {
        return Err("expected a \"conversations\" (ShareGPT) or \"messages\" (OpenAI) array".into());
    };
    let list = list.as_array().ok_or("conversation is not an array")?;
    let mut msgs = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = m.get(role_key).and_then(Value::as_str).ok_or(format!("message {i}: no \"{role_key}\""))?;
        let role = match role {
            "human" | "user" => "user",
            "gpt" | "assistant" => "assistant",
            "system" => "system",
            "observation" | "tool" => "tool",
            other => return Err(format!("message {i}: unknown role {other:?}")),
        };
        let content = m.get(text_key).and_then(Value::as_str).ok_or(format!("message {i}: no \"{text_key}\" text"))?;
        msgs.push(serde_json::json!({"role": role, "content": content}));
    }
    if !msgs.iter().any(|m| m["role"] == "assistant") {
        return Err("no assistant message to learn from".into());
    }
    Ok(Value::Array(msgs))
}

/// Tokenises one conversation: chunks between assistant turns are masked, each assistant turn
/// (as the template renders it, end-of-turn included) is labelled. Each chunk is encoded on its
/// own, as LLaMA-Factory does, so that a chunk boundary never merges tokens across it.
pub fn tokenize(tok: &TextTokenizer, messages: &Value) -> Result<Sample> {
    let tmpl = tok.chat_template()?;
    let msgs = messages.as_array().expect("messages array");
    let mut ids = Vec::new();
    let mut labels = Vec::new();
    let mut done = String::new(); // text already tokenised
    for i in 0..msgs.len() {
        if msgs[i]["role"] != "assistant" {
            continue;
        }
        let prefix = tmpl.render_json(&Value::Array(msgs[..i].to_vec()), true)?;
        let upto = tmpl.render_json(&Value::Array(msgs[..=i].to_vec()), false)?;
        let (Some(masked), Some(answer)) = (prefix.strip_prefix(done.as_str()), upto.strip_prefix(prefix.as_str())) else {
            return Err(TrainError::Template(format!(
                "the chat template does not render conversations incrementally (turn {i}); cannot place labels"
            )));
        };
        for (text, label) in [(masked, false), (answer, true)] {
            let t = tok.encode(text, false)?;
            labels.extend(std::iter::repeat_n(label, t.len()));
            ids.extend(t);
        }
        done = upto;
    }
    Ok(Sample { ids, labels })
}

/// Cuts a prompt to at most `max` tokens: its first 60 % and its last 40 % (the most recent history
/// and the cue) are kept and the middle is dropped. For rendered states this applies only to what
/// [`fit_user_text`] could not shorten. Training
/// ([`truncate`]) and acting ([`crate::actor::PromptCodec`]) cut with this one function and the same
/// `max`, so the model acts on prompts shaped exactly like those it learnt from: a model trained on
/// one cut and run on another (the cut's seam at another position) was measured to break down.
pub fn prompt_keep(len: usize, max: usize) -> Vec<usize> {
    if len <= max {
        return (0..len).collect();
    }
    let head = max * 3 / 5;
    let tail = max - head;
    (0..head).chain(len - tail..len).collect()
}

/// Fits a user turn into a prompt of at most `max_prompt` tokens (chat template included) by its
/// structure ([`mlagent_agent::prompt_fit::fit`]): the tool manual, format and grading text give
/// way first, the observations are cut in the middle, the responses and the cue stay. SFT samples
/// ([`fit_messages`]) and acting ([`crate::actor::PromptCodec`]) both fit through this function
/// with the same `max_prompt`, before [`prompt_keep`] cuts whatever still overflows.
pub fn fit_user_text(tok: &TextTokenizer, text: &str, max_prompt: usize) -> Result<String> {
    let overhead = tok.encode(&tok.apply_chat_template(&[ChatMessage::new("user", "")], true)?, false)?.len();
    let count = |s: &str| tok.encode(s, false).map_or(usize::MAX, |v| v.len());
    Ok(mlagent_agent::prompt_fit::fit(text, max_prompt.saturating_sub(overhead), &count))
}

/// A conversation with each user turn fitted by [`fit_user_text`].
pub fn fit_messages(tok: &TextTokenizer, messages: &Value, max_prompt: usize) -> Result<Value> {
    let mut msgs = messages.as_array().expect("messages array").clone();
    for m in msgs.iter_mut().filter(|m| m["role"] == "user") {
        let text = m["content"].as_str().unwrap_or_default().to_string();
        m["content"] = Value::String(fit_user_text(tok, &text, max_prompt)?);
    }
    Ok(Value::Array(msgs))
}

/// Truncates a sample to at most `cutoff` tokens. The prompt (everything before the final labelled
/// run, the action) is cut by [`prompt_keep`] to at most `max_prompt` tokens, exactly as the
/// model's prompts are cut when it acts; the action keeps its first `cutoff − prompt` tokens.
pub fn truncate(s: &Sample, cutoff: usize, max_prompt: usize) -> Sample {
    // The completion: the trailing run that starts at the last labelled chunk.
    let first_label = s.labels.iter().rposition(|&l| !l).map_or(0, |p| p + 1);
    let mut idx = prompt_keep(first_label, max_prompt.min(cutoff));
    let keep_completion = (s.ids.len() - first_label).min(cutoff - idx.len());
    idx.extend(first_label..first_label + keep_completion);
    Sample { ids: idx.iter().map(|&i| s.ids[i]).collect(), labels: idx.iter().map(|&i| s.labels[i]).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_head_tail_and_completion() {
        let s = Sample { ids: (0..100).collect(), labels: (0..100).map(|i| i >= 90).collect() };
        let t = truncate(&s, 40, 30);
        assert_eq!(t.ids.len(), 40);
        // 30 prompt tokens: 18 head + 12 tail; the 10 completion tokens whole.
        assert_eq!(&t.ids[..18], &(0..18).collect::<Vec<u32>>()[..]);
        assert_eq!(&t.ids[18..30], &(78..90).collect::<Vec<u32>>()[..]);
        assert_eq!(&t.ids[30..], &(90..100).collect::<Vec<u32>>()[..]);
        assert_eq!(t.labels.iter().filter(|&&l| l).count(), 10);
        // A long action is cut at the cutoff, after the same prompt.
        let t = truncate(&s, 35, 30);
        assert_eq!(&t.ids[..30], &truncate(&s, 40, 30).ids[..30]);
        assert_eq!(&t.ids[30..], &(90..95).collect::<Vec<u32>>()[..]);
        assert_eq!(truncate(&s, 200, 150), s);
    }

    #[test]
    fn training_prompts_are_cut_as_acting_prompts_are() {
        // The prompt part of every training sample equals the prompt alone cut for acting,
        // whatever the action's length.
        for action in [3usize, 17, 40] {
            let n = 120 + action;
            let s = Sample { ids: (0..n as u32).collect(), labels: (0..n).map(|i| i >= 120).collect() };
            let acting: Vec<u32> = prompt_keep(120, 48).into_iter().map(|i| i as u32).collect();
            assert_eq!(&truncate(&s, 64, 48).ids[..48], &acting[..]);
        }
        assert_eq!(prompt_keep(5, 48), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn reads_sharegpt_and_openai_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(
            &p,
            "{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"gpt\", \"value\": \"a\"}]}\n\
             {\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n",
        )
        .unwrap();
        let c = read_conversations(&p).unwrap();
        assert_eq!(c[0], c[1]);
        std::fs::write(&p, "{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}]}\n").unwrap();
        let e = read_conversations(&p).unwrap_err().to_string();
        assert!(e.contains("d.jsonl:1") && e.contains("no assistant"), "{e}");
    }
}
