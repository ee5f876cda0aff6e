//! The payout engine inside the running pool: one task does the bookkeeping
//! ([`PayoutLedger::process`]) when a found block's status is committed, when the chain tip
//! moves, and every `payout.process_interval_secs`; before each pass it asks the node where
//! the pool's recent blocks stand, and marks the ones that left the main chain `orphaned` (their
//! credits are then reversed).

use crate::job_feed::JobFeed;
use crate::monitor::{unix_ms, LiveFeed, NodeMonitor};
use crate::payout::{PayoutError, PayoutLedger, ProcessReport};
use crate::stats::{bump, PoolStats};
use crate::template::{BlockPosition, TemplateSource};
use rusqlite::params;
use serde::Serialize;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Blocks this far below the orphan-check horizon (`payout.confirmations` deep) are still
/// asked about: a reorg a little deeper than the maturity is still caught.
const ORPHAN_CHECK_MARGIN: u32 = 6;

/// The state of the payout task, for `/health` and the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PayoutHealth {
    pub runs: u64,
    pub failures: u64,
    pub last_run_ms: Option<i64>,
    pub last_ok_ms: Option<i64>,
    /// The last pass's error; `None` once a pass succeeds again.
    pub last_error: Option<String>,
    /// The tip height the last pass used.
    pub tip: Option<u32>,
}

/// The payout ledger shared by the task and the API (sync SQLite: used in blocking threads).
pub struct PayoutShared {
    pub ledger: Mutex<PayoutLedger>,
    pub health: Mutex<PayoutHealth>,
    /// Wakes the task: a block's status was committed.
    pub wake: Arc<Notify>,
}

impl PayoutShared {
    pub fn new(ledger: PayoutLedger, wake: Arc<Notify>) -> PayoutShared {
        PayoutShared {
            ledger: Mutex::new(ledger),
            health: Mutex::new(PayoutHealth::default()),
            wake,
        }
    }

    pub fn health(&self) -> PayoutHealth {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Run `f` on the ledger in a blocking thread.
    pub async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut PayoutLedger) -> Result<T, PayoutError> + Send + 'static,
    ) -> Result<T, PayoutError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut ledger = me.ledger.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut ledger)
        })
        .await
        .unwrap_or_else(|e| Err(PayoutError::Corrupt(format!("payout task panicked: {e}"))))
    }
}

pub struct PayoutTask<S> {
    pub source: Arc<S>,
    pub shared: Arc<PayoutShared>,
    pub feed: Arc<JobFeed>,
    pub node: Arc<NodeMonitor>,
    pub stats: Arc<PoolStats>,
    pub live: LiveFeed,
    pub interval: Duration,
    pub confirmations: u32,
    pub shutdown: CancellationToken,
}

