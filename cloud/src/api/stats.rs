//! Pool-wide reads: stats, hashrate, blocks, luck, difficulty, jobs, workers.
//!
//! * Hashrate over a window W (10 min, 1 h, 24 h) ending now: `Σd · 2^32 / W` over the
//!   accepted shares in the ledger with `now − W ≤ time_ms < now`.
//! * A round is the shares after the previous found block up to and including a block's
//!   winning share (by share id; blocks the node rejected do not end a round). Its effort is
//!   `Σd / D` with D the network difficulty of the winning share's job; luck is
//!   `blocks ÷ Σ effort` over the completed rounds (1.0 = as expected, 2.0 = twice as lucky).

use super::{limit_param, ApiError, ApiResult, ApiState, Shared};
use crate::monitor::unix_ms;
use crate::payout::account_of_worker;
use crate::stats::REJECT_REASONS;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::Json;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

/// The hashrate windows, in seconds, and their names.
pub const WINDOWS: [(u64, &str); 3] = [(600, "10m"), (3600, "1h"), (86_400, "24h")];
const TWO_POW_32: f64 = 4_294_967_296.0;

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub name: &'static str,
    pub seconds: u64,
    /// The window is `from_ms ≤ time_ms < to_ms`.
    pub from_ms: i64,
    pub to_ms: i64,
    pub shares: u64,
    pub difficulty_sum: f64,
    /// `difficulty_sum · 2^32 / seconds`.
    pub hashrate_hps: f64,
}

/// Which shares a hashrate is over.
pub enum Scope<'a> {
    Pool,
    Worker(&'a str),
    /// Every worker of an account (`name` and `name.*`).
    Account(&'a str),
}

const SCOPE_SQL: &str = "(?4 IS NULL OR (?5 = 0 AND worker = ?4) OR (?5 = 1 AND (worker = ?4 OR substr(worker, 1, length(?4) + 1) = ?4 || '.')))";

/// The three windows ending at `now_ms`, from the ledger.
pub fn windows(conn: &Connection, now_ms: i64, scope: Scope) -> Result<Vec<Window>, ApiError> {
    let (name, account) = match scope {
        Scope::Pool => (None, 0),
        Scope::Worker(w) => (Some(w), 0),
        Scope::Account(a) => (Some(a), 1),
    };
    let from = |secs: u64| now_ms - secs as i64 * 1000;
    let sql = format!(
        "SELECT COALESCE(SUM(CASE WHEN time_ms >= ?1 THEN difficulty END), 0), COUNT(CASE WHEN time_ms >= ?1 THEN 1 END),
                COALESCE(SUM(CASE WHEN time_ms >= ?2 THEN difficulty END), 0), COUNT(CASE WHEN time_ms >= ?2 THEN 1 END),
                COALESCE(SUM(difficulty), 0), COUNT(*)
         FROM shares WHERE time_ms >= ?3 AND time_ms < ?6 AND {SCOPE_SQL}"
    );
    let row: [(f64, i64); 3] = conn.query_row(
        &sql,
        params![from(600), from(3600), from(86_400), name, account, now_ms],
        |r| {
            Ok([
                (r.get(0)?, r.get(1)?),
                (r.get(2)?, r.get(3)?),
                (r.get(4)?, r.get(5)?),
            ])
        },
    )?;
    Ok(WINDOWS
        .iter()
        .zip(row)
        .map(|((secs, name), (sum, count))| Window {
            name,
            seconds: *secs,
            from_ms: from(*secs),
            to_ms: now_ms,
            shares: count as u64,
            difficulty_sum: sum,
            hashrate_hps: sum * TWO_POW_32 / *secs as f64,
        })
        .collect())
}

pub fn hashrate_map(windows: &[Window]) -> Value {
    let mut m = Map::new();
    for w in windows {
        m.insert(w.name.to_string(), json!(w.hashrate_hps));
    }
    Value::Object(m)
}

/// Per-minute pool hashrate over the last hour (for the dashboard's chart).
fn history(conn: &Connection, now_ms: i64) -> Result<Vec<Value>, ApiError> {
    let from = (now_ms / 60_000 - 59) * 60_000;
    let mut stmt = conn.prepare(
        "SELECT time_ms / 60000, SUM(difficulty) FROM shares WHERE time_ms >= ?1 AND time_ms < ?2 GROUP BY time_ms / 60000",
    )?;
    let rows = stmt.query_map(params![from, now_ms], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
    })?;
    let sums: HashMap<i64, f64> = rows.collect::<Result<_, _>>()?;
    let current = now_ms / 60_000;
    Ok((current - 59..=current)
        .map(|m| {
            let sum = sums.get(&m).copied().unwrap_or(0.0);
            // The running minute is divided by the part of it that has passed.
            let secs = if m == current {
                ((now_ms - m * 60_000) as f64 / 1000.0).max(1.0)
            } else {
                60.0
            };
            json!({"minute_ms": m * 60_000, "hashrate_hps": sum * TWO_POW_32 / secs})
        })
        .collect())
}

