//! A small run of the load harness (tests/src/load): 200 miners on real TCP → the proxy in a
//! child process → the strict upstream. Checks the harness and the proxy did their jobs, not
//! how fast: every connection held, every share accepted end to end, exactly the shares that
//! meet the upstream target forwarded, none of them invalid, every new job fanned out.

use blgv_tests::load::{self, process::ProxyCommand, Options, Scenario};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_miners_three_seconds_of_shares() {
    smoke(None).await;
}

/// The same run with `proxy.threads = 1`: every miner, the upstream and the API on one event
/// loop (nothing in the proxy may block that thread or need a second worker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_one_event_loop() {
    smoke(Some(1)).await;
}

async fn smoke(proxy_threads: Option<usize>) {
    // The proxy runs as a child process: this package's load-harness binary in its
    // `run-proxy` mode, which starts the proxy library exactly like blgv-proxy's main.
    let proxy = ProxyCommand::harness_shim(env!("CARGO_BIN_EXE_load-harness"));
    let mut opts = Options::new(
        Scenario::Shares {
            rate: 2_000.0,
            secs: 3.0,
            warmup: 0.5,
        },
        200,
        proxy,
    );
    opts.forward_every = 4.0;
    opts.fanout_rounds = 2;
    opts.hold = Duration::from_millis(300);
    opts.proxy_threads = proxy_threads;
    let report = load::run(&opts).await.expect("the run happens");
    let text = report.human();
    println!("{text}");

    assert!(report.ok(), "{text}");
    let c = &report.connections;
    assert_eq!((c.connected, c.ready, c.held), (200, 200, 200), "{text}");
    assert_eq!(report.fanout.len(), 2);
    for r in &report.fanout {
        assert_eq!(r.received, 200, "{text}");
    }
    let s = report.shares.as_ref().expect("a share phase");
    assert!(s.accepted_in_window > 0, "{text}");
    assert_eq!(s.rejected_total, 0, "{text}");
    assert_eq!(s.accepted_total, s.submitted_total, "{text}");
    assert!(s.expected_forwards > 0, "{text}");
    assert_eq!(s.upstream_received, s.expected_forwards, "{text}");
    assert_eq!(report.upstream.invalid, 0, "{text}");
    assert_eq!(report.upstream.accepted, s.upstream_received, "{text}");
    assert!(report.proxy.rss_loaded_kb > 0 && report.proxy.pid > 0);
}
