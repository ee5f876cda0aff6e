//! The fast upstream pool the proxy connects to during a load run.
//!
//! Same protocol as [`crate::pool::TestPool`] but built for throughput, and strict: every
//! forwarded share is rebuilt (coinbase → merkle root → header → SHA-256d) and checked against
//! its job, the connection's extranonce1, the granted version mask, the ntime window, duplicates
//! and the upstream target. The first shares are cross-checked with the rust-bitcoin path of
//! [`crate::pool::validate`]. Any invalid forward is recorded; the harness fails the run on one.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::jsonrpc::{self, Incoming, ERR_DUPLICATE, ERR_JOB_NOT_FOUND, ERR_LOW_DIFFICULTY};
use crate::jsonrpc::{ERR_OTHER, ERR_UNAUTHORIZED};
use crate::line_reader::{Line, LineReader};
use crate::pool::validate::{build_share, parse_submit, Reject, ShareRules, SubmitParams};
use crate::pool::Job;
use crate::share_math::{
    difficulty_to_target, hash_meets_target_le, merkle_root, parse_u32_hex8, rolled_version,
    sha256d,
};

/// Jobs remembered; a share for an older one is an invalid forward (the proxy should have
/// answered it stale).
const JOB_WINDOW: usize = 64;
/// Shares also validated by the slow rust-bitcoin path, to pin the fast path to it.
const CROSS_CHECKS: u64 = 64;
const EXTRANONCE2_SIZE: usize = 8;
const NTIME_MAX_AHEAD: u32 = 7200;
const VERSION_MASK: u32 = 0x1fff_e000;
const INVALID_RECORDED: usize = 10;

struct JobEntry {
    job: Arc<Job>,
    seen: HashSet<[u8; 32]>,
}

struct Book {
    jobs: VecDeque<JobEntry>,
    next_id: u64,
    height: u32,
    outboxes: Vec<mpsc::UnboundedSender<Arc<str>>>,
}

/// Counters of the upstream pool.
#[derive(Default)]
pub struct UpstreamCounters {
    pub connections: AtomicU64,
    pub submits: AtomicU64,
    pub accepted: AtomicU64,
    pub invalid: AtomicU64,
}

struct Shared {
    /// The harness's clock origin (shared with the miners).
    epoch: Instant,
    /// When a connection last started writing a broadcast job (ns since `epoch`).
    last_broadcast_ns: AtomicU64,
    difficulty: f64,
    target_le: [u8; 32],
    book: Mutex<Book>,
    counters: UpstreamCounters,
    invalid: Mutex<Vec<String>>,
    cross_checked: AtomicU64,
}

