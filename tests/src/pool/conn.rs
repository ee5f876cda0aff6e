//! One client connection to the test pool: the Stratum V1 server side.
//!
//! The task owns the socket and selects between the client's next line and lines broadcast by
//! the pool (new jobs, difficulty changes). It never panics on input: bad JSON, unknown methods
//! and bad params get error 20 and the connection keeps going, so a buggy proxy shows up as
//! rejects in the stats instead of a dead test harness.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::validate::{build_share, parse_submit, Reject, ShareRules};
use super::{ShareKey, Shared};
use crate::jsonrpc::{self, Incoming};
use crate::jsonrpc::{ERR_DUPLICATE, ERR_JOB_NOT_FOUND, ERR_LOW_DIFFICULTY, ERR_OTHER};
use crate::jsonrpc::{ERR_NOT_SUBSCRIBED, ERR_UNAUTHORIZED};
use crate::line_reader::{Line, LineReader};
use crate::share_math::difficulty_to_target;

/// Process-wide extranonce1 counter: every connection to every pool in the test binary gets a
/// distinct 4-byte extranonce1, so coinbases never collide even across pool restarts.
static NEXT_EXTRANONCE1: AtomicU32 = AtomicU32::new(0x0000_0100);

/// Per-connection protocol state.
struct Conn {
    shared: Arc<Shared>,
    id: u64,
    en1: [u8; 4],
    en1_hex: String,
    subscribed: bool,
    authorized: HashSet<String>,
    version_mask: u32,
}

/// Keeps `connections_open` and the broadcast registry right however the task ends,
/// including when it is aborted by `TestPool::stop`.
struct OpenGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.stats.connections_open = st.stats.connections_open.saturating_sub(1);
        st.outboxes.remove(&self.id);
    }
}

/// Serves one connection until EOF, a write error, or abort.
pub(super) async fn serve(shared: Arc<Shared>, stream: TcpStream, id: u64) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Arc<str>>();
    {
        let mut st = shared.lock();
        st.stats.connections_accepted += 1;
        st.stats.connections_open += 1;
        st.outboxes.insert(id, tx);
    }
    let _guard = OpenGuard {
        shared: shared.clone(),
        id,
    };
    let _ = stream.set_nodelay(true);
    let en1 = NEXT_EXTRANONCE1
        .fetch_add(1, Ordering::Relaxed)
        .to_be_bytes();
    let mut conn = Conn {
        shared,
        id,
        en1,
        en1_hex: hex::encode(en1),
        subscribed: false,
        authorized: HashSet::new(),
        version_mask: 0,
    };
    let (rd, mut wr) = stream.into_split();
    let mut lines = LineReader::new(rd);
    loop {
        let out: Vec<String> = tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => conn.handle(line),
                Ok(None) | Err(_) => break,
            },
            Some(msg) = rx.recv() => {
                // Jobs and difficulty only go to subscribed clients; the subscribe handler
                // sends the current state itself.
                if !conn.subscribed {
                    continue;
                }
                vec![msg.to_string()]
            }
        };
        for line in out {
            if wr.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    }
    tracing::debug!(conn = id, "test pool: client closed");
}

