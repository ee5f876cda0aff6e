//! The site half of the proxy's configuration: power meters, the grid operator's signals, the
//! curtailment loop and the miners it may pause.
//!
//! ```toml
//! [[meters]]                      # see blgv_sensors::meter::MeterConfig
//! id = "site"
//! role = "site_total"
//! transport = { tcp = "10.0.0.5:502" }
//! preset = "sdm630"
//!
//! [grid.mqtt]                     # see blgv_sensors::grid::MqttConfig
//! host = "broker.grid.example"
//! site_id = "site1"
//!
//! [curtailment]
//! margin_kw = 2.0
//!
//! [[miners]]
//! worker = "acct.rack1-01"        # its Stratum worker (for the last resort)
//! firmware = "lux_os"
//! address = "10.0.1.21"
//! nominal_w = 3250
//! efficiency_j_per_th = 21.5
//! ```

use blgv_config::ConfigError;
use blgv_sensors::control::{FirmwareKind, MinerEndpoint, Secret, DEFAULT_TIMEOUT_MS};
use blgv_sensors::controller::ControllerConfig;
use blgv_sensors::curtailment::LoopConfig;
use blgv_sensors::grid::mqtt::GridError;
use blgv_sensors::grid::MqttConfig;
use blgv_sensors::meter::{MeterConfig, MeterRole};
use serde::Deserialize;
use std::time::Duration;

/// Where grid signals come from (OpenADR 3 will sit beside MQTT here).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSection {
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CurtailmentSection {
    /// Aim this far under the grid's limit (meter noise, miners ramping up).
    pub margin_kw: f64,
    /// Resume miners only when this far under `limit − margin`, so the site does not flap.
    pub hysteresis_kw: f64,
    /// Most power brought back per restore step after a signal.
    pub restore_step_kw: f64,
    /// Seconds between restore steps.
    pub restore_interval_secs: u64,
    /// How long paused miners take to show on the meter (boards ramping down plus the
    /// meter's poll period); more is shed only on readings taken after that.
    pub settle_ms: u64,
    /// How often the meter's verdict is checked (and more shed if still over).
    pub tick_ms: u64,
    /// How often a compliance report is published while a signal is in force.
    pub report_interval_secs: u64,
    /// Budget for one firmware command, fallback included.
    pub command_timeout_ms: u64,
    /// When a miner's firmware does not pause it (unreachable, refuses, cannot), close and
    /// refuse its Stratum sessions instead. The ASIC keeps drawing idle power, so this is a
    /// last resort and is logged as one.
    pub withhold_work_as_last_resort: bool,
    /// The `id` of the meter that measures the whole site; default: the meter with
    /// `role = "site_total"`.
    pub meter: Option<String>,
    /// Weight of the newest clean meter step in each miner's learned power (0 < w ≤ 1).
    pub learn_weight: f64,
    /// Clean meter steps before a miner's learned power (and J/TH) replaces `nominal_w` (and
    /// `efficiency_j_per_th`); 0 = learn and show, never use.
    pub learn_min_samples: u32,
}

impl Default for CurtailmentSection {
    fn default() -> Self {
        let c = ControllerConfig::default();
        let l = LoopConfig::default();
        CurtailmentSection {
            margin_kw: c.margin_kw,
            hysteresis_kw: c.hysteresis_kw,
            restore_step_kw: c.restore_step_kw,
            restore_interval_secs: c.restore_interval.as_secs(),
            settle_ms: c.settle.as_millis() as u64,
            tick_ms: 250,
            report_interval_secs: 5,
            command_timeout_ms: 5_000,
            withhold_work_as_last_resort: true,
            meter: None,
            learn_weight: l.learn_weight,
            learn_min_samples: l.learn_min_samples,
        }
    }
}

impl CurtailmentSection {
    pub fn loop_config(&self) -> LoopConfig {
        LoopConfig {
            controller: ControllerConfig {
                margin_kw: self.margin_kw,
                hysteresis_kw: self.hysteresis_kw,
                restore_step_kw: self.restore_step_kw,
                restore_interval: Duration::from_secs(self.restore_interval_secs),
                settle: Duration::from_millis(self.settle_ms),
            },
            tick: Duration::from_millis(self.tick_ms),
            report_interval: Duration::from_secs(self.report_interval_secs),
            command_timeout: Duration::from_millis(self.command_timeout_ms),
            learn_weight: self.learn_weight,
            learn_min_samples: self.learn_min_samples,
            hashrate: None,
        }
    }
}

