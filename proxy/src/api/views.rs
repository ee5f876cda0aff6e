//! The JSON the status API answers with, built from the running proxy's state.

use super::ApiState;
use crate::registry::MinerView;
use crate::withhold::MinerSelector;
use blgv_sensors::meter::{Quality, Reading};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_secs: u64,
    /// The pool new work comes from (config order index and name).
    pub upstream_in_use: UpstreamRef,
    pub upstream_pinned: bool,
    pub miners_connected: u64,
    pub hashrate_1m: f64,
    pub hashrate_15m: f64,
    pub hashrate_1h: f64,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub shares_forwarded: u64,
    pub upstream_accepted: u64,
    pub upstream_rejected: u64,
    pub site_power_kw: Option<f64>,
    pub curtailment_limit_kw: Option<f64>,
    /// The energy reports to the pool (absent without `[energy]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy: Option<crate::energy::EnergyStatus>,
}

#[derive(Debug, Serialize)]
pub struct UpstreamRef {
    pub index: usize,
    pub name: String,
}

pub fn status(s: &ApiState) -> Status {
    let st = s.ctx.stats.snapshot();
    let router = &s.ctx.router;
    let active = router.active();
    let [h1, h15, h60] = s.ctx.miners.total_hashrates();
    Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: s.started.elapsed().as_secs(),
        upstream_in_use: UpstreamRef {
            index: active,
            name: router.pool(active).label().to_string(),
        },
        upstream_pinned: router.is_pinned(),
        miners_connected: st.miners_connected,
        hashrate_1m: h1,
        hashrate_15m: h15,
        hashrate_1h: h60,
        shares_accepted: st.shares_accepted,
        shares_rejected: st.shares_rejected,
        shares_forwarded: st.shares_forwarded,
        upstream_accepted: st.upstream_accepted,
        upstream_rejected: st.upstream_rejected,
        site_power_kw: site_power_kw(s),
        curtailment_limit_kw: s.power.curtailment_status().and_then(|c| c.limit_kw),
        energy: s.energy.as_ref().map(|e| e.status()),
    }
}

pub fn site_power_kw(s: &ApiState) -> Option<f64> {
    let meter = crate::site_config::site_meter(&s.ctx.config.meters, &s.ctx.config.curtailment)?;
    s.power
        .meters
        .iter()
        .find(|m| m.id() == meter.id)
        .and_then(|m| m.latest().power_kw())
}

/// Every connected miner, with its power state from the curtailment loop.
pub fn miners(s: &ApiState) -> Vec<MinerView> {
    let now = Instant::now();
    let curtailment = s.power.curtailment_status();
    let withheld = s.ctx.withholding.withheld();
    let index = PowerIndex::new(&s.ctx.config.miners, curtailment.as_ref(), &withheld);
    s.ctx
        .miners
        .all()
        .iter()
        .map(|m| {
            let mut v = m.view(now);
            v.power_state = index.power_state(&v);
            v
        })
        .collect()
}

/// What decides a session's power state, indexed once per request: a large site lists
/// thousands of sessions against thousands of managed miners, and scanning the config and the
/// loop's lists for every row would be quadratic.
struct PowerIndex<'a> {
    /// Worker name → (position in `[[miners]]`, the site miner's id); the first entry wins,
    /// as the config is read in order.
    site_miner: HashMap<&'a str, (usize, String)>,
    withheld_workers: HashSet<&'a str>,
    withheld_ips: HashSet<String>,
    /// None: no curtailment loop, every managed miner runs.
    curtailment: Option<LoopIndex<'a>>,
}

struct LoopIndex<'a> {
    held: HashSet<&'a str>,
    paused: HashSet<&'a str>,
    limited: HashMap<&'a str, u32>,
}

