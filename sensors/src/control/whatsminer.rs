//! MicroBT Whatsminer, API v2 (2.0.x) on TCP 4028.
//!
//! Protocol (MicroBT "Whatsminer API V2.0.x"; cross-checked with pyasic's `rpc/btminer.py`):
//! * Reads are plain JSON: `{"cmd":"summary"}`; answers look like
//!   `{"STATUS":"S","When":..,"Code":131,"Msg":..,"Description":..}`.
//! * Writes are encrypted. `{"cmd":"get_token"}` answers `Msg: {time, salt, newsalt}`; then
//!   `key = md5crypt(admin_password, salt)` (the hash part of `$1$salt$hash`),
//!   `sign = md5crypt(key + time, newsalt)` (hash part), `aeskey = sha256(key)`. The command JSON
//!   gets `"token": sign`, is NUL-padded to 16 bytes, AES-256-ECB encrypted with `aeskey`,
//!   base64-encoded and sent as `{"enc":1,"data":"<base64>"}`; the answer is
//!   `{"enc":"<base64>"}`, encrypted the same way. A token lives 30 minutes and an IP may hold
//!   32, so we keep ours for 25 minutes.
//! * Codes: 14 invalid command, 23 invalid JSON (what a write encrypted with the wrong password
//!   decrypts to), 45 permission denied (write API not enabled), 131 OK, 132 command error,
//!   134 token OK, 135 check token error, 136 token over max times, 137 base64 decode error.
//! * pause: `power_off` with `respbefore: "true"` (hash boards' power off, control board stays
//!   up); resume: `power_on`; power limit: `adjust_power_limit` (`power_limit` in watts, API
//!   ≥ 2.0.5, no higher than the machine's ordinary power; the miner restarts btminer to apply
//!   it).
//!
//! The plain-JSON API v3 (TCP 4433, newer firmware) is not spoken here.

use std::time::{Duration, Instant};

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes256;
use base64::Engine;
use md5::{Digest as _, Md5};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Mutex;

use super::rpc::{reply_status, JsonTcp};
use super::{
    Capabilities, ControlError, FirmwareKind, MinerControl, MinerEndpoint, MinerStatus, Secret,
};

const TOKEN_REUSE: Duration = Duration::from_secs(25 * 60);

pub struct Whatsminer {
    rpc: JsonTcp,
    password: Option<Secret>,
    token: Mutex<Option<Token>>,
}

#[derive(Clone)]
struct Token {
    sign: String,
    aes_key: [u8; 32],
    fetched: Instant,
}

impl Whatsminer {
    pub fn new(endpoint: &MinerEndpoint) -> Self {
        Whatsminer {
            rpc: JsonTcp::new(endpoint.host_port(), endpoint.timeout()),
            password: endpoint.password.clone(),
            token: Mutex::new(None),
        }
    }

    fn address(&self) -> String {
        self.rpc.address.clone()
    }

    fn auth_err(&self, detail: impl Into<String>) -> ControlError {
        ControlError::Auth {
            address: self.address(),
            detail: detail.into(),
            fix: "set `password` in this miner's endpoint config to its admin password, and \
                  enable API writes with WhatsMinerTool (which requires changing the default \
                  `admin` password first)"
                .into(),
        }
    }

    async fn plain(&self, cmd: &str) -> Result<Value, ControlError> {
        let raw = self
            .rpc
            .exchange(json!({ "cmd": cmd }).to_string().as_bytes())
            .await?;
        self.rpc.parse(&raw)
    }

    async fn fetch_token(&self) -> Result<Token, ControlError> {
        let Some(password) = &self.password else {
            return Err(self.auth_err("no admin password configured"));
        };
        let reply = self.plain("get_token").await?;
        let msg = reply.get("Msg");
        let field = |name: &str| msg.and_then(|m| m.get(name)).and_then(Value::as_str);
        let (Some(time), Some(salt), Some(newsalt)) =
            (field("time"), field("salt"), field("newsalt"))
        else {
            if let Some(status) = reply_status(&reply).filter(|s| !s.ok()) {
                return Err(self.status_err("get_token", status.code, &status.msg));
            }
            if let Some(text) = msg.and_then(Value::as_str) {
                return Err(ControlError::Rejected {
                    address: self.address(),
                    message: format!("'get_token': {text}"),
                });
            }
            return Err(self
                .rpc
                .protocol_err("'get_token' answer lacks Msg.time/salt/newsalt"));
        };
        let key = md5_crypt(password.expose().as_bytes(), salt.as_bytes());
        let sign = md5_crypt(format!("{key}{time}").as_bytes(), newsalt.as_bytes());
        Ok(Token {
            sign,
            aes_key: aes_key(&key),
            fetched: Instant::now(),
        })
    }

