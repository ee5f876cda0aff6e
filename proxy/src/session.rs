//! One miner's connection: the downstream Stratum V1 server side.
//!
//! A session task owns its socket. It answers every request at once, validates every share
//! locally with the same rules the upstream applies, forwards what the upstream needs, and
//! follows its channel's events (new jobs, new links after failover, difficulty and mask
//! changes). Nothing here blocks on the upstream: a miner's submit is answered before the share
//! reaches the pool.

use crate::channel::{secs_since, ChannelEvent, Forward};
use crate::context::{ProxyContext, Slot};
use crate::line_reader::{LineReader, Read};
use crate::link::Link;
use crate::out_buffer;
use crate::registry::MinerEntry;
use crate::stats::bump;
use blgv_stratum::limits::{ConnectionPermit, LimitReason, TokenBucket};
use blgv_stratum::Vardiff;
use blgv_stratum::{
    check_share, line, parse_submit_line, ClientRequest, CodecError, Configure, Difficulty,
    ErrorCode, Extranonce, Frame, ShareRejection, ShareRules, StratumError, Submit, Target,
};
use futures::StreamExt;
use serde_json::{json, Map, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

/// Time a miner gets to act on `client.reconnect` before the proxy closes the socket itself.
const RECONNECT_GRACE: Duration = Duration::from_secs(1);
/// Worker names one connection may authorize (rigs with several hashboards use a few).
const MAX_WORKERS_PER_CONNECTION: usize = 16;

/// One miner's connection, from accept to close: `None` when it is refused at once (its work
/// is withheld, or the proxy is shutting down), else the session's task.
///
/// Everything up to the loop is done here, before the task exists, and the `async move` block
/// captures it in place: values made inside a future and values moved within it take a slot of
/// their own in every idle miner's task (memory per miner is a goal of its own; the block is
/// 640 bytes, and tokio's task cell rounds it up to a multiple of 128).
pub fn start_session(
    ctx: Arc<ProxyContext>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: ConnectionPermit,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    let _ = stream.set_nodelay(true);
    bump(&ctx.stats.miner_connections_total);
    if ctx.withholding.is_withheld(peer.ip(), &[]) {
        // Curtailment's last resort: this ASIC gets no work until it is released.
        tracing::debug!(%peer, "connection refused: work withheld by curtailment");
        return None;
    }
    // Listed for the API while the session lives.
    let registered = ctx.miners.register(peer);
    // Shutdown, like curtailment's last resort, reaches a session through its registry entry
    // (registry::close_withheld_sessions): one registered after that sweep sees the token here.
    if ctx.shutdown.is_cancelled() {
        return None;
    }
    ctx.stats.miners_connected.fetch_add(1, Relaxed);
    // No read buffer of its own: an idle miner holds none (see line_reader).
    let mut lines = LineReader::new(ctx.config.proxy.max_line_length);
    let limits = &ctx.config.proxy;
    let mut bucket = TokenBucket::new(limits.message_burst, std::time::Instant::now());
    let mut watchdog = Watchdog::handshake(
        Duration::from_millis(limits.handshake_timeout_ms),
        ctx.vardiff.retarget_interval / 2,
    );
    let mut session = Session::new(ctx, stream, registered.entry.clone());
    Some(async move {
        // `permit` is the slot under proxy.max_connections(_per_ip), and `registered` the
        // miner's listing: captured by this block, both are given back when the session ends.
        let mut cut: Option<LimitReason> = None;
        loop {
            tokio::select! {
                ready = std::future::poll_fn(|cx| session.stream.poll_read_ready(cx)) => {
                    if ready.is_err() {
                        break;
                    }
                    match session.read_lines(&mut lines, &mut bucket).await {
                        LinesRead::Handled => {}
                        LinesRead::Closed => break,
                        LinesRead::Cut(reason) => {
                            let _ = session.flush().await;
                            cut = Some(reason);
                            break;
                        }
                    }
                }
                event = std::future::poll_fn(|cx| poll_event(&mut session.events, cx)) => {
                    if !session.on_event(event) {
                        break;
                    }
                }
                _ = std::future::poll_fn(|cx| session.me.poll_close_requested(cx)) => {
                    if !session.ctx.shutdown.is_cancelled() {
                        tracing::info!(peer = %session.me.peer, workers = ?session.workers, "work withheld by curtailment (last resort): closing the miner's session");
                    }
                    break;
                }
                _ = std::future::poll_fn(|cx| poll_deadline(&mut session.close_at, cx)) => break,
                _ = std::future::poll_fn(|cx| watchdog.sleep.as_mut().poll(cx)) => {
                    let partial = lines.has_partial_line();
                    match watchdog.on_fired(lines.lines_seen(), partial, session.partial_line_timeout()) {
                        Fired::Cut(reason) => {
                            cut = Some(reason);
                            break;
                        }
                        Fired::VardiffTick => session.on_tick(),
                        Fired::Nothing => {}
                    }
                }
            }
            if session.flush().await.is_err() {
                cut = session.cut;
                break;
            }
            if !watchdog.handshake_done() {
                watchdog.after_turn(
                    session.working,
                    lines.lines_seen(),
                    session.partial_line_timeout(),
                );
            }
        }
        if let Some(reason) = cut {
            session
                .ctx
                .stats
                .limits
                .hit(reason, session.me.peer, "proxy");
        }
        // FIN after the last bytes written (an error line, a reconnect), as a write half's drop
        // would send.
        let _ = session.stream.shutdown().await;
        session.ctx.stats.miners_connected.fetch_sub(1, Relaxed);
        drop(registered);
        drop(permit);
        tracing::debug!(peer = %session.me.peer, workers = ?session.workers, "miner disconnected");
    })
}

// The select branches below are `poll_fn`s over a reference rather than `async fn`s: an
// `async fn`'s future holds its arguments and its awaitee, and the select keeps every branch's
// future in the session's task (memory per miner is a goal of its own).

fn poll_event(
    rx: &mut Option<BroadcastStream<ChannelEvent>>,
    cx: &mut Context<'_>,
) -> Poll<Result<ChannelEvent, RecvError>> {
    let Some(rx) = rx else { return Poll::Pending };
    rx.poll_next_unpin(cx).map(|event| match event {
        Some(Ok(event)) => Ok(event),
        Some(Err(BroadcastStreamRecvError::Lagged(n))) => Err(RecvError::Lagged(n)),
        None => Err(RecvError::Closed),
    })
}

fn poll_deadline(close: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> Poll<()> {
    match close {
        Some(sleep) => sleep.as_mut().poll(cx),
        None => Poll::Pending,
    }
}

/// Writes what the socket takes right now, without a timer or a future. Returns how much was
/// written; less than all when the miner's receive window is full.
fn write_now(writer: &TcpStream, bytes: &[u8]) -> std::io::Result<usize> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match writer.try_write(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(bytes.len() - rest.len())
}

/// The slow path of a write: the miner is not reading fast enough. Wait for room, but a write
/// that makes no progress for `stall` (proxy.write_stall_timeout_ms) drops the miner rather
/// than buffering for it.
async fn write_slowly(
    stream: &TcpStream,
    mut bytes: &[u8],
    stall: Duration,
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match tokio::time::timeout(stall, stream.writable()).await {
            Ok(Ok(())) => match stream.try_write(bytes) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                // The readiness was stale; tokio has cleared it.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            },
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "miner stopped reading",
                ))
            }
        }
    }
    Ok(())
}

