//! Shared pieces of the proxy end-to-end tests: a proxy config for tests, a raw Stratum client
//! for hostile inputs, and ledger queries.
#![allow(dead_code)]

pub mod fixed_template;
pub mod hostile;
pub mod limits;
pub mod product_binaries;
pub mod site;

use blgv_proxy::config::{Config, UpstreamConfig};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Log to the test output when BLGV_LOG is set (e.g. BLGV_LOG=blgv_proxy=debug).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("BLGV_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A proxy on 127.0.0.1:0 in front of `pools`, difficulty pinned to `difficulty` (min = max =
/// initial) so share counts are predictable, ledger in `dir`.
pub fn proxy_config(pools: &[SocketAddr], difficulty: f64, dir: &Path) -> Config {
    proxy_config_with(pools, difficulty, dir, "")
}

/// [`proxy_config`] plus more TOML (site sections: meters, grid, curtailment, miners).
pub fn proxy_config_with(pools: &[SocketAddr], difficulty: f64, dir: &Path, extra: &str) -> Config {
    let mut text = String::from(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nsubscribe_wait_ms = 10000\n[api]\nlisten = \"127.0.0.1:0\"\n",
    );
    for (i, p) in pools.iter().enumerate() {
        text.push_str(&format!("[[upstreams]]\nname = \"pool{i}\"\nurl = \"stratum+tcp://{p}\"\nuser = \"site.proxy\"\n"));
    }
    text.push_str(&format!(
        "[vardiff]\ninitial = {difficulty:e}\nmin = {difficulty:e}\nmax = {difficulty:e}\ntarget_shares_per_minute = 60\nretarget_secs = 60\n\
         [failover]\nconnect_timeout_ms = 1000\nhandshake_timeout_ms = 2000\nretry_initial_ms = 100\nretry_max_ms = 1000\nfailback_probe_ms = 500\n\
         [ledger]\npath = {:?}\nflush_interval_ms = 200\n",
        dir.join("ledger.db")
    ));
    text.push_str(extra);
    Config::from_toml_with_env(&text, Path::new("test.toml"), std::iter::empty())
        .unwrap_or_else(|e| panic!("test config is valid: {e}\n{text}"))
}

/// A regtest pool on 127.0.0.1:0 paying a fixed address, difficulty `difficulty` for every
/// connection (min = initial, max = `max`), ledger in `dir`. Its API listens on 127.0.0.1:0.
pub fn cloud_config(node_url: &str, difficulty: f64, max: f64, dir: &Path) -> blgv_cloud::Config {
    cloud_config_with(node_url, difficulty, max, dir, "", "")
}

/// [`cloud_config`] with more `[api]` keys (`api`, TOML lines) and more sections (`extra`,
/// e.g. a `[payout]` section).
pub fn cloud_config_with(
    node_url: &str,
    difficulty: f64,
    max: f64,
    dir: &Path,
    api: &str,
    extra: &str,
) -> blgv_cloud::Config {
    let text = format!(
        "[pool]\nlisten = \"127.0.0.1:0\"\nnetwork = \"regtest\"\npayout_address = \"{PAYOUT_ADDRESS}\"\njob_refresh_secs = 30\n\
         [node]\nurl = \"{node_url}\"\nuser = \"rpc\"\npassword = \"secret\"\ntimeout_ms = 2000\n\
         [vardiff]\ninitial = {difficulty:e}\nmin = {difficulty:e}\nmax = {max:e}\ntarget_shares_per_minute = 60\nretarget_secs = 60\n\
         [ledger]\npath = {:?}\nflush_interval_ms = 50\n\
         [api]\nlisten = \"127.0.0.1:0\"\n{api}\n{extra}\n",
        dir.join("cloud.db")
    );
    blgv_cloud::Config::from_toml_with_env(&text, Path::new("cloud-test.toml"), std::iter::empty())
        .unwrap_or_else(|e| panic!("test cloud config is valid: {e}\n{text}"))
}

/// A client for the pool's HTTP API.
pub struct ApiClient {
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

impl ApiClient {
    pub fn new(addr: SocketAddr, token: Option<&str>) -> ApiClient {
        ApiClient {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            token: token.map(str::to_string),
        }
    }

    /// GET a path: (status, JSON body or Null).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET a path that must answer 200.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// POST a raw body with the client's token (if any).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, token: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token.or(self.token.as_deref()) {
            req = req.bearer_auth(t);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, body.to_string().into_bytes(), None)
            .await
    }
}

