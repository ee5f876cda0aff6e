//! The pool's HTTP API (axum) on its own listener (`api.listen`): REST under `/api`, the live
//! feed at `/ws/pool-stats`, Prometheus metrics at `/metrics`, `/health`, the OpenAPI document
//! at `/api/openapi.json` and the dashboard at `/`.
//!
//! Reads go to their own SQLite connection (WAL: they never wait for the share writer); payout
//! reads and writes go through the payout engine's connection ([`PayoutShared`]). Write
//! endpoints (`POST`) need `Authorization: Bearer <api.token>`; every error is JSON
//! `{"error": "...", "field": "..."}` naming the field at fault when there is one.

pub mod dashboard;
pub mod energy;
pub mod health;
pub mod metrics;
pub mod miners;
pub mod openapi;
pub mod payouts;
pub mod stats;
pub mod ws;

use crate::config::Config;
use crate::job_feed::JobFeed;
use crate::monitor::{LiveFeed, NodeMonitor};
use crate::payout::PayoutError;
use crate::payout_task::PayoutShared;
use crate::stats::PoolStats;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::Network;
use rusqlite::Connection;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Everything the handlers share.
pub struct ApiState {
    pub config: Arc<Config>,
    pub network: Network,
    pub stats: Arc<PoolStats>,
    pub feed: Arc<JobFeed>,
    pub node: Arc<NodeMonitor>,
    pub payouts: Arc<PayoutShared>,
    pub live: LiveFeed,
    pub pool_addr: SocketAddr,
    pub started: Instant,
    pub shutdown: CancellationToken,
    /// The API's read connection to the ledger database.
    db: Arc<Mutex<Connection>>,
    /// Σ difficulty of a round, by (previous block's share id, block's share id): rounds
    /// never change once their block is found.
    round_sums: Mutex<HashMap<(i64, i64), f64>>,
    /// The last `hashrate_update`, sent to a WebSocket client when it connects.
    last_update: Mutex<Option<Arc<str>>>,
    /// Pool hashrate (H/s) over 10 min, 1 h and 24 h at the last sample, for `/metrics`.
    pub(crate) hashrate_cell: Arc<Mutex<Option<[f64; 3]>>>,
    pub registry: prometheus_client::registry::Registry,
    /// The sites' energy reports (their own connection: the one writer of those tables).
    pub energy: Arc<crate::energy::EnergyStore>,
}

pub type Shared = Arc<ApiState>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_registrations (
    address TEXT PRIMARY KEY,            -- also the account name miners use
    label TEXT,
    registered_at_ms INTEGER NOT NULL
);
";

pub struct ApiParts {
    pub config: Arc<Config>,
    pub network: Network,
    pub stats: Arc<PoolStats>,
    pub feed: Arc<JobFeed>,
    pub node: Arc<NodeMonitor>,
    pub payouts: Arc<PayoutShared>,
    pub live: LiveFeed,
    pub pool_addr: SocketAddr,
    pub shutdown: CancellationToken,
}

impl ApiState {
    pub fn new(parts: ApiParts, db: Connection) -> Result<Shared, rusqlite::Error> {
        db.execute_batch(SCHEMA)?;
        let energy = Arc::new(crate::energy::EnergyStore::open(&parts.config.ledger.path)?);
        let ApiParts {
            config,
            network,
            stats,
            feed,
            node,
            payouts,
            live,
            pool_addr,
            shutdown,
        } = parts;
        let mut state = ApiState {
            config,
            network,
            stats,
            feed,
            node,
            payouts,
            live,
            pool_addr,
            started: Instant::now(),
            shutdown,
            db: Arc::new(Mutex::new(db)),
            round_sums: Mutex::new(HashMap::new()),
            last_update: Mutex::new(None),
            hashrate_cell: Arc::new(Mutex::new(None)),
            registry: prometheus_client::registry::Registry::with_prefix("blgv_cloud"),
            energy,
        };
        metrics::register(&mut state);
        Ok(Arc::new(state))
    }