/// Blocks by status, from the ledger.
fn block_counts(conn: &Connection) -> Result<Value, ApiError> {
    let mut counts = Map::new();
    for s in ["submitted", "accepted", "rejected", "orphaned"] {
        counts.insert(s.into(), json!(0));
    }
    let mut total = 0i64;
    let mut stmt = conn.prepare("SELECT status, COUNT(*) FROM blocks GROUP BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (status, n) = row?;
        total += n;
        counts.insert(status, json!(n));
    }
    counts.insert("found".into(), json!(total));
    Ok(Value::Object(counts))
}

fn network_difficulty(state: &ApiState) -> Option<f64> {
    state
        .feed
        .latest()
        .map(|j| j.network_target.to_difficulty().as_f64())
}

pub async fn stats(State(state): State<Shared>) -> ApiResult {
    let (windows, blocks, workers) = state
        .db(|conn, _| {
            let now = unix_ms();
            let windows = windows(conn, now, Scope::Pool)?;
            let workers: i64 = conn.query_row(
                "SELECT COUNT(DISTINCT worker) FROM shares WHERE time_ms >= ?1",
                [now - 600_000],
                |r| r.get(0),
            )?;
            Ok((windows, block_counts(conn)?, workers))
        })
        .await?;
    let s = &state.stats;
    let mut rejected = Map::new();
    for (i, reason) in REJECT_REASONS.iter().enumerate() {
        rejected.insert(
            reason.to_string(),
            json!(s.rejected_by_reason[i].load(Relaxed)),
        );
    }
    let last_template = s.last_template_ms.load(Relaxed);
    let latest = state.feed.latest();
    let settings = state.payouts.with(|l| Ok(l.settings().clone())).await?;
    Ok(Json(json!({
        "time_ms": unix_ms(),
        "network": state.config.pool.network,
        "height": latest.as_ref().map(|j| j.template.height),
        "network_difficulty": network_difficulty(&state),
        "connections": s.connections.load(Relaxed),
        "connections_total": s.connections_total.load(Relaxed),
        "shares_accepted": s.shares_accepted.load(Relaxed),
        "shares_rejected": s.shares_rejected.load(Relaxed),
        "shares_rejected_by_reason": rejected,
        "blocks": blocks,
        "hashrate_hps": hashrate_map(&windows),
        "workers_10m": workers,
        "templates": s.templates.load(Relaxed),
        "template_age_secs": (last_template > 0).then(|| (unix_ms() - last_template) as f64 / 1000.0),
        "node_up": state.node.status().up,
        "uptime_secs": state.started.elapsed().as_secs(),
        "pool_fee_percent": settings.fee_bp as f64 / 100.0,
        "default_scheme": settings.default_scheme.as_str(),
        "confirmations": settings.confirmations,
        "min_payout_sats": settings.min_payout.0,
    }))
    .into_response())
}

pub async fn hashrate(State(state): State<Shared>) -> ApiResult {
    let (windows, history) = state
        .db(|conn, _| {
            let now = unix_ms();
            Ok((windows(conn, now, Scope::Pool)?, history(conn, now)?))
        })
        .await?;
    Ok(Json(json!({
        "hashrate_hps": hashrate_map(&windows),
        "windows": windows,
        "history": history,
    }))
    .into_response())
}

