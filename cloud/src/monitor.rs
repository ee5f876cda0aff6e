//! What the pool knows about its own health, for `/health`, `/metrics` and the live feed:
//! the node's last answers and RPC latency, and the broadcast channel of live events.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

type LatencyFamily = Family<Vec<(&'static str, &'static str)>, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

/// The node's recent answers.
#[derive(Debug)]
pub struct NodeMonitor {
    /// The last RPC call (of any kind) succeeded.
    up: AtomicBool,
    /// Whether any call has been answered yet.
    seen: AtomicBool,
    last_ok_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
    errors: AtomicU64,
    /// `blgv_cloud_node_rpc_duration_seconds{method}`; long polls are not timed.
    pub latency: LatencyFamily,
}

impl Default for NodeMonitor {
    fn default() -> Self {
        NodeMonitor {
            up: AtomicBool::new(false),
            seen: AtomicBool::new(false),
            last_ok_ms: AtomicI64::new(0),
            last_error: Mutex::new(None),
            errors: AtomicU64::new(0),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

/// A snapshot for `/health` and the API.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub up: bool,
    pub last_ok_ms: Option<i64>,
    pub last_error: Option<String>,
    pub errors: u64,
}

impl NodeMonitor {
    /// Record the outcome of a call; `elapsed` is timed for ordinary calls, `None` for long
    /// polls (their duration is the node's choice).
    pub fn observe<T, E: std::fmt::Display>(
        &self,
        method: &'static str,
        elapsed: Option<Duration>,
        result: &Result<T, E>,
    ) {
        self.seen.store(true, Relaxed);
        if let Some(d) = elapsed {
            self.latency
                .get_or_create(&vec![("method", method)])
                .observe(d.as_secs_f64());
        }
        match result {
            Ok(_) => {
                self.up.store(true, Relaxed);
                self.last_ok_ms.store(unix_ms(), Relaxed);
            }
            Err(e) => {
                self.up.store(false, Relaxed);
                self.errors.fetch_add(1, Relaxed);
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("{method}: {e}"));
            }
        }
    }

    pub fn status(&self) -> NodeStatus {
        let last_ok = self.last_ok_ms.load(Relaxed);
        NodeStatus {
            up: self.up.load(Relaxed),
            last_ok_ms: (last_ok > 0).then_some(last_ok),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            errors: self.errors.load(Relaxed),
        }
    }

    pub fn has_answered(&self) -> bool {
        self.seen.load(Relaxed)
    }
}

/// Live events for `/ws/pool-stats`: JSON text with a `type` field (`hashrate_update`,
/// `block_found`, `payout_processed`). Slow receivers skip what they missed.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<Arc<str>>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        LiveFeed {
            tx: broadcast::channel(256).0,
        }
    }
}

impl LiveFeed {
    pub fn publish(&self, event: &serde_json::Value) {
        let _ = self.tx.send(Arc::from(event.to_string()));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }
}
