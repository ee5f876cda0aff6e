//! The proxy load harness: M simulated miners on real TCP → the real `blgv-proxy` binary (a
//! child process, so its RSS and CPU are its own) → a fast, strict upstream pool in this
//! process.
//!
//! * [`generator`]: the miners (connect, handshake, paced share submission, latency).
//! * [`upstream`]: the pool; every forwarded share is validated, one invalid forward fails the
//!   run.
//! * [`process`]: starting the proxy, /proc readings.
//! * [`report`]: figures, goals, the human table and JSON.
//!
//! Scenarios: [`Scenario::Connections`] holds N idle miners (RSS per miner, new-job fan-out
//! latency); [`Scenario::Shares`] adds a fixed-rate share phase (throughput, submit→reply
//! latency percentiles, proxy CPU per share). The `load-harness` binary is the command line;
//! docs/PERFORMANCE.md has the method and the figures.

pub mod floor;
pub mod floor_server;
pub mod generator;
pub mod histogram;
pub mod process;
pub mod report;
pub mod upstream;
pub mod work;

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use generator::{connect_all, ConnectPlan, Fleet};
use process::{ProxyCommand, ProxyProcess};
use report::{FanoutRound, Latency, Report};
use upstream::Upstream;

/// What to run.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// Hold the miners idle.
    Connections,
    /// Then submit `rate` shares/s in total, spread evenly over the miners, for `warmup`
    /// (not measured) + `secs` (measured).
    Shares { rate: f64, secs: f64, warmup: f64 },
}

#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: Scenario,
    pub miners: usize,
    pub proxy: ProxyCommand,
    /// Difficulty the proxy gives miners (vardiff initial = min = max). 2^-27 ≈ 7.5e-9: ~32
    /// hashes a share.
    pub miner_difficulty: f64,
    /// Upstream difficulty = miner difficulty × this, so about one share in this many is
    /// forwarded (1 = every share).
    pub forward_every: f64,
    /// Source addresses 127.0.0.2… to spread connections over; None = one per 10,000 miners.
    pub source_ips: Option<usize>,
    pub connect_concurrency: usize,
    /// New clean jobs sent (one at a time) to measure fan-out, after all miners are ready.
    pub fanout_rounds: usize,
    /// How long to hold the idle connections before the share phase / the end.
    pub hold: Duration,
    /// The share pacer's sleep between batches.
    pub tick: Duration,
    /// BLGV_LOG for the proxy.
    pub proxy_log: String,
    /// Keep the run directory (config, proxy.log, ledger.db).
    pub keep_dir: bool,
    /// Print progress on stderr.
    pub verbose: bool,
    /// Run `perf record` on the proxy (from the first connection for `connections`, over
    /// warm-up + window for `shares`) into this file.
    pub perf_record: Option<std::path::PathBuf>,
    /// `proxy.threads` for blgv-proxy (None: its default).
    pub proxy_threads: Option<usize>,
}

impl Options {
    pub fn new(scenario: Scenario, miners: usize, proxy: ProxyCommand) -> Options {
        Options {
            scenario,
            miners,
            proxy,
            miner_difficulty: 1.0 / (1u64 << 27) as f64,
            forward_every: 16.0,
            source_ips: None,
            connect_concurrency: 256,
            fanout_rounds: 5,
            hold: Duration::from_secs(2),
            tick: Duration::from_micros(100),
            proxy_log: "warn".into(),
            keep_dir: false,
            verbose: false,
            perf_record: None,
            proxy_threads: None,
        }
    }
}

/// The proxy configuration for a run: difficulty pinned, ledger in the run directory,
/// `proxy.threads` as asked (None: the proxy's default).
pub fn proxy_config(
    listen: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    difficulty: f64,
    dir: &Path,
    threads: Option<usize>,
) -> String {
    let threads = threads.map_or(String::new(), |n| format!("threads = {n}\n"));
    format!(
        "[proxy]\nlisten = \"{listen}\"\nsubscribe_wait_ms = 30000\n{threads}\
         [[upstreams]]\nname = \"load-upstream\"\nurl = \"stratum+tcp://{upstream}\"\nuser = \"load.proxy\"\n\
         [vardiff]\ninitial = {difficulty:e}\nmin = {difficulty:e}\nmax = {difficulty:e}\ntarget_shares_per_minute = 60\nretarget_secs = 60\n\
         [ledger]\npath = {:?}\nflush_interval_ms = 1000\n\
         [api]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("ledger.db")
    )
}

