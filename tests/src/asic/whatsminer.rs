//! Whatsminer API v2 emulator (TCP, one JSON request per connection).
//!
//! Reads are plain (`{"cmd":"summary"}` or `{"command":..}`). Writes must come encrypted:
//! `{"enc":1,"data":base64(aes256ecb(json))}` with the AES key `sha256(md5crypt(password, salt))`
//! and `"token"` = a sign issued by `get_token` (`md5crypt(key + time, newsalt)`), valid 30
//! minutes, at most 32 at a time. Answers to writes are `{"enc":"<base64>"}`. A write encrypted
//! with another password does not decrypt to JSON and gets code 23 "invalid JSON message"; an
//! unknown sign gets 135 "check token error"; a plain write gets 45 "permission denied".

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

use blgv_sensors::control::whatsminer::{aes_key, decrypt_b64, encrypt_b64, md5_crypt};

use super::{now_secs, EmulatedMiner, JsonTcpFirmware};

const TOKEN_LIFE: Duration = Duration::from_secs(30 * 60);
const MAX_TOKENS: usize = 32;
const WRITES: &[&str] = &[
    "power_off",
    "power_on",
    "adjust_power_limit",
    "update_pools",
    "restart_btminer",
    "reboot",
    "set_led",
];

pub struct Whatsminer {
    salt: String,
    aes_key: [u8; 32],
    key: String,
    tokens: Mutex<Vec<(String, Instant)>>,
}

