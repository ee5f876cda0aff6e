//! The resource-limit tests (issue #10) for both Stratum servers, the proxy's miner listener
//! and the pool's listener: the test bodies, written once against [`LimitedServer`], and the
//! offenders, each of which triggers one limit and reports how long the server took to cut
//! it. tests/tests/{proxy,cloud}_limits.rs hold one `#[tokio::test]` per limit and server, so
//! a failure names both.

use super::fixed_template::FixedTemplate;
use super::hostile::EVERYTHING_VALID;
use super::{cloud_config, init_logging, proxy_config, RawClient};
use blgv_tests::{wait_until, MinerConfig, SimMiner, TestPool, TestPoolConfig};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeBounds;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The server's `…_limit_disconnects_total{reason="…"}` counter, scraped from `/metrics`.
pub async fn limit_count(api: SocketAddr, reason: &str) -> u64 {
    let text = reqwest::get(format!("http://{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = format!("limit_disconnects_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.split_once(&key).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no {key} in /metrics:\n{text}"))
        .parse::<f64>()
        .unwrap() as u64
}

/// Wait until the counter reaches `at_least` (it is bumped as the session ends).
pub async fn assert_counted(api: SocketAddr, reason: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = limit_count(api, reason).await;
        if n >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{reason}: counted {n}, expected at least {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The honest miners keep getting shares accepted.
pub async fn assert_honest_mining(honest: &[SimMiner]) {
    let before: Vec<u64> = honest.iter().map(|m| m.stats().accepted).collect();
    assert!(
        wait_until(Duration::from_secs(30), || honest
            .iter()
            .zip(&before)
            .all(|(m, b)| m.stats().accepted >= *b + 3))
        .await,
        "honest miners stopped mining"
    );
}

/// A TCP connection from `source` (any 127.0.0.x works on Linux loopback).
pub async fn connect_from(source: IpAddr, server: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(source, 0)).unwrap();
    s.connect(server).await.unwrap()
}

/// How long until the server closes `stream` (EOF or reset), reading and discarding what it
/// sends; None if still open after `limit`.
pub async fn time_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

/// Subscribe and authorize over a raw client (the handshake the timeouts wait for).
pub async fn handshake(c: &mut RawClient, worker: &str) {
    let r = c
        .call(1, "mining.subscribe", json!(["limits-test/1.0"]))
        .await;
    assert!(r["error"].is_null(), "{r}");
    let r = c.call(2, "mining.authorize", json!([worker, "x"])).await;
    assert!(r["error"].is_null(), "{r}");
}

/// Slowloris after the handshake: dribble a line one byte every 200 ms, never a newline.
/// Returns when the server cut the connection (the time since the first byte), None after
/// `limit`.
pub async fn slowloris(server: SocketAddr, limit: Duration) -> Option<Duration> {
    let mut c = RawClient::connect(server).await;
    handshake(&mut c, "slowloris").await;
    let start = Instant::now();
    let line = br#"{"id":3,"method":"mining.submit","params":["slowloris","#;
    let mut i = 0;
    while start.elapsed() < limit {
        if c.send_raw(&line[i % line.len()..][..1]).await.is_err() {
            return Some(start.elapsed());
        }
        i += 1;
        // Reading: EOF means closed.
        let mut buf = [0u8; 1024];
        if let Ok(r) = tokio::time::timeout(
            Duration::from_millis(200),
            c.reader.get_mut().read(&mut buf),
        )
        .await
        {
            if matches!(r, Ok(0) | Err(_)) {
                return Some(start.elapsed());
            }
        }
    }
    None
}

/// A flooder: handshake, then `lines` cheap requests in one go. The time until the server
/// closes the connection, None if it did not within `limit`.
pub async fn flood(server: SocketAddr, lines: usize, limit: Duration) -> Option<Duration> {
    let mut c = RawClient::connect(server).await;
    handshake(&mut c, "flooder").await;
    let mut batch = String::new();
    for i in 0..lines {
        batch.push_str(&format!(
            "{{\"id\":{},\"method\":\"mining.extranonce.subscribe\",\"params\":[]}}\n",
            i + 10
        ));
    }
    let start = Instant::now();
    let RawClient {
        reader: mut r,
        writer: mut w,
        ..
    } = c;
    let writer = tokio::spawn(async move {
        let _ = w.write_all(batch.as_bytes()).await;
        // Keep the write half open: the close must come from the server.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(w);
    });
    let mut buf = vec![0u8; 65536];
    let result = loop {
        let Some(left) = limit.checked_sub(start.elapsed()) else {
            break None;
        };
        match tokio::time::timeout(left, r.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => break None,
        }
    };
    writer.abort();
    result
}

/// A client that never reads, with a small receive buffer, sending requests whose error
/// replies echo a `reply_bytes`-long method name until the server's writes to it cannot
/// proceed. The time until the server cut it (its writes fail), None within `limit`.
pub async fn stalled_reader(
    server: SocketAddr,
    reply_bytes: usize,
    limit: Duration,
) -> Option<Duration> {
    let s = TcpSocket::new_v4().unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    let mut stream = s.connect(server).await.unwrap();
    let line = format!(
        "{{\"id\":1,\"method\":\"{}\",\"params\":[]}}\n",
        "x".repeat(reply_bytes)
    );
    let start = Instant::now();
    // The server reads no more once its writes block, so ours block too: a write error or a
    // reset (the server closed with our data unread) is the cut.
    let mut sent = 0usize;
    while start.elapsed() < limit {
        match tokio::time::timeout(
            Duration::from_millis(200),
            stream.write_all(line.as_bytes()),
        )
        .await
        {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => return Some(start.elapsed()),
            Err(_) => {
                // Blocked: probe whether the server is gone (a peek sees the reset).
                let mut b = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut b)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
                    _ => {}
                }
            }
        }
    }
    let _ = sent;
    None
}

/// `cut` (how long the server took to cut the offender `what`, None: not at all) is within
/// `bound`.
fn assert_cut_within(
    what: &str,
    cut: Option<Duration>,
    bound: impl RangeBounds<Duration> + std::fmt::Debug,
) {
    assert!(
        cut.is_some_and(|t| bound.contains(&t)),
        "{what}: cut after {cut:?}, expected within {bound:?}"
    );
}

/// The limit keys a test changes; `None` keeps the server's default. The keys have the same
/// names in `[proxy]` and `[pool]`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tune {
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub handshake_timeout_ms: Option<u64>,
    pub partial_line_timeout_ms: Option<u64>,
    pub max_line_length: Option<usize>,
    pub max_messages_per_sec: Option<u32>,
    pub message_burst: Option<u32>,
    pub max_send_queue_bytes: Option<usize>,
    pub write_stall_timeout_ms: Option<u64>,
}

