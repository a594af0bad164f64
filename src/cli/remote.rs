//! The client side of `--server URL`: the CLI's database commands sent to a running
//! `rwkvdb serve` (docs/api.md) instead of opening the file.

use std::fmt::Write;

use clap::Args;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Where a running server is: `--server` or `$RWKVDB_SERVER`.
#[derive(Args, Clone, Default)]
pub struct ServerArg {
    /// Send the command to a running `rwkvdb serve` at this URL (e.g.
    /// `http://127.0.0.1:8750`)
    /// instead of opening --db.
    #[arg(long, env = "RWKVDB_SERVER", global = true)]
    pub server: Option<String>,
    /// API key for --server (sent as `Authorization: Bearer KEY`).
    #[arg(long, env = "RWKVDB_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
}

impl ServerArg {
    /// A client when `--server` was given.
    pub fn client(&self) -> Option<Remote> {
        let base = self.server.as_deref()?.trim_end_matches('/').to_string();
        Some(Remote { base, api_key: self.api_key.clone(), agent: ureq::AgentBuilder::new().build() })
    }
}

/// An error talking to the server: its own JSON error message, or why it could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server answered with an error.
    #[error("server: {message} (HTTP {status}, {code})")]
    Server { status: u16, code: String, message: String },
    /// No answer.
    #[error("cannot reach the server at {url}: {reason}")]
    Transport { url: String, reason: String },
    /// An answer that is not what the API documents.
    #[error("unexpected answer from {url}: {reason}")]
    BadAnswer { url: String, reason: String },
}

/// A connection to `rwkvdb serve`.
pub struct Remote {
    base: String,
    api_key: Option<String>,
    agent: ureq::Agent,
}

impl Remote {
    /// `GET path`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        self.call::<T, ()>("GET", path, None)
    }

    /// `DELETE path`.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        self.call::<T, ()>("DELETE", path, None)
    }

    /// `POST path` with a JSON body.
    pub fn post<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T, RemoteError> {
        self.call("POST", path, Some(body))
    }

    fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, RemoteError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.request(method, &url);
        if let Some(key) = &self.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        let answer = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let response = match answer {
            Ok(r) => r,
            Err(ureq::Error::Status(status, r)) => {
                let body: Value = r.into_json().unwrap_or(Value::Null);
                let field = |k: &str| body["error"][k].as_str().unwrap_or("").to_string();
                let message = if field("message").is_empty() { "no message".into() } else { field("message") };
                return Err(RemoteError::Server { status, code: field("code"), message });
            }
            Err(e) => return Err(RemoteError::Transport { url, reason: e.to_string() }),
        };
        response.into_json().map_err(|e| RemoteError::BadAnswer { url, reason: e.to_string() })
    }
}

/// `s` as one URL path segment (every byte but RFC 3986's unreserved ones percent-encoded).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
