//! Stratum V1 messages: newline-delimited JSON-RPC 1.0-ish frames, and the typed methods a miner
//! or a pool sends.
//!
//! Real firmware is sloppy: ids may be numbers, strings or null, optional params may be absent,
//! null, or extra. Parsing is therefore tolerant of shape where the meaning is unambiguous, and
//! strict (with an error naming the parameter) where a wrong value would corrupt a share.

use crate::hex_field::parse_u32_hex;
use crate::{Difficulty, Extranonce, Job};
use serde_json::{json, Map, Value};

/// Why a message's params could not be decoded. The text is what the miner sees.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    #[error("{0}: params must be an array")]
    NotAnArray(&'static str),
    #[error("{method}: expected at least {expected} params, got {got}")]
    TooFew {
        method: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{field} must be {expected}")]
    Invalid {
        field: &'static str,
        expected: &'static str,
    },
}

impl ParamError {
    pub fn invalid(field: &'static str, expected: &'static str) -> ParamError {
        ParamError::Invalid { field, expected }
    }
}

/// Why a line is not a Stratum frame at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("a Stratum message must be a JSON object with \"method\" or \"result\"")]
    NotAMessage,
}

/// One decoded line.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A request or notification (`id` null).
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// A response to one of our requests.
    Response {
        id: Value,
        result: Value,
        error: Option<StratumError>,
    },
}

impl Frame {
    pub fn parse(line: &[u8]) -> Result<Frame, FrameError> {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| FrameError::Json(e.to_string()))?;
        let Value::Object(mut obj) = value else {
            return Err(FrameError::NotAMessage);
        };
        let id = obj.remove("id").unwrap_or(Value::Null);
        if let Some(method) = obj.remove("method") {
            let Value::String(method) = method else {
                return Err(FrameError::NotAMessage);
            };
            let params = obj.remove("params").unwrap_or(Value::Array(Vec::new()));
            return Ok(Frame::Request { id, method, params });
        }
        if obj.contains_key("result") || obj.contains_key("error") {
            let result = obj.remove("result").unwrap_or(Value::Null);
            let error = obj
                .remove("error")
                .and_then(|e| StratumError::from_json(&e));
            return Ok(Frame::Response { id, result, error });
        }
        Err(FrameError::NotAMessage)
    }
}

/// The Stratum error codes miners and pools agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Other = 20,
    JobNotFound = 21,
    Duplicate = 22,
    LowDifficulty = 23,
    Unauthorized = 24,
    NotSubscribed = 25,
}

/// An error as carried in a response: `[code, message, traceback]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StratumError {
    pub code: i64,
    pub message: String,
}

impl StratumError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> StratumError {
        StratumError {
            code: code as i64,
            message: message.into(),
        }
    }

    /// Pools send `[code, "msg", null]`, but also objects (`{"code":..,"message":..}`) or bare
    /// strings. `null`/`false` means "no error".
    pub fn from_json(v: &Value) -> Option<StratumError> {
        match v {
            Value::Null | Value::Bool(false) => None,
            Value::Array(a) => Some(StratumError {
                code: a.first().and_then(Value::as_i64).unwrap_or(20),
                message: a
                    .get(1)
                    .and_then(Value::as_str)
                    .unwrap_or("unspecified")
                    .to_string(),
            }),
            Value::Object(o) => Some(StratumError {
                code: o.get("code").and_then(Value::as_i64).unwrap_or(20),
                message: o
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unspecified")
                    .to_string(),
            }),
            other => Some(StratumError {
                code: 20,
                message: other.to_string(),
            }),
        }
    }

    pub fn to_json(&self) -> Value {
        json!([self.code, self.message, Value::Null])
    }
}

/// `mining.subscribe [agent?, session?]` — firmware sends `[]`, `[agent]`, `[agent, null]` or
/// `[agent, session]` (some add host and port).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subscribe {
    pub user_agent: Option<String>,
    pub session_id: Option<String>,
}

impl Subscribe {
    pub fn from_params(params: &Value) -> Subscribe {
        let p = params.as_array().map(Vec::as_slice).unwrap_or(&[]);
        let text = |i: usize| p.get(i).and_then(Value::as_str).map(str::to_string);
        Subscribe {
            user_agent: text(0),
            session_id: text(1),
        }
    }

