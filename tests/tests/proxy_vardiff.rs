//! Vardiff steers a real hashing miner toward the configured share rate; suggest_difficulty is
//! honoured within the configured bounds.

mod common;

use blgv_tests::{wait_until, MinerConfig, SimMiner, TestPool, TestPoolConfig};
use common::{init_logging, proxy_config, RawClient};
use serde_json::json;
use std::time::Duration;

/// 2^exp, exactly.
fn p2(exp: i32) -> f64 {
    f64::from_bits(((1023 + exp) as u64) << 52)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vardiff_moves_a_fast_miner_to_the_target_rate() {
    init_logging();
    let pool = TestPool::start(TestPoolConfig {
        difficulty: p2(-12),
        job_interval: Some(Duration::from_secs(2)),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = proxy_config(&[pool.addr()], p2(-24), dir.path());
    config.vardiff.max = p2(-12);
    config.vardiff.target_shares_per_minute = 120.0;
    config.vardiff.retarget_secs = 3;
    let proxy = blgv_proxy::start(config).await.unwrap();

    // 20k H/s at difficulty 2^-24 (256 hashes a share) is ~80 shares/s: 40× the 2/s goal.
    // The goal is met at ~2^-18.7; powers of two put it at 2^-19 or 2^-18.
    let mut c = MinerConfig::new(proxy.local_addr(), "fast");
    c.hashrate = 20_000;
    let miner = SimMiner::spawn(c);
    let settled = wait_until(Duration::from_secs(30), || {
        let d = miner.stats().difficulty;
        (p2(-20)..=p2(-17)).contains(&d)
    })
    .await;
    assert!(
        settled,
        "difficulty never settled near 2^-19: {}",
        miner.stats().difficulty
    );

    // Measured rate over 9 s, after one more retarget window for stability.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a0 = miner.stats().accepted;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let per_minute = (miner.stats().accepted - a0) as f64 * 60.0 / 9.0;
    let d = miner.stats().difficulty;
    assert!(
        (40.0..=360.0).contains(&per_minute),
        "rate {per_minute:.0}/min at difficulty {d} (goal 120)"
    );
    assert_eq!(d.log2().fract(), 0.0, "powers of two only: {d}");
    assert_eq!(miner.stats().rejected_total(), 0);
    miner.stop().await;
    proxy.shutdown().await;
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggest_difficulty_is_honoured_within_bounds_and_upstream_ceiling() {
    init_logging();
    let pool = TestPool::start(TestPoolConfig {
        difficulty: p2(-10),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = proxy_config(&[pool.addr()], p2(-20), dir.path());
    config.vardiff.min = p2(-24);
    config.vardiff.max = 4.0; // above the pool's 2^-10: the pool is the ceiling
    let proxy = blgv_proxy::start(config).await.unwrap();

    // (suggested, expected): inside bounds → power of two at or below; above the upstream →
    // the upstream's difficulty; below min → min.
    for (suggested, expected) in [
        (p2(-16) * 1.5, p2(-16)),
        (1000.0, p2(-10)),
        (p2(-30), p2(-24)),
    ] {
        let mut c = RawClient::connect(proxy.local_addr()).await;
        let r = c
            .call(1, "mining.suggest_difficulty", json!([suggested]))
            .await;
        assert_eq!(r["result"], true);
        c.call(2, "mining.subscribe", json!(["cgminer/4.11"])).await;
        c.call(3, "mining.authorize", json!(["w", "x"])).await;
        let d = c.notification("mining.set_difficulty").await;
        assert_eq!(
            d["params"][0].as_f64().unwrap(),
            expected,
            "suggested {suggested}"
        );
    }

    // Integer difficulties go on the wire as integers (firmware breaks on "64.0").
    let pool2 = TestPool::start(TestPoolConfig {
        difficulty: 1e6,
        ..Default::default()
    })
    .unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let mut config = proxy_config(&[pool2.addr()], 64.0, dir2.path());
    config.vardiff.max = 1e6;
    let proxy2 = blgv_proxy::start(config).await.unwrap();
    let mut c = RawClient::connect(proxy2.local_addr()).await;
    c.call(1, "mining.subscribe", json!([])).await;
    c.call(2, "mining.authorize", json!(["w", "x"])).await;
    let d = c.notification("mining.set_difficulty").await;
    assert_eq!(d["params"].to_string(), "[64]");
    c.send(3, "mining.suggest_difficulty", json!([3000])).await;
    let d = c.notification("mining.set_difficulty").await;
    assert_eq!(d["params"].to_string(), "[2048]");

    proxy.shutdown().await;
    proxy2.shutdown().await;
    pool.stop().await;
    pool2.stop().await;
}
