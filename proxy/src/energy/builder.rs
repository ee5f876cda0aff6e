//! The report builder: follows the source meters' readings and the curtailment loop, and at
//! every interval boundary (plus a settle time for the last readings and the share ledger's
//! flush) builds the interval's report and writes it to the outbox.
//!
//! Intervals are aligned to `report_interval_secs` in unix time. The first interval after a
//! first start is partial (its `measured_secs` says how much was measured), as is the
//! interval a restart falls in (what was measured before the stop is not kept). After a
//! restart, the intervals the proxy missed are reported too, with nothing measured
//! (`measured_secs` 0), so the pool sees every interval exactly once: gaps are explicit, never
//! silent.

use super::config::{EnergySection, SourceConfig};
use super::curtail::CurtailmentTracker;
use super::hashes::{ShareLedger, HASHES_PER_DIFFICULTY};
use super::integrate::{interval_of, PeakTracker, Sample, SourceIntegrator};
use super::outbox::{BuilderState, HashMark, NewReport, Outbox, OutboxError};
use super::report::{
    EnergyReport, GramsPerKwh, KilowattHours, Kilowatts, SiteId, SourceEnergy, VERSION,
};
use blgv_sensors::curtailment::CurtailmentStatus;
use blgv_sensors::meter::{Quality, Reading};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

/// At most this many missed intervals are reported after a restart (a week of 5-minute
/// intervals); a longer outage leaves a hole before them, and the log says so.
pub const MAX_BACKFILL: i64 = 2016;

/// Counters for status and tests.
#[derive(Debug, Default)]
pub struct BuilderStats {
    /// Reports queued (measured intervals).
    pub built: AtomicU64,
    /// Reports queued for intervals the proxy was not running.
    pub gaps: AtomicU64,
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn unix_secs(t: SystemTime) -> Option<f64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs_f64())
}

/// A source meter's reading as a sample: `None` unless good with a total power.
pub fn sample_of(r: &Reading) -> Option<Sample> {
    match r.quality {
        Quality::Good => Sample::from_watts(unix_secs(r.at)?, r.total_power_w?),
        _ => None,
    }
}

/// The next aligned boundary after `t`.
fn next_boundary(t: i64, interval: i64) -> i64 {
    t.div_euclid(interval) * interval + interval
}

struct Source {
    cfg: SourceConfig,
    integrator: SourceIntegrator,
    max_gap: f64,
}

pub enum Event {
    Reading(usize, Reading),
    Curtailment(CurtailmentStatus),
}

pub struct Builder {
    site_id: String,
    interval: i64,
    settle: Duration,
    sources: Vec<Source>,
    peak: PeakTracker,
    curtailment: Option<CurtailmentTracker>,
    ledger: Option<Arc<Mutex<ShareLedger>>>,
    outbox: Arc<Outbox>,
    wake: Arc<Notify>,
    stats: Arc<BuilderStats>,
    state: BuilderState,
    /// Start of the next interval to close.
    open_start: i64,
    /// Reports not yet in the outbox because writing it failed; written with the next ones.
    unwritten: Vec<NewReport>,
    ledger_warned: bool,
}

/// What the builder needs from the proxy.
pub struct Inputs {
    pub energy: EnergySection,
    /// Per source (config order): the meter's `stale_after_ms`.
    pub max_gaps_ms: Vec<u64>,
    pub settle: Duration,
    pub has_curtailment: bool,
    pub ledger: Option<ShareLedger>,
    pub outbox: Arc<Outbox>,
    pub wake: Arc<Notify>,
    pub stats: Arc<BuilderStats>,
}

impl Builder {
    /// Pick up where the last run stopped: queue the intervals it missed (with nothing
    /// measured), then follow the current one.
    pub async fn resume(inputs: Inputs) -> Result<Builder, OutboxError> {
        let e = &inputs.energy;
        let interval = e.report_interval_secs.max(1) as i64;
        let outbox = inputs.outbox.clone();
        let saved = blocking(&outbox, |o| o.state()).await?;
        let mut b = Builder {
            site_id: e.site_id.clone(),
            interval,
            settle: inputs.settle,
            sources: e
                .sources
                .iter()
                .zip(&inputs.max_gaps_ms)
                .map(|(cfg, gap)| Source {
                    cfg: cfg.clone(),
                    integrator: SourceIntegrator::new(interval, *gap as f64 / 1000.0),
                    max_gap: *gap as f64 / 1000.0,
                })
                .collect(),
            peak: PeakTracker::new(interval),
            curtailment: inputs
                .has_curtailment
                .then(|| CurtailmentTracker::new(interval)),
            ledger: inputs.ledger.map(|l| Arc::new(Mutex::new(l))),
            outbox,
            wake: inputs.wake,
            stats: inputs.stats,
            state: BuilderState {
                site_id: e.site_id.clone(),
                interval_secs: interval,
                last_end: 0,
                hashes: HashMark::default(),
            },
            open_start: 0,
            unwritten: Vec::new(),
            ledger_warned: false,
        };
        let now = unix_now();
        let current = interval_of(now, interval);
        // Σ difficulty so far: the first report counts from here.
        let here = b
            .hash_mark(
                now.ceil() as i64,
                &saved.as_ref().map(|s| s.hashes.clone()).unwrap_or_default(),
            )
            .await;
        match saved {
            None => {
                b.state.last_end = current;
                b.state.hashes = here.unwrap_or_default();
                b.open_start = current;
                let state = b.state.clone();
                blocking(&b.outbox, move |o| o.enqueue(&[], &state)).await?;
            }
            Some(saved) => {
                if saved.site_id != b.site_id {
                    let to = b.site_id.clone();
                    let n = blocking(&b.outbox, move |o| o.set_aside_other_sites(&to)).await?;
                    tracing::warn!(old = %saved.site_id, new = %b.site_id, set_aside = n, "energy.site_id changed: reports queued under the old id are kept in the outbox's `refused` table, not sent");
                }
                b.state.last_end = saved.last_end;
                b.state.hashes = saved.hashes.clone();
                if saved.last_end < current {
                    b.backfill(saved.last_end, current, here).await?;
                }
                b.open_start = b.state.last_end.max(current);
            }
        }
        tracing::info!(
            site = %b.site_id,
            interval_secs = interval,
            sources = b.sources.len(),
            first_report_at = b.open_start,
            "energy reports: builder started"
        );
        Ok(b)
    }