/// A found block with its round.
#[derive(Debug, Clone, Serialize)]
pub struct BlockRow {
    pub hash: String,
    pub height: u32,
    pub reward_sats: u64,
    pub finder: String,
    pub account: String,
    pub status: String,
    pub reject_reason: Option<String>,
    pub found_at_ms: i64,
    pub share_id: i64,
    /// The payout engine's view: `immature`, `mature`, `orphaned`, or null (not handled yet).
    pub payout_status: Option<String>,
    pub scheme: Option<String>,
    pub network_difficulty: f64,
    /// Σd of the round this block ended (null for rejected blocks, which end no round).
    pub round_difficulty_sum: Option<f64>,
    pub effort: Option<f64>,
}

/// Every block, oldest first, with the round each valid one ended.
fn all_blocks(conn: &Connection, state: &ApiState) -> Result<Vec<BlockRow>, ApiError> {
    let mut stmt = conn.prepare(
        "SELECT b.hash, b.height, b.reward_sats, b.finder, b.status, b.reject_reason, b.found_at_ms, b.share_id,
                p.status, p.scheme, s.network_difficulty
         FROM blocks b JOIN shares s ON s.id = b.share_id
         LEFT JOIN payout_blocks p ON p.hash = b.hash ORDER BY b.share_id",
    )?;
    let rows = stmt.query_map([], |r| {
        let finder: String = r.get(3)?;
        Ok(BlockRow {
            hash: r.get(0)?,
            height: r.get(1)?,
            reward_sats: r.get::<_, i64>(2)? as u64,
            account: account_of_worker(&finder).to_string(),
            finder,
            status: r.get(4)?,
            reject_reason: r.get(5)?,
            found_at_ms: r.get(6)?,
            share_id: r.get(7)?,
            payout_status: r.get(8)?,
            scheme: r.get(9)?,
            network_difficulty: r.get(10)?,
            round_difficulty_sum: None,
            effort: None,
        })
    })?;
    let mut blocks: Vec<BlockRow> = rows.collect::<Result<_, _>>()?;
    let mut prev = 0i64;
    let mut cache = state.round_sums.lock().unwrap_or_else(|e| e.into_inner());
    for b in blocks.iter_mut().filter(|b| b.status != "rejected") {
        let key = (prev, b.share_id);
        let sum = match cache.get(&key) {
            Some(s) => *s,
            None => {
                let s: f64 = conn.query_row(
                    "SELECT COALESCE(SUM(difficulty), 0) FROM shares WHERE id > ?1 AND id <= ?2",
                    params![key.0, key.1],
                    |r| r.get(0),
                )?;
                cache.insert(key, s);
                s
            }
        };
        b.round_difficulty_sum = Some(sum);
        b.effort = (b.network_difficulty > 0.0).then(|| sum / b.network_difficulty);
        prev = b.share_id;
    }
    Ok(blocks)
}

pub async fn blocks(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let limit = limit_param(&query, 50, 1000)?;
    let blocks = state.db(all_blocks).await?;
    let total = blocks.len();
    let newest: Vec<BlockRow> = blocks.into_iter().rev().take(limit).collect();
    Ok(Json(json!({"total": total, "blocks": newest})).into_response())
}

pub async fn luck(State(state): State<Shared>) -> ApiResult {
    let nd = network_difficulty(&state);
    let (blocks, current_sum) = state
        .db(|conn, s| {
            let blocks = all_blocks(conn, s)?;
            let last = blocks
                .iter()
                .filter(|b| b.status != "rejected")
                .map(|b| b.share_id)
                .next_back()
                .unwrap_or(0);
            let sum: f64 = conn.query_row(
                "SELECT COALESCE(SUM(difficulty), 0) FROM shares WHERE id > ?1",
                [last],
                |r| r.get(0),
            )?;
            Ok((blocks, sum))
        })
        .await?;
    let rounds: Vec<&BlockRow> = blocks.iter().filter(|b| b.effort.is_some()).collect();
    let total_effort: f64 = rounds.iter().filter_map(|b| b.effort).sum();
    let n = rounds.len();
    let luck = (total_effort > 0.0).then(|| n as f64 / total_effort);
    let recent: Vec<Value> = rounds
        .iter()
        .rev()
        .take(20)
        .map(|b| json!({"hash": b.hash, "height": b.height, "effort": b.effort, "difficulty_sum": b.round_difficulty_sum, "network_difficulty": b.network_difficulty}))
        .collect();
    Ok(Json(json!({
        "blocks": n,
        "total_effort": total_effort,
        "average_effort": (n > 0).then(|| total_effort / n as f64),
        "luck": luck,
        "current_round": {
            "difficulty_sum": current_sum,
            "network_difficulty": nd,
            "effort": nd.filter(|d| *d > 0.0).map(|d| current_sum / d),
        },
        "rounds": recent,
    }))
    .into_response())
}

