//! `GET /ws/pool-stats`: the live feed. Every message is JSON with a `type`:
//! `hashrate_update` (every `api.live_update_ms`, and at once on connect), `block_found`
//! (the moment a share meets the network target) and `payout_processed` (credits, maturity,
//! orphans, payout batches).

use super::stats::{hashrate_map, windows, Scope};
use super::Shared;
use crate::monitor::unix_ms;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

pub async fn pool_stats(State(state): State<Shared>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(4096)
        .on_upgrade(move |socket| follow(state, socket))
}

async fn follow(state: Shared, mut socket: WebSocket) {
    let mut events = state.live.subscribe();
    if let Some(last) = state.last_update() {
        if socket
            .send(Message::Text(last.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(text) => {
                    if socket.send(Message::Text(text.to_string().into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::debug!(skipped = n, "slow WebSocket client"),
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // Pings are answered by axum; anything the client says is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = state.shutdown.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        }
    }
}

/// Every `api.live_update_ms`: the pool's hashrate windows from the ledger, broadcast as
/// `hashrate_update` and kept for `/metrics` and new WebSocket clients.
pub async fn run_sampler(state: Shared) {
    let mut tick = tokio::time::interval(Duration::from_millis(state.config.api.live_update_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        let sample = state
            .db(|conn, _| {
                let now = unix_ms();
                let w = windows(conn, now, Scope::Pool)?;
                let workers: i64 = conn.query_row(
                    "SELECT COUNT(DISTINCT worker) FROM shares WHERE time_ms >= ?1 AND time_ms < ?2",
                    [now - 600_000, now],
                    |r| r.get(0),
                )?;
                Ok((now, w, workers))
            })
            .await;
        let (now, w, workers) = match sample {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("hashrate sample failed: {}", e.message);
                continue;
            }
        };
        let s = &state.stats;
        let event = json!({
            "type": "hashrate_update",
            "time_ms": now,
            "hashrate_hps": hashrate_map(&w),
            "windows": w,
            "workers_10m": workers,
            "connections": s.connections.load(Relaxed),
            "shares_accepted": s.shares_accepted.load(Relaxed),
            "shares_rejected": s.shares_rejected.load(Relaxed),
            "blocks_found": s.blocks_found.load(Relaxed),
        });
        let text: Arc<str> = Arc::from(event.to_string());
        state.set_last_update(
            text,
            [w[0].hashrate_hps, w[1].hashrate_hps, w[2].hashrate_hps],
        );
        state.live.publish(&event);
    }
}
