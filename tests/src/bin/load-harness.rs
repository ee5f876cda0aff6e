//! `load-harness`: load test for blgv-proxy. M simulated miners on real TCP → the real
//! `blgv-proxy` binary (a child process) → a fast, strict upstream pool. See
//! docs/PERFORMANCE.md.
//!
//! ```text
//! load-harness connections --miners 15000
//! load-harness shares --miners 1000 --rate 30000 --secs 15
//! load-harness shares --miners 1000 --rate 30000 --secs 15 --peer para --proxy-bin ~/.cargo/bin/para
//! load-harness floor shares --miners 1000 --rate 30000 --secs 10
//! load-harness floor fanout --miners 15000
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use blgv_tests::load::{self, process::ProxyCommand, Options, Scenario};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "load-harness", about = "Load harness for blgv-proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hold N idle miners: RSS per miner, new-job fan-out latency.
    Connections {
        #[command(flatten)]
        common: Common,
    },
    /// Connect N miners, then submit R valid shares/s in total for S seconds: throughput,
    /// submit→reply latency percentiles, proxy CPU per share.
    Shares {
        #[command(flatten)]
        common: Common,
        /// Total shares per second, spread evenly over the miners.
        #[arg(long, default_value_t = 30_000.0)]
        rate: f64,
        /// Measured seconds.
        #[arg(long, default_value_t = 15.0)]
        secs: f64,
        /// Seconds at the same rate before measuring.
        #[arg(long, default_value_t = 1.0)]
        warmup_secs: f64,
    },
    /// The floor: a minimal server doing only the unavoidable socket work, driven like the
    /// proxy, to measure what this machine's loopback TCP costs any proxy.
    Floor {
        #[command(subcommand)]
        mode: FloorMode,
    },
    /// (internal) The floor benchmark's server (control lines on stdin).
    #[command(hide = true)]
    FloorServer {
        /// Stop reading a socket at a short read instead of at WouldBlock (as tokio does).
        #[arg(long)]
        skip_final_read: bool,
    },
    /// (internal) Run the proxy library in this process like `blgv-proxy --config FILE`.
    #[command(hide = true)]
    RunProxy {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum FloorMode {
    /// M connections, R lines/s of ~150 bytes paced like `shares`, each answered with one
    /// fixed line: the server's CPU and context switches per reply.
    Shares {
        /// Connections.
        #[arg(long, default_value_t = 1000)]
        miners: usize,
        /// Lines per second in total, round-robin over the connections.
        #[arg(long, default_value_t = 30_000.0)]
        rate: f64,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Seconds at the same rate before measuring.
        #[arg(long, default_value_t = 1.0)]
        warmup_secs: f64,
        /// Pacer sleep between batches, µs.
        #[arg(long, default_value_t = 100)]
        tick_us: u64,
        /// The server stops reading a socket at a short read instead of at WouldBlock (saves
        /// the final read that returns EAGAIN, as tokio does).
        #[arg(long)]
        skip_final_read: bool,
    },
    /// M idle connections; each round the server writes one 600-byte line into every socket
    /// in one loop: send-loop time, CPU per socket, first write to last receipt.
    Fanout {
        /// Connections.
        #[arg(long, default_value_t = 15_000)]
        miners: usize,
        /// Fan-out rounds.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Spread connections over this many source addresses 127.0.0.2…; default one per
        /// 10,000 connections.
        #[arg(long)]
        source_ips: Option<usize>,
        /// Server threads writing the fan-out at once, each over its share of the sockets.
        #[arg(long, default_value_t = 1)]
        sender_threads: usize,
    },
}

#[derive(Args)]
struct Common {
    /// Simulated miners (one TCP connection each).
    #[arg(long, default_value_t = 1000)]
    miners: usize,
    /// The proxy binary (default: blgv-proxy next to this executable).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// Drive a peer instead of blgv-proxy, for comparison on the same harness: `para` runs
    /// `para proxy` (`cargo install para --version 0.6.0`; its binary via --proxy-bin, default
    /// `para` on PATH).
    #[arg(long, value_parser = ["para"])]
    peer: Option<String>,
    /// Miner difficulty (vardiff initial = min = max). Default 2^-27: ~32 hashes a share.
    #[arg(long, default_value_t = 1.0 / 134_217_728.0)]
    miner_diff: f64,
    /// Upstream difficulty = miner difficulty × this: about one share in this many is
    /// forwarded (1 = all).
    #[arg(long, default_value_t = 16.0)]
    forward_every: f64,
    /// Spread connections over this many source addresses 127.0.0.2…; default one per
    /// 10,000 miners.
    #[arg(long)]
    source_ips: Option<usize>,
    /// Connection handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// New clean jobs to time the fan-out of.
    #[arg(long)]
    fanout_rounds: Option<usize>,
    /// Seconds to hold the idle connections.
    #[arg(long, default_value_t = 2.0)]
    hold_secs: f64,
    /// Pacer sleep between share batches, µs.
    #[arg(long, default_value_t = 100)]
    tick_us: u64,
    /// blgv-proxy's `proxy.threads` (default: the proxy's own, one worker per core).
    #[arg(long)]
    proxy_threads: Option<usize>,
    /// Harness runtime worker threads (the proxy gets its own).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// BLGV_LOG for the proxy.
    #[arg(long, default_value = "warn")]
    proxy_log: String,
    /// Keep the run directory (config, proxy.log, ledger).
    #[arg(long)]
    keep_dir: bool,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// `perf record` the proxy into this file (connections: from the first connect to the
    /// end of the hold; shares: warm-up + measured window). Profile runs are not measurement
    /// runs: perf costs the proxy CPU.
    #[arg(long)]
    perf_record: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (common, scenario, default_rounds) = match cli.command {
        Command::RunProxy { config } => {
            return match load::process::run_proxy_here(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::FloorServer { skip_final_read } => {
            let opts = load::floor_server::ServerOptions { skip_final_read };
            return match load::floor_server::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("floor-server error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Floor { mode } => {
            let result = match mode {
                FloorMode::Shares {
                    miners,
                    rate,
                    secs,
                    warmup_secs,
                    tick_us,
                    skip_final_read,
                } => load::floor::shares(&load::floor::SharesOptions {
                    miners,
                    rate,
                    secs,
                    warmup_secs,
                    tick: Duration::from_micros(tick_us),
                    skip_final_read,
                }),
                FloorMode::Fanout {
                    miners,
                    rounds,
                    source_ips,
                    sender_threads,
                } => load::floor::fanout(&load::floor::FanoutOptions {
                    miners,
                    rounds,
                    source_ips,
                    sender_threads,
                }),
            };
            return match result {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Connections { common } => (common, Scenario::Connections, 5),
        Command::Shares {
            common,
            rate,
            secs,
            warmup_secs,
        } => (
            common,
            Scenario::Shares {
                rate,
                secs,
                warmup: warmup_secs,
            },
            1,
        ),
    };
    match run(common, scenario, default_rounds) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(c: Common, scenario: Scenario, default_rounds: usize) -> anyhow::Result<bool> {
    let proxy = match (c.peer.as_deref(), &c.proxy_bin) {
        (Some(_), Some(p)) => ProxyCommand::para(p),
        (Some(_), None) => ProxyCommand::para("para"),
        (None, Some(p)) => ProxyCommand::binary(p),
        (None, None) => ProxyCommand::next_to_current_exe()?,
    };
    let mut opts = Options::new(scenario, c.miners, proxy);
    opts.miner_difficulty = c.miner_diff;
    opts.forward_every = c.forward_every;
    opts.source_ips = c.source_ips;
    opts.connect_concurrency = c.connect_concurrency;
    opts.fanout_rounds = c.fanout_rounds.unwrap_or(default_rounds);
    opts.hold = Duration::from_secs_f64(c.hold_secs);
    opts.tick = Duration::from_micros(c.tick_us);
    opts.proxy_log = c.proxy_log;
    opts.keep_dir = c.keep_dir;
    opts.perf_record = c.perf_record;
    opts.proxy_threads = c.proxy_threads;
    opts.verbose = true;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(c.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(load::run(&opts))?;
    if c.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(report.ok())
}
