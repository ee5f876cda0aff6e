//! `blgv-cloud`: the BLGV pool coordinator.
//!
//! Block templates from a Bitcoin node become Stratum V1 jobs; shares from site proxies and
//! miners are validated with the same `blgv-stratum` rules as the proxy, recorded in a ledger,
//! and the ones that meet the network target become blocks submitted at once.

pub mod blocks;
pub mod coinbase;
pub mod config;
pub mod context;
pub mod job;
pub mod job_feed;
pub mod ledger;
pub mod payout;
pub mod rpc;
pub mod session;
pub mod stats;
pub mod template;

pub use config::{Config, ConfigError, LoadError};
pub use rpc::BitcoindRpc;
pub use stats::PoolStatsSnapshot;
pub use template::{NodeError, TemplateSource};

use blgv_stratum::{Difficulty, VardiffRules};
use context::PoolContext;
use job::CoinbasePolicy;
use job_feed::JobFeed;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} (pool.listen): {source}; fix: pick a free port or stop the process using it")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

pub struct PoolHandle {
    local_addr: SocketAddr,
    ctx: Arc<PoolContext>,
    submitter: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl PoolHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> PoolStatsSnapshot {
        self.ctx.stats.snapshot()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.ctx.shutdown.clone()
    }

    /// Close every connection, let pending block submissions finish, commit the ledger.
    pub async fn shutdown(self) {
        self.ctx.shutdown.cancel();
        self.ctx.tasks.close();
        self.ctx.tasks.wait().await;
        drop(self.ctx); // closes the block and ledger channels once the sessions are gone
        let _ = self.submitter.await;
        let _ = self.writer.await;
    }
}

/// Start the pool on `source` (a Bitcoin Core node, or the demo chain).
pub async fn start<S: TemplateSource>(config: Config, source: S) -> Result<PoolHandle, StartError> {
    let payout = config.payout()?;
    let config = Arc::new(config);
    let conn = ledger::open_database(&config.ledger.path)?;
    let listener = tokio::net::TcpListener::bind(config.pool.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.pool.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.pool.listen,
        source,
    })?;

    let policy = CoinbasePolicy {
        tag: config.pool.coinbase_tag.as_bytes().to_vec(),
        payout_script: payout.script_pubkey,
        extranonce_len: config.pool.extranonce1_size + config.pool.extranonce2_size,
    };
    let feed = Arc::new(JobFeed::new(policy));
    let stats = Arc::new(stats::PoolStats::default());
    let v = &config.vardiff;
    let vardiff = VardiffRules {
        min: Difficulty::new(v.min).expect("validated"),
        max: Difficulty::new(v.max).expect("validated"),
        target_shares_per_minute: v.target_shares_per_minute,
        retarget_interval: Duration::from_secs(v.retarget_secs),
    };
    let (ledger_tx, ledger_rx) = mpsc::unbounded_channel();
    let (blocks_tx, blocks_rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let ctx = Arc::new(PoolContext::new(
        config.clone(),
        feed.clone(),
        stats.clone(),
        vardiff,
        shutdown.clone(),
        ledger_tx.clone(),
        blocks_tx,
    ));
    let source = Arc::new(source);

    let writer = tokio::spawn(ledger::run_writer(
        ledger_rx,
        conn,
        Duration::from_millis(config.ledger.flush_interval_ms),
    ));
    let submitter = tokio::spawn(blocks::run_submitter(
        source.clone(),
        blocks_rx,
        ledger_tx,
        feed.clone(),
        stats.clone(),
    ));
    ctx.tasks.spawn(job_feed::run(
        source,
        feed,
        Duration::from_secs(config.pool.job_refresh_secs),
        stats,
        shutdown.clone(),
    ));
    let accept_ctx = ctx.clone();
    ctx.tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = accept_ctx.shutdown.cancelled() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    accept_ctx
                        .tasks
                        .spawn(session::run_session(accept_ctx.clone(), stream, peer));
                }
                Err(e) => {
                    tracing::error!(error = %e, "accept failed (file descriptor limit?)");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    tracing::info!(listen = %local_addr, network = %config.pool.network, "blgv-cloud started");
    Ok(PoolHandle {
        local_addr,
        ctx,
        submitter,
        writer,
    })
}
