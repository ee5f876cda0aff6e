//! `blgv-demo`: a complete simulated mining site on this machine, no hardware, no internet.
//!
//! * the DEMO chain: a regtest-style Bitcoin chain served by a Bitcoin Core JSON-RPC stand-in
//!   (inside this process);
//! * `blgv-cloud`, the real pool coordinator binary, taking templates from the DEMO chain;
//! * `blgv-proxy`, the real site proxy binary, mining to that pool, with meters, grid signals,
//!   curtailment and managed miners in the config file it is given;
//! * a dozen simulated ASICs that really hash (at tiny difficulty), each with an emulated
//!   firmware API (cgminer, LuxOS, Braiins OS, Whatsminer, Vnish) whose pause stops its hashing
//!   and lowers its power;
//! * an SDM630 meter on Modbus TCP reading the machines' power, an embedded MQTT broker, and a
//!   grid operator who asks the site to cut its power to half after a minute, then lifts it.
//!
//! Prints where the dashboards are, what happens, and a status line every few seconds. Ctrl-C
//! (or `--seconds N`) stops everything in order and exits 0. The last line is a machine-readable
//! `summary:` (the end-to-end test tests/tests/demo_smoke.rs reads it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use blgv_tests::demo::broker::Broker;
use blgv_tests::demo::child::{find_binary, ChildProcess};
use blgv_tests::demo::config::{cloud_toml, proxy_toml, CloudSettings, ProxySettings};
use blgv_tests::demo::grid::GridOperator;
use blgv_tests::demo::ports::{pick_held, Picked};
use blgv_tests::demo::site::Machines;
use blgv_tests::demo::status::{Apis, CloudView, EnergyView, ProxyView};
use blgv_tests::node::{NodeConfig, NodeStandIn};
use blgv_tests::SimMiner;
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "blgv-demo",
    about = "Run a complete simulated mining site: DEMO chain, blgv-cloud, blgv-proxy, hashing \
             ASICs with firmware APIs, a power meter, and a grid operator who curtails the site",
    after_help = "Times (--seconds, --curtail-after, --curtail-for) count from the moment the \
                  site is up. Every port falls back to a free one when taken; 0 = any free port. \
                  Everything listens on 127.0.0.1 only."
)]
struct Args {
    /// Simulated ASICs.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u16).range(1..=100))]
    miners: u16,
    /// Stop after this many seconds (0 = run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Seconds between status lines.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    every: u64,
    /// When the grid operator asks the site to cut its power (0 = never).
    #[arg(long, default_value_t = 60)]
    curtail_after: u64,
    /// How long the curtailment lasts before the grid operator lifts it.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_000))]
    curtail_for: u64,
    /// The limit, in percent of the site's power when the signal is sent.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(5..=95))]
    curtail_percent: u8,
    /// Hashes per second of each simulated ASIC (their CPU cost; 12 × 30 000 is well under one
    /// core).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1_000..=2_000_000))]
    hashrate: u64,
    /// Share difficulty the pool asks of the proxy. On the DEMO chain every such share is a
    /// block: with the defaults, 12 ASICs find one every 6 to 10 s.
    #[arg(long, default_value_t = 1.0 / 2048.0)]
    pool_difficulty: f64,
    /// Share difficulty the proxy gives the ASICs: a share every 2 to 3 s each by default.
    #[arg(long, default_value_t = 1.0 / 65_536.0)]
    miner_difficulty: f64,
    /// Seconds per energy report from the site to the pool (production sites: 300).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    energy_every: u64,
    /// blgv-proxy's Stratum port for the ASICs.
    #[arg(long, default_value_t = 3333)]
    stratum_port: u16,
    /// blgv-proxy's status API and dashboard.
    #[arg(long, default_value_t = 8081)]
    api_port: u16,
    /// blgv-cloud's Stratum port for the proxy.
    #[arg(long, default_value_t = 3334)]
    cloud_stratum_port: u16,
    /// blgv-cloud's API and dashboard.
    #[arg(long, default_value_t = 8080)]
    cloud_api_port: u16,
    /// The DEMO chain's JSON-RPC (regtest's usual 18443).
    #[arg(long, default_value_t = 18443)]
    node_port: u16,
    /// The embedded MQTT broker.
    #[arg(long, default_value_t = 1883)]
    mqtt_port: u16,
    /// Where the configs, ledgers and logs go (default: a new directory under the system's
    /// temporary directory). The ledgers in it are started afresh, as the DEMO chain is.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The blgv-cloud binary (default: next to this executable).
    #[arg(long)]
    cloud_bin: Option<PathBuf>,
    /// The blgv-proxy binary (default: next to this executable).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
}

