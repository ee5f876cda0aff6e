//! The dashboard in a real headless Chromium (WebDriver): loaded from a running blgv-cloud
//! with SimMiners hashing into it, it goes live over the WebSocket, draws the hashrate chart,
//! and the numbers it shows match the API's. Skipped (with the reason) when Chromium or
//! chromedriver is not installed.

mod common;

use blgv_tests::browser::Browser;
use blgv_tests::node::{NodeConfig, NodeStandIn};
use blgv_tests::{wait_until, MinerConfig, SimMiner};
use common::{cloud_config_with, init_logging, ApiClient};
use fantoccini::Locator;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// What the page shows, read from the DOM.
#[derive(Debug, PartialEq)]
struct Shown {
    blocks_found: String,
    blocks_accepted: String,
    workers_count: String,
    workers: BTreeSet<String>,
    block_rows: usize,
    luck_percent: Option<f64>,
    miner_immature: String,
    miner_mature: String,
    earnings_rows: usize,
}

async fn shown(b: &Browser) -> Shown {
    let text = |css: &'static str| async move { b.text(css).await.unwrap_or_default() };
    let mut workers = BTreeSet::new();
    for row in b
        .client
        .find_all(Locator::Css("#workers tbody tr"))
        .await
        .unwrap_or_default()
    {
        if let Ok(Some(w)) = row.attr("data-worker").await {
            workers.insert(w);
        }
    }
    let rows = |css: &'static str| async move {
        b.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    };
    let luck = text("#luck").await;
    Shown {
        blocks_found: text("#blocks-found").await,
        blocks_accepted: text("#blocks-accepted").await,
        workers_count: text("#workers-count").await,
        workers,
        block_rows: rows("#blocks tbody tr").await,
        luck_percent: luck.trim_end_matches('%').trim().parse().ok(),
        miner_immature: text("#miner-immature").await,
        miner_mature: text("#miner-mature").await,
        earnings_rows: rows("#earnings tbody tr").await,
    }
}

/// What the API says the page should show.
async fn expected(api: &ApiClient) -> (Shown, Option<f64>) {
    let stats = api.get_ok("/api/stats").await;
    let workers = api.get_ok("/api/workers").await;
    let blocks = api.get_ok("/api/blocks?limit=50").await;
    let luck = api.get_ok("/api/luck").await;
    let earnings = api.get_ok("/api/earnings/alice?limit=50").await;
    let names: BTreeSet<String> = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["worker"].as_str().unwrap().to_string())
        .collect();
    let luck = luck["luck"].as_f64().map(|l| l * 100.0);
    let n = |v: &Value| v.as_u64().map(|x| x.to_string()).unwrap_or_default();
    (
        Shown {
            blocks_found: n(&stats["blocks"]["found"]),
            blocks_accepted: n(&stats["blocks"]["accepted"]),
            workers_count: names.len().to_string(),
            workers: names,
            block_rows: blocks["blocks"].as_array().unwrap().len(),
            luck_percent: luck,
            miner_immature: n(&earnings["balance"]["immature"]),
            miner_mature: n(&earnings["balance"]["mature"]),
            earnings_rows: earnings["earnings"].as_array().unwrap().len(),
        },
        luck,
    )
}

