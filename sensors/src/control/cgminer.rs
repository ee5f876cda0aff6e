//! cgminer and bmminer: the cgminer JSON API on TCP 4028.
//!
//! Protocol (cgminer `API-README`): send `{"command":"C","parameter":"P"}`, read one JSON answer
//! (terminated by NUL) and the socket closes. Every answer carries
//! `"STATUS":[{"STATUS":"S|I|W|E|F","Code":n,"Msg":".."}]`. Writing commands are *privileged*:
//! the miner must list the controller in `--api-allow W:<ip>`; otherwise the answer is code 45
//! "Access denied to 'X' command".
//!
//! Choice of pause: cgminer has no "pause" command. The commands that really stop hash boards are
//! `ascdisable|N` (ASIC devices) and `pgadisable|N` (FPGA devices), applied to every device
//! listed by `devs`; `ascenable`/`pgaenable` undo it. We do not use `disablepool`/`switchpool`
//! (withholding work keeps the boards powered and is only a last resort, done by the proxy) nor
//! `restart`/`quit` (it reboots the hashing process and comes back hashing). Stock bmminer
//! (Antminer) builds that answer `ascdisable` with "Invalid command" (code 14) can only be put to
//! sleep through their web interface, which this client does not speak: `pause` then returns
//! [`ControlError::Unsupported`] saying so. cgminer has no power-limit command at all.
//! pyasic, for reference, stops stock Antminers through the web `set_miner_conf` sleep mode,
//! and pauses BOSminer's cgminer-compatible API with its own `pause`/`resume` commands.

use serde_json::Value;

use super::rpc::{reply_status, JsonTcp};
use super::{Capabilities, ControlError, FirmwareKind, MinerControl, MinerEndpoint, MinerStatus};

/// cgminer's "Invalid command" code.
const CODE_INVALID_COMMAND: i64 = 14;
/// cgminer's "Access denied to '%s' command" code.
const CODE_ACCESS_DENIED: i64 = 45;

pub struct Cgminer {
    rpc: JsonTcp,
    /// The device list from the last `devs`. A miner's boards do not change while it runs, so
    /// a pause needs one round trip (the disables, sent concurrently) instead of two; the cache
    /// is dropped whenever a command fails, and the next call asks `devs` again.
    devices: std::sync::Mutex<Option<Vec<Device>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DevType {
    Asc,
    Pga,
}

impl DevType {
    fn command(self, enable: bool) -> &'static str {
        match (self, enable) {
            (DevType::Asc, true) => "ascenable",
            (DevType::Asc, false) => "ascdisable",
            (DevType::Pga, true) => "pgaenable",
            (DevType::Pga, false) => "pgadisable",
        }
    }
}

#[derive(Debug, Clone)]
struct Device {
    kind: DevType,
    id: i64,
    enabled: bool,
    alive: bool,
}

impl Cgminer {
    pub fn new(endpoint: &MinerEndpoint) -> Self {
        Cgminer {
            rpc: JsonTcp::new(endpoint.host_port(), endpoint.timeout()),
            devices: std::sync::Mutex::new(None),
        }
    }

    fn address(&self) -> String {
        self.rpc.address.clone()
    }

    /// Runs a command and turns a failing STATUS into the matching error.
    async fn checked(&self, command: &str, parameter: Option<&str>) -> Result<Value, ControlError> {
        let reply = self.rpc.command(command, parameter).await?;
        let status = reply_status(&reply).ok_or_else(|| {
            self.rpc
                .protocol_err(format!("'{command}' answer has no STATUS"))
        })?;
        if status.ok() {
            return Ok(reply);
        }
        Err(match status.code {
            Some(CODE_ACCESS_DENIED) => ControlError::Auth {
                address: self.address(),
                detail: status.msg,
                fix: "allow this controller to write: start cgminer/bmminer with \
                      `--api-allow W:<controller-ip>` (or `api-allow` in its config) and \
                      `--api-listen`"
                    .into(),
            },
            Some(CODE_INVALID_COMMAND) => ControlError::Unsupported {
                address: self.address(),
                what: format!(
                    "this cgminer/bmminer build has no '{command}' command ({}), so it cannot \
                     stop hashing through its API; stock Antminers sleep only through their web \
                     interface: run LuxOS, Braiins OS or Vnish on it to curtail it",
                    status.msg
                ),
            },
            _ => ControlError::Rejected {
                address: self.address(),
                message: format!("'{command}': {} (code {:?})", status.msg, status.code),
            },
        })
    }

