//! The proxy's `[energy]` section: what powers the site, which meter measures each feed, and
//! where the reports go.
//!
//! ```toml
//! [energy]
//! site_id = "site1"                  # the id the pool knows this site by ([[energy.sites]] there)
//! report_interval_secs = 300         # production: 300; tests go down to 1
//!
//! [[energy.sources]]
//! kind = "solar"                     # solar, wind, hydro, geothermal, biomass, nuclear, gas, coal, grid
//! meter = "pv-inverter"              # a [[meters]] id
//!
//! [[energy.sources]]
//! kind = "grid"
//! meter = "grid-in"
//! region = "DE"                      # the pool's [energy.grid_regions] has its factor
//! # g_co2_per_kwh = 350.0            # optional: a fixed factor for this source (e.g. a PPA)
//!
//! [energy.report]
//! url = "https://pool.example.com"   # the coordinator's base URL (http:// only for loopback)
//! token = "…"                        # this site's token at the pool
//! ```

use super::report::SourceKind;
use blgv_config::ConfigError;
use blgv_sensors::control::Secret;
use blgv_sensors::meter::MeterConfig;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergySection {
    /// The id the pool knows this site by.
    pub site_id: String,
    /// Length of one report's interval; intervals are aligned to multiples of it (unix time).
    /// Production sites use 300; values down to 1 exist for tests.
    #[serde(default = "default_interval")]
    pub report_interval_secs: u64,
    /// SQLite file of the store-and-forward outbox; default: next to `ledger.path`, named
    /// `<ledger file stem>.energy-outbox.db`.
    #[serde(default)]
    pub outbox_path: Option<PathBuf>,
    /// The site's energy sources, one meter each.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    pub report: ReportTarget,
}

fn default_interval() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `solar`, `wind`, `hydro`, `geothermal`, `biomass`, `nuclear`, `gas`, `coal` or `grid`.
    pub kind: String,
    /// The `id` of the `[[meters]]` entry that measures this feed.
    pub meter: String,
    /// For `grid`: the grid region (the pool holds its factor).
    #[serde(default)]
    pub region: Option<String>,
    /// A fixed factor for this source in gCO₂e/kWh (a PPA, a measured generator); without it
    /// the pool uses the IPCC AR5 median for the kind, or the grid region's factor.
    #[serde(default)]
    pub g_co2_per_kwh: Option<f64>,
}