const ACCOUNT: &str = "demo";
const SITE_ID: &str = "site1";
const SIGNAL_ID: &str = "demo-curtail-1";

fn main() -> ExitCode {
    let args = Args::parse();
    // Quiet by default: the story is on stdout, the children log into their files. rumqttd
    // logs each closed connection as an error (the start-up probe is one): off unless asked.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BLGV_LOG")
                .unwrap_or_else(|_| "warn,rumqttd=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The demo's main future runs on this (the main) thread: the children are spawned from it,
    // and their parent-death signal is tied to the thread that spawned them.
    let result = runtime.block_on(run(args));
    // Connections of the embedded broker and emulators may still be parked on the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_args(a: &Args) -> anyhow::Result<()> {
    for (name, d) in [
        ("--pool-difficulty", a.pool_difficulty),
        ("--miner-difficulty", a.miner_difficulty),
    ] {
        if !(d.is_finite() && d > 0.0) {
            bail!("{name} {d} must be a positive number, e.g. 0.0005");
        }
    }
    if a.miner_difficulty > a.pool_difficulty {
        bail!(
            "--miner-difficulty {} is above --pool-difficulty {}: the proxy could forward no \
             share; keep the miners' difficulty at or below the pool's",
            a.miner_difficulty,
            a.pool_difficulty
        );
    }
    Ok(())
}

/// Ctrl-C or SIGTERM cancels `token` (a clean stop). A second one exits at once: the children
/// then get SIGTERM from the kernel (their parent-death signal).
fn watch_signals(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => println!("\nCtrl-C: stopping the demo site (Ctrl-C again to quit at once)"),
            _ = term.recv() => println!("\nSIGTERM: stopping the demo site"),
        }
        token.cancel();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("second signal: quitting without waiting for the children");
        std::process::exit(130);
    });
    Ok(())
}

/// "1 block", "2 blocks".
fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Seconds since `t0`, for event lines.
fn stamp(t0: Instant) -> String {
    format!("[{:>6.1}s]", t0.elapsed().as_secs_f64())
}

/// Everything the demo owns while it runs, stopped in reverse order by [`Site::shutdown`].
struct Site {
    node: NodeStandIn,
    broker: Broker,
    machines: Machines,
    cloud: ChildProcess,
    proxy: Option<ChildProcess>,
    grid: Option<GridOperator>,
    miners: Vec<SimMiner>,
}

impl Site {
    /// Miners first (no more shares), then the proxy (it flushes its ledger and says goodbye
    /// on the broker), then the pool, then the simulated hardware. Returns whether every child
    /// exited cleanly.
    async fn shutdown(mut self) -> bool {
        let mut clean = true;
        for m in self.miners.drain(..) {
            m.stop().await;
        }
        let grace = Duration::from_secs(15);
        if let Some(mut proxy) = self.proxy.take() {
            clean &= report_stop(&mut proxy, grace).await;
        }
        clean &= report_stop(&mut self.cloud, grace).await;
        if let Some(grid) = self.grid.take() {
            grid.disconnect().await;
        }
        self.machines.stop();
        self.broker.stop();
        self.node.stop().await;
        clean
    }
}

async fn report_stop(child: &mut ChildProcess, grace: Duration) -> bool {
    match child.stop(grace).await {
        Ok(status) if status.success() => {
            println!("  {} stopped cleanly", child.name);
            true
        }
        // Stopped by the demo's own SIGINT before it had set up its handlers (a Ctrl-C in the
        // first instants of the start): it had nothing to save yet. It is in its own process
        // group, so the SIGINT can only be the demo's.
        Ok(status)
            if std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGINT) =>
        {
            println!("  {} stopped (it was still starting)", child.name);
            true
        }
        Ok(status) => {
            println!(
                "  {} exited with {status}; its log: {}\n{}",
                child.name,
                child.log.display(),
                child.log_tail(15)
            );
            false
        }
        Err(e) => {
            println!("  {e:#}");
            false
        }
    }
}

