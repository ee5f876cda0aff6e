//! A channel: one logical upstream connection and the miners multiplexed on it.
//!
//! The channel task keeps a connection to whichever pool the router says is active, rebuilding
//! it on loss and switching (make-before-break) when the router moves. Each connection is a new
//! [`Link`]; miners keep their slot index across links, so failover only needs a
//! `mining.set_extranonce` (or `client.reconnect`) per miner, not a new slot.

use crate::context::ProxyContext;
use crate::extranonce_layout::{ExtranonceLayout, SlotAllocator};
use crate::jobs::ActiveJob;
use crate::ledger::UpstreamReject;
use crate::link::Link;
use crate::router::Backoff;
use crate::stats::{bump, PoolCounters};
use crate::upstream::{Handshake, Incoming, UpstreamConn, UpstreamError, FIRST_SUBMIT_ID};
use blgv_stratum::{Difficulty, Extranonce, ServerNotification, Submit};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};

/// What sessions on a channel are told.
#[derive(Debug, Clone)]
pub enum ChannelEvent {
    /// New work: fan it out.
    Job(Arc<ActiveJob>),
    /// A new upstream connection (new extranonce1, maybe new sizes and mask).
    NewLink(Arc<Link>),
    /// The upstream connection is gone; a new link follows when one is made.
    LinkLost,
    /// The upstream changed its difficulty: miner difficulties must stay at or below it.
    UpstreamDifficulty(Difficulty),
    /// The upstream changed the version-rolling mask.
    VersionMask(u32),
}

/// A share to send upstream.
#[derive(Debug)]
pub struct Forward {
    pub epoch: u64,
    pub submit: Submit,
    /// The miner's worker name, for the ledger.
    pub worker: Arc<str>,
}

struct PendingForward {
    worker: Arc<str>,
    job_id: String,
    sent_at: Instant,
}

pub struct Channel {
    pub id: u32,
    link: watch::Sender<Option<Arc<Link>>>,
    events: broadcast::Sender<ChannelEvent>,
    forwards: mpsc::UnboundedSender<Forward>,
    slots: Mutex<SlotAllocator>,
    max_miners: u32,
}

/// Sessions lagging this many events behind resynchronise from the link state.
const EVENT_BUFFER: usize = 64;

impl Channel {
    pub fn spawn(id: u32, ctx: Arc<ProxyContext>) -> Arc<Channel> {
        let (link, _) = watch::channel(None);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (forwards, forwards_rx) = mpsc::unbounded_channel();
        let channel = Arc::new(Channel {
            id,
            link,
            events,
            forwards,
            slots: Mutex::new(SlotAllocator::default()),
            max_miners: ctx.config.proxy.max_miners_per_upstream,
        });
        let task = ChannelTask {
            channel: channel.clone(),
            ctx: ctx.clone(),
            forwards: forwards_rx,
            epoch: 0,
            layout: None,
            pending: BTreeMap::new(),
            next_id: FIRST_SUBMIT_ID,
        };
        ctx.tasks.spawn(task.run());
        channel
    }

    pub fn link(&self) -> Option<Arc<Link>> {
        self.link.borrow().clone()
    }

    pub fn events(&self) -> broadcast::Receiver<ChannelEvent> {
        self.events.subscribe()
    }

    /// Wait until the channel has a live link.
    pub async fn wait_for_link(&self) {
        let mut rx = self.link.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }

    pub fn capacity(&self, layout: &ExtranonceLayout) -> u32 {
        match self.max_miners {
            0 => layout.capacity(),
            cap => cap.min(layout.capacity()),
        }
    }

    pub fn try_allocate(&self, link: &Link) -> Option<u32> {
        let cap = self.capacity(&link.layout);
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allocate(cap)
    }

    pub fn release(&self, index: u32) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(index);
    }

    pub fn miners(&self) -> u32 {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .in_use()
    }

    pub fn forward(&self, f: Forward) {
        // The receiver lives as long as the channel task, which outlives every session.
        let _ = self.forwards.send(f);
    }
}

enum LinkEnd {
    Shutdown,
    Lost(UpstreamError),
    /// The router moved and the new pool answered: serve it next.
    SwitchTo(Box<(UpstreamConn, Handshake)>, usize),
}

