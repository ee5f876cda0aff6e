//! The simulated site talking to itself, no proxy in between: `SimMiner`s mine directly on a
//! `TestPool`. This proves the two halves agree on Stratum V1 and on share maths before they
//! are used to referee the proxy.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use blgv_tests::{wait_until, MinerConfig, SimMiner, SubscribeStyle, TestPool, TestPoolConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// ~17k hashes per share: about 3 shares/s for a 50 kH/s miner.
const DIFFICULTY: f64 = 4e-6;

fn pool_config() -> TestPoolConfig {
    TestPoolConfig {
        difficulty: DIFFICULTY,
        ..TestPoolConfig::default()
    }
}

/// One miner of each subscribe style, mixing version rolling, authorize order, extranonce
/// subscription and a difficulty suggestion.
fn mixed_miners(pool: SocketAddr, max_shares: Option<u64>) -> Vec<SimMiner> {
    let styles = [
        SubscribeStyle::Empty,
        SubscribeStyle::Agent,
        SubscribeStyle::AgentNull,
        SubscribeStyle::AgentSession,
    ];
    styles
        .iter()
        .enumerate()
        .map(|(i, &style)| {
            let mut cfg = MinerConfig::new(pool, format!("worker{i}"));
            cfg.subscribe_style = style;
            cfg.version_rolling = i % 2 == 1;
            cfg.authorize_before_subscribe = i == 2;
            cfg.extranonce_subscribe = i >= 2;
            cfg.suggest_difficulty = (i == 3).then_some(0.001);
            cfg.max_shares = max_shares;
            SimMiner::spawn(cfg)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_mine_directly_on_the_pool() {
    let pool = TestPool::start(pool_config()).unwrap();
    // A fixed share budget makes the final counts exact: once every miner has its answers,
    // nothing is in flight and pool and miners must agree to the share.
    const SHARES: u64 = 6;
    let miners = mixed_miners(pool.addr(), Some(SHARES));

    let done = wait_until(Duration::from_secs(20), || {
        miners.iter().all(|m| {
            let s = m.stats();
            s.submitted == SHARES && s.accepted + s.rejected_total() == SHARES
        })
    })
    .await;
    let stats: Vec<_> = miners.iter().map(SimMiner::stats).collect();
    let ps = pool.stats();
    assert!(done, "miners did not finish: {stats:#?}\npool: {ps:#?}");

    for (m, s) in miners.iter().zip(&stats) {
        assert!(s.accepted >= 5, "{}: {s:?}", m.worker());
        assert!(s.rejected.is_empty(), "{}: {s:?}", m.worker());
        assert_eq!(s.tcp_connects, 1);
        assert!(s.authorized);
        assert_eq!(s.difficulty, DIFFICULTY);
        assert_eq!(s.extranonce2_size, 8);
        assert_eq!(
            ps.accepted_by_extranonce1.get(&s.extranonce1),
            Some(&s.accepted)
        );
    }
    // Version rolling was negotiated exactly for the miners that asked, and really used.
    for (i, s) in stats.iter().enumerate() {
        let expect = if i % 2 == 1 { 0x1fff_e000 } else { 0 };
        assert_eq!(s.granted_version_mask, expect, "miner {i}");
    }
    assert!(ps.accepted_with_rolled_version > 0, "{ps:#?}");

    let accepted: u64 = stats.iter().map(|s| s.accepted).sum();
    assert_eq!(ps.shares_accepted, accepted);
    assert_eq!(ps.shares_meeting_difficulty, accepted);
    assert_eq!(ps.submits_received, accepted);
    assert_eq!(ps.rejects_total(), 0, "{:#?}", ps.invalid_shares);
    assert_eq!(ps.connections_accepted, 4);
    assert_eq!(ps.connections_open, 4);
    assert_eq!(ps.subscribe_count, 4);
    assert_eq!(ps.authorize_count, 4);

    // No two miners ever built the same coinbase; the pool saw exactly their union.
    let mut union = HashSet::new();
    for s in &stats {
        for txid in &s.coinbase_txids {
            assert!(union.insert(*txid), "coinbase shared between miners");
        }
    }
    assert_eq!(ps.distinct_coinbase_txids, union.len() as u64);

    for m in miners {
        m.stop().await;
    }
    assert!(
        wait_until(Duration::from_secs(2), || pool.stats().connections_open
            == 0)
        .await
    );
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_reconnect_after_the_pool_restarts() {
    let pool = TestPool::start(pool_config()).unwrap();
    let addr = pool.addr();
    let miners = mixed_miners(addr, None);
    assert!(
        wait_until(Duration::from_secs(15), || miners
            .iter()
            .all(|m| m.stats().accepted >= 2))
        .await
    );
    let before: Vec<u64> = miners.iter().map(|m| m.stats().accepted).collect();

    pool.stop().await;
    assert!(
        wait_until(Duration::from_secs(2), || miners
            .iter()
            .all(|m| !m.stats().connected))
        .await,
        "stop() must close client connections at once"
    );
    // Down long enough for some connects to be refused and the backoff to grow.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(miners.iter().all(|m| m.stats().tcp_connects == 1));

    let pool = TestPool::start_on(addr, pool_config()).unwrap();
    assert_eq!(pool.addr(), addr);
    let ok = wait_until(Duration::from_secs(15), || {
        miners.iter().zip(&before).all(|(m, &b)| {
            let s = m.stats();
            s.tcp_connects >= 2 && s.accepted >= b + 2
        })
    })
    .await;
    let stats: Vec<_> = miners.iter().map(SimMiner::stats).collect();
    assert!(ok, "{stats:#?}");
    let ps = pool.stats();
    assert_eq!(ps.connections_accepted, 4);
    assert_eq!(ps.rejects_total(), 0, "{:#?}", ps.invalid_shares);
    assert!(stats.iter().all(|s| s.rejected.is_empty()), "{stats:#?}");
    for m in miners {
        m.stop().await;
    }
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_follow_new_jobs_and_difficulty_changes() {
    let pool = TestPool::start(TestPoolConfig {
        job_interval: Some(Duration::from_millis(250)),
        ..pool_config()
    })
    .unwrap();
    let mut cfg = MinerConfig::new(pool.addr(), "follower");
    cfg.version_rolling = true;
    let miner = SimMiner::spawn(cfg);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = miner.stats();
            s.notifies_received >= 4 && s.accepted >= 3
        })
        .await,
        "{:?}",
        miner.stats()
    );

    pool.set_difficulty(2e-6);
    pool.new_job(true).await;
    let job = pool.stats().current_job_id;
    assert!(
        wait_until(Duration::from_secs(3), || {
            let s = miner.stats();
            s.difficulty == 2e-6 && s.last_notify_at.is_some()
        })
        .await
    );
    let after = miner.stats().accepted;
    assert!(
        wait_until(Duration::from_secs(10), || miner.stats().accepted
            >= after + 3)
        .await
    );
    let s = miner.stats();
    assert!(
        pool.stats().jobs_created >= 5,
        "the first job plus ticks: {job}"
    );
    assert!(
        s.rejected.is_empty(),
        "{s:?} {:#?}",
        pool.stats().invalid_shares
    );
    assert_eq!(pool.stats().rejects_total(), 0);
    miner.stop().await;
    pool.stop().await;
}

/// A hand-driven Stratum client for poking the pool with wrong input.
struct Raw {
    lines: Lines<BufReader<OwnedReadHalf>>,
    wr: OwnedWriteHalf,
    next_id: u64,
    notifies: Vec<Value>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let (rd, wr) = TcpStream::connect(addr).await.unwrap().into_split();
        Raw {
            lines: BufReader::new(rd).lines(),
            wr,
            next_id: 1,
            notifies: Vec::new(),
        }
    }

    async fn send_raw(&mut self, line: &str) {
        self.wr.write_all(line.as_bytes()).await.unwrap();
        self.wr.write_all(b"\n").await.unwrap();
    }

    /// Next message that is not a notification (notifications are kept).
    async fn reply(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
                .await
                .expect("pool answered within 5 s")
                .unwrap()
                .expect("connection still open");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v.get("method").is_some() {
                if v["method"] == "mining.notify" {
                    self.notifies.push(v["params"].clone());
                }
                continue;
            }
            return v;
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.send_raw(&msg.to_string()).await;
        let v = self.reply().await;
        assert_eq!(v["id"], json!(id), "{v}");
        v
    }

    /// Waits until a notify for a job other than `not` arrives.
    async fn notify_other_than(&mut self, not: &str) -> Value {
        loop {
            if let Some(n) = self.notifies.last() {
                if n[0] != not {
                    return n.clone();
                }
            }
            let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["method"] == "mining.notify" {
                self.notifies.push(v["params"].clone());
            }
        }
    }
}

fn code(v: &Value) -> i64 {
    v["error"][0]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error: {v}"))
}

/// The pool as referee: wrong input gets the right error code and the connection survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_rejects_bad_input_with_the_right_codes_and_keeps_going() {
    // A difficulty so low that every hash meets it: acceptance is decided by the other rules.
    let pool = TestPool::start(TestPoolConfig {
        difficulty: 1e-12,
        extranonce2_size: 4,
        ntime_max_ahead_secs: 600,
        ..TestPoolConfig::default()
    })
    .unwrap();
    let mut c = Raw::connect(pool.addr()).await;

    c.send_raw("this is not json").await;
    let v = c.reply().await;
    assert_eq!((code(&v), &v["id"]), (20, &Value::Null));
    c.send_raw(&"x".repeat(70_000)).await;
    assert_eq!(code(&c.reply().await), 20);
    assert_eq!(code(&c.call("mining.nonsense", json!([])).await), 20);
    let v = c
        .call(
            "mining.submit",
            json!(["w", "1", "00000000", "00000000", "00000000"]),
        )
        .await;
    assert_eq!(code(&v), 25, "submit before subscribe");

    let v = c
        .call(
            "mining.configure",
            json!([["version-rolling", "minimum-difficulty"], {"version-rolling.mask": "ffffffff"}]),
        )
        .await;
    assert_eq!(
        v["result"],
        json!({"version-rolling": true, "version-rolling.mask": "1fffe000", "minimum-difficulty": false})
    );
    assert_eq!(code(&c.call("mining.subscribe", json!([5])).await), 20);
    let v = c.call("mining.subscribe", json!(["raw/1", null])).await;
    assert_eq!(v["result"][2], json!(4));
    assert_eq!(v["result"][0][1][0], json!("mining.notify"));
    let notify = c.notify_other_than("").await;
    let job = notify[0].as_str().unwrap().to_string();
    let ntime = notify[7].as_str().unwrap().to_string();
    let submit = |job: &str, en2: &str, ntime: &str, nonce: &str, vb: Option<&str>| {
        let mut p = json!(["w", job, en2, ntime, nonce]);
        if let Some(vb) = vb {
            p.as_array_mut().unwrap().push(json!(vb));
        }
        p
    };

    let v = c
        .call(
            "mining.submit",
            submit("nope", "00000001", &ntime, "0", None),
        )
        .await;
    assert_eq!(code(&v), 21, "unknown job comes before authorization");
    let v = c
        .call(
            "mining.submit",
            submit(&job, "00000001", &ntime, "00000000", None),
        )
        .await;
    assert_eq!(code(&v), 24, "worker not authorized");
    assert_eq!(
        c.call("mining.authorize", json!(["w", "x"])).await["result"],
        json!(true)
    );
    assert_eq!(
        c.call("mining.extranonce.subscribe", json!([])).await["result"],
        json!(true)
    );
    assert_eq!(
        c.call("mining.suggest_difficulty", json!([1])).await["result"],
        json!(true)
    );

    for (params, why) in [
        (json!(["w", job]), "too few params"),
        (json!("w"), "params not a list"),
        (
            submit(&job, "000001", &ntime, "00000000", None),
            "extranonce2 too short",
        ),
        (
            submit(&job, "0000000z", &ntime, "00000000", None),
            "extranonce2 not hex",
        ),
        (
            submit(&job, "00000001", "00000000", "00000000", None),
            "ntime before the job",
        ),
        (
            submit(&job, "00000001", "ffffffff", "00000000", None),
            "ntime too far ahead",
        ),
        (submit(&job, "00000001", &ntime, "0", None), "short nonce"),
        (
            submit(&job, "00000001", &ntime, "00000000", Some("00000001")),
            "bits outside mask",
        ),
    ] {
        assert_eq!(code(&c.call("mining.submit", params).await), 20, "{why}");
    }

    let good = submit(&job, "00000001", &ntime, "00000000", Some("00002000"));
    let v = c.call("mining.submit", good.clone()).await;
    assert_eq!(v, json!({"id": v["id"], "result": true, "error": null}));
    assert_eq!(code(&c.call("mining.submit", good).await), 22, "duplicate");

    // A difficulty rise applies to new jobs; the old job is still judged by its own.
    pool.set_difficulty(1e9);
    pool.new_job(true).await;
    let new_notify = c.notify_other_than(&job).await;
    let new_job = new_notify[0].as_str().unwrap().to_string();
    let new_ntime = new_notify[7].as_str().unwrap().to_string();
    let v = c
        .call(
            "mining.submit",
            submit(&new_job, "00000002", &new_ntime, "00000000", None),
        )
        .await;
    assert_eq!(code(&v), 23, "low difficulty on the new job");
    let v = c
        .call(
            "mining.submit",
            submit(&job, "00000003", &ntime, "00000000", None),
        )
        .await;
    assert_eq!(v["result"], json!(true), "{v}");

    let s = pool.stats();
    assert_eq!(s.shares_accepted, 2);
    assert_eq!(s.malformed_messages, 2);
    assert_eq!(s.submits_received, 15);
    let rejects: Vec<_> = s.rejects.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(
        rejects,
        vec![(20, 8), (21, 1), (22, 1), (23, 1), (24, 1), (25, 1)]
    );
    assert_eq!(s.invalid_shares.len(), 13);
    assert!(s.invalid_shares.iter().all(|i| !i.reason.is_empty()));
    assert_eq!(s.connections_open, 1);
    pool.stop().await;
    // stop() closed our connection.
    let eof = tokio::time::timeout(Duration::from_secs(2), c.lines.next_line())
        .await
        .unwrap();
    assert!(matches!(eof, Ok(None) | Err(_)));
}