/// The session's one timer (each timer is ~130 bytes of every idle miner's memory): the
/// vardiff retarget tick, and the watchdog that closes a connection that does not finish its
/// handshake in time or that leaves a line unfinished (slowloris).
///
/// The watchdog checks the handshake deadline, then every `partial_line_timeout_ms`. A partial
/// line seen at two checks in a row with no complete line between them is cut, so a stalled
/// line is cut between one and two timeouts after it started. Checking on a timer rather than
/// on each read keeps the per-message path free of timers (a slowloris's bytes complete no
/// line, so they wake nothing in the session).
struct Watchdog {
    sleep: Pin<Box<Sleep>>,
    /// The next watchdog check: the handshake deadline, then the next partial-line check.
    next_check: Instant,
    /// The next vardiff tick, every `tick_period` (half the retarget interval).
    next_tick: Instant,
    tick_period: Duration,
    handshake_done: bool,
    /// `lines_seen` at the last check.
    checkpoint: u64,
    /// A partial line was pending at the last check.
    was_partial: bool,
}

/// What a firing of the session's timer calls for.
enum Fired {
    Cut(LimitReason),
    VardiffTick,
    Nothing,
}

impl Watchdog {
    fn handshake(timeout: Duration, tick_period: Duration) -> Watchdog {
        let now = Instant::now();
        let next_check = now + timeout;
        let next_tick = now + tick_period;
        Watchdog {
            sleep: Box::pin(tokio::time::sleep_until(next_check.min(next_tick))),
            next_check,
            next_tick,
            tick_period,
            handshake_done: false,
            checkpoint: 0,
            was_partial: false,
        }
    }

