//! Payouts end to end, one test per scheme: SimMiners really hash into a started blgv-cloud
//! whose node is the bitcoind stand-in; blocks are found, accepted, confirmed (and one
//! reorganised away); credits, balances and payout batches are read through the HTTP API and
//! compared with amounts computed by hand here.
//!
//! The share difficulty is 2^-31: a share is worth `W = 2` expected hashes, exactly the
//! regtest network difficulty's `W(D) = round(2^32 · 65535 / (8388607 · 2^24)) = 2`, so every
//! share also meets the network target (each share is a block) and:
//! * PPS pays `subsidy · w / W(D) · (1 − fee) = subsidy · (1 − fee)` per share;
//! * a PPLNS window of `X = 1.5` is `N = 3` hashes: the winning share (2) and half of the
//!   share before it.
//!
//! Templates carry no transactions, so a block's reward is the subsidy: 50 BTC below height 150.

mod common;

use base64::Engine as _;
use bitcoin::hashes::Hash as _;
use bitcoin::{Address, Network, ScriptBuf, WPubkeyHash};
use blgv_tests::node::{NodeConfig, NodeStandIn};
use blgv_tests::{MinerConfig, SimMiner};
use common::{cloud_config_with, init_logging, ApiClient, RawClient, PAYOUT_SCRIPT_HEX};
use serde_json::{json, Value};
use std::future::Future;
use std::time::{Duration, Instant};

const SHARE_DIFFICULTY: f64 = 1.0 / 2_147_483_648.0; // 2^-31
const SUBSIDY: u64 = 5_000_000_000;
const TOKEN: &str = "test-token-0123456789abcdef";

/// A regtest P2WPKH address made from a byte (no key behind it: nothing is ever signed here).
fn address(n: u8) -> String {
    let script = ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([n; 20]));
    Address::from_script(&script, Network::Regtest)
        .unwrap()
        .to_string()
}

fn script_hex(addr: &str) -> String {
    let a: Address<bitcoin::address::NetworkUnchecked> = addr.parse().unwrap();
    hex::encode(a.assume_checked().script_pubkey().as_bytes())
}

