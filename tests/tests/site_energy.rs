//! Energy reports from the sites to the pool, with carbon accounting, end to end on real parts:
//! two blgv-proxy sites (in-process, `blgv_proxy::start`) with simulated Modbus meters whose
//! power the test sets, hashing SimMiners mining through them into a real blgv-cloud (library
//! start) on the bitcoind stand-in; SQLite on disk, real TCP on 127.0.0.1.
//!
//! * `two_sites_report_and_the_pool_shows_mix_and_footprint`: the mix and the footprint the
//!   API returns equal a hand computation from the meters' known powers; hashes equal the
//!   proxies' share ledgers; blocks, per-TH and J/TH figures agree with the pool's ledger; the
//!   dashboard's energy panels (headless Chromium, when installed) show the API's figures.
//! * `bad_reports_are_refused_naming_the_field`: the hostile inputs against the coordinator.
//! * `outage_and_sigkill_lose_no_interval_and_count_none_twice`: the coordinator down for
//!   several intervals, the real `blgv-proxy` binary killed with SIGKILL while a report is in
//!   flight (stored by the pool, answer never delivered); after both come back every interval is
//!   at the pool exactly once.

mod common;

use blgv_tests::browser::Browser;
use blgv_tests::meter_sim::{MeterSim, SimProfile};
use blgv_tests::node::{NodeConfig, NodeStandIn};
use blgv_tests::relay::Relay;
use blgv_tests::{wait_until, MinerConfig, SimMiner};
use common::{cloud_config_with, init_logging, proxy_config_with, ApiClient};
use fantoccini::Locator;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOKEN_A: &str = "site-a-energy-token-0123456789";
const TOKEN_B: &str = "site-b-energy-token-0123456789";
const TOKEN_F: &str = "site-f-energy-token-0123456789";
/// gCO₂e/kWh of grid region "X" in the pool's config.
const REGION_X: f64 = 400.0;
const TWO_POW_32: f64 = 4_294_967_296.0;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn near(got: f64, want: f64, tolerance: f64) -> bool {
    (got - want).abs() <= tolerance
}

