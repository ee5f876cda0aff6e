//! The meter poller against our Modbus TCP simulator (tests/src/meter_sim): every preset and a
//! custom map read the served values, over real TCP on 127.0.0.1.

#[allow(dead_code, unused_imports)]
#[path = "../../tests/src/meter_sim/mod.rs"]
mod meter_sim;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blgv_sensors::meter::{
    spawn_meter, MeterConfig, MeterRole, Preset, Quality, Quantity, Reading, RegisterFunction,
    RegisterSpec, Transport, ValueKind, WordOrder,
};
use meter_sim::wait::wait_for;
use meter_sim::{MeterSim, ServedValues, SimProfile};
use tokio_util::sync::CancellationToken;

const WITHIN: Duration = Duration::from_secs(10);

fn cfg(addr: SocketAddr, preset: Preset) -> MeterConfig {
    let mut c = MeterConfig::new(
        "sim",
        MeterRole::SiteTotal,
        Transport::Tcp(addr.to_string()),
        preset,
    );
    c.poll_interval_ms = 100;
    c.timeout_ms = 500;
    c.retries = 1;
    c.stale_after_ms = 3000;
    c
}

fn close(got: Option<f64>, want: f64, what: &str) {
    let got = got.unwrap_or_else(|| panic!("{what}: no value, want {want}"));
    let tol = 1e-9 * want.abs().max(1.0);
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want}");
}

fn assert_matches(r: &Reading, served: &ServedValues, phases: usize) {
    assert_eq!(r.quality, Quality::Good, "{r:?}");
    close(r.total_power_w, served.total_power_w, "total_power_w");
    close(r.power_kw(), served.total_power_w / 1000.0, "power_kw");
    close(
        r.import_energy_kwh,
        served.import_energy_kwh,
        "import_energy_kwh",
    );
    assert_eq!(r.phases.len(), phases, "{r:?}");
    for (i, (p, s)) in r.phases.iter().zip(&served.phases).enumerate() {
        close(p.voltage_v, s.voltage_v, &format!("L{} voltage", i + 1));
        close(p.current_a, s.current_a, &format!("L{} current", i + 1));
        close(p.power_w, s.power_w, &format!("L{} power", i + 1));
    }
}

async fn good_reading(sim: &MeterSim, c: MeterConfig) -> Reading {
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(c, shutdown.clone());
    let mut rx = meter.subscribe();
    let r = wait_for(&mut rx, WITHIN, |r| r.quality == Quality::Good)
        .await
        .unwrap();
    assert!(sim.requests() > 0);
    // latest() agrees with the subscription.
    assert_eq!(meter.latest().quality, Quality::Good);
    shutdown.cancel();
    r
}

#[tokio::test]
async fn sdm630_reads_the_served_values() {
    let sim = MeterSim::constant(SimProfile::Sdm630, 123_456.7)
        .await
        .unwrap();
    sim.set_import_energy_kwh(98_765.4);
    let r = good_reading(&sim, cfg(sim.addr(), Preset::Sdm630)).await;
    assert_matches(&r, &sim.served(), 3);
    assert_eq!(r.meter_id, "sim");
}

#[tokio::test]
async fn sdm120_reads_the_served_values() {
    let sim = MeterSim::constant(SimProfile::Sdm120, 3_456.5)
        .await
        .unwrap();
    let r = good_reading(&sim, cfg(sim.addr(), Preset::Sdm120)).await;
    assert_matches(&r, &sim.served(), 1);
}

#[tokio::test]
async fn em24_reads_the_served_values() {
    let sim = MeterSim::constant(SimProfile::Em24, 250_000.3)
        .await
        .unwrap();
    let r = good_reading(&sim, cfg(sim.addr(), Preset::Em24)).await;
    assert_matches(&r, &sim.served(), 3);
    // Negative power (export) keeps its sign through INT32 low-word-first decoding.
    let sim = MeterSim::constant(SimProfile::Em24, -4_321.9)
        .await
        .unwrap();
    let r = good_reading(&sim, cfg(sim.addr(), Preset::Em340)).await;
    assert_matches(&r, &sim.served(), 3);
    assert!(r.total_power_w.unwrap() < 0.0);
}

#[tokio::test]
async fn sunspec_203_found_at_40000_0_and_50000() {
    for base in [40000u16, 0, 50000] {
        let sim = MeterSim::constant(SimProfile::SunSpec203 { base }, 187_654.0)
            .await
            .unwrap();
        let r = good_reading(&sim, cfg(sim.addr(), Preset::Sunspec)).await;
        assert_matches(&r, &sim.served(), 3);
    }
}

