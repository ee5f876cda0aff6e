//! `blgv-proxy`: the BLGV site proxy.
//!
//! ASICs on the mining LAN connect here over Stratum V1. The proxy multiplexes them onto a few
//! upstream connections by subdividing each upstream's extranonce2 space, validates every share
//! locally (SHA256d), answers miners at once, forwards only shares that meet the upstream's
//! difficulty, fails over between pools, and keeps a per-worker ledger in SQLite.
//!
//! The binary is a thin shell over [`start`]; tests start proxies in-process the same way.

pub mod api;
pub mod channel;
pub mod config;
pub mod context;
pub mod energy;
pub mod extranonce_layout;
pub mod jobs;
pub mod ledger;
pub mod line_reader;
pub mod link;
pub mod open_files;
pub mod out_buffer;
pub mod registry;
pub mod router;
pub mod runtime;
pub mod server;
pub mod session;
pub mod site_config;
pub mod site_power;
pub mod stats;
pub mod upstream;
pub mod withhold;

pub use config::{Config, ConfigError, LoadError};
pub use stats::StatsSnapshot;

use context::ProxyContext;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} (proxy.listen): {source}; fix: pick a free port or stop the process using it")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} (api.listen): {source}; fix: pick a free port, or set api.enabled = false")]
    ApiListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Grid(#[from] site_power::GridStartError),
    #[error(transparent)]
    Energy(#[from] energy::EnergyStartError),
}

/// A running proxy.
pub struct ProxyHandle {
    local_addr: SocketAddr,
    ctx: Arc<ProxyContext>,
    power: Arc<site_power::SitePower>,
    api_addr: Option<SocketAddr>,
    ledger_task: tokio::task::JoinHandle<()>,
    energy: Option<Arc<energy::EnergyHandle>>,
}

impl ProxyHandle {
    /// The address miners connect to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the status API, metrics and dashboard listen, when enabled.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.ctx.stats.snapshot()
    }

    /// Miners per upstream connection, in channel order.
    pub fn upstream_loads(&self) -> Vec<u32> {
        self.ctx.channel_loads()
    }

    /// The curtailment loop's state, when miners are configured for it.
    pub fn curtailment_status(&self) -> Option<blgv_sensors::curtailment::CurtailmentStatus> {
        self.power.curtailment_status()
    }

    /// The meters, grid link and curtailment loop.
    pub fn site_power(&self) -> &site_power::SitePower {
        &self.power
    }

    /// The energy reports to the pool (built, sent, queued), when `[energy]` is configured.
    /// Counts the outbox's rows (a short SQLite read).
    pub fn energy_status(&self) -> Option<energy::EnergyStatus> {
        self.energy.as_ref().map(|e| e.status())
    }

    /// Miners whose work curtailment withholds right now (its last resort).
    pub fn withheld(&self) -> Vec<withhold::MinerSelector> {
        self.ctx.withholding.withheld()
    }

    /// Stop accepting, close every session and upstream, and flush the ledger.
    pub async fn shutdown(self) {
        self.ctx.shutdown.cancel();
        self.ctx.tasks.close();
        self.ctx.tasks.wait().await;
        let _ = self.ledger_task.await;
    }

    /// Resolves when something (e.g. a signal handler) cancelled the proxy.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.ctx.shutdown.clone()
    }
}

/// Start a proxy: open the ledger, bind the listener, start the failback probe. Upstream
/// connections open when the first miner subscribes.
pub async fn start(config: Config) -> Result<ProxyHandle, StartError> {
    config.validate()?;
    let config = Arc::new(config);
    let conn = ledger::open_database(&config.ledger.path)?;
    let listener = tokio::net::TcpListener::bind(config.proxy.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.proxy.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.proxy.listen,
        source,
    })?;
    let shutdown = CancellationToken::new();
    let ledger = ledger::Ledger::new();
    let ctx = ProxyContext::new(
        config.clone(),
        Arc::default(),
        ledger.clone(),
        shutdown.clone(),
    );
    let ledger_task = tokio::spawn(ledger::run_writer(
        ledger,
        conn,
        std::time::Duration::from_millis(config.ledger.flush_interval_ms),
        shutdown.clone(),
    ));
    ctx.tasks.spawn(registry::close_withheld_sessions(
        ctx.withholding.clone(),
        ctx.miners.clone(),
        shutdown.clone(),
    ));
    ctx.tasks.spawn(router::run_failback_probe(
        ctx.router.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    let power = Arc::new(site_power::start(
        &config,
        ctx.withholding.clone(),
        ctx.miners.clone(),
        shutdown.clone(),
    )?);
    let energy = match energy::start(&config, &power, &ctx.tasks, shutdown.clone()).await {
        Ok(e) => e.map(Arc::new),
        Err(e) => {
            shutdown.cancel(); // the meters and grid link just started stop again
            return Err(e.into());
        }
    };
    let api_addr = if config.api.enabled {
        let addr = config.api.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::ApiListen { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| StartError::ApiListen { addr, source })?;
        let state = api::ApiState::new(ctx.clone(), power.clone(), energy.clone());
        ctx.tasks.spawn(api::serve(listener, state));
        tracing::info!(api = %bound, "status API, metrics and dashboard listening");
        Some(bound)
    } else {
        None
    };
    ctx.tasks.spawn(server::run_listener(listener, ctx.clone()));
    tracing::info!(listen = %local_addr, pools = config.upstreams.len(), "blgv-proxy started");
    Ok(ProxyHandle {
        local_addr,
        ctx,
        power,
        api_addr,
        ledger_task,
        energy,
    })
}
