//! Proxy-wide counters, updated lock-free on the hot path and read by tests, logs and (later)
//! the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct ProxyStats {
    pub miners_connected: AtomicU64,
    pub miner_connections_total: AtomicU64,
    pub shares_accepted: AtomicU64,
    pub shares_rejected: AtomicU64,
    pub shares_stale: AtomicU64,
    pub shares_duplicate: AtomicU64,
    pub shares_low_difficulty: AtomicU64,
    pub shares_forwarded: AtomicU64,
    pub upstream_accepted: AtomicU64,
    /// Upstream rejects of shares we accepted locally: each one is a bug signal.
    pub upstream_rejected: AtomicU64,
    /// Upstream "stale" answers: a new block raced our forward; expected now and then.
    pub upstream_stale: AtomicU64,
    /// Forwards whose answer never came because the connection went away.
    pub upstream_unanswered: AtomicU64,
    pub upstream_connections: AtomicU64,
    pub upstream_connects_total: AtomicU64,
    pub pool_switches: AtomicU64,
    /// Index (in config order) of the pool new connections go to.
    pub active_pool: AtomicU64,
    /// Connections refused or cut by a resource limit, per reason.
    pub limits: blgv_stratum::limits::LimitCounters,
}

/// A plain copy of [`ProxyStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub miners_connected: u64,
    pub miner_connections_total: u64,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub shares_stale: u64,
    pub shares_duplicate: u64,
    pub shares_low_difficulty: u64,
    pub shares_forwarded: u64,
    pub upstream_accepted: u64,
    pub upstream_rejected: u64,
    pub upstream_stale: u64,
    pub upstream_unanswered: u64,
    pub upstream_connections: u64,
    pub upstream_connects_total: u64,
    pub pool_switches: u64,
    pub active_pool: u64,
}

impl ProxyStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            miners_connected: self.miners_connected.load(Relaxed),
            miner_connections_total: self.miner_connections_total.load(Relaxed),
            shares_accepted: self.shares_accepted.load(Relaxed),
            shares_rejected: self.shares_rejected.load(Relaxed),
            shares_stale: self.shares_stale.load(Relaxed),
            shares_duplicate: self.shares_duplicate.load(Relaxed),
            shares_low_difficulty: self.shares_low_difficulty.load(Relaxed),
            shares_forwarded: self.shares_forwarded.load(Relaxed),
            upstream_accepted: self.upstream_accepted.load(Relaxed),
            upstream_rejected: self.upstream_rejected.load(Relaxed),
            upstream_stale: self.upstream_stale.load(Relaxed),
            upstream_unanswered: self.upstream_unanswered.load(Relaxed),
            upstream_connections: self.upstream_connections.load(Relaxed),
            upstream_connects_total: self.upstream_connects_total.load(Relaxed),
            pool_switches: self.pool_switches.load(Relaxed),
            active_pool: self.active_pool.load(Relaxed),
        }
    }
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// One upstream pool's counters (config order), for the status API and metrics.
#[derive(Debug, Default)]
pub struct PoolCounters {
    /// Upstream connections open to this pool now.
    pub connections: AtomicU64,
    pub forwarded: AtomicU64,
    pub accepted: AtomicU64,
    /// Rejects of locally accepted shares (bug signals).
    pub rejected: AtomicU64,
    pub stale: AtomicU64,
    /// Submit → answer round trip, decaying average in microseconds.
    pub latency_us: AtomicU64,
    /// Unix milliseconds when the last connection opened; 0 = never.
    pub connected_at_ms: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl PoolCounters {
    pub fn record_latency(&self, rtt: std::time::Duration) {
        let us = rtt.as_micros().min(u64::MAX as u128) as u64;
        let old = self.latency_us.load(Relaxed);
        // 1/8 weight for the newest sample; the first one is taken as is.
        let new = if old == 0 { us } else { old - old / 8 + us / 8 };
        self.latency_us.store(new.max(1), Relaxed);
    }

    pub fn set_error(&self, e: impl ToString) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A connection opened; the guard counts it closed when dropped.
    pub fn connected(&self) -> PoolConnection<'_> {
        self.connections.fetch_add(1, Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.connected_at_ms.store(now, Relaxed);
        PoolConnection(self)
    }
}

pub struct PoolConnection<'a>(&'a PoolCounters);

impl Drop for PoolConnection<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Relaxed);
    }
}
