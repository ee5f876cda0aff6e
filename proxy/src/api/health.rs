//! `GET /health`: 200 when the proxy can do its job (its ledger commits, miners that are
//! connected have an upstream to mine for); 503 with the reasons when not. Meant for a
//! supervisor or a monitoring probe: the status and metrics endpoints have the detail.

use super::ApiState;
use axum::http::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;

fn check(ok: bool, detail: impl Into<String>) -> Value {
    json!({"ok": ok, "detail": detail.into()})
}

/// The answer's status code and body.
pub fn health(s: &ApiState) -> (StatusCode, Value) {
    let mut reasons = Vec::new();

    let ledger = s.ctx.ledger.health();
    let path = s.ctx.config.ledger.path.display();
    let ledger_check = if ledger.failing.load(Relaxed) {
        let why = ledger.last_error().unwrap_or_default();
        reasons.push(format!(
            "ledger: commits to {path} fail ({why}); the counters are kept in memory and retried; fix: free space on, or remount read-write, that file system"
        ));
        check(false, why)
    } else {
        check(true, format!("{path}"))
    };

    let miners = s.ctx.stats.miners_connected.load(Relaxed);
    let router = &s.ctx.router;
    let open: u64 = (0..router.pool_count())
        .map(|i| router.counters(i).connections.load(Relaxed))
        .sum();
    // Upstream connections open when the first miner subscribes: none with no miners is fine.
    let upstream = if miners > 0 && open == 0 {
        reasons.push(format!(
            "upstream: {miners} miners are connected but no pool connection is open (see /api/upstreams)"
        ));
        check(false, "no pool connection")
    } else {
        check(true, format!("{open} pool connections"))
    };

    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if reasons.is_empty() { "ok" } else { "degraded" },
        "reasons": reasons,
        "checks": {"ledger": ledger_check, "upstream": upstream},
        "ledger": {
            "commits": ledger.commits.load(Relaxed),
            "commit_failures": ledger.failures.load(Relaxed),
            "last_error": ledger.last_error(),
        },
    });
    (status, body)
}