/// Waits until `ready` answers true, the child exits, or the user stops the demo.
async fn wait_ready<F, Fut>(
    child: &mut ChildProcess,
    stop: &CancellationToken,
    what: &str,
    mut ready: F,
) -> anyhow::Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if stop.is_cancelled() {
            return Ok(false);
        }
        if let Some(status) = child.exited() {
            bail!(
                "{} exited during start-up ({status}); last lines of {}:\n{}",
                child.name,
                child.log.display(),
                child.log_tail(20)
            );
        }
        if ready().await {
            return Ok(true);
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer on {what} within 60 s; last lines of {}:\n{}",
                child.name,
                child.log.display(),
                child.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ports, picked together so two fallbacks never collide.
struct Ports {
    node: Picked,
    mqtt: Picked,
    cloud_stratum: Picked,
    cloud_api: Picked,
    stratum: Picked,
    api: Picked,
}

fn pick_ports(a: &Args) -> anyhow::Result<Ports> {
    let mut held = Vec::new();
    let mut pick = |port: u16, what: &str| -> anyhow::Result<Picked> {
        let (p, l) = pick_held(port).with_context(|| format!("finding a port for {what}"))?;
        held.push(l);
        Ok(p)
    };
    let ports = Ports {
        node: pick(a.node_port, "the DEMO chain")?,
        mqtt: pick(a.mqtt_port, "the MQTT broker")?,
        cloud_stratum: pick(a.cloud_stratum_port, "blgv-cloud's Stratum")?,
        cloud_api: pick(a.cloud_api_port, "blgv-cloud's API")?,
        stratum: pick(a.stratum_port, "blgv-proxy's Stratum")?,
        api: pick(a.api_port, "blgv-proxy's API")?,
    };
    drop(held); // the servers bind them next
    Ok(ports)
}

fn prepare_data_dir(a: &Args) -> anyhow::Result<PathBuf> {
    let dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("blgv-demo-{}", std::process::id())));
    std::fs::create_dir_all(&dir).with_context(|| {
        format!(
            "creating the data directory {}; fix: pass --data-dir DIR with a writable directory",
            dir.display()
        )
    })?;
    // The DEMO chain starts at height 100 every run: ledgers from an earlier run would hold
    // blocks of a chain that no longer exists.
    for name in ["cloud.db", "proxy-ledger.db"] {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let p = dir.join(format!("{name}{suffix}"));
            if p.exists() {
                std::fs::remove_file(&p)
                    .with_context(|| format!("removing the old ledger {}", p.display()))?;
            }
        }
    }
    Ok(dir)
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// What the proxy's start and the main loop need from the set-up.
struct Setup<'a> {
    args: &'a Args,
    ports: Ports,
    data: PathBuf,
    proxy_bin: PathBuf,
    apis: Apis,
    stop: CancellationToken,
    site_mqtt_password: String,
    grid_mqtt_password: String,
    energy_token: String,
    launched: Instant,
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let launched = Instant::now();
    check_args(&args)?;
    let cloud_bin = find_binary("blgv-cloud", args.cloud_bin.as_deref())?;
    let proxy_bin = find_binary("blgv-proxy", args.proxy_bin.as_deref())?;
    let stop = CancellationToken::new();
    watch_signals(stop.clone())?;
    let data = prepare_data_dir(&args)?;
    let ports = pick_ports(&args)?;

    // The DEMO chain.
    let rpc_password = random_hex(12);
    let node = NodeStandIn::start_on(
        ports.node.addr,
        NodeConfig {
            rpc_user: "demo".into(),
            rpc_password: rpc_password.clone(),
            // A held longpoll delays the pool's shutdown by at most this much.
            longpoll_timeout: Duration::from_secs(10),
            ..NodeConfig::default()
        },
    )
    .await
    .with_context(|| format!("starting the DEMO chain's node on {}", ports.node.addr))?;

    // The grid operator's broker: the site and the operator each have a login.
    let site_mqtt_password = random_hex(8);
    let grid_mqtt_password = random_hex(8);
    let broker = Broker::start(
        ports.mqtt.addr,
        &[
            (SITE_ID, &site_mqtt_password),
            ("grid", &grid_mqtt_password),
        ],
    )
    .await?;

    // The machines and the meter.
    let n = usize::from(args.miners);
    let machines = Machines::start(n, ACCOUNT)
        .await
        .context("starting the simulated ASICs' firmware APIs and the meter")?;

    // The pool.
    let energy_token = random_hex(16);
    let cloud_cfg = data.join("cloud.toml");
    std::fs::write(
        &cloud_cfg,
        cloud_toml(&CloudSettings {
            stratum: ports.cloud_stratum.addr,
            api: ports.cloud_api.addr,
            node_url: &node.url(),
            node_user: "demo",
            node_password: &rpc_password,
            difficulty: args.pool_difficulty,
            ledger: &data.join("cloud.db"),
            site_id: SITE_ID,
            energy_token: &energy_token,
        }),
    )
    .with_context(|| format!("writing {}", cloud_cfg.display()))?;
    let mut cloud = ChildProcess::spawn(
        "blgv-cloud",
        &cloud_bin,
        &cloud_cfg,
        &data.join("cloud.log"),
    )?;
    let apis = Apis::new(ports.api.addr, ports.cloud_api.addr);

    // From here on, whatever happens, the children are stopped before the demo returns.
    let up = wait_ready(&mut cloud, &stop, "its API", || apis.cloud_up()).await;
    let mut site = Site {
        node,
        broker,
        machines,
        cloud,
        proxy: None,
        grid: None,
        miners: Vec::new(),
    };
    let setup = Setup {
        args: &args,
        ports,
        data,
        proxy_bin,
        apis,
        stop,
        site_mqtt_password,
        grid_mqtt_password,
        energy_token,
        launched,
    };
    let outcome = match up {
        Ok(true) => start_proxy_and_run(&setup, &mut site).await,
        // Ctrl-C during start-up: a clean stop.
        Ok(false) => Ok(Outcome {
            ok: true,
            ..Outcome::default()
        }),
        Err(e) => Err(e),
    };
    if let Err(e) = &outcome {
        eprintln!("error: {e:#}");
    }
    println!("stopping: miners, blgv-proxy, blgv-cloud, simulated hardware");
    let height = site.node.height();
    let clean = site.shutdown().await;
    let mut outcome = outcome.unwrap_or_default();
    outcome.height = outcome.height.max(height);
    outcome.print_summary(clean, &setup.data);
    Ok(clean && outcome.ok)
}

