//! Where a miner's firmware API is and how to log in to it (one entry of the site config).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Secret;

/// The firmware family, which decides the protocol. Config spelling is snake_case
/// (`cgminer`, `lux_os`, `braiins_os`, `whatsminer`, `vnish`); common aliases are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirmwareKind {
    /// cgminer and its forks with the cgminer JSON API on TCP 4028 (bmminer on stock Antminers).
    #[serde(alias = "bmminer")]
    Cgminer,
    /// Luxor's LuxOS (LUXminer API on TCP 4028, sessions).
    #[serde(alias = "luxos", alias = "luxminer")]
    LuxOs,
    /// Braiins OS / Braiins OS+ public API v1 (gRPC on TCP 50051).
    #[serde(alias = "braiins", alias = "bos", alias = "boser")]
    BraiinsOs,
    /// MicroBT Whatsminer stock firmware, API v2 (encrypted writes on TCP 4028).
    #[serde(alias = "btminer")]
    Whatsminer,
    /// Vnish firmware's HTTP API (`/api/v1`, TCP 80).
    Vnish,
}

impl FirmwareKind {
    pub const ALL: [FirmwareKind; 5] = [
        FirmwareKind::Cgminer,
        FirmwareKind::LuxOs,
        FirmwareKind::BraiinsOs,
        FirmwareKind::Whatsminer,
        FirmwareKind::Vnish,
    ];

    /// The port the firmware's API listens on out of the box.
    pub fn default_port(self) -> u16 {
        match self {
            FirmwareKind::Cgminer | FirmwareKind::LuxOs | FirmwareKind::Whatsminer => 4028,
            FirmwareKind::BraiinsOs => 50051,
            FirmwareKind::Vnish => 80,
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FirmwareKind::Cgminer => "cgminer",
            FirmwareKind::LuxOs => "lux_os",
            FirmwareKind::BraiinsOs => "braiins_os",
            FirmwareKind::Whatsminer => "whatsminer",
            FirmwareKind::Vnish => "vnish",
        }
    }
}

impl fmt::Display for FirmwareKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const DEFAULT_TIMEOUT_MS: u64 = 3000;

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// One miner's control endpoint. `Debug` shows the password as `***`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinerEndpoint {
    pub kind: FirmwareKind,
    /// `host` or `host:port` (`[v6]:port` for IPv6); without a port, the kind's default.
    pub address: String,
    /// Braiins OS login (default `root`); unused by the other kinds.
    #[serde(default)]
    pub username: Option<String>,
    /// Braiins OS, Whatsminer (admin password) and Vnish (web password).
    #[serde(default)]
    pub password: Option<Secret>,
    /// Whole-command budget: connect, send, answer. Default 3000 ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl MinerEndpoint {
    pub fn new(kind: FirmwareKind, address: impl Into<String>) -> Self {
        MinerEndpoint {
            kind,
            address: address.into(),
            username: None,
            password: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }

    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    pub fn with_password(mut self, password: impl Into<Secret>) -> Self {
        self.password = Some(password.into());
        self
    }

    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = timeout_ms;
        self
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// `host:port`, with the kind's default port when the config gave none.
    pub fn host_port(&self) -> String {
        with_default_port(self.address.trim(), self.kind.default_port())
    }

    /// Checks the fields a config loader should reject at start; the message names the key and
    /// the fix.
    pub fn validate(&self) -> Result<(), String> {
        let address = self.address.trim();
        if address.is_empty() {
            return Err(
                "miner endpoint `address` is empty: set it to the miner's IP or host name, \
                 e.g. \"10.0.0.5\" or \"10.0.0.5:4028\""
                    .into(),
            );
        }
        if self.timeout_ms == 0 {
            return Err(format!(
                "miner endpoint {address}: `timeout_ms` is 0: use a positive budget such as {DEFAULT_TIMEOUT_MS}"
            ));
        }
        let needs_password = matches!(self.kind, FirmwareKind::Whatsminer | FirmwareKind::Vnish);
        if needs_password && self.password.is_none() {
            return Err(format!(
                "miner endpoint {address} (kind {}): `password` is missing: {} needs the \
                 firmware's admin password to pause or power-limit",
                self.kind, self.kind
            ));
        }
        Ok(())
    }
}

fn with_default_port(address: &str, port: u16) -> String {
    if let Some(rest) = address.strip_prefix('[') {
        // [v6] or [v6]:port
        return match rest.split_once(']') {
            Some((_, tail)) if tail.starts_with(':') => address.to_string(),
            _ => format!("{address}:{port}"),
        };
    }
    match address.matches(':').count() {
        0 => format!("{address}:{port}"),
        1 => address.to_string(),
        // Bare IPv6 literal.
        _ => format!("[{address}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_are_added_only_when_missing() {
        assert_eq!(with_default_port("10.0.0.5", 4028), "10.0.0.5:4028");
        assert_eq!(with_default_port("10.0.0.5:4029", 4028), "10.0.0.5:4029");
        assert_eq!(with_default_port("miner-7", 80), "miner-7:80");
        assert_eq!(with_default_port("::1", 50051), "[::1]:50051");
        assert_eq!(with_default_port("[::1]", 50051), "[::1]:50051");
        assert_eq!(with_default_port("[::1]:9", 50051), "[::1]:9");
    }

    #[test]
    fn kinds_parse_from_config_spellings() {
        #[derive(Deserialize)]
        struct K {
            kind: FirmwareKind,
        }
        for (text, kind) in [
            ("cgminer", FirmwareKind::Cgminer),
            ("bmminer", FirmwareKind::Cgminer),
            ("lux_os", FirmwareKind::LuxOs),
            ("luxos", FirmwareKind::LuxOs),
            ("braiins_os", FirmwareKind::BraiinsOs),
            ("whatsminer", FirmwareKind::Whatsminer),
            ("vnish", FirmwareKind::Vnish),
        ] {
            let k: K = serde_json::from_str(&format!("{{\"kind\":\"{text}\"}}")).unwrap();
            assert_eq!(k.kind, kind, "{text}");
        }
    }

    #[test]
    fn endpoint_defaults_and_validation() {
        let e: MinerEndpoint =
            serde_json::from_str(r#"{"kind":"vnish","address":"10.1.2.3","password":"pw"}"#)
                .unwrap();
        assert_eq!(e.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(e.host_port(), "10.1.2.3:80");
        assert!(e.validate().is_ok());
        let e = MinerEndpoint::new(FirmwareKind::Whatsminer, "10.1.2.4");
        let err = e.validate().unwrap_err();
        assert!(
            err.contains("password") && err.contains("10.1.2.4"),
            "{err}"
        );
        let unknown = serde_json::from_str::<MinerEndpoint>(
            r#"{"kind":"vnish","address":"x","pasword":"typo"}"#,
        );
        assert!(unknown.unwrap_err().to_string().contains("pasword"));
    }
}
