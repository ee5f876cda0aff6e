//! `blgv-cloud` configuration: TOML, typed, validated at start; errors name the key and the fix.
//! Environment variables override the file as `BLGV_<SECTION>__<KEY>`.

use crate::payout::PayoutConfig;
use bitcoin::{Address, Network, ScriptBuf};
use blgv_config::Validate;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub pool: PoolSection,
    pub node: NodeSection,
    #[serde(default)]
    pub vardiff: VardiffSection,
    #[serde(default)]
    pub ledger: LedgerSection,
    /// Payout schemes, balances and payout batches (see [`crate::payout`]).
    #[serde(default)]
    pub payout: PayoutConfig,
    /// The REST + WebSocket API, metrics and dashboard.
    #[serde(default)]
    pub api: ApiSection,
    /// Energy reports from the sites: their tokens and the grid regions' carbon factors.
    #[serde(default)]
    pub energy: crate::energy::EnergySection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Where the HTTP API, `/metrics`, `/ws/pool-stats` and the dashboard listen.
    pub listen: SocketAddr,
    /// Bearer token for the write endpoints (`POST /api/...`); without it they answer 403.
    pub token: Option<String>,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// How often `hashrate_update` goes to WebSocket clients.
    pub live_update_ms: u64,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: "127.0.0.1:8080".parse().expect("literal"),
            token: None,
            max_body_bytes: 16 * 1024,
            live_update_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// Where proxies and miners connect over Stratum V1.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `mainnet` (or `bitcoin`), `testnet`, `testnet4`, `signet` or `regtest`.
    pub network: String,
    /// Where block rewards go; validated for `pool.network`.
    pub payout_address: String,
    /// Text written into every coinbase after the extranonce.
    #[serde(default = "default_tag")]
    pub coinbase_tag: String,
    /// Bytes of extranonce1 per connection (4 gives 4 billion connections).
    #[serde(default = "default_en1")]
    pub extranonce1_size: usize,
    /// Bytes of extranonce2 each connection rolls; 8 leaves room for proxies to subdivide.
    #[serde(default = "default_en2")]
    pub extranonce2_size: usize,
    /// A fresh job from the latest template at least this often (new transactions, new time).
    #[serde(default = "default_refresh")]
    pub job_refresh_secs: u64,
    /// How far past the job's ntime (plus the job's age) a miner may roll ntime.
    #[serde(default = "default_ntime_ahead")]
    pub ntime_max_ahead_secs: u32,
    #[serde(default = "default_max_line")]
    pub max_line_length: usize,
    /// Version bits miners may roll (BIP320).
    #[serde(default = "default_mask")]
    pub version_mask: String,
    /// Stratum connections held at most; over it, a new connection is closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections one source IP may hold; 0 = no per-IP cap. A site proxy needs one per
    /// 65,536 miners; plain ASICs behind one NAT need one each.
    #[serde(default = "default_max_per_ip")]
    pub max_connections_per_ip: usize,
    /// A connection that has not subscribed and authorized within this is closed (slowloris).
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_ms: u64,
    /// A line that has started must end (newline) within this, or the connection is closed.
    #[serde(default = "default_partial_line_timeout")]
    pub partial_line_timeout_ms: u64,
    /// Sustained messages per second one connection may send (a site proxy forwards only the
    /// shares that meet the pool's difficulty); over it, after `message_burst`, the client gets
    /// an error and the connection is closed.
    #[serde(default = "default_max_messages")]
    pub max_messages_per_sec: u32,
    #[serde(default = "default_burst")]
    pub message_burst: u32,
    /// Bytes the pool holds for a client whose socket is full; more, and it is dropped.
    #[serde(default = "default_send_queue")]
    pub max_send_queue_bytes: usize,
    /// A write that makes no progress for this long drops the client.
    #[serde(default = "default_write_stall")]
    pub write_stall_timeout_ms: u64,
}

