//! What every task of a running pool shares.

use crate::config::Config;
use crate::job_feed::JobFeed;
use crate::ledger::LedgerEvent;
use crate::stats::PoolStats;
use blgv_stratum::VardiffRules;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A block to hand to the node.
#[derive(Debug)]
pub struct FoundBlock {
    pub hash: String,
    pub height: u32,
    pub hex: String,
}

pub struct PoolContext {
    pub config: Arc<Config>,
    pub feed: Arc<JobFeed>,
    pub stats: Arc<PoolStats>,
    pub vardiff: VardiffRules,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub(crate) ledger: mpsc::UnboundedSender<LedgerEvent>,
    pub(crate) blocks: mpsc::UnboundedSender<FoundBlock>,
    next_extranonce1: AtomicU64,
}

impl PoolContext {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Arc<Config>,
        feed: Arc<JobFeed>,
        stats: Arc<PoolStats>,
        vardiff: VardiffRules,
        shutdown: CancellationToken,
        ledger: mpsc::UnboundedSender<LedgerEvent>,
        blocks: mpsc::UnboundedSender<FoundBlock>,
    ) -> PoolContext {
        PoolContext {
            config,
            feed,
            stats,
            vardiff,
            shutdown,
            tasks: TaskTracker::new(),
            ledger,
            blocks,
            // A random start: a restarted pool does not hand out the extranonce1 values (and so
            // the coinbases) of the connections it had before.
            next_extranonce1: AtomicU64::new(rand::random::<u32>() as u64),
        }
    }

    /// A fresh extranonce1 of `pool.extranonce1_size` bytes for a new connection.
    pub fn next_extranonce1(&self) -> Vec<u8> {
        let n = self.next_extranonce1.fetch_add(1, Relaxed);
        let size = self.config.pool.extranonce1_size;
        n.to_be_bytes()[8 - size..].to_vec()
    }

    pub fn record(&self, event: LedgerEvent) {
        // The writer outlives every session (it stops after they are gone).
        let _ = self.ledger.send(event);
    }

    pub fn submit_block(&self, block: FoundBlock) {
        let _ = self.blocks.send(block);
    }
}
