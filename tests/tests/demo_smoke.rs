//! The demo site (the README's first command, `scripts/demo`) end to end, with the real
//! `blgv-cloud` and `blgv-proxy` binaries: it starts, finds blocks on its DEMO chain, handles the
//! grid operator's curtailment (site brought under the limit by pausing miners through their
//! firmware APIs, then restored), and stops cleanly with exit code 0 on SIGINT, taking its
//! children with it.
//!
//! The builds of the two binaries next to the demo's are used, brought up to date by
//! `common/product_binaries.rs` (a no-op under the workspace's `cargo test`).

#[path = "common/product_binaries.rs"]
mod product_binaries;

use product_binaries::product_binaries;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kills the demo if the test fails half-way (its children follow: they get SIGTERM when it
/// dies).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn sigint(pid: u32) {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe {
        libc::kill(pid as i32, libc::SIGINT);
    }
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `http://ADDR/` in a line like "... site dashboard http://127.0.0.1:8081/ ...".
fn url_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let start = rest.find("http://")?;
    let url = rest[start..].split_whitespace().next()?;
    Some(url.trim_end_matches('/').to_string())
}

/// "pid N" at the end of a header line.
fn pid_in(line: &str) -> Option<u32> {
    line.split("pid ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn get_json(rt: &tokio::runtime::Runtime, url: &str) -> Value {
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        r.json::<Value>()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    })
}

