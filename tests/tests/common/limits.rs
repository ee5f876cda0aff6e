//! Offenders for the resource-limit tests (tests/tests/{proxy,cloud}_limits.rs): each one
//! triggers one limit of a Stratum server and reports how long the server took to cut it.

use super::RawClient;
use blgv_tests::{wait_until, SimMiner};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
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
