//! Curtailment on real parts: 20 emulated ASICs (cgminer API), a Modbus meter whose power
//! follows them, the grid operator on a real mosquitto (TLS, ACL). A 40 % limit is obeyed within
//! a second; acks and compliance reports reach the operator; when the signal ends the miners come
//! back in ramped steps.

use blgv_sensors::control::{connect_shared, FirmwareKind, MinerEndpoint};
use blgv_sensors::controller::{ControllerConfig, MinerInfo, PowerState};
use blgv_sensors::curtailment::{self, LoopConfig, ManagedMiner};
use blgv_sensors::grid::mqtt;
use blgv_sensors::meter::{spawn_meter, MeterConfig, MeterRole, Preset, Transport};
use blgv_tests::asic::{AsicEmulator, EmulatorHandle};
use blgv_tests::meter_sim::{MeterSim, SimProfile};
use blgv_tests::mosquitto::Mosquitto;
use blgv_tests::wait_until;
use rumqttc::{AsyncClient, QoS};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const NOMINAL_W: f64 = 3250.0;
const OTHER_LOAD_W: f64 = 2000.0;

async fn operator(broker: &Mosquitto) -> (AsyncClient, Arc<Mutex<Vec<(String, Value)>>>) {
    let c = broker
        .recording_client("grid", "grid-secret", &["blgv/site/site1/curtailment/#"])
        .await;
    (c.client, c.seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forty_percent_limit_is_obeyed_within_a_second_and_lifted_in_steps() {
    let broker = match Mosquitto::start() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("curtailment test {why}");
            return;
        }
    };
    // 20 miners, efficiency 20..39 J/TH.
    let mut emulators: Vec<EmulatorHandle> = Vec::new();
    let mut managed = Vec::new();
    for i in 0..20 {
        let (addr, h) = AsicEmulator::start(FirmwareKind::Cgminer, NOMINAL_W, None)
            .await
            .unwrap();
        let m = h.miner();
        managed.push(ManagedMiner {
            info: MinerInfo {
                id: format!("asic{i:02}"),
                nominal_w: NOMINAL_W,
                idle_w: m.idle_w(),
                efficiency_j_per_th: 20.0 + i as f64,
                priority: 0,
                state: PowerState::Running,
            },
            control: connect_shared(&MinerEndpoint::new(FirmwareKind::Cgminer, addr.to_string())),
        });
        emulators.push(h);
    }
    let miners: Vec<_> = emulators.iter().map(|h| h.miner()).collect();
    let site_w = {
        let miners = miners.clone();
        Arc::new(move || OTHER_LOAD_W + miners.iter().map(|m| m.power_w()).sum::<f64>())
    };
    let sim = MeterSim::start(SimProfile::Sdm630, site_w.clone())
        .await
        .unwrap();
    let mut mc = MeterConfig::new(
        "site",
        MeterRole::SiteTotal,
        Transport::Tcp(sim.addr().to_string()),
        Preset::Sdm630,
    );
    mc.poll_interval_ms = 200;
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(mc, shutdown.clone());
    assert!(
        wait_until(Duration::from_secs(5), || meter
            .latest()
            .power_kw()
            .is_some())
        .await,
        "meter reading"
    );
    let full_kw = site_w() / 1000.0;
    assert!((full_kw - 67.0).abs() < 0.5, "{full_kw}");

    let grid = mqtt::spawn(broker.site_config(), shutdown.clone()).unwrap();
    let cfg = LoopConfig {
        controller: ControllerConfig {
            margin_kw: 1.0,
            hysteresis_kw: 3.0,
            restore_step_kw: 7.0,
            restore_interval: Duration::from_millis(800),
            settle: Duration::from_millis(400),
        },
        tick: Duration::from_millis(100),
        report_interval: Duration::from_millis(500),
        command_timeout: Duration::from_secs(2),
    };
    let control = curtailment::spawn(
        cfg,
        managed,
        meter.clone(),
        grid.signal(),
        Some(grid.clone()),
        shutdown.clone(),
    );
    let (op, seen) = operator(&broker).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 40 % of 67 kW.
    let limit_kw = (0.4 * full_kw * 10.0).round() / 10.0;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sent = Instant::now();
    op.publish(
        "blgv/site/site1/curtailment",
        QoS::AtLeastOnce,
        true,
        json!({"signal_id": "cut-40", "issued_at": now, "duration_s": 600, "limit_kw": limit_kw})
            .to_string(),
    )
    .await
    .unwrap();
    // Enough miners paused that nominal power is under the limit: 13 of 20 (3.15 kW each).
    let obeyed = wait_until(Duration::from_secs(3), || site_w() / 1000.0 <= limit_kw).await;
    let took = sent.elapsed();
    assert!(
        obeyed,
        "site at {:.1} kW vs limit {limit_kw}",
        site_w() / 1000.0
    );
    assert!(
        took < Duration::from_secs(1),
        "all chosen miners commanded {took:?} after the signal was published"
    );
    eprintln!("signal published → site under {limit_kw} kW in {took:?}");
    let paused: Vec<usize> = miners
        .iter()
        .enumerate()
        .filter(|(_, m)| m.is_paused())
        .map(|(i, _)| i)
        .collect();
    assert!(
        paused.iter().all(|i| *i >= 20 - paused.len()),
        "least efficient shed first: {paused:?}"
    );
    // The meter sees it, and the loop and the operator agree.
    assert!(
        wait_until(Duration::from_secs(3), || meter
            .latest()
            .power_kw()
            .is_some_and(|kw| kw <= limit_kw))
        .await
    );
    assert!(
        wait_until(Duration::from_secs(3), || seen.lock().unwrap().iter().any(
            |(t, v)| t.ends_with("/ack") && v["signal_id"] == "cut-40" && v["status"] == "accepted"
        ))
        .await
    );
    assert!(
        wait_until(Duration::from_secs(3), || seen.lock().unwrap().iter().any(
            |(t, v)| t.ends_with("/report")
                && v["signal_id"] == "cut-40"
                && v["compliant"] == true
                && v["miners_shed"] == paused.len()
        ))
        .await
    );
    let st = control.status();
    assert_eq!(
        (st.signal_id.as_deref(), st.miners_shed, st.commands_failed),
        (Some("cut-40"), paused.len(), 0)
    );

    // The operator ends the signal: miners come back most efficient first, at most 7 kW (two
    // miners) per step.
    op.publish(
        "blgv/site/site1/curtailment",
        QoS::AtLeastOnce,
        true,
        json!({"signal_id": "cut-40", "end": true}).to_string(),
    )
    .await
    .unwrap();
    let mut counts = vec![paused.len()];
    let restore_started = Instant::now();
    while counts.last() != Some(&0) && restore_started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = miners.iter().filter(|m| m.is_paused()).count();
        if Some(&n) != counts.last() {
            counts.push(n);
        }
    }
    assert_eq!(counts.last(), Some(&0), "all restored: {counts:?}");
    assert!(
        counts.windows(2).all(|w| w[0] - w[1] <= 2),
        "ramped, at most two miners a step: {counts:?}"
    );
    assert!(counts.len() >= 6, "restored over several steps: {counts:?}");
    shutdown.cancel();
}