/// What happened, for the summary.
#[derive(Default)]
struct Outcome {
    /// false: the demo stopped because something failed.
    ok: bool,
    blocks: usize,
    height: u32,
    shares_accepted: u64,
    shares_to_pool: u64,
    upstream_rejected: u64,
    curtail: Option<Curtailment>,
    energy: EnergyView,
}

/// The curtailment's story, as the demo saw it.
#[derive(Clone)]
struct Curtailment {
    full_kw: f64,
    limit_kw: f64,
    sent_at: Instant,
    acked: Option<String>,
    /// Said that no acknowledgement came (once).
    warned_no_ack: bool,
    under_after: Option<Duration>,
    /// Highest reading while the signal was in force, once under the limit.
    max_kw_after_under: f64,
    paused_max: usize,
    paused_names: Vec<String>,
    ended_at: Option<Instant>,
    restored_after: Option<Duration>,
}

impl Outcome {
    fn print_summary(&self, clean: bool, data: &Path) {
        println!(
            "\nDEMO chain: {} found (height {}); shares accepted by the proxy {}, sent to the pool {}, rejected upstream {}",
            plural(self.blocks, "block"), self.height, self.shares_accepted, self.shares_to_pool, self.upstream_rejected
        );
        let mut fields = vec![
            format!("blocks_found={}", self.blocks),
            format!("chain_height={}", self.height),
            format!("shares_accepted={}", self.shares_accepted),
            format!("shares_to_pool={}", self.shares_to_pool),
            format!("upstream_rejected={}", self.upstream_rejected),
        ];
        match &self.curtail {
            None => {
                println!("curtailment: not started (see --curtail-after)");
                fields.push("curtailment=not-started".into());
            }
            Some(c) => {
                let handled = c.under_after.is_some() && c.restored_after.is_some();
                println!(
                    "curtailment: limit {:.1} kW ({:.1} kW before); under the limit after {}; {} miners paused through firmware; all restored {}",
                    c.limit_kw,
                    c.full_kw,
                    c.under_after.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64())),
                    c.paused_max,
                    c.restored_after
                        .map_or("— not yet".into(), |d| format!("{:.1} s after the signal ended", d.as_secs_f64())),
                );
                fields.push(format!(
                    "curtailment={}",
                    if handled { "handled" } else { "incomplete" }
                ));
                fields.push(format!("limit_kw={:.1}", c.limit_kw));
                fields.push(format!("full_kw={:.1}", c.full_kw));
                fields.push(format!("ack={}", c.acked.as_deref().unwrap_or("none")));
                if let Some(d) = c.under_after {
                    fields.push(format!("under_limit_after_s={:.1}", d.as_secs_f64()));
                    fields.push(format!("max_kw_while_limited={:.1}", c.max_kw_after_under));
                }
                fields.push(format!("paused_by_firmware={}", c.paused_max));
                fields.push(format!("paused={}", c.paused_names.join(",")));
                if let Some(d) = c.restored_after {
                    fields.push(format!("restored_after_s={:.1}", d.as_secs_f64()));
                }
            }
        }
        let e = &self.energy;
        println!(
            "energy: {} acknowledged by the pool ({} queued); the pool shows {:.3} kWh, {:.0} % renewable, {:.1} gCO2e",
            plural(e.sent as usize, "report"),
            e.queued,
            e.kwh,
            e.renewable_percent,
            e.gco2e
        );
        fields.push(format!("energy_reports={}", e.sent));
        fields.push(format!("energy_kwh={:.4}", e.kwh));
        fields.push(format!("gco2e={:.2}", e.gco2e));
        fields.push(format!("clean_exit={}", if clean { "yes" } else { "no" }));
        println!("configs, ledgers and logs kept in {}", data.display());
        println!("summary: {}", fields.join(" "));
    }
}

