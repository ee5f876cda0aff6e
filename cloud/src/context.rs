//! What every task of a running pool shares.

use crate::config::{validate_address, Config};
use crate::job_feed::JobFeed;
use crate::ledger::{LedgerEvent, LedgerSender};
use crate::monitor::LiveFeed;
use crate::payout::{solo_split, PayoutSettings, Sats, Scheme};
use crate::stats::PoolStats;
use bitcoin::ScriptBuf;
use blgv_stratum::VardiffRules;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
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
    pub(crate) ledger: Arc<LedgerSender>,
    /// How many ledger events may be answered for (see [`crate::ledger`]).
    pub(crate) ledger_released: watch::Receiver<u64>,
    pub(crate) blocks: mpsc::UnboundedSender<FoundBlock>,
    /// The validated `[payout]` section: which accounts mine SOLO, and where they are paid.
    pub payout: Arc<PayoutSettings>,
    pub live: LiveFeed,
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
        ledger: Arc<LedgerSender>,
        ledger_released: watch::Receiver<u64>,
        blocks: mpsc::UnboundedSender<FoundBlock>,
        payout: Arc<PayoutSettings>,
        live: LiveFeed,
    ) -> PoolContext {
        PoolContext {
            config,
            feed,
            stats,
            vardiff,
            shutdown,
            tasks: TaskTracker::new(),
            ledger,
            ledger_released,
            blocks,
            payout,
            live,
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

    /// Queue `event` for the ledger; returns its ticket (answer once it is released).
    pub fn record(&self, event: LedgerEvent) -> u64 {
        self.ledger.send(event)
    }

    pub fn submit_block(&self, block: FoundBlock) {
        let _ = self.blocks.send(block);
    }

    /// Where a SOLO account is paid: `Ok(None)` for accounts the pool pays (PPS, PPLNS),
    /// `Ok(Some(script))` for a SOLO account, `Err` (what to fix) for a SOLO account without a
    /// payout address.
    pub fn solo_payee(&self, account: &str) -> Result<Option<ScriptBuf>, String> {
        let s = &self.payout;
        let spec = s.accounts.iter().find(|a| a.name == account);
        let scheme = spec.and_then(|a| a.scheme).unwrap_or(s.default_scheme);
        if scheme != Scheme::Solo || account == s.fee_account {
            return Ok(None);
        }
        let address = spec.and_then(|a| a.address.clone()).or_else(|| {
            validate_address(account, s.network)
                .ok()
                .map(|_| account.to_string())
        });
        match address {
            Some(a) => validate_address(&a, s.network).map(Some),
            None => Err(format!(
                "account {account:?} mines SOLO but has no payout address; fix: give it an address in payout.accounts, or mine as \"<{} address>.<rig>\"",
                s.network
            )),
        }
    }

    /// The coinbase outputs of a SOLO block worth `reward`: the finder's part, then the pool
    /// fee to `pool.payout_address` (the split the payout engine credits, see
    /// [`crate::payout::solo_split`]).
    pub fn solo_outputs(
        &self,
        finder: &ScriptBuf,
        reward: u64,
        pool: &ScriptBuf,
    ) -> Vec<(u64, ScriptBuf)> {
        let (to_finder, fee) = solo_split(Sats(reward), self.payout.fee_bp);
        let mut outputs = Vec::with_capacity(2);
        if to_finder.0 > 0 || fee.0 == 0 {
            outputs.push((to_finder.0, finder.clone()));
        }
        if fee.0 > 0 {
            outputs.push((fee.0, pool.clone()));
        }
        outputs
    }
}
