//! `GET /api/openapi.json`: the API's OpenAPI 3 document (hand-written, one file:
//! `cloud/assets/openapi.json`).

use axum::http::header;
use axum::response::IntoResponse;

pub const DOCUMENT: &str = include_str!("../../assets/openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