async fn start_proxy_and_run(setup: &Setup<'_>, site: &mut Site) -> anyhow::Result<Outcome> {
    let Setup {
        args,
        ports,
        data,
        proxy_bin,
        apis,
        stop,
        site_mqtt_password,
        grid_mqtt_password,
        energy_token,
        launched,
    } = setup;
    let admin_token = random_hex(16);
    let proxy_cfg = data.join("proxy.toml");
    std::fs::write(
        &proxy_cfg,
        proxy_toml(&ProxySettings {
            stratum: ports.stratum.addr,
            api: ports.api.addr,
            admin_token: &admin_token,
            cloud_stratum: ports.cloud_stratum.addr,
            account: ACCOUNT,
            miner_difficulty: args.miner_difficulty,
            ledger: &data.join("proxy-ledger.db"),
            meter: site.machines.meter.addr(),
            broker: site.broker.addr(),
            site_id: SITE_ID,
            mqtt_user: SITE_ID,
            mqtt_password: site_mqtt_password,
            miners_toml: &site.machines.miners_toml(),
            cloud_api: ports.cloud_api.addr,
            energy_token,
            energy_interval_secs: args.energy_every,
        }),
    )
    .with_context(|| format!("writing {}", proxy_cfg.display()))?;
    let proxy = site.proxy.insert(ChildProcess::spawn(
        "blgv-proxy",
        proxy_bin,
        &proxy_cfg,
        &data.join("proxy.log"),
    )?);
    if !wait_ready(proxy, stop, "its API", || apis.proxy_up()).await? {
        return Ok(Outcome {
            ok: true,
            ..Outcome::default()
        });
    }
    site.grid = Some(GridOperator::connect(
        site.broker.addr(),
        "grid",
        grid_mqtt_password,
        SITE_ID,
    ));

    let n = site.machines.asics.len();
    println!(
        "BLGV demo site: everything on this machine, on 127.0.0.1 (up in {:.1} s)",
        launched.elapsed().as_secs_f64()
    );
    println!(
        "  DEMO chain        http://{}{}  regtest-style chain served by a Bitcoin Core stand-in inside this demo (height {}); not a real network",
        ports.node.addr,
        ports.node.note(args.node_port),
        site.node.height()
    );
    println!(
        "  blgv-cloud        pool dashboard http://{}/{}   (API /api/stats, /api/blocks)   Stratum {}{}   pid {}",
        ports.cloud_api.addr,
        ports.cloud_api.note(args.cloud_api_port),
        ports.cloud_stratum.addr,
        ports.cloud_stratum.note(args.cloud_stratum_port),
        site.cloud.pid().unwrap_or(0)
    );
    println!(
        "  blgv-proxy        site dashboard http://{}/{}   (API /api/status, /api/curtailment, /metrics)   pid {}",
        ports.api.addr,
        ports.api.note(args.api_port),
        proxy.pid().unwrap_or(0)
    );
    println!(
        "                    ASICs connect to stratum+tcp://{}{}  (a real miner can too)",
        ports.stratum.addr,
        ports.stratum.note(args.stratum_port)
    );
    // The firmware APIs, four machines a line.
    let apis_list: Vec<String> = site
        .machines
        .asics
        .iter()
        .map(|a| format!("{} {} {}", a.name, a.model.firmware.as_str(), a.api))
        .collect();
    for (i, chunk) in apis_list.chunks(4).enumerate() {
        let label = if i == 0 {
            format!("{n} ASICs")
        } else {
            String::new()
        };
        println!(
            "  {label:<18}{}{}",
            if i == 0 {
                "firmware APIs: "
            } else {
                "               "
            },
            chunk.join(", ")
        );
    }
    println!(
        "  SDM630 meter      modbus tcp {}   (site = machines + {:.1} kW other load)",
        site.machines.meter.addr(),
        blgv_tests::demo::site::OTHER_LOAD_W / 1000.0
    );
    println!(
        "  MQTT broker       mqtt://{}{}   grid signals on blgv/site/{SITE_ID}/curtailment",
        ports.mqtt.addr,
        ports.mqtt.note(args.mqtt_port)
    );
    println!(
        "  configs           {}  (read this one: a real proxy config)",
        proxy_cfg.display()
    );
    println!("                    {}", data.join("cloud.toml").display());
    println!(
        "  logs              {}  {}",
        data.join("proxy.log").display(),
        data.join("cloud.log").display()
    );
    println!(
        "  try               curl -X POST -H 'Authorization: Bearer {admin_token}' http://{}/api/miners/{ACCOUNT}.asic00/pause",
        ports.api.addr
    );
    match (args.curtail_after, args.seconds) {
        (0, _) => println!("  grid operator     no curtailment in this run (--curtail-after 0)"),
        (after, secs) if secs > 0 && after >= secs => println!(
            "  grid operator     no curtailment in this run (--curtail-after {after} ≥ --seconds {secs})"
        ),
        (after, _) => println!(
            "  grid operator     will ask for {} % of site power at {after} s, for {} s",
            args.curtail_percent, args.curtail_for
        ),
    }
    println!(
        "  stop with Ctrl-C{}\n",
        if args.seconds > 0 {
            format!(" (or it stops by itself after {} s)", args.seconds)
        } else {
            String::new()
        }
    );

    site.miners = site
        .machines
        .start_miners(ports.stratum.addr, args.hashrate);
    let t0 = Instant::now();
    let mut out = Outcome::default();
    let mut blocks_seen = 0usize;
    let mut announced_all_connected = false;
    let mut announced_online = false;
    let mut last_report: Option<(bool, u64)> = None;
    let mut proxy_view = ProxyView::default();
    let mut cloud_view = CloudView::default();
    let mut next_status = t0 + Duration::from_secs(args.every);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let until = (args.seconds > 0).then(|| t0 + Duration::from_secs(args.seconds));
    let curtail_at = (args.curtail_after > 0).then(|| t0 + Duration::from_secs(args.curtail_after));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let now = Instant::now();
        if until.is_some_and(|u| now >= u) {
            println!(
                "{} {} s are up: stopping the demo site",
                stamp(t0),
                args.seconds
            );
            break;
        }
        for child in [site.proxy.as_mut(), Some(&mut site.cloud)]
            .into_iter()
            .flatten()
        {
            if let Some(status) = child.exited() {
                bail!(
                    "{} exited unexpectedly ({status}); last lines of {}:\n{}",
                    child.name,
                    child.log.display(),
                    child.log_tail(20)
                );
            }
        }

        // Blocks on the DEMO chain, straight from the node that accepted them.
        let ns = site.node.stats();
        for b in ns.accepted_blocks.iter().skip(blocks_seen) {
            println!(
                "{} block {} found on the DEMO chain: {}…  ({} transactions, coinbase {:.8} BTC to the pool)",
                stamp(t0),
                b.height,
                &b.hash[..16],
                b.tx_count,
                b.coinbase_value_sats as f64 / 1e8
            );
        }
        blocks_seen = ns.accepted_blocks.len();
        out.blocks = blocks_seen;
        out.height = ns.height;

        if !announced_all_connected && site.miners.iter().all(|m| m.stats().accepted > 0) {
            announced_all_connected = true;
            println!(
                "{} all {n} ASICs are mining through blgv-proxy (each has had shares accepted)",
                stamp(t0)
            );
        }

        // What the site tells the grid operator.
        let grid = site.grid.as_ref().expect("set above");
        for (topic, v) in grid.take_new() {
            if grid.is_status(&topic) && v == "online" && !announced_online {
                announced_online = true;
                println!(
                    "{} blgv-proxy is online on the grid operator's broker (status topic)",
                    stamp(t0)
                );
            } else if grid.is_ack(&topic) {
                let status = v["status"].as_str().unwrap_or("?").to_string();
                println!(
                    "{} site → grid operator: signal {} {status}{}",
                    stamp(t0),
                    v["signal_id"].as_str().unwrap_or("?"),
                    v["reason"]
                        .as_str()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
                if let Some(c) = out.curtail.as_mut() {
                    if v["signal_id"] == SIGNAL_ID && c.acked.is_none() {
                        c.acked = Some(status);
                    }
                }
            } else if grid.is_report(&topic) {
                let key = (
                    v["compliant"] == true,
                    v["miners_shed"].as_u64().unwrap_or(0),
                );
                if last_report != Some(key) {
                    last_report = Some(key);
                    println!(
                        "{} site → grid operator: report: measured {} kW, limit {} kW, {} miners shed, compliant {}",
                        stamp(t0),
                        v["measured_kw"].as_f64().map_or("?".into(), |k| format!("{k:.1}")),
                        v["limit_kw"].as_f64().map_or("?".into(), |k| format!("{k:.1}")),
                        key.1,
                        key.0
                    );
                }
            }
        }

        // The grid operator's script: curtail, then lift it.
        let site_kw = site.machines.site_kw();
        let paused = site.machines.paused();
        if out.curtail.is_none() && curtail_at.is_some_and(|at| now >= at) {
            let full_kw = site_kw;
            let limit_kw =
                (full_kw * f64::from(args.curtail_percent) / 100.0 * 10.0).round() / 10.0;
            // The signal would expire by itself a minute after the operator means to lift it,
            // should that message never arrive (an expired signal restores the site).
            grid.curtail(SIGNAL_ID, limit_kw, args.curtail_for + 60)
                .await?;
            println!(
                "{} grid operator → site: limit {limit_kw:.1} kW ({} % of {full_kw:.1} kW) for {} s, signal {SIGNAL_ID}",
                stamp(t0),
                args.curtail_percent,
                args.curtail_for
            );
            out.curtail = Some(Curtailment {
                full_kw,
                limit_kw,
                sent_at: now,
                acked: None,
                warned_no_ack: false,
                under_after: None,
                max_kw_after_under: 0.0,
                paused_max: 0,
                paused_names: Vec::new(),
                ended_at: None,
                restored_after: None,
            });
        }
        if let Some(c) = out.curtail.as_mut() {
            if c.acked.is_none() && !c.warned_no_ack && now >= c.sent_at + Duration::from_secs(5) {
                c.warned_no_ack = true;
                println!(
                    "{} warning: the site has not acknowledged the signal after 5 s; see {}",
                    stamp(t0),
                    data.join("proxy.log").display()
                );
            }
            if c.ended_at.is_none() {
                if paused.len() > c.paused_max {
                    c.paused_max = paused.len();
                    c.paused_names = paused.iter().map(|a| a.name.clone()).collect();
                }
                match c.under_after {
                    None if site_kw <= c.limit_kw => {
                        let took = now - c.sent_at;
                        c.under_after = Some(took);
                        c.max_kw_after_under = site_kw;
                        println!(
                            "{} curtailment handled: site at {site_kw:.1} kW ≤ limit {:.1} kW {:.1} s after the signal; paused through their firmware APIs: {}",
                            stamp(t0),
                            c.limit_kw,
                            took.as_secs_f64(),
                            paused
                                .iter()
                                .map(|a| format!("{} ({})", a.name, a.model.firmware.as_str()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                    }
                    Some(_) => c.max_kw_after_under = c.max_kw_after_under.max(site_kw),
                    None => {}
                }
                if now >= c.sent_at + Duration::from_secs(args.curtail_for) {
                    grid.end(SIGNAL_ID).await?;
                    c.ended_at = Some(now);
                    println!(
                        "{} grid operator → site: signal {SIGNAL_ID} ended, full power allowed again",
                        stamp(t0)
                    );
                }
            } else if c.restored_after.is_none() && paused.is_empty() {
                let took = now - c.ended_at.unwrap_or(now);
                c.restored_after = Some(took);
                println!(
                    "{} curtailment over: all {n} miners restored through their firmware {:.1} s after the signal ended; site at {site_kw:.1} kW",
                    stamp(t0),
                    took.as_secs_f64()
                );
            }
        }

        // The status line.
        if now >= next_status {
            next_status += Duration::from_secs(args.every);
            let (p, c, e) = tokio::join!(apis.proxy(), apis.cloud(), apis.energy());
            if let Some(e) = e {
                if e.sent > out.energy.sent {
                    println!(
                        "{} site → pool: {} acknowledged; the pool shows {:.3} kWh ({:.0} % renewable), {:.1} gCO2e ({:.0} g/kWh)",
                        stamp(t0),
                        plural(e.sent as usize, "energy report"),
                        e.kwh,
                        e.renewable_percent,
                        e.gco2e,
                        e.g_per_kwh
                    );
                }
                out.energy = e;
            }
            if let Some(p) = p {
                proxy_view = p;
            }
            if let Some(c) = c {
                cloud_view = c;
            }
            out.shares_accepted = proxy_view.shares_accepted;
            out.shares_to_pool = proxy_view.upstream_accepted;
            out.upstream_rejected = proxy_view.upstream_rejected;
            let hashing = site
                .miners
                .iter()
                .zip(&site.machines.asics)
                .filter(|(m, a)| !a.machine.is_paused() && m.stats().authorized)
                .count();
            // The meter's reading now, against the limit the proxy says it obeys.
            let limit = proxy_view.limit_kw.map_or("no limit".to_string(), |l| {
                format!(
                    "limit {l:.1} kW {}",
                    if site_kw <= l { "(under)" } else { "(OVER)" }
                )
            });
            let curtailed = if paused.is_empty() {
                String::new()
            } else {
                format!(
                    " | paused via firmware: {}",
                    paused
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            };
            println!(
                "{} hashing {hashing:>2}/{n} | shares {} ok {} rej, {} to pool | DEMO chain height {} ({}, pool says {}) | site {:.1} kW {limit}{curtailed}",
                stamp(t0),
                proxy_view.shares_accepted,
                proxy_view.shares_rejected,
                proxy_view.upstream_accepted,
                out.height,
                plural(out.blocks, "block"),
                cloud_view.blocks_found,
                site_kw,
            );
        }
    }
    // Final counters for the summary (the proxy is still running here).
    if let Some(e) = apis.energy().await {
        out.energy = e;
    }
    if let Some(p) = apis.proxy().await {
        out.shares_accepted = p.shares_accepted;
        out.shares_to_pool = p.upstream_accepted;
        out.upstream_rejected = p.upstream_rejected;
    }
    out.ok = true;
    Ok(out)
}
