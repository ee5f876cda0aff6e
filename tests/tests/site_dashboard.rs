//! The site operator's view of a running proxy: the status API, the admin actions, `/metrics`
//! (checked against the Grafana dashboards' queries) and the dashboard page in a real headless
//! Chromium, while 20 miners hash through the proxy and the grid operator curtails the site.

mod common;

use common::site::{start_site, unix_now, ADMIN_TOKEN, MINERS};
use serde_json::{json, Value};
use std::collections::BTreeSet;
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

/// Metric names in a Prometheus text exposition.
/// Metric names in a Prometheus text exposition: every sample's name, and every declared family
/// (a gauge with nothing to report, like the limit without a signal, has only its `# TYPE`).
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if l.starts_with('#') || l.trim().is_empty() => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(str::to_string)
        .collect()
}

/// Metric names a Grafana dashboard queries: identifiers starting `blgv_` in its `expr`s.
fn queried_names(dashboard: &Value, out: &mut BTreeSet<String>) {
    match dashboard {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" {
                    let expr = v.as_str().unwrap_or("");
                    let mut rest = expr;
                    while let Some(i) = rest.find("blgv_") {
                        let name: String = rest[i..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        rest = &rest[i + name.len()..];
                        out.insert(name);
                    }
                } else {
                    queried_names(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| queried_names(v, out)),
        _ => {}
    }
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
        let sim = site.miners[i].stats();
        assert_eq!(m["agent"], "blgv-sim/1.0");
        assert_eq!(m["ip"], "127.0.0.1");
        assert_eq!(m["power_state"], "running");
        // The API read its counter before the sim's later look: never ahead of what the miner
        // saw accepted.
        let accepted = m["accepted"].as_u64().unwrap();
        assert!(
            accepted > 0 && accepted <= sim.accepted,
            "{worker}: {accepted} vs {}",
            sim.accepted
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
    let exported = exported_names(&text);
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
    let grafana: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/site.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queried = BTreeSet::new();
    queried_names(&grafana, &mut queried);
    assert!(queried.len() >= 8, "{queried:?}");
    for q in &queried {
        let base = q
            .trim_end_matches("_bucket")
            .trim_end_matches("_count")
            .trim_end_matches("_sum");
        assert!(
            exported.contains(base),
            "site.json queries {q}, which /metrics does not export"
        );
    }

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
