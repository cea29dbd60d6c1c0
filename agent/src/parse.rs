//! Parse a raw model response in the MLAgentBench format
//!
//! ```text
//! Thought: …
//! Action: Execute Script
//! Action Input: {"script_name": "train.py"}
//! ```
//!
//! Tolerant where models are sloppy: code fences, markdown emphasis around the name, text after the JSON, raw newlines
//! inside JSON strings (models write multi-line code that way), the last `Action:` winning. Strict where it matters: the
//! action must be one of [`crate::actions::ACTIONS`] and the argument keys must be exactly its keys; otherwise the
//! response is invalid and the error carries the usage to show the agent.

use crate::actions::{self, ActionDef};
use crate::trace::ParsedAction;

/// Why a response is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// No `Action:` line.
    #[error("no `Action:` line found. Respond with Thought, Action and Action Input; the valid actions are: {0}")]
    NoAction(String),
    /// The action name is not one of ours.
    #[error("unknown action `{name}`; the valid actions are: {valid}")]
    UnknownAction {
        /// The name given.
        name: String,
        /// The valid names.
        valid: String,
    },
    /// No JSON object after `Action Input:`.
    #[error("no JSON object after `Action Input:` for {action}. Usage:\n{usage}")]
    NoInput {
        /// The action.
        action: &'static str,
        /// Its usage block.
        usage: String,
    },
    /// The input is not valid JSON.
    #[error("the Action Input of {action} is not valid JSON ({message}). Usage:\n{usage}")]
    BadJson {
        /// The action.
        action: &'static str,
        /// serde_json's message.
        message: String,
        /// Its usage block.
        usage: String,
    },
    /// The keys differ from the action's.
    #[error("{action} takes exactly the keys [{expected}] but got [{got}]. Usage:\n{usage}")]
    WrongKeys {
        /// The action.
        action: &'static str,
        /// Its keys.
        expected: String,
        /// The keys given.
        got: String,
        /// Its usage block.
        usage: String,
    },
    /// A value has the wrong type (e.g. a line number that is not a number).
    #[error("bad Action Input for {action}: {message}. Usage:\n{usage}")]
    BadValue {
        /// The action.
        action: &'static str,
        /// The deserializer's message.
        message: String,
        /// Its usage block.
        usage: String,
    },
}

fn valid_names() -> String {
    actions::ACTIONS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
}

/// The action name written after the last `Action:` label (not `Action Input:`), and the text after it.
fn find_action(text: &str) -> Option<(&str, &str)> {
    let mut found = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let stripped = line.trim_start().trim_start_matches(['*', '#', '-', ' ']);
        let lower = stripped.to_ascii_lowercase();
        if lower.starts_with("action:") || lower.starts_with("action :") {
            let colon = stripped.find(':').expect("checked above");
            let name = stripped[colon + 1..].trim().trim_end_matches(['*', '`']).trim();
            found = Some((name, &text[offset + line.len()..]));
        }
        offset += line.len();
    }
    found
}

/// The first balanced `{…}` of `s` (string-aware), or `None`.
fn json_object(s: &str) -> Option<&str> {
    let start = s.find('{')?;
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, c) in s[start..].char_indices() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[start..start + i + 1]);
                }
            }
            _ => {}
        }
    }
    None
}

/// Escape raw control characters inside JSON strings, so that multi-line code written literally still parses.
fn escape_raw_newlines(json: &str) -> String {
    let (mut out, mut in_str, mut escaped) = (String::with_capacity(json.len()), false, false);
    for c in json.chars() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                (false, '\n') => {
                    out.push_str("\\n");
                    continue;
                }
                (false, '\r') => continue,
                (false, '\t') => {
                    out.push_str("\\t");
                    continue;
                }
                _ => {}
            }
        } else if c == '"' {
            in_str = true;
        }
        out.push(c);
    }
    out
}

