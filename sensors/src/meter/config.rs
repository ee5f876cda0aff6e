//! Meter configuration as it appears in the site's TOML, and its validation.
//!
//! ```toml
//! [[meters]]
//! id = "site-main"
//! role = "site_total"
//! transport.tcp = "192.168.1.50:502"
//! preset = "sdm630"
//!
//! [[meters]]
//! id = "feeder-a"
//! role = "feeder"
//! transport.rtu = { path = "/dev/ttyUSB0", baud = 9600, parity = "none", stop_bits = 1, data_bits = 8 }
//! unit_id = 2
//! preset = "custom"
//! registers = [
//!   { quantity = "total_power_w", address = 0x34, function = "input", kind = "f32" },
//!   { quantity = "import_energy_kwh", address = 0x48, function = "input", kind = "f32" },
//! ]
//! ```

use serde::Deserialize;

/// What a meter measures for the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterRole {
    /// The grid connection point: the whole site's power.
    SiteTotal,
    /// One feeder / container / PDU.
    Feeder,
}

/// How to reach the meter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Modbus TCP: `"host:port"` (the port defaults to 502 when left out).
    Tcp(String),
    /// Modbus RTU over a serial line (RS-485 adapter).
    Rtu(RtuSettings),
}

/// Serial line settings for Modbus RTU.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtuSettings {
    pub path: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// Which register map to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Eastron SDM630 (three-phase, float32 input registers).
    Sdm630,
    /// Eastron SDM120 (single-phase, float32 input registers).
    Sdm120,
    /// Carlo Gavazzi EM24 (INT32 low word first, scaled).
    Em24,
    /// Carlo Gavazzi EM340 (same layout as the EM24).
    Em340,
    /// Any SunSpec meter (models 201–204 and 211–214), found by walking the SunSpec models.
    Sunspec,
    /// The `registers` list of the configuration.
    Custom,
}

/// A value the meter module knows how to put into a [`super::Reading`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    TotalPowerW,
    ImportEnergyKwh,
    L1VoltageV,
    L2VoltageV,
    L3VoltageV,
    L1CurrentA,
    L2CurrentA,
    L3CurrentA,
    L1PowerW,
    L2PowerW,
    L3PowerW,
}

impl Quantity {
    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Quantity::TotalPowerW => "total_power_w",
            Quantity::ImportEnergyKwh => "import_energy_kwh",
            Quantity::L1VoltageV => "l1_voltage_v",
            Quantity::L2VoltageV => "l2_voltage_v",
            Quantity::L3VoltageV => "l3_voltage_v",
            Quantity::L1CurrentA => "l1_current_a",
            Quantity::L2CurrentA => "l2_current_a",
            Quantity::L3CurrentA => "l3_current_a",
            Quantity::L1PowerW => "l1_power_w",
            Quantity::L2PowerW => "l2_power_w",
            Quantity::L3PowerW => "l3_power_w",
        }
    }

    /// For per-phase quantities: the phase index (0 = L1) and which value it is.
    pub(crate) fn phase(self) -> Option<(usize, PhaseValue)> {
        use PhaseValue::*;
        Some(match self {
            Quantity::L1VoltageV => (0, Voltage),
            Quantity::L2VoltageV => (1, Voltage),
            Quantity::L3VoltageV => (2, Voltage),
            Quantity::L1CurrentA => (0, Current),
            Quantity::L2CurrentA => (1, Current),
            Quantity::L3CurrentA => (2, Current),
            Quantity::L1PowerW => (0, Power),
            Quantity::L2PowerW => (1, Power),
            Quantity::L3PowerW => (2, Power),
            Quantity::TotalPowerW | Quantity::ImportEnergyKwh => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PhaseValue {
    Voltage,
    Current,
    Power,
}

/// Modbus function used to read a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterFunction {
    /// Read input registers (function 0x04).
    #[default]
    Input,
    /// Read holding registers (function 0x03).
    Holding,
}

impl RegisterFunction {
    pub fn name(self) -> &'static str {
        match self {
            RegisterFunction::Input => "input",
            RegisterFunction::Holding => "holding",
        }
    }
}

/// How the register words encode the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    /// IEEE 754 single precision, 2 registers.
    #[default]
    F32,
    /// IEEE 754 double precision, 4 registers.
    F64,
    /// Two's complement, 1 register.
    I16,
    /// 1 register.
    U16,
    /// Two's complement, 2 registers.
    I32,
    /// 2 registers.
    U32,
}

