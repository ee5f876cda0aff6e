//! The meter poller against pymodbus, a Modbus TCP server we did not write
//! (tests/tools/pymodbus_meter.py). Skipped, with the reason printed, when python3 or pymodbus
//! is not installed (scripts/test installs the pinned version from scripts/test-deps/pip.txt).

#[allow(dead_code, unused_imports)]
#[path = "../../tests/src/meter_sim/mod.rs"]
mod meter_sim;

use std::time::Duration;

use blgv_sensors::meter::{spawn_meter, MeterConfig, MeterRole, Preset, Quality, Transport};
use meter_sim::image::{ideal, quantize};
use meter_sim::pymodbus::{PyStart, PymodbusSim};
use meter_sim::wait::wait_for;
use meter_sim::SimProfile;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn sdm630_against_pymodbus() {
    let served = quantize(
        SimProfile::Sdm630,
        ideal(SimProfile::Sdm630, 345_678.9, 4_242.5),
    );
    let sim = match PymodbusSim::start_sdm630(&served, 1).await {
        Ok(PyStart::Running(sim)) => sim,
        Ok(PyStart::Skipped(why)) => {
            println!("skipped: {why}");
            return;
        }
        Err(e) => panic!("pymodbus simulator failed: {e}"),
    };
    let mut c = MeterConfig::new(
        "py",
        MeterRole::SiteTotal,
        Transport::Tcp(sim.addr().to_string()),
        Preset::Sdm630,
    );
    c.poll_interval_ms = 100;
    c.timeout_ms = 1000;
    c.retries = 1;
    c.stale_after_ms = 5000;
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(c, shutdown.clone());
    let mut rx = meter.subscribe();
    let r = wait_for(&mut rx, Duration::from_secs(20), |r| {
        r.quality == Quality::Good
    })
    .await
    .unwrap();
    let close = |got: Option<f64>, want: f64, what: &str| {
        let got = got.unwrap_or_else(|| panic!("{what}: missing"));
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{what}: got {got}, want {want}"
        );
    };
    close(r.total_power_w, served.total_power_w, "total_power_w");
    close(
        r.import_energy_kwh,
        served.import_energy_kwh,
        "import_energy_kwh",
    );
    assert_eq!(r.phases.len(), 3);
    for (i, (p, s)) in r.phases.iter().zip(&served.phases).enumerate() {
        close(p.voltage_v, s.voltage_v, &format!("L{} V", i + 1));
        close(p.current_a, s.current_a, &format!("L{} A", i + 1));
        close(p.power_w, s.power_w, &format!("L{} W", i + 1));
    }

    // pymodbus goes away: the reading degrades, never panics.
    sim.stop().await;
    let r = wait_for(&mut rx, Duration::from_secs(20), |r| {
        r.quality != Quality::Good
    })
    .await
    .unwrap();
    assert!(
        matches!(r.quality, Quality::Stale { .. } | Quality::Bad { .. }),
        "{r:?}"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn pymodbus_exception_for_unmapped_registers_is_named() {
    // The custom map reads a register pymodbus does not serve: pymodbus answers with exception
    // 0x02, which must show up by name.
    let served = quantize(SimProfile::Sdm630, ideal(SimProfile::Sdm630, 1_000.0, 1.0));
    let sim = match PymodbusSim::start_sdm630(&served, 1).await {
        Ok(PyStart::Running(sim)) => sim,
        Ok(PyStart::Skipped(why)) => {
            println!("skipped: {why}");
            return;
        }
        Err(e) => panic!("pymodbus simulator failed: {e}"),
    };
    let json = format!(
        r#"{{"id":"py","role":"feeder","transport":{{"tcp":"{}"}},"preset":"custom",
            "poll_interval_ms":100,"timeout_ms":1000,"retries":0,
            "registers":[{{"quantity":"total_power_w","address":1000}}]}}"#,
        sim.addr()
    );
    let c: MeterConfig = serde_json::from_str(&json).unwrap();
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(c, shutdown.clone());
    let mut rx = meter.subscribe();
    let r = wait_for(
        &mut rx,
        Duration::from_secs(20),
        |r| matches!(&r.quality, Quality::Bad { reason } if reason.contains("exception")),
    )
    .await
    .unwrap();
    let Quality::Bad { reason } = &r.quality else {
        unreachable!()
    };
    assert!(reason.contains("0x02 Illegal Data Address"), "{reason}");
    shutdown.cancel();
    sim.stop().await;
}
