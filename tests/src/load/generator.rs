//! Simulated miners on real TCP: connect (spread over 127.0.0.x source addresses),
//! `mining.subscribe` + `mining.authorize`, follow difficulty and jobs, and submit precomputed
//! valid shares at a fixed total rate.
//!
//! One tokio task per connection only reads: it wakes when bytes arrive, parses them with a
//! per-thread scratch buffer and counts. Submits are written by a single pacing thread
//! ([`drive`]) straight into the sockets (`try_write`), a few at a time every `tick`, so the
//! generator costs two syscalls per share and no allocation. A submit's id is its send time
//! (ns since the fleet's epoch, offset by [`SUBMIT_ID_BASE`]), so the reader gets the
//! submit→reply latency from the reply alone.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::histogram::Histogram;
use super::process::CpuEdge;
use super::work::{find_solutions, HeaderTemplate, Solution};
use crate::pool::Job;
use crate::share_math::difficulty_to_target;

/// Submit ids are `SUBMIT_ID_BASE + send time in ns`; handshake ids are small.
pub const SUBMIT_ID_BASE: u64 = 1 << 40;
const ID_SUBSCRIBE: u64 = 1;
const ID_AUTHORIZE: u64 = 2;
const NOTES_KEPT: usize = 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Counters of the whole fleet.
#[derive(Default)]
pub struct FleetCounters {
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    pub ready: AtomicU64,
    pub handshake_failed: AtomicU64,
    pub closed: AtomicU64,
    /// Ready miners whose connection later ended.
    pub lost: AtomicU64,
    pub reconnect_requests: AtomicU64,
    pub submitted: AtomicU64,
    pub expected_forwards: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub write_blocked: AtomicU64,
    pub write_errors: AtomicU64,
    pub exhausted: AtomicU64,
}

/// When the miners saw a given job (the fan-out measurement).
pub struct FanoutProbe {
    job_id: AtomicU64,
    count: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

impl Default for FanoutProbe {
    fn default() -> Self {
        FanoutProbe {
            job_id: AtomicU64::new(u64::MAX),
            count: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
        }
    }
}

impl FanoutProbe {
    /// Start watching for `job_id` (before it is broadcast).
    pub fn arm(&self, job_id: u64) {
        self.count.store(0, Relaxed);
        self.first_ns.store(u64::MAX, Relaxed);
        self.last_ns.store(0, Relaxed);
        self.job_id.store(job_id, Relaxed);
    }

    /// (miners that got it, first arrival ns, last arrival ns)
    pub fn read(&self) -> (u64, u64, u64) {
        (
            self.count.load(Relaxed),
            self.first_ns.load(Relaxed),
            self.last_ns.load(Relaxed),
        )
    }

    fn seen(&self, job_id: u64, now_ns: u64) {
        if self.job_id.load(Relaxed) == job_id {
            self.first_ns.fetch_min(now_ns, Relaxed);
            self.last_ns.fetch_max(now_ns, Relaxed);
            self.count.fetch_add(1, Relaxed);
        }
    }
}

/// What a miner learned from the proxy.
#[derive(Debug, Clone, Default)]
pub struct MinerState {
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
    pub authorized: bool,
    pub difficulty: Option<f64>,
    pub job: Option<Arc<Job>>,
    pub ready: bool,
}

pub struct Miner {
    pub index: usize,
    pub worker: String,
    stream: OnceLock<TcpStream>,
    state: Mutex<MinerState>,
}

impl Miner {
    pub fn state(&self) -> MutexGuard<'_, MinerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Fleet {
    epoch: Instant,
    pub miners: Vec<Arc<Miner>>,
    pub counters: FleetCounters,
    /// Submit→reply latency (ns) of accepted shares sent inside the measurement window.
    pub latency: Histogram,
    measure_from: AtomicU64,
    measure_until: AtomicU64,
    pub probe: FanoutProbe,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    notes: Mutex<Vec<String>>,
}

impl Fleet {
    /// `miners` miners authorizing as `{worker_prefix}.m{index}`.
    pub fn new(epoch: Instant, miners: usize, worker_prefix: &str) -> Arc<Fleet> {
        Arc::new(Fleet {
            epoch,
            miners: (0..miners)
                .map(|index| {
                    Arc::new(Miner {
                        index,
                        worker: format!("{worker_prefix}.m{index}"),
                        stream: OnceLock::new(),
                        state: Mutex::new(MinerState::default()),
                    })
                })
                .collect(),
            counters: FleetCounters::default(),
            latency: Histogram::default(),
            measure_from: AtomicU64::new(u64::MAX),
            measure_until: AtomicU64::new(u64::MAX),
            probe: FanoutProbe::default(),
            jobs: Mutex::new(HashMap::new()),
            notes: Mutex::new(Vec::new()),
        })
    }