impl SourceConfig {
    /// The kind (validated by [`validate`]).
    pub fn source_kind(&self) -> SourceKind {
        SourceKind::parse(&self.kind).unwrap_or(SourceKind::Grid)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportTarget {
    /// The coordinator's base URL; reports go to `{url}/api/energy/report`.
    pub url: String,
    /// This site's bearer token at the coordinator.
    pub token: Secret,
    /// Budget for one report's request (connect, send, answer).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First retry delay after a failed send; doubles up to `retry_max_ms` (with jitter).
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_retry_initial_ms() -> u64 {
    1_000
}
fn default_retry_max_ms() -> u64 {
    300_000
}

impl ReportTarget {
    pub fn endpoint(&self) -> String {
        format!("{}/api/energy/report", self.url.trim_end_matches('/'))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl EnergySection {
    /// Where the outbox lives: `outbox_path`, else next to the ledger.
    pub fn outbox_path(&self, ledger: &Path) -> PathBuf {
        if let Some(p) = &self.outbox_path {
            return p.clone();
        }
        let stem = ledger
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "blgv-proxy".into());
        ledger.with_file_name(format!("{stem}.energy-outbox.db"))
    }
}

// The pool checks reports with the same rules (blgv-energy): a config that passes here
// yields reports the pool accepts.
pub use blgv_energy::valid_site_id;
use blgv_energy::{
    MAX_FACTOR_G_PER_KWH as MAX_FACTOR, MAX_METER_CHARS, MAX_REGION_CHARS, MAX_SOURCES,
};

/// Check the `[energy]` section against the meters it names.
pub fn validate(energy: &Option<EnergySection>, meters: &[MeterConfig]) -> Result<(), ConfigError> {
    let Some(e) = energy else {
        return Ok(());
    };
    if !valid_site_id(&e.site_id) {
        return Err(ConfigError::new(
            "energy.site_id",
            format!("{:?} is not a site id", e.site_id),
            "use 1 to 64 letters, digits, '-', '_' or '.', as listed in the pool's [[energy.sites]]",
        ));
    }
    if !(1..=86_400).contains(&e.report_interval_secs) {
        return Err(ConfigError::new(
            "energy.report_interval_secs",
            format!("{}", e.report_interval_secs),
            "use 1 to 86400 seconds (300 in production)",
        ));
    }
    if e.outbox_path
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        return Err(ConfigError::new(
            "energy.outbox_path",
            "empty",
            "set a writable file path, or leave it out to keep the outbox next to ledger.path",
        ));
    }
    if e.sources.is_empty() {
        return Err(ConfigError::new(
            "energy.sources",
            "no source listed",
            "add an [[energy.sources]] table with kind and meter for each feed of the site",
        ));
    }
    if e.sources.len() > MAX_SOURCES {
        return Err(ConfigError::new(
            "energy.sources",
            format!("{} sources", e.sources.len()),
            format!("list at most {MAX_SOURCES} sources (the pool takes at most {MAX_SOURCES} per report)"),
        ));
    }
    for (i, s) in e.sources.iter().enumerate() {
        let key = |field: &str| format!("energy.sources[{i}].{field}");
        let Some(kind) = SourceKind::parse(&s.kind) else {
            return Err(ConfigError::new(
                key("kind"),
                format!("unknown source kind {:?}", s.kind),
                format!(
                    "use one of: {}",
                    SourceKind::ALL.map(SourceKind::as_str).join(", ")
                ),
            ));
        };
        if !meters.iter().any(|m| m.id == s.meter) {
            return Err(ConfigError::new(
                key("meter"),
                format!("no [[meters]] entry has id {:?}", s.meter),
                "name the id of the meter that measures this feed",
            ));
        }
        if s.meter.len() > MAX_METER_CHARS || s.meter.chars().any(char::is_control) {
            return Err(ConfigError::new(
                key("meter"),
                format!(
                    "{:?} is longer than {MAX_METER_CHARS} bytes or has control characters",
                    s.meter
                ),
                "the pool refuses such a meter id in a report: give the meter a short printable id",
            ));
        }
        if let Some(j) = e.sources[..i].iter().position(|o| o.meter == s.meter) {
            return Err(ConfigError::new(
                key("meter"),
                format!("meter {:?} already measures energy.sources[{j}]", s.meter),
                "give every source its own meter: one meter's energy cannot count for two sources",
            ));
        }
        match (kind, &s.region) {
            (SourceKind::Grid, None) => {
                return Err(ConfigError::new(
                    key("region"),
                    "a grid source needs its region",
                    "set region to a name the pool lists in [energy.grid_regions], e.g. \"DE\"",
                ))
            }
            (SourceKind::Grid, Some(r))
                if r.trim().is_empty()
                    || r.len() > MAX_REGION_CHARS
                    || r.chars().any(char::is_control) =>
            {
                return Err(ConfigError::new(
                    key("region"),
                    format!("{r:?} is empty, longer than {MAX_REGION_CHARS} bytes or has control characters"),
                    "use the region's short name, e.g. \"DE\" or \"US-TX-ERCOT\"",
                ))
            }
            (SourceKind::Grid, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(ConfigError::new(
                    key("region"),
                    format!("a region is only for kind = \"grid\", not {:?}", s.kind),
                    "remove region (or set g_co2_per_kwh for a fixed factor)",
                ))
            }
        }
        if let Some(g) = s.g_co2_per_kwh {
            if !(g.is_finite() && (0.0..=MAX_FACTOR).contains(&g)) {
                return Err(ConfigError::new(
                    key("g_co2_per_kwh"),
                    format!("{g} is not a factor from 0 to {MAX_FACTOR} gCO2e/kWh"),
                    "use grams of CO2-equivalent per kWh, e.g. 350.0, or leave it out",
                ));
            }
        }
    }
    let r = &e.report;
    check_url(&r.url)?;
    let token = r.token.expose();
    if token.trim().len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(
            "energy.report.token",
            "shorter than 16 characters or contains spaces",
            "use the token the pool lists for this site in [[energy.sites]]",
        ));
    }
    if r.timeout_ms == 0 {
        return Err(ConfigError::new(
            "energy.report.timeout_ms",
            "0",
            "use a positive number of milliseconds, e.g. 10000",
        ));
    }
    if r.retry_initial_ms == 0 || r.retry_initial_ms > r.retry_max_ms {
        return Err(ConfigError::new(
            "energy.report.retry_initial_ms",
            "must be > 0 and ≤ energy.report.retry_max_ms",
            "e.g. retry_initial_ms = 1000, retry_max_ms = 300000",
        ));
    }
    Ok(())
}

/// `https://host[:port][/path]`, or `http://` to a loopback address only: the token must not
/// cross a network in clear text.
fn check_url(url: &str) -> Result<(), ConfigError> {
    let key = "energy.report.url";
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        ConfigError::new(
            key,
            format!("{url:?} is not a URL ({e})"),
            "write the coordinator's base URL, e.g. \"https://pool.example.com\"",
        )
    })?;
    let host = parsed.host_str().unwrap_or("");
    if host.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("{url:?} has no host"),
            "write the coordinator's base URL, e.g. \"https://pool.example.com\"",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ConfigError::new(
            key,
            format!("{url:?} has a query or fragment"),
            "give the base URL only; the proxy appends /api/energy/report",
        ));
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = host.trim_matches(['[', ']']);
            let loopback =
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(ConfigError::new(
                    key,
                    format!("{url:?} is plain http to another machine: the site's token would travel in clear text"),
                    "use https:// (plain http is only for a coordinator on this machine, 127.0.0.1)",
                ))
            }
        }
        other => Err(ConfigError::new(
            key,
            format!("scheme {other:?} is not http(s)"),
            "write it as \"https://pool.example.com\"",
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, LoadError};
    use std::path::Path;

    const BASE: &str = r#"
[[upstreams]]
url = "127.0.0.1:3333"
user = "acct.site"
[[meters]]
id = "pv"
role = "feeder"
transport = { tcp = "127.0.0.1:5020" }
preset = "sdm630"
[[meters]]
id = "grid-in"
role = "site_total"
transport = { tcp = "127.0.0.1:5021" }
preset = "sdm630"
"#;

    const ENERGY: &str = r#"
[energy]
site_id = "site-a"
[[energy.sources]]
kind = "solar"
meter = "pv"
[[energy.sources]]
kind = "grid"
meter = "grid-in"
region = "DE"
[energy.report]
url = "https://pool.example.com"
token = "site-a-token-0123456789"
"#;

    fn load(text: &str) -> Result<Config, LoadError> {
        Config::from_toml_with_env(text, Path::new("t.toml"), std::iter::empty())
    }

    #[test]
    fn a_full_section_with_defaults() {
        let c = load(&format!("{BASE}{ENERGY}")).unwrap();
        let e = c.energy.unwrap();
        assert_eq!(e.report_interval_secs, 300);
        assert_eq!(
            e.report.endpoint(),
            "https://pool.example.com/api/energy/report"
        );
        assert_eq!(
            e.outbox_path(Path::new("/var/lib/blgv-proxy/ledger.db")),
            Path::new("/var/lib/blgv-proxy/ledger.energy-outbox.db")
        );
        assert!(!format!("{:?}", e.report).contains("0123456789"));
        // No [energy]: no reports.
        assert!(load(BASE).unwrap().energy.is_none());
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let cases = [
            (ENERGY.replace("site-a\"", "site a\""), "`energy.site_id`"),
            (
                ENERGY.replace(
                    "site_id = \"site-a\"",
                    "site_id = \"site-a\"\nreport_interval_secs = 0",
                ),
                "`energy.report_interval_secs`",
            ),
            (
                ENERGY.replace("\"solar\"", "\"diesel\""),
                "`energy.sources[0].kind`",
            ),
            (
                ENERGY.replace("\"pv\"", "\"pv2\""),
                "`energy.sources[0].meter`",
            ),
            (
                ENERGY.replace("\"grid-in\"\nregion", "\"pv\"\nregion"),
                "`energy.sources[1].meter`",
            ),
            (
                ENERGY.replace("region = \"DE\"\n", ""),
                "`energy.sources[1].region`",
            ),
            (
                ENERGY.replace("meter = \"pv\"", "meter = \"pv\"\nregion = \"DE\""),
                "`energy.sources[0].region`",
            ),
            (
                ENERGY.replace("meter = \"pv\"", "meter = \"pv\"\ng_co2_per_kwh = -3.0"),
                "`energy.sources[0].g_co2_per_kwh`",
            ),
            (
                ENERGY.replace("https://pool.example.com", "http://pool.example.com"),
                "`energy.report.url`",
            ),
            (
                ENERGY.replace("https://pool.example.com", "pool"),
                "`energy.report.url`",
            ),
            (
                ENERGY.replace("site-a-token-0123456789", "short"),
                "`energy.report.token`",
            ),
            (
                format!("{ENERGY}retry_initial_ms = 5000\nretry_max_ms = 10\n"),
                "`energy.report.retry_initial_ms`",
            ),
        ];
        for (energy, key) in cases {
            let e = load(&format!("{BASE}{energy}")).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("fix:"), "{key}: {e}");
        }
        // Sources need at least one entry.
        let none = "[energy]\nsite_id = \"a\"\n[energy.report]\nurl = \"https://p\"\ntoken = \"0123456789abcdefg\"\n";
        let e = load(&format!("{BASE}{none}")).unwrap_err().to_string();
        assert!(e.contains("`energy.sources`"), "{e}");
        // Plain http is fine to this machine (tests, a local coordinator).
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:9/",
        ] {
            load(&format!(
                "{BASE}{}",
                ENERGY.replace("https://pool.example.com", url)
            ))
            .unwrap();
        }
    }
}
