//! The demo's MQTT broker: rumqttd embedded in the demo process, configured in code, plain MQTT
//! 3.1.1 on 127.0.0.1 with a password per user. It stands in for the grid operator's broker
//! (a real one would be mosquitto, EMQX, ... with TLS and ACLs; see
//! deploy/config/proxy.example.toml), so the demo needs no system package.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rumqttd::protocol::v4::V4;
use rumqttd::{ConnectionSettings, LinkType, RouterConfig, Server, ServerSettings};
use tokio::task::JoinHandle;

/// A running broker. Dropping it stops accepting connections.
pub struct Broker {
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Broker {
    /// Starts the broker on `addr` (127.0.0.1) accepting exactly the `users` (name, password).
    /// Returns once it accepts TCP connections.
    pub async fn start(addr: SocketAddr, users: &[(&str, &str)]) -> anyhow::Result<Broker> {
        if !addr.ip().is_loopback() {
            bail!("the demo broker listens on 127.0.0.1 only, not {addr}");
        }
        // Small limits: a handful of clients and signals of a few hundred bytes. The router keeps
        // messages in memory segments; 1 MiB × 4 is plenty and bounds the demo's memory.
        let router = RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 200,
            max_segment_size: 1 << 20,
            max_segment_count: 4,
            ..RouterConfig::default()
        };
        let connections = ConnectionSettings {
            connection_timeout_ms: 5_000,
            // The proxy refuses oversized signals itself (with a reason on the ack topic); let
            // them through the broker up to the size its client accepts.
            max_payload_size: 256 * 1024,
            max_inflight_count: 100,
            auth: Some(
                users
                    .iter()
                    .map(|(u, p)| (u.to_string(), p.to_string()))
                    .collect::<HashMap<_, _>>(),
            ),
            external_auth: None,
            dynamic_filters: true,
        };
        let settings = ServerSettings {
            name: "demo-grid-broker".into(),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 1,
            connections,
        };
        // The router runs on its own thread for the life of the process (rumqttd has no way to
        // stop it); the listener runs on our runtime, so stopping it is aborting a task.
        let router_tx = rumqttd::Router::new(0, router).spawn();
        let mut server = Server::new(settings, router_tx, V4);
        let task = tokio::spawn(async move {
            if let Err(e) = server.start(LinkType::Remote).await {
                tracing::error!(error = %e, "demo MQTT broker stopped");
            }
        });
        let broker = Broker { addr, server: task };
        // rumqttd binds inside `start`: wait until it accepts, or report why not.
        for _ in 0..100 {
            if broker.server.is_finished() {
                bail!("the MQTT broker could not listen on {addr} (is the port taken?)");
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(broker);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(anyhow::anyhow!("not accepting connections after 5 s"))
            .with_context(|| format!("starting the MQTT broker on {addr}"))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections (open ones end with the process).
    pub fn stop(&self) {
        self.server.abort();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.server.abort();
    }
}
