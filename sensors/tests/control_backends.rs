//! Every firmware backend against its emulator over real TCP: pause, resume, power limit,
//! status, wrong credentials, a silent miner, garbage answers, an unreachable address, and
//! credential redaction.

#[allow(dead_code)]
#[path = "../../tests/src/asic/mod.rs"]
mod asic;

use std::time::{Duration, Instant};

use asic::{AsicEmulator, Credentials, EmulatorHandle, EmulatorOptions, Fault, MinerState};
use blgv_sensors::control::{
    connect, ControlError, FirmwareKind, MinerControl, MinerEndpoint, Secret,
};

const NOMINAL_W: f64 = 3250.0;
const PASSWORD: &str = "s3cret-Pa55";

fn credentials(kind: FirmwareKind) -> Option<Credentials> {
    match kind {
        FirmwareKind::BraiinsOs => Some(Credentials::new("root", PASSWORD)),
        FirmwareKind::Whatsminer | FirmwareKind::Vnish => Some(Credentials::new("admin", PASSWORD)),
        FirmwareKind::Cgminer | FirmwareKind::LuxOs => None,
    }
}

fn endpoint(kind: FirmwareKind, addr: std::net::SocketAddr, password: &str) -> MinerEndpoint {
    let mut e = MinerEndpoint::new(kind, addr.to_string()).with_timeout_ms(2000);
    match kind {
        FirmwareKind::BraiinsOs => e = e.with_username("root").with_password(password),
        FirmwareKind::Whatsminer | FirmwareKind::Vnish => e = e.with_password(password),
        FirmwareKind::Cgminer | FirmwareKind::LuxOs => {}
    }
    e
}

async fn start(
    kind: FirmwareKind,
    options: EmulatorOptions,
) -> (EmulatorHandle, Box<dyn MinerControl>) {
    let options = EmulatorOptions {
        credentials: credentials(kind),
        ..options
    };
    let (addr, handle) = AsicEmulator::start_with(kind, NOMINAL_W, options)
        .await
        .expect("emulator starts");
    let control = connect(&endpoint(kind, addr, PASSWORD));
    (handle, control)
}

async fn pause_resume_status(kind: FirmwareKind) {
    let (emu, control) = start(kind, EmulatorOptions::default()).await;
    assert_eq!(control.kind(), kind);
    assert!(control.capabilities().pause);

    let before = control.status().await.expect("status while hashing");
    assert!(before.hashing, "{kind}: {before:?}");
    if kind != FirmwareKind::Cgminer {
        let w = before.power_w.expect("firmware reports power");
        assert!((w - NOMINAL_W).abs() < 1.0, "{kind}: reported {w} W");
    }

    control.pause().await.expect("pause");
    assert!(emu.is_paused(), "{kind}: emulator not paused");
    assert_eq!(emu.state(), MinerState::Paused);
    assert!(
        (emu.power_w() - emu.idle_w()).abs() < 1e-9,
        "{kind}: {} W",
        emu.power_w()
    );
    let paused = control.status().await.expect("status while paused");
    assert!(!paused.hashing, "{kind}: {paused:?}");
    if let Some(w) = paused.power_w {
        assert!(w < NOMINAL_W * 0.05, "{kind}: paused but reports {w} W");
    }
    // Pausing twice is harmless.
    control.pause().await.expect("second pause");

    control.resume().await.expect("resume");
    assert!(!emu.is_paused());
    assert_eq!(emu.state(), MinerState::Hashing);
    assert!((emu.power_w() - NOMINAL_W).abs() < 1e-9);
    assert!(control.status().await.unwrap().hashing);
    println!("{kind}: commands seen {:?}", emu.commands_seen());
}

