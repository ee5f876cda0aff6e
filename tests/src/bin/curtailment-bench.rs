//! `curtailment-bench`: how long from a grid signal to every chosen miner commanded, for N
//! emulated ASICs (real TCP, each speaking its firmware's API) behind a Modbus meter.
//!
//! ```sh
//! cargo run --release -p blgv-tests --bin curtailment-bench -- --miners 1000 --kind cgminer
//! ```

use blgv_sensors::control::{connect_shared, FirmwareKind, MinerEndpoint};
use blgv_sensors::controller::{ControllerConfig, MinerInfo, PowerState};
use blgv_sensors::curtailment::{self, LoopConfig, ManagedMiner};
use blgv_sensors::grid::Signal;
use blgv_sensors::meter::{spawn_meter, MeterConfig, MeterRole, Preset, Transport};
use blgv_tests::asic::AsicEmulator;
use blgv_tests::meter_sim::{MeterSim, SimProfile};
use clap::Parser;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    miners: usize,
    /// cgminer, lux_os, braiins_os, whatsminer or vnish.
    #[arg(long, default_value = "cgminer")]
    kind: String,
    /// The limit as a fraction of the site's full power.
    #[arg(long, default_value_t = 0.4)]
    fraction: f64,
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kind: FirmwareKind = serde_json::from_value(serde_json::Value::String(args.kind.clone()))?;
    println!(
        "curtailment-bench: {} emulated {:?} miners, limit {:.0} % of full power, {} runs",
        args.miners,
        kind,
        args.fraction * 100.0,
        args.runs
    );
    let mut emulators = Vec::new();
    let mut managed = Vec::new();
    for i in 0..args.miners {
        let (addr, h) = AsicEmulator::start(kind, 3250.0, None).await?;
        let creds = h.miner().credentials().clone();
        let endpoint = MinerEndpoint::new(kind, addr.to_string())
            .with_username(creds.username)
            .with_password(creds.password);
        managed.push(ManagedMiner {
            info: MinerInfo {
                id: format!("m{i:05}"),
                nominal_w: 3250.0,
                idle_w: h.miner().idle_w(),
                efficiency_j_per_th: 20.0 + (i % 97) as f64 * 0.1,
                priority: 0,
                min_power_w: None,
                state: PowerState::Running,
            },
            control: connect_shared(&endpoint),
        });
        emulators.push(h);
    }
    let miners: Vec<_> = emulators.iter().map(|h| h.miner()).collect();
    let site = {
        let m = miners.clone();
        Arc::new(move || m.iter().map(|x| x.power_w()).sum::<f64>())
    };
    let sim = MeterSim::start(SimProfile::Sdm630, site.clone()).await?;
    let mut mc = MeterConfig::new(
        "site",
        MeterRole::SiteTotal,
        Transport::Tcp(sim.addr().to_string()),
        Preset::Sdm630,
    );
    mc.poll_interval_ms = 100;
    let shutdown = CancellationToken::new();
    let meter = spawn_meter(mc, shutdown.clone());
    while meter.latest().power_kw().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (tx, rx) = tokio::sync::watch::channel(None);
    let cfg = LoopConfig {
        controller: ControllerConfig {
            restore_step_kw: 1e9,
            restore_interval: Duration::ZERO,
            ..Default::default()
        },
        tick: Duration::from_millis(100),
        ..Default::default()
    };
    let _loop = curtailment::spawn(cfg, managed, meter.clone(), rx, None, shutdown.clone());
    let full_kw = site() / 1000.0;
    let mut results = Vec::new();
    for run in 0..args.runs {
        let limit = full_kw * args.fraction;
        let now = SystemTime::now();
        let t0 = Instant::now();
        tx.send_replace(Some(Signal {
            id: format!("bench-{run}"),
            issued_at: now,
            start: now,
            duration: Duration::from_secs(3600),
            limit_kw: Some(limit),
            level: None,
        }));
        while site() / 1000.0 > limit - 1.0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = t0.elapsed();
        let paused = miners.iter().filter(|m| m.is_paused()).count();
        println!("run {run}: signal → {paused} miners paused (site {:.0} → {:.0} kW, limit {limit:.0} kW) in {:.1} ms", full_kw, site() / 1000.0, took.as_secs_f64() * 1000.0);
        results.push(took);
        // Lift the signal and wait for everything to come back before the next run.
        tx.send_replace(None);
        while miners.iter().any(|m| m.is_paused()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The next signal goes out at once, while the meter may still read part of the
        // curtailed site: the controller counts on what its restore brought back until the
        // meter shows it (before it did, such a signal left the site over the limit for the
        // controller's 3 s settle time).
    }
    results.sort();
    println!(
        "signal-to-commands for {} miners: best {:.1} ms, median {:.1} ms, worst {:.1} ms (goal: 250 ms)",
        args.miners,
        results[0].as_secs_f64() * 1000.0,
        results[results.len() / 2].as_secs_f64() * 1000.0,
        results[results.len() - 1].as_secs_f64() * 1000.0
    );
    shutdown.cancel();
    Ok(())
}
