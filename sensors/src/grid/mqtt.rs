//! The grid operator's MQTT link: receive curtailment signals on the site's topic, answer each
//! with an acknowledgement, publish compliance reports while a signal is in force.
//!
//! Topics under `{topic_prefix}/{site_id}/`:
//! - `curtailment` (subscribed, QoS 1): signals, usually published retained so a restarted site
//!   gets the current one at once;
//! - `curtailment/ack` (QoS 1): `{"signal_id", "status": "accepted"|"rejected"|"ended", "reason", "at"}`;
//! - `curtailment/report` (QoS 1): compliance reports;
//! - `status` (retained): `online` on connect, `offline` as the last will.
//!
//! TLS (with an optional client certificate) and username/password come from config; the
//! password is never logged. The client reconnects by itself with backoff.

use super::signal::{
    parse_signal_delivered, Delivery, Signal, SignalError, SignalMessage, SignalRules,
};
use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    /// Defaults to 8883 with TLS, 1883 without.
    #[serde(default)]
    pub port: Option<u16>,
    pub site_id: String,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub tls: Option<MqttTls>,
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    #[serde(default)]
    pub rules: SignalRules,
}

fn default_prefix() -> String {
    "blgv/site".into()
}
fn default_keep_alive() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTls {
    /// PEM file of the CA that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// Optional client certificate and key (PEM) for brokers that require them.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error("cannot read {what} {path}: {source}; fix: check grid.mqtt.tls paths")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("grid.mqtt.{key}: {problem}")]
    Config { key: &'static str, problem: String },
}

/// A compliance report, published every few seconds while a signal is in force.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComplianceReport {
    pub signal_id: String,
    pub limit_kw: Option<f64>,
    pub measured_kw: Option<f64>,
    pub miners_shed: usize,
    pub seconds_since_start: u64,
    pub compliant: bool,
}

/// The topics of one site.
#[derive(Debug, Clone)]
pub struct Topics {
    pub signal: String,
    pub ack: String,
    pub report: String,
    pub status: String,
}

impl Topics {
    pub fn new(prefix: &str, site: &str) -> Topics {
        let base = format!("{}/{}", prefix.trim_end_matches('/'), site);
        Topics {
            signal: format!("{base}/curtailment"),
            ack: format!("{base}/curtailment/ack"),
            report: format!("{base}/curtailment/report"),
            status: format!("{base}/status"),
        }
    }
}

/// A running link: the signal in force, and a way to publish reports.
#[derive(Clone)]
pub struct GridLink {
    signal: watch::Receiver<Option<Signal>>,
    client: AsyncClient,
    pub topics: Topics,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl GridLink {
    /// The accepted signal (it may not have started yet, or may have expired: check its times).
    pub fn signal(&self) -> watch::Receiver<Option<Signal>> {
        self.signal.clone()
    }

    pub async fn publish_report(&self, report: &ComplianceReport) {
        let mut v = serde_json::to_value(report).unwrap_or_default();
        v["at"] = json!(now_rfc3339());
        if let Err(e) = self
            .client
            .publish(&self.topics.report, QoS::AtLeastOnce, false, v.to_string())
            .await
        {
            tracing::warn!(error = %e, "could not queue a compliance report");
        }
    }
}

/// The settings' own consistency, without touching the network or the files (TLS files are
/// read by [`spawn`], which names a missing one): the host, the site id, credentials and client
/// certificate/key that go together.
pub fn check_config(cfg: &MqttConfig) -> Result<(), GridError> {
    let bad = |key, problem: String| Err(GridError::Config { key, problem });
    if cfg.host.trim().is_empty() {
        return bad(
            "host",
            "is empty; set it to the grid operator's broker host name or IP".into(),
        );
    }
    if cfg.site_id.is_empty() || cfg.site_id.contains(['/', '+', '#']) {
        return bad(
            "site_id",
            format!("{:?} must be non-empty without / + #", cfg.site_id),
        );
    }
    if cfg.username.is_some() != cfg.password.is_some() {
        return bad("password", "username and password go together".into());
    }
    if let Some(tls) = &cfg.tls {
        if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
            return bad(
                "tls.client_key_file",
                "client certificate and key go together".into(),
            );
        }
    }
    Ok(())
}