impl PoolSection {
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

fn default_max_connections() -> usize {
    100_000
}
fn default_max_per_ip() -> usize {
    10_000
}
fn default_handshake_timeout() -> u64 {
    60_000
}
fn default_partial_line_timeout() -> u64 {
    30_000
}
fn default_max_messages() -> u32 {
    5_000
}
fn default_burst() -> u32 {
    10_000
}
fn default_send_queue() -> usize {
    65_536
}
fn default_write_stall() -> u64 {
    10_000
}

fn default_listen() -> SocketAddr {
    "0.0.0.0:3333".parse().expect("literal")
}
fn default_tag() -> String {
    "/BLGV/".into()
}
fn default_en1() -> usize {
    4
}
fn default_en2() -> usize {
    8
}
fn default_refresh() -> u64 {
    30
}
fn default_ntime_ahead() -> u32 {
    600
}
fn default_max_line() -> usize {
    blgv_stratum::codec::DEFAULT_MAX_LINE_LENGTH
}
fn default_mask() -> String {
    "1fffe000".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Bitcoin Core JSON-RPC endpoint, e.g. `http://127.0.0.1:8332`.
    pub url: String,
    /// RPC user and password (rpcauth / rpcuser), or use `cookie_file`.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Path to Core's `.cookie` (read at every connect, so a node restart is fine).
    #[serde(default)]
    pub cookie_file: Option<PathBuf>,
    /// Per-request timeout for ordinary calls.
    #[serde(default = "default_rpc_timeout")]
    pub timeout_ms: u64,
    /// Use getblocktemplate long polling (new blocks reach miners at once).
    #[serde(default = "default_true")]
    pub longpoll: bool,
}

fn default_rpc_timeout() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VardiffSection {
    pub initial: f64,
    pub min: f64,
    pub max: f64,
    pub target_shares_per_minute: f64,
    pub retarget_secs: u64,
}

impl Default for VardiffSection {
    fn default() -> Self {
        VardiffSection {
            initial: 16384.0,
            min: 1024.0,
            max: 1e12,
            target_shares_per_minute: 20.0,
            retarget_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSection {
    pub path: PathBuf,
    /// Shares are committed in batches this often; a share is answered once its batch is
    /// committed, so this is also the most a share's answer waits.
    pub flush_interval_ms: u64,
    /// While commits fail (disk full, read-only), shares are still answered from memory for up
    /// to this many unwritten rows; past it, answers wait for the disk. 0 = no limit.
    pub max_unwritten: usize,
}

impl Default for LedgerSection {
    fn default() -> Self {
        LedgerSection {
            path: PathBuf::from("blgv-cloud.db"),
            flush_interval_ms: 100,
            max_unwritten: 1_000_000,
        }
    }
}

pub use blgv_config::{ConfigError, LoadError};

fn err(key: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError::new(key, problem, fix)
}

/// The validated meaning of the pool section.
#[derive(Debug, Clone)]
pub struct PayoutTarget {
    pub network: Network,
    pub script_pubkey: ScriptBuf,
}

pub fn parse_network(name: &str) -> Option<Network> {
    match name {
        "mainnet" | "bitcoin" | "main" => Some(Network::Bitcoin),
        "testnet" | "testnet3" | "test" => Some(Network::Testnet),
        "testnet4" => Some(Network::Testnet4),
        "signet" => Some(Network::Signet),
        "regtest" => Some(Network::Regtest),
        _ => None,
    }
}

/// What Core's `getblockchaininfo.chain` says for a network.
pub fn core_chain_name(n: Network) -> &'static str {
    match n {
        Network::Bitcoin => "main",
        Network::Testnet => "test",
        Network::Testnet4 => "testnet4",
        Network::Signet => "signet",
        Network::Regtest => "regtest",
    }
}

/// Parse an address (base58, bech32 or bech32m) and check it belongs to `network`.
pub fn validate_address(text: &str, network: Network) -> Result<ScriptBuf, String> {
    let unchecked = Address::from_str(text.trim())
        .map_err(|e| format!("{text:?} is not a bitcoin address ({e})"))?;
    let checked = unchecked
        .require_network(network)
        .map_err(|_| format!("{text:?} is not an address for {network}"))?;
    Ok(checked.script_pubkey())
}

impl Config {
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

    pub fn payout(&self) -> Result<PayoutTarget, ConfigError> {
        let network = parse_network(&self.pool.network).ok_or_else(|| {
            err(
                "pool.network",
                format!("{:?} is not a network", self.pool.network),
                "use mainnet, testnet, testnet4, signet or regtest",
            )
        })?;
        let script_pubkey = validate_address(&self.pool.payout_address, network).map_err(|p| {
            err(
                "pool.payout_address",
                p,
                format!("use a {} address of the pool's wallet", self.pool.network),
            )
        })?;
        Ok(PayoutTarget {
            network,
            script_pubkey,
        })
    }

    pub fn version_mask(&self) -> u32 {
        u32::from_str_radix(&self.pool.version_mask, 16).unwrap_or(0)
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.payout()?;
        let p = &self.pool;
        if !(1..=8).contains(&p.extranonce1_size) {
            return Err(err(
                "pool.extranonce1_size",
                format!("{}", p.extranonce1_size),
                "use 1 to 8 (4 is standard)",
            ));
        }
        if !(2..=16).contains(&p.extranonce2_size) {
            return Err(err(
                "pool.extranonce2_size",
                format!("{}", p.extranonce2_size),
                "use 2 to 16 (8 lets proxies subdivide)",
            ));
        }
        // BIP34 push (≤ 6 bytes) + extranonce + tag must fit the 100-byte scriptSig limit.
        let script_len = 6 + p.extranonce1_size + p.extranonce2_size + p.coinbase_tag.len();
        if script_len > 100 {
            return Err(err(
                "pool.coinbase_tag",
                format!("coinbase scriptSig would be {script_len} bytes, over Bitcoin's 100"),
                "shorten the tag",
            ));
        }
        if p.job_refresh_secs == 0 {
            return Err(err(
                "pool.job_refresh_secs",
                "0",
                "use a positive number of seconds (30 is usual)",
            ));
        }
        if u32::from_str_radix(&p.version_mask, 16).is_err() || p.version_mask.len() > 8 {
            return Err(err(
                "pool.version_mask",
                format!("{:?}", p.version_mask),
                "write 8 hex digits, e.g. \"1fffe000\"",
            ));
        }
        if p.max_line_length < 1024 {
            return Err(err(
                "pool.max_line_length",
                format!("{}", p.max_line_length),
                "use at least 1024",
            ));
        }
        if let Err((key, problem, fix)) = p.limits().check() {
            return Err(err(&format!("pool.{key}"), problem, fix));
        }
        let n = &self.node;
        if !(n.url.starts_with("http://") || n.url.starts_with("https://")) {
            return Err(err(
                "node.url",
                format!("{:?} is not an http(s) URL", n.url),
                "write it as \"http://127.0.0.1:8332\"",
            ));
        }
        match (&n.user, &n.password, &n.cookie_file) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => {}
            (None, None, None) => {
                return Err(err(
                    "node",
                    "no RPC credentials",
                    "set node.user and node.password, or node.cookie_file = \"~/.bitcoin/.cookie\"",
                ))
            }
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(err(
                    "node.password",
                    "user and password must be given together",
                    "set both node.user and node.password",
                ))
            }
            _ => {
                return Err(err(
                    "node.cookie_file",
                    "both a cookie file and user/password given",
                    "use one of the two",
                ))
            }
        }
        if n.timeout_ms == 0 {
            return Err(err(
                "node.timeout_ms",
                "0",
                "use a positive number of milliseconds",
            ));
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
            if !(value.is_finite() && value > 0.0) {
                return Err(err(key, format!("{value}"), "use a number greater than 0"));
            }
        }
        if v.min > v.max || v.initial < v.min || v.initial > v.max {
            return Err(err(
                "vardiff.initial",
                format!("initial {} with min {} and max {}", v.initial, v.min, v.max),
                "keep min ≤ initial ≤ max",
            ));
        }
        if v.retarget_secs == 0 {
            return Err(err("vardiff.retarget_secs", "0", "use at least 1"));
        }
        if self.ledger.flush_interval_ms == 0 {
            return Err(err(
                "ledger.flush_interval_ms",
                "0",
                "use a positive number of milliseconds",
            ));
        }
        let network = self.payout()?.network;
        self.payout.validate(network)?;
        let a = &self.api;
        if let Some(token) = &a.token {
            if token.trim().len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(err(
                    "api.token",
                    "shorter than 16 characters or contains spaces",
                    "use a long random string, e.g. the output of `openssl rand -hex 32`",
                ));
            }
        }
        if !(256..=16 * 1024 * 1024).contains(&a.max_body_bytes) {
            return Err(err(
                "api.max_body_bytes",
                format!("{}", a.max_body_bytes),
                "use 256 to 16777216 bytes (16384 is plenty for the API)",
            ));
        }
        if !(100..=3_600_000).contains(&a.live_update_ms) {
            return Err(err(
                "api.live_update_ms",
                format!("{}", a.live_update_ms),
                "use 100 to 3600000 milliseconds (5000 is usual)",
            ));
        }
        if a.listen == self.pool.listen && a.listen.port() != 0 {
            return Err(err(
                "api.listen",
                format!("{} is also pool.listen", a.listen),
                "give the API its own port, e.g. 127.0.0.1:8080",
            ));
        }
        self.energy.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGTEST: &str = r#"
[pool]
network = "regtest"
payout_address = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
[node]
url = "http://127.0.0.1:18443"
user = "u"
password = "p"
"#;

