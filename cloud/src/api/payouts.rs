//! Payout batches: list the pending ones, create one (an unsigned PSBT for the pool's signer),
//! record a batch as sent (debits the balances), or cancel it.

use super::{parse_body, ApiError, ApiResult, Shared};
use crate::monitor::unix_ms;
use crate::payout::PayoutBatch;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

pub async fn pending(State(state): State<Shared>) -> ApiResult {
    let batches = state.payout(|l| l.pending_batches()).await?;
    let balances = state.payout(|l| l.balances()).await?;
    Ok(Json(json!({"batches": batches, "balances": balances})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBatch {}

fn announce(state: &Shared, event: &str, batch: &PayoutBatch) {
    state.live.publish(&json!({
        "type": "payout_processed",
        "event": event,
        "time_ms": unix_ms(),
        "batch_id": batch.id,
        "status": batch.status,
        "total_sats": batch.total.0,
        "fee_sats": batch.fee.0,
        "payouts": batch.items.len(),
        "txid": batch.txid,
    }));
}

/// `POST /api/payouts/request` (body `{}` or empty): a pending batch paying every mature
/// balance at or over `payout.min_payout_sats`; 201 with the unsigned PSBT.
pub async fn request(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    state.authorize(&headers)?;
    let _: RequestBatch = parse_body(&body)?;
    let batch = state
        .payout(|l| {
            let utxos = l.settings().utxos.clone();
            l.create_payout_batch(&utxos)
        })
        .await?;
    announce(&state, "batch_created", &batch);
    Ok((
        StatusCode::CREATED,
        Json(json!({"batch_id": batch.id, "psbt_base64": batch.psbt_base64, "batch": batch})),
    )
        .into_response())
}

fn batch_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_field("id", format!("{text:?} is not a batch id")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sent {
    /// The signed transaction (hex) or its txid.
    tx: String,
}

/// `POST /api/payouts/{id}/sent {"tx": "<signed tx hex or txid>"}`.
pub async fn sent(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    state.authorize(&headers)?;
    let id = batch_id(&id)?;
    let req: Sent = parse_body(&body)?;
    if req.tx.trim().is_empty() {
        return Err(ApiError::bad_field("tx", "is empty"));
    }
    let batch = state
        .payout(move |l| {
            l.record_sent(id, &req.tx)?;
            l.batch(id)
        })
        .await?;
    announce(&state, "batch_sent", &batch);
    Ok(
        Json(json!({"batch_id": id, "status": batch.status, "txid": batch.txid, "batch": batch}))
            .into_response(),
    )
}

/// `POST /api/payouts/{id}/cancel`: the amounts return to the balances.
pub async fn cancel(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    state.authorize(&headers)?;
    let id = batch_id(&id)?;
    let _: RequestBatch = parse_body(&body)?;
    let batch = state
        .payout(move |l| {
            l.cancel_batch(id)?;
            l.batch(id)
        })
        .await?;
    announce(&state, "batch_cancelled", &batch);
    Ok(Json(json!({"batch_id": id, "status": batch.status, "batch": batch})).into_response())
}