/// One ASIC the curtailment loop may pause: its firmware API, its power and its rank.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteMiner {
    /// A name for logs and the API; default: `worker`, else `address`.
    #[serde(default)]
    pub id: Option<String>,
    /// The Stratum worker name it authorizes with; used to withhold its work as a last resort.
    /// Without it, its sessions are recognised by the IP of `address`.
    #[serde(default)]
    pub worker: Option<String>,
    /// `cgminer` (also bmminer), `lux_os`, `braiins_os`, `whatsminer` or `vnish`.
    pub firmware: FirmwareKind,
    /// The firmware API's `host` or `host:port` (default port per firmware).
    pub address: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Power drawn while hashing, in watts.
    pub nominal_w: f64,
    /// Power drawn while paused; default 2 % of `nominal_w`.
    #[serde(default)]
    pub idle_w: Option<f64>,
    /// Joules per terahash; the least efficient miners are shed first.
    pub efficiency_j_per_th: f64,
    /// Among equally efficient miners, higher priority keeps hashing longer.
    #[serde(default)]
    pub priority: i32,
    /// The lowest power target (watts) its firmware accepts. Set it to let the controller
    /// power-limit this miner instead of pausing it; absent: it is only ever paused. Not for
    /// `cgminer` (no power targets).
    #[serde(default)]
    pub min_power_w: Option<f64>,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl SiteMiner {
    pub fn id(&self) -> String {
        self.id
            .clone()
            .or_else(|| self.worker.clone())
            .unwrap_or_else(|| self.address.clone())
    }

    pub fn endpoint(&self) -> MinerEndpoint {
        let mut e = MinerEndpoint::new(self.firmware, self.address.clone())
            .with_timeout_ms(self.timeout_ms);
        e.username = self.username.clone();
        e.password = self.password.clone();
        e
    }

    pub fn idle_w(&self) -> f64 {
        self.idle_w.unwrap_or(self.nominal_w * 0.02)
    }
}