    fn handshake_done(&self) -> bool {
        self.handshake_done
    }

    fn rearm(&mut self) {
        let next = self.next_check.min(self.next_tick);
        self.sleep.as_mut().reset(next);
    }

    /// The timer ran out: a reason to cut the connection, or a vardiff tick that is due. A
    /// watchdog check and a tick due at the same time are both handled, the cut first.
    fn on_fired(&mut self, lines_seen: u64, partial: bool, partial_timeout: Duration) -> Fired {
        let now = Instant::now();
        if now >= self.next_check {
            if !self.handshake_done {
                return Fired::Cut(LimitReason::HandshakeTimeout);
            }
            if partial && self.was_partial && lines_seen == self.checkpoint {
                return Fired::Cut(LimitReason::PartialLineTimeout);
            }
            self.was_partial = partial;
            self.checkpoint = lines_seen;
            self.next_check = now + partial_timeout;
        }
        let tick = now >= self.next_tick;
        if tick {
            // As a `MissedTickBehavior::Delay` interval: a late tick does not bunch up.
            self.next_tick = now + self.tick_period;
        }
        self.rearm();
        if tick {
            Fired::VardiffTick
        } else {
            Fired::Nothing
        }
    }

    /// After each loop turn: leave the handshake phase once the miner works.
    fn after_turn(&mut self, working: bool, lines_seen: u64, partial_timeout: Duration) {
        if !self.handshake_done && working {
            self.handshake_done = true;
            self.checkpoint = lines_seen;
            self.next_check = Instant::now() + partial_timeout;
            self.rearm();
        }
    }
}

struct Session {
    ctx: Arc<ProxyContext>,
    /// The miner's socket, read through `LineReader` and written here.
    stream: TcpStream,
    /// Replies and notifications of the current loop turn. Borrowed from the thread's spare
    /// buffer when the turn writes something and given back after the flush, so an idle miner
    /// holds none (see out_buffer).
    out: String,
    /// A notify line shared by every miner of the channel, written after `out` without copying
    /// it per miner. Set only when `out` is empty and nothing follows it in the same loop turn,
    /// so writing `out` then this keeps the wire order.
    shared_line: Option<Arc<str>>,
    slot: Option<Slot>,
    /// The link this miner's extranonce1 belongs to.
    link: Option<Arc<Link>>,
    /// The channel's events. A stream rather than a bare receiver: its pending `recv` lives
    /// across loop turns instead of being made and dropped on each one.
    events: Option<BroadcastStream<ChannelEvent>>,
    extranonce1: Extranonce,
    extranonce2_size: usize,
    subscribed: bool,
    extranonce_subscribed: bool,
    /// The mask the miner asked for in mining.configure.
    requested_mask: Option<u32>,
    /// requested ∩ upstream grant: what the miner may roll.
    granted_mask: u32,
    workers: Vec<Arc<str>>,
    /// Work is flowing (subscribed and authorized, difficulty sent).
    working: bool,
    vardiff: Vardiff,
    suggested: Option<Difficulty>,
    /// After a difficulty change, shares for jobs up to this seq may meet the old target.
    grace: Option<(Target, u64)>,
    /// Send the next job with clean_jobs forced (after an extranonce change).
    needs_clean_job: bool,
    /// Sequence number of the newest job sent on the current link: a job event can repeat (or
    /// trail) what was sent at authorize, and miners must not get old work after new.
    last_job_seq: u64,
    /// When set, the session ends at this deadline (after asking the miner to reconnect).
    /// Boxed: most sessions never have one, and a timer inline would be in every task.
    close_at: Option<Pin<Box<Sleep>>>,
    /// This miner's entry in the registry (API, dashboard, metrics); also its address.
    me: Arc<MinerEntry>,
    /// Set when a write failed because of a limit (send queue, write stall).
    cut: Option<LimitReason>,
}

impl Session {
    fn new(ctx: Arc<ProxyContext>, stream: TcpStream, me: Arc<MinerEntry>) -> Session {
        let initial = Difficulty::new(ctx.config.vardiff.initial).expect("validated");
        Session {
            vardiff: Vardiff::new(initial, std::time::Instant::now()),
            ctx,
            stream,
            out: String::new(),
            shared_line: None,
            slot: None,
            link: None,
            events: None,
            extranonce1: Extranonce::default(),
            extranonce2_size: 0,
            subscribed: false,
            extranonce_subscribed: false,
            requested_mask: None,
            granted_mask: 0,
            workers: Vec::new(),
            working: false,
            suggested: None,
            grace: None,
            needs_clean_job: false,
            last_job_seq: 0,
            close_at: None,
            me,
            cut: None,
        }
    }