    /// The cached token (and `true`), or a new one (and `false`).
    async fn token(&self) -> Result<(Token, bool), ControlError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref().filter(|t| t.fetched.elapsed() < TOKEN_REUSE) {
            return Ok((t.clone(), true));
        }
        let t = self.fetch_token().await?;
        *slot = Some(t.clone());
        Ok((t, false))
    }

    fn status_err(&self, cmd: &str, code: Option<i64>, msg: &str) -> ControlError {
        match code {
            Some(23) | Some(135) | Some(137) => self.auth_err(format!(
                "'{cmd}': {msg} (code {})",
                code.unwrap_or_default()
            )),
            Some(45) => ControlError::Auth {
                address: self.address(),
                detail: format!("'{cmd}': {msg} (code 45)"),
                fix: "enable API writes on this miner with WhatsMinerTool (change the default \
                      admin password, then turn the API on)"
                    .into(),
            },
            Some(14) => ControlError::Unsupported {
                address: self.address(),
                what: format!(
                    "this Whatsminer firmware does not know '{cmd}' ({msg}); update the firmware \
                     (power limits need API 2.0.5 or later)"
                ),
            },
            _ => ControlError::Rejected {
                address: self.address(),
                message: format!("'{cmd}': {msg} (code {code:?})"),
            },
        }
    }

    /// One encrypted write. A refusal with a token reused from an earlier call is retried once
    /// with a new token (the miner may have restarted and forgotten it).
    async fn privileged(&self, cmd: &str, params: Value) -> Result<Value, ControlError> {
        let (token, reused) = self.token().await?;
        match self.privileged_with(&token, cmd, &params).await {
            Err(ControlError::Auth { .. }) if reused => {
                *self.token.lock().await = None;
                let (token, _) = self.token().await?;
                let result = self.privileged_with(&token, cmd, &params).await;
                if result.is_err() {
                    *self.token.lock().await = None;
                }
                result
            }
            Err(e @ ControlError::Auth { .. }) => {
                *self.token.lock().await = None;
                Err(e)
            }
            other => other,
        }
    }

    async fn privileged_with(
        &self,
        token: &Token,
        cmd: &str,
        params: &Value,
    ) -> Result<Value, ControlError> {
        let mut command = json!({ "cmd": cmd, "token": token.sign });
        if let (Some(obj), Some(extra)) = (command.as_object_mut(), params.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        let data = encrypt_b64(&token.aes_key, command.to_string().as_bytes());
        let packet = json!({ "enc": 1, "data": data }).to_string();
        let raw = self.rpc.exchange(packet.as_bytes()).await?;
        let outer = self.rpc.parse(&raw)?;
        let reply = match outer.get("enc").and_then(Value::as_str) {
            Some(enc) => {
                let plain = decrypt_b64(&token.aes_key, enc).ok_or_else(|| {
                    self.rpc
                        .protocol_err(format!("'{cmd}' answer does not decrypt with our key"))
                })?;
                self.rpc.parse(&plain)?
            }
            None => outer,
        };
        let status = reply_status(&reply).ok_or_else(|| {
            self.rpc
                .protocol_err(format!("'{cmd}' answer has no STATUS"))
        })?;
        if status.ok() {
            Ok(reply)
        } else {
            Err(self.status_err(cmd, status.code, &status.msg))
        }
    }
}

#[async_trait::async_trait]
impl MinerControl for Whatsminer {
    async fn pause(&self) -> Result<(), ControlError> {
        self.privileged("power_off", json!({ "respbefore": "true" }))
            .await
            .map(|_| ())
    }

    async fn resume(&self) -> Result<(), ControlError> {
        self.privileged("power_on", json!({})).await.map(|_| ())
    }

    async fn set_power_limit(&self, watts: u32) -> Result<(), ControlError> {
        self.privileged(
            "adjust_power_limit",
            json!({ "power_limit": watts.to_string() }),
        )
        .await
        .map(|_| ())
    }

