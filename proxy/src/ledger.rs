//! The share ledger: per-worker, per-minute counters in SQLite.
//!
//! Sessions never touch the database. They add to an in-memory table keyed by (worker, minute);
//! one writer task swaps that table out every `flush_interval` and commits it in a single
//! transaction (UPSERT adds to existing rows). The database runs in WAL mode with
//! `synchronous=FULL`, so a committed batch survives a crash or power loss.
//!
//! **What a crash can lose:** the counters gathered since the last commit — at most one flush
//! interval (1 s by default) of share counts. Shares themselves are not lost: miners were
//! answered and upstream forwards were sent, and the pool answers a forward only once its own
//! ledger holds it; only this local accounting is.
//!
//! **When commits fail** (disk full, read-only file system) mining goes on: the batch is put
//! back and retried every interval, and [`LedgerHealth`] tells `/health` and `/metrics`.

use blgv_stratum::ShareRejection;
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Reject reasons with a column each, in the order of [`WorkerMinute::rejected`].
pub const REJECT_REASONS: [&str; 9] = [
    "stale",
    "duplicate",
    "low_difficulty",
    "bad_ntime",
    "bad_version",
    "bad_extranonce2",
    "malformed",
    "unauthorized",
    "not_subscribed",
];

fn reason_index(reason: &str) -> usize {
    REJECT_REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(REJECT_REASONS.len() - 3) // unknown reasons count as malformed
}

/// Counters for one worker in one minute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerMinute {
    pub accepted: u64,
    pub difficulty_sum: f64,
    pub forwarded: u64,
    pub upstream_accepted: u64,
    pub upstream_rejected: u64,
    pub rejected: [u64; 9],
}

type Key = (Arc<str>, i64);

/// A locally accepted share the upstream then rejected.
#[derive(Debug, Clone)]
pub struct UpstreamReject {
    pub worker: Arc<str>,
    pub pool: String,
    pub job_id: String,
    pub code: i64,
    pub message: String,
}

#[derive(Default)]
struct Pending {
    minutes: HashMap<Key, WorkerMinute>,
    upstream_rejects: Vec<(i64, UpstreamReject)>,
}

/// The handle sessions and upstream tasks record into.
#[derive(Clone)]
pub struct Ledger {
    pending: Arc<Mutex<Pending>>,
    health: Arc<LedgerHealth>,
}

/// How the writer is doing, for `/health` and `/metrics`.
#[derive(Debug, Default)]
pub struct LedgerHealth {
    /// The last commit failed; the counters wait in memory.
    pub failing: AtomicBool,
    /// Failed commits since start.
    pub failures: AtomicU64,
    /// Successful commits since start.
    pub commits: AtomicU64,
    /// The last commit error, kept until a commit succeeds.
    pub last_error: Mutex<Option<String>>,
}