    /// Queue reports with nothing measured for `[from, to)`, the time the proxy was not
    /// running. Work the ledger recorded since the last report (shares flushed before the
    /// proxy stopped) goes into the first of them.
    async fn backfill(
        &mut self,
        from: i64,
        to: i64,
        here: Option<HashMark>,
    ) -> Result<(), OutboxError> {
        let mut start = from;
        let earliest = to - MAX_BACKFILL * self.interval;
        if start < earliest {
            tracing::warn!(
                from,
                to = earliest,
                "the proxy was not running for longer than {MAX_BACKFILL} intervals: the oldest missed intervals are not reported"
            );
            start = earliest;
        }
        let mut reports = Vec::new();
        let mut first = true;
        let mut mark = self.state.hashes.clone();
        let mut hashes = 0.0;
        if let Some(h) = here {
            hashes = (h.total - mark.total).max(0.0) * HASHES_PER_DIFFICULTY;
            mark = h;
        }
        while start < to {
            let end = next_boundary(start, self.interval).min(to);
            let report = EnergyReport {
                version: VERSION,
                site_id: SiteId(self.site_id.clone()),
                interval_start: start,
                interval_end: end,
                sources: self
                    .sources
                    .iter()
                    .map(|s| source_energy(&s.cfg, KilowattHours(0.0), 0.0))
                    .collect(),
                average_kw: Kilowatts(0.0),
                peak_kw: Kilowatts(0.0),
                hashes: if first { hashes } else { 0.0 },
                curtailment: None,
            };
            first = false;
            reports.push(NewReport {
                interval_start: start,
                interval_end: end,
                body: report.canonical(),
            });
            start = end;
        }
        let n = reports.len();
        let mut state = self.state.clone();
        state.last_end = to;
        state.hashes = mark;
        let s = state.clone();
        blocking(&self.outbox, move |o| o.enqueue(&reports, &s)).await?;
        self.state = state;
        self.stats.gaps.fetch_add(n as u64, Relaxed);
        tracing::warn!(
            intervals = n,
            from,
            to,
            "energy: the proxy was not running; those intervals are reported with nothing measured"
        );
        self.wake.notify_one();
        Ok(())
    }

    /// The share ledger's Σ difficulty before `end`, moving `mark`; `None` (logged once) when
    /// the ledger cannot be read (the reports then carry no hashes).
    async fn hash_mark(&mut self, end: i64, mark: &HashMark) -> Option<HashMark> {
        let ledger = self.ledger.clone()?;
        let m = mark.clone();
        let r = tokio::task::spawn_blocking(move || {
            ledger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .total_before(end, &m)
        })
        .await;
        match r {
            Ok(Ok(m)) => {
                self.ledger_warned = false;
                Some(m)
            }
            Ok(Err(e)) => {
                if !self.ledger_warned {
                    tracing::warn!(error = %e, "energy reports: cannot read the share ledger; hashes are reported as 0 until it can be read");
                    self.ledger_warned = true;
                }
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "energy reports: ledger read task failed");
                None
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Reading(i, r) => {
                let Some(src) = self.sources.get_mut(i) else {
                    return;
                };
                let sample = sample_of(&r);
                src.integrator.push(sample);
                if let Some(s) = sample {
                    // The site's power now: every source's latest fresh reading.
                    let total: f64 = self
                        .sources
                        .iter()
                        .filter_map(|x| x.integrator.last().filter(|l| s.t - l.t <= x.max_gap))
                        .map(|l| l.kw)
                        .sum();
                    self.peak.observe(s.t, total);
                }
            }
            Event::Curtailment(status) => {
                if let Some(c) = &mut self.curtailment {
                    c.observe(unix_now(), &status);
                }
            }
        }
    }

    /// When the open interval's report is due (wall clock, unix seconds).
    fn due(&self) -> f64 {
        next_boundary(self.open_start, self.interval) as f64 + self.settle.as_secs_f64()
    }

