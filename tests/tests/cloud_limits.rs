//! The pool's resource limits (issue #10), each triggered over real TCP against a live pool
//! coordinator: the offender is cut within the bound, the metric counts it, and honest miners
//! connected at the same time keep mining.

mod common;

use blgv_tests::{wait_until, MinerConfig, SimMiner};
use common::fixed_template::FixedTemplate;
use common::hostile::EVERYTHING_VALID;
use common::limits::{self, assert_counted, assert_honest_mining, connect_from, time_to_close};
use common::{cloud_config, init_logging, RawClient};
use std::sync::Arc;
use std::time::Duration;

struct Site {
    proxy: blgv_cloud::PoolHandle,
    honest: Vec<SimMiner>,
    _dir: tempfile::TempDir,
}

impl Site {
    /// A pool with `tune` applied to its config, and two honest miners mining on it directly
    /// (about 20 shares/s each, far below every limit under test).
    async fn start(tune: impl FnOnce(&mut blgv_cloud::Config)) -> Site {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let source = Arc::new(FixedTemplate::default());
        let mut config = cloud_config("http://127.0.0.1:1", EVERYTHING_VALID, 1.0, dir.path());
        tune(&mut config);
        let proxy = blgv_cloud::start(config, source).await.unwrap();
        let honest: Vec<SimMiner> = (0..2)
            .map(|i| {
                let mut c = MinerConfig::new(proxy.local_addr(), format!("honest{i}"));
                c.hashrate = 20;
                SimMiner::spawn(c)
            })
            .collect();
        assert!(
            wait_until(Duration::from_secs(30), || honest
                .iter()
                .all(|m| m.stats().accepted >= 2))
            .await
        );
        Site {
            proxy,
            honest,
            _dir: dir,
        }
    }

    fn api(&self) -> std::net::SocketAddr {
        self.proxy.api_addr()
    }

    async fn finish(self) {
        assert_honest_mining(&self.honest).await;
        for m in &self.honest {
            assert_eq!(m.stats().rejected_total(), 0, "{} got rejects", m.worker());
        }
        for m in self.honest {
            m.stop().await;
        }
        self.proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_a_new_connection_is_closed_at_once() {
    let site = Site::start(|c| {
        c.pool.max_connections = 4;
        c.pool.max_connections_per_ip = 0;
    })
    .await;
    let addr = site.proxy.local_addr();
    // Two honest miners + two idle connections = the cap.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
    let cut = time_to_close(&mut over, Duration::from_secs(5)).await;
    assert!(
        cut.is_some_and(|t| t < Duration::from_secs(2)),
        "the connection over the cap stayed open: {cut:?}"
    );
    assert_counted(site.api(), "max_connections", 1).await;
    // The held ones were not touched; freeing one lets a new connection in.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = RawClient::connect(addr).await;
    limits::handshake(&mut again, "after").await;
    site.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_per_ip_cap_a_connection_is_closed_and_other_ips_are_untouched() {
    let site = Site::start(|c| c.pool.max_connections_per_ip = 3).await;
    let addr = site.proxy.local_addr();
    let farm: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(farm, addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for s in &mut held {
        assert!(
            time_to_close(s, Duration::from_millis(300)).await.is_none(),
            "a connection within the cap was closed"
        );
    }
    let mut over = connect_from(farm, addr).await;
    let cut = time_to_close(&mut over, Duration::from_secs(5)).await;
    assert!(
        cut.is_some_and(|t| t < Duration::from_secs(2)),
        "the 4th connection from one IP stayed open: {cut:?}"
    );
    assert_counted(site.api(), "per_ip", 1).await;
    // Another address (the honest miners' 127.0.0.1) still gets in.
    let mut other = RawClient::connect(addr).await;
    limits::handshake(&mut other, "other-ip").await;
    site.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_finish_its_handshake_is_closed() {
    let site = Site::start(|c| {
        c.pool.handshake_timeout_ms = 2_000;
    })
    .await;
    let addr = site.proxy.local_addr();
    // One silent, one that subscribes but never authorizes.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut half = RawClient::connect(addr).await;
    let r = half
        .call(1, "mining.subscribe", serde_json::json!(["x/1"]))
        .await;
    assert!(r["error"].is_null(), "{r}");
    let cut = time_to_close(&mut silent, Duration::from_secs(10)).await;
    assert!(
        cut.is_some_and(|t| t >= Duration::from_millis(1_500) && t < Duration::from_secs(5)),
        "silent connection: {cut:?}"
    );
    assert!(
        half.closed().await,
        "subscribed-only connection stayed open"
    );
    assert_counted(site.api(), "handshake_timeout", 2).await;
    site.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_line_that_stalls_is_closed() {
    let site = Site::start(|c| c.pool.partial_line_timeout_ms = 1_000).await;
    let addr = site.proxy.local_addr();
    // Bytes keep coming (one per 200 ms) but never a newline: cut between 1 and 2 timeouts.
    let cut = limits::slowloris(addr, Duration::from_secs(10)).await;
    assert!(
        cut.is_some_and(|t| t >= Duration::from_millis(900) && t < Duration::from_secs(4)),
        "slowloris: {cut:?}"
    );
    assert_counted(site.api(), "partial_line_timeout", 1).await;
    site.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_longer_than_max_line_length_is_refused_and_closed() {
    let site = Site::start(|c| c.pool.max_line_length = 4_096).await;
    let mut c = RawClient::connect(site.proxy.local_addr()).await;
    c.send_raw(&vec![b'x'; 5_000]).await.unwrap();
    let e = c.next().await.expect("an error before the close");
    assert!(common::error_text(&e).contains("longer than 4096"), "{e}");
    assert!(c.closed().await);
    assert_counted(site.api(), "line_too_long", 1).await;
    site.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_over_the_message_rate_is_closed() {
    let site = Site::start(|c| {
        c.pool.max_messages_per_sec = 200;
        c.pool.message_burst = 400;
    })
    .await;
    // 5,000 messages at once: far over 2 × burst + the rate for the time they take.
    let cut = limits::flood(site.proxy.local_addr(), 5_000, Duration::from_secs(10)).await;
    assert!(
        cut.is_some_and(|t| t < Duration::from_secs(3)),
        "flooder: {cut:?}"
    );
    assert_counted(site.api(), "rate_limit", 1).await;
    site.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_cut_when_its_queue_is_over_the_cap() {
    let site = Site::start(|c| {
        c.pool.max_send_queue_bytes = 16_384;
        // Replies bigger than any socket buffer takes at once.
        c.pool.max_line_length = 4_194_304;
        // Only the queue cap can cut it within the bound.
        c.pool.write_stall_timeout_ms = 60_000;
    })
    .await;
    // Replies of ~3 MB: the socket takes part of one, and the rest is over the cap.
    let cut =
        limits::stalled_reader(site.proxy.local_addr(), 3_000_000, Duration::from_secs(20)).await;
    assert!(
        cut.is_some_and(|t| t < Duration::from_secs(8)),
        "stalled reader: {cut:?}"
    );
    assert_counted(site.api(), "send_queue", 1).await;
    site.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_cut_when_writes_stall() {
    let site = Site::start(|c| c.pool.write_stall_timeout_ms = 1_000).await;
    // Replies of ~8 KB each, under the 64 KiB queue cap: the stall timeout cuts it.
    let cut = limits::stalled_reader(site.proxy.local_addr(), 8_000, Duration::from_secs(20)).await;
    assert!(
        cut.is_some_and(|t| t < Duration::from_secs(10)),
        "stalled reader: {cut:?}"
    );
    assert_counted(site.api(), "write_stall", 1).await;
    site.finish().await;
}
