//! The site's grid link against a real broker (mosquitto, TLS, passwords, ACL): signals are
//! validated and acknowledged, hostile payloads refused with a reason, an unauthorized publisher
//! is stopped by the broker, the retained signal is honoured after a restart, reports arrive,
//! and a broker crash keeps the signal in force and is ridden out.

use blgv_sensors::grid::{mqtt, ComplianceReport, MqttConfig};
use blgv_tests::mosquitto::Mosquitto;
use blgv_tests::wait_until;
use rumqttc::{AsyncClient, QoS};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const SIGNAL: &str = "blgv/site/site1/curtailment";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A plain MQTT client (the grid operator, or an intruder) that records what it receives.
async fn client(
    broker: &Mosquitto,
    user: &str,
    pass: &str,
    subscribe: &[&str],
) -> (AsyncClient, Arc<Mutex<Vec<(String, Value)>>>) {
    let c = broker.recording_client(user, pass, subscribe).await;
    (c.client, c.seen)
}

fn site_config(broker: &Mosquitto) -> MqttConfig {
    broker.site_config()
}

fn acks(seen: &Mutex<Vec<(String, Value)>>, id: &str) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(t, v)| t.ends_with("/ack") && v["signal_id"] == id)
        .map(|(_, v)| v.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_over_a_real_broker_with_tls_and_acl() {
    let broker = match Mosquitto::start() {
        Ok(b) => b,
        Err(why) => {
            // The test command installs mosquitto; only a machine without apt gets here.
            eprintln!("grid MQTT test {why}");
            return;
        }
    };
    let shutdown = CancellationToken::new();
    let site = mqtt::spawn(site_config(&broker), shutdown.clone()).unwrap();
    let (grid, seen) = client(
        &broker,
        "grid",
        "grid-secret",
        &["blgv/site/site1/curtailment/#", "blgv/site/site1/status"],
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(10), || seen
            .lock()
            .unwrap()
            .iter()
            .any(|(t, v)| t.ends_with("/status") && v == "online"))
        .await,
        "site online"
    );

    // A valid signal, retained so a restarted site finds it.
    let signal =
        json!({"signal_id": "evt-1", "issued_at": now(), "duration_s": 600, "limit_kw": 12.5});
    grid.publish(SIGNAL, QoS::AtLeastOnce, true, signal.to_string())
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || acks(&seen, "evt-1")
            .iter()
            .any(|a| a["status"] == "accepted"))
        .await
    );
    assert_eq!(
        site.signal().borrow().as_ref().unwrap().limit_kw,
        Some(12.5)
    );

    // Hostile payloads: each refused with a reason, the accepted signal stays.
    for (id, payload) in [
        (
            "bad-1",
            json!({"signal_id": "bad-1", "issued_at": now(), "duration_s": 600, "limit_kw": -3})
                .to_string(),
        ),
        (
            "bad-2",
            json!({"signal_id": "bad-2", "issued_at": now() - 3600, "duration_s": 600, "level": 2})
                .to_string(),
        ),
        (
            "bad-3",
            json!({"signal_id": "bad-3", "issued_at": now(), "duration_s": 600, "level": 9})
                .to_string(),
        ),
    ] {
        grid.publish(SIGNAL, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(5), || acks(&seen, id)
                .iter()
                .any(|a| a["status"] == "rejected" && a["reason"].is_string()))
            .await,
            "{id}"
        );
    }
    grid.publish(SIGNAL, QoS::AtLeastOnce, false, "{{{{ not json")
        .await
        .unwrap();
    grid.publish(SIGNAL, QoS::AtLeastOnce, false, vec![b'x'; 20_000])
        .await
        .unwrap();
    let garbage_acks = || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(t, v)| {
                t.ends_with("/ack") && v["signal_id"].is_null() && v["status"] == "rejected"
            })
            .count()
    };
    assert!(wait_until(Duration::from_secs(5), || garbage_acks() >= 2).await);
    assert!(seen.lock().unwrap().iter().any(|(_, v)| v["reason"]
        .as_str()
        .is_some_and(|r| r.contains("larger than"))));
    assert_eq!(site.signal().borrow().as_ref().unwrap().id, "evt-1");

    // An intruder may read but not publish signals: the broker drops it.
    let (intruder, _) = client(&broker, "intruder", "intruder-secret", &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let evil = json!({"signal_id": "evil", "issued_at": now(), "duration_s": 600, "limit_kw": 0});
    intruder
        .publish(SIGNAL, QoS::AtLeastOnce, false, evil.to_string())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        acks(&seen, "evil").is_empty(),
        "the ACL must keep the intruder's signal away"
    );
    assert_eq!(site.signal().borrow().as_ref().unwrap().id, "evt-1");

    // Compliance reports reach the operator.
    site.publish_report(&ComplianceReport {
        signal_id: "evt-1".into(),
        limit_kw: Some(12.5),
        measured_kw: Some(11.9),
        miners_shed: 4,
        seconds_since_start: 3,
        compliant: true,
    })
    .await;
    assert!(
        wait_until(Duration::from_secs(5), || seen.lock().unwrap().iter().any(
            |(t, v)| t.ends_with("/report") && v["miners_shed"] == 4 && v["compliant"] == true
        ))
        .await
    );

    // Restart the site: the retained signal is honoured at once.
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted = mqtt::spawn(site_config(&broker), CancellationToken::new()).unwrap();
    let mut rx = restarted.signal();
    assert!(
        tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|s| s.as_ref().is_some_and(|s| s.id == "evt-1"))
        )
        .await
        .is_ok(),
        "retained signal after restart"
    );

    // The operator ends it.
    grid.publish(
        SIGNAL,
        QoS::AtLeastOnce,
        false,
        json!({"signal_id": "evt-1", "end": true}).to_string(),
    )
    .await
    .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(Option::is_none))
            .await
            .is_ok()
    );
    assert!(
        wait_until(Duration::from_secs(5), || acks(&seen, "evt-1")
            .iter()
            .any(|a| a["status"] == "ended"))
        .await
    );
}

