//! Miners that really hash → blgv-proxy → a test pool that referees every share with its own
//! (rust-bitcoin) validation. Real TCP on 127.0.0.1.

mod common;

use blgv_tests::{wait_until, MinerConfig, SimMiner, SubscribeStyle, TestPool, TestPoolConfig};
use common::{init_logging, ledger_by_worker, proxy_config};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Miner difficulty 2^-18 (~16k hashes a share) and pool difficulty 2^-15: one share in eight
/// reaches the pool, so both "forward" and "keep local" paths run constantly.
const MINER_DIFFICULTY: f64 = 1.0 / 262_144.0;
const POOL_DIFFICULTY: f64 = 1.0 / 32_768.0;
const SHARES_PER_MINER: u64 = 12;

fn style(i: usize) -> SubscribeStyle {
    match i % 4 {
        0 => SubscribeStyle::Empty,
        1 => SubscribeStyle::Agent,
        2 => SubscribeStyle::AgentNull,
        _ => SubscribeStyle::AgentSession,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_miners_every_forward_valid_and_every_count_reconciles() {
    init_logging();
    let pool = TestPool::start(TestPoolConfig {
        difficulty: POOL_DIFFICULTY,
        job_interval: Some(Duration::from_secs(2)),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = blgv_proxy::start(proxy_config(&[pool.addr()], MINER_DIFFICULTY, dir.path()))
        .await
        .unwrap();

    let miners: Vec<SimMiner> = (0..50)
        .map(|i| {
            let mut c = MinerConfig::new(proxy.local_addr(), format!("rig{i:02}"));
            c.subscribe_style = style(i);
            c.version_rolling = i % 2 == 0; // half roll version bits, half do not
            c.extranonce_subscribe = i % 3 == 0;
            c.authorize_before_subscribe = i % 5 == 0;
            c.hashrate = 40_000;
            // A fixed number of shares each, so every count is final before we compare.
            c.max_shares = Some(SHARES_PER_MINER);
            SimMiner::spawn(c)
        })
        .collect();

    let done = |m: &SimMiner| {
        let s = m.stats();
        s.submitted == SHARES_PER_MINER && s.accepted + s.rejected_total() == SHARES_PER_MINER
    };
    let all_done = wait_until(Duration::from_secs(120), || miners.iter().all(done)).await;
    let laggards: Vec<_> = miners
        .iter()
        .filter(|m| !done(m))
        .map(|m| {
            (
                m.worker().to_string(),
                m.stats().submitted,
                m.stats().accepted,
            )
        })
        .collect();
    assert!(
        all_done,
        "miners that did not get {SHARES_PER_MINER} answers: {laggards:?}"
    );

    let mut sent = HashMap::new();
    let mut coinbases: HashSet<[u8; 32]> = HashSet::new();
    let mut overlapping = 0;
    for m in miners {
        let worker = m.worker().to_string();
        let s = m.stats();
        m.stop().await;
        for txid in &s.coinbase_txids {
            if !coinbases.insert(*txid) {
                overlapping += 1;
            }
        }
        sent.insert(worker, s);
    }
    assert_eq!(overlapping, 0, "two miners produced the same coinbase");

    // Let every forward get its upstream answer.
    let settled = wait_until(Duration::from_secs(10), || {
        let s = proxy.stats();
        s.upstream_accepted + s.upstream_rejected + s.upstream_stale + s.upstream_unanswered
            == s.shares_forwarded
    })
    .await;
    let stats = proxy.stats();
    assert!(settled, "forwards still unanswered: {stats:?}");

    let ps = pool.stats();
    assert!(
        ps.invalid_shares.is_empty(),
        "pool found invalid shares: {:?}",
        ps.invalid_shares
    );
    assert_eq!(ps.rejects_total(), 0, "pool rejects: {:?}", ps.rejects);
    assert!(stats.shares_forwarded > 0);
    assert_eq!(
        ps.shares_meeting_difficulty, stats.shares_forwarded,
        "pool's count of shares ≥ its difficulty vs proxy forwards"
    );
    assert_eq!(stats.upstream_accepted, stats.shares_forwarded);
    assert_eq!(stats.upstream_rejected, 0);
    assert_eq!(
        stats.upstream_connections, 1,
        "50 miners fit one upstream connection"
    );

    let miner_accepted: u64 = sent.values().map(|s| s.accepted).sum();
    let miner_rejected: u64 = sent.values().map(|s| s.rejected_total()).sum();
    assert_eq!(stats.shares_accepted, miner_accepted);
    assert_eq!(miner_rejected, stats.shares_rejected);

    proxy.shutdown().await; // final ledger flush
    let ledger = ledger_by_worker(&dir.path().join("ledger.db"));
    assert_eq!(ledger.len(), 50, "one ledger worker per miner");
    for (worker, s) in &sent {
        let row = ledger
            .get(worker)
            .unwrap_or_else(|| panic!("{worker} missing from ledger"));
        assert_eq!(
            row.accepted as u64, s.accepted,
            "{worker}: ledger accepted vs miner's accepted answers"
        );
        assert_eq!(
            s.accepted, SHARES_PER_MINER,
            "{worker}: an honest miner's shares are all accepted"
        );
        assert_eq!(row.rejected as u64, s.rejected_total(), "{worker}: rejects");
        assert_eq!(row.upstream_rejected, 0);
    }
    let forwarded: i64 = ledger.values().map(|r| r.forwarded).sum();
    let upstream_ok: i64 = ledger.values().map(|r| r.upstream_accepted).sum();
    assert_eq!(forwarded as u64, stats.shares_forwarded);
    assert_eq!(upstream_ok as u64, stats.upstream_accepted);
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_miners_on_a_four_byte_extranonce2_need_two_upstreams_and_never_share_a_coinbase(
) {
    init_logging();
    let pool = TestPool::start(TestPoolConfig {
        extranonce2_size: 4,
        difficulty: POOL_DIFFICULTY,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 2^-16: ~65k hashes a share; at 15k H/s each miner finds one every few seconds.
    let proxy = blgv_proxy::start(proxy_config(&[pool.addr()], 1.0 / 65_536.0, dir.path()))
        .await
        .unwrap();

    let miners: Vec<SimMiner> = (0..300)
        .map(|i| {
            let mut c = MinerConfig::new(proxy.local_addr(), format!("m{i:03}"));
            c.subscribe_style = style(i);
            c.version_rolling = i % 2 == 1;
            c.hashrate = 15_000;
            SimMiner::spawn(c)
        })
        .collect();

    let ok = wait_until(Duration::from_secs(120), || {
        miners.iter().all(|m| m.stats().accepted >= 1)
    })
    .await;
    let idle = miners.iter().filter(|m| m.stats().accepted == 0).count();
    assert!(ok, "{idle} of 300 miners had no accepted share");

    // A 4-byte extranonce2 leaves one index byte: 256 miners per upstream connection.
    let stats = proxy.stats();
    assert_eq!(stats.upstream_connections, 2, "{stats:?}");
    let mut loads = proxy.upstream_loads();
    loads.sort();
    assert_eq!(loads, vec![44, 256]);

    let mut extranonce1s = HashSet::new();
    let mut coinbases = HashSet::new();
    let mut overlapping = 0;
    for m in miners {
        let s = m.stats();
        assert_eq!(s.extranonce2_size, 3, "miners keep 3 of the 4 bytes");
        assert!(
            extranonce1s.insert(s.extranonce1.clone()),
            "extranonce1 {} given twice",
            s.extranonce1
        );
        for t in &s.coinbase_txids {
            if !coinbases.insert(*t) {
                overlapping += 1;
            }
        }
        m.stop().await;
    }
    assert_eq!(overlapping, 0, "two miners produced the same coinbase");
    let ps = pool.stats();
    assert!(ps.invalid_shares.is_empty(), "{:?}", ps.invalid_shares);
    assert_eq!(ps.rejects_total(), 0, "{:?}", ps.rejects);
    assert_eq!(
        ps.accepted_by_extranonce1.len(),
        2,
        "shares arrived over two upstream connections"
    );
    proxy.shutdown().await;
    pool.stop().await;
}
