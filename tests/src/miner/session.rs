//! One TCP connection of a simulated miner: handshake, message handling and the throttled
//! search, all in one task.
//!
//! The task selects between the next line from the server and the next hashing chunk, so
//! messages are handled between chunks (a `clean_jobs` notify therefore takes effect before the
//! next nonce is hashed, exactly like "switch at once"). Hashing runs in small chunks followed
//! by a yield and a sleep, which honours the configured hash rate and lets hundreds of miners
//! share two cores with the proxy under test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use super::work::{MinerJob, Work};
use super::{Core, SubscribeStyle};
use crate::jsonrpc::{self, Incoming};
use crate::line_reader::{Line, LineReader};
use crate::pool::Job;
use crate::share_math::difficulty_to_target;

/// Why a session ended.
pub(super) enum End {
    /// The connection dropped or the server broke the protocol: reconnect after a backoff.
    Lost,
    /// `client.reconnect`: reconnect (to `addr` if given) after `wait`.
    Reconnect {
        addr: Option<SocketAddr>,
        wait: Duration,
    },
}

/// Requests awaiting an answer.
enum Pending {
    Configure,
    Subscribe,
    Authorize,
    Other,
    Submit,
}

struct Session<'a> {
    core: &'a mut Core,
    writer: OwnedWriteHalf,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    extranonce1: Option<Vec<u8>>,
    extranonce2_size: usize,
    version_mask: u32,
    target_le: [u8; 32],
    pending_job: Option<MinerJob>,
    current_job: Option<MinerJob>,
    work: Option<Work>,
}

/// Runs one session to its end.
pub(super) async fn run(core: &mut Core, stream: TcpStream) -> End {
    let _ = stream.set_nodelay(true);
    let (rd, writer) = stream.into_split();
    let mut s = Session {
        core,
        writer,
        next_id: 1,
        pending: HashMap::new(),
        extranonce1: None,
        extranonce2_size: 0,
        version_mask: 0,
        // Stratum's default difficulty until the server says otherwise.
        target_le: difficulty_to_target(1.0).to_le_bytes(),
        pending_job: None,
        current_job: None,
        work: None,
    };
    s.core.update(|st| st.difficulty = 1.0);
    let end = s.drive(LineReader::new(rd)).await;
    let unanswered = s
        .pending
        .values()
        .filter(|p| matches!(p, Pending::Submit))
        .count() as u64;
    s.core
        .update(|st| st.unanswered_at_disconnect += unanswered);
    end
}

