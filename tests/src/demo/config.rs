//! The configuration files the demo writes for `blgv-cloud` and `blgv-proxy`: real configs, with
//! comments, that a newcomer can read next to deploy/config/*.example.toml and check with
//! `blgv-cloud check-config FILE` / `blgv-proxy check-config FILE`.

use std::net::SocketAddr;
use std::path::Path;

/// The regtest address the DEMO chain's blocks pay (P2WPKH, BIP173's test vector).
pub const PAYOUT_ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

/// Everything `blgv-cloud` needs to know.
pub struct CloudSettings<'a> {
    pub stratum: SocketAddr,
    pub api: SocketAddr,
    pub node_url: &'a str,
    pub node_user: &'a str,
    pub node_password: &'a str,
    /// Difficulty of the shares the pool asks of the proxy (pinned: min = initial = max).
    pub difficulty: f64,
    pub ledger: &'a Path,
    /// The demo site's id and its token for energy reports.
    pub site_id: &'a str,
    pub energy_token: &'a str,
}

pub fn cloud_toml(s: &CloudSettings) -> String {
    format!(
        r#"# blgv-cloud configuration written by blgv-demo: the pool coordinator of the demo site.
# Its template source is the DEMO chain, a regtest-style chain served by a Bitcoin Core
# stand-in inside blgv-demo. A real pool points [node] at bitcoind; see
# deploy/config/cloud.example.toml. Check this file with: blgv-cloud check-config <this file>

[pool]
listen = "{stratum}"          # Stratum V1 for site proxies (the demo's blgv-proxy)
network = "regtest"                    # the DEMO chain is a regtest chain
payout_address = "{PAYOUT_ADDRESS}"
coinbase_tag = "/BLGV demo/"
job_refresh_secs = 30

[node]
url = "{node_url}"         # the DEMO chain's node stand-in (JSON-RPC, inside blgv-demo)
user = "{node_user}"
password = "{node_password}"
timeout_ms = 5000
longpoll = true                        # a block found reaches every miner at once

# One difficulty for the proxy's connection, so the demo finds blocks at a steady pace: on the
# DEMO chain (regtest target) every share the pool accepts is also a block.
[vardiff]
initial = {d:e}
min = {d:e}
max = {d:e}
target_shares_per_minute = 10
retarget_secs = 60

[ledger]
path = "{ledger}"
flush_interval_ms = 200

# REST API, live feed, /metrics and the dashboard (open http://{api}/ in a browser).
[api]
listen = "{api}"
live_update_ms = 2000

# Energy reports from the site (Mission 1867): the mix and the carbon footprint on the dashboard.
[[energy.sites]]
id = "{site_id}"
token = "{energy_token}"
"#,
        site_id = s.site_id,
        energy_token = s.energy_token,
        stratum = s.stratum,
        node_url = s.node_url,
        node_user = s.node_user,
        node_password = s.node_password,
        d = s.difficulty,
        ledger = toml_path(s.ledger),
        api = s.api,
    )
}

/// Everything `blgv-proxy` needs to know.
pub struct ProxySettings<'a> {
    pub stratum: SocketAddr,
    pub api: SocketAddr,
    pub admin_token: &'a str,
    pub cloud_stratum: SocketAddr,
    pub account: &'a str,
    /// Difficulty given to the ASICs (pinned: min = initial = max).
    pub miner_difficulty: f64,
    pub ledger: &'a Path,
    pub meter: SocketAddr,
    pub broker: SocketAddr,
    pub site_id: &'a str,
    pub mqtt_user: &'a str,
    pub mqtt_password: &'a str,
    /// The `[[miners]]` sections ([`super::site::Machines::miners_toml`]).
    pub miners_toml: &'a str,
    /// The pool's API, where energy reports go, and the site's token there.
    pub cloud_api: SocketAddr,
    pub energy_token: &'a str,
    pub energy_interval_secs: u64,
}

