//! `blgv-proxy` configuration: TOML, deserialized into typed structs, validated at start.
//!
//! Loading and environment overrides (`BLGV_PROXY__LISTEN=0.0.0.0:3334`,
//! `BLGV_UPSTREAMS__0__USER=acct.site2`) come from `blgv-config`; this module holds the keys, their
//! defaults and the checks, each error naming the key and the fix.

pub use crate::site_config::{CurtailmentSection, GridSection, SiteMiner};
use blgv_config::Validate;
use blgv_sensors::meter::MeterConfig;
use blgv_stratum::Difficulty;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub proxy: ProxySection,
    /// Ordered upstream pools: the first reachable one is used; the proxy returns to a
    /// higher-priority pool as soon as it answers again.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default)]
    pub failover: FailoverConfig,
    #[serde(default)]
    pub vardiff: VardiffConfig,
    #[serde(default)]
    pub version_rolling: VersionRollingConfig,
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// Power meters (Modbus TCP/RTU); see `site_config`.
    #[serde(default)]
    pub meters: Vec<MeterConfig>,
    /// Where the grid operator's curtailment signals come from.
    #[serde(default)]
    pub grid: GridSection,
    #[serde(default)]
    pub curtailment: CurtailmentSection,
    /// The ASICs curtailment may pause, with their firmware APIs.
    #[serde(default)]
    pub miners: Vec<SiteMiner>,
    /// The operator's HTTP listener: status API, metrics, dashboard.
    #[serde(default)]
    pub api: ApiConfig,
    /// Energy reports to the pool (sources, meters, where to send); see `energy`.
    #[serde(default)]
    pub energy: Option<crate::energy::EnergySection>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub enabled: bool,
    /// Where the status API, `/metrics` and the dashboard listen. Loopback by default: expose
    /// it on the LAN deliberately.
    pub listen: SocketAddr,
    /// Bearer token for the POST actions (pause/resume a miner, switch pool); without one they
    /// are refused.
    pub admin_token: Option<String>,
    /// How often the dashboard's live feed sends an update.
    pub update_interval_ms: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            listen: "127.0.0.1:8081".parse().expect("valid literal"),
            admin_token: None,
            update_interval_ms: 2000,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    // The token never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("update_interval_ms", &self.update_interval_ms)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// Where ASICs connect.
    pub listen: SocketAddr,
    /// Longest accepted Stratum line in bytes; longer ones close the connection.
    pub max_line_length: usize,
    /// How far past the job's ntime (plus the job's age) a miner may roll ntime.
    pub ntime_max_ahead_secs: u32,
    /// Cap on miners per upstream connection; 0 = as many as the extranonce space allows.
    pub max_miners_per_upstream: u32,
    /// How long a new miner waits for an upstream connection before its subscribe is refused.
    pub subscribe_wait_ms: u64,
    /// Miner connections held at most; over it, a new connection is closed at once.
    pub max_connections: usize,
    /// Connections one source IP may hold; 0 = no per-IP cap. Generous: a NATed farm or the
    /// load harness puts thousands of miners behind one address.
    pub max_connections_per_ip: usize,
    /// A connection that has not subscribed and authorized within this is closed (slowloris).
    /// Must be longer than `subscribe_wait_ms`.
    pub handshake_timeout_ms: u64,
    /// A line that has started must end (newline) within this, or the connection is closed.
    pub partial_line_timeout_ms: u64,
    /// Sustained messages per second one connection may send; over it (after `message_burst`)
    /// the miner gets an error and the connection is closed.
    pub max_messages_per_sec: u32,
    /// Messages a connection may send at once above the rate.
    pub message_burst: u32,
    /// Bytes the proxy holds for a miner whose socket is full; more, and the miner is dropped.
    pub max_send_queue_bytes: usize,
    /// A write to a miner that makes no progress for this long drops the miner.
    pub write_stall_timeout_ms: u64,
    /// Threads that run the proxy's tasks (miners, upstreams, API). 0: one work-stealing worker
    /// per CPU core; 1: one event loop (less CPU per share, longer tail on a busy box); N: N
    /// work-stealing workers. See [`crate::runtime`] for the measured trade.
    pub threads: usize,
}