/// The site sections together, as checked at start.
pub fn validate(
    meters: &[MeterConfig],
    grid: &GridSection,
    curtailment: &CurtailmentSection,
    miners: &[SiteMiner],
) -> Result<(), ConfigError> {
    blgv_sensors::meter::validate_all(meters).map_err(|problem| {
        ConfigError::new(
            "meters",
            problem,
            "see the [[meters]] examples in deploy/config/",
        )
    })?;
    if let Some(mqtt) = &grid.mqtt {
        blgv_sensors::grid::mqtt::check_config(mqtt).map_err(|e| match e {
            GridError::Config { key, problem } => ConfigError::new(
                format!("grid.mqtt.{key}"),
                problem,
                "fix the grid operator's broker settings in [grid.mqtt]",
            ),
            other => ConfigError::new("grid.mqtt", other.to_string(), "see [grid.mqtt]"),
        })?;
    }
    let c = curtailment;
    for (key, value) in [
        ("curtailment.margin_kw", c.margin_kw),
        ("curtailment.hysteresis_kw", c.hysteresis_kw),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(ConfigError::new(
                key,
                format!("{value} is not a number ≥ 0"),
                "use kilowatts, e.g. 2.0",
            ));
        }
    }
    if !(c.restore_step_kw.is_finite() && c.restore_step_kw > 0.0) {
        return Err(ConfigError::new(
            "curtailment.restore_step_kw",
            format!("{} is not a positive number", c.restore_step_kw),
            "use kilowatts per step, e.g. 20.0",
        ));
    }
    if !(c.learn_weight.is_finite() && c.learn_weight > 0.0 && c.learn_weight <= 1.0) {
        return Err(ConfigError::new(
            "curtailment.learn_weight",
            format!("{} is not in (0, 1]", c.learn_weight),
            "use the weight of the newest sample, e.g. 0.3",
        ));
    }
    for (key, value) in [
        ("curtailment.tick_ms", c.tick_ms),
        ("curtailment.report_interval_secs", c.report_interval_secs),
        ("curtailment.command_timeout_ms", c.command_timeout_ms),
    ] {
        if value == 0 {
            return Err(ConfigError::new(key, "0", "use a positive number"));
        }
    }
    if let Some(id) = &c.meter {
        if !meters.iter().any(|m| &m.id == id) {
            return Err(ConfigError::new(
                "curtailment.meter",
                format!("no meter has id {id:?}"),
                "name the id of one of the [[meters]]",
            ));
        }
    }
    if !miners.is_empty() && site_meter(meters, c).is_none() {
        return Err(ConfigError::new(
            "curtailment.meter",
            "miners are listed for curtailment but no meter measures the whole site",
            "add a [[meters]] entry with role = \"site_total\" (or set curtailment.meter to a meter's id)",
        ));
    }
    let mut seen: Vec<String> = Vec::new();
    for (i, m) in miners.iter().enumerate() {
        let key = |field: &str| format!("miners[{i}].{field}");
        m.endpoint()
            .validate()
            .map_err(|problem| ConfigError::new(key("address"), problem, "see deploy/config/"))?;
        if !(m.nominal_w.is_finite() && m.nominal_w > 0.0) {
            return Err(ConfigError::new(
                key("nominal_w"),
                format!("{} is not a positive number of watts", m.nominal_w),
                "set the miner's power while hashing, e.g. 3250",
            ));
        }
        if let Some(idle) = m.idle_w {
            if !(idle.is_finite() && idle >= 0.0 && idle <= m.nominal_w) {
                return Err(ConfigError::new(
                    key("idle_w"),
                    format!("{idle} is not between 0 and nominal_w ({})", m.nominal_w),
                    "set the miner's power while paused, e.g. 60",
                ));
            }
        }
        if !(m.efficiency_j_per_th.is_finite() && m.efficiency_j_per_th > 0.0) {
            return Err(ConfigError::new(
                key("efficiency_j_per_th"),
                format!("{} is not a positive number", m.efficiency_j_per_th),
                "set the miner's joules per terahash, e.g. 21.5",
            ));
        }
        if let Some(min) = m.min_power_w {
            if m.firmware == FirmwareKind::Cgminer {
                return Err(ConfigError::new(
                    key("min_power_w"),
                    "cgminer/bmminer firmware cannot take a power target",
                    "remove min_power_w from this miner (it will be paused instead)",
                ));
            }
            if !(min.is_finite() && min >= m.idle_w() && min < m.nominal_w) {
                return Err(ConfigError::new(
                    key("min_power_w"),
                    format!(
                        "{min} is not between idle_w ({}) and nominal_w ({})",
                        m.idle_w(),
                        m.nominal_w
                    ),
                    "set the lowest power target the firmware accepts, e.g. 1500 (or remove it)",
                ));
            }
        }
        let id = m.id();
        if let Some(j) = seen.iter().position(|s| *s == id) {
            return Err(ConfigError::new(
                key("id"),
                format!("{id:?} is already used by miners[{j}]"),
                "give every miner its own id (or worker)",
            ));
        }
        seen.push(id);
    }
    Ok(())
}

