//! `GET /metrics`: Prometheus (OpenMetrics) text via `prometheus-client`. Every name starts
//! with `blgv_cloud_`; the list is in the README.

use super::{ApiState, Shared};
use crate::monitor::unix_ms;
use crate::stats::REJECT_REASONS;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

/// Reads the pool's counters at each scrape (they live as atomics on the hot path).
struct PoolCollector {
    stats: Arc<crate::stats::PoolStats>,
    node: Arc<crate::monitor::NodeMonitor>,
    payouts: Arc<crate::payout_task::PayoutShared>,
    /// Pool hashrate over 10 min, 1 h, 24 h at the last sample.
    hashrate: Arc<Mutex<Option<[f64; 3]>>>,
}

impl std::fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolCollector")
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    if let [(labels, v)] = samples {
        if labels.is_empty() {
            return ConstCounter::new(*v).encode(m);
        }
    }
    for (labels, v) in samples {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    if let [(labels, v)] = samples {
        if labels.is_empty() {
            return ConstGauge::new(*v).encode(m);
        }
    }
    for (labels, v) in samples {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for PoolCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed) as f64;
        gauge(
            &mut e,
            "connections",
            "Open Stratum connections",
            &[(vec![], n(&s.connections))],
        )?;
        counter(
            &mut e,
            "connections_opened",
            "Stratum connections accepted since start",
            &[(vec![], n(&s.connections_total))],
        )?;
        let limits: Vec<_> = s
            .limits
            .all()
            .map(|(reason, v)| (vec![("reason", reason)], v as f64))
            .collect();
        counter(
            &mut e,
            "limit_disconnects",
            "Stratum connections refused or cut by a resource limit, by reason",
            &limits,
        )?;
        let mut shares = vec![(vec![("result", "accepted")], n(&s.shares_accepted))];
        for (i, reason) in REJECT_REASONS.iter().enumerate() {
            shares.push((vec![("result", *reason)], n(&s.rejected_by_reason[i])));
        }
        counter(
            &mut e,
            "shares",
            "Shares by result: accepted, or the rejection reason",
            &shares,
        )?;
        counter(
            &mut e,
            "share_difficulty",
            "Sum of the difficulty of accepted shares (hashrate = rate × 2^32)",
            &[(vec![], s.difficulty_sum())],
        )?;
        if let Some(h) = *self.hashrate.lock().unwrap_or_else(|e| e.into_inner()) {
            gauge(
                &mut e,
                "hashrate_hashes_per_second",
                "Pool hashrate from the share ledger over a window",
                &[
                    (vec![("window", "10m")], h[0]),
                    (vec![("window", "1h")], h[1]),
                    (vec![("window", "24h")], h[2]),
                ],
            )?;
        }
        counter(
            &mut e,
            "blocks",
            "Blocks by status since start: found, accepted and rejected by the node, orphaned",
            &[
                (vec![("status", "found")], n(&s.blocks_found)),
                (vec![("status", "accepted")], n(&s.blocks_accepted)),
                (vec![("status", "rejected")], n(&s.blocks_rejected)),
                (vec![("status", "orphaned")], n(&s.blocks_orphaned)),
            ],
        )?;
        counter(
            &mut e,
            "templates",
            "Block templates received from the node",
            &[(vec![], n(&s.templates))],
        )?;
        let last = s.last_template_ms.load(Relaxed);
        if last > 0 {
            gauge(
                &mut e,
                "template_age_seconds",
                "Seconds since the last template from the node became a job",
                &[(vec![], (unix_ms() - last).max(0) as f64 / 1000.0)],
            )?;
        }
        let node = self.node.status();
        gauge(
            &mut e,
            "node_up",
            "1 when the node's last RPC answer was good",
            &[(vec![], if node.up { 1.0 } else { 0.0 })],
        )?;
        counter(
            &mut e,
            "node_errors",
            "Failed RPC calls to the node",
            &[(vec![], node.errors as f64)],
        )?;
        gauge(
            &mut e,
            "ledger_commit_failing",
            "1 while the share ledger's commits fail",
            &[(
                vec![],
                if s.ledger_failing.load(Relaxed) {
                    1.0
                } else {
                    0.0
                },
            )],
        )?;
        counter(
            &mut e,
            "ledger_commit_failures",
            "Share-ledger commits that failed (each is retried)",
            &[(vec![], s.ledger_commit_failures.load(Relaxed) as f64)],
        )?;
        gauge(
            &mut e,
            "ledger_unwritten_rows",
            "Rows held in memory because the share ledger's commits fail",
            &[(vec![], s.ledger_unwritten.load(Relaxed) as f64)],
        )?;
        let p = self.payouts.health();
        counter(
            &mut e,
            "payout_runs",
            "Payout bookkeeping passes",
            &[(vec![], p.runs as f64)],
        )?;
        counter(
            &mut e,
            "payout_failures",
            "Payout bookkeeping passes that failed",
            &[(vec![], p.failures as f64)],
        )?;
        Ok(())
    }
}

/// Put the pool's metrics into the state's registry.
pub fn register(state: &mut ApiState) {
    let hashrate = Arc::new(Mutex::new(None));
    state.hashrate_cell = hashrate.clone();
    let collector = PoolCollector {
        stats: state.stats.clone(),
        node: state.node.clone(),
        payouts: state.payouts.clone(),
        hashrate,
    };
    state.registry.register_collector(Box::new(collector));
    state.registry.register(
        "node_rpc_duration_seconds",
        "Latency of RPC calls to the node by method (long polls excluded)",
        state.node.latency.clone(),
    );
}

pub async fn metrics(State(state): State<Shared>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
            .into_response(),
    }
}