pub fn proxy_toml(s: &ProxySettings) -> String {
    format!(
        r#"# blgv-proxy configuration written by blgv-demo: the site proxy of the demo site.
# Everything it talks to is simulated inside blgv-demo (ASICs and their firmware APIs, the
# SDM630 meter, the grid operator's MQTT broker) or is the demo's blgv-cloud. Compare with
# deploy/config/small-site.example.toml. Check this file with: blgv-proxy check-config <this file>

[proxy]
listen = "{stratum}"          # the ASICs' pool URL: stratum+tcp://{stratum}
subscribe_wait_ms = 10000

[[upstreams]]
name = "demo-cloud"
url = "stratum+tcp://{cloud}"   # the demo's blgv-cloud
user = "{account}.site1"
password = "x"

[failover]
connect_timeout_ms = 2000
handshake_timeout_ms = 5000
retry_initial_ms = 250
retry_max_ms = 2000
failback_probe_ms = 5000

# The simulated ASICs hash a few kH/s, not 200 TH/s: a tiny, fixed share difficulty gives each a
# share every couple of seconds. (Real sites: powers of two ≥ 1024, see the example configs.)
[vardiff]
initial = {d:e}
min = {d:e}
max = {d:e}
target_shares_per_minute = 30
retarget_secs = 60

[version_rolling]
enabled = true
mask = "1fffe000"

[ledger]
path = "{ledger}"
flush_interval_ms = 500

# Status API, /metrics and the site dashboard (open http://{api}/ in a browser).
# The token allows POST actions, e.g. pausing a miner by hand:
#   curl -X POST -H "Authorization: Bearer {token}" http://{api}/api/miners/{account}.asic00/pause
[api]
listen = "{api}"
admin_token = "{token}"
update_interval_ms = 1000

# ---- Site power ---------------------------------------------------------------------------------

# The simulated Eastron SDM630 on the grid connection (Modbus TCP): it reads what the machines
# draw, so a miner paused through its firmware shows up here.
[[meters]]
id = "site-main"
role = "site_total"
transport.tcp = "{meter}"
unit_id = 1
preset = "sdm630"
poll_interval_ms = 500
timeout_ms = 500
retries = 2
stale_after_ms = 5000

# The grid operator's curtailment signals: the demo's embedded MQTT broker, plain MQTT on
# 127.0.0.1 (a real grid operator's broker needs tls = {{ ca_file = "..." }}).
[grid.mqtt]
host = "{broker_host}"
port = {broker_port}
site_id = "{site_id}"                    # topics: blgv/site/{site_id}/curtailment[/ack|/report], /status
username = "{mqtt_user}"
password = "{mqtt_password}"
keep_alive_secs = 10
rules = {{ level_limits_kw = [30.0, 20.0, 0.0], max_limit_kw = 1000.0, max_age_s = 300, max_clock_skew_s = 60, max_duration_s = 86400 }}

# Demo-fast curtailment: the machines' simulated power changes as soon as the firmware obeys, so
# the loop settles in a second and restores a few machines every two seconds.
[curtailment]
margin_kw = 0.5                      # aim this far under the limit
hysteresis_kw = 1.0                  # resume only this far under limit − margin
restore_step_kw = 7.0                # about two machines per restore step
restore_interval_secs = 2
settle_ms = 1000
tick_ms = 250
report_interval_secs = 5
command_timeout_ms = 3000
withhold_work_as_last_resort = true

# ---- Energy reports to the pool (Mission 1867) -----------------------------------------------------
# The demo site runs on a hydro plant: the site meter measures its feed. Every interval the proxy
# sends the pool the kWh, hashes and curtailment of the interval (store and forward: an outbox
# next to the ledger keeps every report until the pool acknowledged it). Production: 300 s.
[energy]
site_id = "{site_id}"
report_interval_secs = {energy_interval}

[[energy.sources]]
kind = "hydro"
meter = "site-main"

[energy.report]
url = "http://{cloud_api}"        # plain http only because the pool is on this machine
token = "{energy_token}"
retry_initial_ms = 500
retry_max_ms = 5000

# ---- The machines curtailment may pause (least efficient first) ------------------------------
{miners}"#,
        stratum = s.stratum,
        cloud = s.cloud_stratum,
        account = s.account,
        d = s.miner_difficulty,
        ledger = toml_path(s.ledger),
        api = s.api,
        token = s.admin_token,
        meter = s.meter,
        broker_host = s.broker.ip(),
        broker_port = s.broker.port(),
        site_id = s.site_id,
        mqtt_user = s.mqtt_user,
        mqtt_password = s.mqtt_password,
        miners = s.miners_toml,
        cloud_api = s.cloud_api,
        energy_token = s.energy_token,
        energy_interval = s.energy_interval_secs,
    )
}

/// A path as the inside of a TOML basic string (backslashes and quotes escaped).
fn toml_path(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_configs_load_with_the_binaries_own_parsers() {
        let dir = Path::new("/tmp/blgv-demo \"quoted\"");
        let cloud = cloud_toml(&CloudSettings {
            stratum: "127.0.0.1:3334".parse().unwrap(),
            api: "127.0.0.1:8080".parse().unwrap(),
            node_url: "http://127.0.0.1:18443",
            node_user: "demo",
            node_password: "demo-secret",
            difficulty: 1.0 / 2048.0,
            ledger: &dir.join("cloud.db"),
            site_id: "site1",
            energy_token: "0123456789abcdef-energy",
        });
        let proxy = proxy_toml(&ProxySettings {
            stratum: "127.0.0.1:3333".parse().unwrap(),
            api: "127.0.0.1:8081".parse().unwrap(),
            admin_token: "0123456789abcdef0123",
            cloud_stratum: "127.0.0.1:3334".parse().unwrap(),
            account: "demo",
            miner_difficulty: 1.0 / 65536.0,
            ledger: &dir.join("proxy.db"),
            meter: "127.0.0.1:5020".parse().unwrap(),
            broker: "127.0.0.1:1883".parse().unwrap(),
            site_id: "site1",
            mqtt_user: "site1",
            mqtt_password: "pw",
            miners_toml: "\n[[miners]]\nworker = \"demo.asic00\"\nfirmware = \"cgminer\"\n\
                          address = \"127.0.0.1:4028\"\nnominal_w = 3050\nefficiency_j_per_th = 29.5\n",
            cloud_api: "127.0.0.1:8080".parse().unwrap(),
            energy_token: "0123456789abcdef-energy",
            energy_interval_secs: 30,
        });
        let c = blgv_proxy::Config::from_toml_with_env(
            &proxy,
            Path::new("proxy.toml"),
            std::iter::empty(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{proxy}"));
        assert_eq!(c.miners.len(), 1);
        assert_eq!(c.meters.len(), 1);
        assert!(c.grid.mqtt.is_some());
        let energy = c.energy.as_ref().expect("the demo site reports its energy");
        assert_eq!(energy.sources[0].meter, c.meters[0].id);
        assert_eq!(c.ledger.path, dir.join("proxy.db"));
        let c = blgv_cloud::Config::from_toml_with_env(
            &cloud,
            Path::new("cloud.toml"),
            std::iter::empty(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{cloud}"));
        assert_eq!(c.pool.network, "regtest");
        assert_eq!(c.ledger.path, dir.join("cloud.db"));
        assert_eq!(c.vardiff.min, c.vardiff.max);
        assert_eq!(c.energy.sites[0].id, "site1");
    }
}
