//! `GET /`: the dashboard, one HTML page with its script and styles inline
//! (`cloud/assets/dashboard.html`); it reads the API and follows `/ws/pool-stats`.

use axum::http::header;
use axum::response::IntoResponse;

pub const PAGE: &str = include_str!("../../assets/dashboard.html");

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:",
            ),
        ],
        PAGE,
    )
}
