//! Vnish firmware: the web API under `/api/v1` (HTTP, TCP 80).
//!
//! Protocol (Vnish API, cross-checked with pyasic's `web/vnish.py`):
//! * `POST /api/v1/unlock {"pw": "<web password>"}` answers `{"token": ".."}`; 401/403 on a bad
//!   password. Later calls send `Authorization: Bearer <token>`; a 401 means the token expired,
//!   and we unlock once more.
//! * pause: `POST /api/v1/mining/pause`; resume: `POST /api/v1/mining/resume`.
//! * power limit: Vnish limits power through autotune presets named by their wattage.
//!   `GET /api/v1/autotune/presets` lists them (`name`, `pretty` "1200 watt ~ 52 TH",
//!   `status` "tuned"/"untuned"); we pick the highest at or under the limit (tuned ones first)
//!   and `POST /api/v1/settings {"miner":{"overclock":{"preset":"<name>"}}}`.
//! * status: `GET /api/v1/summary` (`miner.miner_status.miner_state`, `miner.power_usage`) and
//!   `GET /api/v1/settings` (`miner.overclock.preset`).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{
    Capabilities, ControlError, FirmwareKind, MinerControl, MinerEndpoint, MinerStatus, Secret,
};

pub struct Vnish {
    address: String,
    base: String,
    timeout: Duration,
    password: Option<Secret>,
    client: reqwest::Client,
    token: Mutex<Option<String>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Preset {
    name: String,
    watts: f64,
    tuned: bool,
}

/// States in which the hash boards are not working.
const IDLE_STATES: &[&str] = &[
    "paused",
    "stopped",
    "shutting-down",
    "failure",
    "stopping",
    "sleeping",
];

impl Vnish {
    pub fn new(endpoint: &MinerEndpoint) -> Self {
        let address = endpoint.host_port();
        let client = reqwest::Client::builder()
            .timeout(endpoint.timeout())
            .connect_timeout(endpoint.timeout())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Vnish {
            base: format!("http://{address}/api/v1"),
            address,
            timeout: endpoint.timeout(),
            password: endpoint.password.clone(),
            client,
            token: Mutex::new(None),
        }
    }

    fn auth_err(&self, detail: impl Into<String>) -> ControlError {
        ControlError::Auth {
            address: self.address.clone(),
            detail: detail.into(),
            fix: "set `password` in this miner's endpoint config to the Vnish web password".into(),
        }
    }

    fn http_err(&self, what: &str, e: reqwest::Error) -> ControlError {
        if e.is_timeout() {
            ControlError::Timeout {
                address: self.address.clone(),
                after_ms: self.timeout.as_millis() as u64,
            }
        } else if e.is_connect() {
            ControlError::Unreachable {
                address: self.address.clone(),
                detail: error_chain(&e),
            }
        } else {
            ControlError::Protocol {
                address: self.address.clone(),
                detail: format!("{what}: {}", error_chain(&e)),
            }
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<(StatusCode, Vec<u8>), ControlError> {
        let mut request = self.client.request(method, format!("{}/{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let work = async {
            let response = request.send().await.map_err(|e| self.http_err(path, e))?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| self.http_err(path, e))?;
            Ok((status, bytes.to_vec()))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ControlError::Timeout {
                address: self.address.clone(),
                after_ms: self.timeout.as_millis() as u64,
            }),
        }
    }

    fn json_body(&self, path: &str, bytes: &[u8]) -> Result<Value, ControlError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(bytes).map_err(|_| ControlError::Protocol {
            address: self.address.clone(),
            detail: format!("{path}: answer is not JSON: {}", super::rpc::snippet(bytes)),
        })
    }

