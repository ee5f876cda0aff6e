//! `GET /health`: 200 when the Stratum listener, the database, the node and the payout system
//! are fine; 503 with the reasons when any is not.

use super::{ApiResult, Shared};
use crate::monitor::unix_ms;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;

fn check(ok: bool, detail: impl Into<String>) -> Value {
    json!({"ok": ok, "detail": detail.into()})
}

pub async fn health(State(state): State<Shared>) -> ApiResult {
    let mut reasons = Vec::new();

    let listening = state.stats.stratum_listening.load(Relaxed);
    let stratum = if listening {
        check(true, format!("listening on {}", state.pool_addr))
    } else {
        reasons.push("stratum: the listener is not accepting connections".to_string());
        check(false, "not accepting connections")
    };

    let db =
        state
            .db(|conn, _| {
                Ok(conn.query_row("SELECT COUNT(*) FROM blocks", [], |r| r.get::<_, i64>(0))?)
            })
            .await;
    let failing = state.stats.ledger_failing.load(Relaxed);
    let database = match (db, failing) {
        (Ok(_), false) => check(true, format!("{}", state.config.ledger.path.display())),
        (Ok(_), true) => {
            let held = state.stats.ledger_unwritten.load(Relaxed);
            reasons.push(format!("database: the share ledger's last commit failed (disk full, read-only or locked?); {held} rows are kept in memory and retried; fix: free space on, or remount read-write, the file system of {}", state.config.ledger.path.display()));
            check(false, "ledger commits failing")
        }
        (Err(e), _) => {
            reasons.push(format!("database: {}", e.message));
            check(false, e.message)
        }
    };

    let n = state.node.status();
    let node = if n.up {
        check(true, format!("{} answers", state.config.node.url))
    } else {
        let why = n
            .last_error
            .clone()
            .unwrap_or_else(|| "no answer from the node yet".into());
        reasons.push(format!("node: {why}"));
        check(false, why)
    };

    let p = state.payouts.health();
    let interval_ms = state.config.payout.process_interval_secs as i64 * 1000;
    let now = unix_ms();
    let stale = p
        .last_ok_ms
        .map(|t| now - t > 3 * interval_ms + 30_000)
        .unwrap_or(state.started.elapsed().as_millis() as i64 > 3 * interval_ms + 30_000);
    let payouts = match (&p.last_error, stale) {
        (Some(e), _) => {
            reasons.push(format!("payouts: the last bookkeeping pass failed: {e}"));
            check(false, e.clone())
        }
        (None, true) => {
            reasons.push(
                "payouts: no bookkeeping pass has succeeded recently (is the node reachable?)"
                    .into(),
            );
            check(false, "no recent successful pass")
        }
        (None, false) => check(
            true,
            match p.tip {
                Some(t) => format!("last pass at tip {t}"),
                None => "starting".into(),
            },
        ),
    };

    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if reasons.is_empty() { "ok" } else { "degraded" },
        "reasons": reasons,
        "checks": {"stratum": stratum, "database": database, "node": node, "payouts": payouts},
        "payout_task": p,
        "node_status": n,
    });
    Ok((status, Json(body)).into_response())
}
