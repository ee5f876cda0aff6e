//! What the pool saw, as a cloneable snapshot for test assertions.

use std::collections::BTreeMap;

/// How many rejected shares keep their details in [`PoolStats::invalid_shares`].
pub const MAX_INVALID_RECORDED: usize = 20;

/// A rejected share, kept for debugging a failing test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidShare {
    /// Stratum error code sent back.
    pub code: i64,
    /// Why, in words.
    pub reason: String,
    /// Extranonce1 (hex) of the connection that sent it.
    pub extranonce1: String,
    /// The submit params as JSON text.
    pub params: String,
}

/// Pool counters. Every accepted share met the difficulty in force, so `shares_accepted` and
/// `shares_meeting_difficulty` are equal; both exist so tests can say which one they mean.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStats {
    /// TCP connections accepted since start.
    pub connections_accepted: u64,
    /// TCP connections currently open.
    pub connections_open: u64,
    /// `mining.subscribe` requests answered.
    pub subscribe_count: u64,
    /// `mining.authorize` requests answered (always with `true`).
    pub authorize_count: u64,
    /// `mining.submit` requests received, valid or not.
    pub submits_received: u64,
    /// Shares accepted.
    pub shares_accepted: u64,
    /// Shares whose header hash met the target; equal to `shares_accepted`.
    pub shares_meeting_difficulty: u64,
    /// Rejected shares by Stratum error code.
    pub rejects: BTreeMap<i64, u64>,
    /// The first [`MAX_INVALID_RECORDED`] rejected shares, with reasons.
    pub invalid_shares: Vec<InvalidShare>,
    /// Accepted shares whose header version differs from the job's (BIP310 rolled bits).
    pub accepted_with_rolled_version: u64,
    /// Distinct coinbase txids among accepted shares.
    pub distinct_coinbase_txids: u64,
    /// Accepted shares per connection, keyed by the connection's extranonce1 (hex).
    pub accepted_by_extranonce1: BTreeMap<String, u64>,
    /// Lines that were not valid JSON-RPC (each answered with error 20).
    pub malformed_messages: u64,
    /// Jobs created, including the initial one.
    pub jobs_created: u64,
    /// Id of the newest job.
    pub current_job_id: String,
    /// Difficulty currently in force.
    pub difficulty: f64,
}

impl PoolStats {
    /// Sum of all rejects.
    pub fn rejects_total(&self) -> u64 {
        self.rejects.values().sum()
    }

    pub(crate) fn record_reject(&mut self, code: i64, reason: &str, en1: &str, params: String) {
        *self.rejects.entry(code).or_default() += 1;
        if self.invalid_shares.len() < MAX_INVALID_RECORDED {
            self.invalid_shares.push(InvalidShare {
                code,
                reason: reason.to_string(),
                extranonce1: en1.to_string(),
                params,
            });
        }
    }
}
