//! Curtailment wired into blgv-proxy, configured the way an operator writes it: 20 miners hash
//! through the proxy to a test pool; each has an emulated firmware API (four of each: cgminer,
//! LuxOS, Braiins OS, Whatsminer, Vnish) whose pause really stops the miner's hashing; a Modbus
//! meter (our tokio-modbus SDM630 simulator) measures the emulated machines; the grid operator
//! publishes on a real mosquitto (TLS, passwords, ACL).
//!
//! 1. A 40 % limit: within a second every chosen miner has been commanded and the site is under
//!    the limit; the paused miners stop hashing but keep their Stratum sessions (the firmware
//!    paused them, no work was withheld); ack and compliance reports reach the operator.
//! 2. The signal ends: miners come back in ramped steps and hash again.
//! 3. The meter goes silent mid-signal: fail safe, nothing is restored (even when the limit is
//!    raised) until readings return.
//! 4. A miner whose firmware does not answer: its work is withheld as the last resort (its
//!    sessions closed and refused), the meter shows that was not enough, and the loop sheds
//!    another miner instead.

mod common;

use blgv_sensors::control::FirmwareKind;
use blgv_tests::asic::{AsicEmulator, EmulatedMiner, EmulatorHandle, Fault};
use blgv_tests::meter_sim::{MeterSim, SimProfile};
use blgv_tests::mosquitto::{Mosquitto, RecordingClient};
use blgv_tests::{wait_until, MinerConfig, PowerSwitch, SimMiner, TestPool, TestPoolConfig};
use common::{init_logging, proxy_config_with};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NOMINAL_W: f64 = 3250.0;
const OTHER_LOAD_W: f64 = 2000.0;
const MINERS: usize = 20;
const SIGNAL_TOPIC: &str = "blgv/site/site1/curtailment";
const KINDS: [FirmwareKind; 5] = [
    FirmwareKind::Cgminer,
    FirmwareKind::LuxOs,
    FirmwareKind::BraiinsOs,
    FirmwareKind::Whatsminer,
    FirmwareKind::Vnish,
];

struct Site {
    _broker: Mosquitto,
    _pool: TestPool,
    meter: MeterSim,
    _dir: tempfile::TempDir,
    _emulators: Vec<EmulatorHandle>,
    machines: Vec<Arc<EmulatedMiner>>,
    miners: Vec<SimMiner>,
    proxy: blgv_proxy::ProxyHandle,
    operator: RecordingClient,
    site_w: Arc<dyn Fn() -> f64 + Send + Sync>,
}

impl Site {
    fn site_kw(&self) -> f64 {
        (self.site_w)() / 1000.0
    }

    fn paused(&self) -> Vec<usize> {
        (0..MINERS)
            .filter(|i| self.machines[*i].is_paused())
            .collect()
    }

    fn hashes(&self) -> Vec<u64> {
        self.miners.iter().map(|m| m.stats().hashes).collect()
    }