impl ValueKind {
    /// Number of 16-bit registers the value occupies.
    pub fn words(self) -> u16 {
        match self {
            ValueKind::I16 | ValueKind::U16 => 1,
            ValueKind::F32 | ValueKind::I32 | ValueKind::U32 => 2,
            ValueKind::F64 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ValueKind::F32 => "f32",
            ValueKind::F64 => "f64",
            ValueKind::I16 => "i16",
            ValueKind::U16 => "u16",
            ValueKind::I32 => "i32",
            ValueKind::U32 => "u32",
        }
    }
}

/// Order of the 16-bit words of a multi-register value. Bytes inside a word are always big
/// endian, as Modbus requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// Most significant word first (Eastron, SunSpec).
    #[default]
    HighFirst,
    /// Least significant word first (Carlo Gavazzi).
    LowFirst,
}

/// One entry of a custom register map.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterSpec {
    pub quantity: Quantity,
    /// Zero-based register address as sent on the wire (e.g. 0x34 for Eastron's 30053).
    pub address: u16,
    #[serde(default)]
    pub function: RegisterFunction,
    #[serde(default)]
    pub kind: ValueKind,
    #[serde(default)]
    pub word_order: WordOrder,
    /// Multiplier from the raw number to the unit of the quantity (W, kWh, V, A).
    #[serde(default = "default_scale")]
    pub scale: f64,
}

/// One meter of the site.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    pub id: String,
    pub role: MeterRole,
    pub transport: Transport,
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    pub preset: Preset,
    #[serde(default)]
    pub registers: Vec<RegisterSpec>,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_stale_after_ms")]
    pub stale_after_ms: u64,
}

fn default_baud() -> u32 {
    9600
}
fn default_stop_bits() -> u8 {
    1
}
fn default_data_bits() -> u8 {
    8
}
fn default_scale() -> f64 {
    1.0
}
fn default_unit_id() -> u8 {
    1
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    500
}
fn default_retries() -> u32 {
    2
}
fn default_stale_after_ms() -> u64 {
    5000
}

/// Limits checked by [`MeterConfig::validate`].
pub const MIN_POLL_INTERVAL_MS: u64 = 10;
pub const MAX_POLL_INTERVAL_MS: u64 = 3_600_000;
pub const MAX_TIMEOUT_MS: u64 = 60_000;
pub const MAX_RETRIES: u32 = 10;

impl MeterConfig {
    /// A configuration with the documented defaults, for code and tests that build configs by hand.
    pub fn new(
        id: impl Into<String>,
        role: MeterRole,
        transport: Transport,
        preset: Preset,
    ) -> Self {
        MeterConfig {
            id: id.into(),
            role,
            transport,
            unit_id: default_unit_id(),
            preset,
            registers: Vec::new(),
            poll_interval_ms: default_poll_interval_ms(),
            timeout_ms: default_timeout_ms(),
            retries: default_retries(),
            stale_after_ms: default_stale_after_ms(),
        }
    }

    /// Check the configuration. Errors name the key as `meters["<id>"].<key>` and say how to fix
    /// it. Use [`MeterConfig::validate_at`] when the position in the `meters` list is known.
    pub fn validate(&self) -> Result<(), String> {
        self.check(&format!("meters[{:?}]", self.id))
    }

    /// Like [`MeterConfig::validate`], naming keys as `meters[<index>].<key>`.
    pub fn validate_at(&self, index: usize) -> Result<(), String> {
        self.check(&format!("meters[{index}]"))
    }

