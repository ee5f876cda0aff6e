//! `GET /metrics`: Prometheus text, read from the proxy's live counters at scrape time (no
//! second set of counters to keep in step). Every name is listed in the README and used by
//! `deploy/grafana/`.

use super::ApiState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};

/// The names this collector exports, for tests and for the Grafana check.
pub const METRIC_NAMES: &[&str] = &[
    "blgv_proxy_miners_connected",
    "blgv_proxy_miner_connections_total",
    "blgv_proxy_limit_disconnects_total",
    "blgv_proxy_shares_total",
    "blgv_proxy_hashrate_hashes_per_second",
    "blgv_proxy_upstream_shares_total",
    "blgv_proxy_upstream_connections",
    "blgv_proxy_upstream_active",
    "blgv_proxy_upstream_latency_seconds",
    "blgv_proxy_pool_switches_total",
    "blgv_proxy_meter_power_watts",
    "blgv_proxy_meter_reading_good",
    "blgv_proxy_curtailment_limit_watts",
    "blgv_proxy_curtailment_measured_watts",
    "blgv_proxy_curtailment_miners_shed",
    "blgv_proxy_control_commands_total",
    "blgv_proxy_miners_withheld",
    "blgv_proxy_ledger_commit_failing",
    "blgv_proxy_ledger_commit_failures_total",
];

/// Exported only when `[energy]` is configured.
pub const ENERGY_METRIC_NAMES: &[&str] = &[
    "blgv_proxy_energy_reports_total",
    "blgv_proxy_energy_outbox_reports",
];

/// Holds the state weakly: the state owns the registry that owns this collector.
pub struct ProxyCollector(pub Weak<ApiState>);

impl std::fmt::Debug for ProxyCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyCollector")
    }
}

type Labels<'a> = Vec<(&'static str, String)>;

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> std::fmt::Result {
    let c = ConstCounter::new(0u64);
    let mut family = e.encode_descriptor(name, help, None, c.metric_type())?;
    match series {
        // One series without labels: no `{}` on the sample.
        [(labels, v)] if labels.is_empty() => ConstCounter::new(*v).encode(family)?,
        _ => {
            for (labels, v) in series {
                ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
            }
        }
    }
    Ok(())
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, f64)],
) -> std::fmt::Result {
    let g = ConstGauge::new(0.0f64);
    let mut family = e.encode_descriptor(name, help, None, g.metric_type())?;
    match series {
        [(labels, v)] if labels.is_empty() => ConstGauge::new(*v).encode(family)?,
        _ => {
            for (labels, v) in series {
                ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
            }
        }
    }
    Ok(())
}

