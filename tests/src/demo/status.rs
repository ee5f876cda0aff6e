//! Reading the children's HTTP APIs: the proxy's `/api/status`, `/api/curtailment` and
//! `/api/energy`, the pool's `/api/stats` and its energy mix and carbon footprint. Each read has a short timeout and yields `None` when the service does
//! not answer, so a slow child never stalls the demo's status line.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

#[derive(Clone)]
pub struct Apis {
    http: reqwest::Client,
    pub proxy: SocketAddr,
    pub cloud: SocketAddr,
}

/// What the proxy says about the site.
#[derive(Debug, Clone, Default)]
pub struct ProxyView {
    pub miners_connected: u64,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub shares_forwarded: u64,
    pub upstream_accepted: u64,
    pub upstream_rejected: u64,
    /// The proxy's own reading of the site meter.
    pub site_power_kw: Option<f64>,
    pub limit_kw: Option<f64>,
    /// Ids of the miners the curtailment loop has paused.
    pub paused: Vec<String>,
    pub commands_ok: u64,
    pub commands_failed: u64,
    pub withheld: Vec<String>,
    pub signal_id: Option<String>,
}

/// What the pool says.
#[derive(Debug, Clone, Default)]
pub struct CloudView {
    pub shares_accepted: u64,
    pub blocks_found: u64,
    pub blocks_accepted: u64,
    pub height: Option<u64>,
}

/// The energy reports: what the proxy sent, what the pool made of them (default period: the
/// last 24 h, i.e. the whole demo).
#[derive(Debug, Clone, Default)]
pub struct EnergyView {
    /// Reports the pool acknowledged.
    pub sent: u64,
    /// Reports waiting in the proxy's outbox.
    pub queued: u64,
    pub kwh: f64,
    pub renewable_percent: f64,
    pub gco2e: f64,
    pub g_per_kwh: f64,
}

impl Apis {
    pub fn new(proxy: SocketAddr, cloud: SocketAddr) -> Apis {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Apis { http, proxy, cloud }
    }

    async fn get(&self, addr: SocketAddr, path: &str) -> Option<Value> {
        let r = self
            .http
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// Whether the proxy's API answers.
    pub async fn proxy_up(&self) -> bool {
        self.get(self.proxy, "/api/status").await.is_some()
    }

    /// Whether the pool's API answers.
    pub async fn cloud_up(&self) -> bool {
        self.get(self.cloud, "/api/stats").await.is_some()
    }

    pub async fn proxy(&self) -> Option<ProxyView> {
        let (s, c) = tokio::join!(
            self.get(self.proxy, "/api/status"),
            self.get(self.proxy, "/api/curtailment")
        );
        let s = s?;
        let c = c.unwrap_or(Value::Null);
        let u = |v: &Value| v.as_u64().unwrap_or(0);
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let l = &c["loop_status"];
        Some(ProxyView {
            miners_connected: u(&s["miners_connected"]),
            shares_accepted: u(&s["shares_accepted"]),
            shares_rejected: u(&s["shares_rejected"]),
            shares_forwarded: u(&s["shares_forwarded"]),
            upstream_accepted: u(&s["upstream_accepted"]),
            upstream_rejected: u(&s["upstream_rejected"]),
            site_power_kw: s["site_power_kw"].as_f64(),
            limit_kw: s["curtailment_limit_kw"].as_f64(),
            paused: strings(&l["paused"]),
            commands_ok: u(&l["commands_ok"]),
            commands_failed: u(&l["commands_failed"]),
            withheld: strings(&c["withheld"]),
            signal_id: c["signal"]["id"].as_str().map(str::to_string),
        })
    }

    pub async fn energy(&self) -> Option<EnergyView> {
        let (e, mix, fp) = tokio::join!(
            self.get(self.proxy, "/api/energy"),
            self.get(self.cloud, "/api/energy/sources"),
            self.get(self.cloud, "/api/carbon/footprint")
        );
        let e = e?;
        let (mix, fp) = (mix.unwrap_or(Value::Null), fp.unwrap_or(Value::Null));
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        Some(EnergyView {
            sent: e["sent"].as_u64().unwrap_or(0),
            queued: e["queued"].as_u64().unwrap_or(0),
            kwh: f(&mix["total"]["kwh"]),
            renewable_percent: f(&mix["total"]["renewable_percent"]),
            gco2e: f(&fp["total"]["gco2e"]),
            g_per_kwh: f(&fp["total"]["g_per_kwh"]),
        })
    }

    pub async fn cloud(&self) -> Option<CloudView> {
        let s = self.get(self.cloud, "/api/stats").await?;
        let u = |v: &Value| v.as_u64().unwrap_or(0);
        Some(CloudView {
            shares_accepted: u(&s["shares_accepted"]),
            blocks_found: u(&s["blocks"]["found"]),
            blocks_accepted: u(&s["blocks"]["accepted"]),
            height: s["height"].as_u64(),
        })
    }
}