impl<'a> PowerIndex<'a> {
    fn new(
        miners: &'a [crate::site_config::SiteMiner],
        curtailment: Option<&'a blgv_sensors::curtailment::CurtailmentStatus>,
        withheld: &'a [MinerSelector],
    ) -> PowerIndex<'a> {
        let mut site_miner = HashMap::new();
        for (i, m) in miners.iter().enumerate() {
            if let Some(w) = &m.worker {
                site_miner.entry(w.as_str()).or_insert((i, m.id()));
            }
        }
        let mut withheld_workers = HashSet::new();
        let mut withheld_ips = HashSet::new();
        for w in withheld {
            match w {
                MinerSelector::Worker(name) => {
                    withheld_workers.insert(name.as_str());
                }
                MinerSelector::Ip(ip) => {
                    withheld_ips.insert(ip.to_string());
                }
            }
        }
        PowerIndex {
            site_miner,
            withheld_workers,
            withheld_ips,
            curtailment: curtailment.map(|c| LoopIndex {
                held: c.held.iter().map(String::as_str).collect(),
                paused: c.paused.iter().map(String::as_str).collect(),
                limited: c.limited.iter().map(|l| (l.id.as_str(), l.watts)).collect(),
            }),
        }
    }

    fn power_state(&self, v: &MinerView) -> String {
        if self.withheld_ips.contains(&v.ip)
            || v.workers
                .iter()
                .any(|w| self.withheld_workers.contains(w.as_str()))
        {
            return "withheld".into();
        }
        let Some(c) = &self.curtailment else {
            return "running".into();
        };
        // The site miner (config) this session belongs to, by worker name.
        let site_id = v
            .workers
            .iter()
            .filter_map(|w| self.site_miner.get(w.as_str()))
            .min_by_key(|(position, _)| *position)
            .map(|(_, id)| id.as_str());
        match site_id {
            Some(id) if c.held.contains(id) => "paused (operator)".into(),
            Some(id) if c.paused.contains(id) => "paused (curtailment)".into(),
            Some(id) => match c.limited.get(id) {
                Some(watts) => format!("limited to {watts} W (curtailment)"),
                None => "running".into(),
            },
            None => "running".into(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Upstream {
    pub index: usize,
    pub name: String,
    pub url: String,
    /// `active` (new work comes from it), `connected`, `standby` or `down`.
    pub state: &'static str,
    pub connections: u64,
    pub latency_ms: Option<f64>,
    pub forwarded: u64,
    pub accepted: u64,
    /// Rejects of shares the proxy had accepted: each one is a bug signal.
    pub rejected_after_local_accept: u64,
    pub stale: u64,
    pub connected_since: Option<u64>,
    pub last_error: Option<String>,
}

pub fn upstreams(s: &ApiState) -> Vec<Upstream> {
    let router = &s.ctx.router;
    let active = router.active();
    (0..router.pool_count())
        .map(|i| {
            let p = router.pool(i);
            let c = router.counters(i);
            let connections = c.connections.load(Relaxed);
            let latency = c.latency_us.load(Relaxed);
            let since = c.connected_at_ms.load(Relaxed);
            let state = match (i == active, connections > 0) {
                (true, true) => "active",
                (false, true) => "connected",
                (_, false) if c.last_error().is_some() => "down",
                (_, false) => "standby",
            };
            Upstream {
                index: i,
                name: p.label().to_string(),
                url: p.url.clone(),
                state,
                connections,
                latency_ms: (latency > 0).then_some(latency as f64 / 1000.0),
                forwarded: c.forwarded.load(Relaxed),
                accepted: c.accepted.load(Relaxed),
                rejected_after_local_accept: c.rejected.load(Relaxed),
                stale: c.stale.load(Relaxed),
                connected_since: (since > 0).then_some(since / 1000),
                last_error: c.last_error(),
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct Meter {
    pub id: String,
    pub role: String,
    pub power_kw: Option<f64>,
    pub import_energy_kwh: Option<f64>,
    /// `good`, `stale` or `bad`.
    pub quality: &'static str,
    pub reason: Option<String>,
    pub at: u64,
}

pub fn meter(r: &Reading, role: &str) -> Meter {
    let (quality, reason) = match &r.quality {
        Quality::Good => ("good", None),
        Quality::Stale { since } => ("stale", Some(format!("no answer since {}", unix(*since)))),
        Quality::Bad { reason } => ("bad", Some(reason.clone())),
    };
    Meter {
        id: r.meter_id.clone(),
        role: role.to_string(),
        power_kw: r.total_power_w.map(|w| w / 1000.0),
        import_energy_kwh: r.import_energy_kwh,
        quality,
        reason,
        at: unix(r.at),
    }
}

pub fn meters(s: &ApiState) -> Vec<Meter> {
    s.power
        .meters
        .iter()
        .map(|m| {
            let role = match m.role() {
                blgv_sensors::meter::MeterRole::SiteTotal => "site_total",
                blgv_sensors::meter::MeterRole::Feeder => "feeder",
            };
            meter(&m.latest(), role)
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct ActiveSignal {
    pub id: String,
    pub limit_kw: Option<f64>,
    pub level: Option<u8>,
    pub start: u64,
    pub end: u64,
    pub issued_at: u64,
    pub in_force: bool,
}

#[derive(Debug, Serialize)]
pub struct Curtailment {
    pub managed_miners: usize,
    pub grid_link: bool,
    pub signal: Option<ActiveSignal>,
    pub compliant: Option<bool>,
    pub loop_status: Option<blgv_sensors::curtailment::CurtailmentStatus>,
    pub withheld: Vec<String>,
}

pub fn curtailment(s: &ApiState) -> Curtailment {
    let now = SystemTime::now();
    let signal = s.power.signal().map(|sig| ActiveSignal {
        in_force: sig.is_active(now),
        id: sig.id.clone(),
        limit_kw: sig.limit_kw,
        level: sig.level,
        start: unix(sig.start),
        end: unix(sig.end()),
        issued_at: unix(sig.issued_at),
    });
    let loop_status = s.power.curtailment_status();
    let compliant = loop_status
        .as_ref()
        .and_then(|c| c.limit_kw.map(|l| c.measured_kw.is_some_and(|m| m <= l)));
    Curtailment {
        managed_miners: s.ctx.config.miners.len(),
        grid_link: s.power.grid.is_some(),
        signal,
        compliant,
        loop_status,
        withheld: s
            .ctx
            .withholding
            .withheld()
            .iter()
            .map(|w| match w {
                MinerSelector::Worker(n) => n.clone(),
                MinerSelector::Ip(ip) => ip.to_string(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site_config::SiteMiner;
    use blgv_sensors::curtailment::{CurtailmentStatus, LimitedMiner};

    fn site_miner(id: &str, worker: &str) -> SiteMiner {
        toml::from_str(&format!(
            "id = \"{id}\"\nworker = \"{worker}\"\nfirmware = \"braiins_os\"\naddress = \"10.0.0.1\"\nnominal_w = 3000\nefficiency_j_per_th = 20.0\n"
        ))
        .unwrap()
    }

    fn view(workers: &[&str], ip: &str) -> MinerView {
        MinerView {
            id: 1,
            worker: workers.first().map(|w| w.to_string()),
            workers: workers.iter().map(|w| w.to_string()).collect(),
            ip: ip.into(),
            agent: None,
            difficulty: 1.0,
            hashrate_1m: 0.0,
            hashrate_15m: 0.0,
            hashrate_1h: 0.0,
            accepted: 0,
            rejected: 0,
            stale: 0,
            last_share: None,
            connected_since: 0,
            power_state: String::new(),
        }
    }

    #[test]
    fn each_session_gets_its_site_miners_state() {
        let miners = vec![
            site_miner("a", "acct.a"),
            site_miner("b", "acct.b"),
            site_miner("c", "acct.c"),
            site_miner("d", "acct.d"),
            // A second entry for a worker already listed: the first one decides.
            site_miner("a-again", "acct.a"),
        ];
        let status = CurtailmentStatus {
            held: vec!["a".into()],
            paused: vec!["b".into()],
            limited: vec![LimitedMiner {
                id: "c".into(),
                watts: 1800,
            }],
            ..Default::default()
        };
        let withheld = vec![
            MinerSelector::Worker("acct.w".into()),
            MinerSelector::Ip("10.0.0.9".parse().unwrap()),
        ];
        let index = PowerIndex::new(&miners, Some(&status), &withheld);
        let state = |workers: &[&str], ip: &str| index.power_state(&view(workers, ip));
        assert_eq!(state(&["acct.a"], "10.0.0.2"), "paused (operator)");
        assert_eq!(state(&["acct.b"], "10.0.0.2"), "paused (curtailment)");
        assert_eq!(
            state(&["acct.c"], "10.0.0.2"),
            "limited to 1800 W (curtailment)"
        );
        assert_eq!(state(&["acct.d"], "10.0.0.2"), "running");
        assert_eq!(state(&["unmanaged"], "10.0.0.2"), "running");
        assert_eq!(state(&["acct.w"], "10.0.0.2"), "withheld");
        assert_eq!(state(&["acct.b"], "10.0.0.9"), "withheld");
        // Several workers on one connection: the first site miner in config order decides.
        assert_eq!(
            state(&["acct.d", "acct.b"], "10.0.0.2"),
            "paused (curtailment)"
        );
        // Without a curtailment loop everything not withheld runs.
        let no_loop = PowerIndex::new(&miners, None, &withheld);
        assert_eq!(
            no_loop.power_state(&view(&["acct.b"], "10.0.0.2")),
            "running"
        );
        assert_eq!(
            no_loop.power_state(&view(&["acct.w"], "10.0.0.2")),
            "withheld"
        );
    }
}
