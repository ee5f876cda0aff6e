//! LuxOS (LUXminer) API emulator: cgminer-style JSON on TCP with LuxOS sessions (`logon`,
//! `session`, `logoff`; one session at a time, expiring after a minute idle), `curtail`
//! `sleep`/`wakeup`, profiles (`profiles`, `profileset`), ATM (`atm`, `atmset`), `power`,
//! `config`, `summary`. [`super::EmulatorOptions::foreign_session`] makes another tool hold the
//! session, so `logon` fails.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

use super::{now_secs, EmulatedMiner, JsonTcpFirmware};

const DESCRIPTION: &str = "LUXminer 2024.5.1.123456-abcdef";
const SESSION_IDLE: Duration = Duration::from_secs(60);
const FOREIGN_SESSION: &str = "f0re1gn5";

pub struct LuxOs {
    state: Mutex<State>,
}

struct State {
    session: Option<(String, Instant)>,
    profile: String,
    atm_enabled: bool,
}

impl Default for LuxOs {
    fn default() -> Self {
        LuxOs {
            state: Mutex::new(State {
                session: None,
                profile: "default".into(),
                atm_enabled: true,
            }),
        }
    }
}

/// (name, MHz, watts): the default profile and LuxOS-style 25 MHz steps around it.
pub fn profiles(nominal_w: f64) -> Vec<(String, u32, f64)> {
    let mut out = vec![("default".to_string(), 545, nominal_w.round())];
    for k in 1..=8u32 {
        let mhz = 545 - 25 * k;
        out.push((
            format!("{mhz}MHz"),
            mhz,
            (nominal_w * (1.0 - 0.07 * k as f64)).round(),
        ));
    }
    out.push(("570MHz".into(), 570, (nominal_w * 1.07).round()));
    out
}

fn status(severity: &str, code: i64, msg: &str) -> Value {
    json!([{ "STATUS": severity, "When": now_secs(), "Code": code, "Msg": msg, "Description": DESCRIPTION }])
}

fn reply(severity: &str, code: i64, msg: &str) -> Value {
    json!({ "STATUS": status(severity, code, msg), "id": 1 })
}

fn with(mut base: Value, key: &str, data: Value) -> Value {
    base[key] = data;
    base
}

impl LuxOs {
    fn active_session(&self, miner: &EmulatedMiner) -> Option<String> {
        if miner.options().foreign_session {
            return Some(FOREIGN_SESSION.into());
        }
        let mut st = self.state.lock().unwrap();
        match &st.session {
            Some((_, at)) if at.elapsed() > SESSION_IDLE => {
                st.session = None;
                None
            }
            Some((id, _)) => Some(id.clone()),
            None => None,
        }
    }

