//! What a simulated miner did, as a cloneable snapshot for test assertions.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// Miner counters. They accumulate over every TCP connection the miner makes.
#[derive(Debug, Clone, Default)]
pub struct MinerStats {
    /// Successful TCP connects in total. Stays 1 for a miner that was never disconnected,
    /// which is what the failover test asserts for extranonce-subscribed miners.
    pub tcp_connects: u64,
    /// Whether a TCP connection is open right now.
    pub connected: bool,
    /// Whether the last `mining.authorize` was answered `true`.
    pub authorized: bool,
    /// Shares sent.
    pub submitted: u64,
    /// Shares answered `true`.
    pub accepted: u64,
    /// Shares rejected, by Stratum error code (-1: `false` without an error).
    pub rejected: BTreeMap<i64, u64>,
    /// Shares still unanswered when their connection dropped.
    pub unanswered_at_disconnect: u64,
    /// `mining.notify` messages received.
    pub notifies_received: u64,
    /// When the last `mining.notify` arrived.
    pub last_notify_at: Option<Instant>,
    /// Id of the last job received.
    pub last_job_id: Option<String>,
    /// `mining.set_extranonce` messages received.
    pub set_extranonce_received: u64,
    /// `client.reconnect` messages received.
    pub reconnect_requests: u64,
    /// Share difficulty currently in force.
    pub difficulty: f64,
    /// Latest extranonce1 (hex) from subscribe or set_extranonce. A set_extranonce takes
    /// effect at the next notify, as in cgminer-derived firmware.
    pub extranonce1: String,
    /// Latest extranonce2 size.
    pub extranonce2_size: usize,
    /// Version-rolling mask granted by configure or set_version_mask (0 = none).
    pub granted_version_mask: u32,
    /// Hashes computed.
    pub hashes: u64,
    /// Txid (internal byte order) of the coinbase of every submitted share.
    pub coinbase_txids: HashSet<[u8; 32]>,
}

impl MinerStats {
    /// Sum of all rejects.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}
