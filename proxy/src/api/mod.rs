//! The operator's HTTP listener: status API, Prometheus metrics and the site dashboard.
//!
//! Everything is served by the binary itself (a site has no internet). Reads are open to
//! whoever can reach the listener (loopback by default); the POST actions need
//! `Authorization: Bearer <api.admin_token>`, compared in constant time.

pub mod health;
pub mod metrics;
pub mod views;

use crate::context::ProxyContext;
use crate::energy::EnergyHandle;
use crate::site_power::SitePower;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use blgv_sensors::curtailment::OperatorCommand;
use serde::Serialize;
use serde_json::json;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// The dashboard page: one file, no outside assets.
const DASHBOARD: &str = include_str!("../../assets/dashboard.html");
/// One history sample every this often; an hour of them is kept.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const SAMPLES_KEPT: usize = 720;

pub struct ApiState {
    pub ctx: Arc<ProxyContext>,
    pub power: Arc<SitePower>,
    /// The energy reports to the pool, when `[energy]` is configured.
    pub energy: Option<Arc<EnergyHandle>>,
    pub started: Instant,
    history: Mutex<VecDeque<Sample>>,
    metrics: Mutex<Option<prometheus_client::registry::Registry>>,
}

/// The site over time, for the dashboard's chart.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub at: u64,
    pub hashrate: f64,
    pub power_kw: Option<f64>,
    pub limit_kw: Option<f64>,
}

impl ApiState {
    pub fn new(
        ctx: Arc<ProxyContext>,
        power: Arc<SitePower>,
        energy: Option<Arc<EnergyHandle>>,
    ) -> Arc<ApiState> {
        let state = Arc::new(ApiState {
            ctx,
            power,
            energy,
            started: Instant::now(),
            history: Mutex::new(VecDeque::new()),
            metrics: Mutex::new(None),
        });
        *state.metrics.lock().unwrap_or_else(|e| e.into_inner()) = Some(metrics::registry(&state));
        state
    }

    fn sample(&self) -> Sample {
        Sample {
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            hashrate: self.ctx.miners.total_hashrates()[0],
            power_kw: views::site_power_kw(self),
            limit_kw: self.power.curtailment_status().and_then(|c| c.limit_kw),
        }
    }

    fn record_sample(&self) {
        let s = self.sample();
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() == SAMPLES_KEPT {
            h.pop_front();
        }
        h.push_back(s);
    }

    fn history(&self) -> Vec<Sample> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/api/status", get(status))
        .route("/api/miners", get(miners))
        .route("/api/miners/{id}", get(miner))
        .route("/api/miners/{id}/pause", post(pause_miner))
        .route("/api/miners/{id}/resume", post(resume_miner))
        .route("/api/upstreams", get(upstreams))
        .route("/api/upstreams/{index}/use", post(use_upstream))
        .route("/api/upstreams/auto", post(automatic_upstream))
        .route("/api/power", get(power))
        .route("/api/curtailment", get(curtailment))
        .route("/api/energy", get(energy))
        .route("/api/history", get(history))
        .route("/api/events", get(events))
        .route("/metrics", get(metrics_text))
        .route("/health", get(health_check))
        .fallback(not_found)
        .with_state(state)
}

/// Serve until shutdown; records the history samples meanwhile.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<ApiState>) {
    let shutdown = state.ctx.shutdown.clone();
    let sampler = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => state.record_sample(),
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    state.ctx.tasks.spawn(sampler);
    let app = router(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "status API stopped");
    }
}

type Shared = State<Arc<ApiState>>;

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; see the README's status API table",
    )
}

async fn health_check(State(s): Shared) -> Response {
    let (code, body) = health::health(&s);
    (code, Json(body)).into_response()
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn status(State(s): Shared) -> Response {
    Json(views::status(&s)).into_response()
}

async fn miners(State(s): Shared) -> Response {
    Json(views::miners(&s)).into_response()
}

/// By session id (numeric) or by worker name.
async fn miner(State(s): Shared, Path(id): Path<String>) -> Response {
    let all = views::miners(&s);
    let found = match id.parse::<u64>() {
        Ok(n) => all.into_iter().find(|m| m.id == n),
        Err(_) => all.into_iter().find(|m| m.workers.contains(&id)),
    };
    match found {
        Some(m) => Json(m).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "no connected miner {id:?} (use a session id or a worker name from /api/miners)"
            ),
        ),
    }
}

