//! A real MQTT broker for tests: mosquitto (Debian package), started with a generated config —
//! TLS with a throwaway CA, a password file and an ACL — on a free 127.0.0.1 port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Users the generated password file knows, and what the ACL lets them do on site `site1`:
/// `grid` publishes signals, `site1` reads them and publishes acks/reports/status, `intruder`
/// may only read.
pub const USERS: [(&str, &str); 3] = [
    ("grid", "grid-secret"),
    ("site1", "site1-secret"),
    ("intruder", "intruder-secret"),
];

pub struct Mosquitto {
    pub port: u16,
    pub ca_file: PathBuf,
    child: Child,
    dir: tempfile_dir::Dir,
}

mod tempfile_dir {
    /// A directory removed on drop (no extra dependency for one folder).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn spawn_broker(broker: &Path, config: &Path) -> Result<Child, String> {
    Command::new(broker)
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting mosquitto: {e}"))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Mosquitto {
    /// Start a TLS broker; `Err("skipped: ...")` when mosquitto or openssl is not installed.
    pub fn start() -> Result<Mosquitto, String> {
        let broker = find_binary("mosquitto")
            .ok_or("skipped: mosquitto is not installed (apt-get install mosquitto)")?;
        let passwd =
            find_binary("mosquitto_passwd").ok_or("skipped: mosquitto_passwd is not installed")?;
        let openssl = find_binary("openssl").ok_or("skipped: openssl is not installed")?;
        let dir = std::env::temp_dir().join(format!(
            "blgv-mosquitto-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let dir = tempfile_dir::Dir(dir);
        let d = &dir.0;
        // A throwaway CA and a server certificate for 127.0.0.1.
        run(Command::new(&openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=blgv-test-ca",
            ])
            .arg("-keyout")
            .arg(d.join("ca.key"))
            .arg("-out")
            .arg(d.join("ca.pem")))?;
        run(Command::new(&openssl)
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(d.join("server.key"))
            .arg("-out")
            .arg(d.join("server.csr")))?;
        std::fs::write(
            d.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .map_err(|e| e.to_string())?;
        run(Command::new(&openssl)
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(d.join("server.csr"))
            .arg("-CA")
            .arg(d.join("ca.pem"))
            .arg("-CAkey")
            .arg(d.join("ca.key"))
            .arg("-out")
            .arg(d.join("server.pem"))
            .arg("-extfile")
            .arg(d.join("san.ext")))?;
        let pw = d.join("passwd");
        std::fs::write(&pw, "").map_err(|e| e.to_string())?;
        for (user, pass) in USERS {
            run(Command::new(&passwd).arg("-b").arg(&pw).arg(user).arg(pass))?;
        }
        std::fs::write(
            d.join("acl"),
            "user grid\ntopic write blgv/site/+/curtailment\ntopic read blgv/site/+/curtailment/#\ntopic read blgv/site/+/status\n\n\
             user site1\ntopic read blgv/site/site1/curtailment\ntopic write blgv/site/site1/curtailment/ack\n\
             topic write blgv/site/site1/curtailment/report\ntopic readwrite blgv/site/site1/status\n\n\
             user intruder\ntopic read blgv/#\n",
        )
        .map_err(|e| e.to_string())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        std::fs::write(
            d.join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
                 cafile {}\ncertfile {}\nkeyfile {}\npersistence false\nlog_dest stderr\n",
                pw.display(),
                d.join("acl").display(),
                d.join("ca.pem").display(),
                d.join("server.pem").display(),
                d.join("server.key").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        // Debian's mosquitto drops to the "mosquitto" user when started as root: it must read these.
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(d).status();
        let child = spawn_broker(&broker, &d.join("mosquitto.conf"))?;
        let m = Mosquitto {
            port,
            ca_file: d.join("ca.pem"),
            child,
            dir,
        };
        m.wait_listening()?;
        Ok(m)
    }

    fn wait_listening(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err("mosquitto did not open its port within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kill the broker (SIGKILL: no goodbye to the clients, like a crash or a power cut).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start the broker again on the same port with the same configuration.
    pub fn start_again(&mut self) -> Result<(), String> {
        let broker = find_binary("mosquitto").ok_or("mosquitto is gone")?;
        self.child = spawn_broker(&broker, &self.dir.0.join("mosquitto.conf"))?;
        self.wait_listening()
    }

    pub fn dir(&self) -> &Path {
        &self.dir.0
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mosquitto {
    /// The site's side of the link as `site1` (TLS with the broker's CA, its password).
    pub fn site_config(&self) -> blgv_sensors::grid::MqttConfig {
        blgv_sensors::grid::MqttConfig {
            host: "127.0.0.1".into(),
            port: Some(self.port),
            site_id: "site1".into(),
            client_id: None,
            username: Some("site1".into()),
            password: Some("site1-secret".into()),
            tls: Some(blgv_sensors::grid::MqttTls {
                ca_file: self.ca_file.clone(),
                client_cert_file: None,
                client_key_file: None,
            }),
            topic_prefix: "blgv/site".into(),
            keep_alive_secs: 10,
            rules: Default::default(),
        }
    }

    /// A plain MQTT client over TLS (the grid operator, or an intruder) that subscribes to
    /// `subscribe` and records everything it receives.
    pub async fn recording_client(
        &self,
        user: &str,
        pass: &str,
        subscribe: &[&str],
    ) -> RecordingClient {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
        let mut o = MqttOptions::new(
            format!("{user}-{}", rand::random::<u16>()),
            "127.0.0.1",
            self.port,
        );
        o.set_credentials(user, pass);
        o.set_max_packet_size(256 * 1024, 256 * 1024);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: std::fs::read(&self.ca_file).unwrap_or_default(),
            alpn: None,
            client_auth: None,
        }));
        let (client, mut ev) = AsyncClient::new(o, 64);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s2, subs, c2) = (
            seen.clone(),
            subscribe.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            client.clone(),
        );
        tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for t in &subs {
                            let _ = c2.subscribe(t, QoS::AtLeastOnce).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v = serde_json::from_slice(&p.payload)
                            .unwrap_or(Value::String(String::from_utf8_lossy(&p.payload).into()));
                        s2.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((p.topic.clone(), v));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        RecordingClient { client, seen }
    }
}

/// An MQTT client and what it has received, as `(topic, JSON or string)`.
pub struct RecordingClient {
    pub client: rumqttc::AsyncClient,
    pub seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl RecordingClient {
    /// Whether any message received so far satisfies `pred`.
    pub fn any(&self, pred: impl Fn(&str, &Value) -> bool) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(t, v)| pred(t, v))
    }

    /// Publish JSON, QoS 1.
    pub async fn publish(&self, topic: &str, retain: bool, payload: &Value) {
        let _ = self
            .client
            .publish(
                topic,
                rumqttc::QoS::AtLeastOnce,
                retain,
                payload.to_string(),
            )
            .await;
    }
}
