//! The proxy under test as a child process, and what /proc says about it.
//!
//! The harness writes a TOML config into a temporary directory, starts the real `blgv-proxy`
//! binary on it (stdout and stderr go to `proxy.log` there) and reads the child's resident
//! memory (`VmRSS` in /proc/PID/status) and CPU time (utime + stime in /proc/PID/stat), so the
//! figures are the proxy's alone.

use anyhow::{bail, Context};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which proxy a run drives: ours, or a peer measured on the same harness for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `blgv-proxy` (or the harness's `run-proxy` shim), configured by a TOML file.
    Blgv,
    /// `para proxy` (crates.io `para`, SV1→SV1), configured by flags. It checks a Bitcoin Core
    /// RPC at start (`getblockchaininfo`, answered by the harness's node stand-in) and wants
    /// miners' usernames to be addresses of its chain.
    Para,
}

/// The regtest address peers that want an address as username get (BIP173's test vector).
pub const REGTEST_ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

impl Flavor {
    /// Miner `i` authorizes as `{prefix}.m{i}`.
    pub fn worker_prefix(self) -> &'static str {
        match self {
            Flavor::Blgv => "load",
            Flavor::Para => REGTEST_ADDRESS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Flavor::Blgv => "blgv-proxy",
            Flavor::Para => "para proxy",
        }
    }
}

/// How to start a proxy: a program and the arguments before its own (`--config FILE` for
/// blgv-proxy).
#[derive(Debug, Clone)]
pub struct ProxyCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub flavor: Flavor,
}

impl ProxyCommand {
    /// The `blgv-proxy` binary at `path`.
    pub fn binary(path: impl Into<PathBuf>) -> ProxyCommand {
        ProxyCommand {
            program: path.into(),
            args: Vec::new(),
            flavor: Flavor::Blgv,
        }
    }

    /// The `para` binary at `path` (`cargo install para --version 0.6.0`), run as `para proxy`.
    pub fn para(path: impl Into<PathBuf>) -> ProxyCommand {
        ProxyCommand {
            program: path.into(),
            args: vec!["proxy".into()],
            flavor: Flavor::Para,
        }
    }

    /// `blgv-proxy` next to the running executable (target/release/ when the harness is run
    /// from there).
    pub fn next_to_current_exe() -> anyhow::Result<ProxyCommand> {
        let exe = std::env::current_exe().context("locating the harness executable")?;
        let dir = exe
            .parent()
            .context("the harness executable has no directory")?;
        let candidates = [dir.join("blgv-proxy"), dir.join("../blgv-proxy")];
        for c in candidates {
            if c.is_file() {
                return Ok(ProxyCommand::binary(c));
            }
        }
        bail!(
            "no blgv-proxy binary next to {}; fix: `cargo build --release -p blgv-proxy` with the same CARGO_TARGET_DIR, or pass --proxy-bin PATH",
            exe.display()
        )
    }

    /// The harness executable's hidden `run-proxy` subcommand, which runs the proxy library
    /// exactly like `blgv-proxy`'s main does (used by the smoke test, where Cargo builds only
    /// this package's binaries).
    pub fn harness_shim(harness: impl Into<PathBuf>) -> ProxyCommand {
        ProxyCommand {
            program: harness.into(),
            args: vec!["run-proxy".into()],
            flavor: Flavor::Blgv,
        }
    }
}

/// Raise the soft open-files limit to the hard limit (children inherit it). Returns the new
/// soft limit.
pub fn raise_nofile_limit() -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit(NOFILE): {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                bail!("setrlimit(NOFILE): {}", std::io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// A free TCP port on 127.0.0.1 (bound and released; the proxy binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A point-in-time reading of the child.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub threads: u64,
    /// utime + stime in seconds.
    pub cpu_secs: f64,
}

pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unparsable /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ProcSample {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
        threads: field("Threads:"),
        // utime is field 14, stime 15: indices 11 and 12 counting from field 3.
        cpu_secs: (num(11) + num(12)) as f64 / hz,
    })
}

