//! Faults under the ledgers, with real parts: the real `blgv-cloud` and `blgv-proxy` binaries
//! killed with SIGKILL under load, again and again, and a real tmpfs under a running pool's and
//! proxy's ledger that fills up, then gets its space back.
//!
//! What must hold:
//! - the pool: every share it answered `true` is in its ledger after any kill (it answers only
//!   once the share is committed), and the database opens clean;
//! - the proxy: its database opens clean after any kill, its counters lose at most what one
//!   flush interval gathered per kill, and the pool holds every share it acknowledged;
//! - a full disk: mining goes on, `/health` and the metrics say why, and every held row is
//!   written once space returns.
//!
//! The disk tests mount a tmpfs, which needs root (as the CI machine and the dev machine run);
//! they fail, not skip, when the mount is refused.

mod common;

use blgv_tests::node::{NodeConfig, NodeStandIn};
use blgv_tests::{wait_until, MinerConfig, SimMiner};
use common::product_binaries::product_binaries;
use common::{cloud_config, init_logging, proxy_config, ApiClient};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn node_config() -> NodeConfig {
    NodeConfig {
        rpc_user: "rpc".into(),
        rpc_password: "secret".into(),
        transactions_per_template: 0,
        segwit: true,
        longpoll_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// Share difficulty 2^-18: 16,384 hashes a share, ~2.4 shares/s per 40 kH/s miner.
const DIFFICULTY: f64 = 1.0 / 262_144.0;

async fn start_pool(node: &NodeStandIn, difficulty: f64, dir: &Path) -> blgv_cloud::PoolHandle {
    let config = cloud_config(&node.url(), difficulty, difficulty, dir);
    let source = blgv_cloud::BitcoindRpc::new(&config.node, bitcoin::Network::Regtest);
    blgv_cloud::start(config, source).await.unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(bin: &Path, config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .env("BLGV_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn pool_rows_by_worker(db: &Path) -> std::collections::BTreeMap<String, u64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT worker, COUNT(*) FROM shares GROUP BY worker")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn accepted(miners: &[SimMiner]) -> u64 {
    miners.iter().map(|m| m.stats().accepted).sum()
}

const KILLS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_killed_under_load_keeps_every_share_it_acknowledged() {
    init_logging();
    let (cloud_bin, _) = product_binaries();
    let node = NodeStandIn::start(node_config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cloud.db");
    let port = free_port();
    let config = dir.path().join("cloud.toml");
    std::fs::write(
        &config,
        format!(
            "[pool]\nlisten = \"127.0.0.1:{port}\"\nnetwork = \"regtest\"\npayout_address = \"{}\"\n\
             [node]\nurl = \"{}\"\nuser = \"rpc\"\npassword = \"secret\"\ntimeout_ms = 2000\n\
             [vardiff]\ninitial = {DIFFICULTY:e}\nmin = {DIFFICULTY:e}\nmax = {DIFFICULTY:e}\n\
             [ledger]\npath = {db:?}\nflush_interval_ms = 100\n\
             [api]\nlisten = \"127.0.0.1:{}\"\n",
            common::PAYOUT_ADDRESS,
            node.url(),
            free_port(),
        ),
    )
    .unwrap();
    let log = dir.path().join("cloud.log");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let miners: Vec<SimMiner> = (0..4)
        .map(|i| {
            let mut c = MinerConfig::new(addr, format!("acct{i}.rig"));
            c.hashrate = 40_000;
            SimMiner::spawn(c)
        })
        .collect();

    for kill in 1..=KILLS {
        let mut child = spawn(&cloud_bin, &config, &log);
        let before = accepted(&miners);
        let loaded = wait_until(Duration::from_secs(30), || accepted(&miners) >= before + 15).await;
        assert!(
            loaded,
            "kill {kill}: the miners got no load through ({} accepted); log {}",
            accepted(&miners),
            log.display()
        );
        child.kill().unwrap(); // SIGKILL, mid-stream
        child.wait().unwrap();
    }
    // Nothing answers now: what the miners saw accepted is final.
    let finals: Vec<_> = miners.iter().map(SimMiner::stats).collect();
    for m in miners {
        m.stop().await;
    }
    assert_eq!(integrity(&db), "ok");
    let rows = pool_rows_by_worker(&db);
    let mut acknowledged = 0;
    for (i, s) in finals.iter().enumerate() {
        let worker = format!("acct{i}.rig");
        let held = rows.get(&worker).copied().unwrap_or(0);
        assert!(
            held >= s.accepted,
            "{worker}: {} shares answered true but only {held} in the ledger after {KILLS} SIGKILLs",
            s.accepted
        );
        assert!(held <= s.submitted, "{worker}: more rows than shares sent");
        acknowledged += s.accepted;
    }
    eprintln!(
        "pool: {KILLS} SIGKILLs under load, {acknowledged} shares acknowledged, all in the ledger \
         ({} rows, the rest answered after the kill never reached the miner); integrity ok",
        rows.values().sum::<u64>()
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_killed_under_load_opens_clean_and_loses_at_most_a_flush_per_kill() {
    init_logging();
    let (_, proxy_bin) = product_binaries();
    let node = NodeStandIn::start(node_config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cloud_dir = dir.path().join("cloud");
    std::fs::create_dir(&cloud_dir).unwrap();
    let cloud = start_pool(&node, DIFFICULTY * 4.0, &cloud_dir).await;
    let port = free_port();
    let flush_ms = 200;
    let db = dir.path().join("proxy.db");
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{port}\"\n[api]\nenabled = false\n\
             [[upstreams]]\nurl = \"stratum+tcp://{}\"\nuser = \"site.proxy\"\n\
             [vardiff]\ninitial = {DIFFICULTY:e}\nmin = {DIFFICULTY:e}\nmax = {DIFFICULTY:e}\n\
             [failover]\nretry_initial_ms = 100\nretry_max_ms = 1000\n\
             [ledger]\npath = {db:?}\nflush_interval_ms = {flush_ms}\n",
            cloud.local_addr()
        ),
    )
    .unwrap();
    let log = dir.path().join("proxy.log");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let miners: Vec<SimMiner> = (0..4)
        .map(|i| {
            let mut c = MinerConfig::new(addr, format!("rig{i}"));
            c.hashrate = 40_000;
            SimMiner::spawn(c)
        })
        .collect();
    let started = Instant::now();
    for kill in 1..=KILLS {
        let mut child = spawn(&proxy_bin, &config, &log);
        let before = accepted(&miners);
        let loaded = wait_until(Duration::from_secs(30), || accepted(&miners) >= before + 15).await;
        assert!(
            loaded,
            "kill {kill}: no load through the proxy; log {}",
            log.display()
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let answered = accepted(&miners) as i64; // final: the proxy is dead
    for m in miners {
        m.stop().await;
    }
    assert_eq!(
        integrity(&db),
        "ok",
        "the proxy's ledger after {KILLS} SIGKILLs"
    );
    let ledger = common::ledger_by_worker(&db);
    let in_ledger: i64 = ledger.values().map(|r| r.accepted).sum();
    // What a kill may take: the counters gathered since the last commit began, i.e. one flush
    // interval plus the commit in flight (an fsync; 500 ms allowed for a loaded disk).
    let per_second = answered as f64 / seconds;
    let window = flush_ms as f64 / 1000.0 + 0.5;
    let bound = (KILLS as f64 * per_second * window).ceil() as i64;
    assert!(
        in_ledger <= answered,
        "the ledger counts {in_ledger} accepted of {answered} answered"
    );
    assert!(
        answered - in_ledger <= bound,
        "{KILLS} kills lost {} accepted counters; at most {bound} ({per_second:.1} shares/s, flush {flush_ms} ms)",
        answered - in_ledger
    );
    // The pool answered the proxy's forwards only once committed: its ledger has them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pool_rows = pool_rows_by_worker(&cloud_dir.join("cloud.db"));
    let pool_held = pool_rows.get("site.proxy").copied().unwrap_or(0);
    assert_eq!(
        pool_held,
        cloud.stats().shares_accepted,
        "every share the pool accepted from the proxy is in its ledger"
    );
    let upstream_in_ledger: i64 = ledger.values().map(|r| r.upstream_accepted).sum();
    assert!(
        upstream_in_ledger as u64 <= pool_held,
        "the proxy claims {upstream_in_ledger} upstream accepts, the pool holds {pool_held}"
    );
    eprintln!(
        "proxy: {KILLS} SIGKILLs, {answered} shares answered, {in_ledger} in its ledger (lost {}, bound {bound}); pool holds all {pool_held} it accepted; integrity ok",
        answered - in_ledger
    );
    cloud.shutdown().await;
    node.stop().await;
}

// ---- A full disk (a real tmpfs) ------------------------------------------------------------

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(parent: &Path, size: &str) -> Tmpfs {
        let path = parent.join("disk");
        std::fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs for the disk-full test failed ({}); it needs root with CAP_SYS_ADMIN",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { path }
    }

    /// Fill the file system to the last byte; returns the filler's path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// `/health`'s status code and the reasons, joined.
async fn health(api: &ApiClient) -> (u16, String) {
    let (code, body) = api.get("/health").await;
    (code, body["reasons"].to_string())
}

async fn wait_health(api: &ApiClient, want: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, reasons) = health(api).await;
        if code == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: /health stayed {code} ({reasons})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The disk-full fault, twice (the second time shows the first recovery left nothing behind):
/// each time `/health` turns 503 naming the ledger, mining goes on (`miner` gets 10 more
/// shares accepted, answered from memory, and the `also` counter grows if given), the metrics
/// say `{prefix}_ledger_commit_failing 1`, and `/health` is 200 again once space returns.
async fn fill_the_disk_twice(
    disk: &Tmpfs,
    api_addr: SocketAddr,
    miner: &SimMiner,
    prefix: &str,
    also: Option<&dyn Fn() -> u64>,
) {
    let api = ApiClient::new(api_addr, None);
    wait_health(&api, 200, "before the fault").await;
    for fault in ["full", "full again"] {
        let filler = disk.fill();
        wait_health(&api, 503, fault).await;
        let (_, reasons) = health(&api).await;
        assert!(reasons.contains("ledger"), "{fault}: {reasons}");
        let before = miner.stats().accepted;
        let also_before = also.map(|f| f());
        assert!(
            wait_until(Duration::from_secs(20), || miner.stats().accepted
                >= before + 10
                && also.zip(also_before).is_none_or(|(f, b)| f() > b))
            .await,
            "{fault}: mining stopped with the ledger failing ({} → {} accepted, other counter {:?} → {:?})",
            before,
            miner.stats().accepted,
            also_before,
            also.map(|f| f())
        );
        let metrics = reqwest::get(format!("http://{api_addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(&format!("{prefix}_ledger_commit_failing 1")),
            "{fault}: {metrics}"
        );
        std::fs::remove_file(filler).unwrap();
        wait_health(&api, 200, &format!("after the {fault} disk recovered")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_keeps_mining_on_a_full_disk_and_writes_everything_after() {
    init_logging();
    let node = NodeStandIn::start(node_config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(dir.path(), "8m");
    let cloud = start_pool(&node, DIFFICULTY, &disk.path).await;
    let db = disk.path.join("cloud.db");
    let mut c = MinerConfig::new(cloud.local_addr(), "acct.rig");
    c.hashrate = 40_000;
    let miner = SimMiner::spawn(c);
    assert!(wait_until(Duration::from_secs(30), || miner.stats().accepted >= 5).await);
    fill_the_disk_twice(&disk, cloud.api_addr(), &miner, "blgv_cloud", None).await;
    miner.stop().await;
    // Every share the pool accepted, through both faults, is in the ledger.
    let all = cloud.stats().shares_accepted;
    let written = wait_until(Duration::from_secs(5), || {
        pool_rows_by_worker(&db).values().sum::<u64>() == all
    })
    .await;
    assert!(
        written,
        "{} rows for {all} accepted shares",
        pool_rows_by_worker(&db).values().sum::<u64>()
    );
    assert_eq!(integrity(&db), "ok");
    cloud.shutdown().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_keeps_mining_on_a_full_disk_and_writes_everything_after() {
    init_logging();
    let node = NodeStandIn::start(node_config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cloud = start_pool(&node, DIFFICULTY * 4.0, dir.path()).await;
    let disk = Tmpfs::mount(dir.path(), "8m");
    let proxy = blgv_proxy::start(proxy_config(&[cloud.local_addr()], DIFFICULTY, &disk.path))
        .await
        .unwrap();
    let db = disk.path.join("ledger.db");
    let mut c = MinerConfig::new(proxy.local_addr(), "rig");
    c.hashrate = 40_000;
    let miner = SimMiner::spawn(c);
    assert!(wait_until(Duration::from_secs(30), || miner.stats().accepted >= 5).await);
    // Forwards to the pool go on too.
    let forwarded = || proxy.stats().upstream_accepted;
    let api_addr = proxy.api_addr().unwrap();
    fill_the_disk_twice(&disk, api_addr, &miner, "blgv_proxy", Some(&forwarded)).await;
    miner.stop().await;
    let all = proxy.stats().shares_accepted as i64;
    let counted = || {
        common::ledger_by_worker(&db)
            .values()
            .map(|r| r.accepted)
            .sum::<i64>()
    };
    assert!(
        wait_until(Duration::from_secs(5), || counted() == all).await,
        "{} counted for {all} accepted shares",
        counted()
    );
    assert_eq!(integrity(&db), "ok");
    proxy.shutdown().await;
    cloud.shutdown().await;
    node.stop().await;
}
