//! Modbus RTU without hardware: the meter poller opens the slave side of a pseudo terminal by
//! its path, exactly as it would open /dev/ttyUSB0, and tokio-modbus's RTU server answers on the
//! master side with the simulator's register brain.

#![cfg(unix)]

#[allow(dead_code, unused_imports)]
#[path = "../../tests/src/meter_sim/mod.rs"]
mod meter_sim;

use std::time::Duration;

use blgv_sensors::meter::{
    spawn_meter, MeterConfig, MeterRole, Parity, Preset, Quality, RtuSettings, Transport,
};
use meter_sim::wait::wait_for;
use meter_sim::{MeterSim, SimProfile};
use tokio_modbus::ExceptionCode;
use tokio_serial::SerialPort;
use tokio_util::sync::CancellationToken;

const WITHIN: Duration = Duration::from_secs(15);

struct Line {
    path: String,
    // Kept open: a pty master reads EIO once no slave is open.
    _slave: tokio_serial::SerialStream,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Line {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A pty whose master side serves `sim`'s registers over Modbus RTU. `None` when ptys are not
/// available here.
fn rtu_line(sim: &MeterSim) -> Option<Line> {
    let (master, slave) = match tokio_serial::SerialStream::pair() {
        Ok(p) => p,
        Err(e) => {
            println!("skipped: no pseudo terminal: {e}");
            return None;
        }
    };
    let path = slave.name()?;
    let service = sim.service();
    let server = tokio::spawn(async move {
        let server = tokio_modbus::server::rtu::Server::new(master);
        let _ = server.serve_forever(service).await;
    });
    Some(Line {
        path,
        _slave: slave,
        server,
    })
}

fn cfg(path: &str, preset: Preset) -> MeterConfig {
    let mut c = MeterConfig::new(
        "rtu",
        MeterRole::Feeder,
        Transport::Rtu(RtuSettings {
            path: path.to_string(),
            baud: 19200,
            parity: Parity::Even,
            stop_bits: 1,
            data_bits: 8,
        }),
        preset,
    );
    c.unit_id = 3;
    c.poll_interval_ms = 100;
    c.timeout_ms = 300;
    c.retries = 1;
    c.stale_after_ms = 3000;
    c
}

#[tokio::test]
async fn sdm630_over_rtu() {
    let sim = MeterSim::constant(SimProfile::Sdm630, 22_222.5)
        .await
        .unwrap();
    let Some(line) = rtu_line(&sim) else { return };
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(cfg(&line.path, Preset::Sdm630), shutdown.clone());
    let mut rx = meter.subscribe();
    let r = wait_for(&mut rx, WITHIN, |r| r.quality == Quality::Good)
        .await
        .unwrap();
    let served = sim.served();
    assert_eq!(r.total_power_w, Some(served.total_power_w));
    assert_eq!(r.import_energy_kwh, Some(served.import_energy_kwh));
    assert_eq!(r.phases.len(), 3);
    assert_eq!(r.phases[2].voltage_v, Some(served.phases[2].voltage_v));

    // Exceptions travel over RTU too.
    sim.set_exception(Some(ExceptionCode::ServerDeviceFailure));
    let r = wait_for(&mut rx, WITHIN, |r| r.quality != Quality::Good)
        .await
        .unwrap();
    match &r.quality {
        Quality::Bad { reason } => {
            assert!(reason.contains("0x04 Server Device Failure"), "{reason}")
        }
        q => panic!("{q:?}"),
    }
    sim.set_exception(None);
    wait_for(&mut rx, WITHIN, |r| r.quality == Quality::Good)
        .await
        .unwrap();

    // A silent slave on the bus: Stale, then Bad "timeout", then back.
    sim.set_silent(true);
    wait_for(&mut rx, WITHIN, |r| {
        matches!(r.quality, Quality::Stale { .. })
    })
    .await
    .unwrap();
    let r = wait_for(&mut rx, WITHIN, |r| {
        matches!(r.quality, Quality::Bad { .. })
    })
    .await
    .unwrap();
    match &r.quality {
        Quality::Bad { reason } => assert!(reason.starts_with("timeout"), "{reason}"),
        q => panic!("{q:?}"),
    }
    sim.set_silent(false);
    wait_for(&mut rx, WITHIN, |r| r.quality == Quality::Good)
        .await
        .unwrap();
    shutdown.cancel();
}

#[tokio::test]
async fn em24_over_rtu() {
    let sim = MeterSim::constant(SimProfile::Em24, -1_234.5)
        .await
        .unwrap();
    let Some(line) = rtu_line(&sim) else { return };
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(cfg(&line.path, Preset::Em24), shutdown.clone());
    let mut rx = meter.subscribe();
    let r = wait_for(&mut rx, WITHIN, |r| r.quality == Quality::Good)
        .await
        .unwrap();
    assert_eq!(r.total_power_w, Some(sim.served().total_power_w));
    shutdown.cancel();
}

#[tokio::test]
async fn missing_serial_port_is_bad_cannot_connect() {
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(
        cfg("/dev/does-not-exist-blgv", Preset::Sdm630),
        shutdown.clone(),
    );
    let mut rx = meter.subscribe();
    let r = wait_for(
        &mut rx,
        WITHIN,
        |r| matches!(&r.quality, Quality::Bad { reason } if reason.contains("cannot connect")),
    )
    .await
    .unwrap();
    let Quality::Bad { reason } = &r.quality else {
        unreachable!()
    };
    assert!(reason.contains("/dev/does-not-exist-blgv"), "{reason}");
    shutdown.cancel();
}
