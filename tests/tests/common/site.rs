//! A whole simulated site behind a running blgv-proxy, for the curtailment and dashboard tests:
//! 20 miners hashing through the proxy, each with an emulated firmware API (four of each family)
//! whose pause stops its hashing, a Modbus meter measuring the machines, mosquitto as the grid
//! operator's broker.

use super::{init_logging, proxy_config_with};
use blgv_sensors::control::FirmwareKind;
use blgv_tests::asic::{AsicEmulator, EmulatedMiner, EmulatorHandle, Fault};
use blgv_tests::meter_sim::{MeterSim, SimProfile};
use blgv_tests::mosquitto::{Mosquitto, RecordingClient};
use blgv_tests::{wait_until, MinerConfig, PowerSwitch, SimMiner, TestPool, TestPoolConfig};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const NOMINAL_W: f64 = 3250.0;
pub const OTHER_LOAD_W: f64 = 2000.0;
pub const MINERS: usize = 20;
pub const ADMIN_TOKEN: &str = "site-admin-token-0123456789";
pub const SIGNAL_TOPIC: &str = "blgv/site/site1/curtailment";
pub const KINDS: [FirmwareKind; 5] = [
    FirmwareKind::Cgminer,
    FirmwareKind::LuxOs,
    FirmwareKind::BraiinsOs,
    FirmwareKind::Whatsminer,
    FirmwareKind::Vnish,
];

pub struct Site {
    pub _broker: Mosquitto,
    pub _pool: TestPool,
    pub meter: MeterSim,
    pub _dir: tempfile::TempDir,
    pub _emulators: Vec<EmulatorHandle>,
    pub machines: Vec<Arc<EmulatedMiner>>,
    pub miners: Vec<SimMiner>,
    pub proxy: blgv_proxy::ProxyHandle,
    pub operator: RecordingClient,
    pub site_w: Arc<dyn Fn() -> f64 + Send + Sync>,
}

impl Site {
    pub fn site_kw(&self) -> f64 {
        (self.site_w)() / 1000.0
    }

    pub fn paused(&self) -> Vec<usize> {
        (0..MINERS)
            .filter(|i| self.machines[*i].is_paused())
            .collect()
    }

    pub fn hashes(&self) -> Vec<u64> {
        self.miners.iter().map(|m| m.stats().hashes).collect()
    }

    pub async fn publish(&self, signal: Value) {
        self.operator.publish(SIGNAL_TOPIC, true, &signal).await;
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Miner `i` has efficiency 20 + i J/TH: the highest indices are shed first. `silent` miners'
/// firmware APIs accept connections and never answer.
pub async fn start_site(silent: &[usize]) -> Option<Site> {
    start_site_configured(silent, &[]).await
}

/// [`start_site`] where miner `i` of each `(i, watts)` in `configured_w` is configured with
/// `nominal_w = watts` while its machine still draws [`NOMINAL_W`] (a wrong rating to learn).
pub async fn start_site_configured(
    silent: &[usize],
    configured_w: &[(usize, f64)],
) -> Option<Site> {
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
             username = {:?}\npassword = {:?}\ntimeout_ms = 300\nnominal_w = {}\n\
             efficiency_j_per_th = {}\n",
            kind.as_str(),
            creds.username,
            creds.password,
            configured_w
                .iter()
                .find(|(m, _)| *m == i)
                .map_or(NOMINAL_W, |(_, w)| *w),
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
    let mut config = proxy_config_with(&[pool.addr()], 1.0 / 65_536.0, dir.path(), &extra);
    config.api.admin_token = Some(ADMIN_TOKEN.into());
    config.api.update_interval_ms = 300;
    let proxy = blgv_proxy::start(config).await.unwrap();
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

/// Polls a status API path until `pred` holds (5 s).
pub async fn wait_for_api(api: &str, path: &str, pred: impl Fn(&Value) -> bool) -> bool {
    for _ in 0..50 {
        if let Ok(r) = reqwest::get(format!("http://{api}{path}")).await {
            if let Ok(v) = r.json::<Value>().await {
                if pred(&v) {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