    /// Run `f` on the read connection in a blocking thread.
    pub async fn db<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection, &ApiState) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = me.db.lock().unwrap_or_else(|e| e.into_inner());
            f(&conn, &me)
        })
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("query task failed: {e}"))))
    }

    /// Run `f` on the payout engine in a blocking thread.
    pub async fn payout<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut crate::payout::PayoutLedger) -> Result<T, PayoutError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.payouts.with(f).await.map_err(ApiError::from)
    }

    /// Check `Authorization: Bearer <api.token>` in constant time.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.config.api.token else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "write endpoints are disabled: api.token is not set; fix: set api.token in the config",
            ));
        };
        let Some(given) = bearer_token(headers) else {
            return Err(ApiError::unauthorized(
                "missing bearer token; fix: send Authorization: Bearer <api.token>",
            ));
        };
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return Err(ApiError::unauthorized("wrong bearer token"));
        }
        Ok(())
    }

    pub fn set_last_update(&self, text: Arc<str>, hashrate: [f64; 3]) {
        *self.last_update.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
        *self.hashrate_cell.lock().unwrap_or_else(|e| e.into_inner()) = Some(hashrate);
    }

    pub fn last_update(&self) -> Option<Arc<str>> {
        self.last_update
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn last_hashrate(&self) -> Option<[f64; 3]> {
        *self.hashrate_cell.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Equal without an early exit: both sides are hashed first, so neither the position of the
/// first difference nor the token's length shows in the time taken.
/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (sha256::Hash::hash(a), sha256::Hash::hash(b));
    let diff = ha
        .as_byte_array()
        .iter()
        .zip(hb.as_byte_array())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0
}

/// An error answer: `{"error": message, "field": field}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }

    pub fn bad_field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("{field}: {}", message.into()),
            field: Some(field.to_string()),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn with_field(mut self, field: &str) -> ApiError {
        self.field = Some(field.to_string());
        self
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> ApiError {
        tracing::error!("API database error: {e}");
        ApiError::internal(format!("database error: {e}"))
    }
}

impl From<PayoutError> for ApiError {
    fn from(e: PayoutError) -> ApiError {
        use PayoutError as P;
        let status = match &e {
            P::NothingToPay { .. }
            | P::NoChangeAddress
            | P::InsufficientFunds { .. }
            | P::InvalidAddress { .. }
            | P::BatchNotPending { .. } => StatusCode::CONFLICT,
            P::BatchNotFound(_) | P::BlockNotFound { .. } => StatusCode::NOT_FOUND,
            P::BadSentProof { .. } => StatusCode::BAD_REQUEST,
            P::TxMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let field = match &e {
            P::BadSentProof { .. } | P::TxMismatch { .. } => Some("tx".to_string()),
            P::BatchNotFound(_) => Some("id".to_string()),
            _ => None,
        };
        if status.is_server_error() {
            tracing::error!("payout API error: {e}");
        }
        ApiError {
            status,
            message: e.to_string(),
            field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message});
        if let Some(f) = self.field {
            body["field"] = Value::String(f);
        }
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"blgv-cloud\""),
            );
        }
        response
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// Parse a JSON request body into `T`; errors name the field (serde's message carries it).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(text).map_err(|e| {
        let message = e.to_string();
        // serde names the field in "missing field `x`" / "unknown field `x`".
        let field = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains("field `"))
            .unwrap_or("body")
            .to_string();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    })
}

/// `?limit=`: 1 to `max`, `default` when absent.
pub fn limit_param(
    query: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match query.get("limit") {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_field(
                "limit",
                format!("{text:?} is not a number from 1 to {max}"),
            )),
        },
    }
}

