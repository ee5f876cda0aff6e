//! Pool-wide counters, lock-free on the hot path.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

/// Share rejection reasons as `blgv_stratum::ShareRejection::reason` names them.
pub const REJECT_REASONS: [&str; 9] = [
    "stale",
    "duplicate",
    "low_difficulty",
    "bad_ntime",
    "bad_version",
    "bad_extranonce2",
    "malformed",
    "unauthorized",
    "not_subscribed",
];

#[derive(Debug, Default)]
pub struct PoolStats {
    /// Rejected shares per reason, indexed like [`REJECT_REASONS`].
    pub rejected_by_reason: [AtomicU64; REJECT_REASONS.len()],
    /// Σ difficulty of accepted shares, as f64 bits (see [`PoolStats::add_difficulty`]).
    pub difficulty_sum_bits: AtomicU64,
    /// Blocks that left the node's main chain after being accepted.
    pub blocks_orphaned: AtomicU64,
    /// When the last template from the node was turned into a job (unix ms; 0 = never).
    pub last_template_ms: AtomicI64,
    /// The Stratum accept loop is running.
    pub stratum_listening: AtomicBool,
    /// The ledger writer's last commit failed (it keeps the batch and retries).
    pub ledger_failing: AtomicBool,
    /// Ledger commits that failed since start.
    pub ledger_commit_failures: AtomicU64,
    /// Rows the ledger writer holds in memory because its commits fail.
    pub ledger_unwritten: AtomicU64,
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub shares_accepted: AtomicU64,
    pub shares_rejected: AtomicU64,
    pub blocks_found: AtomicU64,
    pub blocks_accepted: AtomicU64,
    pub blocks_rejected: AtomicU64,
    pub templates: AtomicU64,
    pub node_errors: AtomicU64,
    /// Connections refused or cut by a resource limit, per reason.
    pub limits: blgv_stratum::limits::LimitCounters,
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

impl PoolStats {
    pub fn count_rejection(&self, reason: &str) {
        if let Some(i) = REJECT_REASONS.iter().position(|r| *r == reason) {
            bump(&self.rejected_by_reason[i]);
        }
    }

    pub fn add_difficulty(&self, d: f64) {
        let _ = self
            .difficulty_sum_bits
            .fetch_update(Relaxed, Relaxed, |bits| {
                Some((f64::from_bits(bits) + d).to_bits())
            });
    }

    pub fn difficulty_sum(&self) -> f64 {
        f64::from_bits(self.difficulty_sum_bits.load(Relaxed))
    }
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}