async fn upstreams(State(s): Shared) -> Response {
    Json(views::upstreams(&s)).into_response()
}

async fn power(State(s): Shared) -> Response {
    Json(json!({
        "site_power_kw": views::site_power_kw(&s),
        "meters": views::meters(&s),
    }))
    .into_response()
}

async fn curtailment(State(s): Shared) -> Response {
    Json(views::curtailment(&s)).into_response()
}

/// The energy reports: built, sent, queued in the outbox, the last send error.
async fn energy(State(s): Shared) -> Response {
    match &s.energy {
        Some(e) => Json(e.status()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "energy reports are off; add an [energy] section (see deploy/config/proxy.example.toml)",
        ),
    }
}

async fn history(State(s): Shared) -> Response {
    Json(s.history()).into_response()
}

async fn metrics_text(State(s): Shared) -> Response {
    let body = {
        let guard = s.metrics.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(metrics::render).unwrap_or_default()
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The live feed: a snapshot every `api.update_interval_ms`.
async fn events(State(s): Shared) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let every = Duration::from_millis(s.ctx.config.api.update_interval_ms);
    let stream = futures::stream::unfold(
        (s, tokio::time::interval(every)),
        |(s, mut tick)| async move {
            // End the stream at shutdown, or graceful shutdown would wait on open dashboards.
            tokio::select! {
                _ = tick.tick() => {}
                _ = s.ctx.shutdown.cancelled() => return None,
            }
            let snapshot = json!({
                "status": views::status(&s),
                "miners": views::miners(&s),
                "upstreams": views::upstreams(&s),
                "power": views::meters(&s),
                "curtailment": views::curtailment(&s),
                "sample": s.sample(),
            });
            let event = Event::default()
                .event("snapshot")
                .data(snapshot.to_string());
            Some((Ok(event), (s, tick)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `Ok` when the request carries the admin token.
/// Why an action was refused: small enough to return by value, a response when it is sent.
struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn authorize(s: &ApiState, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(token) = &s.ctx.config.api.admin_token else {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "actions are disabled: set api.admin_token in the proxy config",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer <api.admin_token>",
        ))
    }
}

/// The site miner (config id) an API id names: its config id, or the worker name.
fn site_miner_id(s: &ApiState, id: &str) -> Option<String> {
    s.ctx
        .config
        .miners
        .iter()
        .find(|m| m.id() == id || m.worker.as_deref() == Some(id))
        .map(|m| m.id())
}

async fn operator_command(s: &ApiState, headers: &HeaderMap, id: &str, pause: bool) -> Response {
    if let Err(r) = authorize(s, headers) {
        return r.into_response();
    }
    let Some(site_id) = site_miner_id(s, id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("{id:?} is not a managed miner: list it with its firmware API in [[miners]]"),
        );
    };
    let Some(loop_handle) = s.power.curtailment.as_ref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the curtailment loop is not running (it needs [[miners]] and a site meter)",
        );
    };
    let cmd = if pause {
        OperatorCommand::Pause(site_id.clone())
    } else {
        OperatorCommand::Resume(site_id.clone())
    };
    match loop_handle.operator(cmd).await {
        Ok(()) => {
            tracing::info!(miner = %site_id, pause, "operator command");
            Json(json!({ "miner": site_id, "paused": pause })).into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

async fn pause_miner(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    operator_command(&s, &headers, &id, true).await
}

async fn resume_miner(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    operator_command(&s, &headers, &id, false).await
}

async fn use_upstream(State(s): Shared, headers: HeaderMap, Path(index): Path<String>) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r.into_response();
    }
    let count = s.ctx.router.pool_count();
    match index.parse::<usize>() {
        Ok(i) if s.ctx.router.pin(i) => Json(json!({
            "upstream": i,
            "name": s.ctx.router.pool(i).label(),
            "pinned": true
        }))
        .into_response(),
        _ => error(
            StatusCode::BAD_REQUEST,
            format!(
                "index {index:?} is not a pool: use 0..{count} (config order, see /api/upstreams)"
            ),
        ),
    }
}

async fn automatic_upstream(State(s): Shared, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r.into_response();
    }
    s.ctx.router.unpin();
    Json(json!({ "pinned": false })).into_response()
}