/// On-CPU nanoseconds of every thread of `pid` (/proc/PID/task/*/schedstat): finer than the
/// 10 ms ticks of /proc/PID/stat, for short intervals.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// CPU time of every process on the machine, from the first line of /proc/stat:
/// (busy seconds, total seconds), summed over all CPUs. Busy excludes idle and iowait.
pub fn machine_cpu() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    ((total - idle) as f64 / hz, total as f64 / hz)
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Context switches of a process, summed over its threads (/proc/PID/task/*/status).
#[derive(Debug, Clone, Copy, Default)]
pub struct SysCounts {
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
}

pub fn sys_counts(pid: u32) -> SysCounts {
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut c = SysCounts::default();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            c.voluntary_switches += field(&st, "voluntary_ctxt_switches:");
            c.involuntary_switches += field(&st, "nonvoluntary_ctxt_switches:");
        }
    }
    c
}

/// CPU seconds at one instant: the proxy, this harness, and the whole machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuEdge {
    pub proxy_sys: SysCounts,
    pub proxy: f64,
    pub harness: f64,
    pub machine_busy: f64,
    pub machine_total: f64,
}

impl CpuEdge {
    pub fn now(proxy_pid: u32) -> CpuEdge {
        let (machine_busy, machine_total) = machine_cpu();
        CpuEdge {
            proxy_sys: sys_counts(proxy_pid),
            proxy: sample(proxy_pid).map(|s| s.cpu_secs).unwrap_or(0.0),
            harness: sample(std::process::id())
                .map(|s| s.cpu_secs)
                .unwrap_or(0.0),
            machine_busy,
            machine_total,
        }
    }
}

/// What a peer proxy is pointed at.
pub struct PeerSetup<'a> {
    /// The harness's upstream pool.
    pub upstream: SocketAddr,
    /// Every miner's difficulty (start = min = max).
    pub difficulty: f64,
    /// The node stand-in's RPC: address, user, password.
    pub rpc: (SocketAddr, &'a str, &'a str),
}

/// The running proxy. Dropping it kills the child and removes the directory (unless kept).
pub struct ProxyProcess {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    keep_dir: bool,
}

impl ProxyProcess {
    /// Writes `config` (which must listen on `addr`) and starts the proxy, then waits until it
    /// accepts TCP connections.
    pub async fn start(
        cmd: &ProxyCommand,
        dir: PathBuf,
        config: &str,
        addr: SocketAddr,
        log_filter: &str,
        keep_dir: bool,
    ) -> anyhow::Result<ProxyProcess> {
        let config_path = dir.join("proxy.toml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .arg("--config")
            .arg(&config_path)
            .env("BLGV_LOG", log_filter);
        ProxyProcess::launch(command, dir, addr, keep_dir).await
    }

    /// Starts `para proxy` listening on `addr`, mining to `upstream`, every miner pinned at
    /// `difficulty` (start = min = max, as blgv-proxy's runs are), its Bitcoin Core RPC the
    /// node stand-in at `rpc` (a regtest chain).
    pub async fn start_para(
        cmd: &ProxyCommand,
        dir: PathBuf,
        addr: SocketAddr,
        peer: &PeerSetup<'_>,
        log_filter: &str,
        keep_dir: bool,
    ) -> anyhow::Result<ProxyProcess> {
        let (upstream, rpc) = (peer.upstream, peer.rpc);
        let d = format!("{:e}", peer.difficulty);
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .args(["--address", &addr.ip().to_string()])
            .args(["--port", &addr.port().to_string()])
            .arg("--upstream")
            .arg(format!("{REGTEST_ADDRESS}.proxy@{upstream}"))
            .args(["--start-diff", &d, "--min-diff", &d, "--max-diff", &d])
            .args(["--chain", "regtest"])
            .args(["--bitcoin-rpc-port", &rpc.0.port().to_string()])
            .args(["--bitcoin-rpc-username", rpc.1])
            .args(["--bitcoin-rpc-password", rpc.2])
            .arg("--data-dir")
            .arg(&dir)
            // With RUST_LOG set it logs instead of drawing its terminal throbber.
            .env("RUST_LOG", log_filter);
        ProxyProcess::launch(command, dir, addr, keep_dir).await
    }

    /// Spawns `command` (output into `dir/proxy.log`) and waits until it accepts TCP
    /// connections on `addr`.
    async fn launch(
        mut command: Command,
        dir: PathBuf,
        addr: SocketAddr,
        keep_dir: bool,
    ) -> anyhow::Result<ProxyProcess> {
        let log_path = dir.join("proxy.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let program = command.get_program().to_owned();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", Path::new(&program).display()))?;
        let mut p = ProxyProcess {
            child,
            addr,
            dir,
            log_path,
            keep_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "the proxy exited at start ({status}); its log:\n{}",
                    p.log_tail(40)
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!(
                    "the proxy did not listen on {addr} within 20 s; its log:\n{}",
                    p.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        sample(self.pid())
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `n` lines of the proxy's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Log lines at WARN or ERROR (the proxy logs problems there; nothing per share).
    pub fn log_problems(&self, max: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
            .take(max)
            .map(str::to_string)
            .collect()
    }

    /// SIGTERM, then SIGKILL after 10 s. Returns how long the graceful shutdown took.
    pub async fn stop(&mut self) -> Duration {
        let t = Instant::now();
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        while t.elapsed() < Duration::from_secs(10) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return t.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        t.elapsed()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A fresh directory under the system temp dir for one run.
pub fn run_dir() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("blgv-load-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Runs the proxy library in this process exactly as `blgv-proxy --config FILE` does, until
/// SIGTERM or Ctrl-C. For [`ProxyCommand::harness_shim`].
pub fn run_proxy_here(config: &Path) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BLGV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let config = blgv_proxy::Config::load(config)?;
    let runtime = blgv_proxy::runtime::build(&config.proxy)
        .context("starting the async runtime (proxy.threads)")?;
    runtime.block_on(async move {
        let proxy = blgv_proxy::start(config).await?;
        let token = proxy.shutdown_token();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = token.cancelled() => {}
        }
        proxy.shutdown().await;
        Ok(())
    })
}

/// `perf record` attached to the proxy for part of a run (cpu-clock sampling, call graphs
/// from frame pointers where present). Stopped with SIGINT so perf writes its file.
pub struct PerfRecorder {
    child: Child,
}

impl PerfRecorder {
    pub fn start(pid: u32, out: &Path) -> anyhow::Result<PerfRecorder> {
        let child = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "2999", "-g", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `perf record` (is perf installed?)")?;
        // perf needs a moment to attach to every thread.
        std::thread::sleep(Duration::from_millis(300));
        Ok(PerfRecorder { child })
    }

    pub fn stop(mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let _ = self.child.wait();
    }
}