struct ChannelTask {
    channel: Arc<Channel>,
    ctx: Arc<ProxyContext>,
    forwards: mpsc::UnboundedReceiver<Forward>,
    epoch: u64,
    /// Kept across links so miners keep their index width (and slot) on failover.
    layout: Option<ExtranonceLayout>,
    /// By request id, which only grows: the first entry is the oldest forward.
    pending: BTreeMap<u64, PendingForward>,
    next_id: u64,
}

impl ChannelTask {
    async fn run(mut self) {
        let router = self.ctx.router.clone();
        let mut backoff = Backoff::new(&self.ctx.config.failover);
        let mut failures_in_a_row = 0usize;
        let mut ready: Option<(Box<(UpstreamConn, Handshake)>, usize)> = None;
        loop {
            if self.ctx.shutdown.is_cancelled() {
                return;
            }
            let (conn, pool) = match ready.take() {
                Some(r) => r,
                None => {
                    let pool = router.active();
                    let opened = tokio::select! {
                        r = UpstreamConn::open(router.pool(pool), &self.ctx.config) => r,
                        _ = self.ctx.shutdown.cancelled() => return,
                    };
                    match opened {
                        Ok(c) => (Box::new(c), pool),
                        Err(e) => {
                            tracing::warn!(channel = self.channel.id, error = %e, "upstream connection failed");
                            router.counters(pool).set_error(&e);
                            router.report_failure(pool);
                            failures_in_a_row += 1;
                            // After a full round of failures, wait before trying again.
                            if failures_in_a_row >= router.pool_count() {
                                failures_in_a_row = 0;
                                let delay = backoff.next_delay();
                                tokio::select! {
                                    _ = tokio::time::sleep(delay) => {}
                                    _ = self.ctx.shutdown.cancelled() => return,
                                }
                            }
                            continue;
                        }
                    }
                }
            };
            backoff.reset();
            failures_in_a_row = 0;
            let (conn, hs) = *conn;
            match self.serve(conn, hs, pool).await {
                LinkEnd::Shutdown => return,
                LinkEnd::Lost(e) => {
                    router.counters(pool).set_error(&e);
                    tracing::warn!(channel = self.channel.id, error = %e, "upstream connection lost; reconnecting");
                }
                LinkEnd::SwitchTo(next, pool) => ready = Some((next, pool)),
            }
        }
    }

    fn drop_link(&mut self) {
        self.channel.link.send_replace(None);
        let _ = self.channel.events.send(ChannelEvent::LinkLost);
        let unanswered = self.pending.len() as u64;
        self.pending.clear();
        self.ctx
            .stats
            .upstream_unanswered
            .fetch_add(unanswered, Relaxed);
        self.ctx.stats.upstream_connections.fetch_sub(1, Relaxed);
    }

    /// Install a link for a fresh connection (or a `set_extranonce`) and tell the sessions.
    fn install_link(
        &mut self,
        pool: usize,
        label: &str,
        en1: Extranonce,
        en2_size: usize,
        mask: u32,
        difficulty: Difficulty,
    ) -> Result<Arc<Link>, UpstreamError> {
        let layout = self
            .layout
            .and_then(|l| l.keep_index_width(en2_size))
            .or_else(|| ExtranonceLayout::for_upstream(en2_size))
            .ok_or_else(|| UpstreamError::Protocol {
                pool: label.to_string(),
                stage: "subscribe result",
                message: format!(
                    "extranonce2_size {en2_size} leaves no room to share among miners (need ≥ 2); use a pool port that gives more"
                ),
            })?;
        self.layout = Some(layout);
        self.epoch += 1;
        let link = Arc::new(Link::new(
            self.epoch,
            pool,
            label.to_string(),
            en1,
            layout,
            mask,
            difficulty,
        ));
        self.channel.link.send_replace(Some(link.clone()));
        let _ = self
            .channel
            .events
            .send(ChannelEvent::NewLink(link.clone()));
        Ok(link)
    }