#[test]
fn the_demo_site_mines_blocks_handles_a_curtailment_and_stops_cleanly_on_sigint() {
    let (cloud_bin, proxy_bin) = product_binaries();
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_blgv-demo"))
        .args([
            // Any free ports: a demo someone is running on the fixed ones is left alone.
            "--stratum-port",
            "0",
            "--api-port",
            "0",
            "--cloud-stratum-port",
            "0",
            "--cloud-api-port",
            "0",
            "--node-port",
            "0",
            "--mqtt-port",
            "0",
            // A safety net only: the test stops it with SIGINT well before.
            "--seconds",
            "75",
            "--every",
            "2",
            "--curtail-after",
            "8",
            "--curtail-for",
            "8",
            // Energy reports to the pool every 2 s (production: 300).
            "--energy-every",
            "2",
            // Blocks every ~1.5 s at full power, so one is certain long before the end.
            "--pool-difficulty",
            "0.0001220703125",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--cloud-bin")
        .arg(&cloud_bin)
        .arg("--proxy-bin")
        .arg(&proxy_bin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting blgv-demo");
    let mut demo = Running(child);
    let pid = demo.0.id();
    let stdout = demo.0.stdout.take().unwrap();
    let mut stderr = demo.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut out: Vec<String> = Vec::new();
    let (mut proxy_api, mut cloud_api) = (None, None);
    let mut child_pids = Vec::new();
    let (mut handled, mut checked_api, mut restored, mut block_lines) = (false, false, false, 0);
    let deadline = started + Duration::from_secs(70);
    let mut interrupted = false;
    // Read the demo's story; check the APIs at the interesting moments; interrupt it once it
    // has shown everything.
    while !interrupted {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            if let Ok(Some(status)) = demo.0.try_wait() {
                panic!(
                    "the demo exited early ({status}):\n{}\n{}",
                    out.join("\n"),
                    err_reader.join().unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not show blocks, a curtailment and its end within 70 s:\n{}",
                out.join("\n")
            );
            continue;
        };
        if line.contains("site dashboard") {
            proxy_api = url_after(&line, "site dashboard");
            child_pids.extend(pid_in(&line));
        }
        if line.contains("pool dashboard") {
            cloud_api = url_after(&line, "pool dashboard");
            child_pids.extend(pid_in(&line));
        }
        if line.contains("found on the DEMO chain") {
            block_lines += 1;
        }
        if line.contains("curtailment handled") {
            handled = true;
        }
        if line.contains("curtailment over") {
            restored = true;
        }
        out.push(line);

        // While the signal is in force, the proxy's own API agrees: the loop paused miners
        // through their firmware, none had to be withheld, and its meter reads under the limit.
        if handled && !checked_api && !restored {
            let api = proxy_api
                .clone()
                .expect("the proxy's API address was printed");
            let mut last = Value::Null;
            let agreed = (0..30).any(|_| {
                let c = get_json(&rt, &format!("{api}/api/curtailment"));
                let s = get_json(&rt, &format!("{api}/api/status"));
                last = serde_json::json!({"curtailment": c, "status": s});
                let l = &c["loop_status"];
                let ok = c["signal"]["id"] == "demo-curtail-1"
                    && l["paused"].as_array().is_some_and(|p| !p.is_empty())
                    && l["commands_failed"] == 0
                    && c["withheld"].as_array().is_some_and(|w| w.is_empty())
                    && s["site_power_kw"]
                        .as_f64()
                        .zip(s["curtailment_limit_kw"].as_f64())
                        .is_some_and(|(kw, limit)| kw <= limit);
                if !ok {
                    std::thread::sleep(Duration::from_millis(100));
                }
                ok
            });
            assert!(agreed, "the proxy's API during the curtailment: {last:#}");
            checked_api = true;
        }
        if restored && block_lines >= 1 {
            // The pool recorded the blocks too.
            let api = cloud_api
                .clone()
                .expect("the pool's API address was printed");
            let stats = get_json(&rt, &format!("{api}/api/stats"));
            assert!(
                stats["blocks"]["found"].as_u64().is_some_and(|n| n >= 1),
                "pool stats: {stats:#}"
            );
            sigint(pid);
            interrupted = true;
        }
    }
    assert!(checked_api, "the curtailment was never seen in force");

    // SIGINT: the demo stops its children and exits 0 within a few seconds.
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = demo.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < stop_deadline,
            "the demo did not stop within 30 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    out.extend(rx.try_iter());
    let stdout = out.join("\n");
    let stderr = err_reader.join().unwrap_or_default();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGINT\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("Ctrl-C: stopping"), "{stdout}");
    assert!(
        stdout.contains("blgv-proxy stopped cleanly")
            && stdout.contains("blgv-cloud stopped cleanly"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(child_pids.len(), 2, "both children's pids were printed");
    for p in &child_pids {
        assert!(
            !process_exists(*p),
            "child {p} still running after the demo exited"
        );
    }

    // The machine-readable summary.
    let summary = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("summary: "))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    let f: HashMap<&str, &str> = summary
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let num = |k: &str| -> f64 {
        f.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("summary field {k}: {summary}"))
    };
    assert!(num("blocks_found") >= 1.0, "{summary}");
    assert!(num("chain_height") >= 101.0, "{summary}");
    assert!(num("shares_to_pool") >= 1.0, "{summary}");
    assert_eq!(num("upstream_rejected"), 0.0, "{summary}");
    assert_eq!(f.get("curtailment"), Some(&"handled"), "{summary}");
    assert_eq!(f.get("ack"), Some(&"accepted"), "{summary}");
    assert!(num("paused_by_firmware") >= 1.0, "{summary}");
    assert!(
        num("max_kw_while_limited") <= num("limit_kw"),
        "the site stayed under the limit once there: {summary}"
    );
    assert!(
        num("limit_kw") < num("full_kw") * 0.6,
        "a real cut: {summary}"
    );
    assert!(num("under_limit_after_s") < 5.0, "{summary}");
    assert!(f.contains_key("restored_after_s"), "{summary}");
    assert_eq!(f.get("clean_exit"), Some(&"yes"), "{summary}");
    // Energy reports reached the pool, and its footprint is the site's hydro kWh at the IPCC
    // median of 24 g/kWh (the summary rounds kWh to 4 and grams to 2 decimals).
    assert!(num("energy_reports") >= 2.0, "{summary}");
    assert!(num("energy_kwh") > 0.0, "{summary}");
    assert!(
        (num("gco2e") - 24.0 * num("energy_kwh")).abs() <= 0.01,
        "{summary}"
    );

    // The proxy ran from a real, complete site config the demo wrote.
    let cfg = std::fs::read_to_string(data.path().join("proxy.toml")).unwrap();
    for section in [
        "[[meters]]",
        "[grid.mqtt]",
        "[curtailment]",
        "[[miners]]",
        "[energy]",
    ] {
        assert!(cfg.contains(section), "proxy.toml lacks {section}");
    }
    eprintln!("{stdout}");
    eprintln!(
        "demo smoke test: {} blocks, curtailment handled, clean stop, in {:.1} s",
        num("blocks_found"),
        started.elapsed().as_secs_f64()
    );
}