/// A Stratum server under test, started with some limits changed.
pub trait LimitedServer: Sized {
    /// Start it on 127.0.0.1:0 with `tune` applied, its data in `dir`.
    async fn start(tune: Tune, dir: &std::path::Path) -> Self;
    /// Where miners connect.
    fn stratum_addr(&self) -> SocketAddr;
    /// Where `/metrics` is served.
    fn api_addr(&self) -> SocketAddr;
    async fn stop(self);
}

fn set<T: Copy>(key: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *key = v;
    }
}

/// The site proxy's miner listener, in front of a test pool.
pub struct Proxy {
    pool: TestPool,
    proxy: blgv_proxy::ProxyHandle,
}

impl LimitedServer for Proxy {
    async fn start(tune: Tune, dir: &std::path::Path) -> Proxy {
        let pool = TestPool::start(TestPoolConfig {
            difficulty: 1.0 / 65_536.0,
            ..Default::default()
        })
        .unwrap();
        let mut config = proxy_config(&[pool.addr()], EVERYTHING_VALID, dir);
        let p = &mut config.proxy;
        set(&mut p.max_connections, tune.max_connections);
        set(&mut p.max_connections_per_ip, tune.max_connections_per_ip);
        set(&mut p.handshake_timeout_ms, tune.handshake_timeout_ms);
        set(&mut p.partial_line_timeout_ms, tune.partial_line_timeout_ms);
        set(&mut p.max_line_length, tune.max_line_length);
        set(&mut p.max_messages_per_sec, tune.max_messages_per_sec);
        set(&mut p.message_burst, tune.message_burst);
        set(&mut p.max_send_queue_bytes, tune.max_send_queue_bytes);
        set(&mut p.write_stall_timeout_ms, tune.write_stall_timeout_ms);
        // The proxy requires handshake_timeout_ms > subscribe_wait_ms. The pool is up before
        // any miner connects, so a shorter subscribe wait changes nothing else.
        p.subscribe_wait_ms = p.subscribe_wait_ms.min(p.handshake_timeout_ms / 2);
        config.validate().expect("the test's limits are valid");
        let proxy = blgv_proxy::start(config).await.unwrap();
        Proxy { pool, proxy }
    }

