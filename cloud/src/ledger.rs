//! The pool's share ledger (SQLite, WAL).
//!
//! Every accepted share is one row. Rows are ordered by `id`, so a PPLNS window is exact: walk
//! back from the winning share's id summing `difficulty` until Σd = X·D. Each row carries the
//! network difficulty when it was found (for PPS) and the height of its job. Blocks have their
//! own table with the winning share's id and a status (submitted, accepted, rejected, orphaned).
//!
//! Sessions send events to one writer task that commits them in batches (one transaction per
//! `flush_interval`, more rows per batch under load). A session answers a share `true` only
//! once the writer reports the batch holding it committed ([`LedgerSender`] numbers the events,
//! the writer publishes how many may be acknowledged), so **a crash loses no acknowledged
//! share**: what a kill takes is shares whose answer was still held, which the miner never saw
//! accepted. The price is up to one flush interval (100 ms by default) on each answer.
//!
//! While commits fail (disk full, read-only file system), mining goes on: the writer keeps the
//! uncommitted rows in memory, retries every interval, and lets sessions answer from memory
//! for up to `ledger.max_unwritten` rows; past that, answers wait until the disk takes writes
//! again. Health and metrics say so the whole time. A found block is committed in the batch
//! that carries it, before its submission result is known, and its status is updated
//! afterwards.

use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone)]
pub struct ShareRecord {
    pub time_ms: i64,
    pub worker: Arc<str>,
    pub difficulty: f64,
    pub network_difficulty: f64,
    pub height: u32,
    pub job_id: String,
}

