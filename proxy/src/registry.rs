//! The miner registry: one small entry per connected miner, for the status API, the dashboard
//! and the metrics. Sessions write their own entry (uncontended); readers take snapshots.
//!
//! Hashrate is estimated from accepted work, Σ d·2³² hashes, with exponentially decaying
//! averages over 1 min, 15 min and 1 h (as cgminer reports them): three numbers per miner
//! instead of a window of samples, which keeps an idle miner's entry small.

use crate::withhold::Withholding;
use futures::task::AtomicWaker;
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The averaging windows, in seconds.
pub const WINDOWS_SECS: [f64; 3] = [60.0, 900.0, 3600.0];

/// Decaying averages of a rate (hashes per second) over [`WINDOWS_SECS`].
#[derive(Debug, Clone, Copy)]
pub struct DecayingRate {
    rates: [f64; 3],
    at: Option<Instant>,
}

impl Default for DecayingRate {
    fn default() -> Self {
        DecayingRate {
            rates: [0.0; 3],
            at: None,
        }
    }
}

impl DecayingRate {
    /// Account `hashes` of work done at `now`.
    pub fn add(&mut self, hashes: f64, now: Instant) {
        self.decay_to(now);
        for (r, w) in self.rates.iter_mut().zip(WINDOWS_SECS) {
            *r += hashes / w;
        }
    }

    fn decay_to(&mut self, now: Instant) {
        if let Some(at) = self.at {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            for (r, w) in self.rates.iter_mut().zip(WINDOWS_SECS) {
                *r *= (-dt / w).exp();
            }
        }
        self.at = Some(now);
    }

    /// Hashes per second over each window, as of `now`.
    pub fn rates(&self, now: Instant) -> [f64; 3] {
        let mut copy = *self;
        copy.decay_to(now);
        copy.rates
    }
}

