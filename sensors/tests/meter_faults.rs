//! The meter poller when the meter misbehaves: Modbus exceptions, garbage frames, silence,
//! disappearance, malformed answers of every kind. Readings must say what is wrong, the poller
//! must never panic, and it must recover by itself.

#[allow(dead_code, unused_imports)]
#[path = "../../tests/src/meter_sim/mod.rs"]
mod meter_sim;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blgv_sensors::meter::{
    spawn_meter, MeterConfig, MeterRole, Preset, Quality, Reading, Transport,
};
use meter_sim::wait::wait_for;
use meter_sim::{MeterSim, SimProfile};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_modbus::ExceptionCode;
use tokio_util::sync::CancellationToken;

const WITHIN: Duration = Duration::from_secs(15);

fn cfg(addr: SocketAddr, preset: Preset) -> MeterConfig {
    let mut c = MeterConfig::new(
        "faulty",
        MeterRole::SiteTotal,
        Transport::Tcp(addr.to_string()),
        preset,
    );
    c.poll_interval_ms = 100;
    c.timeout_ms = 200;
    c.retries = 1;
    c.stale_after_ms = 1500;
    c
}

fn is_good(r: &Reading) -> bool {
    r.quality == Quality::Good
}

fn is_stale(r: &Reading) -> bool {
    matches!(r.quality, Quality::Stale { .. })
}

fn bad_reason(r: &Reading) -> Option<&str> {
    match &r.quality {
        Quality::Bad { reason } => Some(reason),
        _ => None,
    }
}

#[tokio::test]
async fn modbus_exception_is_bad_with_the_exception_named() {
    let sim = MeterSim::constant(SimProfile::Sdm630, 5_000.0)
        .await
        .unwrap();
    sim.set_exception(Some(ExceptionCode::IllegalDataAddress));
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(cfg(sim.addr(), Preset::Sdm630), shutdown.clone());
    let mut rx = meter.subscribe();
    let r = wait_for(&mut rx, WITHIN, |r| {
        bad_reason(r).is_some_and(|s| s.contains("exception"))
    })
    .await
    .unwrap();
    let reason = bad_reason(&r).unwrap();
    assert!(reason.contains("0x02 Illegal Data Address"), "{reason}");
    assert!(reason.contains("read input registers"), "{reason}");
    assert_eq!(r.power_kw(), None);
    assert_eq!(r.total_power_w, None);

    // Recovers when the meter answers again.
    sim.set_exception(None);
    wait_for(&mut rx, WITHIN, is_good).await.unwrap();

    // A good meter that starts answering "busy" is Bad at once (no Stale grace: it answered).
    sim.set_exception(Some(ExceptionCode::ServerDeviceBusy));
    let r = wait_for(&mut rx, WITHIN, |r| !is_good(r)).await.unwrap();
    let reason = bad_reason(&r).expect("bad, not stale");
    assert!(reason.contains("0x06 Server Device Busy"), "{reason}");
    sim.set_exception(None);
    wait_for(&mut rx, WITHIN, is_good).await.unwrap();
    shutdown.cancel();
}

#[tokio::test]
async fn garbage_frames_are_bad_and_recovered_from() {
    let sim = MeterSim::constant(SimProfile::Em24, 12_000.0)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(cfg(sim.addr(), Preset::Em24), shutdown.clone());
    let mut rx = meter.subscribe();
    wait_for(&mut rx, WITHIN, is_good).await.unwrap();
    sim.set_garbage(true);
    let r = wait_for(&mut rx, WITHIN, |r| !is_good(r)).await.unwrap();
    let reason = bad_reason(&r).expect("garbage is Bad at once");
    assert!(reason.contains("garbage answer"), "{reason}");
    assert!(reason.contains("not a valid Modbus frame"), "{reason}");
    // It keeps polling (and reconnecting) while the garbage lasts.
    let before = sim.requests();
    wait_for(&mut rx, WITHIN, |_| sim.requests() >= before + 4)
        .await
        .unwrap();
    sim.set_garbage(false);
    wait_for(&mut rx, WITHIN, is_good).await.unwrap();
    shutdown.cancel();
}