impl LedgerHealth {
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn succeeded(&self) {
        self.commits.fetch_add(1, Relaxed);
        if self.failing.swap(false, Relaxed) {
            tracing::info!("ledger commits work again; the counters held in memory are written");
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn failed(&self, e: &LedgerError) {
        self.failures.fetch_add(1, Relaxed);
        self.failing.store(true, Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn minute_start(now: i64) -> i64 {
    now - now.rem_euclid(60)
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open ledger database {path}: {source}; fix: make ledger.path point to a writable location")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("ledger database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS worker_minute (
    worker TEXT NOT NULL,
    minute INTEGER NOT NULL,            -- unix seconds of the minute's start (UTC)
    accepted INTEGER NOT NULL DEFAULT 0,
    difficulty_sum REAL NOT NULL DEFAULT 0,
    forwarded INTEGER NOT NULL DEFAULT 0,
    upstream_accepted INTEGER NOT NULL DEFAULT 0,
    upstream_rejected INTEGER NOT NULL DEFAULT 0,
    rejected_stale INTEGER NOT NULL DEFAULT 0,
    rejected_duplicate INTEGER NOT NULL DEFAULT 0,
    rejected_low_difficulty INTEGER NOT NULL DEFAULT 0,
    rejected_bad_ntime INTEGER NOT NULL DEFAULT 0,
    rejected_bad_version INTEGER NOT NULL DEFAULT 0,
    rejected_bad_extranonce2 INTEGER NOT NULL DEFAULT 0,
    rejected_malformed INTEGER NOT NULL DEFAULT 0,
    rejected_unauthorized INTEGER NOT NULL DEFAULT 0,
    rejected_not_subscribed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (worker, minute)
);
CREATE TABLE IF NOT EXISTS upstream_rejects (
    time INTEGER NOT NULL,
    worker TEXT NOT NULL,
    pool TEXT NOT NULL,
    job_id TEXT NOT NULL,
    code INTEGER NOT NULL,
    message TEXT NOT NULL
);
";

const UPSERT: &str = "
INSERT INTO worker_minute (worker, minute, accepted, difficulty_sum, forwarded, upstream_accepted,
    upstream_rejected, rejected_stale, rejected_duplicate, rejected_low_difficulty,
    rejected_bad_ntime, rejected_bad_version, rejected_bad_extranonce2, rejected_malformed,
    rejected_unauthorized, rejected_not_subscribed)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
ON CONFLICT (worker, minute) DO UPDATE SET
    accepted = accepted + excluded.accepted,
    difficulty_sum = difficulty_sum + excluded.difficulty_sum,
    forwarded = forwarded + excluded.forwarded,
    upstream_accepted = upstream_accepted + excluded.upstream_accepted,
    upstream_rejected = upstream_rejected + excluded.upstream_rejected,
    rejected_stale = rejected_stale + excluded.rejected_stale,
    rejected_duplicate = rejected_duplicate + excluded.rejected_duplicate,
    rejected_low_difficulty = rejected_low_difficulty + excluded.rejected_low_difficulty,
    rejected_bad_ntime = rejected_bad_ntime + excluded.rejected_bad_ntime,
    rejected_bad_version = rejected_bad_version + excluded.rejected_bad_version,
    rejected_bad_extranonce2 = rejected_bad_extranonce2 + excluded.rejected_bad_extranonce2,
    rejected_malformed = rejected_malformed + excluded.rejected_malformed,
    rejected_unauthorized = rejected_unauthorized + excluded.rejected_unauthorized,
    rejected_not_subscribed = rejected_not_subscribed + excluded.rejected_not_subscribed
";

/// Open (creating if needed) the ledger database.
pub fn open_database(path: &Path) -> Result<Connection, LedgerError> {
    let open_err = |source| LedgerError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    conn.execute_batch(SCHEMA).map_err(open_err)?;
    Ok(conn)
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger {
            pending: Arc::new(Mutex::new(Pending::default())),
            health: Arc::new(LedgerHealth::default()),
        }
    }

    pub fn health(&self) -> &LedgerHealth {
        &self.health
    }

    fn with_minute(&self, worker: &Arc<str>, f: impl FnOnce(&mut WorkerMinute)) {
        let key = (worker.clone(), minute_start(unix_now()));
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        f(p.minutes.entry(key).or_default());
    }

    pub fn record_accepted(&self, worker: &Arc<str>, difficulty: f64, forwarded: bool) {
        self.with_minute(worker, |m| {
            m.accepted += 1;
            m.difficulty_sum += difficulty;
            m.forwarded += forwarded as u64;
        });
    }

    pub fn record_rejected(&self, worker: &Arc<str>, rejection: &ShareRejection) {
        let i = reason_index(rejection.reason());
        self.with_minute(worker, |m| m.rejected[i] += 1);
    }

    pub fn record_upstream_accepted(&self, worker: &Arc<str>) {
        self.with_minute(worker, |m| m.upstream_accepted += 1);
    }

    pub fn record_upstream_rejected(&self, reject: UpstreamReject) {
        self.with_minute(&reject.worker, |m| m.upstream_rejected += 1);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.upstream_rejects.push((unix_now(), reject));
    }

    /// Commit everything gathered so far in one transaction. On failure the batch is put back,
    /// so a transient error (disk full, locked file) loses nothing.
    pub fn flush(&self, conn: &mut Connection) -> Result<usize, LedgerError> {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.minutes.is_empty() && batch.upstream_rejects.is_empty() {
            return Ok(0);
        }
        let rows = batch.minutes.len();
        match write_batch(conn, &batch) {
            Ok(()) => {
                self.health.succeeded();
                Ok(rows)
            }
            Err(e) => {
                self.merge_back(batch);
                self.health.failed(&e);
                Err(e)
            }
        }
    }

    fn merge_back(&self, batch: Pending) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (key, m) in batch.minutes {
            let e = p.minutes.entry(key).or_default();
            e.accepted += m.accepted;
            e.difficulty_sum += m.difficulty_sum;
            e.forwarded += m.forwarded;
            e.upstream_accepted += m.upstream_accepted;
            e.upstream_rejected += m.upstream_rejected;
            for (a, b) in e.rejected.iter_mut().zip(m.rejected) {
                *a += b;
            }
        }
        p.upstream_rejects.extend(batch.upstream_rejects);
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new()
    }
}

fn write_batch(conn: &mut Connection, batch: &Pending) -> Result<(), LedgerError> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(UPSERT)?;
        for ((worker, minute), m) in &batch.minutes {
            let r = &m.rejected;
            upsert.execute(params![
                worker.as_ref(),
                minute,
                m.accepted as i64,
                m.difficulty_sum,
                m.forwarded as i64,
                m.upstream_accepted as i64,
                m.upstream_rejected as i64,
                r[0] as i64,
                r[1] as i64,
                r[2] as i64,
                r[3] as i64,
                r[4] as i64,
                r[5] as i64,
                r[6] as i64,
                r[7] as i64,
                r[8] as i64,
            ])?;
        }
        let mut insert = tx.prepare_cached(
            "INSERT INTO upstream_rejects (time, worker, pool, job_id, code, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (time, r) in &batch.upstream_rejects {
            insert.execute(params![
                time,
                r.worker.as_ref(),
                r.pool,
                r.job_id,
                r.code,
                r.message
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The single writer: flush every `interval` until `shutdown`, then a final flush.
pub async fn run_writer(
    ledger: Ledger,
    mut conn: Connection,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.cancelled() => true,
        };
        // SQLite calls block; keep them off the async workers that serve miners.
        let (l, c) = (ledger.clone(), conn);
        let (result, c) = tokio::task::spawn_blocking(move || {
            let mut c = c;
            let r = l.flush(&mut c);
            (r, c)
        })
        .await
        .expect("ledger flush task does not panic");
        conn = c;
        if let Err(e) = result {
            tracing::error!(error = %e, "ledger flush failed; counters kept in memory and retried next interval");
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_add_up_across_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_database(&dir.path().join("l.db")).unwrap();
        let ledger = Ledger::new();
        let w: Arc<str> = Arc::from("rig1");
        ledger.record_accepted(&w, 2.0, true);
        ledger.record_rejected(&w, &ShareRejection::Duplicate);
        assert_eq!(ledger.flush(&mut conn).unwrap(), 1);
        ledger.record_accepted(&w, 4.0, false);
        ledger.record_upstream_accepted(&w);
        ledger.flush(&mut conn).unwrap();
        let (acc, diff, fwd, dup, up): (i64, f64, i64, i64, i64) = conn
            .query_row(
                "SELECT SUM(accepted), SUM(difficulty_sum), SUM(forwarded), SUM(rejected_duplicate), SUM(upstream_accepted) FROM worker_minute WHERE worker='rig1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!((acc, diff, fwd, dup, up), (2, 6.0, 1, 1, 1));
    }

    #[test]
    fn a_failed_flush_keeps_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_database(&dir.path().join("l.db")).unwrap();
        let ledger = Ledger::new();
        let w: Arc<str> = Arc::from("rig1");
        ledger.record_accepted(&w, 1.0, false);
        conn.execute_batch("DROP TABLE worker_minute").unwrap();
        assert!(ledger.flush(&mut conn).is_err());
        assert!(ledger.health().failing.load(Relaxed));
        assert!(ledger.health().last_error().is_some());
        conn.execute_batch(SCHEMA).unwrap();
        assert_eq!(ledger.flush(&mut conn).unwrap(), 1);
        assert!(!ledger.health().failing.load(Relaxed));
        assert_eq!(ledger.health().failures.load(Relaxed), 1);
        assert_eq!(ledger.health().last_error(), None);
        let acc: i64 = conn
            .query_row("SELECT accepted FROM worker_minute", [], |r| r.get(0))
            .unwrap();
        assert_eq!(acc, 1);
    }

    /// A ledger that turns read-only under the running proxy (SQLite answers every write with
    /// SQLITE_READONLY, as after the file system is remounted read-only) keeps its counters in
    /// memory, reports the failure, and writes them all once writes work again. `query_only` is
    /// how a test makes the open connection read-only: a real read-only remount is refused
    /// (EBUSY) while the proxy holds the file open for writing; see docs/RELIABILITY.md.
    #[test]
    fn a_read_only_ledger_keeps_counting_and_writes_when_writable_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_database(&dir.path().join("l.db")).unwrap();
        let ledger = Ledger::new();
        let w: Arc<str> = Arc::from("rig1");
        ledger.record_accepted(&w, 1.0, true);
        assert_eq!(ledger.flush(&mut conn).unwrap(), 1);

        conn.pragma_update(None, "query_only", true).unwrap();
        for _ in 0..3 {
            ledger.record_accepted(&w, 1.0, false);
            let e = ledger.flush(&mut conn).unwrap_err();
            assert!(e.to_string().contains("readonly"), "{e}");
        }
        assert!(ledger.health().failing.load(Relaxed));
        assert_eq!(ledger.health().failures.load(Relaxed), 3);

        conn.pragma_update(None, "query_only", false).unwrap();
        ledger.record_accepted(&w, 1.0, false);
        // One row, or two if the test crossed a minute boundary.
        assert!(ledger.flush(&mut conn).unwrap() >= 1);
        assert!(!ledger.health().failing.load(Relaxed));
        let (acc, fwd): (i64, i64) = conn
            .query_row(
                "SELECT SUM(accepted), SUM(forwarded) FROM worker_minute",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (acc, fwd),
            (5, 1),
            "nothing counted while read-only was lost"
        );
    }

    #[test]
    fn unwritable_path_names_the_key() {
        let e = open_database(Path::new("/proc/definitely/not/here.db")).unwrap_err();
        assert!(e.to_string().contains("ledger.path"), "{e}");
    }
}
