//! One Stratum V1 connection to the pool (a site proxy or a plain miner).
//!
//! The same message types, share validation and vardiff as the site proxy (all from
//! `blgv-stratum`); here each connection gets its own extranonce1, jobs come from the template
//! feed, and a share that meets the network target becomes a block.

use crate::context::{FoundBlock, PoolContext};
use crate::job::PoolJob;
use crate::ledger::{LedgerEvent, ShareRecord};
use crate::payout::account_of_worker;
use crate::stats::bump;
use bitcoin::ScriptBuf;
use blgv_stratum::limits::{ConnectionPermit, LimitReason, TokenBucket};
use blgv_stratum::{
    check_share, line, ClientRequest, CodecError, Configure, Difficulty, ErrorCode, Frame,
    LineCodec, ShareRejection, ShareRules, StratumError, Submit, Target, Vardiff,
};
use futures::StreamExt;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

const MAX_WORKERS_PER_CONNECTION: usize = 64;
/// SOLO jobs a connection keeps for validation (the feed keeps the pool's).
const SOLO_JOBS_KEPT: usize = 32;

/// A connection mining SOLO: every job pays this account's address in the coinbase.
struct SoloPayee {
    account: String,
    script: ScriptBuf,
}

pub async fn run_session(
    ctx: Arc<PoolContext>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: ConnectionPermit,
) {
    // The slot under pool.max_connections(_per_ip), given back when the session ends.
    let _permit = permit;
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut lines =
        FramedRead::with_capacity(read, LineCodec::new(ctx.config.pool.max_line_length), 512);
    bump(&ctx.stats.connections_total);
    ctx.stats.connections.fetch_add(1, Relaxed);
    let mut s = Session::new(ctx.clone(), peer, write);
    let mut jobs = ctx.feed.subscribe();
    let mut released = ctx.ledger_released.clone();
    let mut tick = tokio::time::interval(ctx.vardiff.retarget_interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limits = &ctx.config.pool;
    let (rate, burst) = (limits.max_messages_per_sec, limits.message_burst);
    let mut bucket = TokenBucket::new(burst, Instant::now());
    let partial_line_timeout = Duration::from_millis(limits.partial_line_timeout_ms);
    // One timer: the handshake deadline, then a check every partial_line_timeout.
    let watchdog = tokio::time::sleep(Duration::from_millis(limits.handshake_timeout_ms));
    tokio::pin!(watchdog);
    let mut handshake_done = false;
    let mut was_partial = false;
    let mut lines_seen: u64 = 0;
    let mut checkpoint: u64 = 0;
    let mut cut: Option<LimitReason> = None;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            line = lines.next() => match line {
                None | Some(Err(CodecError::Io(_))) => break,
                Some(Ok(bytes)) => {
                    lines_seen += 1;
                    if !bucket.take(rate, burst) {
                        s.out.push_str(&line::error(&Value::Null, &StratumError::new(ErrorCode::Other, format!("more than {rate} messages per second (pool.max_messages_per_sec); closing the connection"))));
                        let _ = s.flush().await;
                        cut = Some(LimitReason::RateLimit);
                        break;
                    }
                    s.on_line(&bytes)
                }
                Some(Err(CodecError::LineTooLong { max })) => {
                    s.out.push_str(&line::error(&Value::Null, &StratumError::new(ErrorCode::Other, format!("line longer than {max} bytes without a newline; closing the connection"))));
                    let _ = s.flush().await;
                    cut = Some(LimitReason::LineTooLong);
                    break;
                }
            },
            _ = &mut watchdog => {
                if !handshake_done {
                    cut = Some(LimitReason::HandshakeTimeout);
                    break;
                }
                // A partial line at two checks in a row with no complete line between them:
                // stalled for one to two timeouts.
                let partial = !lines.read_buffer().is_empty();
                if partial && was_partial && lines_seen == checkpoint {
                    cut = Some(LimitReason::PartialLineTimeout);
                    break;
                }
                was_partial = partial;
                checkpoint = lines_seen;
                watchdog.as_mut().reset(tokio::time::Instant::now() + partial_line_timeout);
            }
            changed = jobs.changed() => {
                if changed.is_err() { break; }
                let job = jobs.borrow_and_update().clone();
                if let Some(job) = job { s.send_job(&job); }
            }
            _ = tick.tick() => s.on_tick(),
            // Shares are answered once the ledger holds them.
            r = released.changed(), if !s.held_answers.is_empty() => {
                if r.is_err() { break; } // the writer is gone: the pool is stopping
            }
        }
        s.answer_recorded(*released.borrow_and_update());
        if s.flush().await.is_err() {
            cut = s.cut;
            break;
        }
        if !handshake_done && s.working {
            // From now on the timer checks for stalled partial lines.
            handshake_done = true;
            checkpoint = lines_seen;
            watchdog
                .as_mut()
                .reset(tokio::time::Instant::now() + partial_line_timeout);
        }
    }
    if let Some(reason) = cut {
        ctx.stats.limits.hit(reason, peer, "pool");
    }
    ctx.stats.connections.fetch_sub(1, Relaxed);
}

