//! The downstream listener: accept miners, one session task each.

use crate::context::ProxyContext;
use crate::session::run_session;
use blgv_stratum::limits::LimitReason;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub async fn run_listener(listener: TcpListener, ctx: Arc<ProxyContext>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = ctx.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => match ctx.limiter.try_acquire(peer.ip()) {
                Ok(permit) => {
                    ctx.tasks
                        .spawn(run_session(ctx.clone(), stream, peer, permit));
                }
                Err(reason) => {
                    // Closed at once: nothing of a session exists yet.
                    drop(stream);
                    limit_hit(&ctx, reason, peer);
                }
            },
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning; existing miners
                // keep working.
                tracing::error!(error = %e, "accept failed (file descriptor limit? raise LimitNOFILE)");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Count a connection refused or cut by a resource limit; log the first and then at most one
/// per 10 s (an attack must not flood the log), every one at debug.
pub fn limit_hit(ctx: &ProxyContext, reason: LimitReason, peer: std::net::SocketAddr) {
    let key = reason.config_key();
    match ctx.stats.limits.count(reason) {
        Some(suppressed) => tracing::warn!(
            %peer,
            reason = reason.as_str(),
            suppressed,
            "miner connection cut by a resource limit (proxy.{key}); further ones are logged at most every 10 s"
        ),
        None => {
            tracing::debug!(%peer, reason = reason.as_str(), "miner connection cut by a resource limit")
        }
    }
}
