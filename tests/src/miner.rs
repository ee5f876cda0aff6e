//! [`SimMiner`]: a Stratum V1 miner that really hashes, at a throttled rate.
//!
//! It behaves like mining firmware towards the proxy under test: handshake variants
//! (BIP310 version rolling, the four `mining.subscribe` shapes, authorize before or after
//! subscribe, extranonce subscription, difficulty suggestion), job switching, extranonce and
//! version-mask changes, `client.reconnect`, and reconnecting with a short backoff when the
//! connection drops. Every share it submits really meets the difficulty it was given, so a
//! reject at the pool is the proxy's fault.
//!
//! The protocol of one connection is in `session`, the hashing in `work`.

mod session;
mod stats;
pub mod work;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

pub use stats::MinerStats;

/// The `mining.subscribe` params a miner sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeStyle {
    /// `[]`
    Empty,
    /// `["<agent>"]`
    Agent,
    /// `["<agent>", null]`
    AgentNull,
    /// `["<agent>", "<session id>"]`: the previous subscription id when reconnecting, like
    /// firmware trying to resume its session.
    AgentSession,
}

/// Miner settings. Build with [`MinerConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct MinerConfig {
    /// Where to connect (the proxy, or a pool directly).
    pub pool: SocketAddr,
    /// Worker name for authorize and submit.
    pub worker: String,
    /// Password sent with authorize.
    pub password: String,
    /// Agent string for subscribe and `client.get_version`.
    pub user_agent: String,
    pub subscribe_style: SubscribeStyle,
    /// Send `mining.configure` first, roll version bits inside the granted mask and send the
    /// 6th submit param.
    pub version_rolling: bool,
    /// Send `mining.extranonce.subscribe` (then set_extranonce is expected instead of a
    /// reconnect when the proxy's upstream changes).
    pub extranonce_subscribe: bool,
    /// Send authorize before subscribe (some firmware does).
    pub authorize_before_subscribe: bool,
    /// Send `mining.suggest_difficulty` with this value.
    pub suggest_difficulty: Option<f64>,
    /// Maximum hashes per second; 0 = connect but never hash.
    pub hashrate: u64,
    /// Stop searching after this many submitted shares.
    pub max_shares: Option<u64>,
    /// Hash only while this says so (an ASIC paused through its firmware API stays connected
    /// but stops hashing); `None` = always.
    pub power: Option<PowerSwitch>,
}

/// Whether a simulated miner's hash boards are on, asked before every chunk of hashing.
#[derive(Clone)]
pub struct PowerSwitch(Arc<dyn Fn() -> bool + Send + Sync>);

impl PowerSwitch {
    pub fn new(is_on: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        PowerSwitch(Arc::new(is_on))
    }

    pub fn is_on(&self) -> bool {
        (self.0)()
    }
}

impl std::fmt::Debug for PowerSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PowerSwitch(on: {})", self.is_on())
    }
}

impl MinerConfig {
    /// Defaults: agent-style subscribe, no version rolling, no extranonce subscription,
    /// subscribe then authorize, no suggestion, 50 000 H/s, unlimited shares.
    pub fn new(pool: SocketAddr, worker: impl Into<String>) -> Self {
        Self {
            pool,
            worker: worker.into(),
            password: "x".into(),
            user_agent: "blgv-sim/1.0".into(),
            subscribe_style: SubscribeStyle::Agent,
            version_rolling: false,
            extranonce_subscribe: false,
            authorize_before_subscribe: false,
            suggest_difficulty: None,
            hashrate: 50_000,
            max_shares: None,
            power: None,
        }
    }
}