/// Parse a response into a known action and its JSON arguments with exactly the right keys.
pub fn parse(response: &str) -> Result<(&'static ActionDef, ParsedAction), ParseError> {
    let (name, rest) = find_action(response).ok_or_else(|| ParseError::NoAction(valid_names()))?;
    let def = actions::find(name)
        .ok_or_else(|| ParseError::UnknownAction { name: name.to_string(), valid: valid_names() })?;
    let lower = rest.to_ascii_lowercase();
    let after_label = lower.find("action input").map_or(rest, |i| &rest[i..]);
    let obj = json_object(after_label).ok_or_else(|| ParseError::NoInput { action: def.name, usage: def.usage() })?;
    let value: serde_json::Value = serde_json::from_str(obj)
        .or_else(|_| serde_json::from_str(&escape_raw_newlines(obj)))
        .map_err(|e| ParseError::BadJson { action: def.name, message: e.to_string(), usage: def.usage() })?;
    let map = value.as_object().expect("json_object returns an object");
    let mut got: Vec<&str> = map.keys().map(String::as_str).collect();
    let mut expected: Vec<&str> = def.keys().collect();
    got.sort_unstable();
    expected.sort_unstable();
    if got != expected {
        return Err(ParseError::WrongKeys {
            action: def.name,
            expected: def.keys().collect::<Vec<_>>().join(", "),
            got: map.keys().cloned().collect::<Vec<_>>().join(", "),
            usage: def.usage(),
        });
    }
    Ok((def, ParsedAction { name: def.name.to_string(), input: value }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_fenced_responses_parse() {
        let r = "Thought: look around\nAction: List Files\nAction Input: {\"dir_path\": \".\"}\nObservation: ...";
        let (def, a) = parse(r).unwrap();
        assert_eq!((def.name, a.input["dir_path"].as_str()), ("List Files", Some(".")));
        let r = "Thought: x\n**Action:** execute   script\nAction Input:\n```json\n{\"script_name\": \"train.py\"}\n```\nDone.";
        assert_eq!(parse(r).unwrap().0.name, "Execute Script");
        let r = "```\nThought: x\nAction: Final Answer\nAction Input: {\"final_answer\": \"a {nested} brace\"} trailing\n```";
        let (_, a) = parse(r).unwrap();
        assert_eq!(a.input["final_answer"], "a {nested} brace");
    }

    #[test]
    fn raw_newlines_in_strings_are_forgiven() {
        let r = "Action: Write File\nAction Input: {\"file_name\": \"a.py\", \"content\": \"import os\n\tprint(1)\n\"}";
        let (_, a) = parse(r).unwrap();
        assert_eq!(a.input["content"], "import os\n\tprint(1)\n");
    }

    #[test]
    fn the_last_action_wins() {
        let r = "Action: List Files\nAction Input: {\"dir_path\": \".\"}\nAction: Final Answer\nAction Input: {\"final_answer\": \"x\"}";
        assert_eq!(parse(r).unwrap().0.name, "Final Answer");
    }

    #[test]
    fn invalid_responses_explain_themselves() {
        assert!(matches!(parse("I think we should train."), Err(ParseError::NoAction(_))));
        let e = parse("Action: Train Model\nAction Input: {}").unwrap_err();
        assert!(e.to_string().contains("unknown action `Train Model`") && e.to_string().contains("Execute Script"));
        let e = parse("Action: List Files\nAction Input: {\"path\": \".\"}").unwrap_err();
        assert!(matches!(e, ParseError::WrongKeys { .. }));
        assert!(e.to_string().contains("\"dir_path\""), "usage is shown: {e}");
        let e = parse("Action: List Files\nAction Input: {\"dir_path\": \".\", \"extra\": 1}").unwrap_err();
        assert!(matches!(e, ParseError::WrongKeys { .. }));
        let e = parse("Action: List Files\nAction Input: none").unwrap_err();
        assert!(matches!(e, ParseError::NoInput { .. }));
        let e = parse("Action: List Files\nAction Input: {\"dir_path\": .}").unwrap_err();
        assert!(matches!(e, ParseError::BadJson { .. }));
    }
}