pub fn router(state: Shared) -> Router {
    let max_body = state.config.api.max_body_bytes;
    Router::new()
        .route("/", get(dashboard::page))
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .route("/ws/pool-stats", get(ws::pool_stats))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/stats", get(stats::stats))
        .route("/api/hashrate", get(stats::hashrate))
        .route("/api/blocks", get(stats::blocks))
        .route("/api/luck", get(stats::luck))
        .route("/api/difficulty", get(stats::difficulty))
        .route("/api/jobs", get(stats::jobs))
        .route("/api/workers", get(stats::workers))
        .route("/api/workers/{id}", get(miners::worker))
        .route("/api/miners/register", post(miners::register))
        .route("/api/miners/{address}", get(miners::miner))
        .route("/api/earnings/{address}", get(miners::earnings))
        .route("/api/payouts/pending", get(payouts::pending))
        .route("/api/payouts/request", post(payouts::request))
        .route("/api/payouts/{id}/sent", post(payouts::sent))
        .route("/api/payouts/{id}/cancel", post(payouts::cancel))
        .route("/api/energy/report", post(energy::post_report))
        .route("/api/energy/sources", get(energy::sources))
        .route("/api/carbon/footprint", get(energy::footprint))
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(max_body))
        // Outside the limit, so its own 413 gets the JSON error shape too.
        .layer(axum::middleware::map_response(move |r: Response| {
            json_payload_too_large(r, max_body)
        }))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// The body limit answers 413 with an empty body: give it the API's JSON error shape.
async fn json_payload_too_large(r: Response, max_body: usize) -> Response {
    if r.status() != StatusCode::PAYLOAD_TOO_LARGE
        || r.headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.to_str().is_ok_and(|t| t.starts_with("application/json")))
    {
        return r;
    }
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "body: the request body is larger than {max_body} bytes (api.max_body_bytes)"
        ),
        field: Some("body".into()),
    }
    .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; the API is described at /api/openapi.json",
    )
}

/// Serve the API on `listener` until `shutdown`; the live-update sampler runs alongside.
pub async fn serve(state: Shared, listener: tokio::net::TcpListener) {
    let shutdown = state.shutdown.clone();
    let sampler = tokio::spawn(ws::run_sampler(state.clone()));
    let app = router(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!("API server stopped: {e}");
    }
    sampler.abort();
}

/// Every path the router serves (the OpenAPI document must describe each).
pub const ROUTES: &[&str] = &[
    "/",
    "/health",
    "/metrics",
    "/ws/pool-stats",
    "/api/openapi.json",
    "/api/stats",
    "/api/hashrate",
    "/api/blocks",
    "/api/luck",
    "/api/difficulty",
    "/api/jobs",
    "/api/workers",
    "/api/workers/{id}",
    "/api/miners/register",
    "/api/miners/{address}",
    "/api/earnings/{address}",
    "/api/payouts/pending",
    "/api/payouts/request",
    "/api/payouts/{id}/sent",
    "/api/payouts/{id}/cancel",
    "/api/energy/report",
    "/api/energy/sources",
    "/api/carbon/footprint",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_describes_every_route() {
        let doc: Value = serde_json::from_str(openapi::DOCUMENT).expect("valid JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for route in ROUTES {
            assert!(doc["paths"].get(route).is_some(), "{route} undocumented");
        }
        assert_eq!(doc["paths"].as_object().unwrap().len(), ROUTES.len());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-123", b"secret-token-124"));
        assert!(!constant_time_eq(b"secret-token-123", b"secret-token-12"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        address: String,
    }

    #[test]
    fn body_errors_name_the_field() {
        let e = parse_body::<Body>(br#"{"adress": "x"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("adress"));
        let e = parse_body::<Body>(b"{}").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("address"));
        let e = parse_body::<Body>(br#"{"address": 5}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"), "{}", e.message);
        let e = parse_body::<Body>(b"not json").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(parse_body::<Body>(br#"{"address": "x"}"#).is_ok());
    }
}