    fn check(&self, at: &str) -> Result<(), String> {
        if self.id.trim().is_empty() {
            return Err(format!(
                "{at}.id is empty: give the meter a name, e.g. id = \"site-main\""
            ));
        }
        if !(MIN_POLL_INTERVAL_MS..=MAX_POLL_INTERVAL_MS).contains(&self.poll_interval_ms) {
            return Err(format!(
                "{at}.poll_interval_ms = {}: must be between {MIN_POLL_INTERVAL_MS} and \
                 {MAX_POLL_INTERVAL_MS}; the default is 1000",
                self.poll_interval_ms
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(format!(
                "{at}.timeout_ms = {}: must be between 1 and {MAX_TIMEOUT_MS}; the default is 500",
                self.timeout_ms
            ));
        }
        if self.retries > MAX_RETRIES {
            return Err(format!(
                "{at}.retries = {}: at most {MAX_RETRIES}; the default is 2",
                self.retries
            ));
        }
        if self.stale_after_ms < self.poll_interval_ms {
            return Err(format!(
                "{at}.stale_after_ms = {} is shorter than poll_interval_ms = {}: readings would go \
                 stale between two polls; set stale_after_ms to a few poll intervals (default 5000)",
                self.stale_after_ms, self.poll_interval_ms
            ));
        }
        match &self.transport {
            Transport::Tcp(addr) => {
                if let Err(e) = parse_tcp_target(addr) {
                    return Err(format!(
                        "{at}.transport.tcp = {addr:?}: {e}; write \"host:port\", e.g. \
                         \"192.168.1.50:502\""
                    ));
                }
            }
            Transport::Rtu(rtu) => {
                if rtu.path.trim().is_empty() {
                    return Err(format!(
                        "{at}.transport.rtu.path is empty: give the serial device, e.g. \
                         path = \"/dev/ttyUSB0\""
                    ));
                }
                if !(300..=4_000_000).contains(&rtu.baud) {
                    return Err(format!(
                        "{at}.transport.rtu.baud = {}: use the meter's baud rate, e.g. 9600 or 19200",
                        rtu.baud
                    ));
                }
                if !matches!(rtu.stop_bits, 1 | 2) {
                    return Err(format!(
                        "{at}.transport.rtu.stop_bits = {}: must be 1 or 2",
                        rtu.stop_bits
                    ));
                }
                if !(5..=8).contains(&rtu.data_bits) {
                    return Err(format!(
                        "{at}.transport.rtu.data_bits = {}: must be 5, 6, 7 or 8 (Modbus RTU uses 8)",
                        rtu.data_bits
                    ));
                }
                if !(1..=247).contains(&self.unit_id) {
                    return Err(format!(
                        "{at}.unit_id = {}: on a serial line the meter's address is 1 to 247; set \
                         it to the address configured on the meter (default 1)",
                        self.unit_id
                    ));
                }
            }
        }
        match self.preset {
            Preset::Custom => self.check_custom_registers(at)?,
            other => {
                if !self.registers.is_empty() {
                    return Err(format!(
                        "{at}.registers is only used with preset = \"custom\" (this meter has \
                         preset = \"{}\"): remove registers, or set preset = \"custom\" and list \
                         every register",
                        preset_name(other)
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_custom_registers(&self, at: &str) -> Result<(), String> {
        if self.registers.is_empty() {
            return Err(format!(
                "{at}.registers is empty but preset = \"custom\": list the meter's registers, e.g. \
                 registers = [{{ quantity = \"total_power_w\", address = 0x34, function = \"input\", \
                 kind = \"f32\" }}], or pick a preset (sdm630, sdm120, em24, em340, sunspec)"
            ));
        }
        let mut seen: Vec<Quantity> = Vec::new();
        for (j, r) in self.registers.iter().enumerate() {
            let key = format!("{at}.registers[{j}]");
            if seen.contains(&r.quantity) {
                return Err(format!(
                    "{key}.quantity = \"{}\" appears twice: keep one register per quantity",
                    r.quantity.name()
                ));
            }
            seen.push(r.quantity);
            if !r.scale.is_finite() || r.scale == 0.0 {
                return Err(format!(
                    "{key}.scale = {}: must be a finite, non-zero number (e.g. 0.1 for a value \
                     sent in tenths); the default is 1.0",
                    r.scale
                ));
            }
            let end = u32::from(r.address) + u32::from(r.kind.words());
            if end > 0x1_0000 {
                return Err(format!(
                    "{key}.address = {:#06x}: a {} needs {} registers and would run past 0xFFFF",
                    r.address,
                    r.kind.name(),
                    r.kind.words()
                ));
            }
        }
        if !seen.contains(&Quantity::TotalPowerW) {
            return Err(format!(
                "{at}.registers has no quantity = \"total_power_w\": the controller needs the \
                 total power; add the meter's total active power register"
            ));
        }
        Ok(())
    }
}

/// Check a list of meters: each one, and that ids are unique.
pub fn validate_all(meters: &[MeterConfig]) -> Result<(), String> {
    for (i, m) in meters.iter().enumerate() {
        m.validate_at(i)?;
        if let Some(j) = meters[..i].iter().position(|o| o.id == m.id) {
            return Err(format!(
                "meters[{i}].id = {:?} is already used by meters[{j}]: give every meter its own id",
                m.id
            ));
        }
    }
    Ok(())
}

pub(crate) fn preset_name(p: Preset) -> &'static str {
    match p {
        Preset::Sdm630 => "sdm630",
        Preset::Sdm120 => "sdm120",
        Preset::Em24 => "em24",
        Preset::Em340 => "em340",
        Preset::Sunspec => "sunspec",
        Preset::Custom => "custom",
    }
}

/// Split a TCP target into host and port; the port defaults to 502.
pub fn parse_tcp_target(addr: &str) -> Result<(String, u16), String> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err("the address is empty".into());
    }
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
        return Ok((ip.to_string(), 502));
    }
    if let Some(inner) = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        if let Ok(ip) = inner.parse::<std::net::Ipv6Addr>() {
            return Ok((ip.to_string(), 502));
        }
    }
    let (host, port) = match addr.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("the port {port:?} is not a number from 1 to 65535"))?;
            (host, port)
        }
        None => (addr, 502),
    };
    if port == 0 {
        return Err("port 0 is not a meter's port".into());
    }
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(preset: Preset) -> MeterConfig {
        MeterConfig::new(
            "main",
            MeterRole::SiteTotal,
            Transport::Tcp("127.0.0.1:502".into()),
            preset,
        )
    }

