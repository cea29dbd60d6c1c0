//! The helper LLM behind Edit Script (AI) and Understand File.
//!
//! MLAgentBench calls a second LLM for these two actions. Here that is a [`Helper`]: the trainers may plug in a local
//! model, and [`OpenAiHelper`] talks to any OpenAI-compatible `/v1/chat/completions` endpoint over plain HTTP (a local
//! vLLM / llama.cpp / SGLang server; put a TLS-terminating proxy in front of a remote `https://` API). The API key is
//! read from an environment variable named by the caller, never from a flag or a file.

use crate::http::Endpoint;
use std::time::Duration;

/// A text-completion service.
pub trait Helper: Send + Sync {
    /// Answer one prompt.
    fn complete(&self, prompt: &str) -> Result<String, HelperError>;
}

/// The helper LLM failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelperError {
    /// The URL is not `http://host[:port]/path`.
    #[error("unsupported helper URL `{0}` (expected http://host:port/v1; use a local proxy for https)")]
    Url(String),
    /// Connecting, sending or receiving failed.
    #[error("helper request to {url} failed: {source}")]
    Io {
        /// The endpoint.
        url: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The server answered with an error status.
    #[error("helper endpoint answered HTTP {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The reply is not a chat completion.
    #[error("helper reply is not a chat completion: {0}")]
    Reply(String),
    /// A local helper model (supplied by the trainers' crate) failed.
    #[error("local helper model: {0}")]
    Model(String),
}

/// An OpenAI-compatible chat-completions client.
#[derive(Debug, Clone)]
pub struct OpenAiHelper {
    endpoint: Endpoint,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
}

impl OpenAiHelper {
    /// `base_url` like `http://127.0.0.1:8000/v1`; `api_key_env` names the environment variable holding the key.
    pub fn new(base_url: &str, model: &str, api_key_env: Option<&str>) -> Result<Self, HelperError> {
        let endpoint = Endpoint::parse(base_url, "chat/completions").ok_or_else(|| HelperError::Url(base_url.into()))?;
        let api_key = api_key_env.and_then(|v| std::env::var(v).ok()).filter(|k| !k.is_empty());
        Ok(OpenAiHelper { endpoint, model: model.into(), api_key, timeout: Duration::from_secs(300) })
    }

    /// Send a chat conversation (`[{role, content}]`) with the given sampling temperature; return the reply text.
    pub fn chat(&self, messages: serde_json::Value, temperature: f64) -> Result<String, HelperError> {
        let body = serde_json::json!({"model": self.model, "messages": messages, "temperature": temperature}).to_string();
        let (status, text) = self
            .endpoint
            .post_json(&body, self.api_key.as_deref(), self.timeout)
            .map_err(|source| HelperError::Io { url: self.endpoint.url(), source })?;
        if !(200..300).contains(&status) {
            return Err(HelperError::Status { status, body: text.chars().take(500).collect() });
        }
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| HelperError::Reply(e.to_string()))?;
        v["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| HelperError::Reply(text.chars().take(300).collect()))
    }
}

impl Helper for OpenAiHelper {
    fn complete(&self, prompt: &str) -> Result<String, HelperError> {
        self.chat(serde_json::json!([{"role": "user", "content": prompt}]), 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn talks_to_an_openai_compatible_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let body = r#"{"choices":[{"message":{"role":"assistant","content":"hello there"}}]}"#;
            write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
            req
        });
        let h = OpenAiHelper::new(&format!("http://127.0.0.1:{port}/v1"), "m", None).unwrap();
        assert_eq!(h.complete("hi").unwrap(), "hello there");
        let req = server.join().unwrap();
        assert!(req.starts_with("POST /v1/chat/completions HTTP/1.1"), "{req}");
        assert!(req.contains("\"content\":\"hi\""));
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(matches!(OpenAiHelper::new("https://api.x.com/v1", "m", None), Err(HelperError::Url(_))));
        assert!(matches!(OpenAiHelper::new("http://:80/v1", "m", None), Err(HelperError::Url(_))));
    }
}