impl Conn {
    fn handle(&mut self, line: Line) -> Vec<String> {
        let text = match line {
            Line::Text(t) => t,
            Line::TooLong => {
                self.shared.lock().stats.malformed_messages += 1;
                return vec![jsonrpc::error(&Value::Null, ERR_OTHER, "line too long")];
            }
        };
        match jsonrpc::parse_line(&text) {
            Incoming::Invalid(why) => {
                tracing::debug!(conn = self.id, %why, "test pool: malformed line");
                self.shared.lock().stats.malformed_messages += 1;
                vec![jsonrpc::error(&Value::Null, ERR_OTHER, &why)]
            }
            // Responses to nothing we asked: ignore.
            Incoming::Response { .. } => vec![],
            Incoming::Request { id, method, params } => {
                tracing::debug!(conn = self.id, %method, "test pool: request");
                match method.as_str() {
                    "mining.configure" => vec![self.configure(&id, &params)],
                    "mining.subscribe" => self.subscribe(&id, &params),
                    "mining.authorize" => vec![self.authorize(&id, &params)],
                    "mining.extranonce.subscribe" => vec![jsonrpc::ok(&id, json!(true))],
                    // The pool sets difficulty; a suggestion is acknowledged and ignored.
                    "mining.suggest_difficulty" | "mining.suggest_target" => {
                        vec![jsonrpc::ok(&id, json!(true))]
                    }
                    "mining.submit" => vec![self.submit(&id, &params)],
                    _ if id.is_null() => vec![], // unknown client notification
                    _ => vec![jsonrpc::error(&id, ERR_OTHER, "unknown method")],
                }
            }
        }
    }

    /// BIP310. Grants `config mask ∩ requested mask` for version-rolling (false if the pool
    /// refuses version rolling or the intersection is empty); any other extension is declined.
    fn configure(&mut self, id: &Value, params: &Value) -> String {
        let Some(exts) = params.get(0).and_then(Value::as_array) else {
            return jsonrpc::error(id, ERR_OTHER, "configure params must start with a list");
        };
        let opts = params.get(1).cloned().unwrap_or_else(|| json!({}));
        let mut result = serde_json::Map::new();
        for ext in exts {
            let Some(ext) = ext.as_str() else {
                return jsonrpc::error(id, ERR_OTHER, "extension names must be strings");
            };
            if ext != "version-rolling" {
                result.insert(ext.to_string(), json!(false));
                continue;
            }
            let requested = match opts.get("version-rolling.mask") {
                None => u32::MAX,
                Some(v) => match v.as_str().and_then(|s| u32::from_str_radix(s, 16).ok()) {
                    Some(m) => m,
                    None => return jsonrpc::error(id, ERR_OTHER, "bad version-rolling.mask"),
                },
            };
            self.version_mask = requested & self.shared.cfg.version_mask;
            if self.version_mask == 0 {
                result.insert("version-rolling".into(), json!(false));
            } else {
                result.insert("version-rolling".into(), json!(true));
                result.insert(
                    "version-rolling.mask".into(),
                    json!(format!("{:08x}", self.version_mask)),
                );
            }
        }
        jsonrpc::ok(id, Value::Object(result))
    }

    /// Accepts `[]`, `[agent]`, `[agent, null]`, `[agent, session]` (extra trailing params,
    /// which some firmware sends, are ignored). Answers, then sends the difficulty and the
    /// current job so the client can start at once.
    fn subscribe(&mut self, id: &Value, params: &Value) -> Vec<String> {
        let Some(p) = params.as_array() else {
            return vec![jsonrpc::error(
                id,
                ERR_OTHER,
                "subscribe params are not a list",
            )];
        };
        let agent_ok = p.first().filter(|a| !a.is_string()).is_none();
        let session_ok = p
            .get(1)
            .filter(|s| !(s.is_string() || s.is_null()))
            .is_none();
        if !agent_ok || !session_ok {
            return vec![jsonrpc::error(id, ERR_OTHER, "bad subscribe params")];
        }
        self.subscribed = true;
        let sub_id = format!("{:016x}", self.id);
        let (difficulty, notify) = {
            let mut st = self.shared.lock();
            st.stats.subscribe_count += 1;
            let job = st
                .jobs
                .back()
                .expect("the pool always has a job")
                .job
                .clone();
            (st.difficulty, job.notify_params(true))
        };
        vec![
            jsonrpc::ok(
                id,
                json!([
                    [["mining.set_difficulty", sub_id], ["mining.notify", sub_id]],
                    self.en1_hex,
                    self.shared.cfg.extranonce2_size
                ]),
            ),
            jsonrpc::notification("mining.set_difficulty", json!([difficulty])),
            jsonrpc::notification("mining.notify", notify),
        ]
    }

