//! `blgv-demo`: a whole simulated site on this machine, no hardware and no internet.
//!
//! A test pool (DEMO: a stand-in for the upstream pool, refereeing every share), the real
//! `blgv-proxy` (the same library the binary runs), and a dozen simulated ASICs that really hash
//! at low difficulty. Prints what happens every few seconds; Ctrl-C stops everything cleanly.

use blgv_tests::{MinerConfig, SimMiner, SubscribeStyle, TestPool, TestPoolConfig};
use clap::Parser;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "blgv-demo",
    about = "Run a simulated mining site: pool, blgv-proxy and hashing ASICs"
)]
struct Args {
    /// Simulated ASICs.
    #[arg(long, default_value_t = 12)]
    miners: usize,
    /// Where the proxy listens for ASICs (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:3333")]
    listen: String,
    /// Stop after this many seconds (0 = run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Seconds between status lines.
    #[arg(long, default_value_t = 5)]
    every: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BLGV_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();

    // Pool difficulty 2^-14 and miners at 2^-18: one local share in 16 goes upstream.
    let pool = TestPool::start(TestPoolConfig {
        difficulty: 1.0 / 16_384.0,
        job_interval: Some(Duration::from_secs(10)),
        ..Default::default()
    })?;
    let data = std::env::temp_dir().join(format!("blgv-demo-{}", std::process::id()));
    std::fs::create_dir_all(&data)?;
    let ledger = data.join("ledger.db");
    let config_text = format!(
        "[proxy]\nlisten = \"{listen}\"\n\
         [[upstreams]]\nname = \"demo-pool\"\nurl = \"{pool}\"\nuser = \"demo.site\"\n\
         [vardiff]\ninitial = 3.814697265625e-6\nmin = 9.5367431640625e-7\nmax = 6.103515625e-5\ntarget_shares_per_minute = 30\nretarget_secs = 20\n\
         [ledger]\npath = {ledger:?}\n\
         [api]\nlisten = \"127.0.0.1:8081\"\n",
        listen = args.listen,
        pool = pool.addr(),
    );
    let config = blgv_proxy::Config::from_toml_with_env(
        &config_text,
        std::path::Path::new("(demo defaults)"),
        std::env::vars(),
    )?;
    let proxy = match blgv_proxy::start(config.clone()).await {
        Ok(p) => p,
        Err(
            e @ (blgv_proxy::StartError::Listen { .. } | blgv_proxy::StartError::ApiListen { .. }),
        ) => {
            eprintln!("note: {e}; using any free port instead");
            let mut c = config;
            c.proxy.listen = "127.0.0.1:0".parse()?;
            c.api.listen = "127.0.0.1:0".parse()?;
            blgv_proxy::start(c).await?
        }
        Err(e) => return Err(e.into()),
    };

    println!("BLGV demo site");
    println!(
        "  pool (DEMO stand-in, referees every share): {}",
        pool.addr()
    );
    println!(
        "  blgv-proxy: stratum+tcp://{}  (point a real miner here too)",
        proxy.local_addr()
    );
    if let Some(api) = proxy.api_addr() {
        println!("  site dashboard: http://{api}/   (status API under /api, metrics at /metrics)");
    }
    println!("  ledger: {}", ledger.display());
    println!(
        "  {} simulated ASICs hashing; Ctrl-C to stop\n",
        args.miners
    );

    let miners: Vec<SimMiner> = (0..args.miners)
        .map(|i| {
            let mut c = MinerConfig::new(proxy.local_addr(), format!("asic{i:02}"));
            c.subscribe_style = [
                SubscribeStyle::Empty,
                SubscribeStyle::Agent,
                SubscribeStyle::AgentNull,
                SubscribeStyle::AgentSession,
            ][i % 4];
            c.version_rolling = i % 2 == 0;
            c.extranonce_subscribe = true;
            c.hashrate = 30_000;
            SimMiner::spawn(c)
        })
        .collect();

    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(args.every.max(1)));
    tick.tick().await;
    loop {
        let done = args.seconds > 0 && started.elapsed() >= Duration::from_secs(args.seconds);
        if done {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => { println!("\nCtrl-C: stopping"); break; }
        }
        let s = proxy.stats();
        let p = pool.stats();
        let hashes: u64 = miners.iter().map(|m| m.stats().hashes).sum();
        println!(
            "[{:>4}s] miners {:>3} | shares accepted {:>6} rejected {:>3} | forwarded {:>5} → pool accepted {:>5} invalid {} | upstream rejects of local accepts {} | {:.0} kH/s",
            started.elapsed().as_secs(),
            s.miners_connected,
            s.shares_accepted,
            s.shares_rejected,
            s.shares_forwarded,
            p.shares_accepted,
            p.invalid_shares.len(),
            s.upstream_rejected,
            hashes as f64 / started.elapsed().as_secs_f64() / 1000.0,
        );
    }
    let s = proxy.stats();
    for m in miners {
        m.stop().await;
    }
    proxy.shutdown().await;
    pool.stop().await;
    println!(
        "summary: {} shares accepted, {} forwarded, {} upstream rejects; ledger kept at {}",
        s.shares_accepted,
        s.shares_forwarded,
        s.upstream_rejected,
        ledger.display()
    );
    Ok(())
}