    /// Checks the session id (first parameter) and refreshes it; returns the other parameters.
    fn privileged<'a>(
        &self,
        miner: &EmulatedMiner,
        params: &'a [&'a str],
    ) -> Result<&'a [&'a str], Value> {
        let Some(sid) = params.first().filter(|s| !s.is_empty()) else {
            return Err(reply("E", 317, "Missing session id"));
        };
        match self.active_session(miner) {
            Some(active) if active == *sid && active != FOREIGN_SESSION => {
                let mut st = self.state.lock().unwrap();
                st.session = Some((active, Instant::now()));
                Ok(&params[1..])
            }
            _ => Err(reply("E", 318, "Invalid session id")),
        }
    }

    fn one(&self, miner: &EmulatedMiner, command: &str, parameter: Option<&str>) -> Value {
        miner.record(match parameter {
            Some(p) => format!("{command}|{p}"),
            None => command.to_string(),
        });
        let params: Vec<&str> = parameter
            .map(|p| p.split(',').collect())
            .unwrap_or_default();
        let table = profiles(miner.nominal_w());
        match command {
            "logon" => {
                if self.active_session(miner).is_some() {
                    return reply("E", 320, "Another session is active");
                }
                let id: String = rand::thread_rng()
                    .sample_iter(&rand::distributions::Alphanumeric)
                    .take(8)
                    .map(char::from)
                    .collect();
                self.state.lock().unwrap().session = Some((id.clone(), Instant::now()));
                with(
                    reply("S", 316, "Session created"),
                    "SESSION",
                    json!([{ "SessionID": id }]),
                )
            }
            "session" => {
                let id = self.active_session(miner).unwrap_or_default();
                with(
                    reply("S", 319, "Session information"),
                    "SESSION",
                    json!([{ "SessionID": id }]),
                )
            }
            "logoff" => match self.privileged(miner, &params) {
                Ok(_) => {
                    self.state.lock().unwrap().session = None;
                    reply("S", 317, "Session terminated")
                }
                Err(e) => e,
            },
            "curtail" => match self.privileged(miner, &params) {
                Ok(rest) => match rest.first().copied() {
                    Some("sleep") => {
                        miner.pause();
                        with(
                            reply("S", 335, "Curtailment command sent"),
                            "CURTAIL",
                            json!([{ "Action": "sleep mode" }]),
                        )
                    }
                    Some("wakeup") => {
                        miner.resume();
                        with(
                            reply("S", 335, "Curtailment command sent"),
                            "CURTAIL",
                            json!([{ "Action": "wake up" }]),
                        )
                    }
                    _ => reply("E", 336, "Invalid curtail action, use sleep or wakeup"),
                },
                Err(e) => e,
            },
            "profiles" => {
                let list: Vec<Value> = table
                    .iter()
                    .map(|(name, mhz, watts)| {
                        json!({
                            "Profile Name": name, "Frequency": mhz, "Voltage": 13.4,
                            "Watts": *watts as i64, "Hashrate": watts / 30.0, "IsDynamic": false,
                            "IsTuned": false, "Step": "0"
                        })
                    })
                    .collect();
                with(reply("S", 327, "Profiles"), "PROFILES", Value::Array(list))
            }
            "profileset" => match self.privileged(miner, &params) {
                Ok(rest) => {
                    let Some(name) = rest.first() else {
                        return reply("E", 322, "Missing profile name");
                    };
                    let Some((_, _, watts)) = table.iter().find(|(n, _, _)| n == name) else {
                        return reply("E", 323, &format!("Profile {name} not found"));
                    };
                    let limit = if *name == "default" {
                        None
                    } else {
                        Some(*watts)
                    };
                    miner.set_limit(limit);
                    self.state.lock().unwrap().profile = name.to_string();
                    with(
                        reply("S", 321, "Profile Set"),
                        "PROFILE",
                        json!([{ "Board": 0, "FrequencyStep": 5, "Profile": name, "VoltageStep": 0.05 }]),
                    )
                }
                Err(e) => e,
            },
            "atm" => {
                let enabled = self.state.lock().unwrap().atm_enabled;
                with(
                    reply("S", 339, "ATM configuration values"),
                    "ATM",
                    json!([{ "Enabled": enabled, "MaxProfile": "570MHz", "MinProfile": "345MHz",
                             "PostRampMinutes": 15, "StartupMinutes": 15, "TempWindow": 7 }]),
                )
            }
            "atmset" => match self.privileged(miner, &params) {
                Ok(rest) => {
                    for kv in rest {
                        if let Some(v) = kv.strip_prefix("enabled=") {
                            self.state.lock().unwrap().atm_enabled = v == "true";
                        }
                    }
                    reply(
                        "S",
                        340,
                        "Advanced Thermal Management configuration updated",
                    )
                }
                Err(e) => e,
            },
            "config" => {
                let profile = self.state.lock().unwrap().profile.clone();
                with(
                    reply("S", 33, "LUXminer config"),
                    "CONFIG",
                    json!([{ "Profile": profile, "IsAtmEnabled": self.state.lock().unwrap().atm_enabled,
                             "CurtailMode": if miner.is_paused() { "Sleep" } else { "None" },
                             "Model": "Antminer S19", "MACAddr": "00:11:22:33:44:55" }]),
                )
            }
            "power" => with(
                reply("S", 340, "Power"),
                "POWER",
                json!([{ "Watts": miner.power_w().round() as i64, "PSU": !miner.is_paused() }]),
            ),
            "summary" => {
                let ghs = miner.hashrate_ghs();
                with(
                    reply("S", 11, "Summary"),
                    "SUMMARY",
                    json!([{ "Elapsed": 3600, "GHS 5s": ghs, "GHS av": ghs, "Accepted": 100, "Rejected": 0 }]),
                )
            }
            "version" => with(
                reply("S", 22, "LUXminer versions"),
                "VERSION",
                json!([{ "LUXminer": "2024.5.1.123456-abcdef", "API": "3.7", "Type": "Antminer S19" }]),
            ),
            "devs" => {
                let boards: Vec<Value> = (0..super::BOARDS)
                    .map(|i| json!({ "ASC": i, "Enabled": "Y", "Status": if miner.is_paused() { "Sleeping" } else { "Alive" } }))
                    .collect();
                with(reply("S", 9, "3 ASC(s)"), "DEVS", Value::Array(boards))
            }
            _ => reply("E", 14, "Invalid command"),
        }
    }
}

impl JsonTcpFirmware for LuxOs {
    fn answer(&self, miner: &EmulatedMiner, request: &[u8]) -> Vec<u8> {
        let value = match serde_json::from_slice::<Value>(request) {
            Ok(v) if v.is_object() => v,
            _ => return reply("E", 23, "Invalid JSON").to_string().into_bytes(),
        };
        let answer = match value.get("command").and_then(Value::as_str) {
            None => reply("E", 24, "Missing JSON 'command'"),
            Some(command) => {
                let parameter = match value.get("parameter") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                if command.contains('+') {
                    let mut joined = serde_json::Map::new();
                    for part in command.split('+') {
                        joined.insert(
                            part.to_string(),
                            json!([self.one(miner, part, parameter.as_deref())]),
                        );
                    }
                    Value::Object(joined)
                } else {
                    self.one(miner, command, parameter.as_deref())
                }
            }
        };
        let mut out = answer.to_string().into_bytes();
        out.push(0);
        out
    }
}