    pub fn to_params(&self) -> Value {
        let mut p = vec![Value::from(self.user_agent.clone().unwrap_or_default())];
        if let Some(s) = &self.session_id {
            p.push(Value::from(s.as_str()));
        }
        Value::Array(p)
    }
}

/// The result of `mining.subscribe` as a pool answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeResult {
    pub subscription_id: String,
    pub extranonce1: Extranonce,
    pub extranonce2_size: usize,
}

impl SubscribeResult {
    pub fn from_result(v: &Value) -> Result<SubscribeResult, ParamError> {
        let a = v
            .as_array()
            .ok_or(ParamError::NotAnArray("subscribe result"))?;
        if a.len() < 3 {
            return Err(ParamError::TooFew {
                method: "subscribe result",
                expected: 3,
                got: a.len(),
            });
        }
        // Subscription id: the notify entry's id if the pool gives a list of pairs.
        let subscription_id = a[0]
            .as_array()
            .and_then(|subs| subs.last())
            .and_then(|pair| pair.get(1))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let extranonce1 = a[1]
            .as_str()
            .and_then(Extranonce::from_hex)
            .ok_or_else(|| ParamError::invalid("extranonce1", "a hex string"))?;
        let extranonce2_size = a[2]
            .as_u64()
            .filter(|n| *n <= 32)
            .ok_or_else(|| ParamError::invalid("extranonce2_size", "an integer from 0 to 32"))?
            as usize;
        Ok(SubscribeResult {
            subscription_id,
            extranonce1,
            extranonce2_size,
        })
    }

    pub fn to_result(&self) -> Value {
        json!([
            [
                ["mining.set_difficulty", self.subscription_id],
                ["mining.notify", self.subscription_id]
            ],
            self.extranonce1.to_hex(),
            self.extranonce2_size
        ])
    }
}

/// `mining.authorize [user, password?]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorize {
    pub user: String,
    pub password: Option<String>,
}

impl Authorize {
    pub fn from_params(params: &Value) -> Result<Authorize, ParamError> {
        let p = params
            .as_array()
            .ok_or(ParamError::NotAnArray("mining.authorize"))?;
        let user = p
            .first()
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| ParamError::invalid("worker name", "a non-empty string"))?;
        if user.len() > 256 {
            return Err(ParamError::invalid("worker name", "at most 256 characters"));
        }
        Ok(Authorize {
            user: user.to_string(),
            password: p.get(1).and_then(Value::as_str).map(str::to_string),
        })
    }
}

/// `mining.submit [worker, job_id, extranonce2, ntime, nonce, version_bits?]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Submit {
    pub worker: String,
    pub job_id: String,
    pub extranonce2: Extranonce,
    pub ntime: u32,
    pub nonce: u32,
    /// The rolled version bits (BIP310), when the miner negotiated version rolling.
    pub version_bits: Option<u32>,
}

impl Submit {
    pub fn from_params(params: &Value) -> Result<Submit, ParamError> {
        let p = params
            .as_array()
            .ok_or(ParamError::NotAnArray("mining.submit"))?;
        if p.len() < 5 {
            return Err(ParamError::TooFew {
                method: "mining.submit",
                expected: 5,
                got: p.len(),
            });
        }
        let worker = p[0]
            .as_str()
            .ok_or_else(|| ParamError::invalid("worker name", "a string"))?
            .to_string();
        let job_id = match &p[1] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(ParamError::invalid("job_id", "a string")),
        };
        let extranonce2 = p[2]
            .as_str()
            .and_then(Extranonce::from_hex)
            .ok_or_else(|| ParamError::invalid("extranonce2", "an even number of hex digits"))?;
        let ntime = parse_u32_hex(&p[3], "ntime")?;
        let nonce = parse_u32_hex(&p[4], "nonce")?;
        let version_bits = match p.get(5) {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_u32_hex(v, "version_bits")?),
        };
        Ok(Submit {
            worker,
            job_id,
            extranonce2,
            ntime,
            nonce,
            version_bits,
        })
    }

    pub fn to_params(&self) -> Value {
        let mut p = vec![
            Value::from(self.worker.as_str()),
            Value::from(self.job_id.as_str()),
            Value::from(self.extranonce2.to_hex()),
            Value::from(format!("{:08x}", self.ntime)),
            Value::from(format!("{:08x}", self.nonce)),
        ];
        if let Some(v) = self.version_bits {
            p.push(Value::from(format!("{v:08x}")));
        }
        Value::Array(p)
    }
}