#[tokio::test]
async fn silent_meter_goes_stale_then_bad_then_recovers() {
    let sim = MeterSim::constant(SimProfile::Sdm630, 100_000.0)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let mut c = cfg(sim.addr(), Preset::Sdm630);
    // Long enough that the first failed poll (2 x 200 ms) surely ends inside it.
    c.stale_after_ms = 3000;
    let meter = spawn_meter(c, shutdown.clone());
    let mut rx = meter.subscribe();
    let good = wait_for(&mut rx, WITHIN, is_good).await.unwrap();

    sim.set_silent(true);
    let stale = wait_for(&mut rx, WITHIN, |r| !is_good(r)).await.unwrap();
    assert!(is_stale(&stale), "first Stale, got {stale:?}");
    let Quality::Stale { since } = stale.quality else {
        unreachable!()
    };
    // Stale readings carry the last good values and their time.
    assert!(since >= good.at);
    assert_eq!(stale.total_power_w, Some(100_000.0));
    assert_eq!(stale.power_kw(), None, "stale is not usable");
    assert!(stale.at > since);

    let bad = wait_for(&mut rx, WITHIN, |r| bad_reason(r).is_some())
        .await
        .unwrap();
    let reason = bad_reason(&bad).unwrap();
    assert!(
        reason.starts_with("timeout: no answer within 200 ms"),
        "{reason}"
    );
    assert!(reason.ends_with("(2 attempts)"), "{reason}");
    // Bad only once stale_after_ms have passed since the last good reading.
    assert!(
        bad.at.duration_since(since).unwrap() >= Duration::from_millis(3000),
        "{bad:?} vs last good at {since:?}"
    );
    assert_eq!(bad.total_power_w, None);
    // latest() says the same.
    assert!(!is_good(&meter.latest()));

    sim.set_silent(false);
    let r = wait_for(&mut rx, WITHIN, is_good).await.unwrap();
    assert_eq!(r.power_kw(), Some(100.0));
    shutdown.cancel();
}

#[tokio::test]
async fn meter_disappears_and_comes_back() {
    let sim = MeterSim::constant(SimProfile::SunSpec203 { base: 40000 }, 64_000.0)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let mut c = cfg(sim.addr(), Preset::Sunspec);
    c.stale_after_ms = 3000;
    let meter = spawn_meter(c, shutdown.clone());
    let mut rx = meter.subscribe();
    wait_for(&mut rx, WITHIN, is_good).await.unwrap();

    sim.stop();
    let r = wait_for(&mut rx, WITHIN, |r| !is_good(r)).await.unwrap();
    assert!(is_stale(&r), "{r:?}");
    let r = wait_for(&mut rx, WITHIN, |r| bad_reason(r).is_some())
        .await
        .unwrap();
    let reason = bad_reason(&r).unwrap();
    assert!(reason.contains("connection refused"), "{reason}");
    assert!(reason.contains(&sim.addr().to_string()), "{reason}");

    sim.restart().await.unwrap();
    let r = wait_for(&mut rx, WITHIN, is_good).await.unwrap();
    assert_eq!(r.power_kw(), Some(64.0));
    shutdown.cancel();
}

#[tokio::test]
async fn nothing_listening_is_bad_connection_refused() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(cfg(addr, Preset::Sdm630), shutdown.clone());
    let mut rx = meter.subscribe();
    let r = wait_for(&mut rx, WITHIN, |r| {
        bad_reason(r).is_some_and(|s| s.contains("refused"))
    })
    .await
    .unwrap();
    assert_eq!(
        bad_reason(&r).unwrap(),
        format!("cannot connect to {addr}: connection refused (2 attempts)")
    );
    shutdown.cancel();
}

#[tokio::test]
async fn nan_power_from_the_meter_is_bad() {
    let sim = MeterSim::constant(SimProfile::Sdm630, f64::NAN)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(cfg(sim.addr(), Preset::Sdm630), shutdown.clone());
    let mut rx = meter.subscribe();
    let r = wait_for(&mut rx, WITHIN, |r| {
        bad_reason(r).is_some_and(|s| s.contains("decode"))
    })
    .await
    .unwrap();
    let reason = bad_reason(&r).unwrap();
    assert!(reason.contains("total_power_w"), "{reason}");
    assert!(reason.contains("not a number"), "{reason}");
    shutdown.cancel();
}

#[tokio::test]
async fn invalid_config_gives_a_bad_reading_not_a_panic() {
    let mut c = cfg("127.0.0.1:1".parse().unwrap(), Preset::Custom);
    c.id = "broken".into();
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(c, shutdown.clone());
    let r = meter.latest();
    let reason = bad_reason(&r).unwrap();
    assert!(
        reason.starts_with("invalid configuration: meters[\"broken\"].registers is empty"),
        "{reason}"
    );
    shutdown.cancel();
}