fn options(cfg: &MqttConfig, topics: &Topics) -> Result<MqttOptions, GridError> {
    check_config(cfg)?;
    let port = cfg
        .port
        .unwrap_or(if cfg.tls.is_some() { 8883 } else { 1883 });
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| format!("blgv-site-{}", cfg.site_id));
    let mut o = MqttOptions::new(client_id, cfg.host.clone(), port);
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_secs.max(5)));
    o.set_clean_session(true);
    // Let our own validation refuse large payloads with a reason on the ack topic; only beyond
    // this transport limit does the client drop (and re-establish) the connection.
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    o.set_last_will(LastWill::new(
        &topics.status,
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    match (&cfg.username, &cfg.password) {
        (Some(u), Some(p)) => {
            o.set_credentials(u.clone(), p.clone());
        }
        (None, None) => {}
        _ => {
            return Err(GridError::Config {
                key: "password",
                problem: "username and password go together".into(),
            })
        }
    }
    if let Some(tls) = &cfg.tls {
        let read = |what, path: &PathBuf| {
            std::fs::read(path).map_err(|source| GridError::ReadFile {
                what,
                path: path.clone(),
                source,
            })
        };
        let ca = read("CA file", &tls.ca_file)?;
        let client_auth = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(c), Some(k)) => Some((read("client certificate", c)?, read("client key", k)?)),
            (None, None) => None,
            _ => {
                return Err(GridError::Config {
                    key: "tls.client_key_file",
                    problem: "client certificate and key go together".into(),
                })
            }
        };
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

/// Connect (in the background, reconnecting forever) and follow the site's signal topic.
pub fn spawn(cfg: MqttConfig, shutdown: CancellationToken) -> Result<GridLink, GridError> {
    let topics = Topics::new(&cfg.topic_prefix, &cfg.site_id);
    let (client, mut eventloop) = AsyncClient::new(options(&cfg, &topics)?, 64);
    let (tx, rx) = watch::channel(None::<Signal>);
    let link = GridLink {
        signal: rx,
        client: client.clone(),
        topics: topics.clone(),
    };
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let event = tokio::select! {
                e = eventloop.poll() => e,
                _ = shutdown.cancelled() => {
                    let _ = client.publish(&topics.status, QoS::AtLeastOnce, true, "offline").await;
                    let _ = client.disconnect().await;
                    return;
                }
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(200);
                    tracing::info!(broker = %cfg.host, topic = %topics.signal, "connected to the grid operator's broker");
                    let _ = client.subscribe(&topics.signal, QoS::AtLeastOnce).await;
                    let _ = client
                        .publish(&topics.status, QoS::AtLeastOnce, true, "online")
                        .await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topics.signal => {
                    let delivery = if p.retain {
                        Delivery::Retained
                    } else {
                        Delivery::Live
                    };
                    if let Some(ack) = on_message(&p.payload, delivery, &cfg.rules, &tx) {
                        let _ = client
                            .publish(&topics.ack, QoS::AtLeastOnce, false, ack.to_string())
                            .await;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(broker = %cfg.host, error = %e, "grid MQTT connection lost; reconnecting in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    });
    Ok(link)
}

/// Apply one message to the current signal; returns the acknowledgement to publish, if any.
fn on_message(
    payload: &[u8],
    delivery: Delivery,
    rules: &SignalRules,
    current: &watch::Sender<Option<Signal>>,
) -> Option<serde_json::Value> {
    if payload.is_empty() {
        return None; // a retained signal being cleared
    }
    let ack = |id: Option<&str>, status: &str, reason: Option<String>| json!({"signal_id": id, "status": status, "reason": reason, "at": now_rfc3339()});
    match parse_signal_delivered(payload, rules, SystemTime::now(), delivery) {
        Ok(SignalMessage::Curtail(signal)) => {
            let existing = current.borrow().clone();
            if let Some(cur) = existing.filter(|c| c.id == signal.id) {
                if cur == signal {
                    return None; // redelivered (reconnect, retained replay): nothing new
                }
                let e = SignalError::Duplicate {
                    id: signal.id.clone(),
                };
                tracing::warn!("refused grid signal: {e}");
                return Some(ack(Some(&signal.id), "rejected", Some(e.to_string())));
            }
            tracing::info!(id = %signal.id, limit_kw = ?signal.limit_kw, duration_s = signal.duration.as_secs(), "curtailment signal accepted");
            let id = signal.id.clone();
            current.send_replace(Some(signal));
            Some(ack(Some(&id), "accepted", None))
        }
        Ok(SignalMessage::End { id }) => {
            let matches = current.borrow().as_ref().is_some_and(|c| c.id == id);
            if matches {
                current.send_replace(None);
                tracing::info!(%id, "curtailment signal ended by the operator");
                Some(ack(Some(&id), "ended", None))
            } else {
                Some(ack(
                    Some(&id),
                    "rejected",
                    Some(format!("no active signal {id:?} to end")),
                ))
            }
        }
        Err(e) => {
            let id = serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|v| {
                    v.get("signal_id")
                        .and_then(|s| s.as_str())
                        .map(str::to_string)
                });
            tracing::warn!(signal_id = ?id, "refused grid signal: {e}");
            Some(ack(id.as_deref(), "rejected", Some(e.to_string())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(v: serde_json::Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn accept_redeliver_conflict_end() {
        let (tx, rx) = watch::channel(None);
        let rules = SignalRules::default();
        let s =
            msg(json!({"signal_id": "e1", "issued_at": now(), "duration_s": 60, "limit_kw": 10}));
        assert_eq!(
            on_message(&s, Delivery::Live, &rules, &tx).unwrap()["status"],
            "accepted"
        );
        assert!(rx.borrow().is_some());
        assert!(
            on_message(&s, Delivery::Retained, &rules, &tx).is_none(),
            "same signal again: silent"
        );
        let changed =
            msg(json!({"signal_id": "e1", "issued_at": now(), "duration_s": 60, "limit_kw": 99}));
        let a = on_message(&changed, Delivery::Live, &rules, &tx).unwrap();
        assert_eq!(a["status"], "rejected");
        assert!(a["reason"]
            .as_str()
            .unwrap()
            .contains("new signal needs a new signal_id"));
        assert_eq!(
            rx.borrow().as_ref().unwrap().limit_kw,
            Some(10.0),
            "the accepted signal stays"
        );
        let a = on_message(
            &msg(json!({"signal_id": "nope", "end": true})),
            Delivery::Live,
            &rules,
            &tx,
        )
        .unwrap();
        assert_eq!(a["status"], "rejected");
        let a = on_message(
            &msg(json!({"signal_id": "e1", "end": true})),
            Delivery::Live,
            &rules,
            &tx,
        )
        .unwrap();
        assert_eq!(a["status"], "ended");
        assert!(rx.borrow().is_none());
        let a = on_message(b"garbage", Delivery::Live, &rules, &tx).unwrap();
        assert_eq!(
            (a["status"].as_str(), a["signal_id"].is_null()),
            (Some("rejected"), true)
        );
        assert!(on_message(b"", Delivery::Retained, &rules, &tx).is_none());
    }

    #[test]
    fn config_errors_name_the_key() {
        let cfg: MqttConfig =
            serde_json::from_value(json!({"host": "h", "site_id": "a/b"})).unwrap();
        let e = options(&cfg, &Topics::new("p", "x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("grid.mqtt.site_id"), "{e}");
        let cfg: MqttConfig =
            serde_json::from_value(json!({"host": "h", "site_id": "s", "username": "u"})).unwrap();
        assert!(options(&cfg, &Topics::new("p", "s"))
            .unwrap_err()
            .to_string()
            .contains("grid.mqtt.password"));
        let cfg: MqttConfig = serde_json::from_value(
            json!({"host": "h", "site_id": "s", "tls": {"ca_file": "/nonexistent/ca.pem"}}),
        )
        .unwrap();
        assert!(options(&cfg, &Topics::new("p", "s"))
            .unwrap_err()
            .to_string()
            .contains("cannot read CA file"));
    }
}