impl Collector for ProxyCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let Some(s) = self.0.upgrade() else {
            return Ok(());
        };
        let st = s.ctx.stats.snapshot();
        // Names are given without `_total`: the OpenMetrics encoder appends it to counters.
        gauge(
            &mut e,
            "blgv_proxy_miners_connected",
            "Miners connected now",
            &[(vec![], st.miners_connected as f64)],
        )?;
        counter(
            &mut e,
            "blgv_proxy_miner_connections",
            "Miner connections accepted since start",
            &[(vec![], st.miner_connections_total)],
        )?;
        let limits: Vec<(Labels, u64)> = s
            .ctx
            .stats
            .limits
            .all()
            .map(|(reason, v)| (vec![("reason", reason.to_string())], v))
            .collect();
        counter(
            &mut e,
            "blgv_proxy_limit_disconnects",
            "Miner connections refused or cut by a resource limit, by reason",
            &limits,
        )?;
        let other = st
            .shares_rejected
            .saturating_sub(st.shares_stale + st.shares_duplicate + st.shares_low_difficulty);
        counter(
            &mut e,
            "blgv_proxy_shares",
            "Shares from miners by local verdict",
            &[
                (vec![("result", "accepted".into())], st.shares_accepted),
                (vec![("result", "stale".into())], st.shares_stale),
                (vec![("result", "duplicate".into())], st.shares_duplicate),
                (
                    vec![("result", "low_difficulty".into())],
                    st.shares_low_difficulty,
                ),
                (vec![("result", "invalid".into())], other),
            ],
        )?;
        let [h1, h15, h60] = s.ctx.miners.total_hashrates();
        gauge(
            &mut e,
            "blgv_proxy_hashrate_hashes_per_second",
            "Site hashrate from accepted work, decaying averages",
            &[
                (vec![("window", "1m".into())], h1),
                (vec![("window", "15m".into())], h15),
                (vec![("window", "1h".into())], h60),
            ],
        )?;
        let router = &s.ctx.router;
        let active = router.active();
        let mut shares = Vec::new();
        let mut connections = Vec::new();
        let mut actives = Vec::new();
        let mut latency = Vec::new();
        for i in 0..router.pool_count() {
            let pool = router.pool(i).label().to_string();
            let c = router.counters(i);
            for (result, v) in [
                ("forwarded", c.forwarded.load(Relaxed)),
                ("accepted", c.accepted.load(Relaxed)),
                ("rejected", c.rejected.load(Relaxed)),
                ("stale", c.stale.load(Relaxed)),
            ] {
                shares.push((vec![("pool", pool.clone()), ("result", result.into())], v));
            }
            connections.push((
                vec![("pool", pool.clone())],
                c.connections.load(Relaxed) as f64,
            ));
            actives.push((
                vec![("pool", pool.clone())],
                if i == active { 1.0 } else { 0.0 },
            ));
            latency.push((
                vec![("pool", pool)],
                c.latency_us.load(Relaxed) as f64 / 1e6,
            ));
        }
        counter(
            &mut e,
            "blgv_proxy_upstream_shares",
            "Shares sent upstream and the pools' answers (rejected = after a local accept: a bug signal)",
            &shares,
        )?;
        gauge(
            &mut e,
            "blgv_proxy_upstream_connections",
            "Open connections per pool",
            &connections,
        )?;
        gauge(
            &mut e,
            "blgv_proxy_upstream_active",
            "1 for the pool new work comes from",
            &actives,
        )?;
        gauge(
            &mut e,
            "blgv_proxy_upstream_latency_seconds",
            "Submit to answer round trip per pool (decaying average)",
            &latency,
        )?;
        counter(
            &mut e,
            "blgv_proxy_pool_switches",
            "Failovers, failbacks and operator switches",
            &[(vec![], st.pool_switches)],
        )?;
        let mut power = Vec::new();
        let mut good = Vec::new();
        for m in &s.power.meters {
            let r = m.latest();
            if let Some(w) = r.total_power_w {
                power.push((vec![("meter", m.id().to_string())], w));
            }
            good.push((
                vec![("meter", m.id().to_string())],
                if r.power_kw().is_some() { 1.0 } else { 0.0 },
            ));
        }
        gauge(
            &mut e,
            "blgv_proxy_meter_power_watts",
            "Latest total active power per meter",
            &power,
        )?;
        gauge(
            &mut e,
            "blgv_proxy_meter_reading_good",
            "1 when the meter's latest reading is fresh and good",
            &good,
        )?;
        let c = s.power.curtailment_status().unwrap_or_default();
        gauge(
            &mut e,
            "blgv_proxy_curtailment_limit_watts",
            "The grid's limit in force (absent without a signal)",
            &c.limit_kw
                .map(|l| vec![(vec![], l * 1000.0)])
                .unwrap_or_default(),
        )?;
        gauge(
            &mut e,
            "blgv_proxy_curtailment_measured_watts",
            "What the curtailment loop measured last",
            &c.measured_kw
                .map(|m| vec![(vec![], m * 1000.0)])
                .unwrap_or_default(),
        )?;
        gauge(
            &mut e,
            "blgv_proxy_curtailment_miners_shed",
            "Miners paused by the curtailment loop",
            &[(vec![], c.miners_shed as f64)],
        )?;
        counter(
            &mut e,
            "blgv_proxy_control_commands",
            "Firmware commands sent by the curtailment loop, by result",
            &[
                (vec![("result", "ok".into())], c.commands_ok),
                (vec![("result", "failed".into())], c.commands_failed),
            ],
        )?;
        gauge(
            &mut e,
            "blgv_proxy_miners_withheld",
            "Miners whose work is withheld (curtailment's last resort)",
            &[(vec![], s.ctx.withholding.withheld().len() as f64)],
        )?;
        let ledger = s.ctx.ledger.health();
        gauge(
            &mut e,
            "blgv_proxy_ledger_commit_failing",
            "1 while the share ledger's commits fail (counters wait in memory)",
            &[(vec![], f64::from(u8::from(ledger.failing.load(Relaxed))))],
        )?;
        counter(
            &mut e,
            "blgv_proxy_ledger_commit_failures",
            "Share-ledger commits that failed (each is retried)",
            &[(vec![], ledger.failures.load(Relaxed))],
        )?;
        if let Some(energy) = &s.energy {
            let st = energy.status();
            counter(
                &mut e,
                "blgv_proxy_energy_reports",
                "Energy reports: built from measurements, gap (proxy not running), sent (acknowledged by the pool), duplicate (the pool had it), refused",
                &[
                    (vec![("result", "built".into())], st.built),
                    (vec![("result", "gap".into())], st.gaps),
                    (vec![("result", "sent".into())], st.sent),
                    (vec![("result", "duplicate".into())], st.duplicates),
                    (vec![("result", "refused".into())], st.refused),
                ],
            )?;
            gauge(
                &mut e,
                "blgv_proxy_energy_outbox_reports",
                "Energy reports waiting in the outbox for the pool's acknowledgement",
                &[(vec![], st.queued as f64)],
            )?;
        }
        Ok(())
    }
}

pub fn registry(state: &Arc<ApiState>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(ProxyCollector(Arc::downgrade(state))));
    r
}

pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "could not encode metrics");
    }
    out
}