impl ProxySection {
    pub fn limits(&self) -> blgv_stratum::limits::LimitSettings {
        blgv_stratum::limits::LimitSettings {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            handshake_timeout_ms: self.handshake_timeout_ms,
            partial_line_timeout_ms: self.partial_line_timeout_ms,
            max_messages_per_sec: self.max_messages_per_sec,
            message_burst: self.message_burst,
            max_send_queue_bytes: self.max_send_queue_bytes,
            write_stall_timeout_ms: self.write_stall_timeout_ms,
        }
    }
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            listen: "0.0.0.0:3333".parse().expect("valid literal"),
            max_line_length: blgv_stratum::codec::DEFAULT_MAX_LINE_LENGTH,
            ntime_max_ahead_secs: 600,
            max_miners_per_upstream: 0,
            subscribe_wait_ms: 10_000,
            max_connections: 100_000,
            max_connections_per_ip: 20_000,
            handshake_timeout_ms: 60_000,
            partial_line_timeout_ms: 30_000,
            max_messages_per_sec: 500,
            message_burst: 1_000,
            max_send_queue_bytes: 65_536,
            write_stall_timeout_ms: 10_000,
            threads: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port`, optionally prefixed `stratum+tcp://`.
    pub url: String,
    /// The pool account (worker) the proxy authorizes and submits as.
    pub user: String,
    #[serde(default = "default_password")]
    pub password: String,
    /// A label for logs; defaults to the url.
    #[serde(default)]
    pub name: Option<String>,
}

fn default_password() -> String {
    "x".to_string()
}

impl UpstreamConfig {
    /// The `host:port` to dial.
    pub fn address(&self) -> &str {
        self.url
            .strip_prefix("stratum+tcp://")
            .unwrap_or(&self.url)
            .trim_end_matches('/')
    }

    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or_else(|| self.address())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverConfig {
    pub connect_timeout_ms: u64,
    /// Time allowed for configure/subscribe/authorize after the TCP connect.
    pub handshake_timeout_ms: u64,
    /// First retry delay after every pool failed; doubles up to `retry_max_ms`, with jitter.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// While on a backup pool, how often to check whether a higher-priority pool is back.
    pub failback_probe_ms: u64,
    /// A forwarded share unanswered this long means the pool went silent (a black-holed
    /// route, a hung pool): the connection is dropped and the proxy fails over.
    pub answer_timeout_ms: u64,
    /// Nothing at all from the pool for this long (no job, no answer) does the same; pools
    /// send a fresh job every 30-60 s. 0 = off.
    pub silence_timeout_ms: u64,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            connect_timeout_ms: 5_000,
            handshake_timeout_ms: 10_000,
            retry_initial_ms: 250,
            retry_max_ms: 30_000,
            failback_probe_ms: 30_000,
            answer_timeout_ms: 15_000,
            silence_timeout_ms: 300_000,
        }
    }
}

