//! The grid operator of the demo: an MQTT client (rumqttc, plain TCP to the demo broker) that
//! publishes curtailment signals on `blgv/site/<site>/curtailment` in the JSON format
//! `blgv_sensors::grid::signal` defines, and records what the site answers on
//! `.../curtailment/ack`, `.../curtailment/report` and `.../status`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blgv_sensors::grid::mqtt::Topics;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// One message the operator received: (topic, JSON payload or the text as a JSON string).
pub type Received = (String, Value);

pub struct GridOperator {
    client: AsyncClient,
    topics: Topics,
    inbox: Arc<Mutex<Inbox>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Inbox {
    all: Vec<Received>,
    /// How many of `all` [`GridOperator::take_new`] has handed out.
    read: usize,
    connected: bool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl GridOperator {
    /// Connects (in the background, reconnecting) as `user` to the broker at `broker` and
    /// follows site `site_id`'s answer topics.
    pub fn connect(broker: SocketAddr, user: &str, password: &str, site_id: &str) -> GridOperator {
        let topics = Topics::new("blgv/site", site_id);
        let mut o = MqttOptions::new(
            format!("grid-operator-{}", std::process::id()),
            broker.ip().to_string(),
            broker.port(),
        );
        o.set_credentials(user, password);
        o.set_keep_alive(Duration::from_secs(10));
        let (client, mut events) = AsyncClient::new(o, 64);
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let subscribe = [
            topics.ack.clone(),
            topics.report.clone(),
            topics.status.clone(),
        ];
        let task = {
            let inbox = inbox.clone();
            let client = client.clone();
            tokio::spawn(async move {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            lock(&inbox).connected = true;
                            for t in &subscribe {
                                let _ = client.subscribe(t, QoS::AtLeastOnce).await;
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let v = serde_json::from_slice(&p.payload).unwrap_or_else(|_| {
                                Value::String(String::from_utf8_lossy(&p.payload).into())
                            });
                            lock(&inbox).all.push((p.topic.clone(), v));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "grid operator: broker connection lost");
                            lock(&inbox).connected = false;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            })
        };
        GridOperator {
            client,
            topics,
            inbox,
            task,
        }
    }

    /// The topic signals go to.
    pub fn signal_topic(&self) -> &str {
        &self.topics.signal
    }

    pub fn is_connected(&self) -> bool {
        lock(&self.inbox).connected
    }

    /// Whether the site announced itself: its retained status is "online".
    pub fn site_online(&self) -> bool {
        lock(&self.inbox)
            .all
            .iter()
            .rev()
            .find(|(t, _)| *t == self.topics.status)
            .is_some_and(|(_, v)| v == "online")
    }

    /// Asks the site to stay under `limit_kw` from now for `duration_s` seconds. Retained, as a
    /// grid operator would publish it, so a site that reconnects gets the signal in force.
    pub async fn curtail(
        &self,
        signal_id: &str,
        limit_kw: f64,
        duration_s: u64,
    ) -> anyhow::Result<Value> {
        let signal = json!({
            "signal_id": signal_id,
            "issued_at": unix_now(),
            "duration_s": duration_s,
            "limit_kw": limit_kw,
        });
        self.publish(&signal).await?;
        Ok(signal)
    }

    /// Ends the signal early.
    pub async fn end(&self, signal_id: &str) -> anyhow::Result<Value> {
        let end = json!({"signal_id": signal_id, "end": true});
        self.publish(&end).await?;
        Ok(end)
    }

    async fn publish(&self, payload: &Value) -> anyhow::Result<()> {
        self.client
            .publish(
                self.topics.signal.clone(),
                QoS::AtLeastOnce,
                true,
                payload.to_string(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("publishing to the demo broker: {e}"))
    }

    /// Messages received since the last call.
    pub fn take_new(&self) -> Vec<Received> {
        let mut inbox = lock(&self.inbox);
        let new = inbox.all[inbox.read..].to_vec();
        inbox.read = inbox.all.len();
        new
    }

    /// Whether any message received so far satisfies `pred`.
    pub fn any(&self, pred: impl Fn(&str, &Value) -> bool) -> bool {
        lock(&self.inbox).all.iter().any(|(t, v)| pred(t, v))
    }

    pub fn is_ack(&self, topic: &str) -> bool {
        topic == self.topics.ack
    }

    pub fn is_report(&self, topic: &str) -> bool {
        topic == self.topics.report
    }

    pub fn is_status(&self, topic: &str) -> bool {
        topic == self.topics.status
    }

    /// Disconnects politely (the proxy's last will is the proxy's business, not ours).
    pub async fn disconnect(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.disconnect()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.task.abort();
    }
}

impl Drop for GridOperator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<Inbox>) -> std::sync::MutexGuard<'_, Inbox> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