async fn power_limit(kind: FirmwareKind) {
    let (emu, control) = start(kind, EmulatorOptions::default()).await;
    let result = control.set_power_limit(2800).await;
    if !control.capabilities().power_limit {
        match result {
            Err(ControlError::Unsupported {
                ref address,
                ref what,
            }) => {
                assert_eq!(address, &emu.addr().to_string());
                assert!(what.contains("power"), "{what}");
            }
            other => panic!("{kind}: expected Unsupported, got {other:?}"),
        }
        assert_eq!(emu.state(), MinerState::Hashing);
        return;
    }
    result.expect("set_power_limit");
    let MinerState::Limited(limit) = emu.state() else {
        panic!("{kind}: state {:?}", emu.state());
    };
    assert!(
        limit <= 2800.0 && limit > NOMINAL_W * 0.5,
        "{kind}: limit {limit}"
    );
    assert!(emu.power_w() <= 2800.0, "{kind}: draws {} W", emu.power_w());
    let status = control.status().await.expect("status");
    assert!(status.hashing);
    let reported = status.power_limit_w.expect("limit reported");
    assert!(
        reported <= 2800 && (reported as f64 - limit).abs() < 1.0,
        "{kind}: {status:?}"
    );

    // Paused under a limit, then resumed: back to the limit, not nominal.
    control.pause().await.unwrap();
    assert!((emu.power_w() - emu.idle_w()).abs() < 1e-9);
    control.resume().await.unwrap();
    assert!(
        (emu.power_w() - limit).abs() < 1e-9,
        "{kind}: {} W",
        emu.power_w()
    );

    // A limit below what the firmware can do is a clear refusal, not a silent no-op.
    match control.set_power_limit(100).await {
        Err(ControlError::Rejected { message, .. }) => {
            println!("{kind}: 100 W refused: {message}");
        }
        other => panic!("{kind}: expected Rejected for 100 W, got {other:?}"),
    }
}

async fn wrong_credentials(kind: FirmwareKind) {
    let mut options = EmulatorOptions::default();
    match kind {
        FirmwareKind::Cgminer => options.write_access = false,
        FirmwareKind::LuxOs => options.foreign_session = true,
        _ => {}
    }
    let (emu, _) = start(kind, options).await;
    let wrong = "wrong-password";
    let control = connect(&endpoint(kind, emu.addr(), wrong));
    let err = control.pause().await.expect_err("pause must fail");
    let ControlError::Auth { address, fix, .. } = &err else {
        panic!("{kind}: expected Auth, got {err:?}");
    };
    assert_eq!(address, &emu.addr().to_string());
    let text = err.to_string();
    let hint = match kind {
        FirmwareKind::Cgminer => "api-allow",
        FirmwareKind::LuxOs => "session",
        _ => "password",
    };
    assert!(
        fix.contains(hint),
        "{kind}: fix does not mention {hint}: {text}"
    );
    assert!(text.contains(&emu.addr().to_string()));
    assert!(!text.contains(wrong) && !format!("{err:?}").contains(wrong));
    assert!(!emu.is_paused(), "{kind}: paused despite bad credentials");
    println!("{kind}: {text}");
}

async fn silent_miner_times_out(kind: FirmwareKind) {
    let (emu, _) = start(kind, EmulatorOptions::default()).await;
    emu.set_fault(Fault::Silent);
    let control = connect(&endpoint(kind, emu.addr(), PASSWORD).with_timeout_ms(300));
    let t0 = Instant::now();
    let err = control.pause().await.expect_err("silent miner");
    let took = t0.elapsed();
    assert!(
        matches!(err, ControlError::Timeout { after_ms: 300, .. }),
        "{kind}: expected Timeout, got {err:?}"
    );
    assert!(took < Duration::from_millis(1500), "{kind}: took {took:?}");
    assert!(err.to_string().contains("timeout_ms"));
    let err = control.status().await.expect_err("silent miner");
    assert!(
        matches!(err, ControlError::Timeout { .. }),
        "{kind}: {err:?}"
    );
}

async fn garbage_is_a_protocol_error(kind: FirmwareKind) {
    let (emu, _) = start(kind, EmulatorOptions::default()).await;
    emu.set_fault(Fault::Garbage);
    let control = connect(&endpoint(kind, emu.addr(), PASSWORD));
    for result in [
        control.pause().await,
        control.resume().await,
        control.status().await.map(|_| ()),
    ] {
        match result {
            Err(ControlError::Protocol { detail, .. }) => println!("{kind}: {detail}"),
            other => panic!("{kind}: expected Protocol, got {other:?}"),
        }
    }
    assert!(!emu.is_paused());
}

async fn unreachable(kind: FirmwareKind) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let control = connect(&endpoint(kind, addr, PASSWORD));
    let err = control.pause().await.expect_err("nothing listens");
    assert!(
        matches!(err, ControlError::Unreachable { .. }),
        "{kind}: expected Unreachable, got {err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()));
}

