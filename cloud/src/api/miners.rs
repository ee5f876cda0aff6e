//! Per-miner reads and registration. A miner's account is what its worker names have before
//! the first `.`; an account named by a bitcoin address of the pool's network is paid to it.

use super::stats::{last_share, windows, worker_rows, Scope};
use super::{limit_param, parse_body, ApiError, ApiResult, Shared};
use crate::config::validate_address;
use crate::monitor::unix_ms;
use crate::payout::config::valid_account_name;
use crate::payout::{account_of_worker, Scheme};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use rusqlite::{params, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

fn check_account(text: &str) -> Result<String, ApiError> {
    if valid_account_name(text) {
        Ok(text.to_string())
    } else {
        Err(ApiError::bad_field(
            "address",
            format!("{text:?} is not an account: use the address (or account name) your workers mine as, without the \".rig\" part"),
        ))
    }
}

/// The scheme `account` mines under now (config, else the default).
fn scheme_of(settings: &crate::payout::PayoutSettings, account: &str) -> Scheme {
    settings
        .accounts
        .iter()
        .find(|a| a.name == account)
        .and_then(|a| a.scheme)
        .unwrap_or(settings.default_scheme)
}

pub async fn worker(State(state): State<Shared>, Path(id): Path<String>) -> ApiResult {
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_field("id", "not a worker name"));
    }
    let name = id.clone();
    let (window, row, last, blocks) = state
        .db(move |conn, _| {
            let now = unix_ms();
            let window = windows(conn, now, Scope::Worker(&name))?;
            let row = worker_rows(conn, now, Some(&name))?.pop();
            let last = last_share(conn, &name)?;
            let blocks: i64 = conn.query_row(
                "SELECT COUNT(*) FROM blocks WHERE finder = ?1 AND status != 'rejected'",
                [&name],
                |r| r.get(0),
            )?;
            Ok((window, row, last, blocks))
        })
        .await?;
    if last.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("worker {id:?} has no accepted share"),
        )
        .with_field("id"));
    }
    Ok(Json(json!({
        "worker": id,
        "account": account_of_worker(&id),
        "hashrate_hps": super::stats::hashrate_map(&window),
        "windows": window,
        "shares_24h": row.as_ref().map(|r| r.shares_24h).unwrap_or(0),
        "last_share_ms": last,
        "blocks_found": blocks,
    }))
    .into_response())
}

pub async fn miner(State(state): State<Shared>, Path(address): Path<String>) -> ApiResult {
    let account = check_account(&address)?;
    let acc = account.clone();
    let (window, workers, registered) = state
        .db(move |conn, _| {
            let now = unix_ms();
            let window = windows(conn, now, Scope::Account(&acc))?;
            let workers: Vec<_> = worker_rows(conn, now, None)?
                .into_iter()
                .filter(|w| w.account == acc)
                .collect();
            let registered: Option<i64> = conn
                .query_row(
                    "SELECT registered_at_ms FROM api_registrations WHERE address = ?1",
                    [&acc],
                    |r| r.get(0),
                )
                .optional()?;
            Ok((window, workers, registered))
        })
        .await?;
    let acc = account.clone();
    let (balance, settings) = state
        .payout(move |l| Ok((l.balance(&acc)?, l.settings().clone())))
        .await?;
    let b = &balance;
    let has_money = [
        b.immature,
        b.mature,
        b.pending,
        b.paid,
        b.paid_in_coinbase,
        b.deficit,
    ]
    .iter()
    .any(|s| s.0 > 0);
    let known = !workers.is_empty() || registered.is_some() || has_money;
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("account {account:?} has no shares, credits or registration"),
        )
        .with_field("address"));
    }
    Ok(Json(json!({
        "account": account,
        "address": balance.address,
        "registered_at_ms": registered,
        "scheme": scheme_of(&settings, &account).as_str(),
        "balance": balance,
        "hashrate_hps": super::stats::hashrate_map(&window),
        "windows": window,
        "workers": workers,
    }))
    .into_response())
}

