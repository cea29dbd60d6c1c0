//! The helper LLM behind Edit Script (AI) and Understand File.
//!
//! MLAgentBench calls a second LLM for these two actions. Here that is a [`Helper`]: the trainers may plug in a local
//! model, and [`OpenAiHelper`] talks to any OpenAI-compatible `/v1/chat/completions` endpoint over plain HTTP (a local
//! vLLM / llama.cpp / SGLang server; put a TLS-terminating proxy in front of a remote `https://` API). The API key is
//! read from an environment variable named by the caller, never from a flag or a file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
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
}

/// An OpenAI-compatible chat-completions client.
#[derive(Debug, Clone)]
pub struct OpenAiHelper {
    host: String,
    port: u16,
    path: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
}

impl OpenAiHelper {
    /// `base_url` like `http://127.0.0.1:8000/v1`; `api_key_env` names the environment variable holding the key.
    pub fn new(base_url: &str, model: &str, api_key_env: Option<&str>) -> Result<Self, HelperError> {
        let rest = base_url.strip_prefix("http://").ok_or_else(|| HelperError::Url(base_url.into()))?;
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| HelperError::Url(base_url.into()))?),
            None => (authority.to_string(), 80),
        };
        if host.is_empty() {
            return Err(HelperError::Url(base_url.into()));
        }
        let path = format!("/{}/chat/completions", path.trim_matches('/')).replace("//", "/");
        let api_key = api_key_env.and_then(|v| std::env::var(v).ok()).filter(|k| !k.is_empty());
        Ok(OpenAiHelper { host, port, path, model: model.into(), api_key, timeout: Duration::from_secs(300) })
    }

    fn url(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.path)
    }
}

impl Helper for OpenAiHelper {
    fn complete(&self, prompt: &str) -> Result<String, HelperError> {
        let io = |source| HelperError::Io { url: self.url(), source };
        let body = serde_json::json!({
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
        })
        .to_string();
        let mut stream = TcpStream::connect((self.host.as_str(), self.port)).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        let auth = self.api_key.as_ref().map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}\
             Connection: close\r\n\r\n{body}",
            self.path,
            self.host,
            body.len()
        );
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).map_err(io)?;
        let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (mut length, mut chunked) = (None, false);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(io)? == 0 || line.trim().is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut payload = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).map_err(io)?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk).map_err(io)?;
                payload.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            payload.resize(n, 0);
            reader.read_exact(&mut payload).map_err(io)?;
        } else {
            reader.read_to_end(&mut payload).map_err(io)?;
        }
        let text = String::from_utf8_lossy(&payload).into_owned();
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

#[cfg(test)]
mod tests {
    use super::*;
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