    /// This turn's output buffer, borrowed from the thread on first use (see out_buffer).
    fn out(&mut self) -> &mut String {
        if self.out.capacity() == 0 {
            self.out = out_buffer::borrow();
        }
        &mut self.out
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let shared = self.shared_line.take();
        // The slow path is a boxed future: inline, its state would sit in every idle miner's
        // task at each of the session loop's flush points.
        let result = match self.write_now(shared.as_deref()) {
            Ok(None) => Ok(()),
            Ok(Some(rest)) => self.write_rest(rest).await,
            Err(e) => Err(e),
        };
        out_buffer::give_back(std::mem::take(&mut self.out));
        result
    }

    /// `out`, then the shared line, as far as the socket takes them now: nearly always all of
    /// it, one `try_write` per buffer. Returns what is left for the slow path (a miner that is
    /// behind), after checking it against proxy.max_send_queue_bytes.
    fn write_now(&mut self, shared: Option<&str>) -> std::io::Result<Option<Vec<u8>>> {
        let n = write_now(&self.stream, self.out.as_bytes())?;
        if n < self.out.len() {
            let pending = self.out.len() - n + shared.map_or(0, str::len);
            self.check_send_queue(pending)?;
            let mut rest = self.out.as_bytes()[n..].to_vec();
            rest.extend_from_slice(shared.unwrap_or("").as_bytes());
            return Ok(Some(rest));
        }
        let Some(line) = shared else { return Ok(None) };
        let m = write_now(&self.stream, line.as_bytes())?;
        if m < line.len() {
            self.check_send_queue(line.len() - m)?;
            return Ok(Some(line.as_bytes()[m..].to_vec()));
        }
        Ok(None)
    }

    /// The bytes the proxy would hold for a miner whose socket is full: over
    /// proxy.max_send_queue_bytes, the miner is dropped at once.
    fn check_send_queue(&mut self, pending: usize) -> std::io::Result<()> {
        if pending > self.ctx.config.proxy.max_send_queue_bytes {
            self.cut = Some(LimitReason::SendQueue);
            return Err(std::io::Error::other("send queue over its cap"));
        }
        Ok(())
    }