    async fn unlock(&self) -> Result<String, ControlError> {
        let Some(password) = &self.password else {
            return Err(self.auth_err("no web password configured"));
        };
        let body = json!({ "pw": password.expose() });
        let (status, bytes) = self.send(Method::POST, "unlock", Some(&body), None).await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.auth_err(format!("unlock answered HTTP {}", status.as_u16())));
        }
        if !status.is_success() {
            return Err(ControlError::Protocol {
                address: self.address.clone(),
                detail: format!("unlock answered HTTP {}", status.as_u16()),
            });
        }
        let reply = self.json_body("unlock", &bytes)?;
        reply
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| ControlError::Protocol {
                address: self.address.clone(),
                detail: "unlock answer has no token".into(),
            })
    }

    /// An authenticated call; unlocks when needed and once more after a 401.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ControlError> {
        let mut slot = self.token.lock().await;
        let reused = slot.is_some();
        let token = match slot.as_ref() {
            Some(t) => t.clone(),
            None => {
                let t = self.unlock().await?;
                *slot = Some(t.clone());
                t
            }
        };
        drop(slot);
        let (mut status, mut bytes) = self
            .send(method.clone(), path, body.as_ref(), Some(&token))
            .await?;
        if status == StatusCode::UNAUTHORIZED && reused {
            let fresh = self.unlock().await?;
            *self.token.lock().await = Some(fresh.clone());
            (status, bytes) = self.send(method, path, body.as_ref(), Some(&fresh)).await?;
        }
        match status {
            s if s.is_success() => self.json_body(path, &bytes),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                *self.token.lock().await = None;
                Err(self.auth_err(format!("{path} answered HTTP {}", status.as_u16())))
            }
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                Err(ControlError::Unsupported {
                    address: self.address.clone(),
                    what: format!(
                        "this Vnish version has no {path} endpoint (HTTP {}); update Vnish",
                        status.as_u16()
                    ),
                })
            }
            s if s.is_client_error() => Err(ControlError::Rejected {
                address: self.address.clone(),
                message: format!(
                    "{path}: HTTP {}: {}",
                    s.as_u16(),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            }),
            s => Err(ControlError::Protocol {
                address: self.address.clone(),
                detail: format!("{path}: HTTP {}", s.as_u16()),
            }),
        }
    }

    async fn presets(&self) -> Result<Vec<Preset>, ControlError> {
        let reply = self.call(Method::GET, "autotune/presets", None).await?;
        let list = match &reply {
            Value::Array(items) => items.clone(),
            other => other
                .get("presets")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        };
        Ok(list
            .iter()
            .filter_map(|p| {
                let name = p.get("name")?.as_str()?.to_string();
                let watts = p
                    .get("pretty")
                    .and_then(Value::as_str)
                    .and_then(|pretty| pretty.split('~').next())
                    .and_then(|w| w.replace("watt", "").trim().parse::<f64>().ok())
                    .or_else(|| name.trim().parse().ok())?;
                let tuned = p.get("status").and_then(Value::as_str) == Some("tuned");
                Some(Preset { name, watts, tuned })
            })
            .collect())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[async_trait::async_trait]
impl MinerControl for Vnish {
    async fn pause(&self) -> Result<(), ControlError> {
        self.call(Method::POST, "mining/pause", None)
            .await
            .map(|_| ())
    }

    async fn resume(&self) -> Result<(), ControlError> {
        self.call(Method::POST, "mining/resume", None)
            .await
            .map(|_| ())
    }

    async fn set_power_limit(&self, watts: u32) -> Result<(), ControlError> {
        let presets = self.presets().await?;
        let fits = |p: &&Preset| p.watts <= watts as f64;
        let best = presets
            .iter()
            .filter(fits)
            .filter(|p| p.tuned)
            .max_by(|a, b| a.watts.total_cmp(&b.watts))
            .or_else(|| {
                presets
                    .iter()
                    .filter(fits)
                    .max_by(|a, b| a.watts.total_cmp(&b.watts))
            })
            .cloned();
        let Some(best) = best else {
            let lowest = presets
                .iter()
                .map(|p| p.watts)
                .fold(f64::INFINITY, f64::min);
            return Err(ControlError::Rejected {
                address: self.address.clone(),
                message: if presets.is_empty() {
                    "the miner lists no autotune presets, so it cannot be power-limited".into()
                } else {
                    format!(
                        "no Vnish preset draws {watts} W or less (the lowest is {lowest:.0} W); \
                         pause the miner instead"
                    )
                },
            });
        };
        let body = json!({ "miner": { "overclock": { "preset": best.name } } });
        self.call(Method::POST, "settings", Some(body))
            .await
            .map(|_| ())
    }

    async fn status(&self) -> Result<MinerStatus, ControlError> {
        let summary = self.call(Method::GET, "summary", None).await?;
        let state = summary
            .pointer("/miner/miner_status/miner_state")
            .and_then(Value::as_str)
            .ok_or_else(|| ControlError::Protocol {
                address: self.address.clone(),
                detail: "summary has no miner.miner_status.miner_state".into(),
            })?;
        let power_w = summary
            .pointer("/miner/power_usage")
            .and_then(Value::as_f64);
        let settings = self.call(Method::GET, "settings", None).await?;
        let power_limit_w = settings
            .pointer("/miner/overclock/preset")
            .and_then(|v| match v {
                Value::String(s) => s.trim().parse::<f64>().ok(),
                Value::Number(n) => n.as_f64(),
                _ => None,
            })
            .map(|w| w.round() as u32);
        Ok(MinerStatus {
            hashing: !IDLE_STATES.contains(&state),
            power_w,
            power_limit_w,
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause: true,
            power_limit: true,
        }
    }

    fn kind(&self) -> FirmwareKind {
        FirmwareKind::Vnish
    }
}
