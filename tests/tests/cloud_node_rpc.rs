//! blgv-cloud's Bitcoin Core client against the node stand-in: credentials, cookie auth, errors
//! that say what to fix, long polling, the refresh interval and clean jobs on a new block.

mod common;

use blgv_cloud::config::NodeSection;
use blgv_cloud::{BitcoindRpc, NodeError, TemplateSource};
use blgv_tests::node::{NodeConfig, NodeStandIn};
use blgv_tests::wait_until;
use common::{cloud_config, init_logging, RawClient};
use serde_json::json;
use std::time::{Duration, Instant};

fn node_section(
    url: &str,
    user: Option<&str>,
    password: Option<&str>,
    cookie: Option<std::path::PathBuf>,
) -> NodeSection {
    NodeSection {
        url: url.into(),
        user: user.map(Into::into),
        password: password.map(Into::into),
        cookie_file: cookie,
        timeout_ms: 2000,
        longpoll: true,
    }
}

#[tokio::test]
async fn credentials_cookie_and_unreachable_node_give_clear_errors() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let cookie = dir.path().join(".cookie");
    let node = NodeStandIn::start(NodeConfig {
        rpc_user: "rpc".into(),
        rpc_password: "secret".into(),
        cookie_file: Some(cookie.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let regtest = bitcoin::Network::Regtest;

    let ok = BitcoindRpc::new(
        &node_section(&node.url(), Some("rpc"), Some("secret"), None),
        regtest,
    );
    assert_eq!(ok.chain_info().await.unwrap().chain, "regtest");
    let t = ok.get_template(None).await.unwrap();
    assert_eq!(t.height as u32, node.height() + 1);

    let via_cookie = BitcoindRpc::new(
        &node_section(&node.url(), None, None, Some(cookie)),
        regtest,
    );
    assert!(via_cookie.chain_info().await.is_ok(), "cookie auth");

    let wrong = BitcoindRpc::new(
        &node_section(&node.url(), Some("rpc"), Some("nope"), None),
        regtest,
    );
    let e = wrong.chain_info().await.unwrap_err();
    assert!(matches!(e, NodeError::Unauthorized), "{e:?}");
    assert!(e.to_string().contains("node.user/node.password"), "{e}");

    let missing_cookie = BitcoindRpc::new(
        &node_section(&node.url(), None, None, Some(dir.path().join("absent"))),
        regtest,
    );
    let e = missing_cookie.chain_info().await.unwrap_err().to_string();
    assert!(
        e.contains("cannot read cookie file") && e.contains("node.cookie_file"),
        "{e}"
    );

    let mainnet = BitcoindRpc::new(
        &node_section(&node.url(), Some("rpc"), Some("secret"), None),
        bitcoin::Network::Bitcoin,
    );
    let e = mainnet.chain_info().await.unwrap_err().to_string();
    assert!(
        e.contains("\"regtest\"") && e.contains("pool.network"),
        "{e}"
    );

    let addr = node.addr();
    node.stop().await;
    let gone = BitcoindRpc::new(
        &node_section(&format!("http://{addr}"), Some("rpc"), Some("secret"), None),
        regtest,
    );
    let e = gone.get_template(None).await.unwrap_err().to_string();
    assert!(
        e.contains("cannot reach the Bitcoin node") && e.contains("node.url"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_blocks_reach_miners_at_once_and_jobs_refresh_on_the_interval() {
    init_logging();
    let node = NodeStandIn::start(NodeConfig {
        rpc_user: "rpc".into(),
        rpc_password: "secret".into(),
        longpoll_timeout: Duration::from_secs(30),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = cloud_config(&node.url(), 1.0, 1.0, dir.path());
    config.pool.job_refresh_secs = 1;
    let cloud = blgv_cloud::start(
        config,
        BitcoindRpc::new(
            &cloud_config(&node.url(), 1.0, 1.0, dir.path()).node,
            bitcoin::Network::Regtest,
        ),
    )
    .await
    .unwrap();
    let mut c = RawClient::connect(cloud.local_addr()).await;
    c.call(1, "mining.subscribe", json!([])).await;
    c.call(2, "mining.authorize", json!(["w", "x"])).await;
    let first = c.notification("mining.notify").await;
    assert_eq!(first["params"][8], true, "the first job is clean");

    // Refresh: a new, non-clean job on the same previous block about every second.
    let refreshed = c.notification("mining.notify").await;
    assert_eq!(
        refreshed["params"][1], first["params"][1],
        "same previous block"
    );
    assert_eq!(refreshed["params"][8], false);
    assert_ne!(refreshed["params"][0], first["params"][0], "a new job id");

    // A new block on the network: the long poll returns and a clean job follows promptly.
    let t0 = Instant::now();
    node.mine_external_block();
    let clean = loop {
        let n = c.notification("mining.notify").await;
        if n["params"][8] == true {
            break n;
        }
    };
    let took = t0.elapsed();
    assert_ne!(
        clean["params"][1], first["params"][1],
        "builds on the new block"
    );
    assert!(
        took < Duration::from_millis(900),
        "clean job after {took:?}: long polling, not the refresh timer"
    );
    eprintln!("new block → clean job at the miner in {took:?}");
    assert!(wait_until(Duration::from_secs(2), || cloud.stats().templates >= 3).await);
    cloud.shutdown().await;
    node.stop().await;
}
