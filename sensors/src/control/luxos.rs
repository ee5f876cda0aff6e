//! LuxOS (LUXminer): the cgminer-style JSON API on TCP 4028 plus LuxOS sessions.
//!
//! Protocol (docs.luxor.tech/firmware/api): commands that change the miner need a session:
//! `logon` answers `SESSION[0].SessionID`; that id is the first element of the comma-separated
//! `parameter` of each privileged command; `logoff` drops it (sessions also expire after a
//! minute). Only one session exists at a time: `logon` fails while another tool holds one,
//! which we report as [`ControlError::Auth`] (LuxOS has no API password).
//!
//! * pause: `curtail` `<sid>,sleep` (hash boards and PSU off); resume: `curtail` `<sid>,wakeup`.
//! * power limit: LuxOS limits power through profiles. We read `profiles` (each with its
//!   estimated `Watts`), pick the highest profile at or under the limit and `profileset` it
//!   (turning ATM off around the change, as ATM would otherwise move the profile; pyasic's
//!   LuxOS backend does the same).
//! * status: `summary` (`GHS 5s`), `power` (`Watts`), `config` (`Profile`) with `profiles`.

use serde_json::Value;

use super::rpc::{reply_status, JsonTcp};
use super::{Capabilities, ControlError, FirmwareKind, MinerControl, MinerEndpoint, MinerStatus};

pub struct LuxOs {
    rpc: JsonTcp,
    /// Our last session id: if a `logoff` was lost, `logon` fails until it expires, but the
    /// session is still ours to use.
    last_session: std::sync::Mutex<Option<String>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Profile {
    name: String,
    watts: f64,
}

impl LuxOs {
    pub fn new(endpoint: &MinerEndpoint) -> Self {
        LuxOs {
            rpc: JsonTcp::new(endpoint.host_port(), endpoint.timeout()),
            last_session: std::sync::Mutex::new(None),
        }
    }

    fn address(&self) -> String {
        self.rpc.address.clone()
    }

    async fn checked(&self, command: &str, parameter: Option<&str>) -> Result<Value, ControlError> {
        let reply = self.rpc.command(command, parameter).await?;
        let status = reply_status(&reply).ok_or_else(|| {
            self.rpc
                .protocol_err(format!("'{command}' answer has no STATUS"))
        })?;
        if status.ok() {
            return Ok(reply);
        }
        let lower = status.msg.to_ascii_lowercase();
        if lower.contains("session") {
            return Err(ControlError::Auth {
                address: self.address(),
                detail: format!("'{command}': {}", status.msg),
                fix:
                    "another tool holds the miner's only LuxOS session: let it `logoff` (sessions \
                      expire after a minute idle) and retry"
                        .into(),
            });
        }
        if status.code == Some(14) || lower.contains("invalid command") {
            return Err(ControlError::Unsupported {
                address: self.address(),
                what: format!(
                    "this LuxOS version has no '{command}' command ({}); update LuxOS",
                    status.msg
                ),
            });
        }
        Err(ControlError::Rejected {
            address: self.address(),
            message: format!("'{command}': {} (code {:?})", status.msg, status.code),
        })
    }

