//! The proxy applies the upstream's rules: the version mask it granted, and — when the pool
//! still disagrees — the reject of a locally accepted share is counted, logged and kept.

mod common;

use blgv_tests::{wait_until, MinerConfig, SimMiner, TestPool, TestPoolConfig};
use common::{init_logging, ledger_by_worker, proxy_config, RawClient};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_roll_only_the_bits_the_upstream_granted() {
    init_logging();
    // The pool grants only 00ffe000 of the proxy's 1fffe000 request.
    let pool = TestPool::start(TestPoolConfig {
        version_mask: 0x00ff_e000,
        difficulty: 1.0 / 65_536.0,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = blgv_proxy::start(proxy_config(&[pool.addr()], 1.0 / 262_144.0, dir.path()))
        .await
        .unwrap();

    let mut c = MinerConfig::new(proxy.local_addr(), "roller");
    c.version_rolling = true; // asks for 1fffe000
    c.hashrate = 40_000;
    let roller = SimMiner::spawn(c);
    let plain = SimMiner::spawn(MinerConfig {
        hashrate: 40_000,
        ..MinerConfig::new(proxy.local_addr(), "plain")
    });
    assert!(
        wait_until(Duration::from_secs(60), || roller.stats().accepted >= 20
            && plain.stats().accepted >= 5)
        .await
    );
    assert_eq!(
        roller.stats().granted_version_mask,
        0x00ff_e000,
        "grant = upstream ∩ miner"
    );
    assert_eq!(roller.stats().rejected_total(), 0);
    let ps = pool.stats();
    assert!(
        ps.invalid_shares.is_empty() && ps.rejects_total() == 0,
        "{:?} {:?}",
        ps.invalid_shares,
        ps.rejects
    );
    assert!(ps.shares_accepted > 0);

    // A pool that refuses version rolling: the miner is told so and mines without it.
    let strict = TestPool::start(TestPoolConfig {
        version_mask: 0,
        difficulty: 1.0 / 65_536.0,
        ..Default::default()
    })
    .unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let proxy2 = blgv_proxy::start(proxy_config(&[strict.addr()], 1.0 / 262_144.0, dir2.path()))
        .await
        .unwrap();
    let mut raw = RawClient::connect(proxy2.local_addr()).await;
    let r = raw
        .call(
            1,
            "mining.configure",
            json!([["version-rolling"], {"version-rolling.mask": "1fffe000"}]),
        )
        .await;
    assert_eq!(r["result"]["version-rolling"], false, "{r}");
    let mut c = MinerConfig::new(proxy2.local_addr(), "roller2");
    c.version_rolling = true;
    c.hashrate = 40_000;
    let roller2 = SimMiner::spawn(c);
    assert!(wait_until(Duration::from_secs(60), || roller2.stats().accepted >= 5).await);
    assert_eq!(roller2.stats().granted_version_mask, 0);
    assert_eq!(
        strict.stats().rejects_total(),
        0,
        "{:?}",
        strict.stats().invalid_shares
    );

    for m in [roller, plain, roller2] {
        m.stop().await;
    }
    proxy.shutdown().await;
    proxy2.shutdown().await;
    pool.stop().await;
    strict.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reject_of_a_locally_accepted_share_is_counted_and_kept() {
    init_logging();
    // A pool stricter about ntime (5 s) than the proxy (600 s): the disagreement the proxy must
    // surface. At difficulty 2^-32 every hash is a share, so every share is forwarded.
    let everything = 1.0 / 4_294_967_296.0;
    let pool = TestPool::start(TestPoolConfig {
        difficulty: everything,
        ntime_max_ahead_secs: 5,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = blgv_proxy::start(proxy_config(&[pool.addr()], everything, dir.path()))
        .await
        .unwrap();

    let mut c = RawClient::connect(proxy.local_addr()).await;
    let sub = c.call(1, "mining.subscribe", json!([])).await;
    let en2_size = sub["result"][2].as_u64().unwrap() as usize;
    c.call(2, "mining.authorize", json!(["rig7", "x"])).await;
    let n = c.notification("mining.notify").await;
    let job = n["params"][0].as_str().unwrap().to_string();
    let ntime = u32::from_str_radix(n["params"][7].as_str().unwrap(), 16).unwrap();
    let en2 = |i: u64| format!("{:0w$x}", i, w = en2_size * 2);

    let ok = c
        .call(
            3,
            "mining.submit",
            json!(["rig7", job, en2(1), format!("{ntime:08x}"), "00000001"]),
        )
        .await;
    assert_eq!(ok["result"], true);
    let rolled = c
        .call(
            4,
            "mining.submit",
            json!([
                "rig7",
                job,
                en2(2),
                format!("{:08x}", ntime + 60),
                "00000002"
            ]),
        )
        .await;
    assert_eq!(
        rolled["result"], true,
        "the proxy's own window allows +60 s"
    );

    assert!(
        wait_until(Duration::from_secs(5), || proxy.stats().upstream_rejected
            == 1)
        .await,
        "{:?}",
        proxy.stats()
    );
    let s = proxy.stats();
    assert_eq!((s.shares_forwarded, s.upstream_accepted), (2, 1), "{s:?}");

    proxy.shutdown().await;
    let db = dir.path().join("ledger.db");
    let row = &ledger_by_worker(&db)["rig7"];
    assert_eq!(
        (row.accepted, row.upstream_accepted, row.upstream_rejected),
        (2, 1, 1)
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (worker, code, job_id): (String, i64, String) = conn
        .query_row(
            "SELECT worker, code, job_id FROM upstream_rejects",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (worker.as_str(), code, job_id.as_str()),
        ("rig7", 20, job.as_str())
    );
    pool.stop().await;
}
