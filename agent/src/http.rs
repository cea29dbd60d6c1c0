//! A minimal plain-HTTP/1.1 JSON client for OpenAI-compatible endpoints (chat completions, embeddings).
//!
//! No TLS and no dependencies: the endpoints we talk to are local servers (vLLM, llama.cpp, SGLang) or a
//! TLS-terminating proxy in front of a remote API. One request per connection (`Connection: close`), with
//! `Content-Length` or chunked replies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An endpoint: `http://host[:port]/base` plus a path under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Absolute request path, e.g. `/v1/chat/completions`.
    pub path: String,
}

impl Endpoint {
    /// Parse `base_url` (`http://host[:port][/prefix]`) and append `suffix` (e.g. `chat/completions`); `None` when
    /// the URL is not plain `http://` with a host.
    pub fn parse(base_url: &str, suffix: &str) -> Option<Endpoint> {
        let rest = base_url.strip_prefix("http://")?;
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (authority.to_string(), 80),
        };
        if host.is_empty() {
            return None;
        }
        let path = format!("/{}/{suffix}", path.trim_matches('/')).replace("//", "/");
        Some(Endpoint { host, port, path })
    }

    /// `http://host:port/path`, for messages.
    pub fn url(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.path)
    }

    /// POST a JSON body; returns the HTTP status and the reply body.
    pub fn post_json(&self, body: &str, api_key: Option<&str>, timeout: Duration) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))?;
        stream.set_read_timeout(Some(timeout))?;
        let auth = api_key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}\
             Connection: close\r\n\r\n{body}",
            self.path,
            self.host,
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (mut length, mut chunked) = (None, false);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
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
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk)?;
                payload.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            payload.resize(n, 0);
            reader.read_exact(&mut payload)?;
        } else {
            reader.read_to_end(&mut payload)?;
        }
        Ok((status, String::from_utf8_lossy(&payload).into_owned()))
    }
}

/// A one-shot local server for tests: answers the first request with `reply` (a JSON body) and returns the request.
#[cfg(test)]
pub(crate) fn serve_once(reply: String) -> (u16, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 65536];
        // Read headers, then the announced body.
        loop {
            let n = s.read(&mut buf).unwrap();
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req);
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                    .unwrap_or(0);
                if req.len() >= end + 4 + len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}", reply.len()).unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    (port, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("http://127.0.0.1:8000/v1", "embeddings").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.path.as_str()), ("127.0.0.1", 8000, "/v1/embeddings"));
        assert_eq!(Endpoint::parse("http://h", "chat/completions").unwrap().path, "/chat/completions");
        assert!(Endpoint::parse("https://h/v1", "x").is_none());
        assert!(Endpoint::parse("http://:1/v1", "x").is_none());
    }
}