/// One connected miner.
#[derive(Debug)]
pub struct MinerEntry {
    pub id: u64,
    pub peer: SocketAddr,
    pub connected_at: SystemTime,
    details: Mutex<Details>,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub stale: AtomicU64,
    /// Difficulty as f64 bits.
    difficulty: AtomicU64,
    /// Unix milliseconds of the last accepted share; 0 = none yet.
    last_share_ms: AtomicU64,
    /// Asks the session to close (its work is withheld, or the proxy shuts down): a flag and
    /// the session's waker here, rather than a watch stream or a `Notified` waiter in every
    /// idle miner's task (memory per miner is a goal of its own).
    close_asked: AtomicBool,
    close_waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct Details {
    agent: Option<String>,
    workers: Vec<Arc<str>>,
    rate: DecayingRate,
}

/// What the API shows of a miner.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MinerView {
    pub id: u64,
    pub worker: Option<String>,
    pub workers: Vec<String>,
    pub ip: String,
    pub agent: Option<String>,
    pub difficulty: f64,
    pub hashrate_1m: f64,
    pub hashrate_15m: f64,
    pub hashrate_1h: f64,
    pub accepted: u64,
    pub rejected: u64,
    pub stale: u64,
    /// Unix seconds of the last accepted share.
    pub last_share: Option<u64>,
    pub connected_since: u64,
    /// Filled by the API from the curtailment state: `running`, `paused`, `withheld`.
    pub power_state: String,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl MinerEntry {
    pub fn set_agent(&self, agent: Option<String>) {
        self.details().agent = agent.map(|a| a.chars().take(64).collect());
    }

    pub fn set_workers(&self, workers: &[Arc<str>]) {
        self.details().workers = workers.to_vec();
    }

    pub fn set_difficulty(&self, d: f64) {
        self.difficulty.store(d.to_bits(), Relaxed);
    }

    /// A share accepted at difficulty `d`.
    pub fn on_accepted(&self, d: f64) {
        self.accepted.fetch_add(1, Relaxed);
        self.last_share_ms
            .store(unix_ms(SystemTime::now()), Relaxed);
        self.details().rate.add(d * 4_294_967_296.0, Instant::now());
    }

    pub fn on_rejected(&self, stale: bool) {
        self.rejected.fetch_add(1, Relaxed);
        if stale {
            self.stale.fetch_add(1, Relaxed);
        }
    }

    fn details(&self) -> std::sync::MutexGuard<'_, Details> {
        self.details.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hashes per second over 1 min, 15 min, 1 h.
    pub fn hashrates(&self, now: Instant) -> [f64; 3] {
        self.details().rate.rates(now)
    }

    pub fn view(&self, now: Instant) -> MinerView {
        let d = self.details();
        let [h1, h15, h60] = d.rate.rates(now);
        let last = self.last_share_ms.load(Relaxed);
        MinerView {
            id: self.id,
            worker: d.workers.first().map(|w| w.to_string()),
            workers: d.workers.iter().map(|w| w.to_string()).collect(),
            ip: self.peer.ip().to_string(),
            agent: d.agent.clone(),
            difficulty: f64::from_bits(self.difficulty.load(Relaxed)),
            hashrate_1m: h1,
            hashrate_15m: h15,
            hashrate_1h: h60,
            accepted: self.accepted.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            stale: self.stale.load(Relaxed),
            last_share: (last > 0).then_some(last / 1000),
            connected_since: unix_ms(self.connected_at) / 1000,
            power_state: "running".into(),
        }
    }

    pub fn workers(&self) -> Vec<Arc<str>> {
        self.details().workers.clone()
    }

    /// Ask this miner's session to close. Kept until the session looks, if it is busy.
    pub fn ask_to_close(&self) {
        self.close_asked.store(true, Release);
        self.close_waker.wake();
    }

    /// Ready once [`MinerEntry::ask_to_close`] was called; the session polls it in its loop.
    pub fn poll_close_requested(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.close_asked.load(Acquire) {
            return Poll::Ready(());
        }
        // Registered before looking again, so an ask between the two loads still wakes us.
        self.close_waker.register(cx.waker());
        if self.close_asked.load(Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn is_withheld_by(&self, withholding: &Withholding) -> bool {
        let details = self.details();
        withholding.is_withheld(self.peer.ip(), &details.workers)
    }
}

/// Closes the sessions of miners whose work gets withheld, whenever the withheld set grows
/// (releases need nothing from live sessions), and every session at `shutdown`. One task for
/// the site instead of a watch per session, and a session waits on its entry alone rather than
/// on its entry and the shutdown token (each waiter is ~70 bytes of every idle miner's task).
///
/// A session registered after the sweep below sees the token cancelled when it checks it, just
/// after registering ([`MinerRegistry::register`] then `is_cancelled`), so none is missed.
pub async fn close_withheld_sessions(
    withholding: Arc<Withholding>,
    miners: Arc<MinerRegistry>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut changed = withholding.subscribe();
    loop {
        let closed = tokio::select! {
            r = changed.changed() => r.is_err(),
            _ = shutdown.cancelled() => true,
        };
        if closed {
            for m in miners.all() {
                m.ask_to_close();
            }
            return;
        }
        for m in miners.all() {
            if m.is_withheld_by(&withholding) {
                m.ask_to_close();
            }
        }
    }
}

/// Every connected miner.
#[derive(Debug, Default)]
pub struct MinerRegistry {
    next_id: AtomicU64,
    miners: Mutex<HashMap<u64, Arc<MinerEntry>>>,
}

impl MinerRegistry {
    /// A new miner connected; the returned guard removes it when dropped.
    pub fn register(self: &Arc<Self>, peer: SocketAddr) -> Registered {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let entry = Arc::new(MinerEntry {
            id,
            peer,
            connected_at: SystemTime::now(),
            details: Mutex::default(),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            difficulty: AtomicU64::new(0),
            last_share_ms: AtomicU64::new(0),
            close_asked: AtomicBool::new(false),
            close_waker: AtomicWaker::new(),
        });
        self.lock().insert(id, entry.clone());
        Registered {
            registry: self.clone(),
            entry,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<MinerEntry>>> {
        self.miners.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn all(&self) -> Vec<Arc<MinerEntry>> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by_key(|m| m.id);
        v
    }

    pub fn get(&self, id: u64) -> Option<Arc<MinerEntry>> {
        self.lock().get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The site's hashrate over each window: the sum over connected miners.
    pub fn total_hashrates(&self) -> [f64; 3] {
        let now = Instant::now();
        self.all().iter().fold([0.0; 3], |acc, m| {
            let r = m.hashrates(now);
            [acc[0] + r[0], acc[1] + r[1], acc[2] + r[2]]
        })
    }
}

/// A session's registration; dropping it (the session ended) removes the miner.
pub struct Registered {
    registry: Arc<MinerRegistry>,
    pub entry: Arc<MinerEntry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.entry.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_steady_share_rate_converges_to_its_hashrate() {
        // One share of difficulty 1 (2^32 hashes) every second: 4.29 GH/s.
        let mut r = DecayingRate::default();
        let t0 = Instant::now();
        // Five hours: even the hour's average has converged (1 − e⁻⁵ > 99 %).
        for s in 0..18_000 {
            r.add(4_294_967_296.0, t0 + Duration::from_secs(s));
        }
        let rates = r.rates(t0 + Duration::from_secs(18_000));
        for (rate, w) in rates.iter().zip(WINDOWS_SECS) {
            let err = (rate - 4_294_967_296.0).abs() / 4_294_967_296.0;
            assert!(err < 0.02 + 1.0 / w, "window {w}: {rate:e}");
        }
        // Nothing more for 5 minutes: the 1-minute average has all but vanished, the hour's has
        // not.
        let later = r.rates(t0 + Duration::from_secs(18_300));
        assert!(later[0] < 0.01 * rates[0]);
        assert!(later[2] > 0.9 * rates[2]);
    }

    #[test]
    fn registration_lasts_as_long_as_the_session() {
        let reg = Arc::new(MinerRegistry::default());
        let a = reg.register("10.0.0.1:4000".parse().unwrap());
        let b = reg.register("10.0.0.2:4000".parse().unwrap());
        a.entry.on_accepted(1.0);
        assert_eq!(reg.len(), 2);
        assert_eq!(reg.get(a.entry.id).unwrap().accepted.load(Relaxed), 1);
        drop(a);
        assert_eq!(reg.all().len(), 1);
        assert_eq!(reg.all()[0].id, b.entry.id);
    }
}
