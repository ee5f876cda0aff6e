//! Vnish web API emulator (`/api/v1`) on a small HTTP/1.1 server (one request per connection,
//! `Connection: close`).
//!
//! `POST /unlock {"pw"}` → `{"token"}` or 401; writes need `Authorization: Bearer <token>` (the
//! bare token is accepted too, as Vnish does). `POST mining/pause|resume|stop|start`,
//! `GET summary`, `GET/POST settings` (`miner.overclock.preset`), `GET autotune/presets`,
//! `GET info`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{hold_silently, EmulatedMiner, Fault, GARBAGE};

struct Server {
    miner: Arc<EmulatedMiner>,
    tokens: Mutex<Vec<String>>,
    preset: Mutex<String>,
}

/// (name, watts, tuned): presets named by their wattage, as Vnish lists them.
pub fn presets(nominal_w: f64) -> Vec<(String, f64, bool)> {
    (1..=8)
        .map(|k| {
            let w = (nominal_w * (0.3 + 0.1 * k as f64) / 100.0).round() * 100.0;
            (format!("{w:.0}"), w, k != 2)
        })
        .collect()
}

pub(crate) async fn serve(listener: TcpListener, miner: Arc<EmulatedMiner>) {
    let server = Arc::new(Server {
        miner,
        tokens: Mutex::new(Vec::new()),
        preset: Mutex::new("disabled".into()),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            match server.miner.fault() {
                Fault::Silent => hold_silently(stream).await,
                Fault::Garbage => {
                    let mut stream = stream;
                    let mut first = [0u8; 1024];
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), stream.read(&mut first)).await;
                    let _ = stream.write_all(GARBAGE).await;
                    let _ = stream.shutdown().await;
                }
                Fault::None => {
                    let _ = connection(stream, &server).await;
                }
            }
        });
    }
}

struct HttpRequest {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

async fn read_request(stream: &mut TcpStream) -> Option<HttpRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let mut length = 0usize;
    let mut authorization = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().ok()?,
                "authorization" => authorization = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some(HttpRequest {
        method,
        path,
        authorization,
        body,
    })
}

async fn connection(mut stream: TcpStream, server: &Server) -> std::io::Result<()> {
    let Ok(Some(request)) =
        tokio::time::timeout(Duration::from_secs(10), read_request(&mut stream)).await
    else {
        return Ok(());
    };
    let (status, body) = server.route(&request);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Error",
    };
    let text = body.to_string();
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

impl Server {
    fn authorized(&self, request: &HttpRequest) -> bool {
        let Some(header) = &request.authorization else {
            return false;
        };
        let token = header.strip_prefix("Bearer ").unwrap_or(header).trim();
        self.tokens.lock().unwrap().iter().any(|t| t == token)
    }

    fn route(&self, request: &HttpRequest) -> (u16, Value) {
        let miner = &self.miner;
        let path = request.path.split('?').next().unwrap_or("");
        let Some(endpoint) = path.strip_prefix("/api/v1/") else {
            return (404, json!({ "err": "not found" }));
        };
        miner.record(format!("{} {endpoint}", request.method));
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let unauthorized = (401, json!({ "err": "Unauthorized" }));
        match (request.method.as_str(), endpoint) {
            ("POST", "unlock") => {
                let pw = body.get("pw").and_then(Value::as_str).unwrap_or("");
                if pw != miner.credentials().password {
                    return (401, json!({ "err": "Invalid password" }));
                }
                let token: String = rand::thread_rng()
                    .sample_iter(&rand::distributions::Alphanumeric)
                    .take(32)
                    .map(char::from)
                    .collect();
                self.tokens.lock().unwrap().push(token.clone());
                (200, json!({ "token": token }))
            }
            ("POST", "mining/pause" | "mining/stop") => {
                if !self.authorized(request) {
                    return unauthorized;
                }
                miner.pause();
                (200, json!({ "success": true }))
            }
            ("POST", "mining/resume" | "mining/start") => {
                if !self.authorized(request) {
                    return unauthorized;
                }
                miner.resume();
                (200, json!({ "success": true }))
            }
            ("GET", "summary") => {
                let state = if miner.is_paused() {
                    "paused"
                } else {
                    "mining"
                };
                (
                    200,
                    json!({
                        "miner": {
                            "miner_type": "Antminer S19 (Vnish 1.2.6)",
                            "miner_status": { "miner_state": state, "miner_state_time": 60 },
                            "power_usage": miner.power_w().round(),
                            "hr_realtime": miner.hashrate_ghs(),
                            "chains": [],
                        },
                        "system": { "network_status": { "mac": "00:11:22:33:44:66", "hostname": "vnish-emulator" } }
                    }),
                )
            }
            ("GET", "info") => (
                200,
                json!({ "miner": "Antminer S19", "fw_version": "1.2.6", "system": { "network_status": { "hostname": "vnish-emulator" } } }),
            ),
            ("GET", "autotune/presets") => {
                let list: Vec<Value> = presets(miner.nominal_w())
                    .into_iter()
                    .map(|(name, w, tuned)| {
                        json!({
                            "name": name,
                            "pretty": format!("{w:.0} watt ~ {:.0} TH", w / 30.0),
                            "status": if tuned { "tuned" } else { "untuned" },
                            "modded_psu_required": false
                        })
                    })
                    .collect();
                (200, Value::Array(list))
            }
            ("GET", "settings") => {
                let preset = self.preset.lock().unwrap().clone();
                (
                    200,
                    json!({ "miner": { "overclock": { "preset": preset } } }),
                )
            }
            ("POST", "settings") => {
                if !self.authorized(request) {
                    return unauthorized;
                }
                if let Some(preset) = body
                    .pointer("/miner/overclock/preset")
                    .and_then(Value::as_str)
                {
                    let known = presets(miner.nominal_w());
                    match known.iter().find(|(n, _, _)| n == preset) {
                        Some((_, w, _)) => miner.set_limit(Some(*w)),
                        None if preset == "disabled" => miner.set_limit(None),
                        None => return (400, json!({ "err": format!("unknown preset {preset}") })),
                    }
                    *self.preset.lock().unwrap() = preset.to_string();
                }
                (
                    200,
                    json!({ "restart_required": false, "reboot_required": false }),
                )
            }
            _ => (404, json!({ "err": "not found" })),
        }
    }
}