/// The broker crashes (SIGKILL) and comes back on the same port: the signal in force stays in
/// force meanwhile, the site reconnects by itself, announces itself online again, and the next
/// signal is received and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_crash_keeps_the_signal_in_force_and_signals_flow_again_after_it() {
    let mut broker = match Mosquitto::start() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("grid MQTT test {why}");
            return;
        }
    };
    let shutdown = CancellationToken::new();
    let site = mqtt::spawn(site_config(&broker), shutdown.clone()).unwrap();
    let (grid, seen) = client(
        &broker,
        "grid",
        "grid-secret",
        &["blgv/site/site1/curtailment/#", "blgv/site/site1/status"],
    )
    .await;
    let onlines = || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(t, v)| t.ends_with("/status") && v == "online")
            .count()
    };
    assert!(wait_until(Duration::from_secs(10), || onlines() >= 1).await);
    let signal =
        json!({"signal_id": "before-crash", "issued_at": now(), "duration_s": 600, "limit_kw": 20});
    grid.publish(SIGNAL, QoS::AtLeastOnce, false, signal.to_string())
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || acks(&seen, "before-crash")
            .iter()
            .any(|a| a["status"] == "accepted"))
        .await
    );

    broker.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        site.signal().borrow().as_ref().map(|s| s.limit_kw),
        Some(Some(20.0)),
        "a broker outage must not end the curtailment in force"
    );
    let online_before = onlines();
    broker.start_again().unwrap();
    let restarted = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || onlines() > online_before).await,
        "the site did not come back online after the broker restart"
    );
    let back_online = restarted.elapsed();
    let signal =
        json!({"signal_id": "after-crash", "issued_at": now(), "duration_s": 600, "limit_kw": 15});
    grid.publish(SIGNAL, QoS::AtLeastOnce, false, signal.to_string())
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || acks(&seen, "after-crash")
            .iter()
            .any(|a| a["status"] == "accepted"))
        .await,
        "no ack for the signal sent after the restart"
    );
    assert_eq!(
        site.signal().borrow().as_ref().map(|s| s.limit_kw),
        Some(Some(15.0))
    );
    eprintln!("broker crash: the site was back online {back_online:?} after the broker restarted");
    shutdown.cancel();
}