pub async fn difficulty(State(state): State<Shared>) -> ApiResult {
    let latest = state.feed.latest();
    let v = &state.config.vardiff;
    Ok(Json(json!({
        "network_difficulty": network_difficulty(&state),
        "bits": latest.as_ref().map(|j| format!("{:08x}", j.template.nbits)),
        "height": latest.as_ref().map(|j| j.template.height),
        "vardiff": {
            "initial": v.initial,
            "min": v.min,
            "max": v.max,
            "target_shares_per_minute": v.target_shares_per_minute,
            "retarget_secs": v.retarget_secs,
        },
    }))
    .into_response())
}

pub async fn jobs(State(state): State<Shared>) -> ApiResult {
    let history = state.feed.history();
    Ok(Json(json!({
        "current": history.first(),
        "recent": history,
        "templates": state.stats.templates.load(Relaxed),
    }))
    .into_response())
}

/// A worker's shares over the windows.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    pub worker: String,
    pub account: String,
    pub hashrate_hps: Value,
    pub difficulty_sum: Value,
    pub shares_24h: u64,
    pub last_share_ms: Option<i64>,
}

/// Workers with shares in the last 24 h (or just `only`), by name.
pub fn worker_rows(
    conn: &Connection,
    now_ms: i64,
    only: Option<&str>,
) -> Result<Vec<WorkerRow>, ApiError> {
    let mut stmt = conn.prepare(
        "SELECT worker, SUM(CASE WHEN time_ms >= ?1 THEN difficulty ELSE 0 END), SUM(CASE WHEN time_ms >= ?2 THEN difficulty ELSE 0 END),
                SUM(difficulty), COUNT(*), MAX(time_ms)
         FROM shares WHERE time_ms >= ?3 AND time_ms < ?4 AND (?5 IS NULL OR worker = ?5) GROUP BY worker ORDER BY worker",
    )?;
    let rows = stmt.query_map(
        params![
            now_ms - 600_000,
            now_ms - 3_600_000,
            now_ms - 86_400_000,
            now_ms,
            only
        ],
        |r| {
            let worker: String = r.get(0)?;
            let sums = [r.get::<_, f64>(1)?, r.get(2)?, r.get(3)?];
            let mut hashrate = Map::new();
            let mut difficulty = Map::new();
            for ((secs, name), sum) in WINDOWS.iter().zip(sums) {
                hashrate.insert(name.to_string(), json!(sum * TWO_POW_32 / *secs as f64));
                difficulty.insert(name.to_string(), json!(sum));
            }
            Ok(WorkerRow {
                account: account_of_worker(&worker).to_string(),
                worker,
                hashrate_hps: Value::Object(hashrate),
                difficulty_sum: Value::Object(difficulty),
                shares_24h: r.get::<_, i64>(4)? as u64,
                last_share_ms: r.get(5)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub async fn workers(State(state): State<Shared>) -> ApiResult {
    let (rows, now) = state
        .db(|conn, _| {
            let now = unix_ms();
            Ok((worker_rows(conn, now, None)?, now))
        })
        .await?;
    Ok(Json(json!({"time_ms": now, "workers": rows})).into_response())
}

/// The last share of `worker` ever (not just in 24 h).
pub fn last_share(conn: &Connection, worker: &str) -> Result<Option<i64>, ApiError> {
    Ok(conn
        .query_row(
            "SELECT time_ms FROM shares WHERE worker = ?1 ORDER BY id DESC LIMIT 1",
            [worker],
            |r| r.get(0),
        )
        .optional()?)
}
