//! Failover: the primary pool dies mid-run, miners move to the secondary without losing their
//! TCP session (when they subscribed to extranonce changes), and come back when it returns.

mod common;

use blgv_tests::{wait_until, MinerConfig, SimMiner, TestPool, TestPoolConfig};
use common::{init_logging, proxy_config};
use std::time::{Duration, Instant};

const MINER_DIFFICULTY: f64 = 1.0 / 262_144.0;

fn pool_config() -> TestPoolConfig {
    TestPoolConfig {
        difficulty: 1.0 / 65_536.0,
        job_interval: Some(Duration::from_secs(1)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_loss_moves_miners_to_secondary_within_5s_and_back_when_it_returns() {
    init_logging();
    let primary = TestPool::start(pool_config()).unwrap();
    let primary_addr = primary.addr();
    let secondary = TestPool::start(pool_config()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = blgv_proxy::start(proxy_config(
        &[primary_addr, secondary.addr()],
        MINER_DIFFICULTY,
        dir.path(),
    ))
    .await
    .unwrap();

    // Ten miners subscribe to extranonce changes (they must keep TCP); four do not (they are
    // asked to reconnect).
    let sticky: Vec<SimMiner> = (0..10)
        .map(|i| {
            let mut c = MinerConfig::new(proxy.local_addr(), format!("sticky{i}"));
            c.extranonce_subscribe = true;
            c.version_rolling = i % 2 == 0;
            c.hashrate = 40_000;
            SimMiner::spawn(c)
        })
        .collect();
    let plain: Vec<SimMiner> = (0..4)
        .map(|i| {
            let mut c = MinerConfig::new(proxy.local_addr(), format!("plain{i}"));
            c.hashrate = 40_000;
            SimMiner::spawn(c)
        })
        .collect();
    let all = || sticky.iter().chain(plain.iter());

    assert!(
        wait_until(Duration::from_secs(60), || all()
            .all(|m| m.stats().accepted >= 3))
        .await,
        "miners never mined on the primary"
    );
    assert!(primary.stats().shares_accepted > 0);
    assert_eq!(
        secondary.stats().shares_accepted,
        0,
        "secondary unused while primary is up"
    );

    // Kill the primary.
    let before: Vec<u64> = all().map(|m| m.stats().accepted).collect();
    let killed_at = Instant::now();
    primary.stop().await;

    let moved = wait_until(Duration::from_secs(5), || {
        sticky.iter().all(|m| {
            let s = m.stats();
            s.set_extranonce_received >= 1 && s.last_notify_at.is_some_and(|t| t > killed_at)
        }) && plain.iter().all(|m| {
            let s = m.stats();
            s.tcp_connects >= 2 && s.last_notify_at.is_some_and(|t| t > killed_at)
        })
    })
    .await;
    let took = killed_at.elapsed();
    assert!(
        moved,
        "not every miner had work from the secondary 5 s after the primary died: {:?}",
        all()
            .map(|m| (
                m.worker().to_string(),
                m.stats().set_extranonce_received,
                m.stats().tcp_connects
            ))
            .collect::<Vec<_>>()
    );
    eprintln!("failover: all miners had new work {took:?} after the primary died");

    // Shares keep being accepted, now by the secondary.
    let mining = wait_until(Duration::from_secs(30), || {
        all().zip(&before).all(|(m, b)| m.stats().accepted >= b + 3)
    })
    .await;
    assert!(mining, "shares stopped after failover");
    assert!(
        secondary.stats().shares_accepted > 0,
        "secondary received no shares"
    );
    for m in &sticky {
        assert_eq!(
            m.stats().tcp_connects,
            1,
            "{} lost its TCP session",
            m.worker()
        );
    }

    // The primary comes back on its old address: traffic returns to it.
    let primary = TestPool::start_on(primary_addr, pool_config()).unwrap();
    let returned = wait_until(Duration::from_secs(15), || {
        primary.stats().shares_accepted >= 10
    })
    .await;
    assert!(
        returned,
        "no traffic back on the primary: {:?}",
        proxy.stats()
    );
    let on_secondary = secondary.stats().shares_accepted;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late = secondary.stats().shares_accepted - on_secondary;
    assert!(
        late <= 2,
        "secondary still receiving shares after failback ({late})"
    );
    for m in &sticky {
        assert_eq!(
            m.stats().tcp_connects,
            1,
            "{} lost its TCP session on failback",
            m.worker()
        );
    }

    // Nothing the pools saw was invalid, and no upstream rejected what the proxy accepted.
    for p in [&primary, &secondary] {
        let s = p.stats();
        assert!(s.invalid_shares.is_empty(), "{:?}", s.invalid_shares);
        assert_eq!(
            s.rejects.get(&23),
            None,
            "low-difficulty rejects upstream: {:?}",
            s.rejects
        );
    }
    let stats = proxy.stats();
    assert_eq!(stats.upstream_rejected, 0, "{stats:?}");
    assert!(stats.pool_switches >= 2, "{stats:?}");
    assert_eq!(stats.active_pool, 0);

    for m in sticky.into_iter().chain(plain) {
        m.stop().await;
    }
    proxy.shutdown().await;
    primary.stop().await;
    secondary.stop().await;
}
