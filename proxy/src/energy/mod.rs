//! Energy reports to the pool: what powered the site's hashing, interval by interval.
//!
//! Every `energy.report_interval_secs` (300 in production) the proxy builds a report for the
//! interval that just ended: kWh per source (each source is one meter's feed: solar, wind,
//! hydro, grid of a region, …; [`integrate`] turns the meter's readings into energy), the
//! site's average and peak power, the hashes done (Σ accepted difficulty × 2³² from the share
//! ledger, [`hashes`]), and the grid curtailment in force and how the site obeyed ([`curtail`]).
//!
//! Store and forward: the report is written to a SQLite outbox ([`outbox`]) before anything is
//! sent, and deleted only when the pool acknowledged it; [`sender`] works through the outbox
//! oldest first with an exponential backoff. A restart, a power cut (SIGKILL) or a week without
//! the pool loses nothing, and the pool counts a report it already had once (it answers
//! "duplicate"). Intervals the proxy itself was not running for are reported with nothing
//! measured, so the pool sees every interval exactly once.
//!
//! * [`config`]: the `[energy]` section.
//! * [`report`]: what the proxy decides about its reports; the JSON shape and the pool's
//!   validator are `blgv-energy`, shared with the pool.
//! * [`builder`]: the task that builds the reports.

pub mod builder;
pub mod config;
pub mod curtail;
pub mod hashes;
pub mod integrate;
pub mod outbox;
pub mod report;
pub mod sender;

pub use config::EnergySection;
pub use report::EnergyReport;

use crate::config::Config;
use crate::site_power::SitePower;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum EnergyStartError {
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    #[error("energy.report.url: cannot set up the HTTPS client: {0}; fix: check the system's TLS support")]
    Client(reqwest::Error),
    #[error("energy.sources[{index}].meter: meter {meter:?} is not running; fix: name one of the [[meters]]")]
    Meter { index: usize, meter: String },
}

/// The running energy reporting: its outbox and counters.
pub struct EnergyHandle {
    pub outbox: Arc<outbox::Outbox>,
    pub builder: Arc<builder::BuilderStats>,
    pub sender: Arc<sender::SenderStats>,
}

/// What the energy reporting has done so far (`GET /api/energy`, the `energy` field of
/// `/api/status`, and the `blgv_proxy_energy_*` metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EnergyStatus {
    /// Reports built from measurements.
    pub built: u64,
    /// Reports for intervals the proxy was not running.
    pub gaps: u64,
    /// Reports the pool acknowledged.
    pub sent: u64,
    /// Of those, ones the pool already had (a retry after a lost answer).
    pub duplicates: u64,
    /// Reports waiting in the outbox.
    pub queued: u64,
    pub refused: u64,
    pub last_error: Option<String>,
}

impl EnergyHandle {
    pub fn status(&self) -> EnergyStatus {
        EnergyStatus {
            built: self.builder.built.load(Relaxed),
            gaps: self.builder.gaps.load(Relaxed),
            sent: self.sender.sent.load(Relaxed),
            duplicates: self.sender.duplicates.load(Relaxed),
            queued: self.outbox.len().unwrap_or(0),
            refused: self.sender.refused.load(Relaxed),
            last_error: self.sender.last_error(),
        }
    }
}

/// How long after an interval's end its report is built: long enough for the source meters'
/// next readings (so the last span is interpolated, not held) and for the share ledger's flush
/// of the interval's last shares.
pub fn settle_time(config: &Config, energy: &EnergySection) -> Duration {
    let poll = energy
        .sources
        .iter()
        .filter_map(|s| config.meters.iter().find(|m| m.id == s.meter))
        .map(|m| m.poll_interval_ms)
        .max()
        .unwrap_or(1000);
    let ms = (2 * poll)
        .max(config.ledger.flush_interval_ms + 500)
        .max(1000);
    Duration::from_millis(ms)
}

/// Start the builder and the sender when the config has an `[energy]` section. Their tasks
/// run on `tasks` until `shutdown`.
pub async fn start(
    config: &Config,
    power: &SitePower,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<Option<EnergyHandle>, EnergyStartError> {
    let Some(energy) = &config.energy else {
        return Ok(None);
    };
    let path = energy.outbox_path(&config.ledger.path);
    let outbox = Arc::new(
        tokio::task::spawn_blocking(move || outbox::Outbox::open(&path))
            .await
            .map_err(|e| outbox::OutboxError::Task(e.to_string()))??,
    );
    let client = sender::client(&energy.report).map_err(EnergyStartError::Client)?;
    let mut meters = Vec::new();
    let mut max_gaps_ms = Vec::new();
    for (index, s) in energy.sources.iter().enumerate() {
        let handle = power.meters.iter().find(|m| m.id() == s.meter);
        let cfg = config.meters.iter().find(|m| m.id == s.meter);
        let (Some(handle), Some(cfg)) = (handle, cfg) else {
            return Err(EnergyStartError::Meter {
                index,
                meter: s.meter.clone(),
            });
        };
        meters.push(handle.subscribe());
        max_gaps_ms.push(cfg.stale_after_ms);
    }
    let ledger = match hashes::ShareLedger::open(&config.ledger.path) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "energy reports: cannot open the share ledger; hashes are reported as 0");
            None
        }
    };
    let wake = Arc::new(Notify::new());
    let builder_stats = Arc::new(builder::BuilderStats::default());
    let sender_stats = Arc::new(sender::SenderStats::default());
    let curtailment = power.curtailment.as_ref().map(|c| c.watch());
    let b = builder::Builder::resume(builder::Inputs {
        energy: energy.clone(),
        max_gaps_ms,
        settle: settle_time(config, energy),
        has_curtailment: curtailment.is_some(),
        ledger,
        outbox: outbox.clone(),
        wake: wake.clone(),
        stats: builder_stats.clone(),
    })
    .await?;
    let (tx, rx) = mpsc::channel(1024);
    for (i, m) in meters.into_iter().enumerate() {
        tasks.spawn(builder::forward_readings(
            i,
            m,
            tx.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(c) = curtailment {
        tasks.spawn(builder::forward_curtailment(
            c,
            tx.clone(),
            shutdown.clone(),
        ));
    }
    drop(tx);
    tasks.spawn(b.run(rx, shutdown.clone()));
    tasks.spawn(
        sender::Sender {
            outbox: outbox.clone(),
            target: energy.report.clone(),
            client,
            wake,
            stats: sender_stats.clone(),
            shutdown,
        }
        .run(),
    );
    tracing::info!(
        site = %energy.site_id,
        to = %energy.report.endpoint(),
        outbox = %outbox.path().display(),
        "energy reports started"
    );
    Ok(Some(EnergyHandle {
        outbox,
        builder: builder_stats,
        sender: sender_stats,
    }))
}