    async fn close_open_interval(&mut self) {
        let start = self.open_start;
        let end = next_boundary(start, self.interval);
        let key = interval_of(start as f64, self.interval);
        let span = (end - start) as f64;
        let mut average = 0.0;
        let sources: Vec<SourceEnergy> = self
            .sources
            .iter_mut()
            .map(|s| {
                let e = s.integrator.close(key, end);
                average += e.mean_kw().unwrap_or(0.0);
                source_energy(&s.cfg, KilowattHours(e.kwh()), e.covered_secs.min(span))
            })
            .collect();
        let peak = self.peak.close(key);
        let curtailment = self.curtailment.as_mut().map(|c| c.close(key, end));
        let before = self.state.hashes.clone();
        let mark = self.hash_mark(end, &before).await;
        let hashes = match &mark {
            Some(m) if m.total >= before.total => (m.total - before.total) * HASHES_PER_DIFFICULTY,
            Some(_) => {
                tracing::warn!(
                    "the share ledger holds less work than before (replaced?); counting from here"
                );
                0.0
            }
            None => 0.0,
        };
        let mut report = EnergyReport {
            version: VERSION,
            site_id: SiteId(self.site_id.clone()),
            interval_start: start,
            interval_end: end,
            sources,
            average_kw: Kilowatts(average),
            peak_kw: Kilowatts(peak),
            hashes,
            curtailment,
        };
        let body = super::report::bounded_json(&mut report);
        tracing::debug!(
            start,
            end,
            kwh = report.total_kwh().0,
            hashes,
            "energy report built"
        );
        self.unwritten.push(NewReport {
            interval_start: start,
            interval_end: end,
            body,
        });
        let mut state = self.state.clone();
        state.last_end = end;
        if let Some(m) = mark {
            state.hashes = m;
        }
        let (reports, s) = (self.unwritten.clone(), state.clone());
        match blocking(&self.outbox, move |o| o.enqueue(&reports, &s)).await {
            Ok(()) => {
                self.stats
                    .built
                    .fetch_add(self.unwritten.len() as u64, Relaxed);
                self.unwritten.clear();
                self.wake.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, pending = self.unwritten.len(), "cannot write energy reports to the outbox; kept in memory and written with the next one")
            }
        }
        // Either way the interval is done: its report is in the outbox or waiting in memory.
        self.state = state;
        self.open_start = end;
    }

    pub async fn run(mut self, mut events: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        loop {
            let wait = (self.due() - unix_now()).clamp(0.0, 1.0);
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => return,
                },
                _ = tokio::time::sleep(Duration::from_secs_f64(wait)) => {
                    // Wall-clock time: re-checked at least every second, so a stepped clock
                    // is followed.
                    while unix_now() >= self.due() && !shutdown.is_cancelled() {
                        self.close_open_interval().await;
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

fn source_energy(cfg: &SourceConfig, kwh: KilowattHours, measured_secs: f64) -> SourceEnergy {
    SourceEnergy {
        kind: cfg.source_kind(),
        meter: cfg.meter.clone(),
        region: cfg.region.clone(),
        kwh,
        measured_secs,
        g_co2_per_kwh: cfg.g_co2_per_kwh.map(GramsPerKwh),
    }
}

async fn blocking<T: Send + 'static>(
    outbox: &Arc<Outbox>,
    f: impl FnOnce(&Outbox) -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, OutboxError> {
    let o = outbox.clone();
    tokio::task::spawn_blocking(move || f(&o))
        .await
        .unwrap_or_else(|e| Err(OutboxError::Task(e.to_string())))
}

/// Forward a meter's readings into the builder's queue until shutdown.
pub async fn forward_readings(
    index: usize,
    mut rx: watch::Receiver<Reading>,
    tx: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) {
    loop {
        let r = rx.borrow_and_update().clone();
        if tx.send(Event::Reading(index, r)).await.is_err() {
            return;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Forward the curtailment loop's status into the builder's queue until shutdown.
pub async fn forward_curtailment(
    mut rx: watch::Receiver<CurtailmentStatus>,
    tx: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) {
    loop {
        let s = rx.borrow_and_update().clone();
        if tx.send(Event::Curtailment(s)).await.is_err() {
            return;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries() {
        assert_eq!(next_boundary(0, 300), 300);
        assert_eq!(next_boundary(299, 300), 300);
        assert_eq!(next_boundary(300, 300), 600);
        assert_eq!(next_boundary(7, 5), 10);
    }

    #[test]
    fn only_good_readings_are_samples() {
        let at = UNIX_EPOCH + Duration::from_secs(100);
        let mut r = Reading {
            meter_id: "m".into(),
            at,
            quality: Quality::Good,
            total_power_w: Some(1500.0),
            import_energy_kwh: None,
            phases: vec![],
        };
        assert_eq!(sample_of(&r), Some(Sample { t: 100.0, kw: 1.5 }));
        r.quality = Quality::Stale { since: at };
        assert_eq!(sample_of(&r), None);
        assert_eq!(sample_of(&Reading::bad("m", at, "timeout")), None);
    }
}
