//! The site operator's view of a running proxy: the status API, the admin actions, `/metrics`
//! (checked against the Grafana dashboards' queries) and the dashboard page in a real headless
//! Chromium, while 20 miners hash through the proxy and the grid operator curtails the site.

mod common;

use common::site::{start_site, unix_now, ADMIN_TOKEN, MINERS};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

async fn get(api: &str, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("http://{api}{path}")).await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

async fn post(api: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(format!("http://{api}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_sees_and_drives_the_site_over_http_and_in_the_dashboard() {
    let Some(site) = start_site(&[]).await else {
        return;
    };
    let api = site.proxy.api_addr().expect("api enabled").to_string();

    // --- status API ---
    let (code, status) = get(&api, "/api/status").await;
    assert_eq!(code, 200);
    assert_eq!(status["miners_connected"], MINERS);
    assert_eq!(status["upstream_in_use"]["index"], 0);
    assert!(status["hashrate_1m"].as_f64().unwrap() > 0.0, "{status}");
    assert!(status["site_power_kw"].as_f64().unwrap() > 60.0, "{status}");

    let (_, miners) = get(&api, "/api/miners").await;
    let miners = miners.as_array().unwrap().clone();
    assert_eq!(miners.len(), MINERS);
    for m in &miners {
        let worker = m["worker"].as_str().unwrap();
        let i: usize = worker.trim_start_matches("acct.asic").parse().unwrap();
        assert_eq!(m["agent"], "blgv-sim/1.0");
        assert_eq!(m["ip"], "127.0.0.1");
        assert_eq!(m["power_state"], "running");
        // The proxy counts a share before its reply reaches the miner, so the miner may still
        // be reading the last reply: every share the API counts, the miner soon sees accepted.
        let accepted = m["accepted"].as_u64().unwrap();
        assert!(accepted > 0, "{worker}: {m}");
        let sim = &site.miners[i];
        assert!(
            blgv_tests::wait_until(Duration::from_secs(5), || sim.stats().accepted >= accepted)
                .await,
            "{worker}: the API counts {accepted} accepted, the miner saw {}",
            sim.stats().accepted
        );
        assert!(m["hashrate_1m"].as_f64().unwrap() > 0.0);
        assert!(m["difficulty"].as_f64().unwrap() > 0.0);
    }
    let (code, one) = get(&api, "/api/miners/acct.asic03").await;
    assert_eq!((code, one["worker"].as_str()), (200, Some("acct.asic03")));
    let (code, err) = get(&api, "/api/miners/no-such-rig").await;
    assert_eq!(code, 404);
    assert!(err["error"].as_str().unwrap().contains("no-such-rig"));

    let (_, ups) = get(&api, "/api/upstreams").await;
    assert_eq!(ups[0]["state"], "active");
    assert!(ups[0]["accepted"].as_u64().unwrap() > 0);
    assert_eq!(ups[0]["rejected_after_local_accept"], 0);
    assert!(ups[0]["latency_ms"].as_f64().is_some());

    let (_, power) = get(&api, "/api/power").await;
    assert_eq!(power["meters"][0]["quality"], "good");
    let metered = power["meters"][0]["power_kw"].as_f64().unwrap();
    assert!(
        (metered - site.site_kw()).abs() < 1.0,
        "{metered} vs {}",
        site.site_kw()
    );

    // --- admin actions ---
    let (code, _) = post(&api, "/api/miners/acct.asic00/pause", None).await;
    assert_eq!(code, 401, "no token");
    let (code, _) = post(
        &api,
        "/api/miners/acct.asic00/pause",
        Some("wrong-token-wrong-token"),
    )
    .await;
    assert_eq!(code, 401, "wrong token");
    let (code, body) = post(&api, "/api/miners/acct.asic00/pause", Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    assert!(site.machines[0].is_paused(), "paused through its firmware");
    assert!(
        common::site::wait_for_api(&api, "/api/miners/acct.asic00", |m| m["power_state"]
            == "paused (operator)")
        .await
    );
    let (code, _) = post(&api, "/api/miners/acct.asic00/resume", Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 200);
    assert!(!site.machines[0].is_paused());
    let (code, err) = post(&api, "/api/upstreams/7/use", Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 400);
    assert!(err["error"].as_str().unwrap().contains("0..1"), "{err}");
    let (code, _) = post(&api, "/api/miners/not-managed/pause", Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 404);

    // --- metrics, and the Grafana site dashboard queries only what is exported ---
    let text = reqwest::get(format!("http://{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported = blgv_tests::grafana::exported_names(&text);
    for name in blgv_proxy::api::metrics::METRIC_NAMES {
        assert!(
            exported
                .iter()
                .any(|e| e == name || e.starts_with(&format!("{name}_"))),
            "{name} missing from /metrics"
        );
    }
    let connected: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("blgv_proxy_miners_connected "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no unlabeled blgv_proxy_miners_connected sample:\n{text}"));
    assert_eq!(connected, MINERS as f64);
    let (queried, missing) =
        blgv_tests::grafana::dashboard_against_metrics("site.json", &text).unwrap();
    assert!(queried.len() >= 8, "{queried:?}");
    assert!(
        missing.is_empty(),
        "site.json queries {missing:?}, which /metrics does not export"
    );

    // --- the dashboard in a real browser ---
    let browser = match blgv_tests::browser::Browser::start().await {
        Ok(b) => b,
        Err(why) => {
            eprintln!("dashboard browser check {why}");
            site.proxy.shutdown().await;
            return;
        }
    };
    browser
        .client
        .goto(&format!("http://{api}/"))
        .await
        .unwrap();
    // The miners table fills.
    let rows = async {
        for _ in 0..100 {
            let n = browser
                .client
                .execute(
                    "return document.querySelectorAll('#miners-table tbody tr').length",
                    vec![],
                )
                .await
                .unwrap();
            if n.as_u64() == Some(MINERS as u64) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(rows.await, "the miners table shows every miner");
    // The hashrate moves (the page keeps updating from the live feed).
    let first = browser
        .wait_text("#hashrate", Duration::from_secs(5), |t| t.contains("H/s"))
        .await
        .unwrap();
    browser
        .wait_text("#hashrate", Duration::from_secs(10), |t| {
            t != first && t.contains("H/s")
        })
        .await
        .unwrap();
    // A curtailment shows on the page.
    let limit_kw = (0.4 * site.site_kw() * 10.0).round() / 10.0;
    site.publish(json!({"signal_id": "cut-dash", "issued_at": unix_now(), "duration_s": 600, "limit_kw": limit_kw}))
        .await;
    browser
        .wait_text("#signal-id", Duration::from_secs(10), |t| t == "cut-dash")
        .await
        .unwrap();
    browser
        .wait_text("#compliance", Duration::from_secs(10), |t| t == "compliant")
        .await
        .unwrap();
    let paused_rows = browser
        .client
        .execute(
            "return [...document.querySelectorAll('#miners-table tbody tr')].filter(r => r.textContent.includes('paused (curtailment)')).length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(paused_rows.as_u64(), Some(site.paused().len() as u64));
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("site-dashboard.png");
    browser.screenshot(&shot).await.unwrap();
    eprintln!("dashboard screenshot: {}", shot.display());
    browser.close().await;
    site.proxy.shutdown().await;
}