/// The meter whose reading is the site's power.
pub fn site_meter<'a>(
    meters: &'a [MeterConfig],
    curtailment: &CurtailmentSection,
) -> Option<&'a MeterConfig> {
    match &curtailment.meter {
        Some(id) => meters.iter().find(|m| &m.id == id),
        None => meters.iter().find(|m| m.role == MeterRole::SiteTotal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blgv_sensors::meter::{Preset, Transport};

    fn site_meter() -> Vec<MeterConfig> {
        vec![MeterConfig::new(
            "site",
            MeterRole::SiteTotal,
            Transport::Tcp("127.0.0.1:502".into()),
            Preset::Sdm630,
        )]
    }

    fn miner(firmware: &str, extra: &str) -> SiteMiner {
        toml::from_str(&format!(
            "firmware = {firmware:?}\naddress = \"10.0.0.2\"\nnominal_w = 3250\n\
             efficiency_j_per_th = 21.5\n{extra}"
        ))
        .unwrap()
    }

    fn check(c: &CurtailmentSection, miners: &[SiteMiner]) -> Result<(), ConfigError> {
        validate(&site_meter(), &GridSection::default(), c, miners)
    }

    #[test]
    fn min_power_w_is_checked_against_the_firmware_and_the_miner_powers() {
        let c = CurtailmentSection::default();
        assert!(check(&c, &[miner("braiins_os", "min_power_w = 1500")]).is_ok());
        assert!(check(&c, &[miner("lux_os", "")]).is_ok());
        let e = check(&c, &[miner("cgminer", "min_power_w = 1500")]).unwrap_err();
        assert_eq!(e.key, "miners[0].min_power_w");
        assert!(e.fix.contains("remove min_power_w"), "{e:?}");
        for bad in ["3250", "4000", "10", "-1", "nan"] {
            let e = check(&c, &[miner("braiins_os", &format!("min_power_w = {bad}"))]).unwrap_err();
            assert_eq!(e.key, "miners[0].min_power_w", "{bad}");
        }
    }

    /// Every numeric `[curtailment]` key refuses what makes no sense, naming itself.
    #[test]
    fn each_curtailment_key_names_itself_when_bad() {
        type Edit = fn(&mut CurtailmentSection);
        let cases: [(&str, Edit); 10] = [
            ("curtailment.margin_kw", |c| c.margin_kw = -1.0),
            ("curtailment.margin_kw", |c| c.margin_kw = f64::NAN),
            ("curtailment.hysteresis_kw", |c| c.hysteresis_kw = -0.1),
            ("curtailment.hysteresis_kw", |c| {
                c.hysteresis_kw = f64::INFINITY
            }),
            ("curtailment.restore_step_kw", |c| c.restore_step_kw = 0.0),
            ("curtailment.restore_step_kw", |c| c.restore_step_kw = -5.0),
            ("curtailment.tick_ms", |c| c.tick_ms = 0),
            ("curtailment.report_interval_secs", |c| {
                c.report_interval_secs = 0
            }),
            ("curtailment.command_timeout_ms", |c| {
                c.command_timeout_ms = 0
            }),
            ("curtailment.meter", |c| c.meter = Some("nope".into())),
        ];
        for (key, edit) in cases {
            let mut c = CurtailmentSection::default();
            edit(&mut c);
            let e = check(&c, &[]).unwrap_err();
            assert_eq!(e.key, key, "{e:?}");
            assert!(!e.fix.is_empty(), "{key}: the error says how to fix it");
        }
        assert!(check(&CurtailmentSection::default(), &[]).is_ok());
    }

    /// Every `[[miners]]` key refuses what makes no sense, naming the miner and the key.
    #[test]
    fn each_miner_key_names_itself_when_bad() {
        let c = CurtailmentSection::default();
        let cases = [
            (
                "miners[0].nominal_w",
                miner("cgminer", "").with(|m| m.nominal_w = 0.0),
            ),
            (
                "miners[0].nominal_w",
                miner("cgminer", "").with(|m| m.nominal_w = f64::NAN),
            ),
            ("miners[0].idle_w", miner("cgminer", "idle_w = -1")),
            ("miners[0].idle_w", miner("cgminer", "idle_w = 4000")),
            (
                "miners[0].efficiency_j_per_th",
                miner("cgminer", "").with(|m| m.efficiency_j_per_th = 0.0),
            ),
            (
                "miners[0].address",
                miner("cgminer", "").with(|m| m.address = String::new()),
            ),
        ];
        for (key, m) in cases {
            let e = check(&c, &[m]).unwrap_err();
            assert_eq!(e.key, key, "{e:?}");
        }
        // Two entries for one machine.
        let e = check(
            &c,
            &[
                miner("cgminer", "id = \"r1\""),
                miner("lux_os", "id = \"r1\""),
            ],
        )
        .unwrap_err();
        assert_eq!(e.key, "miners[1].id");
        assert!(e.problem.contains("miners[0]"), "{e:?}");
        // Miners to curtail need a meter that sees the whole site.
        let e = validate(&[], &GridSection::default(), &c, &[miner("cgminer", "")]).unwrap_err();
        assert_eq!(e.key, "curtailment.meter");
        assert!(e.fix.contains("site_total"), "{e:?}");
    }

    trait With: Sized {
        fn with(self, f: impl FnOnce(&mut Self)) -> Self;
    }

    impl With for SiteMiner {
        fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
            f(&mut self);
            self
        }
    }

    #[test]
    fn learn_weight_must_be_a_weight() {
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            let c = CurtailmentSection {
                learn_weight: bad,
                ..Default::default()
            };
            assert_eq!(
                check(&c, &[]).unwrap_err().key,
                "curtailment.learn_weight",
                "{bad}"
            );
        }
        let c = CurtailmentSection {
            learn_weight: 1.0,
            learn_min_samples: 0,
            ..Default::default()
        };
        assert!(check(&c, &[]).is_ok());
    }
}
