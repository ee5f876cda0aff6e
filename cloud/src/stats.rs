//! Pool-wide counters, lock-free on the hot path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct PoolStats {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub shares_accepted: AtomicU64,
    pub shares_rejected: AtomicU64,
    pub blocks_found: AtomicU64,
    pub blocks_accepted: AtomicU64,
    pub blocks_rejected: AtomicU64,
    pub templates: AtomicU64,
    pub node_errors: AtomicU64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStatsSnapshot {
    pub connections: u64,
    pub connections_total: u64,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub blocks_found: u64,
    pub blocks_accepted: u64,
    pub blocks_rejected: u64,
    pub templates: u64,
    pub node_errors: u64,
}

impl PoolStats {
    pub fn snapshot(&self) -> PoolStatsSnapshot {
        PoolStatsSnapshot {
            connections: self.connections.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            shares_accepted: self.shares_accepted.load(Relaxed),
            shares_rejected: self.shares_rejected.load(Relaxed),
            blocks_found: self.blocks_found.load(Relaxed),
            blocks_accepted: self.blocks_accepted.load(Relaxed),
            blocks_rejected: self.blocks_rejected.load(Relaxed),
            templates: self.templates.load(Relaxed),
            node_errors: self.node_errors.load(Relaxed),
        }
    }
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}
