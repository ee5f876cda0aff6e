//! Hostile and broken input against a live proxy, while honest miners keep mining. Each case
//! states the answer a miner must get; the proxy must neither panic nor disturb the others.

mod common;

use blgv_tests::{wait_until, MinerConfig, SimMiner, TestPool, TestPoolConfig};
use common::hostile::{self, EVERYTHING_VALID};
use common::{init_logging, proxy_config};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_matrix_gets_clear_answers_while_honest_miners_keep_mining() {
    init_logging();
    let pool = TestPool::start(TestPoolConfig {
        difficulty: 1.0 / 65_536.0,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = proxy_config(&[pool.addr()], EVERYTHING_VALID, dir.path());
    config.vardiff.max = 1.0; // room for suggest_difficulty in the low-difficulty case
    let proxy = blgv_proxy::start(config).await.unwrap();
    let addr = proxy.local_addr();

    let honest: Vec<SimMiner> = (0..3)
        .map(|i| {
            let mut c = MinerConfig::new(addr, format!("honest{i}"));
            c.hashrate = 300; // every hash is a share at this difficulty
            c.version_rolling = i == 0;
            SimMiner::spawn(c)
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(30), || honest
            .iter()
            .all(|m| m.stats().accepted >= 3))
        .await
    );

    hostile::run_matrix(addr, || pool.new_job(false)).await;

    // The honest miners never noticed.
    let before: Vec<u64> = honest.iter().map(|m| m.stats().accepted).collect();
    assert!(
        wait_until(Duration::from_secs(30), || honest
            .iter()
            .zip(&before)
            .all(|(m, b)| m.stats().accepted > *b + 2))
        .await
    );
    for m in &honest {
        assert_eq!(m.stats().rejected_total(), 0, "{} got rejects", m.worker());
    }
    let ps = pool.stats();
    assert!(ps.invalid_shares.is_empty(), "{:?}", ps.invalid_shares);
    assert_eq!(
        ps.rejects_total(),
        0,
        "nothing bad reached the pool: {:?}",
        ps.rejects
    );
    let s = proxy.stats();
    assert!(
        s.shares_duplicate >= 1 && s.shares_stale >= 1 && s.shares_low_difficulty >= 2,
        "{s:?}"
    );

    for m in honest {
        m.stop().await;
    }
    proxy.shutdown().await;
    pool.stop().await;
}
