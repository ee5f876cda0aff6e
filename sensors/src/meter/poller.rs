//! The polling task of one meter: connect, (for SunSpec) discover, read, decode, publish.

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_modbus::client::{Client, Context};
use tokio_util::sync::CancellationToken;

use super::config::{preset_name, MeterConfig, Preset};
use super::error::PollError;
use super::link::{self, Link};
use super::presets;
use super::quality::QualityState;
use super::reading::{Quality, Reading};
use super::register_map::{RegisterMap, Sample, Words};
use super::sunspec;

/// The register map for presets that do not need discovery.
pub fn static_map(cfg: &MeterConfig) -> Option<RegisterMap> {
    match cfg.preset {
        Preset::Sdm630 => Some(presets::sdm630()),
        Preset::Sdm120 => Some(presets::sdm120()),
        Preset::Em24 => Some(presets::em24()),
        Preset::Em340 => Some(presets::em340()),
        Preset::Custom => Some(RegisterMap::custom(&cfg.registers)),
        Preset::Sunspec => None,
    }
}

struct Connection {
    ctx: Context,
    /// SunSpec: the map found on this connection.
    discovered: Option<RegisterMap>,
}

pub struct Poller {
    cfg: MeterConfig,
    target: String,
    timeout: Duration,
    map: Option<RegisterMap>,
    conn: Option<Connection>,
    quality: QualityState,
    logged_state: Option<String>,
}

impl Poller {
    pub fn new(cfg: MeterConfig) -> Self {
        Poller {
            target: link::describe(&cfg.transport),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            map: static_map(&cfg),
            conn: None,
            quality: QualityState::new(cfg.id.clone(), Duration::from_millis(cfg.stale_after_ms)),
            logged_state: None,
            cfg,
        }
    }

    /// Poll until `shutdown` is cancelled or nobody holds a receiver any more.
    pub async fn run(mut self, tx: watch::Sender<Reading>, shutdown: CancellationToken) {
        let period = Duration::from_millis(self.cfg.poll_interval_ms.max(1));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            meter = %self.cfg.id,
            target = %self.target,
            preset = preset_name(self.cfg.preset),
            "meter poller started"
        );
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tx.closed() => break,
                _ = ticker.tick() => {}
            }
            let reading = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = self.poll() => r,
            };
            self.log_change(&reading);
            tx.send_replace(reading);
        }
        if let Some(mut c) = self.conn.take() {
            let _ = tokio::time::timeout(self.timeout, c.ctx.disconnect()).await;
        }
        tx.send_replace(Reading::bad(
            self.cfg.id.clone(),
            SystemTime::now(),
            "meter poller stopped",
        ));
        tracing::info!(meter = %self.cfg.id, "meter poller stopped");
    }

    /// Log quality changes once, not every poll of a meter that stays down.
    fn log_change(&mut self, reading: &Reading) {
        let state = match &reading.quality {
            Quality::Good => "good".to_string(),
            Quality::Stale { .. } => "stale".to_string(),
            Quality::Bad { reason } => format!("bad: {reason}"),
        };
        if self.logged_state.as_deref() == Some(state.as_str()) {
            return;
        }
        match &reading.quality {
            Quality::Good => tracing::info!(meter = %self.cfg.id, "meter readings good"),
            Quality::Stale { .. } => {
                tracing::warn!(meter = %self.cfg.id, "meter not answering; readings stale")
            }
            Quality::Bad { reason } => {
                tracing::warn!(meter = %self.cfg.id, %reason, "meter readings bad")
            }
        }
        self.logged_state = Some(state);
    }

    /// One poll with retries, turned into a reading.
    pub async fn poll(&mut self) -> Reading {
        let attempts = self.cfg.retries.saturating_add(1);
        let mut last_error = None;
        for attempt in 1..=attempts {
            match self.attempt().await {
                Ok(sample) => {
                    for (_, problem) in &sample.problems {
                        tracing::debug!(meter = %self.cfg.id, %problem, "value did not decode");
                    }
                    return self
                        .quality
                        .on_sample(sample, SystemTime::now(), Instant::now());
                }
                Err(e) => {
                    tracing::debug!(meter = %self.cfg.id, attempt, error = %e, "poll attempt failed");
                    if e.needs_reconnect() {
                        self.conn = None;
                    } else if let (PollError::Exception { .. }, Some(conn)) =
                        (&e, self.conn.as_mut())
                    {
                        // A SunSpec map that now raises exceptions may have moved: find it
                        // again on the next attempt.
                        conn.discovered = None;
                    }
                    last_error = Some(e);
                }
            }
        }
        let error = last_error.unwrap_or(PollError::SunSpec("no attempt made".into()));
        self.quality
            .on_error(&error, attempts, SystemTime::now(), Instant::now())
    }

    async fn attempt(&mut self) -> Result<Sample, PollError> {
        if self.conn.is_none() {
            let ctx = link::connect(&self.cfg.transport, self.cfg.unit_id, self.timeout).await?;
            self.conn = Some(Connection {
                ctx,
                discovered: None,
            });
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(PollError::ConnectionLost {
                target: self.target.clone(),
                reason: "not connected".into(),
            });
        };
        let mut link = Link {
            ctx: &mut conn.ctx,
            timeout: self.timeout,
            target: &self.target,
        };
        if self.map.is_none() && conn.discovered.is_none() {
            let found = sunspec::discover(&mut link).await?;
            tracing::info!(meter = %self.cfg.id, map = %found.name, "SunSpec meter found");
            conn.discovered = Some(found);
        }
        let Some(map) = self.map.as_ref().or(conn.discovered.as_ref()) else {
            return Err(PollError::SunSpec("no register map".into()));
        };
        let mut words = Words::default();
        for block in map.blocks() {
            let w = link.read(block.function, block.start, block.count).await?;
            words.push(block, w);
        }
        Ok(map.decode(&words))
    }
}