    fn stratum_addr(&self) -> SocketAddr {
        self.proxy.local_addr()
    }

    fn api_addr(&self) -> SocketAddr {
        self.proxy.api_addr().expect("api enabled")
    }

    async fn stop(self) {
        self.proxy.shutdown().await;
        self.pool.stop().await;
    }
}

/// The pool coordinator's Stratum listener, with a fixed block template.
pub struct Pool {
    pool: blgv_cloud::PoolHandle,
}

impl LimitedServer for Pool {
    async fn start(tune: Tune, dir: &std::path::Path) -> Pool {
        let source = Arc::new(FixedTemplate::default());
        let mut config = cloud_config("http://127.0.0.1:1", EVERYTHING_VALID, 1.0, dir);
        let p = &mut config.pool;
        set(&mut p.max_connections, tune.max_connections);
        set(&mut p.max_connections_per_ip, tune.max_connections_per_ip);
        set(&mut p.handshake_timeout_ms, tune.handshake_timeout_ms);
        set(&mut p.partial_line_timeout_ms, tune.partial_line_timeout_ms);
        set(&mut p.max_line_length, tune.max_line_length);
        set(&mut p.max_messages_per_sec, tune.max_messages_per_sec);
        set(&mut p.message_burst, tune.message_burst);
        set(&mut p.max_send_queue_bytes, tune.max_send_queue_bytes);
        set(&mut p.write_stall_timeout_ms, tune.write_stall_timeout_ms);
        let pool = blgv_cloud::start(config, source).await.unwrap();
        Pool { pool }
    }

    fn stratum_addr(&self) -> SocketAddr {
        self.pool.local_addr()
    }

    fn api_addr(&self) -> SocketAddr {
        self.pool.api_addr()
    }

    async fn stop(self) {
        self.pool.shutdown().await;
    }
}

/// A server with two honest miners mining on it (about 20 shares/s each, far below every
/// limit under test), which must keep mining while the offender is cut.
pub struct Site<S> {
    server: S,
    honest: Vec<SimMiner>,
    _dir: tempfile::TempDir,
}