fn agrees(page: &Shown, api: &Shown) -> bool {
    let luck_ok = match (page.luck_percent, api.luck_percent) {
        // Shown with 3 significant digits (one decimal from 10 % up).
        (Some(p), Some(a)) => (p - a).abs() <= (0.05f64).max(0.006 * a.abs()),
        (None, None) => true,
        _ => false,
    };
    luck_ok
        && page.blocks_found == api.blocks_found
        && page.blocks_accepted == api.blocks_accepted
        && page.workers_count == api.workers_count
        && page.workers == api.workers
        && page.block_rows == api.block_rows
        && page.miner_immature == api.miner_immature
        && page.miner_mature == api.miner_mature
        && page.earnings_rows == api.earnings_rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_what_the_api_says_and_goes_live() {
    init_logging();
    let browser = match Browser::start().await {
        Ok(b) => b,
        Err(why) => {
            eprintln!("dashboard test {why}");
            return;
        }
    };
    let node = NodeStandIn::start(NodeConfig {
        rpc_user: "rpc".into(),
        rpc_password: "secret".into(),
        transactions_per_template: 1,
        longpoll_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = cloud_config_with(
        &node.url(),
        1.0 / 65_536.0,
        1.0 / 65_536.0,
        dir.path(),
        "live_update_ms = 500",
        "[payout]\nconfirmations = 2\nprocess_interval_secs = 1\n",
    );
    let source = blgv_cloud::BitcoindRpc::new(&config.node, bitcoin::Network::Regtest);
    let pool = blgv_cloud::start(config, source).await.unwrap();
    let api = ApiClient::new(pool.api_addr(), None);
    let miners: Vec<SimMiner> = ["alice.rig1", "alice.rig2", "bob.rig1"]
        .iter()
        .map(|w| {
            let mut c = MinerConfig::new(pool.local_addr(), *w);
            c.hashrate = 10_000;
            SimMiner::spawn(c)
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(60), || miners
            .iter()
            .all(|m| m.stats().accepted >= 2)
            && node.stats().blocks_accepted >= 3)
        .await
    );

    // Alice's account must have credits to show (a block of hers, credited by the payouts).
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get_ok("/api/earnings/alice").await["earnings"]
        .as_array()
        .is_none_or(|e| e.is_empty())
    {
        assert!(Instant::now() < deadline, "alice never got a credit");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let url = format!("http://{}/?address=alice", pool.api_addr());
    browser.client.goto(&url).await.expect("page loads");
    browser
        .wait_text("#ws-status", Duration::from_secs(15), |t| t == "live")
        .await
        .expect("the page follows the live feed");
    // Live updates arrive and the chart gets points while the miners hash.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let updates: u64 = browser
            .client
            .find(Locator::Id("updates"))
            .await
            .unwrap()
            .attr("data-value")
            .await
            .unwrap()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let points: u64 = browser
            .client
            .find(Locator::Id("chart"))
            .await
            .unwrap()
            .attr("data-points")
            .await
            .unwrap()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if updates >= 3 && points >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "updates {updates}, chart points {points}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let h = browser
        .wait_text("#hashrate-10m", Duration::from_secs(10), |t| {
            t.ends_with("H/s") && !t.starts_with("0.00 ")
        })
        .await
        .expect("a pool hashrate is shown");
    eprintln!("dashboard shows 10 min hashrate {h}");

    // Stop hashing; the page (refreshed by each live update) must match the API exactly.
    for m in miners {
        m.stop().await;
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = pool.stats();
            s.blocks_found == s.blocks_accepted + s.blocks_rejected
        })
        .await
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let (page, want) = loop {
        let (want, _) = expected(&api).await;
        let page = shown(&browser).await;
        if agrees(&page, &want) {
            // The same again a moment later: the numbers are settled, not passing by.
            tokio::time::sleep(Duration::from_millis(1200)).await;
            let (want2, _) = expected(&api).await;
            let page2 = shown(&browser).await;
            if agrees(&page2, &want2) && want2 == want {
                break (page2, want2);
            }
        }
        assert!(Instant::now() < deadline, "page {page:?}\nAPI  {want:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(want.workers.contains("alice.rig1") && want.workers.len() == 3);
    assert!(page.block_rows >= 3);
    assert!(page.earnings_rows >= 1, "alice has credits: {page:?}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cloud-dashboard.png");
    browser.screenshot(&shot).await.expect("screenshot");
    eprintln!("screenshot: {}", shot.display());
    browser.close().await;
    pool.shutdown().await;
    node.stop().await;
}