/// The regtest address the test pool pays (P2WPKH).
pub const PAYOUT_ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
pub const PAYOUT_SCRIPT_HEX: &str = "0014751e76e8199196d454941c45d1b3a323f1433bd6";

pub fn upstream(addr: SocketAddr) -> UpstreamConfig {
    UpstreamConfig {
        url: addr.to_string(),
        user: "site.proxy".into(),
        password: "x".into(),
        name: None,
    }
}

/// Per-worker sums from the proxy ledger.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LedgerRow {
    pub accepted: i64,
    pub rejected: i64,
    pub forwarded: i64,
    pub upstream_accepted: i64,
    pub upstream_rejected: i64,
}

pub fn ledger_by_worker(db: &Path) -> std::collections::BTreeMap<String, LedgerRow> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT worker, SUM(accepted), SUM(rejected_stale + rejected_duplicate + rejected_low_difficulty + rejected_bad_ntime
               + rejected_bad_version + rejected_bad_extranonce2 + rejected_malformed + rejected_unauthorized + rejected_not_subscribed),
               SUM(forwarded), SUM(upstream_accepted), SUM(upstream_rejected)
             FROM worker_minute GROUP BY worker",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                LedgerRow {
                    accepted: r.get(1)?,
                    rejected: r.get(2)?,
                    forwarded: r.get(3)?,
                    upstream_accepted: r.get(4)?,
                    upstream_rejected: r.get(5)?,
                },
            ))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// A hand-driven Stratum client: send any bytes, read lines, wait for a given id.
pub struct RawClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Notifications seen while waiting for responses.
    pub notifications: Vec<Value>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        RawClient {
            reader: BufReader::new(r),
            writer: w,
            notifications: Vec::new(),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    pub async fn send(&mut self, id: u64, method: &str, params: Value) {
        let line = format!(
            "{}\n",
            json!({"id": id, "method": method, "params": params})
        );
        self.send_raw(line.as_bytes()).await.unwrap();
    }

    /// Next line as JSON; None on EOF or after 5 s.
    pub async fn next(&mut self) -> Option<Value> {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(5), self.reader.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => {
                Some(serde_json::from_str(&line).expect("proxy sends valid JSON"))
            }
            _ => None,
        }
    }

    /// Wait for the response with `id` (a JSON value: number or null), keeping notifications.
    pub async fn response(&mut self, id: Value) -> Value {
        loop {
            let v = self
                .next()
                .await
                .unwrap_or_else(|| panic!("no response for id {id}"));
            if v.get("method").is_some() && v["id"].is_null() {
                self.notifications.push(v);
                continue;
            }
            if v["id"] == id {
                return v;
            }
        }
    }

    pub async fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(id, method, params).await;
        self.response(json!(id)).await
    }

    /// Wait for a notification with this method.
    pub async fn notification(&mut self, method: &str) -> Value {
        if let Some(i) = self
            .notifications
            .iter()
            .position(|n| n["method"] == method)
        {
            return self.notifications.remove(i);
        }
        loop {
            let v = self
                .next()
                .await
                .unwrap_or_else(|| panic!("no {method} notification"));
            if v["method"] == method {
                return v;
            }
            self.notifications.push(v);
        }
    }

    /// True when the proxy closed the connection (EOF) within 5 s.
    pub async fn closed(&mut self) -> bool {
        let mut buf = String::new();
        loop {
            buf.clear();
            match tokio::time::timeout(Duration::from_secs(5), self.reader.read_line(&mut buf))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// The error code of a response, or None when it succeeded.
pub fn error_code(resp: &Value) -> Option<i64> {
    resp["error"].get(0).and_then(Value::as_i64)
}

pub fn error_text(resp: &Value) -> String {
    resp["error"]
        .get(1)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}