/// The throttle holds: a 20 kH/s miner does about 20k hashes a second, not as many as the CPU
/// allows (hundreds of miners must share two cores with the proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miner_honours_its_hashrate() {
    let pool = TestPool::start(TestPoolConfig {
        difficulty: 1e6, // no shares: only hashing is measured
        ..TestPoolConfig::default()
    })
    .unwrap();
    let mut cfg = MinerConfig::new(pool.addr(), "paced");
    cfg.hashrate = 20_000;
    let miner = SimMiner::spawn(cfg);
    assert!(wait_until(Duration::from_secs(5), || miner.stats().hashes > 0).await);
    let (h0, t0) = (miner.stats().hashes, std::time::Instant::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rate = (miner.stats().hashes - h0) as f64 / t0.elapsed().as_secs_f64();
    assert!((10_000.0..=22_000.0).contains(&rate), "{rate:.0} H/s");
    miner.stop().await;
    pool.stop().await;
}

/// Capacity probe, not run by default:
/// `cargo test -p blgv-tests --test sim_direct capacity -- --ignored --nocapture`.
/// 300 miners asking 15 kH/s each (4.5 MH/s) on this machine's two cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn capacity_300_miners() {
    let pool = TestPool::start(TestPoolConfig {
        difficulty: 1.0 / 65_536.0,
        extranonce2_size: 4,
        ..TestPoolConfig::default()
    })
    .unwrap();
    let miners: Vec<SimMiner> = (0..300)
        .map(|i| {
            let mut cfg = MinerConfig::new(pool.addr(), format!("m{i:03}"));
            cfg.hashrate = 15_000;
            cfg.version_rolling = i % 2 == 1;
            SimMiner::spawn(cfg)
        })
        .collect();
    let t0 = std::time::Instant::now();
    let all = wait_until(Duration::from_secs(60), || {
        miners.iter().all(|m| m.stats().accepted >= 1)
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let hashes: u64 = miners.iter().map(|m| m.stats().hashes).sum();
    let ps = pool.stats();
    println!(
        "all>=1: {all} after {secs:.1}s; {:.0} H/s total; pool accepted {} rejects {}",
        hashes as f64 / secs,
        ps.shares_accepted,
        ps.rejects_total()
    );
    for m in miners {
        m.stop().await;
    }
    pool.stop().await;
}
