//! What every task of a running proxy shares.

use crate::channel::Channel;
use crate::config::Config;
use crate::ledger::Ledger;
use crate::link::Link;
use crate::registry::MinerRegistry;
use crate::router::Router;
use crate::stats::ProxyStats;
use crate::withhold::Withholding;
use blgv_stratum::Difficulty;
use blgv_stratum::VardiffRules;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct ProxyContext {
    pub config: Arc<Config>,
    pub router: Arc<Router>,
    pub stats: Arc<ProxyStats>,
    pub ledger: Ledger,
    pub vardiff: VardiffRules,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    /// Every connected miner, for the API and metrics.
    pub miners: Arc<MinerRegistry>,
    /// Miners whose work curtailment withholds (its last resort).
    pub withholding: Arc<Withholding>,
    /// `proxy.max_connections` and `proxy.max_connections_per_ip`, applied at accept.
    pub limiter: Arc<blgv_stratum::limits::ConnectionLimiter>,
    channels: Mutex<Vec<Arc<Channel>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("no upstream pool reachable yet; the proxy keeps trying, reconnect shortly")]
pub struct NoUpstream;

/// A miner's place: its channel, its index there, and the link it was assigned under.
pub struct Slot {
    pub channel: Arc<Channel>,
    pub index: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.channel.release(self.index);
    }
}

impl ProxyContext {
    pub fn new(
        config: Arc<Config>,
        stats: Arc<ProxyStats>,
        ledger: Ledger,
        shutdown: CancellationToken,
    ) -> Arc<ProxyContext> {
        let v = &config.vardiff;
        let vardiff = VardiffRules {
            min: Difficulty::new(v.min).expect("validated"),
            max: Difficulty::new(v.max).expect("validated"),
            target_shares_per_minute: v.target_shares_per_minute,
            retarget_interval: Duration::from_secs(v.retarget_secs),
        };
        let limiter = blgv_stratum::limits::ConnectionLimiter::new(
            config.proxy.max_connections,
            config.proxy.max_connections_per_ip,
        );
        Arc::new(ProxyContext {
            limiter,
            router: Arc::new(Router::new(config.upstreams.clone(), stats.clone())),
            config,
            stats,
            ledger,
            vardiff,
            shutdown,
            tasks: TaskTracker::new(),
            withholding: Arc::default(),
            miners: Arc::default(),
            channels: Mutex::new(Vec::new()),
        })
    }

    /// Find a free slot on a live channel, opening a new upstream connection when all are full.
    /// Waits (up to `proxy.subscribe_wait_ms`) while a channel is still connecting, so a burst of
    /// miners shares one new connection instead of opening one each.
    pub async fn assign_slot(self: &Arc<Self>) -> Result<(Slot, Arc<Link>), NoUpstream> {
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.config.proxy.subscribe_wait_ms);
        loop {
            let connecting = {
                let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
                for ch in channels.iter() {
                    if let Some(link) = ch.link() {
                        if let Some(index) = ch.try_allocate(&link) {
                            return Ok((
                                Slot {
                                    channel: ch.clone(),
                                    index,
                                },
                                link,
                            ));
                        }
                    }
                }
                match channels.iter().find(|c| c.link().is_none()) {
                    Some(c) => c.clone(),
                    None => {
                        let ch = Channel::spawn(channels.len() as u32, self.clone());
                        channels.push(ch.clone());
                        ch
                    }
                }
            };
            if tokio::time::timeout_at(deadline, connecting.wait_for_link())
                .await
                .is_err()
            {
                return Err(NoUpstream);
            }
        }
    }

    /// Miners per channel, for status and tests.
    pub fn channel_loads(&self) -> Vec<u32> {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| c.miners())
            .collect()
    }
}
