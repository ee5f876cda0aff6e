//! The network between the site and the pool is cut and restored, for real: the pool listens
//! inside a network namespace this test creates (`ip netns add`), joined to the proxy by a veth
//! pair, and the test takes the link down (packets vanish: no RST, no FIN, like a cable pulled
//! or a dead route) and up again.
//!
//! The proxy must notice the silent pool (`failover.answer_timeout_ms`), keep its miners
//! connected through the outage, and mine upstream again once the link is back; nothing
//! accepted locally may be rejected by the pool.
//!
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN), as the CI and dev machines run; it fails, not
//! skips, when the namespace cannot be made.

mod common;

use blgv_tests::{wait_until, MinerConfig, SimMiner, TestPool, TestPoolConfig};
use common::{init_logging, proxy_config};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {} (this test needs root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A namespace joined to this one by a veth pair: host end `10.203.<n>.1`, namespace end
/// `10.203.<n>.2`. Removed (with the pair) on drop.
struct LinkedNamespace {
    name: String,
    host_if: String,
    inside: Ipv4Addr,
}

impl LinkedNamespace {
    fn create() -> LinkedNamespace {
        let id = std::process::id() % 50_000;
        let name = format!("blgv-cut-{id}");
        let (host_if, ns_if) = (format!("bh{id}"), format!("bn{id}"));
        let net = (id % 250) as u8;
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = LinkedNamespace {
            name: name.clone(),
            host_if: host_if.clone(),
            inside: Ipv4Addr::new(10, 203, net, 2),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&[
            "addr",
            "add",
            &format!("10.203.{net}.1/30"),
            "dev",
            &host_if,
        ]);
        ip(&["link", "set", &host_if, "up"]);
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        exec(&["addr", "add", &format!("10.203.{net}.2/30"), "dev", &ns_if]);
        exec(&["link", "set", &ns_if, "up"]);
        exec(&["link", "set", "lo", "up"]);
        ns
    }

    /// Run `f` on a thread that has entered the namespace: sockets it creates live there.
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        let rt = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            let _guard = rt.enter();
            f()
        })
        .join()
        .expect("the namespace thread")
    }

    fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]);
    }
}

impl Drop for LinkedNamespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_to_the_pool_is_noticed_ridden_out_and_mined_through_once_restored() {
    init_logging();
    let ns = LinkedNamespace::create();
    let inside = SocketAddr::new(IpAddr::V4(ns.inside), 0);
    let pool = ns.enter(move || {
        TestPool::start_on(
            inside,
            TestPoolConfig {
                difficulty: 1.0 / 65_536.0,
                job_interval: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        )
        .unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut config = proxy_config(&[pool.addr()], 1.0 / 262_144.0, dir.path());
    config.failover.answer_timeout_ms = 2_000;
    config.failover.silence_timeout_ms = 4_000;
    let proxy = blgv_proxy::start(config).await.unwrap();
    let miners: Vec<SimMiner> = (0..6)
        .map(|i| {
            let mut c = MinerConfig::new(proxy.local_addr(), format!("rig{i}"));
            c.extranonce_subscribe = true;
            c.hashrate = 40_000;
            SimMiner::spawn(c)
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(30), || pool.stats().shares_accepted
            >= 10)
        .await,
        "no shares across the veth link: {:?}",
        proxy.stats()
    );

    ns.link(false);
    let cut = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || proxy
            .stats()
            .upstream_connections
            == 0)
        .await,
        "the proxy still holds its connection to the unreachable pool {:?} after the cut",
        cut.elapsed()
    );
    let noticed = cut.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await; // reconnects fail meanwhile
    assert_eq!(
        proxy.stats().miners_connected,
        6,
        "miners must stay connected through the outage"
    );

    ns.link(true);
    let restored = Instant::now();
    let before = pool.stats().shares_accepted;
    assert!(
        wait_until(Duration::from_secs(30), || pool.stats().shares_accepted
            >= before + 10)
        .await,
        "no shares reached the pool {:?} after the link came back: {:?}",
        restored.elapsed(),
        proxy.stats()
    );
    let resumed = restored.elapsed();
    let st = proxy.stats();
    assert_eq!(
        st.upstream_rejected, 0,
        "a local accept was rejected upstream"
    );
    assert_eq!(
        pool.stats().rejects_total(),
        0,
        "{:?}",
        pool.stats().rejects
    );
    eprintln!(
        "link cut: silent pool dropped {noticed:?} after the cut (answer timeout 2 s); shares \
         upstream again {resumed:?} after the link came back; {} forwards lost in the cut, 0 rejected",
        st.upstream_unanswered
    );
    for m in miners {
        m.stop().await;
    }
    proxy.shutdown().await;
}