impl<S: TemplateSource> PayoutTask<S> {
    pub async fn run(self) {
        let mut jobs = self.feed.subscribe();
        let mut last_height = None;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shared.wake.notified() => {}
                changed = jobs.changed() => {
                    if changed.is_err() { return; }
                    let height = jobs.borrow_and_update().as_ref().map(|j| j.template.height);
                    if height == last_height { continue; }
                    last_height = height;
                }
                _ = self.shutdown.cancelled() => return,
            }
            self.pass().await;
        }
    }

    /// The chain tip: the node's, else what the job feed builds on.
    async fn tip(&self) -> Option<u32> {
        let started = std::time::Instant::now();
        let info = self.source.chain_info().await;
        self.node
            .observe("getblockchaininfo", Some(started.elapsed()), &info);
        match info {
            Ok(i) => u32::try_from(i.blocks).ok(),
            Err(_) => self
                .feed
                .latest()
                .map(|j| j.template.height.saturating_sub(1)),
        }
    }

    /// Ask the node about accepted blocks recent enough to still be reorganised away; mark
    /// those that left its main chain `orphaned` in the blocks table.
    async fn check_orphans(&self, tip: u32) -> Result<Vec<String>, PayoutError> {
        let horizon = tip.saturating_sub(self.confirmations + ORPHAN_CHECK_MARGIN);
        let recent: Vec<(String, u32)> = self
            .shared
            .with(move |l| {
                let mut stmt = l.connection().prepare(
                    "SELECT hash, height FROM blocks WHERE status = 'accepted' AND height >= ?1 ORDER BY height",
                )?;
                let rows = stmt.query_map([horizon], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await?;
        let mut gone = Vec::new();
        for (hash, height) in recent {
            let started = std::time::Instant::now();
            let position = self.source.block_position(hash.clone()).await;
            self.node
                .observe("getblockheader", Some(started.elapsed()), &position);
            let why = match position {
                Ok(BlockPosition::NotInMainChain) => "the node reports it outside its main chain",
                Ok(BlockPosition::NotFound) => "the node does not know it",
                Ok(_) => continue,
                Err(_) => break, // node unreachable: ask again next pass
            };
            tracing::warn!(%hash, height, "block ORPHANED: {why}");
            gone.push((hash, why));
        }
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        let hashes: Vec<String> = gone.iter().map(|(h, _)| h.clone()).collect();
        self.shared
            .with(move |l| {
                for (hash, why) in gone {
                    l.connection().execute(
                        "UPDATE blocks SET status = 'orphaned', reject_reason = ?2 WHERE hash = ?1 AND status = 'accepted'",
                        params![hash, format!("orphaned: {why}")],
                    )?;
                }
                Ok(())
            })
            .await?;
        Ok(hashes)
    }

    async fn pass(&self) {
        let tip = self.tip().await;
        let outcome = async {
            let Some(tip) = tip else {
                return Ok(None); // no node answer and no template yet
            };
            let orphaned = self.check_orphans(tip).await?;
            for _ in &orphaned {
                bump(&self.stats.blocks_orphaned);
            }
            let report = self.shared.with(move |l| l.process(tip)).await?;
            Ok::<_, PayoutError>(Some((tip, report)))
        }
        .await;
        let now = unix_ms();
        let mut health = self.shared.health.lock().unwrap_or_else(|e| e.into_inner());
        health.runs += 1;
        health.last_run_ms = Some(now);
        match outcome {
            Ok(Some((tip, report))) => {
                health.last_ok_ms = Some(now);
                health.last_error = None;
                health.tip = Some(tip);
                drop(health);
                self.announce(tip, &report);
            }
            Ok(None) => {}
            Err(e) => {
                health.failures += 1;
                health.last_error = Some(e.to_string());
                tracing::error!("payout bookkeeping failed: {e}; retrying at the next pass");
            }
        }
    }

    fn announce(&self, tip: u32, report: &ProcessReport) {
        let nothing = report.credited.is_empty()
            && report.orphaned.is_empty()
            && report.maturity.matured_credits == 0
            && report.pps.credits.is_empty();
        if nothing {
            return;
        }
        let credited: Vec<_> = report
            .credited
            .iter()
            .map(|c| {
                json!({
                    "hash": c.hash,
                    "height": c.height,
                    "reward_sats": c.reward.0,
                    "scheme": c.scheme.as_str(),
                    "finder_account": c.finder_account,
                    "allocations": c.allocations.iter().map(|a| json!({
                        "account": a.account, "kind": a.kind.as_str(), "amount_sats": a.amount.0,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let pps: Vec<_> = report
            .pps
            .credits
            .iter()
            .map(|a| json!({"account": a.account, "amount_sats": a.amount.0}))
            .collect();
        tracing::info!(
            tip,
            credited = report.credited.len(),
            orphaned = report.orphaned.len(),
            matured = report.maturity.matured_credits,
            pps_credits = pps.len(),
            "payout bookkeeping"
        );
        self.live.publish(&json!({
            "type": "payout_processed",
            "event": "credits",
            "time_ms": unix_ms(),
            "tip": tip,
            "credited_blocks": credited,
            "orphaned_blocks": report.orphaned,
            "matured_blocks": report.maturity.matured_blocks,
            "matured_credits": report.maturity.matured_credits,
            "pps_credits": pps,
        }));
    }
}