#[derive(Debug, Clone)]
pub enum LedgerEvent {
    Share(ShareRecord),
    /// A share that is also a block: both rows are written together.
    Block {
        share: ShareRecord,
        hash: String,
        reward_sats: u64,
    },
    BlockStatus {
        hash: String,
        status: BlockStatus,
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStatus {
    Submitted,
    Accepted,
    Rejected,
    Orphaned,
}

impl BlockStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockStatus::Submitted => "submitted",
            BlockStatus::Accepted => "accepted",
            BlockStatus::Rejected => "rejected",
            BlockStatus::Orphaned => "orphaned",
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shares (
    id INTEGER PRIMARY KEY AUTOINCREMENT, -- total order of accepted shares
    time_ms INTEGER NOT NULL,             -- unix milliseconds when accepted
    worker TEXT NOT NULL,
    difficulty REAL NOT NULL,             -- the difficulty the share is credited with
    network_difficulty REAL NOT NULL,     -- the network difficulty of its job
    height INTEGER NOT NULL,              -- the height its job would have mined
    job_id TEXT NOT NULL,
    is_block INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS shares_by_worker ON shares (worker, id);
CREATE INDEX IF NOT EXISTS shares_by_time ON shares (time_ms); -- hashrate windows (API)
CREATE TABLE IF NOT EXISTS blocks (
    hash TEXT PRIMARY KEY,
    height INTEGER NOT NULL,
    reward_sats INTEGER NOT NULL,
    finder TEXT NOT NULL,
    share_id INTEGER NOT NULL REFERENCES shares (id),
    status TEXT NOT NULL CHECK (status IN ('submitted', 'accepted', 'rejected', 'orphaned')),
    reject_reason TEXT,
    found_at_ms INTEGER NOT NULL
);
";

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

fn insert_share(
    tx: &rusqlite::Transaction,
    s: &ShareRecord,
    is_block: bool,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO shares (time_ms, worker, difficulty, network_difficulty, height, job_id, is_block) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![s.time_ms, s.worker.as_ref(), s.difficulty, s.network_difficulty, s.height, s.job_id, is_block])?;
    Ok(tx.last_insert_rowid())
}

pub fn write_batch(conn: &mut Connection, events: &[LedgerEvent]) -> Result<(), LedgerError> {
    let tx = conn.transaction()?;
    for e in events {
        match e {
            LedgerEvent::Share(s) => {
                insert_share(&tx, s, false)?;
            }
            LedgerEvent::Block {
                share,
                hash,
                reward_sats,
            } => {
                let id = insert_share(&tx, share, true)?;
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO blocks (hash, height, reward_sats, finder, share_id, status, found_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, 'submitted', ?6)",
                )?
                .execute(params![hash, share.height, *reward_sats as i64, share.worker.as_ref(), id, share.time_ms])?;
            }
            LedgerEvent::BlockStatus {
                hash,
                status,
                reason,
            } => {
                tx.prepare_cached(
                    "UPDATE blocks SET status = ?2, reject_reason = ?3 WHERE hash = ?1",
                )?
                .execute(params![hash, status.as_str(), reason])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// The ledger's one way in. It numbers every event in the order the writer receives it, so a
/// session can hold a share's answer until the writer has released that number.
pub struct LedgerSender {
    // The count and the send move together, or two sessions could swap order between taking a
    // number and queueing: the writer would then release a number it has not yet seen.
    inner: Mutex<(u64, mpsc::UnboundedSender<LedgerEvent>)>,
}

impl LedgerSender {
    pub fn new(tx: mpsc::UnboundedSender<LedgerEvent>) -> LedgerSender {
        LedgerSender {
            inner: Mutex::new((0, tx)),
        }
    }

    /// Queue `event`; returns its ticket, released once the writer's released count reaches it.
    pub fn send(&self, event: LedgerEvent) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0 += 1;
        // The writer outlives every sender (it stops after they are all gone).
        let _ = inner.1.send(event);
        inner.0
    }
}

/// What the writer tells the rest of the pool.
#[derive(Default)]
pub struct WriterSignals {
    /// Commit failures and rows held in memory (for `/health` and `/metrics`).
    pub stats: Option<Arc<crate::stats::PoolStats>>,
    /// Notified after a batch that carried a block or a block status is committed (the payout
    /// task credits blocks once their status is in the database).
    pub blocks_committed: Option<Arc<tokio::sync::Notify>>,
    /// How many events, in [`LedgerSender`] order, sessions may answer for: every committed
    /// one, or while commits fail, every received one as long as at most `max_unwritten` wait.
    pub released: Option<watch::Sender<u64>>,
    /// Rows the writer may hold uncommitted and still let sessions answer (0: no limit).
    pub max_unwritten: usize,
}

/// Rows taken from the channel per transaction at most.
const MAX_BATCH: usize = 65536;

/// The single writer: batch what arrives, commit at most once per `interval`, stop when every
/// sender is gone (after committing the rest).
pub async fn run_writer(
    mut rx: mpsc::UnboundedReceiver<LedgerEvent>,
    conn: Connection,
    interval: Duration,
    signals: WriterSignals,
) {
    let mut conn = Some(conn);
    let mut buf = Vec::with_capacity(4096);
    let mut received = 0u64;
    loop {
        let started = Instant::now();
        let closed = if buf.is_empty() {
            let n = rx.recv_many(&mut buf, MAX_BATCH).await;
            received += n as u64;
            n == 0
        } else {
            // Retrying a failed batch: add what is queued, but do not wait for more (an idle
            // pool must still get its rows written once the disk is back).
            let mut closed = false;
            for _ in 0..MAX_BATCH {
                match rx.try_recv() {
                    Ok(e) => {
                        buf.push(e);
                        received += 1;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            closed
        };
        if buf.is_empty() {
            return; // all senders dropped, nothing pending
        }
        let batch = std::mem::take(&mut buf);
        let mut c = conn.take().expect("connection returned after each batch");
        let (c, batch, result) = tokio::task::spawn_blocking(move || {
            let r = write_batch(&mut c, &batch);
            (c, batch, r)
        })
        .await
        .expect("ledger writer does not panic");
        conn = Some(c);
        if let Err(e) = result {
            let held = batch.len();
            if let Some(stats) = &signals.stats {
                stats.ledger_failing.store(true, Relaxed);
                stats.ledger_commit_failures.fetch_add(1, Relaxed);
                stats.ledger_unwritten.store(held as u64, Relaxed);
            }
            if closed {
                tracing::error!(error = %e, rows = held, "ledger commit failed while the pool stops; these rows are lost");
                return;
            }
            // Keep the batch and retry next round: a full disk must not lose shares.
            tracing::error!(error = %e, rows = held, "ledger commit failed; rows kept in memory and retried");
            buf = batch;
            if let Some(released) = &signals.released {
                if signals.max_unwritten == 0 || held <= signals.max_unwritten {
                    released.send_replace(received);
                }
            }
            tokio::time::sleep(interval).await;
            continue;
        }
        if let Some(stats) = &signals.stats {
            if stats.ledger_failing.swap(false, Relaxed) {
                tracing::info!(
                    rows = batch.len(),
                    "ledger commits work again; the rows held in memory are written"
                );
            }
            stats.ledger_unwritten.store(0, Relaxed);
        }
        if let Some(released) = &signals.released {
            released.send_replace(received);
        }
        let has_block = batch.iter().any(|e| !matches!(e, LedgerEvent::Share(_)));
        if has_block {
            if let Some(n) = &signals.blocks_committed {
                n.notify_one();
            }
        }
        if closed {
            return;
        }
        let elapsed = started.elapsed();
        if elapsed < interval && !rx.is_closed() {
            tokio::time::sleep(interval - elapsed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(worker: &str, d: f64) -> ShareRecord {
        ShareRecord {
            time_ms: 1,
            worker: Arc::from(worker),
            difficulty: d,
            network_difficulty: 100.0,
            height: 7,
            job_id: "j".into(),
        }
    }

    async fn released_reaches(rx: &mut watch::Receiver<u64>, n: u64) {
        let reached = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|r| *r >= n))
            .await
            .map(|r| r.is_ok());
        assert!(
            matches!(reached, Ok(true)),
            "released stayed at {} instead of reaching {n}",
            *rx.borrow()
        );
    }

    fn rows(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM shares", [], |r| r.get(0))
            .unwrap()
    }

    /// Answers follow commits; while commits fail they follow memory up to `max_unwritten`,
    /// then wait; when the database takes writes again every held row is written.
    #[tokio::test]
    async fn answers_wait_for_commits_and_a_failing_database_holds_rows_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let conn = open_database(&path).unwrap();
        conn.busy_timeout(Duration::ZERO).unwrap(); // a locked database fails at once
        let stats = Arc::new(crate::stats::PoolStats::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let sender = LedgerSender::new(tx);
        let (released_tx, mut released) = watch::channel(0u64);
        let writer = tokio::spawn(run_writer(
            rx,
            conn,
            Duration::from_millis(10),
            WriterSignals {
                stats: Some(stats.clone()),
                blocks_committed: None,
                released: Some(released_tx),
                max_unwritten: 3,
            },
        ));

        assert_eq!(sender.send(LedgerEvent::Share(share("a", 1.0))), 1);
        released_reaches(&mut released, 1).await;
        assert_eq!(rows(&path), 1, "released only once committed");

        // Another connection holds the write lock: commits fail.
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        sender.send(LedgerEvent::Share(share("a", 1.0)));
        sender.send(LedgerEvent::Share(share("b", 1.0)));
        released_reaches(&mut released, 3).await;
        assert!(stats.ledger_failing.load(Relaxed));
        assert_eq!(stats.ledger_unwritten.load(Relaxed), 2);
        // Two more make four unwritten rows, over the cap of three: no more answers.
        sender.send(LedgerEvent::Share(share("b", 1.0)));
        sender.send(LedgerEvent::Share(share("b", 1.0)));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*released.borrow(), 3, "past max_unwritten answers wait");
        assert!(stats.ledger_commit_failures.load(Relaxed) >= 2);

        blocker.execute_batch("ROLLBACK").unwrap();
        released_reaches(&mut released, 5).await;
        assert_eq!(
            rows(&path),
            5,
            "every held row written once the lock is gone"
        );
        assert!(!stats.ledger_failing.load(Relaxed));
        assert_eq!(stats.ledger_unwritten.load(Relaxed), 0);
        drop(sender);
        writer.await.unwrap();
    }

    #[test]
    fn shares_blocks_and_status_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_database(&dir.path().join("c.db")).unwrap();
        write_batch(
            &mut conn,
            &[
                LedgerEvent::Share(share("a", 1.0)),
                LedgerEvent::Share(share("b", 2.0)),
                LedgerEvent::Block {
                    share: share("a", 4.0),
                    hash: "00ab".into(),
                    reward_sats: 5_000_000_000,
                },
            ],
        )
        .unwrap();
        write_batch(
            &mut conn,
            &[LedgerEvent::BlockStatus {
                hash: "00ab".into(),
                status: BlockStatus::Accepted,
                reason: None,
            }],
        )
        .unwrap();
        let (height, finder, share_id, status): (i64, String, i64, String) = conn
            .query_row(
                "SELECT height, finder, share_id, status FROM blocks",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            (height, finder.as_str(), share_id, status.as_str()),
            (7, "a", 3, "accepted")
        );
        // PPLNS walks back from the block's share by id.
        let window: f64 = conn
            .query_row(
                "SELECT SUM(difficulty) FROM shares WHERE id <= ?1",
                [share_id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(window, 7.0);
    }
}