    #[cold]
    fn write_rest(
        &mut self,
        rest: Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send + '_>> {
        let stall = Duration::from_millis(self.ctx.config.proxy.write_stall_timeout_ms);
        Box::pin(async move {
            let r = write_slowly(&self.stream, &rest, stall).await;
            if matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::TimedOut) {
                self.cut = Some(LimitReason::WriteStall);
            }
            r
        })
    }

    fn reply_ok(&mut self, id: &Value, result: Value) {
        self.out().push_str(&line::ok(id, result));
    }

    fn reply_err(&mut self, id: &Value, code: ErrorCode, message: impl Into<String>) {
        self.out()
            .push_str(&line::error(id, &StratumError::new(code, message)));
    }

    /// How long a line may stay unfinished (proxy.partial_line_timeout_ms): read from the
    /// config rather than kept in every idle miner's task.
    fn partial_line_timeout(&self) -> Duration {
        Duration::from_millis(self.ctx.config.proxy.partial_line_timeout_ms)
    }

    /// Reads what the miner sent and handles every complete line in it: plain submits at once,
    /// anything else through the general parser.
    ///
    /// A plain function returning an `async move` block, not an `async fn`, which would keep its
    /// arguments twice in the session's task (memory per miner is a goal of its own).
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn read_lines<'a>(
        &'a mut self,
        lines: &'a mut LineReader,
        bucket: &'a mut TokenBucket,
    ) -> impl std::future::Future<Output = LinesRead> + Send + 'a {
        async move {
            let Read::Bytes(mut batch) = lines.read(&self.stream) else {
                return LinesRead::Closed;
            };
            loop {
                let bytes = match batch.next_line() {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => return LinesRead::Handled,
                    Err(CodecError::LineTooLong { max }) => {
                        let e = StratumError::new(ErrorCode::Other, format!("line longer than {max} bytes without a newline; closing the connection"));
                        self.out().push_str(&line::error(&Value::Null, &e));
                        return LinesRead::Cut(LimitReason::LineTooLong);
                    }
                    Err(CodecError::Io(_)) => return LinesRead::Closed,
                };
                let limits = &self.ctx.config.proxy;
                if !bucket.take(limits.max_messages_per_sec, limits.message_burst) {
                    let rate = limits.max_messages_per_sec;
                    let e = StratumError::new(ErrorCode::Other, format!("more than {rate} messages per second (proxy.max_messages_per_sec); closing the connection"));
                    self.out().push_str(&line::error(&Value::Null, &e));
                    return LinesRead::Cut(LimitReason::RateLimit);
                }
                if !self.on_submit_line(bytes) {
                    // Anything but a plain submit: rare, and it may wait for a slot on a
                    // channel. Boxed, so that waiting state is not part of every idle miner's
                    // task (memory per miner is a goal of its own).
                    Box::pin(self.on_line(bytes)).await
                }
            }
        }
    }

    /// Nearly every line is a submit: read it without a JSON tree when it is a plain one.
    /// False when the line needs the general parser ([`Session::on_line`]).
    fn on_submit_line(&mut self, bytes: &[u8]) -> bool {
        match parse_submit_line(bytes) {
            Some((id, submit)) => {
                self.on_submit(&id, submit);
                true
            }
            None => false,
        }
    }

    async fn on_line(&mut self, bytes: &[u8]) {
        let (id, method, params) = match Frame::parse(bytes) {
            Ok(Frame::Request { id, method, params }) => (id, method, params),
            Ok(Frame::Response { .. }) => return, // answers to our (absent) requests: ignore
            Err(e) => {
                tracing::debug!(peer = %self.me.peer, error = %e, "bad line from miner");
                self.reply_err(
                    &Value::Null,
                    ErrorCode::Other,
                    format!("{e}; send one JSON-RPC object per line"),
                );
                return;
            }
        };
        match ClientRequest::parse(&method, &params) {
            Err(e) => {
                if method == "mining.submit" {
                    self.reject(&id, None, ShareRejection::Malformed(e.to_string()));
                } else {
                    self.reply_err(&id, ErrorCode::Other, format!("{method}: {e}"));
                }
            }
            Ok(ClientRequest::Subscribe(sub)) => {
                self.me.set_agent(sub.user_agent);
                self.on_subscribe(&id).await
            }
            Ok(ClientRequest::Authorize(a)) => self.on_authorize(&id, a.user),
            Ok(ClientRequest::Submit(s)) => self.on_submit(&id, s),
            Ok(ClientRequest::Configure(c)) => self.on_configure(&id, c).await,
            Ok(ClientRequest::SuggestDifficulty(d)) => self.on_suggest_difficulty(&id, d),
            Ok(ClientRequest::ExtranonceSubscribe) => {
                self.extranonce_subscribed = true;
                self.reply_ok(&id, Value::Bool(true));
            }
            Ok(ClientRequest::Unknown(m)) => {
                self.reply_err(&id, ErrorCode::Other, format!("unknown method {m:?}"));
            }
        }
    }

    /// Take a slot on a channel (once), subscribing to its events before reading its link so
    /// no event can slip between the two.
    async fn ensure_slot(&mut self) -> bool {
        if self.slot.is_some() {
            return true;
        }
        let Ok((slot, assigned)) = self.ctx.assign_slot().await else {
            return false;
        };
        self.events = Some(BroadcastStream::new(slot.channel.events()));
        let link = slot.channel.link().unwrap_or(assigned);
        self.slot = Some(slot);
        self.use_link(link);
        true
    }

    fn use_link(&mut self, link: Arc<Link>) {
        let index = self.slot.as_ref().map(|s| s.index).unwrap_or(0);
        self.extranonce1 = link.layout.miner_extranonce1(&link.extranonce1, index);
        self.extranonce2_size = link.layout.miner_extranonce2_size();
        self.granted_mask = self.requested_mask.unwrap_or(0) & link.version_mask();
        self.link = Some(link);
        self.last_job_seq = 0;
    }

    async fn on_subscribe(&mut self, id: &Value) {
        if !self.ensure_slot().await {
            self.reply_err(
                id,
                ErrorCode::Other,
                "no upstream pool reachable yet; the proxy keeps trying, reconnect shortly",
            );
            return;
        }
        let slot = self.slot.as_ref().expect("ensured");
        let sub_id = format!("{:x}{:04x}", slot.channel.id, slot.index);
        self.reply_ok(
            id,
            json!([
                [["mining.set_difficulty", sub_id], ["mining.notify", sub_id]],
                self.extranonce1.to_hex(),
                self.extranonce2_size
            ]),
        );
        self.subscribed = true;
        self.start_work_if_ready();
    }

    fn on_authorize(&mut self, id: &Value, user: String) {
        if !self.workers.iter().any(|w| **w == *user) {
            if self.workers.len() >= MAX_WORKERS_PER_CONNECTION {
                self.reply_err(
                    id,
                    ErrorCode::Other,
                    format!("at most {MAX_WORKERS_PER_CONNECTION} workers per connection"),
                );
                return;
            }
            self.workers.push(Arc::from(user));
            self.me.set_workers(&self.workers);
        }
        if self
            .ctx
            .withholding
            .is_withheld(self.me.peer.ip(), &self.workers)
        {
            self.reply_err(
                id,
                ErrorCode::Unauthorized,
                "work withheld: the site is curtailing this miner and its firmware did not \
                 pause it; it gets work again when the curtailment ends",
            );
            self.close_at = Some(Box::pin(tokio::time::sleep(RECONNECT_GRACE)));
            return;
        }
        self.reply_ok(id, Value::Bool(true));
        self.start_work_if_ready();
    }

    async fn on_configure(&mut self, id: &Value, c: Configure) {
        let mut result = Map::new();
        for ext in &c.extensions {
            match ext.as_str() {
                "version-rolling" => {}
                "subscribe-extranonce" => {
                    self.extranonce_subscribed = true;
                    result.insert(ext.clone(), Value::Bool(true));
                }
                other => {
                    result.insert(other.to_string(), Value::Bool(false));
                }
            }
        }
        if let Some(asked) = c.version_rolling_mask {
            // The grant depends on the upstream, so the miner gets its slot now.
            let upstream = if self.ensure_slot().await {
                self.link.as_ref().map(|l| l.version_mask()).unwrap_or(0)
            } else {
                0
            };
            let granted = asked & upstream;
            if granted.count_ones() >= c.version_rolling_min_bit_count.max(1) {
                self.requested_mask = Some(asked);
                self.granted_mask = granted;
                result.insert("version-rolling".into(), Value::Bool(true));
                result.insert(
                    "version-rolling.mask".into(),
                    Value::from(format!("{granted:08x}")),
                );
            } else {
                result.insert("version-rolling".into(), Value::Bool(false));
            }
        }
        self.reply_ok(id, Value::Object(result));
    }

    fn ceiling(&self) -> Difficulty {
        self.link
            .as_ref()
            .map(|l| l.difficulty())
            .unwrap_or(Difficulty::new(f64::MAX).expect("positive"))
    }

    fn on_suggest_difficulty(&mut self, id: &Value, d: Difficulty) {
        self.suggested = Some(d);
        self.reply_ok(id, Value::Bool(true));
        if self.working {
            let next = self.ctx.vardiff.snap(d, self.ceiling());
            self.change_difficulty(next);
        }
    }

    fn start_work_if_ready(&mut self) {
        if self.working || !self.subscribed || self.workers.is_empty() {
            return;
        }
        self.working = true;
        let wish = self.suggested.unwrap_or(self.vardiff.current());
        let d = self.ctx.vardiff.snap(wish, self.ceiling());
        self.vardiff.reset_to(d, std::time::Instant::now());
        self.me.set_difficulty(d.as_f64());
        self.out().push_str(&line::set_difficulty(d));
        if let Some(job) = self.link.as_ref().and_then(|l| l.latest_job()) {
            self.last_job_seq = job.seq;
            self.out().push_str(&job.clean_notify_line);
        }
    }

    /// Set the miner's difficulty from outside vardiff (suggest_difficulty, upstream ceiling).
    fn change_difficulty(&mut self, next: Difficulty) {
        let current = self.vardiff.current();
        if next == current {
            return;
        }
        self.vardiff.reset_to(next, std::time::Instant::now());
        self.announce_difficulty(current, next);
    }

    /// Tell the miner its difficulty moved from `from` to `to` (already applied to vardiff).
    /// Shares for jobs it already has may still be hashed against `from`: they get a grace.
    fn announce_difficulty(&mut self, from: Difficulty, to: Difficulty) {
        let last_seq = self
            .link
            .as_ref()
            .and_then(|l| l.latest_job())
            .map(|j| j.seq)
            .unwrap_or(0);
        self.grace = Some((from.to_target(), last_seq));
        tracing::debug!(peer = %self.me.peer, %from, %to, "difficulty change");
        self.me.set_difficulty(to.as_f64());
        self.out().push_str(&line::set_difficulty(to));
    }

    fn on_tick(&mut self) {
        if self.working {
            let from = self.vardiff.current();
            let now = std::time::Instant::now();
            if let Some(to) = self.vardiff.on_tick(&self.ctx.vardiff, self.ceiling(), now) {
                self.announce_difficulty(from, to);
            }
        }
    }

    /// Returns false when the session should end.
    fn on_event(&mut self, event: Result<ChannelEvent, RecvError>) -> bool {
        match event {
            Ok(ChannelEvent::Job(job)) => {
                if self.working && job.seq > self.last_job_seq {
                    self.last_job_seq = job.seq;
                    let line = if std::mem::take(&mut self.needs_clean_job) {
                        &job.clean_notify_line
                    } else {
                        &job.notify_line
                    };
                    if self.out.is_empty() {
                        self.shared_line = Some(line.clone());
                    } else {
                        self.out().push_str(line);
                    }
                }
            }
            Ok(ChannelEvent::NewLink(link)) => self.move_to_link(link),
            Ok(ChannelEvent::LinkLost) => {}
            Ok(ChannelEvent::UpstreamDifficulty(d)) => {
                if self.working && self.vardiff.current().as_f64() > d.as_f64() {
                    let next = self.ctx.vardiff.snap(self.vardiff.current(), d);
                    self.change_difficulty(next);
                }
            }
            Ok(ChannelEvent::VersionMask(m)) => {
                if let Some(asked) = self.requested_mask {
                    let granted = asked & m;
                    if granted != self.granted_mask {
                        self.granted_mask = granted;
                        self.out().push_str(&line::set_version_mask(granted));
                    }
                }
            }
            Err(RecvError::Lagged(_)) => {
                // Missed events: resynchronise from the channel's current state.
                let current = self.slot.as_ref().and_then(|s| s.channel.link());
                match current {
                    Some(link) if self.link.as_ref().map(|l| l.epoch) != Some(link.epoch) => {
                        self.move_to_link(link)
                    }
                    Some(link) if self.working => {
                        if let Some(job) = link.latest_job() {
                            self.last_job_seq = job.seq;
                            self.out().push_str(&job.clean_notify_line);
                        }
                    }
                    _ => {}
                }
            }
            Err(RecvError::Closed) => return false,
        }
        true
    }

    /// The channel has a new upstream connection: give the miner its new extranonce without
    /// dropping TCP if it subscribed to extranonce changes, otherwise ask it to reconnect.
    fn move_to_link(&mut self, link: Arc<Link>) {
        let Some(slot) = &self.slot else { return };
        if self.link.as_ref().map(|l| l.epoch) == Some(link.epoch) {
            return;
        }
        let fits = slot.index < slot.channel.capacity(&link.layout);
        let old_mask = self.granted_mask;
        if !self.subscribed {
            if fits {
                self.use_link(link);
            } else {
                self.ask_to_reconnect();
            }
            return;
        }
        if !fits || !self.extranonce_subscribed {
            self.ask_to_reconnect();
            return;
        }
        self.use_link(link);
        let set_extranonce = line::set_extranonce(&self.extranonce1, self.extranonce2_size);
        self.out().push_str(&set_extranonce);
        if self.requested_mask.is_some() && self.granted_mask != old_mask {
            let set_mask = line::set_version_mask(self.granted_mask);
            self.out().push_str(&set_mask);
        }
        if self.working {
            let next = self
                .ctx
                .vardiff
                .snap(self.vardiff.current(), self.ceiling());
            // The old link's jobs are gone, so no grace: every old share is stale anyway.
            self.grace = None;
            self.vardiff.reset_to(next, std::time::Instant::now());
            self.me.set_difficulty(next.as_f64());
            self.out().push_str(&line::set_difficulty(next));
            match self.link.as_ref().and_then(|l| l.latest_job()) {
                Some(job) => {
                    self.last_job_seq = job.seq;
                    self.out().push_str(&job.clean_notify_line);
                }
                None => self.needs_clean_job = true,
            }
        }
    }

    fn ask_to_reconnect(&mut self) {
        self.out().push_str(&line::reconnect());
        self.close_at = Some(Box::pin(tokio::time::sleep(RECONNECT_GRACE)));
        self.working = false;
    }

    fn ledger_worker(&self, named: Option<&str>) -> Arc<str> {
        if let Some(w) = named.and_then(|n| self.workers.iter().find(|w| ***w == *n)) {
            return w.clone();
        }
        self.workers
            .first()
            .cloned()
            .unwrap_or_else(|| Arc::from("(unauthorized)"))
    }

    fn reject(&mut self, id: &Value, worker: Option<&str>, why: ShareRejection) {
        let stats = &self.ctx.stats;
        bump(&stats.shares_rejected);
        self.me
            .on_rejected(matches!(why, ShareRejection::Stale { .. }));
        match why {
            ShareRejection::Stale { .. } => bump(&stats.shares_stale),
            ShareRejection::Duplicate => bump(&stats.shares_duplicate),
            ShareRejection::LowDifficulty { .. } => bump(&stats.shares_low_difficulty),
            _ => {}
        }
        let w = self.ledger_worker(worker);
        self.ctx.ledger.record_rejected(&w, &why);
        tracing::debug!(peer = %self.me.peer, worker = %w, reason = why.reason(), "share rejected: {why}");
        self.out()
            .push_str(&line::error(id, &why.to_stratum_error()));
    }

    fn on_submit(&mut self, id: &Value, submit: Submit) {
        match self.check(&submit) {
            Err(why) => self.reject(id, Some(&submit.worker), why),
            Ok(accepted) => self.accept(id, submit, accepted),
        }
    }

    fn check(&self, submit: &Submit) -> Result<Accepted, ShareRejection> {
        let (Some(link), true) = (&self.link, self.subscribed) else {
            return Err(ShareRejection::NotSubscribed);
        };
        if !self.workers.iter().any(|w| **w == *submit.worker) {
            return Err(ShareRejection::Unauthorized {
                worker: submit.worker.clone(),
            });
        }
        let stale = || ShareRejection::Stale {
            job_id: submit.job_id.clone(),
        };
        let current_epoch = self
            .slot
            .as_ref()
            .and_then(|s| s.channel.link())
            .map(|l| l.epoch);
        if current_epoch != Some(link.epoch) {
            return Err(stale());
        }
        let job = link.job(&submit.job_id).ok_or_else(stale)?;
        let current = self.vardiff.current().to_target();
        let target = match self.grace {
            Some((old, until)) if job.seq <= until => old.max(current),
            _ => current,
        };
        let rules = ShareRules {
            version_mask: self.granted_mask,
            ntime_min: job.job.ntime,
            ntime_max: job
                .job
                .ntime
                .saturating_add(secs_since(job.received_at))
                .saturating_add(self.ctx.config.proxy.ntime_max_ahead_secs),
            extranonce2_size: self.extranonce2_size,
        };
        let share = check_share(
            &job.job,
            self.extranonce1.as_bytes(),
            submit,
            &rules,
            &target,
        )?;
        if !job.first_submission(share.hash.fingerprint()) {
            return Err(ShareRejection::Duplicate);
        }
        Ok(Accepted {
            forward: job.upstream_target.is_met_by(&share.hash),
            credited: target.to_difficulty(),
            epoch: link.epoch,
        })
    }

    fn accept(&mut self, id: &Value, mut submit: Submit, a: Accepted) {
        line::push_ok_true(self.out(), id);
        let stats = &self.ctx.stats;
        bump(&stats.shares_accepted);
        self.me.on_accepted(a.credited.as_f64());
        let worker = self.ledger_worker(Some(&submit.worker));
        if a.forward {
            bump(&stats.shares_forwarded);
            let slot = self.slot.as_ref().expect("checked: subscribed");
            let layout = self.link.as_ref().expect("checked: linked").layout;
            submit.extranonce2 =
                layout.upstream_extranonce2(slot.index, submit.extranonce2.as_bytes());
            slot.channel.forward(Forward {
                epoch: a.epoch,
                submit,
                worker: worker.clone(),
            });
        }
        self.ctx
            .ledger
            .record_accepted(&worker, a.credited.as_f64(), a.forward);
        let from = self.vardiff.current();
        let now = std::time::Instant::now();
        if let Some(to) = self
            .vardiff
            .on_share(&self.ctx.vardiff, self.ceiling(), now)
        {
            self.announce_difficulty(from, to);
        }
    }
}

/// How a read of the miner's socket ended.
enum LinesRead {
    /// Every complete line was handled.
    Handled,
    /// The miner closed the connection (or it failed).
    Closed,
    /// A limit was hit: the error line is in `out`, the connection is to be closed.
    Cut(LimitReason),
}

struct Accepted {
    forward: bool,
    credited: Difficulty,
    epoch: u64,
}