    async fn status(&self) -> Result<MinerStatus, ControlError> {
        let status = self.plain("status").await?;
        let mineroff = status
            .pointer("/Msg/mineroff")
            .and_then(Value::as_str)
            .ok_or_else(|| self.rpc.protocol_err("'status' answer lacks Msg.mineroff"))?;
        let summary = self.plain("summary").await?;
        let s = summary.pointer("/SUMMARY/0");
        let num = |name: &str| {
            s.and_then(|s| s.get(name)).and_then(|v| match v {
                Value::Number(n) => n.as_f64(),
                Value::String(t) => t.trim().parse().ok(),
                _ => None,
            })
        };
        Ok(MinerStatus {
            hashing: mineroff == "false",
            power_w: num("Power"),
            power_limit_w: num("Power Limit").map(|w| w.round() as u32),
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause: true,
            power_limit: true,
        }
    }

    fn kind(&self) -> FirmwareKind {
        FirmwareKind::Whatsminer
    }
}

// ---- crypto helpers (public for the emulator and for tests) ----

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// MD5-crypt (`$1$`, as `openssl passwd -1 -salt SALT PASSWORD`), returning only the 22-character
/// hash part after `$1$salt$`. The salt is cut to 8 bytes, as the algorithm does.
pub fn md5_crypt(password: &[u8], salt: &[u8]) -> String {
    let salt = &salt[..salt.len().min(8)];
    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(b"$1$");
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin: [u8; 16] = ctx.finalize().into();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize().into();
    }
    let mut out = String::with_capacity(22);
    let mut push = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let f = |i: usize| fin[i] as u32;
    push((f(0) << 16) | (f(6) << 8) | f(12), 4);
    push((f(1) << 16) | (f(7) << 8) | f(13), 4);
    push((f(2) << 16) | (f(8) << 8) | f(14), 4);
    push((f(3) << 16) | (f(9) << 8) | f(15), 4);
    push((f(4) << 16) | (f(10) << 8) | f(5), 4);
    push(f(11), 2);
    out
}

/// `sha256(key)` as the AES-256 key.
pub fn aes_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// NUL-pad to 16 bytes, AES-256-ECB, base64 (standard alphabet, no line breaks).
pub fn encrypt_b64(aes_key: &[u8; 32], plain: &[u8]) -> String {
    let cipher = Aes256::new(GenericArray::from_slice(aes_key));
    let mut buf = plain.to_vec();
    buf.resize(buf.len().div_ceil(16) * 16, 0);
    for block in buf.chunks_mut(16) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// Inverse of [`encrypt_b64`], with the NUL padding removed; `None` if it is not base64 of whole
/// blocks.
pub fn decrypt_b64(aes_key: &[u8; 32], data: &str) -> Option<Vec<u8>> {
    let cleaned: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    let mut buf = base64::engine::general_purpose::STANDARD
        .decode(cleaned)
        .ok()?;
    if buf.is_empty() || buf.len() & 15 != 0 {
        return None;
    }
    let cipher = Aes256::new(GenericArray::from_slice(aes_key));
    for block in buf.chunks_mut(16) {
        cipher.decrypt_block(GenericArray::from_mut_slice(block));
    }
    while buf.last() == Some(&0) {
        buf.pop();
    }
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_crypt_matches_openssl() {
        // `openssl passwd -1 -salt saltsalt password` and passlib's md5_crypt.
        assert_eq!(
            md5_crypt(b"password", b"saltsalt"),
            "qjXMvbEw8oaL.CzflDtaK/"
        );
        assert_eq!(md5_crypt(b"admin", b"BQ5hoXV9"), "RxmaDUO33TS7O26yeMHZ81");
        assert_eq!(md5_crypt(b"", b"abc"), "Or2rbeUYTvt12aiVzMuS/.");
        assert_eq!(
            md5_crypt(&[b'x'; 40], b"12345678"),
            "WmUwxmYnSdAX9cEZA7SiC."
        );
    }

    #[test]
    fn aes_round_trip_pads_with_nul() {
        let key = aes_key("RxmaDUO33TS7O26yeMHZ81");
        let text = br#"{"cmd":"power_on","token":"abc"}"#;
        let enc = encrypt_b64(&key, text);
        assert_eq!(decrypt_b64(&key, &enc).unwrap(), text.to_vec());
        let other = aes_key("other");
        assert_ne!(decrypt_b64(&other, &enc).unwrap(), text.to_vec());
        assert!(decrypt_b64(&key, "not base64!").is_none());
    }
}