macro_rules! progress {
    ($opts:expr, $($arg:tt)*) => {
        if $opts.verbose {
            eprintln!("[load] {}", format!($($arg)*));
        }
    };
}

async fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs one scenario end to end and reports. Errors are for runs that could not happen at all
/// (no proxy binary, too few file descriptors); a run that happened but went wrong returns a
/// report with `failures`.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    if !(opts.miner_difficulty > 0.0 && opts.forward_every >= 1.0) {
        bail!("miner difficulty must be > 0 and forward-every ≥ 1");
    }
    let nofile = process::raise_nofile_limit()?;
    if opts.miners as u64 + 64 > nofile {
        bail!(
            "{} miners need {} file descriptors in the harness and in the proxy but the limit is {nofile} (ulimit -Hn); use fewer miners",
            opts.miners,
            opts.miners + 64
        );
    }
    let source_ips = opts
        .source_ips
        .unwrap_or(opts.miners.div_ceil(10_000))
        .max(1);
    let mut report = Report {
        scenario: match &opts.scenario {
            Scenario::Connections => "connections".into(),
            Scenario::Shares { rate, secs, .. } => format!("shares at {rate}/s for {secs} s"),
        },
        miner_difficulty: opts.miner_difficulty,
        nofile_limit: nofile,
        ..Report::default()
    };
    report.connections.requested = opts.miners;
    report.connections.source_ips = source_ips;

    let epoch = Instant::now();
    let upstream = Upstream::start(opts.miner_difficulty * opts.forward_every, epoch).await?;
    report.upstream.difficulty = upstream.difficulty();
    report.machine.cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    report.machine.loadavg_start = process::loadavg();
    let machine_start = process::machine_cpu();
    let harness_start = process::sample(std::process::id())
        .map(|s| s.cpu_secs)
        .unwrap_or(0.0);
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], process::free_port()?));
    let dir = process::run_dir()?;
    // A peer that checks a Bitcoin Core RPC at start gets the node stand-in (kept for the run).
    let (mut proxy, _node) = match opts.proxy.flavor {
        process::Flavor::Blgv => {
            let config = proxy_config(
                listen,
                upstream.addr(),
                opts.miner_difficulty,
                &dir,
                opts.proxy_threads,
            );
            let p = ProxyProcess::start(
                &opts.proxy,
                dir,
                &config,
                listen,
                &opts.proxy_log,
                opts.keep_dir,
            )
            .await?;
            (p, None)
        }
        process::Flavor::Para => {
            let n = crate::node::NodeStandIn::start(crate::node::NodeConfig::default())
                .await
                .context("starting the node stand-in for the peer's RPC check")?;
            let (user, password) = n.credentials();
            let p = ProxyProcess::start_para(
                &opts.proxy,
                dir,
                listen,
                &process::PeerSetup {
                    upstream: upstream.addr(),
                    difficulty: opts.miner_difficulty,
                    rpc: (n.addr(), &user, &password),
                },
                &opts.proxy_log,
                opts.keep_dir,
            )
            .await?;
            (p, Some(n))
        }
    };
    report.proxy.flavor = opts.proxy.flavor.name().into();
    progress!(
        opts,
        "proxy pid {} on {listen}, run dir {}",
        proxy.pid(),
        proxy.dir.display()
    );
    report.proxy.pid = proxy.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = proxy.sample()?;
    report.proxy.rss_idle_kb = idle.rss_kb;

    let mut perf = match (&opts.perf_record, &opts.scenario) {
        (Some(path), Scenario::Connections) => {
            Some(process::PerfRecorder::start(proxy.pid(), path)?)
        }
        _ => None,
    };

    // Connect everyone.
    let fleet = Fleet::new(epoch, opts.miners, opts.proxy.flavor.worker_prefix());
    let started = Instant::now();
    connect_all(
        &fleet,
        &ConnectPlan {
            proxy: listen,
            source_ips,
            concurrency: opts.connect_concurrency,
        },
    );
    let n = opts.miners as u64;
    let c = &fleet.counters;
    let settled = || {
        c.ready.load(Relaxed) + c.connect_failed.load(Relaxed) + c.handshake_failed.load(Relaxed)
            >= n
    };
    let mut last_print = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_millis(n * 2);
    while !settled() && Instant::now() < deadline && proxy.alive() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if last_print.elapsed() > Duration::from_secs(2) {
            last_print = Instant::now();
            progress!(
                opts,
                "connected {} ready {} failed {}",
                c.connected.load(Relaxed),
                c.ready.load(Relaxed),
                c.connect_failed.load(Relaxed)
            );
        }
    }
    report.connections.ramp_secs = started.elapsed().as_secs_f64();
    progress!(
        opts,
        "{} of {} miners ready in {:.1} s",
        c.ready.load(Relaxed),
        n,
        report.connections.ramp_secs
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = proxy.sample()?;
    report.proxy.rss_loaded_kb = loaded.rss_kb;
    report.proxy.cpu_ramp_secs = loaded.cpu_secs - idle.cpu_secs;
    let ready = c.ready.load(Relaxed);
    report.proxy.rss_per_miner_bytes =
        (loaded.rss_kb as f64 - idle.rss_kb as f64) * 1024.0 / ready.max(1) as f64;

    // Fan-out of new clean jobs.
    for _ in 0..opts.fanout_rounds {
        let expected = c.ready.load(Relaxed) - c.lost.load(Relaxed);
        let id = upstream.next_job_id();
        fleet.probe.arm(id);
        let before = process::CpuEdge::now(proxy.pid());
        let proxy_ns0 = process::cpu_ns(proxy.pid());
        let ann = upstream.new_job(true);
        wait_for(Duration::from_secs(10), || fleet.probe.read().0 >= expected).await;
        let (received, first, last) = fleet.probe.read();
        let proxy_ns1 = process::cpu_ns(proxy.pid());
        let after = process::CpuEdge::now(proxy.pid());
        // From the moment the upstream began writing the notify into the proxy's socket.
        let t0 = upstream
            .last_broadcast_ns()
            .max(fleet.ns_since_epoch(ann.at));
        let ms = |ns: u64| ns.saturating_sub(t0) as f64 / 1e6;
        let round = FanoutRound {
            job_id: id,
            expected,
            received,
            first_ms: if received > 0 { ms(first) } else { 0.0 },
            last_ms: ms(last),
            first_to_last_ms: if received > 0 {
                last.saturating_sub(first) as f64 / 1e6
            } else {
                0.0
            },
            proxy_cpu_us_per_miner: proxy_ns1.saturating_sub(proxy_ns0) as f64
                / 1e3
                / received.max(1) as f64,
            harness_cpu_ms: (after.harness - before.harness) * 1e3,
            proxy_switches_per_miner: ((after.proxy_sys.voluntary_switches
                + after.proxy_sys.involuntary_switches)
                - (before.proxy_sys.voluntary_switches + before.proxy_sys.involuntary_switches))
                as f64
                / received.max(1) as f64,
            other_cpu_ms: ((after.machine_busy - before.machine_busy)
                - (after.harness - before.harness)
                - (after.proxy - before.proxy))
                .max(0.0)
                * 1e3,
        };
        progress!(
            opts,
            "fan-out job {id}: {received}/{expected} miners, last after {:.1} ms",
            round.last_ms
        );
        report.fanout.push(round);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    tokio::time::sleep(opts.hold).await;
    if let Some(p) = perf.take() {
        p.stop();
    }

    if let Scenario::Shares { rate, secs, warmup } = opts.scenario {
        report.shares = Some(
            share_phase(
                opts,
                &fleet,
                &upstream,
                proxy.pid(),
                rate,
                Duration::from_secs_f64(secs),
                Duration::from_secs_f64(warmup),
            )
            .await?,
        );
    }

    let end = proxy.sample().unwrap_or_default();
    report.proxy.rss_end_kb = end.rss_kb;
    report.proxy.peak_rss_kb = end.hwm_kb;
    report.proxy.threads = end.threads;
    report.proxy.cpu_total_secs = end.cpu_secs;
    let alive = proxy.alive();
    let machine_end = process::machine_cpu();
    report.machine.loadavg_end = process::loadavg();
    report.machine.harness_cpu_secs = process::sample(std::process::id())
        .map(|s| s.cpu_secs)
        .unwrap_or(0.0)
        - harness_start;
    report.machine.other_cpu_secs = (machine_end.0
        - machine_start.0
        - report.machine.harness_cpu_secs
        - (end.cpu_secs - idle.cpu_secs))
        .max(0.0);
    report.machine.wall_secs = machine_end.1 - machine_start.1;

    let cc = &mut report.connections;
    cc.connected = c.connected.load(Relaxed);
    cc.ready = c.ready.load(Relaxed);
    cc.held = fleet.open();
    cc.connect_failed = c.connect_failed.load(Relaxed);
    cc.handshake_failed = c.handshake_failed.load(Relaxed);
    cc.lost = c.lost.load(Relaxed);
    cc.reconnect_requests = c.reconnect_requests.load(Relaxed);
    let u = upstream.counters();
    report.upstream.connections = u.connections.load(Relaxed);
    report.upstream.submits = u.submits.load(Relaxed);
    report.upstream.accepted = u.accepted.load(Relaxed);
    report.upstream.invalid = u.invalid.load(Relaxed);
    report.upstream.invalid_samples = upstream.invalid_samples();
    report.miner_notes = fleet.notes();
    report.proxy_log_problems = proxy.log_problems(10);

    // What makes the run unclean.
    let f = &mut report.failures;
    if !alive {
        f.push(format!("the proxy died; its log:\n{}", proxy.log_tail(30)));
    }
    if report.upstream.invalid > 0 {
        f.push(format!(
            "{} invalid share(s) forwarded upstream (see INVALID FORWARD lines)",
            report.upstream.invalid
        ));
    }
    let cc = &report.connections;
    if cc.held < n || cc.ready < n {
        f.push(format!(
            "only {} of {n} miners got work and {} connections are still open",
            cc.ready, cc.held
        ));
    }
    for r in &report.fanout {
        if r.received < r.expected {
            f.push(format!(
                "job {} reached {} of {} miners within 10 s",
                r.job_id, r.received, r.expected
            ));
        }
    }
    if let Some(s) = &report.shares {
        if s.rejected_total > 0 {
            f.push(format!(
                "the proxy rejected {} valid share(s) (see miner notes)",
                s.rejected_total
            ));
        }
        if s.accepted_total + s.rejected_total < s.submitted_total {
            f.push(format!(
                "{} submit(s) never answered",
                s.submitted_total - s.accepted_total - s.rejected_total
            ));
        }
        if s.upstream_received != s.expected_forwards {
            f.push(format!(
                "the upstream received {} forwarded shares but {} met its target",
                s.upstream_received, s.expected_forwards
            ));
        }
        if s.write_errors > 0 || s.write_blocked > 0 || s.exhausted > 0 {
            f.push(format!(
                "generator trouble: {} write errors, {} blocked writes, {} shares short",
                s.write_errors, s.write_blocked, s.exhausted
            ));
        }
    }
    report.evaluate_goals();
    let took = proxy.stop().await;
    progress!(opts, "proxy stopped in {:.1} s", took.as_secs_f64());
    Ok(report)
}

async fn share_phase(
    opts: &Options,
    fleet: &Arc<Fleet>,
    upstream: &Upstream,
    pid: u32,
    rate: f64,
    window: Duration,
    warmup: Duration,
) -> anyhow::Result<report::Shares> {
    let ready = fleet.miners.iter().filter(|m| m.state().ready).count();
    if ready == 0 {
        bail!("no miner is ready; nothing to submit");
    }
    let per_miner =
        ((rate * (warmup + window).as_secs_f64() / ready as f64) * 1.02).ceil() as usize + 4;
    let t = Instant::now();
    let fleet2 = fleet.clone();
    let up_diff = upstream.difficulty();
    let mut plans =
        tokio::task::spawn_blocking(move || generator::plan_shares(&fleet2, per_miner, up_diff))
            .await
            .context("planning shares")??;
    let planning_secs = t.elapsed().as_secs_f64();
    progress!(
        opts,
        "planned {per_miner} shares for each of {} miners in {planning_secs:.1} s; submitting {rate}/s for {:.1}+{:.1} s",
        plans.len(),
        warmup.as_secs_f64(),
        window.as_secs_f64()
    );
    let perf = match &opts.perf_record {
        Some(path) => Some(process::PerfRecorder::start(pid, path)?),
        None => None,
    };
    let fleet2 = fleet.clone();
    let tick = opts.tick;
    let drive = tokio::task::spawn_blocking(move || {
        generator::drive(&fleet2, &mut plans, rate, warmup, window, tick, &|| {
            process::CpuEdge::now(pid)
        })
    })
    .await
    .context("the share pacer panicked")?;
    if let Some(p) = perf {
        p.stop();
    }
    let c = &fleet.counters;
    wait_for(Duration::from_secs(10), || {
        c.accepted.load(Relaxed) + c.rejected.load(Relaxed) >= c.submitted.load(Relaxed)
    })
    .await;
    let u = upstream.counters();
    wait_for(Duration::from_secs(5), || {
        u.submits.load(Relaxed) >= c.expected_forwards.load(Relaxed)
    })
    .await;
    // A moment for a surplus forward to show up too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let h = &fleet.latency;
    let us = |ns: u64| ns as f64 / 1e3;
    let accepted_in_window = h.count();
    let (a, b) = (drive.cpu_at_start, drive.cpu_at_end);
    let cpu = b.proxy - a.proxy;
    let harness_cpu = b.harness - a.harness;
    let machine_busy = b.machine_busy - a.machine_busy;
    let machine_total = b.machine_total - a.machine_total;
    let per = accepted_in_window.max(1) as f64;
    Ok(report::Shares {
        target_rate: rate,
        miners: ready,
        warmup_secs: warmup.as_secs_f64(),
        window_secs: drive.window_secs,
        submitted_in_window: drive.sent_in_window,
        accepted_in_window,
        accepted_per_sec: accepted_in_window as f64 / drive.window_secs.max(1e-9),
        submitted_total: c.submitted.load(Relaxed),
        accepted_total: c.accepted.load(Relaxed),
        rejected_total: c.rejected.load(Relaxed),
        latency: Latency {
            samples: accepted_in_window,
            p50_us: us(h.quantile(0.50)),
            p90_us: us(h.quantile(0.90)),
            p99_us: us(h.quantile(0.99)),
            p999_us: us(h.quantile(0.999)),
            max_us: us(h.max()),
        },
        cpu_secs: cpu,
        cpu_us_per_share: cpu * 1e6 / accepted_in_window.max(1) as f64,
        proxy_switches_per_share: ((b.proxy_sys.voluntary_switches
            + b.proxy_sys.involuntary_switches)
            - (a.proxy_sys.voluntary_switches + a.proxy_sys.involuntary_switches))
            as f64
            / per,
        harness_cpu_secs: harness_cpu,
        other_cpu_secs: (machine_busy - cpu - harness_cpu).max(0.0),
        machine_idle_secs: (machine_total - machine_busy).max(0.0),
        expected_forwards: c.expected_forwards.load(Relaxed),
        upstream_received: u.submits.load(Relaxed),
        pacer_max_lag_ms: drive.max_lag_ms,
        write_blocked: c.write_blocked.load(Relaxed),
        write_errors: c.write_errors.load(Relaxed),
        exhausted: c.exhausted.load(Relaxed),
        planning_secs,
    })
}
