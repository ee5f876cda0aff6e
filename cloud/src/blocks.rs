//! Submitting found blocks to the node and recording what it said.

use crate::context::FoundBlock;
use crate::job_feed::JobFeed;
use crate::ledger::{BlockStatus, LedgerEvent, LedgerSender};
use crate::monitor::NodeMonitor;
use crate::stats::{bump, PoolStats};
use crate::template::TemplateSource;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Attempts per block when the node cannot be reached: a block is worth a short wait.
const SUBMIT_ATTEMPTS: u32 = 5;

pub async fn run_submitter<S: TemplateSource>(
    source: Arc<S>,
    mut found: mpsc::UnboundedReceiver<FoundBlock>,
    ledger: Arc<LedgerSender>,
    feed: Arc<JobFeed>,
    stats: Arc<PoolStats>,
    node: Arc<NodeMonitor>,
) {
    while let Some(block) = found.recv().await {
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let started = std::time::Instant::now();
            let result = source.submit_block(block.hex.clone()).await;
            node.observe("submitblock", Some(started.elapsed()), &result);
            match result {
                Ok(verdict) => break Ok(verdict),
                Err(e) if attempt < SUBMIT_ATTEMPTS => {
                    tracing::error!(hash = %block.hash, attempt, "{e}; retrying block submission");
                    tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                }
                Err(e) => break Err(e),
            }
        };
        let (status, reason) = match outcome {
            Ok(None) => {
                bump(&stats.blocks_accepted);
                tracing::info!(hash = %block.hash, height = block.height, "block accepted by the node");
                feed.block_accepted.notify_one();
                (BlockStatus::Accepted, None)
            }
            Ok(Some(reason)) => {
                bump(&stats.blocks_rejected);
                tracing::error!(hash = %block.hash, height = block.height, %reason, "node REJECTED our block");
                (BlockStatus::Rejected, Some(reason))
            }
            Err(e) => {
                bump(&stats.blocks_rejected);
                tracing::error!(hash = %block.hash, height = block.height, "block could not be submitted: {e}");
                (BlockStatus::Rejected, Some(e.to_string()))
            }
        };
        ledger.send(LedgerEvent::BlockStatus {
            hash: block.hash,
            status,
            reason,
        });
    }
}
