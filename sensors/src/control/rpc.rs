//! The TCP 4028 JSON transport shared by cgminer/bmminer, LuxOS and Whatsminer: one request per
//! connection; the miner answers one JSON document (cgminer adds a NUL) and closes.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ControlError;

/// Answers larger than this are not from a miner's control API.
const MAX_REPLY: usize = 1 << 20;

#[derive(Debug, Clone)]
pub(crate) struct JsonTcp {
    pub address: String,
    pub timeout: Duration,
}

/// `STATUS` of a reply, in either layout: cgminer/LuxOS `{"STATUS":[{"STATUS":"S",...}]}` or
/// Whatsminer v2 `{"STATUS":"S","Code":131,"Msg":...}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReplyStatus {
    pub severity: String,
    pub code: Option<i64>,
    pub msg: String,
}

impl ReplyStatus {
    /// cgminer severities S (success) and I (info) are fine; W, E and F are not.
    pub fn ok(&self) -> bool {
        matches!(self.severity.as_str(), "S" | "I")
    }
}

pub(crate) fn reply_status(reply: &Value) -> Option<ReplyStatus> {
    let status = reply.get("STATUS")?;
    let (holder, severity) = match status {
        Value::Array(items) => {
            let first = items.first()?;
            (first, first.get("STATUS")?.as_str()?.to_string())
        }
        Value::String(s) => (reply, s.clone()),
        _ => return None,
    };
    let msg = match holder.get("Msg") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Some(ReplyStatus {
        severity,
        code: holder.get("Code").and_then(Value::as_i64),
        msg,
    })
}

impl JsonTcp {
    pub fn new(address: String, timeout: Duration) -> Self {
        JsonTcp { address, timeout }
    }

    pub fn timeout_err(&self) -> ControlError {
        ControlError::Timeout {
            address: self.address.clone(),
            after_ms: self.timeout.as_millis() as u64,
        }
    }

    pub fn protocol_err(&self, detail: impl Into<String>) -> ControlError {
        ControlError::Protocol {
            address: self.address.clone(),
            detail: detail.into(),
        }
    }

    /// Sends `payload`, returns the raw answer (without the trailing NUL), all within the
    /// timeout.
    pub async fn exchange(&self, payload: &[u8]) -> Result<Vec<u8>, ControlError> {
        match tokio::time::timeout(self.timeout, self.exchange_inner(payload)).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout_err()),
        }
    }

    async fn exchange_inner(&self, payload: &[u8]) -> Result<Vec<u8>, ControlError> {
        let mut stream =
            TcpStream::connect(&self.address)
                .await
                .map_err(|e| ControlError::Unreachable {
                    address: self.address.clone(),
                    detail: e.to_string(),
                })?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(payload)
            .await
            .map_err(|e| self.protocol_err(format!("connection lost while sending: {e}")))?;
        let mut reply = Vec::with_capacity(4096);
        let mut chunk = [0u8; 8192];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(n) => n,
                // A reset after a complete answer is how some firmware closes.
                Err(_) if !reply.is_empty() => break,
                Err(e) => {
                    return Err(self.protocol_err(format!("connection lost before an answer: {e}")))
                }
            };
            if n == 0 {
                break;
            }
            if let Some(nul) = chunk[..n].iter().position(|b| *b == 0) {
                reply.extend_from_slice(&chunk[..nul]);
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
            if reply.len() > MAX_REPLY {
                return Err(self.protocol_err(format!("answer larger than {MAX_REPLY} bytes")));
            }
        }
        if reply.is_empty() {
            return Err(self.protocol_err("connection closed without an answer"));
        }
        Ok(reply)
    }

    /// Parses an answer as JSON, tolerating the known quirks (bmminer's `}{` between objects).
    pub fn parse(&self, raw: &[u8]) -> Result<Value, ControlError> {
        let text = String::from_utf8_lossy(raw);
        let trimmed = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
            if v.is_object() {
                return Ok(v);
            }
        }
        let patched = trimmed.replace("}{", "},{");
        match serde_json::from_str::<Value>(&patched) {
            Ok(v) if v.is_object() => Ok(v),
            _ => Err(self.protocol_err(format!("not a JSON object: {}", snippet(raw)))),
        }
    }

    /// cgminer-style command: `{"command":..,"parameter":..}`.
    pub async fn command(
        &self,
        command: &str,
        parameter: Option<&str>,
    ) -> Result<Value, ControlError> {
        let mut request = serde_json::json!({ "command": command });
        if let Some(p) = parameter {
            request["parameter"] = Value::String(p.to_string());
        }
        let raw = self.exchange(request.to_string().as_bytes()).await?;
        self.parse(&raw)
    }
}

/// A short printable excerpt of a bad answer, for error messages.
pub(crate) fn snippet(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(64)];
    let mut s = String::new();
    for b in cut {
        match *b {
            b' '..=b'~' => s.push(*b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if raw.len() > cut.len() {
        s.push('…');
    }
    format!("\"{s}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_in_both_layouts() {
        let cg: Value = serde_json::from_str(
            r#"{"STATUS":[{"STATUS":"E","When":1,"Code":45,"Msg":"Access denied to 'ascdisable' command"}],"id":1}"#,
        )
        .unwrap();
        let s = reply_status(&cg).unwrap();
        assert_eq!(
            (s.severity.as_str(), s.code, s.ok()),
            ("E", Some(45), false)
        );
        let wm: Value =
            serde_json::from_str(r#"{"STATUS":"S","When":1,"Code":131,"Msg":"API command OK"}"#)
                .unwrap();
        let s = reply_status(&wm).unwrap();
        assert!(s.ok());
        assert_eq!(s.msg, "API command OK");
    }

    #[test]
    fn snippets_escape_binary() {
        assert_eq!(snippet(b"\x01ok"), "\"\\x01ok\"");
    }
}
