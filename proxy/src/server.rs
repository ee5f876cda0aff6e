//! The downstream listener: accept miners, one session task each.

use crate::context::ProxyContext;
use crate::session::start_session;
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
                    if let Some(session) = start_session(ctx.clone(), stream, peer, permit) {
                        ctx.tasks.spawn(session);
                    }
                }
                Err(reason) => {
                    // Closed at once: nothing of a session exists yet.
                    drop(stream);
                    ctx.stats.limits.hit(reason, peer, "proxy");
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