struct Session {
    ctx: Arc<PoolContext>,
    peer: SocketAddr,
    writer: OwnedWriteHalf,
    out: String,
    extranonce1: Vec<u8>,
    subscribed: bool,
    requested_mask: Option<u32>,
    granted_mask: u32,
    workers: Vec<Arc<str>>,
    working: bool,
    vardiff: Vardiff,
    suggested: Option<Difficulty>,
    /// After a difficulty change: jobs created before `.1` may meet the old target `.0`.
    grace: Option<(Target, Instant)>,
    last_prevhash: Option<[u8; 32]>,
    /// The job last sent: the feed may announce a job this session already sent at authorize.
    last_job_id: Option<String>,
    /// Set when the connection's workers mine SOLO (decided by its first worker).
    solo: Option<SoloPayee>,
    /// This connection's own SOLO jobs, oldest first.
    solo_jobs: VecDeque<Arc<PoolJob>>,
    /// Accepted shares not answered yet: (ledger ticket, request id), in ticket order.
    held_answers: VecDeque<(u64, Value)>,
    /// Set when a write failed because of a limit (send queue, write stall).
    cut: Option<LimitReason>,
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Session {
    fn new(ctx: Arc<PoolContext>, peer: SocketAddr, writer: OwnedWriteHalf) -> Session {
        let extranonce1 = ctx.next_extranonce1();
        Session {
            vardiff: Vardiff::new(
                Difficulty::new(ctx.config.vardiff.initial).expect("validated"),
                Instant::now(),
            ),
            ctx,
            peer,
            writer,
            out: String::new(),
            extranonce1,
            subscribed: false,
            requested_mask: None,
            granted_mask: 0,
            workers: Vec::new(),
            working: false,
            suggested: None,
            grace: None,
            last_prevhash: None,
            last_job_id: None,
            solo: None,
            solo_jobs: VecDeque::new(),
            held_answers: VecDeque::new(),
            cut: None,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.write_out().await;
        self.out.clear();
        r
    }

    /// Write `out`: what the socket takes now, then, for a client that is behind, wait for room
    /// while the pending bytes stay under pool.max_send_queue_bytes and each write makes
    /// progress within pool.write_stall_timeout_ms.
    async fn write_out(&mut self) -> std::io::Result<()> {
        let limits = &self.ctx.config.pool;
        let mut rest = self.out.as_bytes();
        while !rest.is_empty() {
            match self.writer.try_write(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if rest.is_empty() {
            return Ok(());
        }
        if rest.len() > limits.max_send_queue_bytes {
            self.cut = Some(LimitReason::SendQueue);
            return Err(std::io::Error::other("send queue over its cap"));
        }
        let stall = Duration::from_millis(limits.write_stall_timeout_ms);
        while !rest.is_empty() {
            match tokio::time::timeout(stall, self.writer.write(rest)).await {
                Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => rest = &rest[n..],
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.cut = Some(LimitReason::WriteStall);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "client stopped reading",
                    ));
                }
            }
        }
        Ok(())
    }

    fn reply_err(&mut self, id: &Value, code: ErrorCode, message: impl Into<String>) {
        self.out
            .push_str(&line::error(id, &StratumError::new(code, message)));
    }

    fn on_line(&mut self, bytes: &[u8]) {
        let (id, method, params) = match Frame::parse(bytes) {
            Ok(Frame::Request { id, method, params }) => (id, method, params),
            Ok(Frame::Response { .. }) => return,
            Err(e) => {
                return self.reply_err(
                    &Value::Null,
                    ErrorCode::Other,
                    format!("{e}; send one JSON-RPC object per line"),
                )
            }
        };
        match ClientRequest::parse(&method, &params) {
            Err(e) if method == "mining.submit" => {
                self.reject(&id, None, ShareRejection::Malformed(e.to_string()))
            }
            Err(e) => self.reply_err(&id, ErrorCode::Other, format!("{method}: {e}")),
            Ok(ClientRequest::Subscribe(_)) => {
                let sub_id = hex::encode(&self.extranonce1);
                self.out.push_str(&line::ok(
                    &id,
                    json!([
                        [["mining.set_difficulty", sub_id], ["mining.notify", sub_id]],
                        hex::encode(&self.extranonce1),
                        self.ctx.config.pool.extranonce2_size
                    ]),
                ));
                self.subscribed = true;
                self.start_work_if_ready();
            }
            Ok(ClientRequest::Authorize(a)) => {
                if !self.workers.iter().any(|w| **w == *a.user) {
                    if let Err(why) = self.payee_for(&a.user) {
                        return self.reply_err(&id, ErrorCode::Other, why);
                    }
                    if self.workers.len() >= MAX_WORKERS_PER_CONNECTION {
                        return self.reply_err(
                            &id,
                            ErrorCode::Other,
                            format!("at most {MAX_WORKERS_PER_CONNECTION} workers per connection"),
                        );
                    }
                    self.workers.push(Arc::from(a.user));
                }
                self.out.push_str(&line::ok(&id, Value::Bool(true)));
                self.start_work_if_ready();
            }
            Ok(ClientRequest::Configure(c)) => self.on_configure(&id, c),
            Ok(ClientRequest::SuggestDifficulty(d)) => {
                self.suggested = Some(d);
                self.out.push_str(&line::ok(&id, Value::Bool(true)));
                if self.working {
                    let next = self
                        .ctx
                        .vardiff
                        .snap(d, Difficulty::new(f64::MAX).expect("positive"));
                    self.change_difficulty(next);
                }
            }
            Ok(ClientRequest::ExtranonceSubscribe) => {
                self.out.push_str(&line::ok(&id, Value::Bool(true)))
            }
            Ok(ClientRequest::Submit(s)) => self.on_submit(&id, s),
            Ok(ClientRequest::Unknown(m)) => {
                self.reply_err(&id, ErrorCode::Other, format!("unknown method {m:?}"))
            }
        }
    }

    /// Check that `worker` may join this connection: SOLO work pays one account in the
    /// coinbase, so a connection mines either for the pool or SOLO for one account.
    fn payee_for(&mut self, worker: &str) -> Result<(), String> {
        let account = account_of_worker(worker);
        let payee = self.ctx.solo_payee(account)?;
        match (&self.solo, payee, self.workers.is_empty()) {
            (None, Some(script), true) => {
                self.solo = Some(SoloPayee {
                    account: account.to_string(),
                    script,
                });
                Ok(())
            }
            (None, None, _) => Ok(()),
            (Some(p), Some(_), _) if p.account == account => Ok(()),
            (Some(p), _, _) => Err(format!(
                "this connection mines SOLO for account {:?}; fix: connect worker {worker:?} on its own connection",
                p.account
            )),
            (None, Some(_), false) => Err(format!(
                "account {account:?} mines SOLO, but this connection already mines for the pool; fix: connect worker {worker:?} on its own connection"
            )),
        }
    }

    fn on_configure(&mut self, id: &Value, c: Configure) {
        let mut result = Map::new();
        for ext in c.extensions.iter().filter(|e| *e != "version-rolling") {
            result.insert(ext.clone(), Value::Bool(false));
        }
        if let Some(asked) = c.version_rolling_mask {
            let granted = asked & self.ctx.config.version_mask();
            let ok = granted.count_ones() >= c.version_rolling_min_bit_count.max(1);
            result.insert("version-rolling".into(), Value::Bool(ok));
            if ok {
                self.requested_mask = Some(asked);
                self.granted_mask = granted;
                result.insert(
                    "version-rolling.mask".into(),
                    Value::from(format!("{granted:08x}")),
                );
            }
        }
        self.out.push_str(&line::ok(id, Value::Object(result)));
    }

    fn start_work_if_ready(&mut self) {
        if self.working || !self.subscribed || self.workers.is_empty() {
            return;
        }
        self.working = true;
        let wish = self.suggested.unwrap_or(self.vardiff.current());
        let d = self
            .ctx
            .vardiff
            .snap(wish, Difficulty::new(f64::MAX).expect("positive"));
        self.vardiff.reset_to(d, Instant::now());
        self.out.push_str(&line::set_difficulty(d));
        if let Some(job) = self.ctx.feed.latest() {
            self.send_job(&job);
        }
    }

    fn send_job(&mut self, job: &Arc<PoolJob>) {
        if !self.working || self.last_job_id.as_deref() == Some(job.job.job_id.as_str()) {
            return;
        }
        let job = match &self.solo {
            None => job.clone(),
            Some(payee) => {
                let policy = self.ctx.feed.policy();
                let outputs = self.ctx.solo_outputs(
                    &payee.script,
                    job.template.coinbase_value,
                    &policy.payout_script,
                );
                let solo = Arc::new(job.paying(policy, &outputs));
                if self.solo_jobs.len() == SOLO_JOBS_KEPT {
                    self.solo_jobs.pop_front();
                }
                self.solo_jobs.push_back(solo.clone());
                solo
            }
        };
        self.last_job_id = Some(job.job.job_id.clone());
        // A job on a new previous block must be clean even if the miner missed the clean one.
        let new_block = self.last_prevhash != Some(job.template.prevhash);
        self.last_prevhash = Some(job.template.prevhash);
        if new_block && !job.job.clean_jobs {
            let mut j = job.job.clone();
            j.clean_jobs = true;
            self.out.push_str(&line::notify(&j));
        } else {
            self.out.push_str(&job.notify_line);
        }
    }

    fn change_difficulty(&mut self, next: Difficulty) {
        let current = self.vardiff.current();
        if next != current {
            self.vardiff.reset_to(next, Instant::now());
            self.announce_difficulty(current, next);
        }
    }

    fn announce_difficulty(&mut self, from: Difficulty, to: Difficulty) {
        self.grace = Some((from.to_target(), Instant::now()));
        self.out.push_str(&line::set_difficulty(to));
    }

    fn on_tick(&mut self) {
        if self.working {
            let from = self.vardiff.current();
            if let Some(to) = self.vardiff.on_tick(
                &self.ctx.vardiff,
                Difficulty::new(f64::MAX).expect("positive"),
                Instant::now(),
            ) {
                self.announce_difficulty(from, to);
            }
        }
    }

    /// Answer `true` to every held share whose ledger ticket is released: only a share the
    /// ledger holds is acknowledged, so a crash cannot take an accepted share with it.
    fn answer_recorded(&mut self, released: u64) {
        while let Some((ticket, _)) = self.held_answers.front() {
            if *ticket > released {
                break;
            }
            if let Some((_, id)) = self.held_answers.pop_front() {
                line::push_ok_true(&mut self.out, &id);
            }
        }
    }

    fn reject(&mut self, id: &Value, worker: Option<&str>, why: ShareRejection) {
        bump(&self.ctx.stats.shares_rejected);
        self.ctx.stats.count_rejection(why.reason());
        tracing::debug!(peer = %self.peer, ?worker, reason = why.reason(), "share rejected: {why}");
        self.out.push_str(&line::error(id, &why.to_stratum_error()));
    }

    fn check(
        &self,
        submit: &Submit,
    ) -> Result<(Arc<PoolJob>, blgv_stratum::CheckedShare, Difficulty), ShareRejection> {
        if !self.subscribed {
            return Err(ShareRejection::NotSubscribed);
        }
        if !self.workers.iter().any(|w| **w == *submit.worker) {
            return Err(ShareRejection::Unauthorized {
                worker: submit.worker.clone(),
            });
        }
        let stale = || ShareRejection::Stale {
            job_id: submit.job_id.clone(),
        };
        // The feed decides what is stale; a SOLO connection validates against its own coinbase.
        let job = self.ctx.feed.get(&submit.job_id).ok_or_else(stale)?;
        let job = match &self.solo {
            None => job,
            Some(_) => self
                .solo_jobs
                .iter()
                .rev()
                .find(|j| j.job.job_id == submit.job_id)
                .cloned()
                .ok_or_else(stale)?,
        };
        let current = self.vardiff.current().to_target();
        let target = match self.grace {
            Some((old, changed_at)) if job.created_at <= changed_at => old.max(current),
            _ => current,
        };
        let age = job.created_at.elapsed().as_secs().min(u32::MAX as u64) as u32;
        let rules = ShareRules {
            version_mask: self.granted_mask,
            ntime_min: job.job.ntime,
            ntime_max: job
                .job
                .ntime
                .saturating_add(age)
                .saturating_add(self.ctx.config.pool.ntime_max_ahead_secs),
            extranonce2_size: self.ctx.config.pool.extranonce2_size,
        };
        let share = check_share(&job.job, &self.extranonce1, submit, &rules, &target)?;
        if !job.seen.first_submission(share.hash.fingerprint()) {
            return Err(ShareRejection::Duplicate);
        }
        Ok((job, share, target.to_difficulty()))
    }

    fn on_submit(&mut self, id: &Value, submit: Submit) {
        let (job, share, credited) = match self.check(&submit) {
            Ok(ok) => ok,
            Err(why) => return self.reject(id, Some(&submit.worker), why),
        };
        bump(&self.ctx.stats.shares_accepted);
        self.ctx.stats.add_difficulty(credited.as_f64());
        let worker = self
            .workers
            .iter()
            .find(|w| ***w == *submit.worker)
            .cloned()
            .expect("checked: authorized");
        let record = ShareRecord {
            time_ms: unix_ms(),
            worker: worker.clone(),
            difficulty: credited.as_f64(),
            network_difficulty: job.network_target.to_difficulty().as_f64(),
            height: job.template.height,
            job_id: job.job.job_id.clone(),
        };
        if job.network_target.is_met_by(&share.hash) {
            let root = job.job.merkle_root(share.coinbase_txid);
            let header = job
                .job
                .header(&root, share.version, submit.ntime, submit.nonce);
            let block = job.block(&header, &self.extranonce1, submit.extranonce2.as_bytes());
            let hash = share.hash.to_string();
            tracing::info!(%hash, height = job.template.height, %worker, "BLOCK FOUND; submitting");
            bump(&self.ctx.stats.blocks_found);
            self.ctx.live.publish(&json!({
                "type": "block_found",
                "hash": hash,
                "height": job.template.height,
                "worker": worker.as_ref(),
                "account": account_of_worker(&worker),
                "reward_sats": job.template.coinbase_value,
                "solo": self.solo.is_some(),
                "time_ms": record.time_ms,
            }));
            let ticket = self.ctx.record(LedgerEvent::Block {
                share: record,
                hash: hash.clone(),
                reward_sats: job.template.coinbase_value,
            });
            self.held_answers.push_back((ticket, id.clone()));
            self.ctx.submit_block(FoundBlock {
                hash,
                height: job.template.height,
                hex: hex::encode(block),
            });
        } else {
            let ticket = self.ctx.record(LedgerEvent::Share(record));
            self.held_answers.push_back((ticket, id.clone()));
        }
        let from = self.vardiff.current();
        if let Some(to) = self.vardiff.on_share(
            &self.ctx.vardiff,
            Difficulty::new(f64::MAX).expect("positive"),
            Instant::now(),
        ) {
            self.announce_difficulty(from, to);
        }
    }
}
