//! 200 emulated miners (40 of each firmware) commanded at once: all pause, the site's summed
//! power drops to idle, all resume, within a few seconds.

#[allow(dead_code)]
#[path = "../../tests/src/asic/mod.rs"]
mod asic;

use std::time::{Duration, Instant};

use asic::{AsicEmulator, Credentials, EmulatorHandle};
use blgv_sensors::control::{connect, FirmwareKind, MinerControl, MinerEndpoint};
use futures::future::join_all;

const PER_KIND: usize = 40;
const NOMINAL_W: f64 = 3000.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_miners_pause_and_resume_concurrently() {
    let mut fleet: Vec<(EmulatorHandle, Box<dyn MinerControl>)> = Vec::new();
    for kind in FirmwareKind::ALL {
        for i in 0..PER_KIND {
            let password = format!("pw-{kind}-{i}");
            let creds = Credentials::new(
                if kind == FirmwareKind::BraiinsOs {
                    "root"
                } else {
                    "admin"
                },
                password.clone(),
            );
            let (addr, handle) = AsicEmulator::start(kind, NOMINAL_W, Some(creds))
                .await
                .unwrap();
            let mut endpoint = MinerEndpoint::new(kind, addr.to_string()).with_timeout_ms(5000);
            if matches!(
                kind,
                FirmwareKind::BraiinsOs | FirmwareKind::Whatsminer | FirmwareKind::Vnish
            ) {
                endpoint = endpoint.with_password(password);
            }
            if kind == FirmwareKind::BraiinsOs {
                endpoint = endpoint.with_username("root");
            }
            fleet.push((handle, connect(&endpoint)));
        }
    }
    let site_w = |fleet: &[(EmulatorHandle, Box<dyn MinerControl>)]| -> f64 {
        fleet.iter().map(|(e, _)| e.power_w()).sum()
    };
    let full = site_w(&fleet);
    assert!((full - NOMINAL_W * fleet.len() as f64).abs() < 1e-6);

    let t0 = Instant::now();
    let results = join_all(fleet.iter().map(|(_, c)| c.pause())).await;
    let pause_time = t0.elapsed();
    for (r, (e, c)) in results.iter().zip(&fleet) {
        assert!(r.is_ok(), "{} at {}: {r:?}", c.kind(), e.addr());
        assert!(e.is_paused(), "{} at {} not paused", c.kind(), e.addr());
    }
    let idle = site_w(&fleet);
    let expected_idle: f64 = fleet.iter().map(|(e, _)| e.idle_w()).sum();
    assert!(
        (idle - expected_idle).abs() < 1e-6,
        "{idle} vs {expected_idle}"
    );

    let t1 = Instant::now();
    let results = join_all(fleet.iter().map(|(_, c)| c.resume())).await;
    let resume_time = t1.elapsed();
    assert!(results.iter().all(Result::is_ok));
    assert!((site_w(&fleet) - full).abs() < 1e-6);

    let t2 = Instant::now();
    let statuses = join_all(fleet.iter().map(|(_, c)| c.status())).await;
    let status_time = t2.elapsed();
    assert!(statuses
        .iter()
        .all(|s| s.as_ref().map(|s| s.hashing).unwrap_or(false)));

    println!(
        "{} miners: pause {:?}, resume {:?}, status {:?}; site {:.0} kW -> {:.1} kW -> {:.0} kW",
        fleet.len(),
        pause_time,
        resume_time,
        status_time,
        full / 1000.0,
        idle / 1000.0,
        site_w(&fleet) / 1000.0
    );
    // Generous for a loaded 2-core CI machine; a sequential client would need far longer.
    assert!(
        pause_time < Duration::from_secs(15),
        "pause took {pause_time:?}"
    );
    assert!(
        resume_time < Duration::from_secs(15),
        "resume took {resume_time:?}"
    );
}