    fn load(text: &str) -> Result<Config, LoadError> {
        Config::from_toml_with_env(text, Path::new("t.toml"), std::iter::empty())
    }

    #[test]
    fn regtest_config_with_defaults() {
        let c = load(REGTEST).unwrap();
        assert_eq!((c.pool.extranonce1_size, c.pool.extranonce2_size), (4, 8));
        assert_eq!(c.payout().unwrap().network, Network::Regtest);
    }

    #[test]
    fn addresses_are_checked_for_the_network_in_every_encoding() {
        // bech32 (P2WPKH), bech32m (P2TR), base58 (P2PKH): mainnet examples from BIP173/350.
        for addr in [
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
            "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
        ] {
            assert!(validate_address(addr, Network::Bitcoin).is_ok(), "{addr}");
            let e = validate_address(addr, Network::Regtest).unwrap_err();
            assert!(e.contains("not an address for regtest"), "{e}");
        }
        assert!(validate_address("bc1qnotanaddress", Network::Bitcoin)
            .unwrap_err()
            .contains("not a bitcoin address"));
    }

    #[test]
    fn errors_name_key_and_fix() {
        let cases = [
            (REGTEST.replace("regtest\"", "moonnet\""), "`pool.network`"),
            (
                REGTEST.replace(
                    "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
                    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
                ),
                "`pool.payout_address`",
            ),
            (
                REGTEST.replace("http://127.0.0.1:18443", "127.0.0.1:18443"),
                "`node.url`",
            ),
            (REGTEST.replace("password = \"p\"", ""), "`node.password`"),
            (
                REGTEST.replace("user = \"u\"\npassword = \"p\"", ""),
                "`node`",
            ),
            (format!("{REGTEST}[vardiff]\nmin = 0"), "`vardiff.min`"),
            (format!("{REGTEST}[api]\ntoken = \"short\""), "`api.token`"),
            (
                format!("{REGTEST}[api]\nmax_body_bytes = 1"),
                "`api.max_body_bytes`",
            ),
            (
                format!("{REGTEST}[payout]\nchange_address = \"bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4\""),
                "`payout.change_address`",
            ),
            (
                format!("{REGTEST}[payout]\nprocess_interval_secs = 0"),
                "`payout.process_interval_secs`",
            ),
            (
                format!("{REGTEST}[[energy.sites]]\nid = \"s1\"\ntoken = \"short\""),
                "`energy.sites[0].token`",
            ),
            (
                REGTEST.replace("[node]", "extranonce2_size = 1\n[node]"),
                "`pool.extranonce2_size`",
            ),
            (
                REGTEST.replace(
                    "[node]",
                    &format!("coinbase_tag = \"{}\"\n[node]", "x".repeat(90)),
                ),
                "`pool.coinbase_tag`",
            ),
            (
                REGTEST.replace("[node]", "max_connections = 0\n[node]"),
                "`pool.max_connections`",
            ),
            (
                REGTEST.replace(
                    "[node]",
                    "max_connections = 5\nmax_connections_per_ip = 6\n[node]",
                ),
                "`pool.max_connections_per_ip`",
            ),
            (
                REGTEST.replace("[node]", "handshake_timeout_ms = 1\n[node]"),
                "`pool.handshake_timeout_ms`",
            ),
            (
                REGTEST.replace("[node]", "partial_line_timeout_ms = 0\n[node]"),
                "`pool.partial_line_timeout_ms`",
            ),
            (
                REGTEST.replace("[node]", "max_messages_per_sec = 0\n[node]"),
                "`pool.max_messages_per_sec`",
            ),
            (
                REGTEST.replace("[node]", "message_burst = 0\n[node]"),
                "`pool.message_burst`",
            ),
            (
                REGTEST.replace("[node]", "max_send_queue_bytes = 10\n[node]"),
                "`pool.max_send_queue_bytes`",
            ),
            (
                REGTEST.replace("[node]", "write_stall_timeout_ms = 5\n[node]"),
                "`pool.write_stall_timeout_ms`",
            ),
        ];
        for (text, key) in cases {
            let e = load(&text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("fix:"), "{key}: {e}");
        }
    }
}