    async fn devices(&self) -> Result<Vec<Device>, ControlError> {
        let reply = self.checked("devs", None).await?;
        let list = reply
            .get("DEVS")
            .and_then(Value::as_array)
            .ok_or_else(|| self.rpc.protocol_err("'devs' answer has no DEVS list"))?;
        let mut devices = Vec::new();
        for d in list {
            let (kind, id) = if let Some(id) = d.get("ASC").and_then(Value::as_i64) {
                (DevType::Asc, id)
            } else if let Some(id) = d.get("PGA").and_then(Value::as_i64) {
                (DevType::Pga, id)
            } else {
                continue;
            };
            let enabled = d.get("Enabled").and_then(Value::as_str).unwrap_or("Y") == "Y";
            let status = d.get("Status").and_then(Value::as_str).unwrap_or("Alive");
            devices.push(Device {
                kind,
                id,
                enabled,
                alive: status == "Alive",
            });
        }
        self.cache(Some(devices.clone()));
        Ok(devices)
    }

    fn cache(&self, devices: Option<Vec<Device>>) {
        *self.devices.lock().unwrap_or_else(|e| e.into_inner()) = devices;
    }

    fn cached_devices(&self) -> Option<Vec<Device>> {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn set_all(&self, enable: bool) -> Result<(), ControlError> {
        let devices = match self.cached_devices() {
            Some(d) => d,
            None => self.devices().await?,
        };
        if devices.is_empty() {
            return Err(ControlError::Unsupported {
                address: self.address(),
                what: "the miner lists no ASC/PGA devices in 'devs', so there is nothing to \
                       disable through the cgminer API (stock bmminer reports its chains \
                       elsewhere); run LuxOS, Braiins OS or Vnish on it to curtail it"
                    .into(),
            });
        }
        // One connection per command (cgminer closes after each answer), all at once: the
        // boards stop together and the pause takes one round trip.
        // Every device gets the command, whatever the cache says it was: someone may have
        // toggled a board since, and "already disabled" is an informational answer.
        let commands = devices.iter().map(|dev| async move {
            let id = dev.id.to_string();
            self.checked(dev.kind.command(enable), Some(&id)).await
        });
        let results = futures::future::join_all(commands).await;
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            self.cache(None);
            return Err(e);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl MinerControl for Cgminer {
    async fn pause(&self) -> Result<(), ControlError> {
        self.set_all(false).await
    }

    async fn resume(&self) -> Result<(), ControlError> {
        self.set_all(true).await
    }

    async fn set_power_limit(&self, _watts: u32) -> Result<(), ControlError> {
        Err(ControlError::Unsupported {
            address: self.address(),
            what: "cgminer/bmminer has no power-limit command; pause the miner instead, or run \
                   firmware with power targets (LuxOS, Braiins OS, Vnish)"
                .into(),
        })
    }

    async fn status(&self) -> Result<MinerStatus, ControlError> {
        let devices = self.devices().await?;
        Ok(MinerStatus {
            hashing: devices.iter().any(|d| d.enabled && d.alive),
            power_w: None,
            power_limit_w: None,
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause: true,
            power_limit: false,
        }
    }

    fn kind(&self) -> FirmwareKind {
        FirmwareKind::Cgminer
    }
}