fn random_text(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn plain(severity: &str, code: i64, msg: Value) -> Value {
    json!({ "STATUS": severity, "When": now_secs(), "Code": code, "Msg": msg, "Description": "" })
}

impl Whatsminer {
    pub fn new(miner: &EmulatedMiner) -> Self {
        let salt = random_text(8);
        let key = md5_crypt(miner.credentials().password.as_bytes(), salt.as_bytes());
        Whatsminer {
            aes_key: aes_key(&key),
            salt,
            key,
            tokens: Mutex::new(Vec::new()),
        }
    }

    fn get_token(&self) -> Value {
        let mut tokens = self.tokens.lock().unwrap();
        tokens.retain(|(_, at)| at.elapsed() < TOKEN_LIFE);
        if tokens.len() >= MAX_TOKENS {
            return plain("E", 136, json!("token over max times"));
        }
        let time = format!("{:04}", now_secs() % 10_000);
        let newsalt = random_text(8);
        let sign = md5_crypt(format!("{}{time}", self.key).as_bytes(), newsalt.as_bytes());
        tokens.push((sign, Instant::now()));
        plain(
            "S",
            134,
            json!({ "time": time, "salt": self.salt, "newsalt": newsalt }),
        )
    }

    fn read(&self, miner: &EmulatedMiner, cmd: &str) -> Value {
        match cmd {
            "summary" => {
                let mhs = miner.hashrate_ghs() * 1000.0;
                json!({
                    "STATUS": [{ "STATUS": "S", "When": now_secs(), "Code": 11, "Msg": "Summary", "Description": "btminer" }],
                    "SUMMARY": [{
                        "Elapsed": 3600, "MHS av": mhs, "MHS 5s": mhs, "Accepted": 100, "Rejected": 0,
                        "Power": miner.power_w().round() as i64,
                        "Power Limit": miner.power_limit_w().unwrap_or(miner.nominal_w()).round() as i64,
                        "Power Mode": "Normal", "Power Fanspeed": 3000, "Factory GHS": 110000,
                        "Chip Temp Avg": 70.0, "MAC": "C4:11:04:00:00:01"
                    }],
                    "id": 1
                })
            }
            "status" => plain(
                "S",
                131,
                json!({
                    "mineroff": if miner.is_paused() { "true" } else { "false" },
                    "mineroff_reason": if miner.is_paused() { "power off by api" } else { "" },
                    "mineroff_time": "", "FirmwareVersion": "'20230908.22.REL'",
                    "power_mode": "", "hash_percent": ""
                }),
            ),
            "get_version" => plain(
                "S",
                131,
                json!({ "api_ver": "2.0.5", "fw_ver": "20230908.22.REL", "platform": "H6OS" }),
            ),
            "devdetails" => json!({
                "STATUS": [{ "STATUS": "S", "When": now_secs(), "Code": 69, "Msg": "Device Details", "Description": "btminer" }],
                "DEVDETAILS": [{ "DEVDETAILS": 0, "Name": "SM", "ID": 0, "Driver": "bitmicro", "Model": "M30S+" }],
                "id": 1
            }),
            _ => plain("E", 14, json!("invalid cmd")),
        }
    }

    fn write(&self, miner: &EmulatedMiner, command: &Value) -> Value {
        let cmd = command.get("cmd").and_then(Value::as_str).unwrap_or("");
        let token_ok = {
            let mut tokens = self.tokens.lock().unwrap();
            tokens.retain(|(_, at)| at.elapsed() < TOKEN_LIFE);
            let sign = command.get("token").and_then(Value::as_str).unwrap_or("");
            tokens.iter().any(|(s, _)| s == sign)
        };
        if !token_ok {
            return plain("E", 135, json!("check token error"));
        }
        let ok = || plain("S", 131, json!("API command OK"));
        match cmd {
            "power_off" => {
                miner.pause();
                ok()
            }
            "power_on" => {
                miner.resume();
                ok()
            }
            "adjust_power_limit" => {
                let watts = match command.get("power_limit") {
                    Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
                    Some(Value::Number(n)) => n.as_f64(),
                    _ => None,
                };
                match watts {
                    // Real miners refuse targets their boards cannot run at.
                    Some(w) if w >= miner.nominal_w() * 0.3 && w <= miner.nominal_w() => {
                        miner.set_limit(Some(w));
                        ok()
                    }
                    Some(w) if w > miner.nominal_w() => {
                        miner.set_limit(None);
                        ok()
                    }
                    _ => plain("E", 132, json!("command error")),
                }
            }
            _ => plain("E", 14, json!("invalid cmd")),
        }
    }
}

impl JsonTcpFirmware for Whatsminer {
    fn answer(&self, miner: &EmulatedMiner, request: &[u8]) -> Vec<u8> {
        let Ok(value) = serde_json::from_slice::<Value>(request) else {
            return plain("E", 23, json!("invalid JSON message"))
                .to_string()
                .into_bytes();
        };
        if value.get("enc").is_some() {
            let data = value.get("data").and_then(Value::as_str).unwrap_or("");
            let Some(clear) = decrypt_b64(&self.aes_key, data) else {
                miner.record("enc:undecodable");
                return plain("E", 137, json!("base64 decode error"))
                    .to_string()
                    .into_bytes();
            };
            let Ok(command) = serde_json::from_slice::<Value>(&clear) else {
                miner.record("enc:bad-key");
                return plain("E", 23, json!("invalid JSON message"))
                    .to_string()
                    .into_bytes();
            };
            let cmd = command.get("cmd").and_then(Value::as_str).unwrap_or("?");
            let mut record = cmd.to_string();
            for key in ["respbefore", "power_limit"] {
                if let Some(v) = command.get(key).and_then(Value::as_str) {
                    record.push_str(&format!("|{key}={v}"));
                }
            }
            miner.record(record);
            let answer = self.write(miner, &command);
            if answer.get("STATUS").and_then(Value::as_str) == Some("E")
                && answer.get("Code").and_then(Value::as_i64) == Some(135)
            {
                return answer.to_string().into_bytes();
            }
            let enc = encrypt_b64(&self.aes_key, answer.to_string().as_bytes());
            return json!({ "enc": enc }).to_string().into_bytes();
        }
        let cmd = value
            .get("cmd")
            .or_else(|| value.get("command"))
            .and_then(Value::as_str)
            .unwrap_or("");
        miner.record(cmd);
        let answer = if cmd == "get_token" {
            self.get_token()
        } else if WRITES.contains(&cmd) {
            plain("E", 45, json!("permission denied"))
        } else {
            self.read(miner, cmd)
        };
        answer.to_string().into_bytes()
    }
}