fn node_config() -> NodeConfig {
    NodeConfig {
        rpc_user: "rpc".into(),
        rpc_password: "secret".into(),
        transactions_per_template: 1,
        longpoll_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// The pool's `[energy]` section: three sites, grid region X.
fn energy_toml() -> String {
    format!(
        "[energy]\nmax_clock_skew_secs = 5\n[energy.grid_regions]\nX = {REGION_X}\n\
         [[energy.sites]]\nid = \"site-a\"\ntoken = \"{TOKEN_A}\"\n\
         [[energy.sites]]\nid = \"site-b\"\ntoken = \"{TOKEN_B}\"\n\
         [[energy.sites]]\nid = \"site-f\"\ntoken = \"{TOKEN_F}\"\n"
    )
}

async fn start_cloud(node: &NodeStandIn, dir: &Path, api: &str) -> blgv_cloud::PoolHandle {
    // Miners' difficulty at the pool 2^-12: every share the proxies forward (1 in 16 of the
    // miners' 2^-16 shares) is a block at regtest's target, so a few blocks are found.
    let d = 1.0 / 4096.0;
    let config = cloud_config_with(&node.url(), d, d, dir, api, &energy_toml());
    let source = blgv_cloud::BitcoindRpc::new(&config.node, bitcoin::Network::Regtest);
    blgv_cloud::start(config, source).await.unwrap()
}

/// A meter whose power (watts) the test sets.
struct Meter {
    sim: MeterSim,
    watts: Arc<AtomicU64>,
}

impl Meter {
    async fn start(watts: f64) -> Meter {
        let cell = Arc::new(AtomicU64::new(watts.to_bits()));
        let c = cell.clone();
        let sim = MeterSim::start(
            SimProfile::Sdm630,
            Arc::new(move || f64::from_bits(c.load(Ordering::SeqCst))),
        )
        .await
        .unwrap();
        Meter { sim, watts: cell }
    }

    fn set(&self, watts: f64) {
        self.watts.store(watts.to_bits(), Ordering::SeqCst);
    }
}

/// Poll period and staleness of the simulated meters: readings further apart than
/// `STALE_MS` are not integrated, so it bounds the time any one trapezoid spans.
const POLL_MS: u64 = 200;
const STALE_MS: u64 = 2000;

fn meter_toml(id: &str, role: &str, addr: SocketAddr) -> String {
    format!(
        "[[meters]]\nid = \"{id}\"\nrole = \"{role}\"\ntransport = {{ tcp = \"{addr}\" }}\npreset = \"sdm630\"\n\
         poll_interval_ms = {POLL_MS}\ntimeout_ms = 500\nretries = 0\nstale_after_ms = {STALE_MS}\n"
    )
}

fn energy_site_toml(site: &str, token: &str, interval: u64, url: &str, sources: &str) -> String {
    format!(
        "[energy]\nsite_id = \"{site}\"\nreport_interval_secs = {interval}\n{sources}\
         [energy.report]\nurl = \"{url}\"\ntoken = \"{token}\"\ntimeout_ms = 3000\nretry_initial_ms = 100\nretry_max_ms = 500\n"
    )
}

fn source_toml(kind: &str, meter: &str, region: Option<&str>) -> String {
    let region = region.map_or(String::new(), |r| format!("region = \"{r}\"\n"));
    format!("[[energy.sources]]\nkind = \"{kind}\"\nmeter = \"{meter}\"\n{region}")
}

fn ledger_difficulty(db: &Path) -> f64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT COALESCE(SUM(difficulty_sum), 0) FROM worker_minute",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Interval starts of one site's reports at the pool, in order.
fn pool_intervals(db: &Path, site: &str) -> Vec<(i64, i64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT interval_start, interval_end FROM energy_reports WHERE site_id = ?1 ORDER BY interval_start")
        .unwrap();
    let rows = stmt
        .query_map([site], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_report_and_the_pool_shows_mix_and_footprint() {
    init_logging();
    let node = NodeStandIn::start(node_config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cloud = start_cloud(&node, dir.path(), "").await;
    let url = format!("http://{}", cloud.api_addr());
    // Powers in watts: whole numbers, exact in the SDM630's float32 registers (and in thirds
    // per phase).
    let (solar_w1, solar_w2, grid_w, hydro_w, wind_w) =
        (36_000.0, 24_000.0, 15_000.0, 30_000.0, 12_000.0);
    let solar = Meter::start(solar_w1).await;
    let grid = Meter::start(grid_w).await;
    let hydro = Meter::start(hydro_w).await;
    let wind = Meter::start(wind_w).await;
    let interval = 2u64;
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let site_a = format!(
        "{}{}{}",
        meter_toml("pv", "feeder", solar.sim.addr()),
        meter_toml("grid-in", "site_total", grid.sim.addr()),
        energy_site_toml(
            "site-a",
            TOKEN_A,
            interval,
            &url,
            &(source_toml("solar", "pv", None) + &source_toml("grid", "grid-in", Some("X")))
        )
    );
    let site_b = format!(
        "{}{}{}",
        meter_toml("turbine", "feeder", hydro.sim.addr()),
        meter_toml("wind", "feeder", wind.sim.addr()),
        energy_site_toml(
            "site-b",
            TOKEN_B,
            interval,
            &url,
            &(source_toml("hydro", "turbine", None) + &source_toml("wind", "wind", None))
        )
    );
    let miner_d = 1.0 / 65_536.0;
    let proxy_a = blgv_proxy::start(proxy_config_with(
        &[cloud.local_addr()],
        miner_d,
        dir_a.path(),
        &site_a,
    ))
    .await
    .unwrap();
    let proxy_b = blgv_proxy::start(proxy_config_with(
        &[cloud.local_addr()],
        miner_d,
        dir_b.path(),
        &site_b,
    ))
    .await
    .unwrap();
    let mut miners = Vec::new();
    for (proxy, site) in [(&proxy_a, "a"), (&proxy_b, "b")] {
        for i in 0..2 {
            let mut c = MinerConfig::new(proxy.local_addr(), format!("site{site}.rig{i}"));
            c.hashrate = 50_000;
            miners.push(SimMiner::spawn(c));
        }
    }
    for p in [&proxy_a, &proxy_b] {
        let power = p.site_power();
        assert!(
            wait_until(Duration::from_secs(10), || power
                .meters
                .iter()
                .all(|m| m.latest().power_kw().is_some()))
            .await,
            "the proxy reads its meters"
        );
    }
    // The window checked by hand: whole intervals after every meter was read (the first
    // interval of a proxy is partial: it started in the middle of it).
    let step = interval as i64;
    let from = ((unix_now() / step as f64).ceil() as i64 + 1) * step;
    let to = from + 6 * step;
    // A cloud passes over site A's panels in the middle of the window.
    let step_at = from as f64 + 5.0;
    tokio::time::sleep(Duration::from_secs_f64((step_at - unix_now()).max(0.0))).await;
    let before = unix_now();
    solar.set(solar_w2);
    let after = unix_now();
    let t_step = (before + after) / 2.0;
    assert!(
        t_step > from as f64 && t_step < to as f64,
        "the test ran late"
    );
    let api = ApiClient::new(cloud.api_addr(), None);
    let window = format!("from={from}&to={to}");
    assert!(
        wait_until(Duration::from_secs(30), || pool_intervals(
            &dir.path().join("cloud.db"),
            "site-a"
        )
        .iter()
        .chain(pool_intervals(&dir.path().join("cloud.db"), "site-b").iter())
        .filter(|(s, _)| *s == to - step)
        .count()
            == 2)
        .await,
        "both sites reported the window's last interval; a: {:?}, b: {:?}",
        proxy_a.energy_status(),
        proxy_b.energy_status()
    );
    let mix = api.get_ok(&format!("/api/energy/sources?{window}")).await;
    let fp = api.get_ok(&format!("/api/carbon/footprint?{window}")).await;

    // The site operator sees the reports in the proxy's own API and metrics.
    let proxy_api = proxy_a.api_addr().expect("the test proxy serves its API");
    let status: Value = reqwest::get(format!("http://{proxy_api}/api/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let energy: Value = reqwest::get(format!("http://{proxy_api}/api/energy"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sent = energy["sent"]
        .as_u64()
        .unwrap_or_else(|| panic!("{energy}"));
    assert!(
        sent >= 6,
        "at least the window's reports were acknowledged: {energy}"
    );
    assert!(
        status["energy"]["sent"].as_u64().unwrap() <= sent,
        "status carries the same counters: {status}"
    );
    assert_eq!(energy["refused"], 0, "{energy}");
    let metrics = reqwest::get(format!("http://{proxy_api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported = blgv_tests::grafana::exported_names(&metrics);
    for name in blgv_proxy::api::metrics::ENERGY_METRIC_NAMES {
        assert!(
            exported.iter().any(|e| e == name),
            "{name} missing:\n{metrics}"
        );
    }
    let sent_metric: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("blgv_proxy_energy_reports_total{result=\"sent\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sent series:\n{metrics}"));
    assert!(sent_metric >= sent as f64, "{sent_metric} < {sent}");

    // ---- The hand computation --------------------------------------------------------------
    let secs = (to - from) as f64;
    let kwh = |w: f64, s: f64| w / 1000.0 * s / 3600.0;
    // Constant sources: the trapezoid of a constant is exact and every interval is covered
    // edge to edge (boundaries interpolated, or the last reading held to the boundary), so
    // only the float rounding of unix timestamps (~2e-7 s each, tens of pieces) remains.
    let exact = |want: f64| 1e-5 * want;
    let grid_kwh = kwh(grid_w, secs);
    let hydro_kwh = kwh(hydro_w, secs);
    let wind_kwh = kwh(wind_w, secs);
    // The solar step: readings at t₁ < t_step ≤ t₂ give a trapezoid (P₁+P₂)/2·(t₂−t₁) where the
    // truth is P₁(t_step−t₁) + P₂(t₂−t_step); the difference is at most |P₁−P₂|·(t₂−t₁)/2,
    // and t₂−t₁ ≤ stale_after_ms (further apart, nothing is integrated). Also allow the
    // uncertainty of t_step itself (the two clock reads around the change).
    let solar_kwh = kwh(solar_w1, t_step - from as f64) + kwh(solar_w2, to as f64 - t_step);
    let solar_tol = kwh(
        solar_w1 - solar_w2,
        STALE_MS as f64 / 1000.0 / 2.0 + (after - before),
    );
    let total_kwh = solar_kwh + grid_kwh + hydro_kwh + wind_kwh;
    let g_a = solar_kwh * 48.0 + grid_kwh * REGION_X;
    let g_b = hydro_kwh * 24.0 + wind_kwh * 11.0;

    let by_kind = |v: &Value, kind: &str| -> f64 {
        v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == kind)
            .map(|s| f(&s["kwh"]))
            .unwrap_or_else(|| panic!("no {kind} in {v}"))
    };
    let t = &mix["total"];
    eprintln!(
        "mix: solar {:.6} kWh (hand {solar_kwh:.6} ± {solar_tol:.6}), grid {:.6} ({grid_kwh:.6}), hydro {:.6} ({hydro_kwh:.6}), wind {:.6} ({wind_kwh:.6})",
        by_kind(t, "solar"),
        by_kind(t, "grid"),
        by_kind(t, "hydro"),
        by_kind(t, "wind")
    );
    assert_eq!(t["reports"], 2 * 6, "{mix}");
    assert!(near(by_kind(t, "grid"), grid_kwh, exact(grid_kwh)), "{mix}");
    assert!(
        near(by_kind(t, "hydro"), hydro_kwh, exact(hydro_kwh)),
        "{mix}"
    );
    assert!(near(by_kind(t, "wind"), wind_kwh, exact(wind_kwh)), "{mix}");
    assert!(near(by_kind(t, "solar"), solar_kwh, solar_tol), "{mix}");
    assert!(
        near(f(&t["kwh"]), total_kwh, solar_tol + exact(total_kwh)),
        "{mix}"
    );
    // Shares and the renewable part (everything but the grid) follow from the same numbers.
    let grid_entry = t["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "grid")
        .unwrap();
    assert_eq!(grid_entry["region"], "X");
    let api_total = f(&t["kwh"]);
    assert!(near(
        f(&grid_entry["share_percent"]),
        100.0 * by_kind(t, "grid") / api_total,
        1e-9
    ));
    assert!(near(
        f(&t["renewable_percent"]),
        100.0 * (api_total - by_kind(t, "grid")) / api_total,
        1e-9
    ));
    let site = |v: &Value, id: &str| -> Value {
        v["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id} in {v}"))
    };
    assert!(near(
        by_kind(&site(&mix, "site-b"), "hydro"),
        hydro_kwh,
        exact(hydro_kwh)
    ));
    assert!(site(&mix, "site-a")["sources"].as_array().unwrap().len() == 2);

    let ft = &fp["total"];
    let g_tol = solar_tol * 48.0 + exact(g_a + g_b);
    eprintln!(
        "footprint: {:.3} gCO2e (hand {:.3} ± {g_tol:.3}); site-a {:.3} (hand {g_a:.3}), site-b {:.3} (hand {g_b:.3}); {:.3} g/kWh",
        f(&ft["gco2e"]),
        g_a + g_b,
        f(&site(&fp, "site-a")["gco2e"]),
        f(&site(&fp, "site-b")["gco2e"]),
        f(&ft["g_per_kwh"])
    );
    assert!(near(f(&ft["gco2e"]), g_a + g_b, g_tol), "{fp}");
    assert!(near(f(&site(&fp, "site-a")["gco2e"]), g_a, g_tol), "{fp}");
    assert!(
        near(f(&site(&fp, "site-b")["gco2e"]), g_b, exact(g_b)),
        "{fp}"
    );
    assert!(near(
        f(&ft["g_per_kwh"]),
        f(&ft["gco2e"]) / f(&ft["kwh"]),
        1e-9
    ));
    // Site B's intensity is fixed by its two constant feeds.
    let b_intensity = g_b / (hydro_kwh + wind_kwh);
    assert!(near(
        f(&site(&fp, "site-b")["g_per_kwh"]),
        b_intensity,
        1e-6 * b_intensity
    ));
    let grid_fp = site(&fp, "site-a")["by_source"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "grid")
        .cloned()
        .unwrap();
    assert_eq!(grid_fp["basis"], "grid_region:X");
    assert!(near(f(&grid_fp["g_per_kwh"]), REGION_X, 1e-9));
    assert_eq!(fp["factors"]["ipcc_ar5_median"]["solar"], 48.0);

    // ---- Hashes, blocks, per TH and J/TH over the whole run ---------------------------------
    // Stop hashing, then wait for a report built after the proxies' ledgers flushed the last
    // shares: the reports' hashes then add up to the ledgers exactly (cumulative differences).
    for m in miners {
        m.stop().await;
    }
    let stopped = unix_now();
    let settled = ((stopped / step as f64).ceil() as i64 + 1) * step;
    let db = dir.path().join("cloud.db");
    assert!(
        wait_until(Duration::from_secs(30), || {
            ["site-a", "site-b"].iter().all(|s| {
                pool_intervals(&db, s)
                    .last()
                    .is_some_and(|(start, _)| *start >= settled)
            })
        })
        .await,
        "reports after the miners stopped"
    );
    let until = unix_now().ceil() as i64 + 10;
    let all = api
        .get_ok(&format!("/api/carbon/footprint?from=0&to={until}"))
        .await;
    for (id, d) in [("site-a", &dir_a), ("site-b", &dir_b)] {
        let s = site(&all, id);
        let ledger = ledger_difficulty(&d.path().join("ledger.db")) * TWO_POW_32;
        eprintln!(
            "{id}: reported {:e} hashes, ledger {ledger:e}; {:.1} J/TH",
            f(&s["hashes"]),
            f(&s["j_per_th"])
        );
        assert!(ledger > 0.0);
        assert!(near(f(&s["hashes"]), ledger, 1e-12 * ledger), "{id}: {s}");
        let th = f(&s["hashes"]) / 1e12;
        assert!(near(
            f(&s["g_per_th"]),
            f(&s["gco2e"]) / th,
            1e-9 * f(&s["g_per_th"])
        ));
        assert!(near(
            f(&s["j_per_th"]),
            f(&s["kwh"]) * 3.6e6 / th,
            1e-9 * f(&s["j_per_th"])
        ));
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let blocks: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM blocks WHERE found_at_ms < ?1 AND status != 'rejected'",
            [until * 1000],
            |r| r.get(0),
        )
        .unwrap();
    let at = &all["total"];
    eprintln!(
        "whole run: {} reports, {:.6} kWh, {:.3} gCO2e, {} blocks, {:.3} gCO2e/block",
        at["reports"],
        f(&at["kwh"]),
        f(&at["gco2e"]),
        blocks,
        at["g_per_block"].as_f64().unwrap_or(f64::NAN)
    );
    assert_eq!(at["blocks_found"].as_i64(), Some(blocks));
    if blocks > 0 {
        assert!(near(
            f(&at["g_per_block"]),
            f(&at["gco2e"]) / blocks as f64,
            1e-9 * f(&at["g_per_block"])
        ));
    } else {
        assert!(at["g_per_block"].is_null());
    }
    // Each interval of each site is at the pool once, back to back from the first.
    for s in ["site-a", "site-b"] {
        let iv = pool_intervals(&db, s);
        assert!(iv.windows(2).all(|w| w[0].1 == w[1].0), "{s}: {iv:?}");
    }
    proxy_a.shutdown().await;
    proxy_b.shutdown().await;
    // The dashboard's panels show the API's figures (the last 24 h; no more reports come).
    dashboard_shows_the_energy_panels(&api, cloud.api_addr()).await;
    cloud.shutdown().await;
    node.stop().await;
}

/// The pool's dashboard in headless Chromium (skipped, saying why, when it is not installed):
/// the energy mix and carbon footprint panels show what the two GET endpoints answer.
async fn dashboard_shows_the_energy_panels(api: &ApiClient, addr: SocketAddr) {
    let browser = match Browser::start().await {
        Ok(b) => b,
        Err(why) => {
            eprintln!("dashboard panels {why}");
            return;
        }
    };
    let mix = api.get_ok("/api/energy/sources").await;
    let fp = api.get_ok("/api/carbon/footprint").await;
    browser
        .client
        .goto(&format!("http://{addr}/"))
        .await
        .expect("page loads");
    let value = |id: &'static str| {
        let b = &browser;
        async move {
            b.client
                .find(Locator::Id(id))
                .await
                .ok()?
                .attr("data-value")
                .await
                .ok()?
        }
    };
    let want_reports = mix["total"]["reports"].to_string();
    let mut shown = None;
    for _ in 0..100 {
        shown = value("energy-reports").await;
        if shown.as_deref() == Some(want_reports.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shown, Some(want_reports), "reports shown");
    // Numbers are carried exactly in data-value (JavaScript prints the shortest round trip).
    for (id, want) in [
        ("energy-kwh", &mix["total"]["kwh"]),
        ("energy-renewable", &mix["total"]["renewable_percent"]),
        ("carbon-total", &fp["total"]["gco2e"]),
        ("carbon-per-kwh", &fp["total"]["g_per_kwh"]),
        ("carbon-per-th", &fp["total"]["g_per_th"]),
    ] {
        let got: f64 = value(id).await.unwrap().parse().unwrap();
        assert_eq!(got, f(want), "#{id}");
    }
    let rows = |css: &'static str| {
        let b = &browser;
        async move {
            b.client
                .find_all(Locator::Css(css))
                .await
                .map(|v| v.len())
                .unwrap_or(0)
        }
    };
    let sources = mix["total"]["sources"].as_array().unwrap().len()
        + mix["sites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["sources"].as_array().unwrap().len())
            .sum::<usize>();
    assert_eq!(rows("#mix tbody tr").await, sources);
    assert_eq!(rows("#footprint tbody tr").await, 2);
    assert_eq!(
        rows("#mix-bar span").await,
        4,
        "one bar segment per source kind"
    );
    eprintln!(
        "dashboard: {} and {} CO2e shown",
        browser.text("#energy-kwh").await.unwrap_or_default(),
        browser.text("#carbon-total").await.unwrap_or_default()
    );
    browser.close().await;
}

/// A valid report body for `site`.
fn report_body(site: &str, start: i64, kwh: f64) -> Value {
    json!({
        "version": 1, "site_id": site, "interval_start": start, "interval_end": start + 300,
        "sources": [
            {"kind": "solar", "meter": "pv", "kwh": kwh, "measured_secs": 300.0},
            {"kind": "grid", "meter": "grid", "region": "X", "kwh": 1.0, "measured_secs": 300.0}
        ],
        "average_kw": 12.0, "peak_kw": 13.5, "hashes": 1.0e15
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_are_refused_naming_the_field() {
    init_logging();
    let node = NodeStandIn::start(node_config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cloud = start_cloud(&node, dir.path(), "max_body_bytes = 4096").await;
    let api = ApiClient::new(cloud.api_addr(), Some(TOKEN_A));
    let start = (unix_now() as i64 / 300 - 4) * 300;
    let post = |body: Value, token: Option<&'static str>| {
        let api = &api;
        async move {
            api.post_raw("/api/energy/report", body.to_string().into_bytes(), token)
                .await
        }
    };
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v = report_body("site-a", start, 5.0);
        f(&mut v);
        v
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "negative energy",
            edit(&|v| v["sources"][0]["kwh"] = json!(-2.5)),
            400,
            "sources[0].kwh",
        ),
        (
            "interval in the future",
            edit(&|v| {
                v["interval_start"] = json!(start + 3600);
                v["interval_end"] = json!(start + 3900);
            }),
            400,
            "interval_end",
        ),
        (
            "end before start",
            edit(&|v| v["interval_end"] = json!(start - 10)),
            400,
            "interval_end",
        ),
        (
            "unknown source kind",
            edit(&|v| v["sources"][0]["kind"] = json!("diesel")),
            400,
            "sources[0].kind",
        ),
        (
            "unknown field",
            edit(&|v| v["colour"] = json!("green")),
            400,
            "colour",
        ),
        (
            "missing field",
            edit(&|v| {
                v.as_object_mut().unwrap().remove("hashes");
            }),
            400,
            "hashes",
        ),
        (
            "unknown grid region",
            edit(&|v| v["sources"][1]["region"] = json!("Y")),
            422,
            "sources[1].region",
        ),
        (
            "another site's id",
            report_body("site-b", start, 5.0),
            403,
            "site_id",
        ),
    ];
    for (what, body, status, field) in cases {
        let (s, answer) = post(body, None).await;
        eprintln!("{what}: {s} {answer}");
        assert_eq!(s, status, "{what}: {answer}");
        assert_eq!(answer["field"], field, "{what}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().len() > 10,
            "{what}: {answer}"
        );
    }
    // Malformed JSON, an oversized body.
    let (s, answer) = api
        .post_raw(
            "/api/energy/report",
            b"{\"version\": 1, \"site_id\": ".to_vec(),
            None,
        )
        .await;
    assert_eq!(
        (s, answer["field"].as_str()),
        (400, Some("body")),
        "{answer}"
    );
    assert!(answer["error"].as_str().unwrap().contains("malformed JSON"));
    let mut big = report_body("site-a", start, 5.0);
    big["padding"] = json!("x".repeat(5000));
    let (s, answer) = post(big, None).await;
    assert_eq!(
        (s, answer["field"].as_str()),
        (413, Some("body")),
        "{answer}"
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("api.max_body_bytes"),
        "{answer}"
    );
    // Tokens: none, wrong.
    let anonymous = ApiClient::new(cloud.api_addr(), None);
    let (s, answer) = anonymous
        .post_raw(
            "/api/energy/report",
            report_body("site-a", start, 5.0).to_string().into_bytes(),
            None,
        )
        .await;
    assert_eq!(s, 401, "{answer}");
    let (s, _) = post(
        report_body("site-a", start, 5.0),
        Some("not-a-site-token-000000"),
    )
    .await;
    assert_eq!(s, 401);
    // One site's token does not report for another.
    let (s, _) = post(report_body("site-a", start, 5.0), Some(TOKEN_B)).await;
    assert_eq!(s, 403, "site B's token cannot report for site A");

    // Idempotency: stored once, a retry is a duplicate, a different report for the same
    // interval and an overlapping one are conflicts.
    let good = report_body("site-a", start, 5.0);
    let (s, answer) = post(good.clone(), None).await;
    assert_eq!(
        (s, answer["status"].as_str()),
        (201, Some("stored")),
        "{answer}"
    );
    assert!(
        near(f(&answer["gco2e"]), 5.0 * 48.0 + REGION_X, 1e-9),
        "{answer}"
    );
    // The same report with its keys in another order and integers for floats is the same.
    let reordered = format!(
        "{{\"hashes\": 1000000000000000, \"peak_kw\": 13.5, \"average_kw\": 12, \"sources\": {}, \
         \"interval_end\": {}, \"interval_start\": {start}, \"site_id\": \"site-a\", \"version\": 1}}",
        good["sources"],
        start + 300
    );
    let (s, answer) = api
        .post_raw("/api/energy/report", reordered.into_bytes(), None)
        .await;
    assert_eq!(
        (s, answer["status"].as_str()),
        (200, Some("duplicate")),
        "{answer}"
    );
    let (s, answer) = post(report_body("site-a", start, 5.000001), None).await;
    assert_eq!(
        (s, answer["field"].as_str()),
        (409, Some("interval_start")),
        "{answer}"
    );
    let mut overlapping = report_body("site-a", start + 100, 1.0);
    overlapping["interval_end"] = json!(start + 200);
    overlapping["sources"][0]["measured_secs"] = json!(100.0);
    overlapping["sources"][1]["measured_secs"] = json!(100.0);
    let (s, answer) = post(overlapping, None).await;
    assert_eq!(s, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("overlaps"),
        "{answer}"
    );
    // Counted once.
    let mix = api
        .get_ok(&format!(
            "/api/energy/sources?from={start}&to={}",
            start + 300
        ))
        .await;
    assert_eq!(mix["total"]["reports"], 1, "{mix}");
    assert!(near(f(&mix["total"]["kwh"]), 6.0, 1e-12), "{mix}");
    // Query parameters are checked too.
    for (q, field, status) in [
        ("from=yesterday", "from", 400),
        ("from=100&to=50", "from", 400),
        ("site=a%20b", "site", 400),
        ("site=nowhere", "site", 404),
    ] {
        let (s, answer) = api.get(&format!("/api/carbon/footprint?{q}")).await;
        assert_eq!(
            (s, answer["field"].as_str()),
            (status, Some(field)),
            "{q}: {answer}"
        );
    }
    cloud.shutdown().await;
    node.stop().await;
}

// ---- The fault test: outage, SIGKILL mid-send, restart ---------------------------------------

/// The `blgv-proxy` binary, brought up to date by the shared `product_binaries` (the same
/// build as the workspace's, so a no-op under `cargo test --workspace`), checked to take
/// `config` (an `[energy]` section).
fn proxy_binary(config: &Path) -> PathBuf {
    let (_, bin) = common::product_binaries::product_binaries();
    let out = std::process::Command::new(&bin)
        .arg("check-config")
        .arg(config)
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{} check-config {}: {}",
        bin.display(),
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

fn spawn_proxy(bin: &Path, config: &Path, log: &Path) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    std::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .env("BLGV_LOG", "info,blgv_proxy::energy=debug")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn outbox_len(path: &Path) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(path) else {
        return -1;
    };
    conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_sigkill_lose_no_interval_and_count_none_twice() {
    init_logging();
    let node = NodeStandIn::start(node_config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cloud.db");
    let cloud = start_cloud(&node, dir.path(), "").await;
    let relay = Relay::start(cloud.api_addr()).await;
    let solar = Meter::start(9_000.0).await;
    let site = tempfile::tempdir().unwrap();
    let config = site.path().join("proxy.toml");
    // No miners in this test: the upstream is never dialled.
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[api]\nenabled = false\n\
         [[upstreams]]\nurl = \"127.0.0.1:9\"\nuser = \"site.f\"\n\
         [ledger]\npath = {:?}\nflush_interval_ms = 200\n{}{}",
        site.path().join("ledger.db"),
        meter_toml("pv", "site_total", solar.sim.addr()),
        energy_site_toml(
            "site-f",
            TOKEN_F,
            1,
            &format!("http://{}", relay.addr),
            &source_toml("solar", "pv", None)
        )
    );
    std::fs::write(&config, text).unwrap();
    let bin = proxy_binary(&config);
    let outbox = site.path().join("ledger.energy-outbox.db");
    let log = site.path().join("proxy.log");
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut child = spawn_proxy(&bin, &config, &log);

    // 1. Reports flow.
    assert!(
        wait_until(Duration::from_secs(20), || pool_intervals(&db, "site-f")
            .len()
            >= 3)
        .await,
        "no reports at the pool:\n{}",
        show_log()
    );
    // 2. The pool goes down for several intervals; reports pile up in the outbox.
    cloud.shutdown().await;
    let stored_before = pool_intervals(&db, "site-f").len();
    assert!(
        wait_until(Duration::from_secs(20), || outbox_len(&outbox) >= 5).await,
        "the outbox holds the reports while the pool is down (has {}):\n{}",
        outbox_len(&outbox),
        show_log()
    );
    // 3. The pool comes back, but its answers are swallowed: the first report it stores is
    // never acknowledged, and the proxy is killed while waiting for that answer.
    relay.set_hold_answers(true);
    let cloud = start_cloud(&node, dir.path(), "").await;
    relay.set_target(cloud.api_addr());
    assert!(
        wait_until(Duration::from_secs(20), || pool_intervals(&db, "site-f")
            .len()
            > stored_before)
        .await,
        "the pool stored the first report after its outage:\n{}",
        show_log()
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = unix_now();
    let held = pool_intervals(&db, "site-f").len();
    assert_eq!(
        held,
        stored_before + 1,
        "one report in flight, stored, unacknowledged"
    );
    let queued_at_kill = outbox_len(&outbox);
    // 4. The proxy restarts (a second later) and the answers flow again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    relay.set_hold_answers(false);
    let mut child = spawn_proxy(&bin, &config, &log);
    let caught_up = (killed_at.ceil() as i64) + 4;
    assert!(
        wait_until(Duration::from_secs(30), || {
            outbox_len(&outbox) == 0
                && pool_intervals(&db, "site-f")
                    .last()
                    .is_some_and(|(s, _)| *s >= caught_up)
        })
        .await,
        "the proxy caught up:\n{}",
        show_log()
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let iv = pool_intervals(&db, "site-f");
    let first = iv[0].0;
    let last = iv.last().unwrap().1;
    assert!(
        iv.windows(2).all(|w| w[0].1 == w[1].0),
        "a gap or an overlap at the pool: {iv:?}"
    );
    assert_eq!(
        iv.len() as i64,
        last - first,
        "every 1 s interval once: {iv:?}"
    );
    let answers = relay.answers();
    let duplicates = answers.matches("\"duplicate\"").count();
    assert!(
        duplicates >= 1,
        "the report in flight at the kill was sent again and recognised"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let unmeasured: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM energy_reports r WHERE site_id = 'site-f' AND NOT EXISTS
               (SELECT 1 FROM energy_sources s WHERE s.site_id = r.site_id AND s.interval_start = r.interval_start AND s.measured_secs > 0)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let refused: i64 = rusqlite::Connection::open(&outbox)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM refused", [], |r| r.get(0))
        .unwrap();
    assert_eq!(refused, 0, "no report was refused");
    eprintln!(
        "fault test: {} intervals [{first}, {last}) at the pool, each once; {queued_at_kill} report(s) in the \
         outbox at SIGKILL (the first already stored by the pool, unacknowledged), {duplicates} duplicate \
         answer(s) after the restart, {unmeasured} interval(s) reported unmeasured (the proxy was dead)",
        iv.len(),
    );
    // The pool's figures count each interval once: 9 kW for every measured second.
    let api = ApiClient::new(cloud.api_addr(), None);
    let fp = api
        .get_ok(&format!(
            "/api/carbon/footprint?from={first}&to={last}&site=site-f"
        ))
        .await;
    assert_eq!(
        fp["total"]["reports"].as_i64(),
        Some(iv.len() as i64),
        "{fp}"
    );
    let measured: f64 = conn
        .query_row(
            "SELECT SUM(measured_secs) FROM energy_sources WHERE site_id = 'site-f'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        near(f(&fp["total"]["kwh"]), 9.0 * measured / 3600.0, 1e-6),
        "{fp} vs {measured} s measured"
    );
    cloud.shutdown().await;
    node.stop().await;
}