    /// Always authorizes; remembers the worker name for `mining.submit`.
    fn authorize(&mut self, id: &Value, params: &Value) -> String {
        let Some(worker) = params.get(0).and_then(Value::as_str) else {
            return jsonrpc::error(id, ERR_OTHER, "authorize needs a worker name");
        };
        self.authorized.insert(worker.to_string());
        self.shared.lock().stats.authorize_count += 1;
        jsonrpc::ok(id, json!(true))
    }

    /// Referees one share. Checks run in the order the error codes imply: subscribed (25),
    /// params shape (20), job known (21), worker authorized (24), the share's fields and
    /// coinbase (20), duplicate (22), target (23).
    fn submit(&mut self, id: &Value, params: &Value) -> String {
        self.shared.lock().stats.submits_received += 1;
        match self.check_submit(params) {
            Ok(()) => jsonrpc::ok(id, json!(true)),
            Err(r) => {
                tracing::debug!(conn = self.id, code = r.code, reason = %r.reason, "share rejected");
                self.shared.lock().stats.record_reject(
                    r.code,
                    &r.reason,
                    &self.en1_hex,
                    params.to_string(),
                );
                jsonrpc::error(id, r.code, &r.reason)
            }
        }
    }

    fn check_submit(&mut self, params: &Value) -> Result<(), Reject> {
        if !self.subscribed {
            return Err(Reject::new(ERR_NOT_SUBSCRIBED, "not subscribed"));
        }
        let p = parse_submit(params)?;
        let entry = self
            .shared
            .lock()
            .jobs
            .iter()
            .rev()
            .find(|e| e.job.id == p.job_id)
            .cloned()
            .ok_or_else(|| {
                Reject::new(ERR_JOB_NOT_FOUND, format!("job {:?} not found", p.job_id))
            })?;
        if !self.authorized.contains(&p.worker) {
            return Err(Reject::new(
                ERR_UNAUTHORIZED,
                format!("worker {:?} not authorized", p.worker),
            ));
        }
        let rules = ShareRules {
            extranonce1: &self.en1,
            extranonce2_size: self.shared.cfg.extranonce2_size,
            version_mask: self.version_mask,
            ntime_max_ahead_secs: self.shared.cfg.ntime_max_ahead_secs,
        };
        let share = build_share(&entry.job, &rules, &p)?;

        let mut st = self.shared.lock();
        let key = ShareKey {
            en1: self.en1,
            en2: share.extranonce2.clone(),
            ntime: share.ntime,
            nonce: share.nonce,
            version: share.version,
        };
        let Some(seen) = st.seen.get_mut(&p.job_id) else {
            // The job left the window while we were hashing.
            return Err(Reject::new(ERR_JOB_NOT_FOUND, "job expired"));
        };
        if !seen.insert(key) {
            return Err(Reject::new(ERR_DUPLICATE, "duplicate share"));
        }
        // A share is judged by the job's difficulty, or the current one if that is lower: a
        // miner applies a set_difficulty to its current job at once, and real pools accept
        // both sides of a change rather than punish that.
        let difficulty = entry.difficulty.min(st.difficulty);
        if !difficulty_to_target(difficulty).is_met_by(share.hash) {
            return Err(Reject::new(
                ERR_LOW_DIFFICULTY,
                format!(
                    "hash {} above target of difficulty {difficulty}",
                    share.hash
                ),
            ));
        }
        st.txids.insert(share.coinbase_txid);
        st.stats.distinct_coinbase_txids = st.txids.len() as u64;
        st.stats.shares_accepted += 1;
        st.stats.shares_meeting_difficulty += 1;
        if share.version != entry.job.version {
            st.stats.accepted_with_rolled_version += 1;
        }
        *st.stats
            .accepted_by_extranonce1
            .entry(self.en1_hex.clone())
            .or_default() += 1;
        Ok(())
    }
}