impl Shared {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A job broadcast: its id and when it was handed to the connections.
#[derive(Debug, Clone, Copy)]
pub struct Announce {
    pub job_id: u64,
    pub at: Instant,
}

pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

static NEXT_EN1: AtomicU32 = AtomicU32::new(0x4c4f_0001);

impl Upstream {
    /// Listens on 127.0.0.1:0; shares are judged at `difficulty`. `epoch` is the clock origin
    /// of [`Upstream::last_broadcast_ns`].
    pub async fn start(difficulty: f64, epoch: Instant) -> anyhow::Result<Upstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            epoch,
            last_broadcast_ns: AtomicU64::new(0),
            difficulty,
            target_le: difficulty_to_target(difficulty).to_le_bytes(),
            book: Mutex::new(Book {
                jobs: VecDeque::new(),
                next_id: 1,
                height: 840_000,
                outboxes: Vec::new(),
            }),
            counters: UpstreamCounters::default(),
            invalid: Mutex::new(Vec::new()),
            cross_checked: AtomicU64::new(0),
        });
        new_job(&shared, true);
        let accept = tokio::spawn({
            let shared = shared.clone();
            async move {
                loop {
                    if let Ok((stream, _)) = listener.accept().await {
                        tokio::spawn(serve(shared.clone(), stream));
                    }
                }
            }
        });
        Ok(Upstream {
            addr,
            shared,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn difficulty(&self) -> f64 {
        self.shared.difficulty
    }

    /// The id the next [`Upstream::new_job`] will get.
    pub fn next_job_id(&self) -> u64 {
        self.shared.book().next_id
    }

    /// Broadcasts a new job to every connection.
    pub fn new_job(&self, clean: bool) -> Announce {
        new_job(&self.shared, clean)
    }

    /// When the job broadcast last went into the proxy's socket (ns since the epoch).
    pub fn last_broadcast_ns(&self) -> u64 {
        self.shared.last_broadcast_ns.load(Relaxed)
    }

    pub fn counters(&self) -> &UpstreamCounters {
        &self.shared.counters
    }

    /// Descriptions of the first invalid forwards.
    pub fn invalid_samples(&self) -> Vec<String> {
        self.shared
            .invalid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn new_job(shared: &Shared, clean: bool) -> Announce {
    let mut book = shared.book();
    let id = book.next_id;
    book.next_id += 1;
    book.height += 1;
    let mut job = Job::generate(format!("{id:x}"), book.height, 4 + EXTRANONCE2_SIZE, 2);
    // The job's number in the first 8 bytes of its (random) prevhash: a proxy passes the
    // prevhash through untouched but may rename the job (para does), so the fan-out probe
    // recognises a job by this.
    job.prevhash[..8].copy_from_slice(&id.to_le_bytes());
    let line: Arc<str> = jsonrpc::notification("mining.notify", job.notify_params(clean)).into();
    book.jobs.push_back(JobEntry {
        job: Arc::new(job),
        seen: HashSet::new(),
    });
    while book.jobs.len() > JOB_WINDOW {
        book.jobs.pop_front();
    }
    let at = Instant::now();
    book.outboxes.retain(|tx| tx.send(line.clone()).is_ok());
    Announce { job_id: id, at }
}

struct Conn {
    shared: Arc<Shared>,
    en1: [u8; 4],
    subscribed: bool,
    user: Option<String>,
    version_mask: u32,
    coinbase: Vec<u8>,
}

async fn serve(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    shared.counters.connections.fetch_add(1, Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel::<Arc<str>>();
    let mut conn = Conn {
        shared: shared.clone(),
        en1: NEXT_EN1.fetch_add(1, Relaxed).to_be_bytes(),
        subscribed: false,
        user: None,
        version_mask: 0,
        coinbase: Vec::with_capacity(512),
    };
    let mut outbox = Some(tx);
    let (rd, mut wr) = stream.into_split();
    let mut lines = LineReader::new(rd);
    let mut out = String::new();
    loop {
        let mut broadcast = false;
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(Line::Text(t))) => conn.handle(&t, &mut out, &mut outbox),
                Ok(Some(Line::TooLong)) => conn.invalid(ERR_OTHER, "line too long", "", &mut out, &Value::Null),
                Ok(None) | Err(_) => break,
            },
            Some(msg) = rx.recv() => {
                out.push_str(&msg);
                broadcast = true;
            }
        }
        if broadcast {
            let ns = shared.epoch.elapsed().as_nanos() as u64;
            shared.last_broadcast_ns.store(ns, Relaxed);
        }
        if !out.is_empty() {
            if wr.write_all(out.as_bytes()).await.is_err() {
                break;
            }
            out.clear();
        }
    }
}

impl Conn {
    fn handle(
        &mut self,
        text: &str,
        out: &mut String,
        outbox: &mut Option<mpsc::UnboundedSender<Arc<str>>>,
    ) {
        let Incoming::Request { id, method, params } = jsonrpc::parse_line(text) else {
            return;
        };
        match method.as_str() {
            "mining.configure" => {
                let asked = params
                    .get(1)
                    .and_then(|o| o.get("version-rolling.mask"))
                    .and_then(Value::as_str)
                    .and_then(|s| u32::from_str_radix(s, 16).ok())
                    .unwrap_or(u32::MAX);
                self.version_mask = asked & VERSION_MASK;
                out.push_str(&jsonrpc::ok(
                    &id,
                    json!({"version-rolling": true, "version-rolling.mask": format!("{:08x}", self.version_mask)}),
                ));
            }
            "mining.subscribe" => {
                self.subscribed = true;
                out.push_str(&jsonrpc::ok(
                    &id,
                    json!([
                        [["mining.set_difficulty", "1"], ["mining.notify", "1"]],
                        hex::encode(self.en1),
                        EXTRANONCE2_SIZE
                    ]),
                ));
                out.push_str(&jsonrpc::notification(
                    "mining.set_difficulty",
                    json!([self.shared.difficulty]),
                ));
                let mut book = self.shared.book();
                let job = book.jobs.back().expect("always a job").job.clone();
                out.push_str(&jsonrpc::notification(
                    "mining.notify",
                    job.notify_params(true),
                ));
                if let Some(tx) = outbox.take() {
                    book.outboxes.push(tx);
                }
            }
            "mining.authorize" => {
                self.user = params.get(0).and_then(Value::as_str).map(str::to_string);
                out.push_str(&jsonrpc::ok(&id, json!(true)));
            }
            "mining.submit" => {
                self.shared.counters.submits.fetch_add(1, Relaxed);
                match self.check(&params) {
                    Ok(()) => {
                        self.shared.counters.accepted.fetch_add(1, Relaxed);
                        out.push_str(&jsonrpc::ok(&id, json!(true)));
                    }
                    Err(r) => self.invalid(r.code, &r.reason, text, out, &id),
                }
            }
            _ if id.is_null() => {}
            _ => out.push_str(&jsonrpc::ok(&id, json!(true))),
        }
    }

    fn invalid(&self, code: i64, reason: &str, line: &str, out: &mut String, id: &Value) {
        self.shared.counters.invalid.fetch_add(1, Relaxed);
        let mut inv = self
            .shared
            .invalid
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if inv.len() < INVALID_RECORDED {
            inv.push(format!("code {code}: {reason}; line {line}"));
        }
        out.push_str(&jsonrpc::error(id, code, reason));
    }

    fn check(&mut self, params: &Value) -> Result<(), Reject> {
        if !self.subscribed {
            return Err(Reject::new(25, "not subscribed"));
        }
        let p = parse_submit(params)?;
        if self.user.as_deref() != Some(p.worker.as_str()) {
            return Err(Reject::new(
                ERR_UNAUTHORIZED,
                format!("worker {:?} not authorized", p.worker),
            ));
        }
        let job = {
            let book = self.shared.book();
            book.jobs
                .iter()
                .rev()
                .find(|e| e.job.id == p.job_id)
                .map(|e| e.job.clone())
        }
        .ok_or_else(|| Reject::new(ERR_JOB_NOT_FOUND, format!("job {:?} unknown", p.job_id)))?;
        let hash = self.fast_hash(&job, &p)?;
        if self.shared.cross_checked.fetch_add(1, Relaxed) < CROSS_CHECKS {
            let rules = ShareRules {
                extranonce1: &self.en1,
                extranonce2_size: EXTRANONCE2_SIZE,
                version_mask: self.version_mask,
                ntime_max_ahead_secs: NTIME_MAX_AHEAD,
            };
            let slow = build_share(&job, &rules, &p)?;
            use bitcoin::hashes::Hash;
            if slow.hash.to_byte_array() != hash {
                return Err(Reject::new(
                    ERR_OTHER,
                    "harness bug: fast and rust-bitcoin share hashes differ",
                ));
            }
        }
        if !hash_meets_target_le(&hash, &self.shared.target_le) {
            return Err(Reject::new(
                ERR_LOW_DIFFICULTY,
                format!(
                    "hash above the upstream target (difficulty {})",
                    self.shared.difficulty
                ),
            ));
        }
        let mut book = self.shared.book();
        let Some(entry) = book.jobs.iter_mut().find(|e| e.job.id == p.job_id) else {
            return Err(Reject::new(ERR_JOB_NOT_FOUND, "job expired"));
        };
        if !entry.seen.insert(hash) {
            return Err(Reject::new(ERR_DUPLICATE, "duplicate share"));
        }
        Ok(())
    }

    /// The header hash of the share, checking field shapes, ntime window and version bits.
    fn fast_hash(&mut self, job: &Job, p: &SubmitParams) -> Result<[u8; 32], Reject> {
        let bad = |why: String| Reject::new(ERR_OTHER, why);
        let mut en2 = [0u8; EXTRANONCE2_SIZE];
        hex::decode_to_slice(&p.extranonce2, &mut en2)
            .map_err(|e| bad(format!("extranonce2 {:?}: {e}", p.extranonce2)))?;
        let ntime = parse_u32_hex8(&p.ntime).ok_or_else(|| bad(format!("ntime {:?}", p.ntime)))?;
        let nonce = parse_u32_hex8(&p.nonce).ok_or_else(|| bad(format!("nonce {:?}", p.nonce)))?;
        if ntime < job.ntime || ntime - job.ntime > NTIME_MAX_AHEAD {
            return Err(bad(format!("ntime {ntime:08x} outside the job's window")));
        }
        let bits = match &p.version_bits {
            None => 0,
            Some(v) => parse_u32_hex8(v).ok_or_else(|| bad(format!("version bits {v:?}")))?,
        };
        if bits & !self.version_mask != 0 {
            return Err(bad(format!(
                "version bits {bits:08x} outside the granted mask {:08x}",
                self.version_mask
            )));
        }
        let version = rolled_version(job.version, self.version_mask, bits);
        self.coinbase.clear();
        self.coinbase.extend_from_slice(&job.coinb1);
        self.coinbase.extend_from_slice(&self.en1);
        self.coinbase.extend_from_slice(&en2);
        self.coinbase.extend_from_slice(&job.coinb2);
        let root = merkle_root(sha256d(&self.coinbase), &job.merkle_branch);
        let mut header = [0u8; 80];
        header[..4].copy_from_slice(&version.to_le_bytes());
        header[4..36].copy_from_slice(&job.prevhash);
        header[36..68].copy_from_slice(&root);
        header[68..72].copy_from_slice(&ntime.to_le_bytes());
        header[72..76].copy_from_slice(&job.nbits.to_le_bytes());
        header[76..80].copy_from_slice(&nonce.to_le_bytes());
        Ok(sha256d(&header))
    }
}