impl FailoverConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    pub fn answer_timeout(&self) -> Duration {
        Duration::from_millis(self.answer_timeout_ms)
    }
    pub fn silence_timeout(&self) -> Option<Duration> {
        (self.silence_timeout_ms > 0).then(|| Duration::from_millis(self.silence_timeout_ms))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VardiffConfig {
    /// Difficulty a new miner starts at (before vardiff or suggest_difficulty).
    pub initial: f64,
    /// Lowest difficulty sent. Below 1 only for regtest, tests and benchmarks: real firmware
    /// needs integers, so keep this ≥ 1 on a real site.
    pub min: f64,
    /// Highest difficulty sent (also never above the upstream's difficulty, so no upstream-valid
    /// work is hidden).
    pub max: f64,
    pub target_shares_per_minute: f64,
    /// How often a miner's rate is re-evaluated.
    pub retarget_secs: u64,
}

impl Default for VardiffConfig {
    fn default() -> Self {
        VardiffConfig {
            initial: 1024.0,
            min: 64.0,
            max: 4_194_304.0,
            target_shares_per_minute: 12.0,
            retarget_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VersionRollingConfig {
    pub enabled: bool,
    /// The bits the proxy asks the upstream for (hex); miners get (upstream grant ∩ their ask).
    pub mask: String,
}

impl Default for VersionRollingConfig {
    fn default() -> Self {
        VersionRollingConfig {
            enabled: true,
            mask: "1fffe000".into(),
        }
    }
}

impl VersionRollingConfig {
    /// The mask as a number (validated by [`Config::validate`]).
    pub fn mask_bits(&self) -> u32 {
        if self.enabled {
            u32::from_str_radix(&self.mask, 16).unwrap_or(0)
        } else {
            0
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// SQLite file for per-worker, per-minute counters.
    pub path: PathBuf,
    /// Counters are committed in one transaction per interval: a crash loses at most this much.
    pub flush_interval_ms: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            path: PathBuf::from("blgv-proxy.db"),
            flush_interval_ms: 1_000,
        }
    }
}

pub use blgv_config::{ConfigError, LoadError};

impl Config {
    /// Read, apply `BLGV_…` environment overrides, deserialize and validate.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        blgv_config::load(path)
    }

    pub fn from_toml_with_env(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, LoadError> {
        blgv_config::from_toml_with_env(text, path, env)
    }

    /// Check everything serde cannot (see [`Validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        Validate::validate(self)
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.upstreams.is_empty() {
            return Err(ConfigError::new(
                "upstreams",
                "no upstream pool configured",
                "add at least one [[upstreams]] table with url and user",
            ));
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            let addr = u.address();
            let valid = addr
                .rsplit_once(':')
                .map(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                .unwrap_or(false);
            if !valid {
                return Err(ConfigError::new(
                    format!("upstreams[{i}].url"),
                    format!("{:?} is not host:port", u.url),
                    "write it as \"stratum+tcp://pool.example.com:3333\" or \"pool.example.com:3333\"",
                ));
            }
            if u.user.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("upstreams[{i}].user"),
                    "empty",
                    "set the pool account (worker) name the pool expects",
                ));
            }
        }
        let v = &self.vardiff;
        for (key, value) in [
            ("vardiff.initial", v.initial),
            ("vardiff.min", v.min),
            ("vardiff.max", v.max),
            (
                "vardiff.target_shares_per_minute",
                v.target_shares_per_minute,
            ),
        ] {
            if Difficulty::new(value).is_err() {
                return Err(ConfigError::new(
                    key,
                    format!("{value} is not a positive number"),
                    "use a number greater than 0",
                ));
            }
        }
        if v.min > v.max {
            return Err(ConfigError::new(
                "vardiff.min",
                format!("min {} is above max {}", v.min, v.max),
                "make vardiff.min ≤ vardiff.max",
            ));
        }
        if v.initial < v.min || v.initial > v.max {
            return Err(ConfigError::new(
                "vardiff.initial",
                format!("{} is outside [min {}, max {}]", v.initial, v.min, v.max),
                "pick an initial difficulty between vardiff.min and vardiff.max",
            ));
        }
        if v.retarget_secs == 0 {
            return Err(ConfigError::new(
                "vardiff.retarget_secs",
                "0",
                "use at least 1 (seconds between difficulty re-evaluations)",
            ));
        }
        if u32::from_str_radix(&self.version_rolling.mask, 16).is_err()
            || self.version_rolling.mask.len() > 8
        {
            return Err(ConfigError::new(
                "version_rolling.mask",
                format!("{:?} is not a 32-bit hex mask", self.version_rolling.mask),
                "write 8 hex digits, e.g. \"1fffe000\" (BIP320 general-purpose bits)",
            ));
        }
        if self.proxy.max_line_length < 1024 {
            return Err(ConfigError::new(
                "proxy.max_line_length",
                format!(
                    "{} bytes cannot hold a mining.notify",
                    self.proxy.max_line_length
                ),
                "use at least 1024 (default 65536)",
            ));
        }
        if let Err((key, problem, fix)) = self.proxy.limits().check() {
            return Err(ConfigError::new(format!("proxy.{key}"), problem, fix));
        }
        if self.proxy.threads > crate::runtime::MAX_THREADS {
            return Err(ConfigError::new(
                "proxy.threads",
                format!(
                    "{} is more threads than any box this runs on has cores",
                    self.proxy.threads
                ),
                format!(
                    "use 0 (one per CPU core, the default), 1 (one event loop) or at most {}",
                    crate::runtime::MAX_THREADS
                ),
            ));
        }
        if self.proxy.handshake_timeout_ms <= self.proxy.subscribe_wait_ms {
            return Err(ConfigError::new(
                "proxy.handshake_timeout_ms",
                format!(
                    "{} ms is not longer than proxy.subscribe_wait_ms ({} ms): a miner waiting for an upstream would be cut",
                    self.proxy.handshake_timeout_ms, self.proxy.subscribe_wait_ms
                ),
                "make it longer than subscribe_wait_ms (default 60000 against 10000)",
            ));
        }
        let f = &self.failover;
        if f.retry_initial_ms == 0 || f.retry_initial_ms > f.retry_max_ms {
            return Err(ConfigError::new(
                "failover.retry_initial_ms",
                "must be > 0 and ≤ failover.retry_max_ms",
                "e.g. retry_initial_ms = 250, retry_max_ms = 30000",
            ));
        }
        for (key, value) in [
            ("failover.connect_timeout_ms", f.connect_timeout_ms),
            ("failover.handshake_timeout_ms", f.handshake_timeout_ms),
            ("failover.failback_probe_ms", f.failback_probe_ms),
            ("failover.answer_timeout_ms", f.answer_timeout_ms),
            ("ledger.flush_interval_ms", self.ledger.flush_interval_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::new(
                    key,
                    "0",
                    "use a positive number of milliseconds",
                ));
            }
        }
        if self.ledger.path.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "ledger.path",
                "empty",
                "set a writable file path, e.g. \"/var/lib/blgv-proxy/ledger.db\"",
            ));
        }
        if let Some(t) = &self.api.admin_token {
            if t.len() < 16 {
                return Err(ConfigError::new(
                    "api.admin_token",
                    "shorter than 16 characters",
                    "use a long random token, e.g. the output of `openssl rand -hex 24`",
                ));
            }
        }
        if self.api.update_interval_ms < 100 {
            return Err(ConfigError::new(
                "api.update_interval_ms",
                format!("{} ms is too often", self.api.update_interval_ms),
                "use at least 100 (default 2000)",
            ));
        }
        crate::site_config::validate(&self.meters, &self.grid, &self.curtailment, &self.miners)?;
        crate::energy::config::validate(&self.energy, &self.meters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[upstreams]]