impl Session<'_> {
    async fn drive(&mut self, mut lines: LineReader<tokio::net::tcp::OwnedReadHalf>) -> End {
        if self.handshake().await.is_err() {
            return End::Lost;
        }
        let mut next_chunk = tokio::time::Instant::now();
        loop {
            let can_hash = self.can_hash();
            tokio::select! {
                biased;
                line = lines.next_line() => match line {
                    Ok(Some(Line::Text(text))) => match self.on_line(&text).await {
                        Ok(None) => {}
                        Ok(Some(end)) => return end,
                        Err(_) => return End::Lost,
                    },
                    Ok(Some(Line::TooLong)) => tracing::debug!("miner: skipped an over-long line"),
                    Ok(None) | Err(_) => return End::Lost,
                },
                // Powered off: look again shortly (the switch has no way to wake us).
                _ = tokio::time::sleep(Duration::from_millis(20)), if !can_hash && self.core.cfg.power.is_some() => {}
                _ = tokio::time::sleep_until(next_chunk), if can_hash => {
                    let hashed = match self.hash_chunk().await {
                        Ok(n) => n,
                        Err(_) => return End::Lost,
                    };
                    // Pace to the configured rate; after falling behind (CPU starved), start
                    // afresh instead of bursting to catch up.
                    let rate = self.core.cfg.hashrate.max(1) as f64;
                    next_chunk += Duration::from_secs_f64(f64::from(hashed) / rate);
                    let now = tokio::time::Instant::now();
                    if next_chunk + Duration::from_millis(100) < now {
                        next_chunk = now;
                    }
                    tokio::task::yield_now().await;
                }
            }
            if !can_hash {
                // Hashing was idle; don't let the pacing clock lag behind.
                next_chunk = next_chunk.max(tokio::time::Instant::now());
            }
        }
    }

    async fn send(&mut self, method: &str, params: Value, kind: Pending) -> std::io::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, kind);
        self.writer
            .write_all(jsonrpc::request(id, method, params).as_bytes())
            .await
    }

    /// configure (if version rolling), subscribe and authorize in the configured order, then
    /// extranonce.subscribe and suggest_difficulty if configured. Pipelined, like most
    /// firmware: answers are matched by id whenever they come.
    async fn handshake(&mut self) -> std::io::Result<()> {
        let cfg = self.core.cfg.clone();
        if cfg.version_rolling {
            let params = json!([
                ["version-rolling"],
                {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}
            ]);
            self.send("mining.configure", params, Pending::Configure)
                .await?;
        }
        let agent = cfg.user_agent.clone();
        let subscribe = match cfg.subscribe_style {
            SubscribeStyle::Empty => json!([]),
            SubscribeStyle::Agent => json!([agent]),
            SubscribeStyle::AgentNull => json!([agent, null]),
            SubscribeStyle::AgentSession => {
                let session = self
                    .core
                    .last_session_id
                    .clone()
                    .unwrap_or_else(|| "00000000".into());
                json!([agent, session])
            }
        };
        let authorize = json!([cfg.worker, cfg.password]);
        if cfg.authorize_before_subscribe {
            self.send("mining.authorize", authorize, Pending::Authorize)
                .await?;
            self.send("mining.subscribe", subscribe, Pending::Subscribe)
                .await?;
        } else {
            self.send("mining.subscribe", subscribe, Pending::Subscribe)
                .await?;
            self.send("mining.authorize", authorize, Pending::Authorize)
                .await?;
        }
        if cfg.extranonce_subscribe {
            self.send("mining.extranonce.subscribe", json!([]), Pending::Other)
                .await?;
        }
        if let Some(d) = cfg.suggest_difficulty {
            self.send("mining.suggest_difficulty", json!([d]), Pending::Other)
                .await?;
        }
        Ok(())
    }

    fn can_hash(&self) -> bool {
        let cfg = &self.core.cfg;
        cfg.hashrate > 0
            && cfg.power.as_ref().is_none_or(|p| p.is_on())
            && self.core.share_budget_left()
            && (self.work.is_some() || self.buildable(self.pending_job.as_ref()))
    }

    fn buildable(&self, job: Option<&MinerJob>) -> bool {
        job.is_some_and(|j| j.extranonce.is_some() || self.extranonce1.is_some())
    }

    /// Handles one line; `Ok(Some(end))` ends the session.
    async fn on_line(&mut self, text: &str) -> std::io::Result<Option<End>> {
        match jsonrpc::parse_line(text) {
            Incoming::Invalid(why) => tracing::debug!(%why, "miner: ignoring bad line"),
            Incoming::Response { id, result, error } => {
                let kind = id.as_u64().and_then(|id| self.pending.remove(&id));
                match kind {
                    Some(kind) => {
                        if let Some(end) = self.on_response(kind, result, error) {
                            return Ok(Some(end));
                        }
                    }
                    None => tracing::debug!(%id, "miner: response to nothing"),
                }
            }
            Incoming::Request { id, method, params } => {
                return self.on_request(id, &method, &params).await;
            }
        }
        Ok(None)
    }

    fn on_response(&mut self, kind: Pending, result: Value, error: Value) -> Option<End> {
        match kind {
            Pending::Configure => {
                let granted = result.get("version-rolling").and_then(Value::as_bool) == Some(true);
                self.version_mask = if granted {
                    result
                        .get("version-rolling.mask")
                        .and_then(Value::as_str)
                        .and_then(|m| u32::from_str_radix(m, 16).ok())
                        .unwrap_or(0)
                } else {
                    0
                };
                let mask = self.version_mask;
                self.core.update(|st| st.granted_version_mask = mask);
            }
            Pending::Subscribe => {
                let en1 = result
                    .get(1)
                    .and_then(Value::as_str)
                    .and_then(|h| hex::decode(h).ok());
                let en2_size = result.get(2).and_then(Value::as_u64);
                let (Some(en1), Some(en2_size)) = (en1, en2_size) else {
                    tracing::debug!(%result, %error, "miner: subscribe failed");
                    return Some(End::Lost);
                };
                // Remember the mining.notify subscription id to offer it next time.
                if let Some(subs) = result.get(0).and_then(Value::as_array) {
                    for sub in subs {
                        if sub.get(0).and_then(Value::as_str) == Some("mining.notify") {
                            self.core.last_session_id =
                                sub.get(1).and_then(Value::as_str).map(str::to_string);
                        }
                    }
                }
                let en1_hex = hex::encode(&en1);
                self.extranonce1 = Some(en1);
                self.extranonce2_size = en2_size as usize;
                self.core.update(|st| {
                    st.extranonce1 = en1_hex;
                    st.extranonce2_size = en2_size as usize;
                });
            }
            Pending::Authorize => {
                let ok = result == Value::Bool(true);
                self.core.update(|st| st.authorized = ok);
            }
            Pending::Other => {}
            Pending::Submit => {
                if result == Value::Bool(true) && error.is_null() {
                    self.core.update(|st| st.accepted += 1);
                } else {
                    let code = jsonrpc::error_code(&error).unwrap_or(-1);
                    tracing::debug!(%error, "miner: share rejected");
                    self.core
                        .update(|st| *st.rejected.entry(code).or_default() += 1);
                }
            }
        }
        None
    }

    async fn on_request(
        &mut self,
        id: Value,
        method: &str,
        params: &Value,
    ) -> std::io::Result<Option<End>> {
        match method {
            "mining.set_difficulty" => match params.get(0).and_then(Value::as_f64) {
                Some(d) if d > 0.0 => {
                    self.target_le = difficulty_to_target(d).to_le_bytes();
                    self.core.update(|st| st.difficulty = d);
                }
                _ => tracing::debug!(%params, "miner: bad set_difficulty"),
            },
            "mining.notify" => match Job::from_notify_params(params) {
                Ok((job, clean)) => {
                    let extranonce = self
                        .extranonce1
                        .clone()
                        .map(|en1| (en1, self.extranonce2_size));
                    let job_id = job.id.clone();
                    self.core.update(|st| {
                        st.notifies_received += 1;
                        st.last_notify_at = Some(Instant::now());
                        st.last_job_id = Some(job_id);
                    });
                    if clean {
                        self.work = None; // abandon the old job now
                    }
                    self.pending_job = Some(MinerJob {
                        job,
                        clean,
                        extranonce,
                    });
                }
                Err(why) => tracing::debug!(%why, "miner: bad notify"),
            },
            "mining.set_extranonce" => {
                let en1 = params
                    .get(0)
                    .and_then(Value::as_str)
                    .and_then(|h| hex::decode(h).ok());
                let size = params.get(1).and_then(Value::as_u64);
                if let (Some(en1), Some(size)) = (en1, size) {
                    // Used from the next notify on, like cgminer: the job in hand keeps the
                    // extranonce it was built with.
                    let en1_hex = hex::encode(&en1);
                    self.extranonce1 = Some(en1);
                    self.extranonce2_size = size as usize;
                    self.core.update(|st| {
                        st.set_extranonce_received += 1;
                        st.extranonce1 = en1_hex;
                        st.extranonce2_size = size as usize;
                    });
                } else {
                    tracing::debug!(%params, "miner: bad set_extranonce");
                }
            }
            "mining.set_version_mask" => {
                let mask = params
                    .get(0)
                    .and_then(Value::as_str)
                    .and_then(|m| u32::from_str_radix(m, 16).ok());
                if let (Some(mask), true) = (mask, self.core.cfg.version_rolling) {
                    self.version_mask = mask;
                    self.core.update(|st| st.granted_version_mask = mask);
                }
            }
            "client.reconnect" => {
                self.core.update(|st| st.reconnect_requests += 1);
                return Ok(Some(self.parse_reconnect(params).await));
            }
            "client.get_version" if !id.is_null() => {
                let agent = self.core.cfg.user_agent.clone();
                self.writer
                    .write_all(jsonrpc::ok(&id, json!(agent)).as_bytes())
                    .await?;
            }
            _ if !id.is_null() => {
                self.writer
                    .write_all(jsonrpc::error(&id, 20, "unsupported").as_bytes())
                    .await?;
            }
            _ => tracing::debug!(method, "miner: ignoring notification"),
        }
        Ok(None)
    }

    /// `client.reconnect` params: `[]` (same server) or `[host, port, wait_seconds]`, port as a
    /// number or a numeric string. An unresolvable host means "same server".
    async fn parse_reconnect(&self, params: &Value) -> End {
        let wait = params
            .get(2)
            .and_then(|w| {
                w.as_f64()
                    .or_else(|| w.as_str().and_then(|s| s.parse().ok()))
            })
            .filter(|w| w.is_finite() && *w >= 0.0)
            .map_or(Duration::ZERO, |w| Duration::from_secs_f64(w.min(60.0)));
        let host = params
            .get(0)
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty());
        let port = params
            .get(1)
            .and_then(|p| {
                p.as_u64()
                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
            })
            .and_then(|p| u16::try_from(p).ok());
        let addr = match (host, port) {
            (Some(host), Some(port)) => tokio::net::lookup_host((host, port))
                .await
                .ok()
                .and_then(|mut it| it.next()),
            _ => None,
        };
        End::Reconnect { addr, wait }
    }

    /// Hashes one chunk of the current work and submits what it finds. Returns hashes done.
    async fn hash_chunk(&mut self) -> std::io::Result<u32> {
        if self.core.cfg.power.as_ref().is_some_and(|p| !p.is_on()) {
            return Ok(0);
        }
        if self.buildable(self.pending_job.as_ref()) {
            // A new job (a clean one already cleared `work`; others switch here, at the chunk
            // boundary).
            self.current_job = self.pending_job.take();
            self.work = None;
        }
        let need_work = match &self.work {
            Some(work) => work.exhausted(),
            None => true,
        };
        if need_work {
            let Some(job) = self.current_job.as_mut() else {
                return Ok(0);
            };
            let (en1, en2_size) = match &job.extranonce {
                Some(e) => e.clone(),
                None => {
                    let Some(en1) = self.extranonce1.clone() else {
                        return Ok(0);
                    };
                    job.extranonce = Some((en1.clone(), self.extranonce2_size));
                    (en1, self.extranonce2_size)
                }
            };
            let en2 = self.core.next_extranonce2(en2_size);
            self.work = Some(Work::new(&job.job, &en1, en2));
        }
        let Some(work) = self.work.as_mut() else {
            return Ok(0);
        };
        let chunk = (self.core.cfg.hashrate / 50).clamp(64, 2048) as u32;
        let (hashed, found) = work.hash_chunk(chunk, &self.target_le, self.version_mask);
        let job_id = work.job_id.clone();
        let en2_hex = hex::encode(&work.extranonce2);
        let ntime = work.ntime;
        let txid = work.coinbase_txid;
        self.core.update(|st| st.hashes += u64::from(hashed));

        for f in found {
            if self
                .core
                .cfg
                .max_shares
                .is_some_and(|m| self.core.shares_sent >= m)
            {
                break;
            }
            let mut params = vec![
                json!(self.core.cfg.worker),
                json!(job_id),
                json!(en2_hex),
                json!(format!("{ntime:08x}")),
                json!(format!("{:08x}", f.nonce)),
            ];
            if self.core.cfg.version_rolling && self.version_mask != 0 {
                params.push(json!(format!("{:08x}", f.version & self.version_mask)));
            }
            self.core.shares_sent += 1;
            self.core.update(|st| {
                st.submitted += 1;
                st.coinbase_txids.insert(txid);
            });
            self.send("mining.submit", Value::Array(params), Pending::Submit)
                .await?;
        }
        Ok(hashed)
    }
}