    async fn serve(&mut self, mut conn: UpstreamConn, hs: Handshake, pool: usize) -> LinkEnd {
        let label = conn.pool_label.clone();
        let difficulty = hs.difficulty.unwrap_or(Difficulty::ONE);
        let mut link = match self.install_link(
            pool,
            &label,
            hs.extranonce1,
            hs.extranonce2_size,
            hs.version_mask,
            difficulty,
        ) {
            Ok(l) => l,
            Err(e) => {
                self.ctx.router.report_failure(pool);
                return LinkEnd::Lost(e);
            }
        };
        let stats = self.ctx.stats.clone();
        let router = self.ctx.router.clone();
        let counters = router.counters(pool);
        let _open = counters.connected();
        bump(&stats.upstream_connects_total);
        stats.upstream_connections.fetch_add(1, Relaxed);
        tracing::info!(
            channel = self.channel.id,
            pool = %label,
            extranonce1 = %link.extranonce1,
            extranonce2_size = hs.extranonce2_size,
            index_bytes = link.layout.index_bytes,
            version_mask = format_args!("{:08x}", hs.version_mask),
            "upstream connected"
        );
        for n in hs.early {
            if let Err(e) = self.on_notification(&mut link, n, pool, &label) {
                self.drop_link();
                return LinkEnd::Lost(e);
            }
        }
        let mut active = self.ctx.router.watch();
        let shutdown = self.ctx.shutdown.clone();
        // A pool can keep the TCP connection up and stop answering (a black-holed route, a hung
        // process): nothing fails, miners hash on a dead job. Look once a second.
        let failover = &self.ctx.config.failover;
        let (answer_timeout, silence_timeout) =
            (failover.answer_timeout(), failover.silence_timeout());
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                _ = watchdog.tick() => {
                    let oldest = self.pending.first_key_value().map(|(_, p)| p.sent_at.elapsed());
                    let stage = match oldest {
                        Some(waited) if waited > answer_timeout => Some("a share within failover.answer_timeout_ms"),
                        _ if silence_timeout.is_some_and(|t| last_heard.elapsed() > t) => Some("anything within failover.silence_timeout_ms"),
                        _ => None,
                    };
                    if let Some(stage) = stage {
                        tracing::error!(channel = self.channel.id, pool = %label, unanswered = self.pending.len(), "the pool went silent; dropping the connection and failing over");
                        self.ctx.router.report_failure(pool);
                        self.drop_link();
                        return LinkEnd::Lost(UpstreamError::Timeout { pool: label.to_string(), stage });
                    }
                }
                incoming = conn.next() => match incoming {
                    Ok(Incoming::Notification(n)) => {
                        last_heard = Instant::now();
                        if let Err(e) = self.on_notification(&mut link, n, pool, &label) {
                            self.drop_link();
                            return LinkEnd::Lost(e);
                        }
                    }
                    Ok(Incoming::Response { id, accepted, error }) => {
                        last_heard = Instant::now();
                        self.on_response(id, accepted, error, &label, counters);
                    }
                    Ok(Incoming::Ignored(why)) => {
                        tracing::warn!(pool = %label, %why, "ignoring unusable message from pool");
                    }
                    Err(e) => {
                        self.drop_link();
                        return LinkEnd::Lost(e);
                    }
                },
                Some(fwd) = self.forwards.recv() => {
                    if fwd.epoch != link.epoch {
                        // Hashed for a previous connection's extranonce: the pool would reject it.
                        bump(&stats.upstream_unanswered);
                        continue;
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    let mut submit = fwd.submit;
                    submit.worker = self.ctx.router.pool(pool).user.clone();
                    if link.version_mask() == 0 {
                        submit.version_bits = None;
                    }
                    self.pending.insert(id, PendingForward { worker: fwd.worker, job_id: submit.job_id.clone(), sent_at: Instant::now() });
                    bump(&counters.forwarded);
                    if let Err(e) = conn.send(&UpstreamConn::submit_line(id, &submit)).await {
                        self.drop_link();
                        return LinkEnd::Lost(e);
                    }
                }
                changed = active.changed() => {
                    if changed.is_err() { continue; }
                    let target = *active.borrow_and_update();
                    if target == pool { continue; }
                    // Make before break: only leave this pool once the other one answered.
                    match UpstreamConn::open(self.ctx.router.pool(target), &self.ctx.config).await {
                        Ok(next) => {
                            tracing::info!(channel = self.channel.id, from = %label, to = %self.ctx.router.pool(target).label(), "switching upstream pool");
                            self.drop_link();
                            return LinkEnd::SwitchTo(Box::new(next), target);
                        }
                        Err(e) => {
                            tracing::warn!(channel = self.channel.id, error = %e, "could not switch pools; staying");
                            self.ctx.router.report_failure(target);
                        }
                    }
                }
                _ = shutdown.cancelled() => {
                    self.drop_link();
                    return LinkEnd::Shutdown;
                }
            }
        }
    }

    fn on_notification(
        &mut self,
        link: &mut Arc<Link>,
        n: ServerNotification,
        pool: usize,
        label: &str,
    ) -> Result<(), UpstreamError> {
        match n {
            ServerNotification::Notify(job) => {
                let active = {
                    let mut st = link.write();
                    let seq = st.next_job_seq;
                    st.next_job_seq += 1;
                    let active = Arc::new(ActiveJob::new(*job, seq, st.target));
                    st.jobs.insert(
                        active.job.job_id.clone(),
                        active.job.clean_jobs,
                        active.clone(),
                    );
                    active
                };
                let _ = self.channel.events.send(ChannelEvent::Job(active));
            }
            ServerNotification::SetDifficulty(d) => {
                {
                    let mut st = link.write();
                    st.difficulty = d;
                    st.target = d.to_target();
                }
                let _ = self
                    .channel
                    .events
                    .send(ChannelEvent::UpstreamDifficulty(d));
            }
            ServerNotification::SetVersionMask(m) => {
                let m = m & self.ctx.config.version_rolling.mask_bits();
                link.write().version_mask = m;
                let _ = self.channel.events.send(ChannelEvent::VersionMask(m));
            }
            ServerNotification::SetExtranonce(en1, size) => {
                tracing::info!(channel = self.channel.id, pool = %label, extranonce1 = %en1, size, "pool changed our extranonce");
                let (mask, d) = {
                    let st = link.read();
                    (st.version_mask, st.difficulty)
                };
                *link = self.install_link(pool, label, en1, size, mask, d)?;
            }
            ServerNotification::Reconnect { wait_secs, .. } => {
                // Only ever reconnect to the configured pool: a pool must not redirect a site.
                tracing::info!(pool = %label, wait_secs, "pool asked us to reconnect");
                return Err(UpstreamError::Closed {
                    pool: label.to_string(),
                });
            }
            ServerNotification::Unknown(method) => {
                tracing::debug!(pool = %label, %method, "ignoring unknown notification");
            }
        }
        Ok(())
    }

    fn on_response(
        &mut self,
        id: Option<u64>,
        accepted: bool,
        error: Option<blgv_stratum::StratumError>,
        label: &str,
        counters: &PoolCounters,
    ) {
        let Some(p) = id.and_then(|id| self.pending.remove(&id)) else {
            return; // handshake leftovers (extranonce.subscribe) or unknown ids
        };
        let stats = &self.ctx.stats;
        counters.record_latency(p.sent_at.elapsed());
        if accepted {
            bump(&counters.accepted);
            bump(&stats.upstream_accepted);
            self.ctx.ledger.record_upstream_accepted(&p.worker);
            return;
        }
        let (code, message) = error
            .map(|e| (e.code, e.message))
            .unwrap_or((20, "rejected without reason".into()));
        if code == blgv_stratum::ErrorCode::JobNotFound as i64 {
            // The pool moved to a new block between our forward and its check: a race, not a bug.
            bump(&stats.upstream_stale);
            bump(&counters.stale);
            tracing::info!(pool = %label, worker = %p.worker, job = %p.job_id, "upstream answered stale (new block race)");
        } else {
            bump(&stats.upstream_rejected);
            bump(&counters.rejected);
            tracing::error!(
                pool = %label, worker = %p.worker, job = %p.job_id, code, %message,
                "UPSTREAM REJECTED A LOCALLY ACCEPTED SHARE: local validation disagrees with the pool; this is a bug signal"
            );
        }
        self.ctx.ledger.record_upstream_rejected(UpstreamReject {
            worker: p.worker,
            pool: label.to_string(),
            job_id: p.job_id,
            code,
            message,
        });
    }
}

/// Seconds since `t`, for ntime windows.
pub fn secs_since(t: Instant) -> u32 {
    t.elapsed().as_secs().min(u32::MAX as u64) as u32
}