url = "stratum+tcp://127.0.0.1:3333"
user = "acct.site"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, LoadError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml_with_env(text, Path::new("test.toml"), env)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.proxy.listen.port(), 3333);
        assert_eq!(c.upstreams[0].address(), "127.0.0.1:3333");
        assert_eq!(c.upstreams[0].password, "x");
        assert_eq!(c.version_rolling.mask_bits(), 0x1fffe000);
    }

    #[test]
    fn env_overrides_scalars_and_array_items() {
        let c = load(
            MINIMAL,
            &[
                ("BLGV_PROXY__LISTEN", "127.0.0.1:4444"),
                ("BLGV_UPSTREAMS__0__USER", "other.acct"),
                ("BLGV_VARDIFF__MIN", "0.001"),
                ("BLGV_VARDIFF__INITIAL", "0.5"),
            ],
        )
        .unwrap();
        assert_eq!(c.proxy.listen.port(), 4444);
        assert_eq!(c.upstreams[0].user, "other.acct");
        assert_eq!(c.vardiff.min, 0.001);
        let e = load(MINIMAL, &[("BLGV_UPSTREAMS__3__USER", "x")]).unwrap_err();
        assert!(e.to_string().contains("BLGV_UPSTREAMS__3__USER"), "{e}");
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let cases = [
            ("", "`upstreams`"),
            (
                "[[upstreams]]\nurl = \"nohost\"\nuser = \"a\"",
                "`upstreams[0].url`",
            ),
            (
                "[[upstreams]]\nurl = \"h:1\"\nuser = \" \"",
                "`upstreams[0].user`",
            ),
            (
                &format!("{MINIMAL}[vardiff]\nmin = 10\nmax = 1"),
                "`vardiff.min`",
            ),
            (
                &format!("{MINIMAL}[vardiff]\ninitial = 0"),
                "`vardiff.initial`",
            ),
            (
                &format!("{MINIMAL}[version_rolling]\nmask = \"xyz\""),
                "`version_rolling.mask`",
            ),
            (
                &format!("{MINIMAL}[proxy]\nmax_line_length = 10"),
                "`proxy.max_line_length`",
            ),
            (
                &format!("{MINIMAL}[proxy]\nmax_connections = 0"),
                "`proxy.max_connections`",
            ),
            (
                &format!("{MINIMAL}[proxy]\nmax_connections = 10\nmax_connections_per_ip = 11"),
                "`proxy.max_connections_per_ip`",
            ),
            (
                &format!("{MINIMAL}[proxy]\nthreads = 100000"),
                "`proxy.threads`",
            ),
            (
                &format!("{MINIMAL}[proxy]\nhandshake_timeout_ms = 5000"),
                "`proxy.handshake_timeout_ms`",
            ),
            (
                &format!("{MINIMAL}[proxy]\npartial_line_timeout_ms = 10"),
                "`proxy.partial_line_timeout_ms`",
            ),
            (
                &format!("{MINIMAL}[proxy]\nmax_messages_per_sec = 0"),
                "`proxy.max_messages_per_sec`",
            ),
            (
                &format!("{MINIMAL}[proxy]\nmessage_burst = 0"),
                "`proxy.message_burst`",
            ),
            (
                &format!("{MINIMAL}[proxy]\nmax_send_queue_bytes = 100"),
                "`proxy.max_send_queue_bytes`",
            ),
            (
                &format!("{MINIMAL}[proxy]\nwrite_stall_timeout_ms = 0"),
                "`proxy.write_stall_timeout_ms`",
            ),
            (
                &format!("{MINIMAL}[failover]\nretry_initial_ms = 0"),
                "`failover.retry_initial_ms`",
            ),
            (
                &format!("{MINIMAL}[failover]\nanswer_timeout_ms = 0"),
                "`failover.answer_timeout_ms`",
            ),
            (
                &format!("{MINIMAL}[ledger]\nflush_interval_ms = 0"),
                "`ledger.flush_interval_ms`",
            ),
        ];
        for (text, key) in cases {
            let e = load(text, &[]).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("fix:"), "{key}: {e}");
        }
    }

    /// `failover.answer_timeout_ms = 0` would count every forwarded share as unanswered and
    /// drop the pool at the first watchdog tick, so it is refused. `silence_timeout_ms = 0` is
    /// the documented "off" (README key table): pools need not send anything while no share
    /// is pending, and the answer timeout still catches a pool that stops answering shares.
    #[test]
    fn a_zero_answer_timeout_is_refused_and_a_zero_silence_timeout_turns_it_off() {
        let e = load(&format!("{MINIMAL}[failover]\nanswer_timeout_ms = 0"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`failover.answer_timeout_ms`") && e.contains("fix:"),
            "{e}"
        );
        let c = load(&format!("{MINIMAL}[failover]\nsilence_timeout_ms = 0"), &[]).unwrap();
        assert_eq!(c.failover.silence_timeout(), None);
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(
            c.failover.silence_timeout(),
            Some(Duration::from_millis(300_000))
        );
    }

    #[test]
    fn unknown_keys_and_bad_types_are_parse_errors_that_name_them() {
        let e = load(&format!("{MINIMAL}[proxy]\nlisen = \"x\""), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = load(
            &format!("{MINIMAL}[proxy]\nlisten = \"not an address\""),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("listen"), "{e}");
        let e = load("this is = = not toml", &[]).unwrap_err().to_string();
        assert!(e.contains("is not valid"), "{e}");
    }
}