#[tokio::test]
async fn sunspec_213_float_model() {
    let sim = MeterSim::constant(SimProfile::SunSpec213 { base: 40000 }, 54_321.25)
        .await
        .unwrap();
    let r = good_reading(&sim, cfg(sim.addr(), Preset::Sunspec)).await;
    assert_matches(&r, &sim.served(), 3);
}

#[tokio::test]
async fn custom_map() {
    // The SDM630 image read through a hand-written map: total power and L2 voltage only.
    let sim = MeterSim::constant(SimProfile::Sdm630, 42_000.5)
        .await
        .unwrap();
    let mut c = cfg(sim.addr(), Preset::Custom);
    let spec = |quantity, address| RegisterSpec {
        quantity,
        address,
        function: RegisterFunction::Input,
        kind: ValueKind::F32,
        word_order: WordOrder::HighFirst,
        scale: 1.0,
    };
    c.registers = vec![
        spec(Quantity::TotalPowerW, 0x34),
        spec(Quantity::L2VoltageV, 0x02),
        RegisterSpec {
            scale: 0.001, // report the energy in MWh-as-kWh to prove the scale is applied
            ..spec(Quantity::ImportEnergyKwh, 0x48)
        },
    ];
    let r = good_reading(&sim, c).await;
    let served = sim.served();
    close(r.total_power_w, served.total_power_w, "total");
    close(
        r.import_energy_kwh,
        served.import_energy_kwh * 0.001,
        "scaled energy",
    );
    assert_eq!(r.phases.len(), 2);
    assert_eq!(r.phases[0].voltage_v, None);
    close(
        r.phases[1].voltage_v,
        served.phases[1].voltage_v,
        "L2 voltage",
    );
}

#[tokio::test]
async fn custom_map_em24_layout_from_json() {
    // A custom map as an operator would write it (JSON here; the same serde works for TOML).
    let sim = MeterSim::constant(SimProfile::Em24, 77_777.7)
        .await
        .unwrap();
    let json = format!(
        r#"{{"id":"cg","role":"feeder","transport":{{"tcp":"{}"}},"preset":"custom",
            "poll_interval_ms":100,"timeout_ms":500,"retries":1,"stale_after_ms":3000,
            "registers":[{{"quantity":"total_power_w","address":40,"kind":"i32",
                           "word_order":"low_first","scale":0.1}}]}}"#,
        sim.addr()
    );
    let c: MeterConfig = serde_json::from_str(&json).unwrap();
    let r = good_reading(&sim, c).await;
    close(r.total_power_w, sim.served().total_power_w, "total");
}

#[tokio::test]
async fn power_follows_the_closure() {
    let watts = Arc::new(AtomicU64::new(10_000f64.to_bits()));
    let w = watts.clone();
    let sim = MeterSim::start(
        SimProfile::Sdm630,
        Arc::new(move || f64::from_bits(w.load(Ordering::SeqCst))),
    )
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(cfg(sim.addr(), Preset::Sdm630), shutdown.clone());
    let mut rx = meter.subscribe();
    wait_for(&mut rx, WITHIN, |r| r.power_kw() == Some(10.0))
        .await
        .unwrap();
    for kw in [250.5f64, 0.0, 1_000.25] {
        watts.store((kw * 1000.0).to_bits(), Ordering::SeqCst);
        let r = wait_for(&mut rx, WITHIN, |r| r.power_kw() == Some(kw))
            .await
            .unwrap();
        assert!(r.at >= std::time::SystemTime::UNIX_EPOCH);
    }
    shutdown.cancel();
    let r = wait_for(&mut rx, WITHIN, |r| {
        matches!(r.quality, Quality::Bad { .. })
    })
    .await
    .unwrap();
    assert_eq!(
        r.quality,
        Quality::Bad {
            reason: "meter poller stopped".into()
        }
    );
}

#[tokio::test]
async fn handles_are_cheap_clones_of_one_meter() {
    let sim = MeterSim::constant(SimProfile::Sdm630, 1_500.0)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(cfg(sim.addr(), Preset::Sdm630), shutdown.clone());
    let other = meter.clone();
    assert_eq!(other.id(), "sim");
    assert_eq!(other.role(), MeterRole::SiteTotal);
    let mut rx = other.subscribe();
    wait_for(&mut rx, WITHIN, |r| r.quality == Quality::Good)
        .await
        .unwrap();
    assert_eq!(meter.latest().power_kw(), Some(1.5));
    shutdown.cancel();
}