/// A Modbus TCP "meter" that answers every request with a different kind of wrong answer, then
/// (once `healthy` is set) with correct SDM630 answers of 1 kW.
async fn chaos_server(healthy: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let mut case = 0u32;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let seed: u64 = rng.gen();
            let healthy = healthy.clone();
            let start_case = case;
            case += 1;
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let mut n = start_case;
                loop {
                    let mut hdr = [0u8; 7];
                    if sock.read_exact(&mut hdr).await.is_err() {
                        return;
                    }
                    let len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
                    let mut pdu = vec![0u8; len.saturating_sub(1)];
                    if sock.read_exact(&mut pdu).await.is_err() {
                        return;
                    }
                    let (fc, count) = (pdu[0], u16::from_be_bytes([pdu[3], pdu[4]]));
                    let frame = |tid: [u8; 2], proto: [u8; 2], unit: u8, body: &[u8]| {
                        let mut f = Vec::new();
                        f.extend_from_slice(&tid);
                        f.extend_from_slice(&proto);
                        f.extend_from_slice(&((body.len() + 1) as u16).to_be_bytes());
                        f.push(unit);
                        f.extend_from_slice(body);
                        f
                    };
                    let tid = [hdr[0], hdr[1]];
                    let regs = |k: usize| -> Vec<u8> {
                        // 1000.0 W as float32 in every register pair.
                        let w = 1000f32.to_bits().to_be_bytes();
                        (0..k)
                            .flat_map(|i| [w[(i % 2) * 2], w[(i % 2) * 2 + 1]])
                            .collect()
                    };
                    let answer: Vec<u8> = if healthy.load(Ordering::SeqCst) {
                        let mut body = vec![fc, (count * 2) as u8];
                        body.extend(regs(usize::from(count)));
                        frame(tid, [0, 0], hdr[6], &body)
                    } else {
                        n += 1;
                        match n % 12 {
                            // Fewer registers than asked.
                            0 => {
                                let mut body = vec![fc, 2];
                                body.extend(regs(1));
                                frame(tid, [0, 0], hdr[6], &body)
                            }
                            // Byte count says more than sent.
                            1 => frame(tid, [0, 0], hdr[6], &[fc, 200, 1, 2]),
                            // Odd byte count.
                            2 => frame(tid, [0, 0], hdr[6], &[fc, 3, 1, 2, 3]),
                            // Wrong transaction id.
                            3 => {
                                let mut body = vec![fc, (count * 2) as u8];
                                body.extend(regs(usize::from(count)));
                                frame([tid[0] ^ 0xFF, tid[1]], [0, 0], hdr[6], &body)
                            }
                            // Wrong function code.
                            4 => {
                                let mut body = vec![0x03, (count * 2) as u8];
                                body.extend(regs(usize::from(count)));
                                frame(tid, [0, 0], hdr[6], &body)
                            }
                            // Unknown exception code.
                            5 => frame(tid, [0, 0], hdr[6], &[fc | 0x80, 0x42]),
                            // Length field 0.
                            6 => vec![tid[0], tid[1], 0, 0, 0, 0, 1, 4],
                            // Random bytes.
                            7 => (0..rng.gen_range(1..300)).map(|_| rng.gen()).collect(),
                            // Close without answering.
                            8 => return,
                            // Unknown function code in the answer.
                            9 => frame(tid, [0, 0], hdr[6], &[0x2B, 0x0E, 1, 2]),
                            // Wrong unit id.
                            10 => {
                                let mut body = vec![fc, (count * 2) as u8];
                                body.extend(regs(usize::from(count)));
                                frame(tid, [0, 0], hdr[6].wrapping_add(1), &body)
                            }
                            // Empty PDU.
                            _ => frame(tid, [0, 0], hdr[6], &[]),
                        }
                    };
                    if sock.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn malformed_answers_never_crash_the_poller() {
    let healthy = Arc::new(AtomicBool::new(false));
    let addr = chaos_server(healthy.clone()).await;
    let shutdown = CancellationToken::new();
    let mut c = cfg(addr, Preset::Sdm630);
    c.retries = 0;
    let meter = spawn_meter(c, shutdown.clone());
    let mut rx = meter.subscribe();
    // Watch 40 polls of malformed answers: none Good, every one Bad with a reason.
    let mut seen = 0;
    let mut reasons = std::collections::BTreeSet::new();
    while seen < 40 {
        let r = wait_for(&mut rx, WITHIN, |_| true).await.unwrap();
        rx.changed().await.expect("poller alive");
        assert!(!is_good(&r) || seen == 0, "{r:?}");
        if let Some(reason) = bad_reason(&r) {
            reasons.insert(reason.to_string());
        }
        seen += 1;
    }
    println!("failure kinds seen: {reasons:#?}");
    assert!(reasons.len() >= 2, "varied failures: {reasons:?}");
    // Still alive: once the meter behaves, readings are Good.
    healthy.store(true, Ordering::SeqCst);
    let r = wait_for(&mut rx, WITHIN, is_good).await.unwrap();
    assert_eq!(r.power_kw(), Some(1.0));
    shutdown.cancel();
}
