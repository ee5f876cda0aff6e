//! The proxy's hostile-input matrix against the pool's own Stratum server, while honest miners
//! mine on it directly.

mod common;

use blgv_tests::{wait_until, MinerConfig, SimMiner};
use common::fixed_template::FixedTemplate;
use common::hostile::{self, EVERYTHING_VALID};
use common::{cloud_config, init_logging};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_matrix_against_the_pool() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let source = Arc::new(FixedTemplate::default());
    let config = cloud_config("http://127.0.0.1:1", EVERYTHING_VALID, 1.0, dir.path());
    let pool = blgv_cloud::start(config, source.clone()).await.unwrap();
    let addr = pool.local_addr();

    let honest: Vec<SimMiner> = (0..3)
        .map(|i| {
            let mut c = MinerConfig::new(addr, format!("honest{i}"));
            c.hashrate = 300;
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

    let s = source.clone();
    hostile::run_matrix(addr, move || {
        let s = s.clone();
        async move { s.new_block() }
    })
    .await;

    let before: Vec<u64> = honest.iter().map(|m| m.stats().accepted).collect();
    assert!(
        wait_until(Duration::from_secs(30), || honest
            .iter()
            .zip(&before)
            .all(|(m, b)| m.stats().accepted > *b + 2))
        .await
    );
    // The honest miners may see a few stale answers around the matrix's new block; nothing else.
    for m in &honest {
        let r = m.stats().rejected;
        assert!(r.keys().all(|code| *code == 21), "{}: {r:?}", m.worker());
    }
    assert_eq!(
        pool.stats().blocks_found,
        0,
        "nothing reaches difficulty 1 here"
    );
    for m in honest {
        m.stop().await;
    }
    pool.shutdown().await;
}
