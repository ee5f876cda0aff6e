//! [`TestPool`]: an upstream Stratum V1 pool that referees every share.
//!
//! It plays the pool the proxy connects to. Every `mining.submit` is rebuilt into a block
//! header with rust-bitcoin and checked against the job, the connection's extranonce1, the
//! granted version mask and the difficulty, so the end-to-end tests can assert that the proxy
//! forwarded exactly the work its miners did, and nothing else.
//!
//! Jobs carry real coinbase transactions (see [`job`]); validation is in [`validate`]; the
//! per-connection protocol is in `conn`.

mod conn;
pub mod job;
mod stats;
pub mod validate;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpSocket;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::{JoinHandle, JoinSet};

pub use job::Job;
pub use stats::{InvalidShare, PoolStats, MAX_INVALID_RECORDED};

use crate::jsonrpc;

/// How many recent jobs the pool remembers; shares for older ones are stale (error 21).
pub const JOB_WINDOW: usize = 64;

/// Test pool settings. `Default` gives an 8-byte extranonce2, difficulty 1e-4, BIP310 mask
/// 0x1fffe000, no periodic jobs, a 2 h ntime window and a 2-entry merkle branch.
#[derive(Debug, Clone)]
pub struct TestPoolConfig {
    /// Extranonce2 size announced in `mining.subscribe` (extranonce1 is always 4 bytes).
    pub extranonce2_size: usize,
    /// Initial share difficulty (values below 1 are fine).
    pub difficulty: f64,
    /// Version bits the pool allows to roll; a client gets this ∩ what it asks. 0 refuses.
    pub version_mask: u32,
    /// When set, a new job (clean_jobs=false) is broadcast this often.
    pub job_interval: Option<Duration>,
    /// How far past the job's ntime a share's ntime may be.
    pub ntime_max_ahead_secs: u32,
    /// Number of (random) merkle branch entries in each job.
    pub merkle_branch_len: usize,
}

impl Default for TestPoolConfig {
    fn default() -> Self {
        Self {
            extranonce2_size: 8,
            difficulty: 1e-4,
            version_mask: 0x1fff_e000,
            job_interval: None,
            ntime_max_ahead_secs: 7200,
            merkle_branch_len: 2,
        }
    }
}

/// A job plus the difficulty that was in force when it was sent.
#[derive(Debug, Clone)]
struct JobEntry {
    job: Arc<Job>,
    difficulty: f64,
}

/// What makes two shares the same share (job id is the key of the map holding these).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ShareKey {
    en1: [u8; 4],
    en2: Vec<u8>,
    ntime: u32,
    nonce: u32,
    version: u32,
}

/// Mutable pool state, behind one mutex (never held across an await).
struct State {
    jobs: VecDeque<JobEntry>,
    difficulty: f64,
    next_job_id: u64,
    height: u32,
    stats: PoolStats,
    /// Shares seen, per job id still in the window.
    seen: HashMap<String, HashSet<ShareKey>>,
    txids: HashSet<[u8; 32]>,
    /// Broadcast channel of every open connection, by connection id.
    outboxes: HashMap<u64, UnboundedSender<Arc<str>>>,
}

/// State shared by the pool handle, the accept loop and the connection tasks.
struct Shared {
    cfg: TestPoolConfig,
    state: Mutex<State>,
    /// Connection tasks, so `stop` can abort them and close every socket.
    tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take the pool down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_tasks(&self) -> MutexGuard<'_, JoinSet<()>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a job, remembers it, and broadcasts its notify.
    fn new_job(&self, clean: bool) {
        let mut st = self.lock();
        let id = format!("{:x}", st.next_job_id);
        st.next_job_id += 1;
        st.height += 1;
        let job = Job::generate(
            id.clone(),
            st.height,
            4 + self.cfg.extranonce2_size,
            self.cfg.merkle_branch_len,
        );
        let line: Arc<str> =
            jsonrpc::notification("mining.notify", job.notify_params(clean)).into();
        let difficulty = st.difficulty;
        st.jobs.push_back(JobEntry {
            job: Arc::new(job),
            difficulty,
        });
        st.seen.insert(id.clone(), HashSet::new());
        while st.jobs.len() > JOB_WINDOW {
            if let Some(old) = st.jobs.pop_front() {
                st.seen.remove(&old.job.id);
            }
        }
        st.stats.jobs_created += 1;
        st.stats.current_job_id = id;
        broadcast(&mut st, line);
    }
}

fn broadcast(st: &mut State, line: Arc<str>) {
    st.outboxes.retain(|_, tx| tx.send(line.clone()).is_ok());
}

/// The test pool. Dropping it aborts its tasks; [`TestPool::stop`] also waits for them so
/// every socket is closed when it returns.
pub struct TestPool {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    ticker: Option<JoinHandle<()>>,
}

