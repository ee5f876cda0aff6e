//! The upstream link misbehaving in the ways real networks do, through a TCP relay between the
//! proxy and a real (validating) test pool:
//! - black-holed: the connection stays up and nothing comes back (a dead route, a hung pool).
//!   The proxy notices the unanswered shares, fails over to the secondary pool, and fails back
//!   once the primary answers again;
//! - flapping: the link is cut again and again. The proxy reconnects each time, miners keep
//!   mining, and no locally accepted share is rejected upstream.

mod common;

use blgv_tests::relay::Relay;
use blgv_tests::{wait_until, MinerConfig, SimMiner, TestPool, TestPoolConfig};
use common::{init_logging, proxy_config_with};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MINER_DIFFICULTY: f64 = 1.0 / 262_144.0;

fn pool_config() -> TestPoolConfig {
    TestPoolConfig {
        difficulty: 1.0 / 65_536.0,
        job_interval: Some(Duration::from_secs(1)),
        ..Default::default()
    }
}

fn miners(proxy: SocketAddr, n: usize) -> Vec<SimMiner> {
    (0..n)
        .map(|i| {
            let mut c = MinerConfig::new(proxy, format!("rig{i}"));
            c.extranonce_subscribe = i % 2 == 0;
            c.hashrate = 40_000;
            SimMiner::spawn(c)
        })
        .collect()
}

fn accepted(miners: &[SimMiner]) -> u64 {
    miners.iter().map(|m| m.stats().accepted).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_primary_is_left_for_the_secondary_and_regained_when_it_answers() {
    init_logging();
    let primary = TestPool::start(pool_config()).unwrap();
    let secondary = TestPool::start(pool_config()).unwrap();
    let relay = Relay::start(primary.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let answer_timeout_ms = 2_000;
    let mut config = proxy_config_with(
        &[relay.addr, secondary.addr()],
        MINER_DIFFICULTY,
        dir.path(),
        "",
    );
    config.failover.answer_timeout_ms = answer_timeout_ms;
    let proxy = blgv_proxy::start(config).await.unwrap();
    let miners = miners(proxy.local_addr(), 6);
    assert!(
        wait_until(Duration::from_secs(30), || primary.stats().shares_accepted
            >= 10)
        .await,
        "no shares reached the primary"
    );

    relay.set_black_hole(true);
    let cut_at = Instant::now();
    let on_secondary = secondary.stats().shares_accepted;
    assert!(
        wait_until(Duration::from_secs(15), || secondary
            .stats()
            .shares_accepted
            >= on_secondary + 5)
        .await,
        "still no shares on the secondary {:?} after the primary went silent: {:?}",
        cut_at.elapsed(),
        proxy.stats()
    );
    let failover = cut_at.elapsed();
    assert!(proxy.stats().pool_switches >= 1);
    let before = accepted(&miners);
    assert!(
        wait_until(Duration::from_secs(10), || accepted(&miners) >= before + 10).await,
        "miners stopped mining after the failover"
    );

    // The primary answers again: the failback probe brings the proxy home.
    relay.set_black_hole(false);
    let back_at = Instant::now();
    let on_primary = primary.stats().shares_accepted;
    assert!(
        wait_until(Duration::from_secs(15), || primary.stats().shares_accepted
            >= on_primary + 5)
        .await,
        "the proxy did not return to the primary: {:?}",
        proxy.stats()
    );
    let failback = back_at.elapsed();
    let st = proxy.stats();
    assert_eq!(
        st.upstream_rejected, 0,
        "a local accept was rejected upstream"
    );
    assert_eq!(secondary.stats().rejects_total(), 0);
    eprintln!(
        "black hole: on the secondary {failover:?} after the cut (answer timeout {answer_timeout_ms} ms); \
         back on the primary {failback:?} after it answered; {} forwards unanswered in the hole",
        st.upstream_unanswered
    );
    for m in miners {
        m.stop().await;
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_link_is_reconnected_every_time_and_no_share_is_lost_to_it() {
    init_logging();
    let pool = TestPool::start(pool_config()).unwrap();
    let relay = Relay::start(pool.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = blgv_proxy::start(proxy_config_with(
        &[relay.addr],
        MINER_DIFFICULTY,
        dir.path(),
        "",
    ))
    .await
    .unwrap();
    let miners = miners(proxy.local_addr(), 6);
    assert!(
        wait_until(Duration::from_secs(30), || pool.stats().shares_accepted
            >= 10)
        .await
    );

    let connects = proxy.stats().upstream_connects_total;
    let (before, upstream_before) = (accepted(&miners), pool.stats().shares_accepted);
    let cuts = 8;
    for _ in 0..cuts {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        relay.cut_all();
    }
    // After the storm: mining goes on through a fresh connection.
    let upstream_mid = pool.stats().shares_accepted;
    assert!(
        wait_until(Duration::from_secs(15), || pool.stats().shares_accepted
            >= upstream_mid + 10)
        .await,
        "no shares upstream after the flapping stopped: {:?}",
        proxy.stats()
    );
    let st = proxy.stats();
    assert!(
        st.upstream_connects_total >= connects + cuts,
        "{} reconnects for {cuts} cuts",
        st.upstream_connects_total - connects
    );
    assert!(
        upstream_mid > upstream_before,
        "no share reached the pool while the link flapped"
    );
    assert!(accepted(&miners) > before + 20, "miners stalled");
    assert_eq!(
        st.upstream_rejected, 0,
        "a local accept was rejected upstream"
    );
    assert_eq!(
        pool.stats().rejects_total(),
        0,
        "{:?}",
        pool.stats().rejects
    );
    eprintln!(
        "flapping: {cuts} cuts, {} reconnects, {} shares accepted upstream during the storm, {} forwards lost in cut connections, 0 rejected",
        st.upstream_connects_total - connects,
        upstream_mid - upstream_before,
        st.upstream_unanswered
    );
    for m in miners {
        m.stop().await;
    }
    proxy.shutdown().await;
}