/// Polls an async condition every 50 ms.
async fn eventually<F, Fut>(what: &str, timeout: Duration, f: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

struct Site {
    node: NodeStandIn,
    pool: blgv_cloud::PoolHandle,
    api: ApiClient,
    _dir: tempfile::TempDir,
}

async fn start(payout: &str) -> Site {
    let node = NodeStandIn::start(NodeConfig {
        rpc_user: "rpc".into(),
        rpc_password: "secret".into(),
        transactions_per_template: 0,
        longpoll_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = cloud_config_with(
        &node.url(),
        SHARE_DIFFICULTY,
        SHARE_DIFFICULTY,
        dir.path(),
        &format!("token = \"{TOKEN}\"\nlive_update_ms = 500"),
        payout,
    );
    let source = blgv_cloud::BitcoindRpc::new(&config.node, Network::Regtest);
    let pool = blgv_cloud::start(config, source).await.unwrap();
    let api = ApiClient::new(pool.api_addr(), Some(TOKEN));
    let site = Site {
        node,
        pool,
        api,
        _dir: dir,
    };
    site.wait_for_job_on_tip().await;
    site
}

impl Site {
    /// The pool's current job builds on the node's tip.
    async fn wait_for_job_on_tip(&self) {
        eventually(
            "pool job on the node's tip",
            Duration::from_secs(20),
            || async {
                let jobs = self.api.get_ok("/api/jobs").await;
                let h = jobs["current"]["height"].as_u64();
                if h == Some(self.node.height() as u64 + 1) {
                    Ok(())
                } else {
                    Err(format!(
                        "job height {h:?}, node height {}",
                        self.node.height()
                    ))
                }
            },
        )
        .await;
    }

    /// One share (a block) by `worker`, accepted by the node; then the pool is on the new tip.
    async fn mine_block(&self, worker: &str) {
        let height = self.node.height();
        let mut c = MinerConfig::new(self.pool.local_addr(), worker);
        c.hashrate = 200;
        c.max_shares = Some(1);
        let miner = SimMiner::spawn(c);
        eventually(
            &format!("{worker}'s block accepted"),
            Duration::from_secs(30),
            || async {
                let s = self.node.stats();
                if s.height == height + 1 && miner.stats().accepted == 1 {
                    Ok(())
                } else {
                    Err(format!("{:?} {:?}", s.rejections, miner.stats()))
                }
            },
        )
        .await;
        miner.stop().await;
        self.wait_for_job_on_tip().await;
    }

    /// `/api/earnings/{account}`'s balance once it equals `expected` (the payout task runs
    /// asynchronously after blocks and tip changes).
    async fn balance_becomes(&self, account: &str, expected: Value) -> Value {
        let path = format!("/api/earnings/{account}");
        let keys: Vec<String> = expected.as_object().unwrap().keys().cloned().collect();
        let mut last = Value::Null;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let e = self.api.get_ok(&path).await;
            let b = e["balance"].clone();
            if keys.iter().all(|k| b[k] == expected[k]) {
                return e;
            }
            last = b;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{account}: balance {last} never became {expected}");
    }

    fn ledger(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self._dir.path().join("cloud.db")).unwrap()
    }

    async fn stop(self) {
        self.pool.shutdown().await;
        self.node.stop().await;
    }
}

/// Balances of the accounts in `expected`: (immature, mature).
fn split(immature: u64, mature: u64) -> Value {
    json!({"immature": immature, "mature": mature})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pplns_credits_mature_orphan_and_pay_out_by_hand() {
    init_logging();
    let (alice, bob, fee_addr, change, wallet) =
        (address(1), address(2), address(3), address(4), address(5));
    let payout = format!(
        "[payout]\nfee_percent = \"1\"\npplns_window_x = 1.5\nconfirmations = 2\nmin_payout_sats = 100000\n\
         default_scheme = \"pplns\"\nfee_account = \"pool-fee\"\nchange_address = \"{change}\"\nprocess_interval_secs = 1\n\
         [[payout.accounts]]\nname = \"alice\"\naddress = \"{alice}\"\n\
         [[payout.accounts]]\nname = \"bob\"\naddress = \"{bob}\"\n\
         [[payout.accounts]]\nname = \"pool-fee\"\naddress = \"{fee_addr}\"\n\
         [[payout.utxos]]\ntxid = \"{}\"\nvout = 0\nvalue_sats = 100000000000\naddress = \"{wallet}\"\n",
        "ab".repeat(32)
    );
    let site = start(&payout).await;
    let h0 = site.node.height();
    assert!(h0 + 3 < 150, "all blocks below the first regtest halving");

    site.mine_block("alice.rig1").await;
    site.mine_block("alice.rig2").await;
    site.mine_block("bob.rig1").await;

    // Precondition for the hand computation: three shares, each a block the node accepted.
    {
        let conn = site.ledger();
        let rows: Vec<(String, i64)> = conn
            .prepare("SELECT s.worker, s.is_block FROM shares s ORDER BY s.id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows,
            vec![
                ("alice.rig1".to_string(), 1),
                ("alice.rig2".to_string(), 1),
                ("bob.rig1".to_string(), 1)
            ]
        );
    }
    // By hand, R = 5e9 sat, fee 1 %, N = 3 hashes, every share 2 hashes:
    // block 1: window = alice 2 (+1 unfilled: the pool's "short window")
    //   alice R·2·0.99/3 = 3.3e9; pool-fee R·2·0.01/3 + R·1/3 = 1.7e9
    // block 2: alice 2 + alice 1 (half of share 1) → alice 4.95e9, pool-fee 5e7
    // block 3: bob 2 + alice 1 → bob 3.3e9, alice 1.65e9, pool-fee 5e7
    // Tip = h0 + 3, confirmations 2: blocks 1 and 2 are mature, block 3 is not.
    site.balance_becomes("alice", split(1_650_000_000, 8_250_000_000))
        .await;
    site.balance_becomes("bob", split(3_300_000_000, 0)).await;
    site.balance_becomes("pool-fee", split(50_000_000, 1_750_000_000))
        .await;

    // Bob's block leaves the main chain: its credits are reversed (alice's part too).
    let gone = site.node.reorg(1);
    let bob_block: String = site
        .ledger()
        .query_row(
            "SELECT hash FROM blocks WHERE finder = 'bob.rig1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(gone, vec![bob_block.clone()]);
    site.balance_becomes("bob", split(0, 0)).await;
    site.balance_becomes("alice", split(0, 8_250_000_000)).await;
    site.balance_becomes("pool-fee", split(0, 1_750_000_000))
        .await;
    let blocks = site.api.get_ok("/api/blocks").await;
    let b = blocks["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["hash"] == bob_block.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (b["status"].as_str(), b["payout_status"].as_str()),
        (Some("orphaned"), Some("orphaned")),
        "{b}"
    );
    let earnings = site.api.get_ok("/api/earnings/bob").await;
    assert!(earnings["earnings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["status"] == "orphaned"));

    // A payout batch: an unsigned PSBT paying alice and the fee account, change to the pool.
    let (status, created) = site.api.post("/api/payouts/request", json!({})).await;
    assert_eq!(status, 201, "{created}");
    let psbt_bytes = base64::engine::general_purpose::STANDARD
        .decode(created["psbt_base64"].as_str().unwrap())
        .unwrap();
    let psbt = bitcoin::psbt::Psbt::deserialize(&psbt_bytes).unwrap();
    let outputs: Vec<(String, u64)> = psbt
        .unsigned_tx
        .output
        .iter()
        .map(|o| (hex::encode(o.script_pubkey.as_bytes()), o.value.to_sat()))
        .collect();
    assert!(
        outputs.contains(&(script_hex(&alice), 8_250_000_000)),
        "{outputs:?}"
    );
    assert!(
        outputs.contains(&(script_hex(&fee_addr), 1_750_000_000)),
        "{outputs:?}"
    );
    assert!(!outputs.iter().any(|(s, _)| *s == script_hex(&bob)));
    let fee: u64 = created["batch"]["fee"].as_u64().unwrap();
    let change_out = outputs
        .iter()
        .find(|(s, _)| *s == script_hex(&change))
        .expect("change output");
    assert_eq!(
        change_out.1,
        100_000_000_000 - 8_250_000_000 - 1_750_000_000 - fee
    );
    assert!(psbt.unsigned_tx.input[0].witness.is_empty(), "unsigned");
    let pending = site.api.get_ok("/api/payouts/pending").await;
    assert_eq!(pending["batches"].as_array().unwrap().len(), 1);
    site.balance_becomes(
        "alice",
        json!({"mature": 0, "pending": 8_250_000_000u64, "paid": 0}),
    )
    .await;

    // Recording the (segwit, so final) txid as sent debits the balances.
    let id = created["batch_id"].as_i64().unwrap();
    let txid = psbt.unsigned_tx.compute_txid().to_string();
    let (status, body) = site
        .api
        .post(&format!("/api/payouts/{id}/sent"), json!({"tx": txid}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "sent");
    let alice_now = site
        .balance_becomes(
            "alice",
            json!({"mature": 0, "pending": 0, "paid": 8_250_000_000u64}),
        )
        .await;
    assert_eq!(alice_now["payouts"][0]["txid"], txid.as_str());
    // A second record of the same batch is a conflict.
    let (status, body) = site
        .api
        .post(&format!("/api/payouts/{id}/sent"), json!({"tx": txid}))
        .await;
    assert_eq!(status, 409, "{body}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pps_pays_every_share_its_expected_value_by_hand() {
    init_logging();
    let payout = "[payout]\nfee_percent = \"2.5\"\npplns_window_x = 1.5\nconfirmations = 2\n\
                  default_scheme = \"pplns\"\nprocess_interval_secs = 1\n\
                  [[payout.accounts]]\nname = \"carol\"\nscheme = \"pps\"\n";
    let site = start(payout).await;
    site.mine_block("carol.a").await;
    site.mine_block("carol.b").await;
    site.mine_block("carol.a").await;
    // Each share: subsidy · w / W(D) · (1 − 2.5 %) = 5e9 · 2/2 · 0.975 = 4.875e9, mature at
    // once (pps_delay_blocks = 0): 3 shares = 14.625e9. The blocks' rewards belong to the pool
    // (the window's PPS work), immature until 2 confirmations: blocks 1 and 2 are mature.
    let carol = site
        .balance_becomes("carol", split(0, 3 * 4_875_000_000))
        .await;
    let kinds: Vec<&str> = carol["earnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.iter().all(|k| *k == "pps"), "{kinds:?}");
    site.balance_becomes("pool-fee", split(SUBSIDY, 2 * SUBSIDY))
        .await;
    let miner = site.api.get_ok("/api/miners/carol").await;
    assert_eq!(miner["scheme"], "pps");
    assert_eq!(miner["workers"].as_array().unwrap().len(), 2);
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solo_block_pays_the_finder_in_the_coinbase_by_hand() {
    init_logging();
    let dave = address(7);
    let payout = format!(
        "[payout]\nfee_percent = \"1.5\"\npplns_window_x = 1.5\nconfirmations = 1\ndefault_scheme = \"pplns\"\nprocess_interval_secs = 1\n\
         [[payout.accounts]]\nname = \"dave\"\naddress = \"{dave}\"\nscheme = \"solo\"\n\
         [[payout.accounts]]\nname = \"erin\"\nscheme = \"solo\"\n"
    );
    let site = start(&payout).await;

    // A SOLO account without an address cannot mine: authorize says what to fix.
    let mut raw = RawClient::connect(site.pool.local_addr()).await;
    raw.call(1, "mining.subscribe", json!([])).await;
    let r = raw
        .call(2, "mining.authorize", json!(["erin.rig", "x"]))
        .await;
    let text = common::error_text(&r);
    assert!(
        text.contains("SOLO") && text.contains("payout.accounts"),
        "{r}"
    );
    // SOLO and pool work cannot share a connection.
    raw.call(3, "mining.authorize", json!(["dave.rig", "x"]))
        .await;
    let r = raw
        .call(4, "mining.authorize", json!(["frank.rig", "x"]))
        .await;
    assert!(common::error_text(&r).contains("own connection"), "{r}");
    drop(raw);

    site.mine_block("dave.rig1").await; // SOLO
    site.mine_block("frank.rig1").await; // the pool (PPLNS)

    // By hand: R = 5e9, fee 1.5 %: dave 4.925e9 and the pool 7.5e7, in the coinbase itself.
    let ns = site.node.stats();
    assert_eq!(ns.accepted_blocks.len(), 2);
    let solo = &ns.accepted_blocks[0];
    let mut outs: Vec<(String, u64)> = solo
        .coinbase_outputs
        .iter()
        .filter(|(_, v)| *v > 0)
        .cloned()
        .collect();
    outs.sort();
    let mut expected = vec![
        (script_hex(&dave), 4_925_000_000),
        (PAYOUT_SCRIPT_HEX.to_string(), 75_000_000),
    ];
    expected.sort();
    assert_eq!(outs, expected, "SOLO coinbase");
    let pooled = &ns.accepted_blocks[1];
    assert!(pooled
        .coinbase_outputs
        .iter()
        .any(|(s, v)| s == PAYOUT_SCRIPT_HEX && *v == SUBSIDY));
    assert!(!pooled
        .coinbase_outputs
        .iter()
        .any(|(s, _)| *s == script_hex(&dave)));

    // The payout engine records it as paid in the coinbase: never in a balance or a batch.
    let e = site
        .balance_becomes(
            "dave",
            json!({"immature": 0, "mature": 0, "paid_in_coinbase": 4_925_000_000u64}),
        )
        .await;
    assert_eq!(e["earnings"][0]["kind"], "solo");
    assert_eq!(e["earnings"][0]["paid_in_coinbase"], true);
    // frank's PPLNS block: the window (3 hashes) holds frank's share (2) and half of dave's,
    // but SOLO shares are not pool work, so 1 hash is unfilled and goes to the pool:
    // frank R·2·0.985/3, pool-fee the rest.
    let frank_expected = 5_000_000_000u64 * 2 * 9850 / 30000;
    site.balance_becomes("frank", json!({"mature": frank_expected}))
        .await;
    site.stop().await;
}