/// State that outlives a TCP connection.
struct Core {
    cfg: MinerConfig,
    stats: Arc<Mutex<MinerStats>>,
    /// Where the next connection goes (changed by `client.reconnect` with a host).
    target: SocketAddr,
    /// Extranonce2 counter. Never reset, so this miner never builds the same coinbase twice
    /// and never submits a duplicate share, across jobs and reconnects.
    extranonce2_counter: u64,
    /// Shares submitted, for `max_shares`.
    shares_sent: u64,
    /// The last subscription id, offered by [`SubscribeStyle::AgentSession`].
    last_session_id: Option<String>,
}

impl Core {
    fn update(&self, f: impl FnOnce(&mut MinerStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Whether `max_shares` still allows submitting.
    fn share_budget_left(&self) -> bool {
        match self.cfg.max_shares {
            Some(max) => self.shares_sent < max,
            None => true,
        }
    }

    /// The next extranonce2: the counter, big-endian, truncated or zero-padded to `size`.
    fn next_extranonce2(&mut self, size: usize) -> Vec<u8> {
        let n = self.extranonce2_counter;
        self.extranonce2_counter = self.extranonce2_counter.wrapping_add(1);
        let be = n.to_be_bytes();
        let mut out = vec![0u8; size];
        let k = size.min(8);
        out[size - k..].copy_from_slice(&be[8 - k..]);
        out
    }
}

/// A running simulated miner. Dropping it stops the task.
pub struct SimMiner {
    worker: String,
    stats: Arc<Mutex<MinerStats>>,
    task: JoinHandle<()>,
}

impl SimMiner {
    /// Starts the miner on the current tokio runtime.
    pub fn spawn(cfg: MinerConfig) -> SimMiner {
        let stats = Arc::new(Mutex::new(MinerStats::default()));
        let core = Core {
            target: cfg.pool,
            cfg: cfg.clone(),
            stats: stats.clone(),
            extranonce2_counter: 0,
            shares_sent: 0,
            last_session_id: None,
        };
        SimMiner {
            worker: cfg.worker,
            stats,
            task: tokio::spawn(run(core)),
        }
    }

    /// The worker name.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MinerStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the miner and waits until its connection is closed.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connected = false;
    }
}

impl Drop for SimMiner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Connect, run a session, and reconnect forever, like firmware: 100 ms after a lost
/// connection, doubling up to 1 s while connects fail (with ±20% jitter so a crowd of miners
/// doesn't reconnect in lockstep).
async fn run(mut core: Core) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let connect = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(core.target));
        match connect.await {
            Ok(Ok(stream)) => {
                backoff = BACKOFF_MIN;
                core.update(|st| {
                    st.tcp_connects += 1;
                    st.connected = true;
                });
                let end = session::run(&mut core, stream).await;
                core.update(|st| st.connected = false);
                match end {
                    session::End::Reconnect { addr, wait } => {
                        tracing::debug!(?addr, ?wait, "miner: reconnect requested");
                        if let Some(addr) = addr {
                            core.target = addr;
                        }
                        tokio::time::sleep(wait).await;
                    }
                    session::End::Lost => {
                        tracing::debug!(worker = %core.cfg.worker, "miner: connection lost");
                        tokio::time::sleep(jitter(backoff)).await;
                    }
                }
            }
            Ok(Err(_)) | Err(_) => {
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extranonce2_counter_fits_any_size() {
        let mut core = Core {
            cfg: MinerConfig::new(([127, 0, 0, 1], 1).into(), "w"),
            stats: Default::default(),
            target: ([127, 0, 0, 1], 1).into(),
            extranonce2_counter: 0x0102_0304_0506,
            shares_sent: 0,
            last_session_id: None,
        };
        assert_eq!(core.next_extranonce2(4), vec![3, 4, 5, 6]);
        assert_eq!(core.next_extranonce2(8), vec![0, 0, 1, 2, 3, 4, 5, 7]);
        assert_eq!(
            core.next_extranonce2(10),
            vec![0, 0, 0, 0, 1, 2, 3, 4, 5, 8]
        );
        assert_eq!(core.next_extranonce2(0), Vec::<u8>::new());
    }
}