    pub fn ns_since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    pub fn now_ns(&self) -> u64 {
        self.ns_since_epoch(Instant::now())
    }

    /// When data stamped `stamp` (CLOCK_REALTIME ns, from the kernel) arrived, in ns since the
    /// epoch; now when there is no stamp. The two clocks are related at the moment of the call,
    /// so their drift does not matter.
    pub fn arrival_ns(&self, stamp: Option<u64>) -> u64 {
        let mono = self.now_ns();
        match stamp {
            Some(ts) => mono.saturating_sub(realtime_ns().saturating_sub(ts)),
            None => mono,
        }
    }

    /// Things that should not happen in a clean run (first few kept).
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn note(&self, what: String) {
        let mut n = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        if n.len() < NOTES_KEPT {
            n.push(what);
        }
    }

    /// Miners whose connection is still open.
    pub fn open(&self) -> u64 {
        self.counters
            .connected
            .load(Relaxed)
            .saturating_sub(self.counters.closed.load(Relaxed))
    }

    fn job(&self, id: &str, line: &[u8]) -> Option<Arc<Job>> {
        if let Some(j) = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Some(j.clone());
        }
        let v: Value = serde_json::from_slice(line).ok()?;
        let (job, _) = Job::from_notify_params(&v["params"]).ok()?;
        let job = Arc::new(job);
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), job.clone());
        Some(job)
    }
}

/// How the fleet connects.
#[derive(Debug, Clone)]
pub struct ConnectPlan {
    pub proxy: SocketAddr,
    /// Client connections are bound round-robin to 127.0.0.2, 127.0.0.3, …
    pub source_ips: usize,
    /// Handshakes in flight at once.
    pub concurrency: usize,
}

fn source_ip(i: usize, n: usize) -> IpAddr {
    let k = i % n.max(1);
    IpAddr::V4(Ipv4Addr::new(127, 0, (k / 250) as u8, 2 + (k % 250) as u8))
}

/// Starts one task per miner; returns at once. Watch `counters.ready` / `connect_failed` /
/// `handshake_failed`.
pub fn connect_all(fleet: &Arc<Fleet>, plan: &ConnectPlan) {
    let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let fleet2 = fleet.clone();
    let plan = plan.clone();
    tokio::spawn(async move {
        for m in fleet2.miners.clone() {
            let Ok(permit) = gate.clone().acquire_owned().await else {
                return;
            };
            let src = source_ip(m.index, plan.source_ips);
            tokio::spawn(miner_task(fleet2.clone(), m, src, plan.proxy, permit));
        }
    });
}

async fn connect(src: IpAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let mut last = None;
    for attempt in 0..3 {
        let s = TcpSocket::new_v4()?;
        s.set_reuseaddr(true)?;
        s.bind(SocketAddr::new(src, 0))?;
        match tokio::time::timeout(Duration::from_secs(10), s.connect(dst)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(std::io::Error::new(ErrorKind::TimedOut, "connect timeout")),
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("connect failed")))
}

/// Ask the kernel to stamp received data (SO_TIMESTAMPNS): on loopback the stamp is taken
/// while the proxy's write() runs, so latencies do not include this harness's own scheduling.
fn enable_rx_timestamps(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `on` for the given length.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Non-blocking recvmsg returning the bytes read and the kernel receive stamp
/// (CLOCK_REALTIME ns) of the newest data, when there is one.
fn recv_stamped(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<u64>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; every pointer in it refers to a live local buffer of the
    // stated length, and the cmsg walk stays inside `control` (CMSG_* macros).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut stamp = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n as usize, stamp))
    }
}

fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 64 * 1024]);
}

async fn miner_task(
    fleet: Arc<Fleet>,
    m: Arc<Miner>,
    src: IpAddr,
    dst: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let mut stream = match connect(src, dst).await {
        Ok(s) => s,
        Err(e) => {
            fleet.counters.connect_failed.fetch_add(1, Relaxed);
            fleet.note(format!("miner {} connect from {src}: {e}", m.index));
            return;
        }
    };
    fleet.counters.connected.fetch_add(1, Relaxed);
    let _ = stream.set_nodelay(true);
    enable_rx_timestamps(stream.as_raw_fd());
    let hello = format!(
        "{{\"id\":{ID_SUBSCRIBE},\"method\":\"mining.subscribe\",\"params\":[\"blgv-load/1.0\"]}}\n{{\"id\":{ID_AUTHORIZE},\"method\":\"mining.authorize\",\"params\":[\"{}\",\"x\"]}}\n",
        m.worker
    );
    if let Err(e) = stream.write_all(hello.as_bytes()).await {
        fleet.counters.closed.fetch_add(1, Relaxed);
        fleet.note(format!("miner {} handshake write: {e}", m.index));
        return;
    }
    let _ = m.stream.set(stream);
    let s = m.stream.get().expect("just set");
    let mut permit = Some(permit);
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut proto = Proto {
        fleet: &fleet,
        miner: &m,
        ready: false,
    };
    let mut partial: Vec<u8> = Vec::new();
    loop {
        if permit.is_some() {
            if proto.ready {
                permit = None;
            } else {
                tokio::select! {
                    r = s.readable() => if r.is_err() { break },
                    _ = tokio::time::sleep_until(deadline) => {
                        fleet.counters.handshake_failed.fetch_add(1, Relaxed);
                        fleet.note(format!("miner {}: no difficulty+job within {HANDSHAKE_TIMEOUT:?} of connecting", m.index));
                        permit = None;
                        continue;
                    }
                }
            }
        }
        if permit.is_none() && s.readable().await.is_err() {
            break;
        }
        let eof = SCRATCH.with(|cell| {
            let mut buf = cell.borrow_mut();
            match s.try_io(Interest::READABLE, || {
                recv_stamped(s.as_raw_fd(), &mut buf[..])
            }) {
                Ok((0, _)) => true,
                Ok((n, stamp)) => {
                    let now = fleet.arrival_ns(stamp);
                    if partial.is_empty() {
                        let used = proto.lines(&buf[..n], now);
                        partial.extend_from_slice(&buf[used..n]);
                    } else {
                        partial.extend_from_slice(&buf[..n]);
                        let used = proto.lines(&partial, now);
                        partial.drain(..used);
                    }
                    false
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                Err(_) => true,
            }
        });
        if eof {
            break;
        }
    }
    fleet.counters.closed.fetch_add(1, Relaxed);
    if proto.ready {
        fleet.counters.lost.fetch_add(1, Relaxed);
        fleet.note(format!("miner {} lost its connection", m.index));
    }
}

#[derive(Deserialize)]
struct FastReply {
    id: u64,
    #[serde(default)]
    result: Option<bool>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

struct Proto<'a> {
    fleet: &'a Fleet,
    miner: &'a Miner,
    ready: bool,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The first string in `"params":["…"` (the job id of a notify).
fn first_param(line: &[u8]) -> Option<&str> {
    let key = b"\"params\":[\"";
    let at = line.windows(key.len()).position(|w| w == key)? + key.len();
    let len = line[at..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&line[at..at + len]).ok()
}

impl Proto<'_> {
    /// Handles every complete line in `data`; returns the bytes consumed.
    fn lines(&mut self, data: &[u8], now_ns: u64) -> usize {
        let mut start = 0;
        while let Some(pos) = data[start..].iter().position(|&b| b == b'\n') {
            let line = &data[start..start + pos];
            if !line.is_empty() {
                self.line(line, now_ns);
            }
            start += pos + 1;
        }
        start
    }

    fn line(&mut self, line: &[u8], now_ns: u64) {
        if !contains(&line[..line.len().min(64)], b"\"method\"") {
            if let Ok(r) = serde_json::from_slice::<FastReply>(line) {
                if r.id >= SUBMIT_ID_BASE {
                    self.submit_reply(r, line, now_ns);
                    return;
                }
            }
        }
        self.slow_line(line, now_ns);
    }

    fn submit_reply(&mut self, r: FastReply, line: &[u8], now_ns: u64) {
        let f = self.fleet;
        if r.error.is_none() && r.result == Some(true) {
            f.counters.accepted.fetch_add(1, Relaxed);
            let sent = r.id - SUBMIT_ID_BASE;
            if sent >= f.measure_from.load(Relaxed) && sent < f.measure_until.load(Relaxed) {
                f.latency.record(now_ns.saturating_sub(sent));
            }
        } else {
            f.counters.rejected.fetch_add(1, Relaxed);
            f.note(format!(
                "miner {}: share rejected: {}",
                self.miner.index,
                String::from_utf8_lossy(line)
            ));
        }
    }

    fn slow_line(&mut self, line: &[u8], now_ns: u64) {
        if contains(&line[..line.len().min(96)], b"\"method\":\"mining.notify\"") {
            if let Some(id) = first_param(line) {
                match self.fleet.job(id, line) {
                    Some(job) => {
                        // The upstream's job number rides in the prevhash (see
                        // upstream::new_job): the proxy may have renamed the job.
                        let mut n = [0u8; 8];
                        n.copy_from_slice(&job.prevhash[..8]);
                        self.fleet.probe.seen(u64::from_le_bytes(n), now_ns);
                        self.miner.state().job = Some(job)
                    }
                    None => self.fleet.note(format!(
                        "miner {}: unparsable notify {}",
                        self.miner.index,
                        String::from_utf8_lossy(line)
                    )),
                }
            }
            self.check_ready();
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            self.fleet.note(format!(
                "miner {}: not JSON: {}",
                self.miner.index,
                String::from_utf8_lossy(line)
            ));
            return;
        };
        match v.get("method").and_then(Value::as_str) {
            Some("mining.set_difficulty") => {
                if let Some(d) = v["params"].get(0).and_then(Value::as_f64) {
                    self.miner.state().difficulty = Some(d);
                }
            }
            Some("mining.set_extranonce") => {
                let mut st = self.miner.state();
                if let Some(en1) = v["params"].get(0).and_then(Value::as_str) {
                    st.extranonce1 = hex::decode(en1).unwrap_or_default();
                }
                st.extranonce2_size =
                    v["params"].get(1).and_then(Value::as_u64).unwrap_or(0) as usize;
            }
            Some("client.reconnect") => {
                self.fleet.counters.reconnect_requests.fetch_add(1, Relaxed);
                self.fleet
                    .note(format!("miner {}: client.reconnect", self.miner.index));
            }
            Some(_) => {}
            None => self.handshake_reply(&v),
        }
        self.check_ready();
    }

    fn handshake_reply(&mut self, v: &Value) {
        let ok = v["error"].is_null();
        match v["id"].as_u64() {
            Some(ID_SUBSCRIBE) if ok => {
                let mut st = self.miner.state();
                st.extranonce1 = v["result"][1]
                    .as_str()
                    .and_then(|h| hex::decode(h).ok())
                    .unwrap_or_default();
                st.extranonce2_size = v["result"][2].as_u64().unwrap_or(0) as usize;
            }
            Some(ID_AUTHORIZE) if ok && v["result"] == Value::Bool(true) => {
                self.miner.state().authorized = true;
            }
            _ => self
                .fleet
                .note(format!("miner {}: unexpected reply {v}", self.miner.index)),
        }
    }

    fn check_ready(&mut self) {
        if self.ready {
            return;
        }
        let mut st = self.miner.state();
        if !st.extranonce1.is_empty()
            && st.authorized
            && st.difficulty.is_some()
            && st.job.is_some()
        {
            st.ready = true;
            self.ready = true;
            self.fleet.counters.ready.fetch_add(1, Relaxed);
        }
    }
}

/// One miner's shares for a phase.
pub struct SharePlan {
    miner: Arc<Miner>,
    /// `,"method":"mining.submit","params":["worker","job","en2","ntime","` — the id and the
    /// nonce are filled in per share.
    prefix: Vec<u8>,
    solutions: Vec<Solution>,
    next: usize,
}

/// Finds `per_miner` shares for every ready miner on its current job (in parallel, before the
/// clock starts). `upstream_difficulty` marks which of them the proxy must forward.
pub fn plan_shares(
    fleet: &Fleet,
    per_miner: usize,
    upstream_difficulty: f64,
) -> anyhow::Result<Vec<SharePlan>> {
    let upstream_le = difficulty_to_target(upstream_difficulty).to_le_bytes();
    let ready: Vec<(Arc<Miner>, MinerState)> = fleet
        .miners
        .iter()
        .filter_map(|m| {
            let st = m.state().clone();
            (st.ready && m.stream.get().is_some()).then(|| (m.clone(), st))
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = ready.len().div_ceil(threads).max(1);
    let plans = std::thread::scope(|scope| {
        let handles: Vec<_> = ready
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(m, st)| plan_one(m, st, per_miner, &upstream_le))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("planning thread panicked"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    Ok(plans.into_iter().flatten().collect())
}

fn plan_one(
    m: &Arc<Miner>,
    st: &MinerState,
    per_miner: usize,
    upstream_le: &[u8; 32],
) -> anyhow::Result<SharePlan> {
    let job = st.job.as_ref().expect("ready miners have a job");
    let d = st.difficulty.expect("ready miners have a difficulty");
    let target_le = difficulty_to_target(d).to_le_bytes();
    let en2 = vec![0u8; st.extranonce2_size];
    let t = HeaderTemplate::new(job, &st.extranonce1, &en2, job.ntime);
    let mut solutions = Vec::with_capacity(per_miner);
    let mut nonce = 0;
    find_solutions(
        &t,
        &target_le,
        upstream_le,
        &mut nonce,
        per_miner,
        &mut solutions,
    );
    let prefix = format!(
        ",\"method\":\"mining.submit\",\"params\":[\"{}\",\"{}\",\"{}\",\"{:08x}\",\"",
        m.worker,
        job.id,
        hex::encode(&en2),
        job.ntime
    )
    .into_bytes();
    Ok(SharePlan {
        miner: m.clone(),
        prefix,
        solutions,
        next: 0,
    })
}

/// What [`drive`] saw.
#[derive(Debug, Clone, Default)]
pub struct DriveResult {
    pub sent_in_window: u64,
    pub window_secs: f64,
    /// How far the pacer fell behind its schedule at worst (ms).
    pub max_lag_ms: f64,
    pub cpu_at_start: CpuEdge,
    pub cpu_at_end: CpuEdge,
}

/// `v` in decimal, without allocating (the pacer's hot loop).
pub(crate) fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// `v` as 8 lowercase hex digits, without allocating.
pub(crate) fn push_hex8(buf: &mut Vec<u8>, v: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..8).rev() {
        buf.push(HEX[((v >> (shift * 4)) & 0xf) as usize]);
    }
}

/// Submits at `rate` shares/s round-robin over `plans` for `warmup + window`, on the calling
/// (non-async) thread; latencies are recorded for shares sent inside the window. `cpu` is
/// called at the window's edges.
pub fn drive(
    fleet: &Fleet,
    plans: &mut [SharePlan],
    rate: f64,
    warmup: Duration,
    window: Duration,
    tick: Duration,
    cpu: &dyn Fn() -> CpuEdge,
) -> DriveResult {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack (ns).
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
    let mut res = DriveResult::default();
    if plans.is_empty() || rate <= 0.0 {
        return res;
    }
    let start = Instant::now();
    let start_ns = fleet.ns_since_epoch(start);
    let from_ns = start_ns + warmup.as_nanos() as u64;
    let until_ns = from_ns + window.as_nanos() as u64;
    fleet.measure_from.store(from_ns, Relaxed);
    fleet.measure_until.store(until_ns, Relaxed);
    let total = warmup + window;
    let period = 1e9 / rate;
    let mut buf = Vec::with_capacity(512);
    let mut sent: u64 = 0;
    let mut rr = 0usize;
    let mut measuring = false;
    let mut in_window = 0;
    let n_plans = plans.len();
    loop {
        let el = start.elapsed();
        if !measuring && el >= warmup {
            measuring = true;
            res.cpu_at_start = cpu();
        }
        if el >= total {
            break;
        }
        let due = (el.as_nanos() as f64 / period) as u64 + 1;
        let lag = el.as_secs_f64() - (sent as f64 * period / 1e9);
        res.max_lag_ms = res.max_lag_ms.max(lag * 1e3 - period / 1e6);
        let mut skipped = 0;
        while sent < due && skipped < n_plans {
            let plan = &mut plans[rr];
            rr = (rr + 1) % n_plans;
            let Some(sol) = plan.solutions.get(plan.next).copied() else {
                fleet.counters.exhausted.fetch_add(1, Relaxed);
                skipped += 1;
                continue;
            };
            skipped = 0;
            let stream = plan
                .miner
                .stream
                .get()
                .expect("planned miners are connected");
            let t = fleet.now_ns();
            if (from_ns..until_ns).contains(&t) {
                in_window += 1;
            }
            buf.clear();
            buf.extend_from_slice(b"{\"id\":");
            push_u64(&mut buf, SUBMIT_ID_BASE + t);
            buf.extend_from_slice(&plan.prefix);
            push_hex8(&mut buf, sol.nonce);
            buf.extend_from_slice(b"\"]}\n");
            sent += 1;
            match write_fully(stream, &buf) {
                Ok(true) => {
                    plan.next += 1;
                    fleet.counters.submitted.fetch_add(1, Relaxed);
                    if sol.forward {
                        fleet.counters.expected_forwards.fetch_add(1, Relaxed);
                    }
                }
                Ok(false) => {
                    fleet.counters.write_blocked.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    fleet.counters.write_errors.fetch_add(1, Relaxed);
                }
            }
        }
        std::thread::sleep(tick);
    }
    res.cpu_at_end = cpu();
    res.sent_in_window = in_window;
    res.window_secs = start.elapsed().as_secs_f64() - warmup.as_secs_f64();
    // Leave the window's bounds as they were so late replies still count.
    fleet.measure_until.store(until_ns, Relaxed);
    res
}

/// Writes a whole line without blocking the pacer for long: Ok(false) when the socket would
/// block before any byte went out (the share is dropped, not half-sent).
fn write_fully(stream: &TcpStream, buf: &[u8]) -> std::io::Result<bool> {
    write_whole_line(buf, |rest| stream.try_write(rest))
}

/// The pacer's write, over any non-blocking `write`: the whole line, or Ok(false) when nothing
/// went out (WouldBlock at once: the line is dropped, not half-sent). Once part of the line is
/// out, the rest is retried (yielding) so the stream stays framed. Shared with the floor's pacer.
pub(crate) fn write_whole_line(
    mut buf: &[u8],
    mut write: impl FnMut(&[u8]) -> std::io::Result<usize>,
) -> std::io::Result<bool> {
    let mut first = true;
    let mut spins = 0;
    while !buf.is_empty() {
        match write(buf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                first = false;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if first {
                    return Ok(false);
                }
                spins += 1;
                if spins > 100_000 {
                    return Err(e);
                }
                std::thread::yield_now();
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        let mut b = Vec::new();
        push_u64(&mut b, 0);
        b.push(b' ');
        push_u64(&mut b, SUBMIT_ID_BASE + 123);
        b.push(b' ');
        push_hex8(&mut b, 0x00ab_cdef);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            format!("0 {} 00abcdef", SUBMIT_ID_BASE + 123)
        );
        assert_eq!(
            first_param(br#"{"id":null,"method":"mining.notify","params":["1f","ab"]}"#),
            Some("1f")
        );
        assert_eq!(source_ip(0, 3), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_ip(5, 3), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
    }
}