    #[test]
    fn defaults_from_json() {
        let cfg: MeterConfig = serde_json::from_str(
            r#"{"id":"a","role":"feeder","transport":{"tcp":"10.0.0.2"},"preset":"em24"}"#,
        )
        .unwrap();
        assert_eq!(cfg.unit_id, 1);
        assert_eq!(cfg.poll_interval_ms, 1000);
        assert_eq!(cfg.timeout_ms, 500);
        assert_eq!(cfg.retries, 2);
        assert_eq!(cfg.stale_after_ms, 5000);
        assert!(cfg.registers.is_empty());
        cfg.validate().unwrap();
    }

    #[test]
    fn rtu_and_custom_from_json() {
        let cfg: MeterConfig = serde_json::from_str(
            r#"{"id":"b","role":"site_total",
                "transport":{"rtu":{"path":"/dev/ttyUSB0","parity":"even"}},
                "unit_id": 7, "preset":"custom",
                "registers":[{"quantity":"total_power_w","address":52,"kind":"i32",
                              "word_order":"low_first","scale":0.1,"function":"holding"}]}"#,
        )
        .unwrap();
        let Transport::Rtu(rtu) = &cfg.transport else {
            panic!("rtu expected")
        };
        assert_eq!(rtu.baud, 9600);
        assert_eq!(rtu.parity, Parity::Even);
        assert_eq!((rtu.stop_bits, rtu.data_bits), (1, 8));
        let r = &cfg.registers[0];
        assert_eq!(r.kind, ValueKind::I32);
        assert_eq!(r.word_order, WordOrder::LowFirst);
        assert_eq!(r.function, RegisterFunction::Holding);
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<MeterConfig>(
            r#"{"id":"a","role":"feeder","transport":{"tcp":"x:1"},"preset":"em24","poll_ms":5}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("poll_ms"), "{err}");
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let mut c = tcp(Preset::Sdm630);
        c.timeout_ms = 0;
        let e = c.validate_at(3).unwrap_err();
        assert!(e.starts_with("meters[3].timeout_ms = 0"), "{e}");
        assert!(e.contains("default is 500"), "{e}");

        let mut c = tcp(Preset::Sdm630);
        c.stale_after_ms = 100;
        let e = c.validate().unwrap_err();
        assert!(e.starts_with("meters[\"main\"].stale_after_ms"), "{e}");

        let mut c = tcp(Preset::Custom);
        let e = c.validate_at(0).unwrap_err();
        assert!(e.starts_with("meters[0].registers is empty"), "{e}");
        c.registers.push(RegisterSpec {
            quantity: Quantity::ImportEnergyKwh,
            address: 0x48,
            function: RegisterFunction::Input,
            kind: ValueKind::F32,
            word_order: WordOrder::HighFirst,
            scale: 1.0,
        });
        let e = c.validate_at(0).unwrap_err();
        assert!(e.contains("total_power_w"), "{e}");
        c.registers.push(RegisterSpec {
            quantity: Quantity::TotalPowerW,
            address: 0xFFFF,
            function: RegisterFunction::Input,
            kind: ValueKind::F32,
            word_order: WordOrder::HighFirst,
            scale: 1.0,
        });
        let e = c.validate_at(0).unwrap_err();
        assert!(e.starts_with("meters[0].registers[1].address"), "{e}");
        c.registers[1].address = 0x34;
        c.registers[1].scale = f64::NAN;
        let e = c.validate_at(0).unwrap_err();
        assert!(e.starts_with("meters[0].registers[1].scale"), "{e}");
        c.registers[1].scale = 1.0;
        c.validate_at(0).unwrap();

        let mut c = tcp(Preset::Sdm630);
        c.transport = Transport::Tcp("not a host:502".into());
        let e = c.validate_at(1).unwrap_err();
        assert!(e.starts_with("meters[1].transport.tcp"), "{e}");

        let mut c = tcp(Preset::Sunspec);
        c.transport = Transport::Rtu(RtuSettings {
            path: "/dev/ttyUSB0".into(),
            baud: 9600,
            parity: Parity::None,
            stop_bits: 3,
            data_bits: 8,
        });
        let e = c.validate_at(2).unwrap_err();
        assert!(e.starts_with("meters[2].transport.rtu.stop_bits"), "{e}");
    }

    #[test]
    fn duplicate_ids() {
        let a = tcp(Preset::Sdm630);
        let b = tcp(Preset::Em24);
        let e = validate_all(&[a, b]).unwrap_err();
        assert!(e.starts_with("meters[1].id"), "{e}");
    }

    #[test]
    fn tcp_targets() {
        assert_eq!(
            parse_tcp_target("127.0.0.1:1502").unwrap(),
            ("127.0.0.1".into(), 1502)
        );
        assert_eq!(
            parse_tcp_target("10.1.2.3").unwrap(),
            ("10.1.2.3".into(), 502)
        );
        assert_eq!(
            parse_tcp_target("meter-1.local:503").unwrap(),
            ("meter-1.local".into(), 503)
        );
        assert_eq!(parse_tcp_target("[::1]:502").unwrap(), ("::1".into(), 502));
        assert_eq!(parse_tcp_target("::1").unwrap(), ("::1".into(), 502));
        assert!(parse_tcp_target("").is_err());
        assert!(parse_tcp_target("host:99999").is_err());
        assert!(parse_tcp_target("host:0").is_err());
        assert!(parse_tcp_target(":502").is_err());
    }
}
