//! The site's power side, started with the proxy: meters, the grid operator's signal link and
//! the curtailment loop that pauses miners through their firmware (withholding their work only
//! as the last resort).

use crate::config::Config;
use crate::registry::MinerRegistry;
use crate::site_config::site_meter;
use crate::withhold::{MinerSelector, WithholdWork, Withholding};
use blgv_sensors::control::{connect_shared, MinerControl, WithLastResort};
use blgv_sensors::controller::{MinerInfo, PowerState};
use blgv_sensors::curtailment::{self, CurtailmentHandle, CurtailmentStatus, ManagedMiner};
use blgv_sensors::grid::{mqtt, GridLink, Signal};
use blgv_sensors::meter::{spawn_meter, MeterHandle};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What runs on the power side; empty when the config lists no meters, grid or miners.
#[derive(Default)]
pub struct SitePower {
    pub meters: Vec<MeterHandle>,
    pub grid: Option<GridLink>,
    pub curtailment: Option<CurtailmentHandle>,
}

impl SitePower {
    pub fn curtailment_status(&self) -> Option<CurtailmentStatus> {
        self.curtailment.as_ref().map(|c| c.status())
    }

    pub fn signal(&self) -> Option<Signal> {
        self.grid.as_ref().and_then(|g| g.signal().borrow().clone())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("grid.mqtt: {0}")]
pub struct GridStartError(#[from] mqtt::GridError);

pub fn start(
    config: &Config,
    withholding: Arc<Withholding>,
    registry: Arc<MinerRegistry>,
    shutdown: CancellationToken,
) -> Result<SitePower, GridStartError> {
    let meters: Vec<MeterHandle> = config
        .meters
        .iter()
        .map(|m| spawn_meter(m.clone(), shutdown.clone()))
        .collect();
    let grid = match &config.grid.mqtt {
        Some(m) => Some(mqtt::spawn(m.clone(), shutdown.clone())?),
        None => None,
    };
    let mut power = SitePower {
        meters,
        grid,
        curtailment: None,
    };
    if config.miners.is_empty() {
        return Ok(power);
    }
    let Some(site) = site_meter(&config.meters, &config.curtailment)
        .and_then(|m| power.meters.iter().find(|h| h.id() == m.id))
    else {
        // Validation refuses this; nothing to control without a site meter.
        return Ok(power);
    };
    let managed: Vec<ManagedMiner> = config
        .miners
        .iter()
        .map(|m| {
            let id = m.id();
            let endpoint = m.endpoint();
            let firmware = connect_shared(&endpoint);
            let control: Arc<dyn MinerControl> = if config.curtailment.withhold_work_as_last_resort
            {
                let who = match (&m.worker, endpoint.host_port().rsplit_once(':')) {
                    (Some(w), _) => Some(MinerSelector::Worker(w.clone())),
                    (None, Some((host, _))) => host
                        .trim_matches(['[', ']'])
                        .parse::<IpAddr>()
                        .ok()
                        .map(MinerSelector::Ip),
                    (None, None) => None,
                };
                match who {
                    Some(who) => Arc::new(WithLastResort::new(
                        id.clone(),
                        firmware,
                        Arc::new(WithholdWork::new(withholding.clone(), who, m.firmware)),
                        endpoint.timeout(),
                    )),
                    None => {
                        tracing::warn!(miner = %id, "no worker name and no IP address: its work cannot be withheld as a last resort; set miners[].worker");
                        firmware
                    }
                }
            } else {
                firmware
            };
            ManagedMiner {
                info: MinerInfo {
                    id,
                    nominal_w: m.nominal_w,
                    idle_w: m.idle_w(),
                    efficiency_j_per_th: m.efficiency_j_per_th,
                    priority: m.priority,
                    min_power_w: m.min_power_w,
                    state: PowerState::Running,
                },
                control,
            }
        })
        .collect();
    let signal = match &power.grid {
        Some(g) => g.signal(),
        None => {
            tracing::warn!("miners are listed for curtailment but no [grid.mqtt] is configured: no signal will arrive");
            // A sender that lives as long as the loop: the loop sees "no signal", never "closed".
            let (tx, rx) = watch::channel(None);
            let token = shutdown.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                drop(tx);
            });
            rx
        }
    };
    tracing::info!(
        miners = managed.len(),
        meter = %site.id(),
        "curtailment loop started"
    );
    let mut loop_config = config.curtailment.loop_config();
    loop_config.hashrate = Some(hashrate_source(config, registry));
    power.curtailment = Some(curtailment::spawn(
        loop_config,
        managed,
        site.clone(),
        signal,
        power.grid.clone(),
        shutdown,
    ));
    Ok(power)
}

/// Each site miner's hash rate (TH/s) from its Stratum worker's accepted shares, over the 15-min
/// window: the learner asks at the moment a command leaves full power, and a longer window is
/// the miner's full-power rate, not the noise of the last few shares. Miners without a `worker`
/// (or not connected) have none, and their J/TH is derived from learned watts instead.
fn hashrate_source(config: &Config, registry: Arc<MinerRegistry>) -> curtailment::HashrateSource {
    let workers: Vec<(String, String)> = config
        .miners
        .iter()
        .filter_map(|m| m.worker.clone().map(|w| (m.id(), w)))
        .collect();
    curtailment::HashrateSource(Arc::new(move |id: &str| {
        let (_, worker) = workers.iter().find(|(i, _)| i == id)?;
        let now = std::time::Instant::now();
        let hs: f64 = registry
            .all()
            .iter()
            .filter(|e| e.workers().iter().any(|w| &**w == worker.as_str()))
            .map(|e| e.hashrates(now)[1])
            .sum();
        (hs > 0.0).then_some(hs / 1e12)
    }))
}