    async fn publish(&self, signal: Value) {
        self.operator.publish(SIGNAL_TOPIC, true, &signal).await;
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Miner `i` has efficiency 20 + i J/TH: the highest indices are shed first. `silent` miners'
/// firmware APIs accept connections and never answer.
async fn start_site(silent: &[usize]) -> Option<Site> {
    init_logging();
    let broker = match Mosquitto::start() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("site curtailment test {why}");
            return None;
        }
    };
    let pool = TestPool::start(TestPoolConfig {
        difficulty: 1.0 / 4096.0,
        job_interval: Some(Duration::from_secs(2)),
        ..Default::default()
    })
    .unwrap();
    let mut emulators = Vec::new();
    let mut miners_toml = String::new();
    for i in 0..MINERS {
        let kind = KINDS[i % KINDS.len()];
        let (addr, h) = AsicEmulator::start(kind, NOMINAL_W, None).await.unwrap();
        let creds = h.miner().credentials().clone();
        if silent.contains(&i) {
            h.miner().set_fault(Fault::Silent);
        }
        miners_toml.push_str(&format!(
            "[[miners]]\nworker = \"acct.asic{i:02}\"\nfirmware = \"{}\"\naddress = \"{addr}\"\n\
             username = {:?}\npassword = {:?}\ntimeout_ms = 300\nnominal_w = {NOMINAL_W}\n\
             efficiency_j_per_th = {}\n",
            kind.as_str(),
            creds.username,
            creds.password,
            20 + i
        ));
        emulators.push(h);
    }
    let machines: Vec<Arc<EmulatedMiner>> = emulators.iter().map(|h| h.miner()).collect();
    let site_w: Arc<dyn Fn() -> f64 + Send + Sync> = {
        let m = machines.clone();
        Arc::new(move || OTHER_LOAD_W + m.iter().map(|x| x.power_w()).sum::<f64>())
    };
    let meter = MeterSim::start(SimProfile::Sdm630, site_w.clone())
        .await
        .unwrap();
    let grid = broker.site_config();
    let tls = grid.tls.as_ref().unwrap();
    let extra = format!(
        "[[meters]]\nid = \"site\"\nrole = \"site_total\"\ntransport = {{ tcp = \"{}\" }}\n\
         preset = \"sdm630\"\npoll_interval_ms = 200\n\
         [grid.mqtt]\nhost = \"127.0.0.1\"\nport = {}\nsite_id = \"site1\"\nusername = \"site1\"\n\
         password = \"site1-secret\"\ntls = {{ ca_file = {:?} }}\n\
         [curtailment]\nmargin_kw = 1.0\nhysteresis_kw = 3.0\nrestore_step_kw = 7.0\n\
         restore_interval_secs = 1\nsettle_ms = 400\ntick_ms = 100\nreport_interval_secs = 1\ncommand_timeout_ms = 2000\n\
         {miners_toml}",
        meter.addr(),
        broker.port,
        tls.ca_file
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = blgv_proxy::start(proxy_config_with(
        &[pool.addr()],
        1.0 / 65_536.0,
        dir.path(),
        &extra,
    ))
    .await
    .unwrap();
    let miners: Vec<SimMiner> = (0..MINERS)
        .map(|i| {
            let machine = machines[i].clone();
            let mut c = MinerConfig::new(proxy.local_addr(), format!("acct.asic{i:02}"));
            c.hashrate = 30_000;
            c.power = Some(PowerSwitch::new(move || !machine.is_paused()));
            SimMiner::spawn(c)
        })
        .collect();
    let operator = broker
        .recording_client(
            "grid",
            "grid-secret",
            &[&format!("{SIGNAL_TOPIC}/#"), "blgv/site/site1/status"],
        )
        .await;
    let site = Site {
        _broker: broker,
        _pool: pool,
        meter,
        _dir: dir,
        _emulators: emulators,
        machines,
        miners,
        proxy,
        operator,
        site_w,
    };
    // Everything is up: every miner has shares accepted through the proxy, the meter reads the
    // site, the proxy is subscribed to the grid topic.
    assert!(
        wait_until(Duration::from_secs(20), || site
            .miners
            .iter()
            .all(|m| m.stats().accepted > 0))
        .await,
        "every miner hashes through the proxy"
    );
    let power = site.proxy.site_power();
    assert!(
        wait_until(Duration::from_secs(5), || power.meters[0]
            .latest()
            .power_kw()
            .is_some())
        .await,
        "the proxy reads the meter"
    );
    assert!(
        wait_until(Duration::from_secs(5), || site
            .operator
            .any(|t, v| t.ends_with("/status") && v == "online"))
        .await,
        "the proxy announced itself on the broker"
    );
    Some(site)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_sheds_forty_percent_through_firmware_within_a_second_and_restores_in_steps() {
    let Some(site) = start_site(&[]).await else {
        return;
    };
    let full_kw = site.site_kw();
    assert!((full_kw - 67.0).abs() < 0.5, "{full_kw}");
    let limit_kw = (0.4 * full_kw * 10.0).round() / 10.0;

    let sent = Instant::now();
    site.publish(json!({"signal_id": "cut-40", "issued_at": unix_now(), "duration_s": 600, "limit_kw": limit_kw}))
        .await;
    let obeyed = wait_until(Duration::from_secs(3), || site.site_kw() <= limit_kw).await;
    let took = sent.elapsed();
    assert!(
        obeyed,
        "site at {:.1} kW vs limit {limit_kw}",
        site.site_kw()
    );
    assert!(
        took < Duration::from_secs(1),
        "every chosen miner commanded {took:?} after the signal was published"
    );
    eprintln!("signal published → site under {limit_kw} kW in {took:?}");
    let paused = site.paused();
    assert!(
        paused.iter().all(|i| *i >= MINERS - paused.len()),
        "least efficient first: {paused:?}"
    );
    // Every firmware family was among those paused (the 13 least efficient span all five).
    assert!(KINDS
        .iter()
        .all(|k| paused.iter().any(|i| site.machines[*i].kind() == *k)));

    // Paused miners stop hashing; the others go on. Nobody lost their Stratum session: the
    // firmware paused them, so no work had to be withheld. (A chunk of hashing already under
    // way when the pause landed may still finish: start counting a little later.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = site.hashes();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = site.hashes();
    for i in 0..MINERS {
        if paused.contains(&i) {
            assert_eq!(before[i], after[i], "paused miner {i} still hashes");
        } else {
            assert!(after[i] > before[i], "running miner {i} stopped hashing");
        }
        assert_eq!(
            site.miners[i].stats().tcp_connects,
            1,
            "miner {i} reconnected"
        );
    }
    assert!(site.proxy.withheld().is_empty());

    // The proxy's meter, its loop and the operator agree.
    let power = site.proxy.site_power();
    assert!(
        wait_until(Duration::from_secs(3), || power.meters[0]
            .latest()
            .power_kw()
            .is_some_and(|kw| kw <= limit_kw))
        .await
    );
    let st = site.proxy.curtailment_status().unwrap();
    assert_eq!(
        (st.signal_id.as_deref(), st.miners_shed, st.commands_failed),
        (Some("cut-40"), paused.len(), 0)
    );
    assert!(
        wait_until(Duration::from_secs(3), || site
            .operator
            .any(|t, v| t.ends_with("/ack")
                && v["signal_id"] == "cut-40"
                && v["status"] == "accepted"))
        .await
    );
    assert!(
        wait_until(Duration::from_secs(3), || site.operator.any(|t, v| t
            .ends_with("/report")
            && v["signal_id"] == "cut-40"
            && v["compliant"] == true
            && v["miners_shed"] == paused.len()))
        .await
    );

    // The operator ends the signal: at most 7 kW (two miners) per step, most efficient first.
    site.publish(json!({"signal_id": "cut-40", "end": true}))
        .await;
    let mut counts = vec![paused.len()];
    let started = Instant::now();
    while counts.last() != Some(&0) && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = site.paused().len();
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
    let before = site.hashes();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = site.hashes();
    assert!(
        (0..MINERS).all(|i| after[i] > before[i]),
        "every miner hashes again"
    );
    site.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_whose_firmware_is_silent_has_its_work_withheld_and_the_meter_sheds_another() {
    // Miner 19, the least efficient, is the first to shed; its API never answers.
    let Some(site) = start_site(&[19]).await else {
        return;
    };
    let full_kw = site.site_kw();
    // Room for 18 running miners' worth: the loop pauses miner 19 first, by estimate enough.
    let limit_kw = ((full_kw - 1.5 * NOMINAL_W / 1000.0) * 10.0).round() / 10.0;
    site.publish(json!({"signal_id": "cut-small", "issued_at": unix_now(), "duration_s": 600, "limit_kw": limit_kw}))
        .await;
    // The firmware does not answer within its 300 ms: the proxy withholds miner 19's work.
    assert!(
        wait_until(Duration::from_secs(5), || !site.proxy.withheld().is_empty()).await,
        "work withheld as the last resort"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !site.miners[19]
            .stats()
            .authorized)
        .await,
        "the withheld miner's session is closed and its reconnects are refused"
    );
    let refused_after = site.miners[19].stats();
    assert!(refused_after.tcp_connects >= 1);
    // Withholding did not lower the silent machine's power (it is still "hashing" by its own
    // account), so the meter keeps the site over the limit and the loop sheds another miner,
    // through its firmware.
    assert!(
        wait_until(Duration::from_secs(5), || site.site_kw() <= limit_kw).await,
        "site at {:.1} kW vs limit {limit_kw}",
        site.site_kw()
    );
    assert!(!site.machines[19].is_paused());
    assert!(
        site.machines[18].is_paused(),
        "the next least efficient was paused"
    );
    // While withheld, its reconnect attempts are refused: it never gets work.
    let accepted = site.miners[19].stats().accepted;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = site.miners[19].stats();
    assert_eq!(later.accepted, accepted, "a withheld miner got work");
    assert!(!later.authorized);

    // The signal ends: the withheld miner gets its work back and hashes again.
    site.machines[19].set_fault(Fault::None);
    site.publish(json!({"signal_id": "cut-small", "end": true}))
        .await;
    assert!(
        wait_until(Duration::from_secs(15), || site.proxy.withheld().is_empty()
            && site.paused().is_empty())
        .await,
        "released"
    );
    assert!(
        wait_until(Duration::from_secs(15), || site.miners[19].stats().accepted
            > accepted)
        .await,
        "the released miner mines again"
    );
    site.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_that_goes_silent_mid_signal_keeps_the_site_curtailed() {
    let Some(site) = start_site(&[]).await else {
        return;
    };
    let full_kw = site.site_kw();
    let limit_kw = (0.4 * full_kw * 10.0).round() / 10.0;
    site.publish(json!({"signal_id": "cut-40", "issued_at": unix_now(), "duration_s": 600, "limit_kw": limit_kw}))
        .await;
    assert!(wait_until(Duration::from_secs(3), || site.site_kw() <= limit_kw).await);
    let shed = site.paused().len();

    // The meter stops answering: the proxy's reading goes bad.
    site.meter.set_silent(true);
    let power = site.proxy.site_power();
    assert!(
        wait_until(Duration::from_secs(15), || power.meters[0]
            .latest()
            .power_kw()
            .is_none())
        .await,
        "the silent meter's reading is marked stale/bad"
    );
    // The operator raises the limit to 90 %: with a meter the loop would restore most miners;
    // blind, it holds every miner where it is and reports itself non-compliant.
    site.publish(json!({"signal_id": "cut-90", "issued_at": unix_now(), "duration_s": 600, "limit_kw": (0.9 * full_kw).round()}))
        .await;
    assert!(
        wait_until(Duration::from_secs(5), || site.operator.any(|t, v| t
            .ends_with("/report")
            && v["signal_id"] == "cut-90"
            && v["measured_kw"].is_null()
            && v["compliant"] == false))
        .await,
        "blind reports reach the operator"
    );
    // Several restore intervals (1 s each) pass: still nothing restored.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(site.paused().len(), shed, "restored with a blind meter");
    let st = site.proxy.curtailment_status().unwrap();
    assert_eq!(st.measured_kw, None);
    assert_eq!(st.miners_shed, shed);

    // Readings return: the loop restores up to the new limit, in steps.
    site.meter.set_silent(false);
    assert!(
        wait_until(Duration::from_secs(15), || site.paused().len() < shed).await,
        "restores once the meter is back"
    );
    site.proxy.shutdown().await;
}
