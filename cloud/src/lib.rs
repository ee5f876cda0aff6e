//! `blgv-cloud`: the BLGV pool coordinator.
//!
//! Block templates from a Bitcoin node become Stratum V1 jobs; shares from site proxies and
//! miners are validated with the same `blgv-stratum` rules as the proxy, recorded in a ledger,
//! and the ones that meet the network target become blocks submitted at once.

pub mod api;
pub mod blocks;
/// Coinbase assembly lives in blgv-coinbase (the fuzzer links it without the pool).
pub use blgv_coinbase as coinbase;
pub mod config;
pub mod context;
pub mod energy;
pub mod job;
pub mod job_feed;
pub mod ledger;
pub mod monitor;
pub mod payout;
pub mod payout_task;
pub mod rpc;
pub mod session;
pub mod stats;
pub mod template;

pub use config::{Config, ConfigError, LoadError};
pub use rpc::BitcoindRpc;
pub use stats::PoolStatsSnapshot;
pub use template::{BlockPosition, NodeError, TemplateSource};

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
    #[error("cannot listen on {addr} (api.listen): {source}; fix: pick a free port or stop the process using it")]
    ApiListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Payout(#[from] payout::PayoutError),
    #[error("cannot prepare the API's tables: {0}")]
    Api(rusqlite::Error),
}

pub struct PoolHandle {
    local_addr: SocketAddr,
    api_addr: SocketAddr,
    ctx: Arc<PoolContext>,
    payouts: Arc<payout_task::PayoutShared>,
    submitter: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    api: tokio::task::JoinHandle<()>,
}

impl PoolHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the HTTP API, metrics, live feed and dashboard listen.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The payout engine the pool runs (for operators' tools and tests).
    pub fn payouts(&self) -> Arc<payout_task::PayoutShared> {
        self.payouts.clone()
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
        let abort = self.api.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), self.api)
            .await
            .is_err()
        {
            abort.abort(); // a client holding a connection open does not hold up shutdown
        }
    }
}

/// Start the pool on `source` (a Bitcoin Core node, or the demo chain).
pub async fn start<S: TemplateSource>(config: Config, source: S) -> Result<PoolHandle, StartError> {
    let payout = config.payout()?;
    let settings = Arc::new(config.payout.resolve(payout.network)?);
    let config = Arc::new(config);
    let conn = ledger::open_database(&config.ledger.path)?;
    let payout_ledger = payout::PayoutLedger::with_connection(
        ledger::open_database(&config.ledger.path)?,
        (*settings).clone(),
    )?;
    let api_db = ledger::open_database(&config.ledger.path)?;
    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| StartError::ApiListen {
            addr: config.api.listen,
            source,
        })?;
    let api_addr = api_listener
        .local_addr()
        .map_err(|source| StartError::ApiListen {
            addr: config.api.listen,
            source,
        })?;
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
    let ledger_tx = Arc::new(ledger::LedgerSender::new(ledger_tx));
    let (released_tx, released_rx) = tokio::sync::watch::channel(0u64);
    let (blocks_tx, blocks_rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let live = monitor::LiveFeed::default();
    let node = Arc::new(monitor::NodeMonitor::default());
    let blocks_committed = Arc::new(tokio::sync::Notify::new());
    let payouts = Arc::new(payout_task::PayoutShared::new(
        payout_ledger,
        blocks_committed.clone(),
    ));
    let ctx = Arc::new(PoolContext::new(
        config.clone(),
        feed.clone(),
        stats.clone(),
        vardiff,
        shutdown.clone(),
        ledger_tx.clone(),
        released_rx,
        blocks_tx,
        settings.clone(),
        live.clone(),
    ));
    let source = Arc::new(source);

    let writer = tokio::spawn(ledger::run_writer(
        ledger_rx,
        conn,
        Duration::from_millis(config.ledger.flush_interval_ms),
        ledger::WriterSignals {
            stats: Some(stats.clone()),
            blocks_committed: Some(blocks_committed),
            released: Some(released_tx),
            max_unwritten: config.ledger.max_unwritten,
        },
    ));
    let submitter = tokio::spawn(blocks::run_submitter(
        source.clone(),
        blocks_rx,
        ledger_tx,
        feed.clone(),
        stats.clone(),
        node.clone(),
    ));
    ctx.tasks.spawn(job_feed::run(
        source.clone(),
        feed.clone(),
        Duration::from_secs(config.pool.job_refresh_secs),
        stats.clone(),
        node.clone(),
        shutdown.clone(),
    ));
    ctx.tasks.spawn(
        payout_task::PayoutTask {
            source,
            shared: payouts.clone(),
            feed: feed.clone(),
            node: node.clone(),
            stats: stats.clone(),
            live: live.clone(),
            interval: Duration::from_secs(config.payout.process_interval_secs),
            confirmations: settings.confirmations,
            shutdown: shutdown.clone(),
        }
        .run(),
    );
    let api_state = api::ApiState::new(
        api::ApiParts {
            config: config.clone(),
            network: payout.network,
            stats: stats.clone(),
            feed,
            node,
            payouts: payouts.clone(),
            live,
            pool_addr: local_addr,
            shutdown: shutdown.clone(),
        },
        api_db,
    )
    .map_err(StartError::Api)?;
    let api = tokio::spawn(api::serve(api_state, api_listener));
    stats
        .stratum_listening
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let accept_ctx = ctx.clone();
    let limiter = blgv_stratum::limits::ConnectionLimiter::new(
        ctx.config.pool.max_connections,
        ctx.config.pool.max_connections_per_ip,
    );
    ctx.tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = accept_ctx.shutdown.cancelled() => {
                    accept_ctx.stats.stratum_listening.store(false, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            };
            match accepted {
                Ok((stream, peer)) => match limiter.try_acquire(peer.ip()) {
                    Ok(permit) => {
                        accept_ctx.tasks.spawn(session::run_session(
                            accept_ctx.clone(),
                            stream,
                            peer,
                            permit,
                        ));
                    }
                    Err(reason) => {
                        // Closed at once: nothing of a session exists yet.
                        drop(stream);
                        accept_ctx.stats.limits.hit(reason, peer, "pool");
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "accept failed (file descriptor limit?)");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    tracing::info!(listen = %local_addr, api = %api_addr, network = %config.pool.network, "blgv-cloud started");
    Ok(PoolHandle {
        local_addr,
        api_addr,
        ctx,
        payouts,
        submitter,
        writer,
        api,
    })
}