/// `mining.configure [[extensions], {options}]` (BIP310). Only version rolling is understood;
/// other extensions are answered `false`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Configure {
    pub extensions: Vec<String>,
    /// The mask the miner asks for, when it asks for version rolling.
    pub version_rolling_mask: Option<u32>,
    pub version_rolling_min_bit_count: u32,
}

impl Configure {
    pub fn from_params(params: &Value) -> Result<Configure, ParamError> {
        let p = params
            .as_array()
            .ok_or(ParamError::NotAnArray("mining.configure"))?;
        let extensions: Vec<String> = p
            .first()
            .and_then(Value::as_array)
            .ok_or_else(|| ParamError::invalid("extensions", "an array of extension names"))?
            .iter()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect();
        let empty = Map::new();
        let options = p.get(1).and_then(Value::as_object).unwrap_or(&empty);
        let version_rolling_mask = if extensions.iter().any(|e| e == "version-rolling") {
            Some(match options.get("version-rolling.mask") {
                None => 0xffff_ffff, // BIP310: absent means "any bits"
                Some(v) => parse_u32_hex(v, "version-rolling.mask")?,
            })
        } else {
            None
        };
        let version_rolling_min_bit_count = options
            .get("version-rolling.min-bit-count")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(32) as u32;
        Ok(Configure {
            extensions,
            version_rolling_mask,
            version_rolling_min_bit_count,
        })
    }

    pub fn to_params(&self) -> Value {
        let mut opts = Map::new();
        if let Some(mask) = self.version_rolling_mask {
            opts.insert(
                "version-rolling.mask".into(),
                Value::from(format!("{mask:08x}")),
            );
            opts.insert(
                "version-rolling.min-bit-count".into(),
                Value::from(self.version_rolling_min_bit_count),
            );
        }
        json!([self.extensions, opts])
    }

    /// The mask granted in a configure result, `None` when version rolling was refused.
    pub fn granted_mask(result: &Value) -> Option<u32> {
        let o = result.as_object()?;
        if o.get("version-rolling").and_then(Value::as_bool) != Some(true) {
            return None;
        }
        let mask = o.get("version-rolling.mask")?.as_str()?;
        u32::from_str_radix(mask, 16).ok()
    }
}

/// `mining.suggest_difficulty [d]`.
pub fn parse_suggest_difficulty(params: &Value) -> Result<Difficulty, ParamError> {
    let v = params
        .as_array()
        .and_then(|p| p.first())
        .or(params.as_f64().map(|_| params))
        .ok_or_else(|| ParamError::invalid("difficulty", "a positive number"))?;
    let d = v
        .as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| ParamError::invalid("difficulty", "a positive number"))?;
    Difficulty::new(d).map_err(|_| ParamError::invalid("difficulty", "a positive number"))
}

/// `mining.set_difficulty [d]` from a pool.
pub fn parse_set_difficulty(params: &Value) -> Result<Difficulty, ParamError> {
    parse_suggest_difficulty(params)
}

/// `mining.set_extranonce [extranonce1, extranonce2_size]`.
pub fn parse_set_extranonce(params: &Value) -> Result<(Extranonce, usize), ParamError> {
    let p = params
        .as_array()
        .ok_or(ParamError::NotAnArray("mining.set_extranonce"))?;
    let en1 = p
        .first()
        .and_then(Value::as_str)
        .and_then(Extranonce::from_hex)
        .ok_or_else(|| ParamError::invalid("extranonce1", "a hex string"))?;
    let size = p
        .get(1)
        .and_then(Value::as_u64)
        .filter(|n| *n <= 32)
        .ok_or_else(|| ParamError::invalid("extranonce2_size", "an integer from 0 to 32"))?;
    Ok((en1, size as usize))
}

/// `mining.set_version_mask [mask]`.
pub fn parse_set_version_mask(params: &Value) -> Result<u32, ParamError> {
    let p = params
        .as_array()
        .ok_or(ParamError::NotAnArray("mining.set_version_mask"))?;
    parse_u32_hex(p.first().unwrap_or(&Value::Null), "version mask")
}

