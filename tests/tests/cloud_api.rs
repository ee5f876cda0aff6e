//! The pool's HTTP API against a running blgv-cloud with SimMiners really hashing into it and
//! the bitcoind stand-in as its node: every number is checked against the SQLite ledger (or
//! the payout engine, or an independent computation here), plus the 4xx answers, `/health`,
//! the WebSocket live feed, `/metrics` and the OpenAPI document (validated by
//! `openapi-spec-validator`).

mod common;

use blgv_tests::node::{NodeConfig, NodeStandIn};
use blgv_tests::{wait_until, MinerConfig, SimMiner};
use common::{cloud_config_with, init_logging, ApiClient};
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "api-test-token-0123456789";
const TWO_POW_32: f64 = 4_294_967_296.0;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

async fn start() -> (NodeStandIn, blgv_cloud::PoolHandle, tempfile::TempDir) {
    let node = NodeStandIn::start(NodeConfig {
        rpc_user: "rpc".into(),
        rpc_password: "secret".into(),
        transactions_per_template: 2,
        longpoll_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Difficulty 2^-16: every share is a block at regtest's difficulty.
    let config = cloud_config_with(
        &node.url(),
        1.0 / 65_536.0,
        1.0 / 65_536.0,
        dir.path(),
        &format!("token = \"{TOKEN}\"\nlive_update_ms = 300\nmax_body_bytes = 4096"),
        "[payout]\nconfirmations = 2\nprocess_interval_secs = 1\ndefault_scheme = \"pplns\"\n\
         [[payout.accounts]]\nname = \"ppsminer\"\nscheme = \"pps\"\n",
    );
    let source = blgv_cloud::BitcoindRpc::new(&config.node, bitcoin::Network::Regtest);
    let pool = blgv_cloud::start(config, source).await.unwrap();
    (node, pool, dir)
}

/// Σ difficulty and count of shares with `from ≤ time_ms < to` (optionally of one worker).
fn ledger_window(db: &Path, from: i64, to: i64, worker: Option<&str>) -> (f64, i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT COALESCE(SUM(difficulty), 0), COUNT(*) FROM shares WHERE time_ms >= ?1 AND time_ms < ?2 AND (?3 IS NULL OR worker = ?3)",
        rusqlite::params![from, to, worker],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

fn check_windows(db: &Path, windows: &Value, worker: Option<&str>) {
    let ws = windows.as_array().unwrap();
    assert_eq!(ws.len(), 3);
    for (w, secs) in ws.iter().zip([600i64, 3600, 86_400]) {
        assert_eq!(w["seconds"].as_i64(), Some(secs));
        let (from, to) = (w["from_ms"].as_i64().unwrap(), w["to_ms"].as_i64().unwrap());
        assert_eq!(to - from, secs * 1000);
        let (sum, count) = ledger_window(db, from, to, worker);
        assert!(close(f(&w["difficulty_sum"]), sum), "{w} vs ledger {sum}");
        assert_eq!(w["shares"].as_i64(), Some(count), "{w}");
        assert!(
            close(f(&w["hashrate_hps"]), sum * TWO_POW_32 / secs as f64),
            "{w}"
        );
    }
}

/// Luck computed here from the ledger: rounds end at each block the node did not reject.
fn ledger_luck(db: &Path) -> (usize, f64, f64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let blocks: Vec<(i64, f64)> = conn
        .prepare(
            "SELECT b.share_id, s.network_difficulty FROM blocks b JOIN shares s ON s.id = b.share_id
             WHERE b.status != 'rejected' ORDER BY b.share_id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let shares: Vec<(i64, f64)> = conn
        .prepare("SELECT id, difficulty FROM shares ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut effort = 0.0;
    let mut prev = 0;
    for (share_id, nd) in &blocks {
        let sum: f64 = shares
            .iter()
            .filter(|(id, _)| *id > prev && id <= share_id)
            .map(|(_, d)| d)
            .sum();
        effort += sum / nd;
        prev = *share_id;
    }
    let current: f64 = shares
        .iter()
        .filter(|(id, _)| *id > prev)
        .map(|(_, d)| d)
        .sum();
    (blocks.len(), effort, current)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_numbers_match_the_ledger_with_hashing_miners() {
    init_logging();
    let (node, pool, dir) = start().await;
    let db = dir.path().join("cloud.db");
    let api = ApiClient::new(pool.api_addr(), Some(TOKEN));

    // The live feed, opened before the miners start.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/pool-stats", pool.api_addr()))
            .await
            .expect("WebSocket connects");

    let workers = ["alice.rig1", "alice.rig2", "ppsminer.a", "bob"];
    let miners: Vec<SimMiner> = workers
        .iter()
        .map(|w| {
            let mut c = MinerConfig::new(pool.local_addr(), *w);
            c.hashrate = 15_000;
            SimMiner::spawn(c)
        })
        .collect();

    // hashrate_update every 300 ms and block_found as blocks are found.
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(seen.contains_key("hashrate_update")
        && seen.contains_key("block_found")
        && seen["hashrate_update"]["hashrate_hps"]["10m"].as_f64() > Some(0.0))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("live feed: only {:?}", seen.keys()))
            .expect("feed open")
            .expect("feed message");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON message");
            let ty = v["type"].as_str().expect("type field").to_string();
            seen.insert(ty, v);
        }
    }
    let found = &seen["block_found"];
    assert!(
        workers.contains(&found["worker"].as_str().unwrap()),
        "{found}"
    );
    assert_eq!(found["hash"].as_str().unwrap().len(), 64);

    // Let every miner get several shares in, then stop them and let the ledger settle.
    assert!(
        wait_until(Duration::from_secs(60), || miners
            .iter()
            .all(|m| m.stats().accepted >= 3)
            && node.stats().blocks_accepted >= 3)
        .await
    );
    for m in miners {
        m.stop().await;
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = pool.stats();
            s.blocks_found == s.blocks_accepted + s.blocks_rejected
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await; // ledger flush (50 ms) and payouts
    let conn = rusqlite::Connection::open(&db).unwrap();

    // /api/stats: counters and the blocks table.
    let stats = api.get_ok("/api/stats").await;
    let ps = pool.stats();
    assert_eq!(stats["shares_accepted"].as_u64(), Some(ps.shares_accepted));
    assert_eq!(stats["shares_rejected"].as_u64(), Some(ps.shares_rejected));
    let ledger_shares: i64 = conn
        .query_row("SELECT COUNT(*) FROM shares", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ledger_shares as u64, ps.shares_accepted);
    for status in ["accepted", "rejected", "orphaned", "submitted"] {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM blocks WHERE status = ?1",
                [status],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stats["blocks"][status].as_i64(), Some(n), "{status}");
    }
    assert_eq!(
        stats["blocks"]["accepted"].as_u64(),
        Some(node.stats().blocks_accepted)
    );
    assert_eq!(stats["network"], "regtest");
    assert_eq!(stats["node_up"], true);

    // /api/hashrate and /api/workers against the ledger.
    let hr = api.get_ok("/api/hashrate").await;
    check_windows(&db, &hr["windows"], None);
    assert!(f(&hr["hashrate_hps"]["10m"]) > 0.0);
    assert_eq!(hr["history"].as_array().unwrap().len(), 60);
    let ws_list = api.get_ok("/api/workers").await;
    let names: BTreeSet<&str> = ws_list["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["worker"].as_str().unwrap())
        .collect();
    assert_eq!(names, workers.iter().copied().collect());
    for w in ws_list["workers"].as_array().unwrap() {
        let name = w["worker"].as_str().unwrap();
        let count: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM shares WHERE worker = ?1",
                [name],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(w["shares_24h"].as_i64(), Some(count), "{name}");
        let one = api.get_ok(&format!("/api/workers/{name}")).await;
        check_windows(&db, &one["windows"], Some(name));
        let blocks: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM blocks WHERE finder = ?1 AND status != 'rejected'",
                [name],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(one["blocks_found"].as_i64(), Some(blocks));
    }
    let (status, body) = api.get("/api/workers/nobody.here").await;
    assert_eq!((status, body["field"].as_str()), (404, Some("id")));

    // /api/blocks and /api/luck against a computation from the ledger.
    let blocks = api.get_ok("/api/blocks?limit=1000").await;
    let total_blocks: i64 = conn
        .query_row("SELECT COUNT(*) FROM blocks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(blocks["total"].as_i64(), Some(total_blocks));
    assert_eq!(
        blocks["blocks"].as_array().unwrap().len() as i64,
        total_blocks
    );
    let heights: Vec<u64> = blocks["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["share_id"].as_u64().unwrap())
        .collect();
    assert!(heights.windows(2).all(|w| w[0] > w[1]), "newest first");
    let (n, effort, current) = ledger_luck(&db);
    let luck = api.get_ok("/api/luck").await;
    assert_eq!(luck["blocks"].as_u64(), Some(n as u64));
    assert!(
        close(f(&luck["total_effort"]), effort),
        "{luck} vs {effort}"
    );
    assert!(close(f(&luck["luck"]), n as f64 / effort), "{luck}");
    assert!(close(f(&luck["current_round"]["difficulty_sum"]), current));
    let (status, body) = api.get("/api/blocks?limit=0").await;
    assert_eq!((status, body["field"].as_str()), (400, Some("limit")));

    // /api/difficulty and /api/jobs: the node's regtest chain.
    let d = api.get_ok("/api/difficulty").await;
    assert!(
        (f(&d["network_difficulty"]) - blgv_tests::node::chain::REGTEST_DIFFICULTY).abs() < 1e-15,
        "{d}"
    );
    assert_eq!(d["bits"], "207fffff");
    assert!(close(f(&d["vardiff"]["min"]), 1.0 / 65_536.0));
    let deadline = Instant::now() + Duration::from_secs(10);
    let jobs = loop {
        let jobs = api.get_ok("/api/jobs").await;
        if jobs["current"]["height"].as_u64() == Some(node.height() as u64 + 1) {
            break jobs;
        }
        assert!(
            Instant::now() < deadline,
            "{jobs} vs node {}",
            node.height()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(jobs["current"]["transactions"].as_u64(), Some(2));
    assert!(!jobs["recent"].as_array().unwrap().is_empty());

    // Miners and earnings against the payout engine's own view.
    let payouts = pool.payouts();
    let balances = payouts
        .with(|l| l.balances())
        .await
        .expect("payout balances");
    let alice = api.get_ok("/api/miners/alice").await;
    assert_eq!(alice["workers"].as_array().unwrap().len(), 2);
    assert_eq!(alice["scheme"], "pplns");
    let engine_alice = balances.iter().find(|b| b.account == "alice");
    if let Some(b) = engine_alice {
        assert_eq!(alice["balance"]["immature"].as_u64(), Some(b.immature.0));
        assert_eq!(alice["balance"]["mature"].as_u64(), Some(b.mature.0));
    }
    let pps = api.get_ok("/api/earnings/ppsminer").await;
    let pps_credits: u64 = pps["earnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "pps")
        .map(|e| e["amount"].as_u64().unwrap())
        .sum();
    let accrual = payouts
        .with(|l| l.pps_accrual("ppsminer"))
        .await
        .unwrap()
        .expect("ppsminer mined PPS shares");
    assert_eq!(pps_credits, accrual.credited.0);
    assert!(pps_credits > 0);
    let pending = api.get_ok("/api/payouts/pending").await;
    assert_eq!(pending["batches"], json!([]));
    let (status, body) = api.get("/api/miners/bad.name").await;
    assert_eq!((status, body["field"].as_str()), (400, Some("address")));

    // Registration: the address is validated for regtest; 4xx names the field.
    let good = common::PAYOUT_ADDRESS;
    let mainnet = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
    let (status, body) = api
        .post("/api/miners/register", json!({"address": mainnet}))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("address")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("regtest"),
        "{body}"
    );
    let (status, body) = api
        .post("/api/miners/register", json!({"label": "x"}))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("address")),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/api/miners/register",
            json!({"address": good, "colour": "red"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("colour")),
        "{body}"
    );
    let (status, body) = api
        .post_raw("/api/miners/register", b"{not json".to_vec(), None)
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("body")),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/api/miners/register",
            json!({"address": good, "label": "rig room"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["worker_example"], format!("{good}.rig1"));
    let (status, _) = api
        .post("/api/miners/register", json!({"address": good}))
        .await;
    assert_eq!(status, 200, "registering again is not an error");
    let miner = api.get_ok(&format!("/api/miners/{good}")).await;
    assert!(miner["registered_at_ms"].as_i64().is_some());
    assert_eq!(miner["address"], good);

    // Write endpoints need the token; bodies are limited.
    let anonymous = ApiClient::new(pool.api_addr(), None);
    let (status, body) = anonymous
        .post("/api/miners/register", json!({"address": good}))
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = api
        .post_raw(
            "/api/payouts/request",
            b"{}".to_vec(),
            Some("wrong-token-0123456789"),
        )
        .await;
    assert_eq!(status, 401);
    let big = format!("{{\"address\": \"{}\"}}", "x".repeat(10_000));
    let (status, _) = api
        .post_raw("/api/miners/register", big.into_bytes(), None)
        .await;
    assert_eq!(status, 413);
    // Nothing mature enough to pay yet (no change address configured either): a conflict.
    let (status, body) = api.post("/api/payouts/request", json!({})).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = api.post("/api/payouts/x/sent", json!({"tx": "00"})).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("id")),
        "{body}"
    );
    let (status, body) = api.post("/api/payouts/99/sent", json!({"tx": "00"})).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (404, Some("id")),
        "{body}"
    );
    let (status, body) = api.get("/api/nothing").await;
    assert_eq!(status, 404, "{body}");

    // /metrics: parses, documented names, values agree with the pool.
    let text = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metrics = parse_metrics(&text);
    for name in [
        "blgv_cloud_connections",
        "blgv_cloud_connections_opened_total",
        "blgv_cloud_shares_total{result=\"accepted\"}",
        "blgv_cloud_shares_total{result=\"stale\"}",
        "blgv_cloud_share_difficulty_total",
        "blgv_cloud_hashrate_hashes_per_second{window=\"10m\"}",
        "blgv_cloud_blocks_total{status=\"found\"}",
        "blgv_cloud_blocks_total{status=\"orphaned\"}",
        "blgv_cloud_templates_total",
        "blgv_cloud_template_age_seconds",
        "blgv_cloud_node_up",
        "blgv_cloud_node_errors_total",
        "blgv_cloud_payout_runs_total",
        "blgv_cloud_ledger_commit_failing",
        "blgv_cloud_node_rpc_duration_seconds_count{method=\"getblocktemplate\"}",
        "blgv_cloud_node_rpc_duration_seconds_count{method=\"submitblock\"}",
    ] {
        assert!(metrics.contains_key(name), "{name} missing from\n{text}");
    }
    assert_eq!(
        metrics["blgv_cloud_shares_total{result=\"accepted\"}"],
        ps.shares_accepted as f64
    );
    assert_eq!(
        metrics["blgv_cloud_blocks_total{status=\"found\"}"],
        ps.blocks_found as f64
    );
    assert_eq!(metrics["blgv_cloud_node_up"], 1.0);
    // The pool's Grafana dashboard queries only what is exported.
    let (queried, missing) =
        blgv_tests::grafana::dashboard_against_metrics("pool.json", &text).unwrap();
    assert!(queried.len() >= 10, "{queried:?}");
    assert!(
        missing.is_empty(),
        "pool.json queries {missing:?}, which /metrics does not export:\n{text}"
    );
    let ledger_sum: f64 = conn
        .query_row("SELECT SUM(difficulty) FROM shares", [], |r| r.get(0))
        .unwrap();
    assert!(close(
        metrics["blgv_cloud_share_difficulty_total"],
        ledger_sum
    ));

    // /health: fine, then 503 naming the node once the node is gone.
    let (status, h) = api.get("/health").await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["status"], "ok");
    node.go_offline().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let h = loop {
        let (status, h) = api.get("/health").await;
        if status == 503 {
            break h;
        }
        assert!(Instant::now() < deadline, "still {status}: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(h["checks"]["node"]["ok"], false, "{h}");
    assert!(
        h["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("node:")),
        "{h}"
    );
    assert_eq!(h["checks"]["stratum"]["ok"], true);
    assert_eq!(h["checks"]["database"]["ok"], true);
    node.go_online().await.unwrap();
    let back = async {
        loop {
            if api.get("/health").await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), back)
        .await
        .expect("healthy again once the node is back");

    pool.shutdown().await;
    node.stop().await;
}

/// `name{labels} value` lines of the OpenMetrics text, by `name{labels}`.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad metrics line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(name.starts_with("blgv_cloud_"), "{line}");
        out.insert(name.to_string(), value);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_valid_and_covers_the_api() {
    init_logging();
    let (node, pool, dir) = start().await;
    let api = ApiClient::new(pool.api_addr(), None);
    let doc = api.get_ok("/api/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/stats",
        "/api/hashrate",
        "/api/blocks",
        "/api/luck",
        "/api/difficulty",
        "/api/jobs",
        "/api/workers",
        "/api/workers/{id}",
        "/api/miners/{address}",
        "/api/earnings/{address}",
        "/api/payouts/pending",
        "/api/miners/register",
        "/api/payouts/request",
        "/api/payouts/{id}/sent",
        "/health",
        "/metrics",
        "/ws/pool-stats",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    // Write endpoints say they need the bearer token.
    assert!(paths["/api/payouts/request"]["post"]["security"].is_array());

    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let have_validator = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if have_validator {
        let out = std::process::Command::new("python3")
            .args(["-m", "openapi_spec_validator"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openapi-spec-validator: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    } else {
        eprintln!(
            "skipped schema validation: python3 module openapi_spec_validator is missing (pip install openapi-spec-validator)"
        );
    }
    pool.shutdown().await;
    node.stop().await;
}