impl TestPool {
    /// Starts a pool on 127.0.0.1 with an OS-assigned port. Must be called inside a tokio
    /// runtime (it spawns tasks).
    pub fn start(cfg: TestPoolConfig) -> anyhow::Result<TestPool> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg)
    }

    /// Starts a pool on `addr`, with SO_REUSEADDR so a stopped pool can be restarted on its
    /// old port while old connections sit in TIME_WAIT.
    pub fn start_on(addr: SocketAddr, cfg: TestPoolConfig) -> anyhow::Result<TestPool> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        let addr = listener.local_addr()?;

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                difficulty: cfg.difficulty,
                next_job_id: 1,
                height: 800_000 + rand::random::<u16>() as u32,
                stats: PoolStats {
                    difficulty: cfg.difficulty,
                    ..PoolStats::default()
                },
                seen: HashMap::new(),
                txids: HashSet::new(),
                outboxes: HashMap::new(),
            }),
            tasks: Mutex::new(JoinSet::new()),
            cfg,
        });
        shared.new_job(true);

        let accept = tokio::spawn({
            let shared = shared.clone();
            async move {
                let mut next_conn: u64 = 1;
                loop {
                    match listener.accept().await {
                        Ok((stream, peer)) => {
                            tracing::debug!(%peer, "test pool: accepted");
                            let id = next_conn;
                            next_conn += 1;
                            let mut tasks = shared.lock_tasks();
                            while tasks.try_join_next().is_some() {}
                            tasks.spawn(conn::serve(shared.clone(), stream, id));
                        }
                        Err(e) => {
                            // E.g. EMFILE: back off instead of spinning.
                            tracing::debug!(error = %e, "test pool: accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
        });

        let ticker = shared.cfg.job_interval.map(|every| {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await; // the first tick is immediate
                loop {
                    tick.tick().await;
                    shared.new_job(false);
                }
            })
        });

        Ok(TestPool {
            addr,
            shared,
            accept,
            ticker,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration the pool runs with.
    pub fn config(&self) -> &TestPoolConfig {
        &self.shared.cfg
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PoolStats {
        self.shared.lock().stats.clone()
    }

    /// Broadcasts a new job to every subscribed connection.
    pub async fn new_job(&self, clean: bool) {
        self.shared.new_job(clean);
    }

    /// Sends `mining.set_difficulty` to every subscribed connection; jobs created from now on
    /// carry this difficulty.
    pub fn set_difficulty(&self, difficulty: f64) {
        let mut st = self.shared.lock();
        st.difficulty = difficulty;
        st.stats.difficulty = difficulty;
        let line: Arc<str> =
            jsonrpc::notification("mining.set_difficulty", json!([difficulty])).into();
        broadcast(&mut st, line);
    }

    /// Closes the listener and every client connection, and waits until they are gone, so
    /// clients see EOF/reset at once and the port can be reused by [`TestPool::start_on`].
    pub async fn stop(mut self) {
        self.accept.abort();
        let _ = (&mut self.accept).await;
        if let Some(t) = self.ticker.as_mut() {
            t.abort();
            let _ = t.await;
        }
        let mut tasks = std::mem::take(&mut *self.shared.lock_tasks());
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some(t) = &self.ticker {
            t.abort();
        }
        self.shared.lock_tasks().abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::validate::{build_share, parse_submit, ShareRules};
    use super::*;
    use bitcoin::pow::{CompactTarget, Target};
    use serde_json::Value;

    /// Read at run time: a missing shared/ fails this test with the path, not the whole build.
    fn vector() -> String {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/vectors/mainnet-block-702861-job.json"
        );
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e} (shared/ must sit beside the project root)"))
    }

    /// Mainnet block 702861 fed through the pool's own validation path: notify + extranonce1 +
    /// submit must rebuild the real header and hash, and the hash must meet the network target.
    #[test]
    fn mainnet_block_702861_validates() {
        let v: Value = serde_json::from_str(&vector()).unwrap();
        let (job, clean) = Job::from_notify_params(&v["notify"]).unwrap();
        assert!(clean);
        let en1 = hex::decode(v["extranonce1"].as_str().unwrap()).unwrap();
        let rules = ShareRules {
            extranonce1: &en1,
            extranonce2_size: v["extranonce2_size"].as_u64().unwrap() as usize,
            version_mask: 0,
            ntime_max_ahead_secs: 7200,
        };
        let submit = parse_submit(&v["submit"]).unwrap();
        let share = build_share(&job, &rules, &submit).unwrap();

        let header = bitcoin::consensus::encode::serialize(&share.header);
        assert_eq!(hex::encode(header), v["header_hex"].as_str().unwrap());
        assert_eq!(share.hash.to_string(), v["block_hash"].as_str().unwrap());

        let network = Target::from_compact(CompactTarget::from_consensus(job.nbits));
        assert_eq!(
            hex::encode(network.to_be_bytes()),
            v["network_target"].as_str().unwrap()
        );
        assert!(network.is_met_by(share.hash));
        // ... and through the difficulty path: this hash is worth difficulty ~5.76e15.
        assert!(crate::share_math::difficulty_to_target(5.7e15).is_met_by(share.hash));
        assert!(!crate::share_math::difficulty_to_target(5.8e15).is_met_by(share.hash));

        // The height push in the coinbase is where the README says.
        let height = v["height_push"].as_str().unwrap();
        assert!(hex::encode(&job.coinb1).ends_with(&format!("03{}", {
            let mut b = hex::decode(height).unwrap();
            b.reverse();
            hex::encode(b)
        })));

        // Tampering with anything the header covers breaks the proof of work.
        let mut other = submit.clone();
        other.nonce = "41dad6e4".into();
        let bad = build_share(&job, &rules, &other).unwrap();
        assert!(!network.is_met_by(bad.hash));
    }
}
