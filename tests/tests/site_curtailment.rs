//! Curtailment wired into blgv-proxy, configured the way an operator writes it: 20 miners hash
//! through the proxy to a test pool; each has an emulated firmware API (four of each: cgminer,
//! LuxOS, Braiins OS, Whatsminer, Vnish) whose pause really stops the miner's hashing; a Modbus
//! meter (our tokio-modbus SDM630 simulator) measures the emulated machines; the grid operator
//! publishes on a real mosquitto (TLS, passwords, ACL).
//!
//! 1. A 40 % limit: within a second every chosen miner has been commanded and the site is under
//!    the limit; the paused miners stop hashing but keep their Stratum sessions (the firmware
//!    paused them, no work was withheld); ack and compliance reports reach the operator.
//! 2. The signal ends: miners come back in ramped steps and hash again.
//! 3. The meter goes silent mid-signal: fail safe, nothing is restored (even when the limit is
//!    raised) until readings return.
//! 4. A miner whose firmware does not answer: its work is withheld as the last resort (its
//!    sessions closed and refused), the meter shows that was not enough, and the loop sheds
//!    another miner instead.

mod common;

use blgv_tests::asic::Fault;
use blgv_tests::wait_until;
use common::site::{
    start_site, start_site_configured, unix_now, wait_for_api, ADMIN_TOKEN, KINDS, MINERS,
    NOMINAL_W,
};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_sheds_forty_percent_through_firmware_within_a_second_and_restores_in_steps() {
    let Some(site) = start_site(&[]).await else {
        return;
    };
    let full_kw = site.site_kw();
    assert!((full_kw - 67.0).abs() < 0.5, "{full_kw}");
    let limit_kw = (0.4 * full_kw * 10.0).round() / 10.0;

    let sent = Instant::now();
    site.publish(json!({"signal_id": "cut-40", "issued_at": unix_now(), "duration_s": 600, "limit_kw": limit_kw}))
        .await;
    // Under the limit with every pause complete (a cgminer pause disables boards one by one,
    // and the site can dip under the limit before the last one is off).
    let obeyed = wait_until(Duration::from_secs(3), || {
        site.site_kw() <= limit_kw && !site.machines.iter().any(|m| m.is_partly_paused())
    })
    .await;
    let took = sent.elapsed();
    assert!(
        obeyed,
        "site at {:.1} kW vs limit {limit_kw}",
        site.site_kw()
    );
    assert!(
        took < Duration::from_secs(1),
        "every chosen miner commanded {took:?} after the signal was published"
    );
    eprintln!("signal published → site under {limit_kw} kW in {took:?}");
    let paused = site.paused();
    assert!(
        paused.iter().all(|i| *i >= MINERS - paused.len()),
        "least efficient first: {paused:?}"
    );
    // Every firmware family was among those paused (the 13 least efficient span all five).
    assert!(KINDS
        .iter()
        .all(|k| paused.iter().any(|i| site.machines[*i].kind() == *k)));

    // Paused miners stop hashing; the others go on. Nobody lost their Stratum session: the
    // firmware paused them, so no work had to be withheld. (A chunk of hashing already under
    // way when the pause landed may still finish: start counting a little later.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = site.hashes();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = site.hashes();
    for i in 0..MINERS {
        if paused.contains(&i) {
            assert_eq!(before[i], after[i], "paused miner {i} still hashes");
        } else {
            assert!(after[i] > before[i], "running miner {i} stopped hashing");
        }
        assert_eq!(
            site.miners[i].stats().tcp_connects,
            1,
            "miner {i} reconnected"
        );
    }
    assert!(site.proxy.withheld().is_empty());

    // The proxy's meter, its loop and the operator agree.
    let power = site.proxy.site_power();
    assert!(
        wait_until(Duration::from_secs(3), || power.meters[0]
            .latest()
            .power_kw()
            .is_some_and(|kw| kw <= limit_kw))
        .await
    );
    let st = site.proxy.curtailment_status().unwrap();
    assert_eq!(
        (st.signal_id.as_deref(), st.miners_shed, st.commands_failed),
        (Some("cut-40"), paused.len(), 0)
    );
    assert!(
        wait_until(Duration::from_secs(3), || site
            .operator
            .any(|t, v| t.ends_with("/ack")
                && v["signal_id"] == "cut-40"
                && v["status"] == "accepted"))
        .await
    );
    assert!(
        wait_until(Duration::from_secs(3), || site.operator.any(|t, v| t
            .ends_with("/report")
            && v["signal_id"] == "cut-40"
            && v["compliant"] == true
            && v["miners_shed"] == paused.len()))
        .await
    );

    // The operator ends the signal: at most 7 kW (two miners) per step, most efficient first.
    site.publish(json!({"signal_id": "cut-40", "end": true}))
        .await;
    let mut counts = vec![paused.len()];
    let started = Instant::now();
    while counts.last() != Some(&0) && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = site.paused().len();
        if Some(&n) != counts.last() {
            counts.push(n);
        }
    }
    assert_eq!(counts.last(), Some(&0), "all restored: {counts:?}");
    assert!(
        counts.windows(2).all(|w| w[0] - w[1] <= 2),
        "ramped, at most two miners a step: {counts:?}"
    );
    assert!(counts.len() >= 6, "restored over several steps: {counts:?}");
    let before = site.hashes();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = site.hashes();
    assert!(
        (0..MINERS).all(|i| after[i] > before[i]),
        "every miner hashes again"
    );
    site.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_whose_firmware_is_silent_has_its_work_withheld_and_the_meter_sheds_another() {
    // Miner 19, the least efficient, is the first to shed; its API never answers.
    let Some(site) = start_site(&[19]).await else {
        return;
    };
    let full_kw = site.site_kw();
    // Room for 18 running miners' worth: the loop pauses miner 19 first, by estimate enough.
    let limit_kw = ((full_kw - 1.5 * NOMINAL_W / 1000.0) * 10.0).round() / 10.0;
    site.publish(json!({"signal_id": "cut-small", "issued_at": unix_now(), "duration_s": 600, "limit_kw": limit_kw}))
        .await;
    // The firmware does not answer within its 300 ms: the proxy withholds miner 19's work.
    assert!(
        wait_until(Duration::from_secs(5), || !site.proxy.withheld().is_empty()).await,
        "work withheld as the last resort"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !site.miners[19]
            .stats()
            .authorized)
        .await,
        "the withheld miner's session is closed and its reconnects are refused"
    );
    let refused_after = site.miners[19].stats();
    assert!(refused_after.tcp_connects >= 1);
    // Withholding did not lower the silent machine's power (it is still "hashing" by its own
    // account), so the meter keeps the site over the limit and the loop sheds another miner,
    // through its firmware.
    assert!(
        wait_until(Duration::from_secs(5), || site.site_kw() <= limit_kw).await,
        "site at {:.1} kW vs limit {limit_kw}",
        site.site_kw()
    );
    assert!(!site.machines[19].is_paused());
    assert!(
        site.machines[18].is_paused(),
        "the next least efficient was paused"
    );
    // While withheld, its reconnect attempts are refused: it never gets work.
    let accepted = site.miners[19].stats().accepted;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = site.miners[19].stats();
    assert_eq!(later.accepted, accepted, "a withheld miner got work");
    assert!(!later.authorized);

    // The signal ends: the withheld miner gets its work back and hashes again.
    site.machines[19].set_fault(Fault::None);
    site.publish(json!({"signal_id": "cut-small", "end": true}))
        .await;
    assert!(
        wait_until(Duration::from_secs(15), || site.proxy.withheld().is_empty()
            && site.paused().is_empty())
        .await,
        "released"
    );
    assert!(
        wait_until(Duration::from_secs(15), || site.miners[19].stats().accepted
            > accepted)
        .await,
        "the released miner mines again"
    );
    site.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_that_goes_silent_mid_signal_keeps_the_site_curtailed() {
    let Some(site) = start_site(&[]).await else {
        return;
    };
    let full_kw = site.site_kw();
    let limit_kw = (0.4 * full_kw * 10.0).round() / 10.0;
    site.publish(json!({"signal_id": "cut-40", "issued_at": unix_now(), "duration_s": 600, "limit_kw": limit_kw}))
        .await;
    assert!(wait_until(Duration::from_secs(3), || site.site_kw() <= limit_kw).await);
    let shed = site.paused().len();

    // The meter stops answering: the proxy's reading goes bad.
    site.meter.set_silent(true);
    let power = site.proxy.site_power();
    assert!(
        wait_until(Duration::from_secs(15), || power.meters[0]
            .latest()
            .power_kw()
            .is_none())
        .await,
        "the silent meter's reading is marked stale/bad"
    );
    // The operator raises the limit to 90 %: with a meter the loop would restore most miners;
    // blind, it holds every miner where it is and reports itself non-compliant.
    site.publish(json!({"signal_id": "cut-90", "issued_at": unix_now(), "duration_s": 600, "limit_kw": (0.9 * full_kw).round()}))
        .await;
    assert!(
        wait_until(Duration::from_secs(5), || site.operator.any(|t, v| t
            .ends_with("/report")
            && v["signal_id"] == "cut-90"
            && v["measured_kw"].is_null()
            && v["compliant"] == false))
        .await,
        "blind reports reach the operator"
    );
    // Several restore intervals (1 s each) pass: still nothing restored.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(site.paused().len(), shed, "restored with a blind meter");
    let st = site.proxy.curtailment_status().unwrap();
    assert_eq!(st.measured_kw, None);
    assert_eq!(st.miners_shed, shed);

    // Readings return: the loop restores up to the new limit, in steps.
    site.meter.set_silent(false);
    assert!(
        wait_until(Duration::from_secs(15), || site.paused().len() < shed).await,
        "restores once the meter is back"
    );
    site.proxy.shutdown().await;
}