/// Messages a miner (or a proxy acting as one) sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    Subscribe(Subscribe),
    Authorize(Authorize),
    Submit(Submit),
    Configure(Configure),
    SuggestDifficulty(Difficulty),
    ExtranonceSubscribe,
    /// A method this crate does not know; answered "unknown method" by servers.
    Unknown(String),
}

impl ClientRequest {
    pub fn parse(method: &str, params: &Value) -> Result<ClientRequest, ParamError> {
        Ok(match method {
            "mining.subscribe" => ClientRequest::Subscribe(Subscribe::from_params(params)),
            "mining.authorize" => ClientRequest::Authorize(Authorize::from_params(params)?),
            "mining.submit" => ClientRequest::Submit(Submit::from_params(params)?),
            "mining.configure" => ClientRequest::Configure(Configure::from_params(params)?),
            "mining.suggest_difficulty" => {
                ClientRequest::SuggestDifficulty(parse_suggest_difficulty(params)?)
            }
            "mining.extranonce.subscribe" => ClientRequest::ExtranonceSubscribe,
            other => ClientRequest::Unknown(other.to_string()),
        })
    }
}

/// Messages a pool sends unprompted.
#[derive(Debug, Clone)]
pub enum ServerNotification {
    Notify(Box<Job>),
    SetDifficulty(Difficulty),
    SetExtranonce(Extranonce, usize),
    SetVersionMask(u32),
    /// `client.reconnect [host?, port?, wait?]`.
    Reconnect {
        host: Option<String>,
        port: Option<u16>,
        wait_secs: u64,
    },
    Unknown(String),
}

impl ServerNotification {
    pub fn parse(method: &str, params: &Value) -> Result<ServerNotification, ParamError> {
        Ok(match method {
            "mining.notify" => {
                ServerNotification::Notify(Box::new(Job::from_notify_params(params)?))
            }
            "mining.set_difficulty" => {
                ServerNotification::SetDifficulty(parse_set_difficulty(params)?)
            }
            "mining.set_extranonce" => {
                let (en1, size) = parse_set_extranonce(params)?;
                ServerNotification::SetExtranonce(en1, size)
            }
            "mining.set_version_mask" => {
                ServerNotification::SetVersionMask(parse_set_version_mask(params)?)
            }
            "client.reconnect" => {
                let p = params.as_array().map(Vec::as_slice).unwrap_or(&[]);
                let port = p.get(1).and_then(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        .and_then(|n| u16::try_from(n).ok())
                });
                ServerNotification::Reconnect {
                    host: p.first().and_then(Value::as_str).map(str::to_string),
                    port,
                    wait_secs: p.get(2).and_then(Value::as_u64).unwrap_or(0),
                }
            }
            other => ServerNotification::Unknown(other.to_string()),
        })
    }
}

/// Line builders: every returned string ends with `\n`, ready for the socket.
pub mod line {
    use super::*;

    fn finish(v: Value) -> String {
        let mut s = v.to_string();
        s.push('\n');
        s
    }

    pub fn request(id: u64, method: &str, params: Value) -> String {
        finish(json!({"id": id, "method": method, "params": params}))
    }

    pub fn notification(method: &str, params: Value) -> String {
        finish(json!({"id": Value::Null, "method": method, "params": params}))
    }

    pub fn ok(id: &Value, result: Value) -> String {
        finish(json!({"id": id, "result": result, "error": Value::Null}))
    }

    /// [`ok`]`(id, true)` appended to `out` without building a `Value`: the reply to every
    /// accepted share. Same bytes as `ok` (checked by a test).
    pub fn push_ok_true(out: &mut String, id: &Value) {
        use std::fmt::Write;
        let _ = writeln!(out, "{{\"error\":null,\"id\":{id},\"result\":true}}");
    }

    pub fn error(id: &Value, err: &StratumError) -> String {
        finish(json!({"id": id, "result": Value::Null, "error": err.to_json()}))
    }

    pub fn notify(job: &Job) -> String {
        notification("mining.notify", job.to_notify_params())
    }

    pub fn set_difficulty(d: Difficulty) -> String {
        notification("mining.set_difficulty", json!([d.to_json()]))
    }

    pub fn set_extranonce(en1: &Extranonce, en2_size: usize) -> String {
        notification("mining.set_extranonce", json!([en1.to_hex(), en2_size]))
    }

