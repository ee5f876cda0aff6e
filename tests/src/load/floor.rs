//! The floor: what this machine's loopback TCP costs any proxy, measured with the same load the
//! harness puts on `blgv-proxy`.
//!
//! A minimal server ([`super::floor_server`], a child process running `load-harness
//! floor-server`) does only the unavoidable socket work: read each ~150-byte line and answer
//! it with one fixed ~40-byte line; write one 600-byte line into every socket on command. The
//! harness drives it exactly as it drives the proxy:
//!
//! * [`shares`]: M connections, one pacing thread that wakes every `tick` and writes the
//!   shares due round-robin over the miners (one write per line, as `generator::drive` does),
//!   a reader thread that counts the replies. Reported: the server's CPU and context switches
//!   per reply over the measured window, and the harness's own CPU.
//! * [`fanout`]: M idle connections spread over 127.0.0.x source addresses (as the fleet
//!   connects); each round the server writes the line into every socket in one tight loop.
//!   Reported: the send loop's wall time, the server's CPU per socket, and from the first
//!   write to the moment the harness's reader had the last line.
//!
//! A proxy's figures above these are its own work; figures at these are the machine's.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::floor_server::{mono_ns, FANOUT_LINE_LEN, REPLY};
use super::generator::{push_hex8, push_u64, SUBMIT_ID_BASE};
use super::process::{cpu_ns, machine_cpu, raise_nofile_limit, sample, sys_counts, SysCounts};

/// How long a control command may take to be answered.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// The target size of a share line, '\n' included (a `mining.submit` is about this long).
pub const SHARE_LINE_LEN: usize = 150;

/// `load-harness floor shares`.
#[derive(Debug, Clone)]
pub struct SharesOptions {
    pub miners: usize,
    pub rate: f64,
    pub secs: f64,
    pub warmup_secs: f64,
    pub tick: Duration,
    /// See [`super::floor_server::ServerOptions::skip_final_read`].
    pub skip_final_read: bool,
}

/// `load-harness floor fanout`.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    pub miners: usize,
    pub rounds: usize,
    /// Source addresses 127.0.0.2…; None = one per 10,000 connections.
    pub source_ips: Option<usize>,
    /// Threads the server writes the fan-out on (1: one loop, as a single event loop does).
    pub sender_threads: usize,
}

/// The server child. Dropping it closes its stdin (it exits on EOF) and reaps it.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    port: u16,
}