/// The meter teaches the loop a miner's real power, end to end: asic05 is rated 2,700 W in the
/// config but its machine draws 3,250 W. Operator pauses and resumes through the HTTP API are
/// single-miner steps the site meter sees; once enough of them were clean, `/api/curtailment`
/// shows the learned power, close to the real draw, in use by the controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meter_teaches_the_loop_a_miners_real_power_and_the_api_shows_it() {
    let configured = 2_700.0;
    let Some(site) = start_site_configured(&[], &[(5, configured)]).await else {
        return;
    };
    let api = site.proxy.api_addr().expect("api enabled").to_string();
    let worker = "acct.asic05";
    let http = reqwest::Client::new();
    // settle_ms is 400 and the meter is polled every 200 ms: a step a second apart is clean.
    for _ in 0..3 {
        for verb in ["pause", "resume"] {
            let r = http
                .post(format!("http://{api}/api/miners/{worker}/{verb}"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status().as_u16(),
                200,
                "{verb}: {}",
                r.text().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(1_000)).await;
        }
    }
    let learned_entry = |v: &serde_json::Value| {
        v["loop_status"]["learned"]
            .as_array()
            .and_then(|l| l.iter().find(|m| m["id"] == worker).cloned())
    };
    let in_use = wait_for_api(&api, "/api/curtailment", |v| {
        learned_entry(v).is_some_and(|m| m["in_use"] == true)
    })
    .await;
    let body: serde_json::Value = reqwest::get(format!("http://{api}/api/curtailment"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        in_use,
        "no learned power in use for {worker}: {}",
        body["loop_status"]
    );
    let entry = learned_entry(&body).unwrap();
    let learned = entry["nominal_w"].as_f64().unwrap();
    let truth = site.machines[5].nominal_w();
    assert!(
        (learned - truth).abs() / truth < 0.02,
        "learned {learned:.0} W for a machine drawing {truth:.0} W (configured {configured:.0} W)"
    );
    assert!(entry["samples"].as_u64().unwrap() >= 3, "{entry}");
    eprintln!(
        "learned {worker}: {learned:.0} W from {} meter steps (machine {truth:.0} W, configured {configured:.0} W)",
        entry["samples"]
    );
    site.proxy.shutdown().await;
}