    pub fn set_version_mask(mask: u32) -> String {
        notification("mining.set_version_mask", json!([format!("{mask:08x}")]))
    }

    pub fn reconnect() -> String {
        notification("client.reconnect", json!([]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_ok_true_writes_the_same_bytes_as_ok() {
        for id in [
            json!(1),
            json!("a\"b"),
            Value::Null,
            json!(18446744073709551615u64),
        ] {
            let mut out = String::from("prefix");
            line::push_ok_true(&mut out, &id);
            assert_eq!(out, format!("prefix{}", line::ok(&id, Value::Bool(true))));
        }
    }

    #[test]
    fn subscribe_accepts_every_firmware_shape() {
        for params in [
            json!([]),
            json!(["bmminer/2.0"]),
            json!(["cgminer", null]),
            json!(["a", "s1"]),
            json!(null),
        ] {
            let s = Subscribe::from_params(&params);
            if params.get(1).and_then(Value::as_str).is_some() {
                assert_eq!(s.session_id.as_deref(), Some("s1"));
            } else {
                assert_eq!(s.session_id, None);
            }
        }
    }

    #[test]
    fn submit_errors_name_the_field() {
        let bad_nonce = json!(["w", "j", "00000000", "6155a491", "zzzzzzzz"]);
        assert_eq!(
            Submit::from_params(&bad_nonce).unwrap_err().to_string(),
            "nonce must be 8 hex digits"
        );
        let short = json!(["w", "j"]);
        assert!(Submit::from_params(&short)
            .unwrap_err()
            .to_string()
            .contains("at least 5"));
        let odd_en2 = json!(["w", "j", "abc", "6155a491", "00000000"]);
        assert!(Submit::from_params(&odd_en2)
            .unwrap_err()
            .to_string()
            .contains("extranonce2"));
        let ok = json!(["w", 7, "0011", "6155a491", "41dad6e3", "1fffe000"]);
        let s = Submit::from_params(&ok).unwrap();
        assert_eq!(s.job_id, "7");
        assert_eq!(s.version_bits, Some(0x1fffe000));
        assert_eq!(s.to_params()[5], "1fffe000");
    }

    #[test]
    fn frames_parse_requests_responses_and_reject_garbage() {
        let f = Frame::parse(br#"{"id":1,"method":"mining.subscribe","params":[]}"#).unwrap();
        assert!(matches!(f, Frame::Request { ref method, .. } if method == "mining.subscribe"));
        let f =
            Frame::parse(br#"{"id":2,"result":null,"error":[23,"Low difficulty",null]}"#).unwrap();
        match f {
            Frame::Response { error: Some(e), .. } => assert_eq!(e.code, 23),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            Frame::parse(b"{not json"),
            Err(FrameError::Json(_))
        ));
        assert_eq!(Frame::parse(b"[1,2]"), Err(FrameError::NotAMessage));
        assert_eq!(Frame::parse(br#"{"id":1}"#), Err(FrameError::NotAMessage));
    }

    #[test]
    fn configure_defaults_and_results() {
        let c = Configure::from_params(&json!([["version-rolling"], {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}])).unwrap();
        assert_eq!(c.version_rolling_mask, Some(0x1fffe000));
        let c = Configure::from_params(&json!([["minimum-difficulty"], {}])).unwrap();
        assert_eq!(c.version_rolling_mask, None);
        assert_eq!(
            Configure::granted_mask(
                &json!({"version-rolling": true, "version-rolling.mask": "00ffe000"})
            ),
            Some(0x00ffe000)
        );
        assert_eq!(
            Configure::granted_mask(&json!({"version-rolling": false})),
            None
        );
    }

    #[test]
    fn subscribe_result_round_trips() {
        let r = SubscribeResult {
            subscription_id: "ab".into(),
            extranonce1: Extranonce::from_hex("0475a455").unwrap(),
            extranonce2_size: 8,
        };
        assert_eq!(SubscribeResult::from_result(&r.to_result()).unwrap(), r);
        assert!(SubscribeResult::from_result(&json!([[], "zz", 4])).is_err());
        assert!(SubscribeResult::from_result(&json!([[], "00", 400])).is_err());
    }

    #[test]
    fn set_difficulty_line_uses_integers() {
        let l = line::set_difficulty(Difficulty::new(512.0).unwrap());
        assert_eq!(
            l,
            "{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[512]}\n"
        );
    }
}