impl<S: LimitedServer> Site<S> {
    pub async fn start(tune: Tune) -> Site<S> {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let server = S::start(tune, dir.path()).await;
        let honest: Vec<SimMiner> = (0..2)
            .map(|i| {
                let mut c = MinerConfig::new(server.stratum_addr(), format!("honest{i}"));
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
            server,
            honest,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.stratum_addr()
    }

    fn api(&self) -> SocketAddr {
        self.server.api_addr()
    }

    /// The offender (`what`) was cut within `bound`, the metric counted it under `reason`,
    /// and the honest miners kept mining.
    pub async fn finish_after_cut(
        self,
        what: &str,
        cut: Option<Duration>,
        bound: impl RangeBounds<Duration> + std::fmt::Debug,
        reason: &str,
    ) {
        assert_cut_within(what, cut, bound);
        assert_counted(self.api(), reason, 1).await;
        self.finish().await;
    }

    /// The honest miners kept mining, without a reject.
    pub async fn finish(self) {
        assert_honest_mining(&self.honest).await;
        for m in &self.honest {
            assert_eq!(m.stats().rejected_total(), 0, "{} got rejects", m.worker());
        }
        for m in self.honest {
            m.stop().await;
        }
        self.server.stop().await;
    }
}

pub async fn over_max_connections_a_new_connection_is_closed_at_once<S: LimitedServer>() {
    let site = Site::<S>::start(Tune {
        max_connections: Some(4),
        max_connections_per_ip: Some(0),
        ..Tune::default()
    })
    .await;
    let addr = site.addr();
    // Two honest miners + two idle connections = the cap.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(addr).await.unwrap();
    let cut = time_to_close(&mut over, Duration::from_secs(5)).await;
    assert_cut_within(
        "the connection over the cap stayed open",
        cut,
        ..Duration::from_secs(2),
    );
    assert_counted(site.api(), "max_connections", 1).await;
    // The held ones were not touched; freeing one lets a new connection in.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = RawClient::connect(addr).await;
    handshake(&mut again, "after").await;
    site.finish().await;
}

pub async fn over_the_per_ip_cap_a_connection_is_closed_and_other_ips_are_untouched<
    S: LimitedServer,
>() {
    let site = Site::<S>::start(Tune {
        max_connections_per_ip: Some(3),
        ..Tune::default()
    })
    .await;
    let addr = site.addr();
    let farm: IpAddr = "127.0.0.2".parse().unwrap();
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
    assert_cut_within(
        "the 4th connection from one IP stayed open",
        cut,
        ..Duration::from_secs(2),
    );
    assert_counted(site.api(), "per_ip", 1).await;
    // Another address (the honest miners' 127.0.0.1) still gets in.
    let mut other = RawClient::connect(addr).await;
    handshake(&mut other, "other-ip").await;
    site.finish().await;
}

pub async fn a_connection_that_does_not_finish_its_handshake_is_closed<S: LimitedServer>() {
    let site = Site::<S>::start(Tune {
        handshake_timeout_ms: Some(2_000),
        ..Tune::default()
    })
    .await;
    let addr = site.addr();
    // One silent, one that subscribes but never authorizes.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half = RawClient::connect(addr).await;
    let r = half.call(1, "mining.subscribe", json!(["x/1"])).await;
    assert!(r["error"].is_null(), "{r}");
    let cut = time_to_close(&mut silent, Duration::from_secs(10)).await;
    assert_cut_within(
        "silent connection",
        cut,
        Duration::from_millis(1_500)..Duration::from_secs(5),
    );
    assert!(
        half.closed().await,
        "subscribed-only connection stayed open"
    );
    assert_counted(site.api(), "handshake_timeout", 2).await;
    site.finish().await;
}

pub async fn a_partial_line_that_stalls_is_closed<S: LimitedServer>() {
    let site = Site::<S>::start(Tune {
        partial_line_timeout_ms: Some(1_000),
        ..Tune::default()
    })
    .await;
    // Bytes keep coming (one per 200 ms) but never a newline: cut between 1 and 2 timeouts.
    let cut = slowloris(site.addr(), Duration::from_secs(10)).await;
    site.finish_after_cut(
        "slowloris",
        cut,
        Duration::from_millis(900)..Duration::from_secs(4),
        "partial_line_timeout",
    )
    .await;
}

pub async fn a_line_longer_than_max_line_length_is_refused_and_closed<S: LimitedServer>() {
    let site = Site::<S>::start(Tune {
        max_line_length: Some(4_096),
        ..Tune::default()
    })
    .await;
    let mut c = RawClient::connect(site.addr()).await;
    c.send_raw(&vec![b'x'; 5_000]).await.unwrap();
    let e = c.next().await.expect("an error before the close");
    assert!(super::error_text(&e).contains("longer than 4096"), "{e}");
    assert!(c.closed().await);
    assert_counted(site.api(), "line_too_long", 1).await;
    site.finish().await;
}

pub async fn a_flooder_over_the_message_rate_is_closed<S: LimitedServer>() {
    let site = Site::<S>::start(Tune {
        max_messages_per_sec: Some(200),
        message_burst: Some(400),
        ..Tune::default()
    })
    .await;
    // 5,000 messages at once: far over 2 × burst + the rate for the time they take.
    let cut = flood(site.addr(), 5_000, Duration::from_secs(10)).await;
    site.finish_after_cut("flooder", cut, ..Duration::from_secs(3), "rate_limit")
        .await;
}

pub async fn a_reader_that_stops_reading_is_cut_when_its_queue_is_over_the_cap<S: LimitedServer>() {
    let site = Site::<S>::start(Tune {
        max_send_queue_bytes: Some(16_384),
        // Replies bigger than any socket buffer takes at once.
        max_line_length: Some(4_194_304),
        // Only the queue cap can cut it within the bound.
        write_stall_timeout_ms: Some(60_000),
        ..Tune::default()
    })
    .await;
    // Replies of ~3 MB: the socket takes part of one, and the rest is over the cap.
    let cut = stalled_reader(site.addr(), 3_000_000, Duration::from_secs(20)).await;
    site.finish_after_cut(
        "stalled reader",
        cut,
        ..Duration::from_secs(8),
        "send_queue",
    )
    .await;
}

pub async fn a_reader_that_stops_reading_is_cut_when_writes_stall<S: LimitedServer>() {
    let site = Site::<S>::start(Tune {
        write_stall_timeout_ms: Some(1_000),
        ..Tune::default()
    })
    .await;
    // Replies of ~8 KB each, under the 64 KiB queue cap: the stall timeout cuts it.
    let cut = stalled_reader(site.addr(), 8_000, Duration::from_secs(20)).await;
    site.finish_after_cut(
        "stalled reader",
        cut,
        ..Duration::from_secs(10),
        "write_stall",
    )
    .await;
}
