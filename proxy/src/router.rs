//! Failover: which pool new and reconnecting upstream connections use.
//!
//! Pools are tried in config order. When a channel cannot reach the active pool, the router
//! moves on to the next one; when every pool failed in a row, channels back off exponentially
//! (with jitter, so a site's connections do not stampede a recovering pool). While on a backup,
//! a probe checks the higher-priority pools and moves traffic back as soon as one completes a
//! full handshake.

use crate::config::{Config, FailoverConfig, UpstreamConfig};
use crate::stats::{bump, PoolCounters, ProxyStats};
use crate::upstream::UpstreamConn;
use rand::Rng;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct Router {
    pools: Vec<UpstreamConfig>,
    counters: Vec<PoolCounters>,
    active: watch::Sender<usize>,
    /// An operator chose the active pool: no automatic failback until it fails or is unpinned.
    pinned: AtomicBool,
    stats: Arc<ProxyStats>,
}

impl Router {
    pub fn new(pools: Vec<UpstreamConfig>, stats: Arc<ProxyStats>) -> Router {
        let (active, _) = watch::channel(0);
        Router {
            counters: pools.iter().map(|_| PoolCounters::default()).collect(),
            pools,
            active,
            pinned: AtomicBool::new(false),
            stats,
        }
    }

    pub fn active(&self) -> usize {
        *self.active.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<usize> {
        self.active.subscribe()
    }

    pub fn pool(&self, index: usize) -> &UpstreamConfig {
        &self.pools[index]
    }

    pub fn pool_count(&self) -> usize {
        self.pools.len()
    }

    pub fn counters(&self, pool: usize) -> &PoolCounters {
        &self.counters[pool]
    }

    pub fn is_pinned(&self) -> bool {
        self.pinned.load(Relaxed)
    }

    /// An operator's choice: move every channel to `pool` (make before break) and stay there
    /// until it fails or [`Router::unpin`] is called.
    pub fn pin(&self, pool: usize) -> bool {
        if pool >= self.pools.len() {
            return false;
        }
        self.pinned.store(true, Relaxed);
        if self
            .active
            .send_if_modified(|a| std::mem::replace(a, pool) != pool)
        {
            self.stats.active_pool.store(pool as u64, Relaxed);
            bump(&self.stats.pool_switches);
            tracing::info!(to = %self.pools[pool].label(), "operator switched the upstream pool");
        }
        true
    }

    /// Back to automatic failover (the failback probe returns to the best pool that answers).
    pub fn unpin(&self) {
        self.pinned.store(false, Relaxed);
    }

    /// A channel could not reach (or lost) `pool`. If it is still the active one, move on.
    pub fn report_failure(&self, pool: usize) {
        let n = self.pools.len();
        let moved = self.active.send_if_modified(|a| {
            if *a == pool && n > 1 {
                *a = (pool + 1) % n;
                true
            } else {
                false
            }
        });
        if moved {
            self.pinned.store(false, Relaxed);
            let next = self.active();
            self.stats.active_pool.store(next as u64, Relaxed);
            bump(&self.stats.pool_switches);
            tracing::warn!(
                from = %self.pools[pool].label(),
                to = %self.pools[next].label(),
                "upstream pool unreachable; failing over"
            );
        }
    }

    /// Move traffic to `pool` (a higher-priority pool answered the probe).
    pub fn fail_back(&self, pool: usize) {
        if self
            .active
            .send_if_modified(|a| std::mem::replace(a, pool) != pool)
        {
            self.stats.active_pool.store(pool as u64, Relaxed);
            bump(&self.stats.pool_switches);
            tracing::info!(to = %self.pools[pool].label(), "higher-priority pool is back; returning to it");
        }
    }
}

/// Capped exponential backoff with jitter.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(cfg: &FailoverConfig) -> Backoff {
        Backoff {
            initial: Duration::from_millis(cfg.retry_initial_ms),
            max: Duration::from_millis(cfg.retry_max_ms),
            attempt: 0,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // Full range [base/2, base]: spreads reconnects while keeping the cap meaningful.
        let half = base / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// While a backup pool is active, probe the better ones and fail back when one answers.
pub async fn run_failback_probe(
    router: Arc<Router>,
    config: Arc<Config>,
    shutdown: CancellationToken,
) {
    let period = Duration::from_millis(config.failover.failback_probe_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.cancelled() => return,
        }
        if router.is_pinned() {
            continue;
        }
        let active = router.active();
        for better in 0..active {
            let pool = router.pool(better).clone();
            match UpstreamConn::open(&pool, &config).await {
                Ok(_) => {
                    router.fail_back(better);
                    break;
                }
                Err(e) => {
                    tracing::debug!(pool = %pool.label(), error = %e, "failback probe: still down")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(n: usize) -> Vec<UpstreamConfig> {
        (0..n)
            .map(|i| UpstreamConfig {
                url: format!("127.0.0.1:{}", 1000 + i),
                user: "u".into(),
                password: "x".into(),
                name: None,
            })
            .collect()
    }

    #[test]
    fn failure_of_the_active_pool_moves_on_once() {
        let r = Router::new(pools(3), Arc::default());
        r.report_failure(0);
        assert_eq!(r.active(), 1);
        r.report_failure(0); // a second channel reporting the same failure does not skip pool 1
        assert_eq!(r.active(), 1);
        r.report_failure(1);
        r.report_failure(2);
        assert_eq!(r.active(), 0, "wraps around");
        r.fail_back(0);
        assert_eq!(r.stats.pool_switches.load(Relaxed), 3);
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let mut b = Backoff::new(&FailoverConfig {
            retry_initial_ms: 100,
            retry_max_ms: 1000,
            ..FailoverConfig::default()
        });
        let d: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert!((50..=100).contains(&d[0]), "{d:?}");
        assert!((100..=200).contains(&d[1]), "{d:?}");
        assert!(d[7] <= 1000 && d[7] >= 500, "{d:?}");
        b.reset();
        assert!(b.next_delay().as_millis() <= 100);
    }
}