macro_rules! backend_tests {
    ($name:ident, $kind:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn pause_resume_and_status() {
                pause_resume_status($kind).await;
            }

            #[tokio::test]
            async fn power_limit_or_unsupported() {
                power_limit($kind).await;
            }

            #[tokio::test]
            async fn wrong_credentials_are_an_auth_error_naming_the_fix() {
                wrong_credentials($kind).await;
            }

            #[tokio::test]
            async fn a_silent_miner_times_out() {
                silent_miner_times_out($kind).await;
            }

            #[tokio::test]
            async fn garbage_answers_are_protocol_errors() {
                garbage_is_a_protocol_error($kind).await;
            }

            #[tokio::test]
            async fn a_closed_port_is_unreachable() {
                unreachable($kind).await;
            }
        }
    };
}

backend_tests!(cgminer, FirmwareKind::Cgminer);
backend_tests!(luxos, FirmwareKind::LuxOs);
backend_tests!(braiins_os, FirmwareKind::BraiinsOs);
backend_tests!(whatsminer, FirmwareKind::Whatsminer);
backend_tests!(vnish, FirmwareKind::Vnish);

#[tokio::test]
async fn bmminer_without_ascdisable_says_pause_is_unsupported() {
    let options = EmulatorOptions {
        bmminer: true,
        ..EmulatorOptions::default()
    };
    let (emu, control) = start(FirmwareKind::Cgminer, options).await;
    match control.pause().await {
        Err(ControlError::Unsupported { what, .. }) => {
            assert!(what.contains("ascdisable"), "{what}");
            println!("bmminer: {what}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(!emu.is_paused());
}

#[tokio::test]
async fn secrets_never_print() {
    let endpoint = MinerEndpoint::new(FirmwareKind::BraiinsOs, "10.0.0.9")
        .with_username("root")
        .with_password("hunter2-very-secret");
    let debug = format!("{endpoint:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("***"));
    let secret = Secret::new("hunter2-very-secret");
    assert_eq!(format!("{secret}"), "***");
    assert_eq!(format!("{secret:?}"), "***");
    assert_eq!(secret.expose(), "hunter2-very-secret");

    // From a config file too.
    let parsed: MinerEndpoint = serde_json::from_str(
        r#"{"kind":"whatsminer","address":"10.0.0.7","password":"hunter2-very-secret"}"#,
    )
    .unwrap();
    assert!(!format!("{parsed:?}").contains("hunter2"));
    assert_eq!(
        parsed.password.as_ref().unwrap().expose(),
        "hunter2-very-secret"
    );
}

#[tokio::test]
async fn a_whatsminer_token_is_reused_and_renewed_after_a_miner_restart() {
    let (emu, control) = start(FirmwareKind::Whatsminer, EmulatorOptions::default()).await;
    control.pause().await.unwrap();
    control.resume().await.unwrap();
    control.set_power_limit(3000).await.unwrap();
    let tokens = emu
        .commands_seen()
        .iter()
        .filter(|c| *c == "get_token")
        .count();
    assert_eq!(tokens, 1, "{:?}", emu.commands_seen());

    // Same address, new process (new salt, no tokens): the cached token is refused with
    // "check token error" and the client fetches a new one by itself.
    let addr = emu.addr();
    drop(emu);
    let listener_free = async {
        for _ in 0..50 {
            if std::net::TcpListener::bind(addr).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    listener_free.await;
    let restarted = restart_on(addr, FirmwareKind::Whatsminer).await;
    control
        .pause()
        .await
        .expect("pause after the miner restarted");
    assert!(restarted.is_paused());
}

/// Starts an emulator on a given (just freed) address.
async fn restart_on(addr: std::net::SocketAddr, kind: FirmwareKind) -> EmulatorHandle {
    let options = EmulatorOptions {
        credentials: credentials(kind),
        ..EmulatorOptions::default()
    };
    AsicEmulator::start_at(addr, kind, NOMINAL_W, options)
        .await
        .expect("restart emulator on the same port")
        .1
}

#[tokio::test]
async fn luxos_logs_off_and_reports_a_session_held_by_another_tool() {
    let (emu, control) = start(FirmwareKind::LuxOs, EmulatorOptions::default()).await;
    control.pause().await.unwrap();
    // Another client (here: a raw logon) cannot get in while a session is open...
    let raw = |cmd: &'static str| {
        let addr = emu.addr();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("{{\"command\":\"{cmd}\"}}").as_bytes())
                .await
                .unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            String::from_utf8_lossy(&out).to_string()
        }
    };
    // Our client logged off, so a foreign logon works and now holds the only session.
    assert!(raw("logon").await.contains("Session created"));
    let err = control.resume().await.expect_err("session held elsewhere");
    assert!(matches!(err, ControlError::Auth { .. }), "{err:?}");
    assert!(emu.is_paused());
}