    async fn logon(&self) -> Result<String, ControlError> {
        let reply = match self.checked("logon", None).await {
            Ok(reply) => reply,
            Err(e @ ControlError::Auth { .. }) => {
                // Is the active session the one we failed to log off?
                let ours = self.last_session.lock().unwrap().clone();
                let active = self.rpc.command("session", None).await?;
                let active = active
                    .pointer("/SESSION/0/SessionID")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                return match ours {
                    Some(ours) if ours == active => Ok(ours),
                    _ => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let sid = reply
            .pointer("/SESSION/0/SessionID")
            .and_then(Value::as_str)
            .unwrap_or("");
        if sid.is_empty() {
            return Err(self
                .rpc
                .protocol_err("'logon' answer has no SESSION[0].SessionID"));
        }
        *self.last_session.lock().unwrap() = Some(sid.to_string());
        Ok(sid.to_string())
    }

    /// Runs privileged commands inside one session, then logs off (even after a failure).
    async fn in_session(&self, commands: &[(&str, String)]) -> Result<Vec<Value>, ControlError> {
        let sid = self.logon().await?;
        let mut replies = Vec::new();
        let mut outcome = Ok(());
        for (command, args) in commands {
            let parameter = if args.is_empty() {
                sid.clone()
            } else {
                format!("{sid},{args}")
            };
            match self.checked(command, Some(&parameter)).await {
                Ok(r) => replies.push(r),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        // Best effort: the session expires by itself within a minute anyway.
        if let Ok(reply) = self.rpc.command("logoff", Some(&sid)).await {
            if reply_status(&reply).is_some_and(|s| s.ok()) {
                *self.last_session.lock().unwrap() = None;
            }
        }
        outcome.map(|_| replies)
    }

    async fn profiles(&self) -> Result<Vec<Profile>, ControlError> {
        let reply = self.checked("profiles", None).await?;
        let list = reply
            .get("PROFILES")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                self.rpc
                    .protocol_err("'profiles' answer has no PROFILES list")
            })?;
        Ok(list
            .iter()
            .filter_map(|p| {
                Some(Profile {
                    name: p.get("Profile Name")?.as_str()?.to_string(),
                    watts: number(p.get("Watts")?)?,
                })
            })
            .collect())
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[async_trait::async_trait]
impl MinerControl for LuxOs {
    async fn pause(&self) -> Result<(), ControlError> {
        self.in_session(&[("curtail", "sleep".into())])
            .await
            .map(|_| ())
    }

    async fn resume(&self) -> Result<(), ControlError> {
        self.in_session(&[("curtail", "wakeup".into())])
            .await
            .map(|_| ())
    }

    async fn set_power_limit(&self, watts: u32) -> Result<(), ControlError> {
        let profiles = self.profiles().await?;
        let best = profiles
            .iter()
            .filter(|p| p.watts <= watts as f64)
            .max_by(|a, b| a.watts.total_cmp(&b.watts))
            .cloned();
        let Some(best) = best else {
            let lowest = profiles
                .iter()
                .map(|p| p.watts)
                .fold(f64::INFINITY, f64::min);
            return Err(ControlError::Rejected {
                address: self.address(),
                message: if profiles.is_empty() {
                    "the miner lists no profiles, so it cannot be power-limited".into()
                } else {
                    format!(
                        "no LuxOS profile draws {watts} W or less (the lowest is {lowest:.0} W); \
                         pause the miner instead"
                    )
                },
            });
        };
        let atm_on = match self.checked("atm", None).await {
            Ok(reply) => reply
                .pointer("/ATM/0/Enabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            Err(ControlError::Unsupported { .. }) => false,
            Err(e) => return Err(e),
        };
        let mut commands = Vec::new();
        if atm_on {
            commands.push(("atmset", "enabled=false".to_string()));
        }
        commands.push(("profileset", best.name.clone()));
        if atm_on {
            commands.push(("atmset", "enabled=true".to_string()));
        }
        self.in_session(&commands).await.map(|_| ())
    }

    async fn status(&self) -> Result<MinerStatus, ControlError> {
        let summary = self.checked("summary", None).await?;
        let ghs = summary
            .pointer("/SUMMARY/0/GHS 5s")
            .and_then(number)
            .ok_or_else(|| {
                self.rpc
                    .protocol_err("'summary' answer has no SUMMARY[0].\"GHS 5s\"")
            })?;
        let power_w = match self.checked("power", None).await {
            Ok(reply) => reply.pointer("/POWER/0/Watts").and_then(number),
            Err(ControlError::Unsupported { .. }) => None,
            Err(e) => return Err(e),
        };
        let config = self.checked("config", None).await?;
        let active = config
            .pointer("/CONFIG/0/Profile")
            .and_then(Value::as_str)
            .map(str::to_string);
        let power_limit_w = match active {
            Some(name) => self
                .profiles()
                .await?
                .into_iter()
                .find(|p| p.name == name)
                .map(|p| p.watts.round() as u32),
            None => None,
        };
        Ok(MinerStatus {
            hashing: ghs > 0.0,
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
        FirmwareKind::LuxOs
    }
}