pub async fn earnings(
    State(state): State<Shared>,
    Path(address): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let account = check_account(&address)?;
    let limit = limit_param(&query, 50, 1000)?;
    let before = match query.get("before") {
        None => None,
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| ApiError::bad_field("before", format!("{t:?} is not a credit id")))?,
        ),
    };
    let acc = account.clone();
    let (balance, earnings, payouts) = state
        .payout(move |l| {
            let balance = l.balance(&acc)?;
            let earnings = l.earnings(&acc, limit, before)?;
            let mut stmt = l.connection().prepare(
                "SELECT b.id, b.status, i.amount_sats, i.address, i.vout, b.txid, b.unsigned_txid, b.created_at_ms, b.finished_at_ms
                 FROM payout_batch_items i JOIN payout_batches b ON b.id = i.batch_id
                 WHERE i.account = ?1 ORDER BY b.id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![acc, limit as i64], |r| {
                Ok(json!({
                    "batch_id": r.get::<_, i64>(0)?,
                    "status": r.get::<_, String>(1)?,
                    "amount_sats": r.get::<_, i64>(2)?,
                    "address": r.get::<_, String>(3)?,
                    "vout": r.get::<_, i64>(4)?,
                    "txid": r.get::<_, Option<String>>(5)?,
                    "unsigned_txid": r.get::<_, String>(6)?,
                    "created_at_ms": r.get::<_, i64>(7)?,
                    "finished_at_ms": r.get::<_, Option<i64>>(8)?,
                }))
            })?;
            let payouts: Vec<Value> = rows.collect::<Result<_, _>>()?;
            Ok((balance, earnings, payouts))
        })
        .await?;
    Ok(Json(json!({
        "account": account,
        "balance": balance,
        "earnings": earnings,
        "payouts": payouts,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    address: String,
    #[serde(default)]
    label: Option<String>,
}

/// `POST /api/miners/register {"address": "...", "label": "..."}`: make an address an account
/// the pool knows (and pays): its workers mine as `<address>.<rig>`.
pub async fn register(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    state.authorize(&headers)?;
    let req: Register = parse_body(&body)?;
    let address = req.address.trim().to_string();
    if address.is_empty() {
        return Err(ApiError::bad_field("address", "is empty"));
    }
    validate_address(&address, state.network).map_err(|why| {
        ApiError::bad_field(
            "address",
            format!("{why}; use a {} address", state.config.pool.network),
        )
    })?;
    if let Some(label) = &req.label {
        if label.len() > 100 || label.chars().any(char::is_control) {
            return Err(ApiError::bad_field(
                "label",
                "use at most 100 characters, no control characters",
            ));
        }
    }
    let now = unix_ms();
    let addr = address.clone();
    let label = req.label.clone();
    let (created, settings) = state
        .payout(move |l| {
            let conn = l.connection();
            conn.execute(
                "INSERT OR IGNORE INTO payout_accounts (name, address, configured, first_seen_ms) VALUES (?1, ?1, 0, ?2)",
                params![addr, now],
            )?;
            // An account first seen before registering may lack its address.
            conn.execute(
                "UPDATE payout_accounts SET address = ?1 WHERE name = ?1 AND address IS NULL",
                [&addr],
            )?;
            let created = conn.execute(
                "INSERT OR IGNORE INTO api_registrations (address, label, registered_at_ms) VALUES (?1, ?2, ?3)",
                params![addr, label, now],
            )? == 1;
            if !created {
                conn.execute(
                    "UPDATE api_registrations SET label = COALESCE(?2, label) WHERE address = ?1",
                    params![addr, label],
                )?;
            }
            Ok((created, l.settings().clone()))
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut body = Map::new();
    body.insert("account".into(), json!(address));
    body.insert("address".into(), json!(address));
    body.insert("label".into(), json!(req.label));
    body.insert("created".into(), json!(created));
    body.insert(
        "scheme".into(),
        json!(scheme_of(&settings, &address).as_str()),
    );
    body.insert("worker_example".into(), json!(format!("{address}.rig1")));
    Ok((status, Json(Value::Object(body))).into_response())
}