impl Server {
    fn start(skip_final_read: bool) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("locating the harness executable")?;
        let mut cmd = Command::new(&exe);
        cmd.arg("floor-server");
        if skip_final_read {
            cmd.arg("--skip-final-read");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} floor-server", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .context("no stdout pipe to the server")?;
        // A thread turns the server's stdout into lines so every wait can have a timeout.
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("floor-server-out".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .context("starting the server-output thread")?;
        let mut s = Server {
            child,
            stdin,
            lines,
            port: 0,
        };
        let first = s.next_line()?;
        s.port = first
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("the server's first line is not `port P`: {first:?}"))?;
        Ok(s)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn next_line(&mut self) -> anyhow::Result<String> {
        match self.lines.recv_timeout(CONTROL_TIMEOUT) {
            Ok(l) => Ok(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("the server did not answer within {CONTROL_TIMEOUT:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                bail!("the server's output ended (exit status {status:?}; its stderr is above)")
            }
        }
    }

    /// Sends one control line and returns the server's answer.
    fn command(&mut self, cmd: &str) -> anyhow::Result<String> {
        let stdin = self
            .stdin
            .as_mut()
            .context("the server's stdin is closed")?;
        stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .with_context(|| format!("sending {cmd:?} to the server"))?;
        let answer = self.next_line()?;
        if answer.starts_with("error") {
            bail!("the server answered {cmd:?} with {answer:?}");
        }
        Ok(answer)
    }

    /// Connections the server has accepted and still holds.
    fn accepted(&mut self) -> anyhow::Result<u64> {
        let a = self.command("count")?;
        a.strip_prefix("accepted ")
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("unexpected answer to count: {a:?}"))
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The same spread as the fleet's (generator.rs): connection `i` of `n` addresses binds
/// 127.0.0.2 + i mod n.
fn source_ip(i: usize, n: usize) -> IpAddr {
    let k = i % n.max(1);
    IpAddr::V4(Ipv4Addr::new(127, 0, (k / 250) as u8, 2 + (k % 250) as u8))
}

/// Connects `miners` sockets to `dst` from 127.0.0.2… (bound before connecting, as the fleet
/// does), each non-blocking with TCP_NODELAY, in index order.
fn connect_all(
    dst: SocketAddr,
    miners: usize,
    source_ips: usize,
) -> anyhow::Result<Vec<TcpStream>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting a runtime for connecting")?;
    rt.block_on(async {
        let mut streams = Vec::with_capacity(miners);
        for i in 0..miners {
            let src = source_ip(i, source_ips);
            let s = connect_one(src, dst)
                .await
                .with_context(|| format!("connection {i} from {src} to {dst}"))?;
            let s = s.into_std().context("taking the socket from the runtime")?;
            // tokio's sockets are non-blocking already; mio wants them so.
            s.set_nodelay(true)?;
            streams.push(TcpStream::from_std(s));
        }
        Ok(streams)
    })
}

/// IP_BIND_ADDRESS_NO_PORT: bind() takes only the source address and connect() picks the
/// port, for the full 4-tuple, instead of bind() reserving a port for the address alone.
/// Best effort: the fleet connects without it.
fn bind_address_no_port(s: &tokio::net::TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `on` for the given length.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

async fn connect_one(src: IpAddr, dst: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let mut last = None;
    for attempt in 0..3 {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.set_reuseaddr(true)?;
        bind_address_no_port(&s);
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

/// What the harness's reader has seen, over all sockets.
#[derive(Default)]
struct Received {
    /// Complete lines.
    lines: AtomicU64,
    /// CLOCK_MONOTONIC ns of the first and the last read that completed a line (reset per
    /// fan-out round).
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    /// Sockets closed by the server or failed.
    closed: AtomicU64,
}

/// One thread draining every socket (edge-triggered, like the fleet's tasks) and counting
/// complete lines. Each socket's partial line is just a flag: only '\n' counts.
struct Reader {
    received: Arc<Received>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Reader {
    /// Registers every stream with a new poller and starts the thread; returns the streams
    /// shared for writing.
    fn start(mut streams: Vec<TcpStream>) -> anyhow::Result<(Reader, Arc<Vec<TcpStream>>)> {
        let poll = Poll::new().context("creating the reader's poller")?;
        for (i, s) in streams.iter_mut().enumerate() {
            poll.registry()
                .register(s, Token(i), Interest::READABLE)
                .context("registering a socket with the reader")?;
        }
        let streams = Arc::new(streams);
        let received = Arc::new(Received {
            first_ns: AtomicU64::new(u64::MAX),
            ..Received::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, r2, stop2) = (streams.clone(), received.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("floor-reader".into())
            .spawn(move || read_loop(poll, &s2, &r2, &stop2))
            .context("starting the reader thread")?;
        Ok((
            Reader {
                received,
                stop,
                handle: Some(handle),
            },
            streams,
        ))
    }

    fn lines(&self) -> u64 {
        self.received.lines.load(Relaxed)
    }

    /// Waits until `n` lines have arrived or `timeout` passed; returns whether they did.
    fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.lines() < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn read_loop(mut poll: Poll, streams: &[TcpStream], rx: &Received, stop: &AtomicBool) {
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = vec![true; streams.len()];
    while !stop.load(Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(50))) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            eprintln!("floor: the reader's epoll_wait failed: {e}");
            return;
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if !open[i] {
                continue;
            }
            let mut lines = 0u64;
            loop {
                match (&streams[i]).read(&mut buf) {
                    Ok(0) => {
                        open[i] = false;
                        break;
                    }
                    Ok(n) => {
                        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                        // A short read drained the socket (edge-triggered epoll; tokio does
                        // the same): no final read for EAGAIN in the harness.
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        open[i] = false;
                        break;
                    }
                }
            }
            if lines > 0 {
                let now = mono_ns();
                rx.lines.fetch_add(lines, Relaxed);
                rx.first_ns.fetch_min(now, Relaxed);
                rx.last_ns.fetch_max(now, Relaxed);
            }
            if !open[i] {
                rx.closed.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The machine's state at one instant (the edges of a measurement).
#[derive(Debug, Clone, Copy, Default)]
struct Edge {
    /// The server's on-CPU ns (schedstat, all threads).
    server_ns: u64,
    /// The server's utime + stime (clock ticks, as the proxy's CPU per share is read).
    server_secs: f64,
    server_sw: SysCounts,
    harness_ns: u64,
    machine_busy: f64,
    replies: u64,
}

impl Edge {
    fn now(server: u32, replies: u64) -> Edge {
        Edge {
            server_ns: cpu_ns(server),
            server_secs: sample(server).map(|s| s.cpu_secs).unwrap_or(0.0),
            server_sw: sys_counts(server),
            harness_ns: cpu_ns(std::process::id()),
            machine_busy: machine_cpu().0,
            replies,
        }
    }
}

fn switches(a: &SysCounts, b: &SysCounts) -> (u64, u64) {
    (
        b.voluntary_switches.saturating_sub(a.voluntary_switches),
        b.involuntary_switches
            .saturating_sub(a.involuntary_switches),
    )
}

/// One miner's share line: `{"id":…,"method":"mining.submit","params":[…,"NONCE"]}\n`, padded
/// (in the worker name) to [`SHARE_LINE_LEN`] bytes. The id and nonce change per share.
struct ShareLine {
    prefix: Vec<u8>,
}

impl ShareLine {
    fn new(miner: usize) -> ShareLine {
        let id_digits = (SUBMIT_ID_BASE + 1_000_000_000_000).to_string().len();
        let make = |pad: usize| {
            format!(
                ",\"method\":\"mining.submit\",\"params\":[\"load.m{miner}{}\",\"1f\",\"0000000000000000\",\"6650a1b2\",\"",
                "x".repeat(pad)
            )
        };
        // {"id": + digits + prefix + 8 nonce digits + "]}\n
        let fixed = 6 + id_digits + 8 + 4;
        let pad = SHARE_LINE_LEN.saturating_sub(fixed + make(0).len());
        ShareLine {
            prefix: make(pad).into_bytes(),
        }
    }

    fn build(&self, buf: &mut Vec<u8>, id: u64, nonce: u32) {
        buf.clear();
        buf.extend_from_slice(b"{\"id\":");
        push_u64(buf, id);
        buf.extend_from_slice(&self.prefix);
        push_hex8(buf, nonce);
        buf.extend_from_slice(b"\"]}\n");
    }
}

/// The pacer's write (generator.rs's): the whole line, or Ok(false) when nothing went out.
fn write_line(mut stream: &TcpStream, buf: &[u8]) -> std::io::Result<bool> {
    super::generator::write_whole_line(buf, |rest| stream.write(rest))
}

#[derive(Debug, Default)]
struct Paced {
    sent_total: u64,
    sent_in_window: u64,
    blocked: u64,
    write_errors: u64,
    window_secs: f64,
    max_lag_ms: f64,
    start: Edge,
    end: Edge,
}

/// `generator::drive` without the shares: sleep `tick`, write the lines due round-robin over
/// the sockets (one write each), for `warmup + window`. Timer slack 1 µs so the sleeps are
/// as short as asked.
fn pace(
    streams: &[TcpStream],
    rate: f64,
    warmup: Duration,
    window: Duration,
    tick: Duration,
    edge: &dyn Fn() -> Edge,
) -> Paced {
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack (ns).
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
    let mut res = Paced::default();
    let lines: Vec<ShareLine> = (0..streams.len()).map(ShareLine::new).collect();
    let n = streams.len();
    let total = warmup + window;
    let period = 1e9 / rate;
    let mut buf = Vec::with_capacity(512);
    let mut attempted: u64 = 0;
    let mut rr = 0usize;
    let mut measuring = false;
    let start = Instant::now();
    loop {
        let el = start.elapsed();
        if !measuring && el >= warmup {
            measuring = true;
            res.start = edge();
        }
        if el >= total {
            break;
        }
        let due = (el.as_nanos() as f64 / period) as u64 + 1;
        let lag = el.as_secs_f64() - (attempted as f64 * period / 1e9);
        res.max_lag_ms = res.max_lag_ms.max(lag * 1e3 - period / 1e6);
        while attempted < due {
            let i = rr;
            rr = (rr + 1) % n;
            attempted += 1;
            let t = start.elapsed();
            lines[i].build(
                &mut buf,
                SUBMIT_ID_BASE + t.as_nanos() as u64,
                attempted as u32,
            );
            match write_line(&streams[i], &buf) {
                Ok(true) => {
                    res.sent_total += 1;
                    if t >= warmup && t < total {
                        res.sent_in_window += 1;
                    }
                }
                Ok(false) => res.blocked += 1,
                Err(_) => res.write_errors += 1,
            }
        }
        std::thread::sleep(tick);
    }
    res.end = edge();
    res.window_secs = start.elapsed().as_secs_f64() - warmup.as_secs_f64();
    res
}

fn check_nofile(miners: usize) -> anyhow::Result<()> {
    let nofile = raise_nofile_limit()?;
    if miners as u64 + 64 > nofile {
        bail!(
            "{miners} connections need {} file descriptors in the harness and in the server but the limit is {nofile} (ulimit -Hn); use fewer",
            miners + 64
        );
    }
    Ok(())
}

/// Waits until the server holds `n` connections.
fn wait_accepted(server: &mut Server, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = server.accepted()?;
        if a >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the server accepted only {a} of {n} connections within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `load-harness floor shares`. Ok(false) when replies were lost or writes failed.
pub fn shares(opts: &SharesOptions) -> anyhow::Result<bool> {
    // Written so that NaN fails too.
    let valid = opts.miners > 0 && opts.rate > 0.0 && opts.secs > 0.0 && opts.warmup_secs >= 0.0;
    if !valid {
        bail!("need miners ≥ 1, rate > 0, secs > 0, warm-up ≥ 0");
    }
    check_nofile(opts.miners)?;
    let mut server = Server::start(opts.skip_final_read)?;
    let pid = server.pid();
    let streams = connect_all(server.addr(), opts.miners, 1)?;
    wait_accepted(&mut server, opts.miners as u64)?;
    let (reader, streams) = Reader::start(streams)?;
    let warmup = Duration::from_secs_f64(opts.warmup_secs);
    let window = Duration::from_secs_f64(opts.secs);
    let rx = reader.received.clone();
    let edge = || Edge::now(pid, rx.lines.load(Relaxed));
    let p = pace(&streams, opts.rate, warmup, window, opts.tick, &edge);
    // A short drain: every line written must be answered.
    let all_back = reader.wait_for(p.sent_total, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(50));
    let replies_total = reader.lines();
    let alive = server.alive();
    let closed = reader.received.closed.load(Relaxed);
    drop(reader);

    let (a, b) = (p.start, p.end);
    let replies = b.replies.saturating_sub(a.replies);
    let per = replies.max(1) as f64;
    let secs = p.window_secs.max(1e-9);
    let server_ns = b.server_ns.saturating_sub(a.server_ns) as f64;
    let server_ticks_secs = b.server_secs - a.server_secs;
    let harness_ns = b.harness_ns.saturating_sub(a.harness_ns) as f64;
    let (vol, invol) = switches(&a.server_sw, &b.server_sw);
    let other = (b.machine_busy - a.machine_busy - server_ns / 1e9 - harness_ns / 1e9).max(0.0);
    let line_len = {
        let mut buf = Vec::new();
        ShareLine::new(opts.miners - 1).build(&mut buf, SUBMIT_ID_BASE, 0);
        buf.len()
    };
    println!(
        "floor shares: {} connections, {}/s target, {:.1} s measured after {:.1} s warm-up, tick {} µs, {}-byte lines, {}-byte replies{}",
        opts.miners,
        opts.rate,
        p.window_secs,
        opts.warmup_secs,
        opts.tick.as_micros(),
        line_len,
        REPLY.len(),
        if opts.skip_final_read { ", server stops at a short read" } else { ", server reads until WouldBlock" }
    );
    println!(
        "  lines sent in window     {} ({:.0}/s)",
        p.sent_in_window,
        p.sent_in_window as f64 / secs
    );
    println!(
        "  replies in window        {replies} ({:.0}/s)",
        replies as f64 / secs
    );
    println!(
        "  server CPU / reply       {:.2} µs (schedstat; {:.2} µs from /proc/PID/stat ticks), {:.0} % of a core",
        server_ns / 1e3 / per,
        server_ticks_secs * 1e6 / per,
        server_ns / 1e9 / secs * 100.0
    );
    println!(
        "  server switches / reply  {:.3} (voluntary {:.3}, involuntary {:.3})",
        (vol + invol) as f64 / per,
        vol as f64 / per,
        invol as f64 / per
    );
    println!(
        "  harness CPU              {:.2} µs / reply, {:.0} % of a core (pacer + reader)",
        harness_ns / 1e3 / per,
        harness_ns / 1e9 / secs * 100.0
    );
    println!(
        "  other CPU on the machine {:.0} % of a core",
        other / secs * 100.0
    );
    println!("  pacer max lag            {:.2} ms", p.max_lag_ms);
    println!(
        "  all lines sent / replies {} / {replies_total} (blocked writes {}, write errors {})",
        p.sent_total, p.blocked, p.write_errors
    );
    let mut ok = true;
    if !all_back || replies_total != p.sent_total {
        eprintln!(
            "FAILED: {} line(s) sent but {replies_total} replies received after a 2 s drain",
            p.sent_total
        );
        ok = false;
    }
    if p.write_errors > 0 || p.blocked > 0 {
        eprintln!(
            "FAILED: {} write error(s), {} blocked write(s): the load was not delivered as paced",
            p.write_errors, p.blocked
        );
        ok = false;
    }
    if closed > 0 {
        eprintln!("FAILED: the server closed {closed} connection(s)");
        ok = false;
    }
    if !alive {
        eprintln!("FAILED: the server died");
        ok = false;
    }
    Ok(ok)
}

/// One fan-out round's figures.
#[derive(Debug, Clone, Copy)]
struct Round {
    send_loop_ms: f64,
    cpu_us_per_socket: f64,
    switches_per_socket: f64,
    written: u64,
    blocked: u64,
    received: u64,
    first_rx_ms: f64,
    last_rx_ms: f64,
    /// Busy CPU on the machine outside the server and this harness (/proc/stat ticks, so only
    /// a hint at this scale): anything else running spoils the round.
    other_cpu_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// `load-harness floor fanout`. Ok(false) when a round did not reach every socket.
pub fn fanout(opts: &FanoutOptions) -> anyhow::Result<bool> {
    if opts.miners == 0 {
        bail!("need at least one connection");
    }
    check_nofile(opts.miners)?;
    let source_ips = opts
        .source_ips
        .unwrap_or(opts.miners.div_ceil(10_000))
        .max(1);
    let mut server = Server::start(false)?;
    let pid = server.pid();
    let t = Instant::now();
    let streams = connect_all(server.addr(), opts.miners, source_ips)?;
    wait_accepted(&mut server, opts.miners as u64)?;
    let connect_secs = t.elapsed().as_secs_f64();
    let (reader, _streams) = Reader::start(streams)?;
    // Let the connect burst settle.
    std::thread::sleep(Duration::from_millis(500));
    let m = opts.miners as u64;
    let mut rounds = Vec::new();
    let mut ok = true;
    for r in 0..opts.rounds {
        let expected = reader.lines() + m;
        reader.received.first_ns.store(u64::MAX, Relaxed);
        reader.received.last_ns.store(0, Relaxed);
        let before_ns = cpu_ns(pid);
        let before_sw = sys_counts(pid);
        let before_harness = cpu_ns(std::process::id());
        let before_machine = machine_cpu().0;
        let answer = server.command(&format!("fanout {}", opts.sender_threads))?;
        let f: Vec<u64> = answer
            .strip_prefix("fanout ")
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let [ns, written, blocked, start_ns, errors, server_cpu_ns] = f[..] else {
            bail!("unexpected answer to fanout: {answer:?}");
        };
        let arrived = reader.wait_for(expected, Duration::from_secs(10));
        let after_ns = cpu_ns(pid);
        let (vol, invol) = switches(&before_sw, &sys_counts(pid));
        let harness_ns = cpu_ns(std::process::id()).saturating_sub(before_harness);
        let machine_busy = machine_cpu().0 - before_machine;
        let received = m - expected.saturating_sub(reader.lines()).min(m);
        let first = reader.received.first_ns.load(Relaxed);
        let last = reader.received.last_ns.load(Relaxed);
        let ms = |t: u64| t.saturating_sub(start_ns) as f64 / 1e6;
        let round = Round {
            send_loop_ms: ns as f64 / 1e6,
            // The server's own count (getrusage): its sender threads may have exited.
            cpu_us_per_socket: server_cpu_ns as f64 / 1e3 / m as f64,
            switches_per_socket: (vol + invol) as f64 / m as f64,
            written,
            blocked,
            received,
            first_rx_ms: if first == u64::MAX { 0.0 } else { ms(first) },
            last_rx_ms: ms(last),
            other_cpu_ms: ((machine_busy
                - (after_ns.saturating_sub(before_ns).max(server_cpu_ns) + harness_ns) as f64
                    / 1e9)
                * 1e3)
                .max(0.0),
        };
        if !arrived || errors > 0 {
            eprintln!(
                "round {}: {received} of {m} sockets got the line within 10 s, {errors} write error(s)",
                r + 1
            );
            ok = false;
        }
        rounds.push(round);
        std::thread::sleep(Duration::from_millis(200));
    }
    let closed = reader.received.closed.load(Relaxed);
    let alive = server.alive();
    drop(reader);

    println!(
        "floor fanout: {} connections over {source_ips} source address(es) (connected in {connect_secs:.1} s), one {FANOUT_LINE_LEN}-byte line per socket per round, written on {} thread(s)",
        opts.miners, opts.sender_threads
    );
    println!(
        "  round  send loop ms  CPU/socket µs  switches/socket  blocked  first rx ms  last rx ms (from first write)  received  other CPU ms"
    );
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "  {:>5}  {:>12.2}  {:>13.3}  {:>15.4}  {:>7}  {:>11.2}  {:>29.2}  {:>8}  {:>12.0}",
            i + 1,
            r.send_loop_ms,
            r.cpu_us_per_socket,
            r.switches_per_socket,
            r.blocked,
            r.first_rx_ms,
            r.last_rx_ms,
            r.received,
            r.other_cpu_ms
        );
    }
    let med = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    println!(
        "  {:>5}  {:>12.2}  {:>13.3}  {:>15.4}  {:>7}  {:>11.2}  {:>29.2}",
        "median",
        med(|r| r.send_loop_ms),
        med(|r| r.cpu_us_per_socket),
        med(|r| r.switches_per_socket),
        "",
        med(|r| r.first_rx_ms),
        med(|r| r.last_rx_ms)
    );
    let written: u64 = rounds.iter().map(|r| r.written).sum();
    println!(
        "  sockets written at once {written} of {} (the rest would block and were finished later)",
        m * rounds.len() as u64
    );
    if closed > 0 {
        eprintln!("FAILED: {closed} connection(s) closed during the run");
        ok = false;
    }
    if !alive {
        eprintln!("FAILED: the server died");
        ok = false;
    }
    Ok(ok)
}
