//! Store and forward: every report is written here (SQLite, WAL, `synchronous=FULL`) before it
//! is sent, and deleted only when the pool acknowledged it. A crash, a power cut or a week
//! without the pool loses nothing: the sender works through the table oldest first.
//!
//! The report builder's own state (the last interval it queued and its mark in the share
//! ledger) is written in the same transaction as the report, so after a restart it neither
//! queues an interval twice nor skips one.

use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    interval_start INTEGER PRIMARY KEY,   -- unix seconds; one report per interval, sent in this order
    interval_end INTEGER NOT NULL,
    site_id TEXT NOT NULL,
    body TEXT NOT NULL,                   -- the exact JSON sent, the same bytes on every retry
    created_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS refused (      -- reports the pool will never take (kept for the operator)
    interval_start INTEGER NOT NULL,
    site_id TEXT NOT NULL,
    body TEXT NOT NULL,
    status INTEGER NOT NULL,              -- the pool's HTTP status; 0 = not sent (site_id changed)
    answer TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS builder_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    site_id TEXT NOT NULL,
    interval_secs INTEGER NOT NULL,
    last_end INTEGER NOT NULL,            -- end of the last interval queued
    mark_rowid INTEGER NOT NULL,          -- share ledger: rows up to this rowid are final ...
    mark_below REAL NOT NULL,             -- ... and hold this much difficulty
    mark_worker TEXT,                     -- the row at mark_rowid, to notice a renumbered ledger
    mark_minute INTEGER,
    last_total REAL NOT NULL              -- Σ difficulty at the last interval's end
);
";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot open the energy outbox {path}: {source}; fix: make energy.outbox_path (default: next to ledger.path) a writable location")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("energy outbox database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("energy outbox task failed: {0}")]
    Task(String),
}

/// Where the builder is in the share ledger: rows with `rowid ≤ rowid` are final and hold
/// `below` difficulty; `total` was the ledger's Σ difficulty at the last interval's end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HashMark {
    pub rowid: i64,
    pub below: f64,
    /// (worker, minute) of the row at `rowid`.
    pub row: Option<(String, i64)>,
    pub total: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BuilderState {
    pub site_id: String,
    pub interval_secs: i64,
    /// End of the last interval queued (unix seconds).
    pub last_end: i64,
    pub hashes: HashMark,
}

/// A report waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub interval_start: i64,
    pub body: String,
    pub attempts: i64,
}

/// A report to queue: interval and JSON body.
#[derive(Debug, Clone)]
pub struct NewReport {
    pub interval_start: i64,
    pub interval_end: i64,
    pub body: String,
}

pub struct Outbox {
    conn: Mutex<Connection>,
    path: PathBuf,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Outbox {
    pub fn open(path: &Path) -> Result<Outbox, OutboxError> {
        let open_err = |source| OutboxError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        // A report counts as stored only once it is on disk: power loss right after cannot lose it.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(Outbox {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> Result<Option<BuilderState>, OutboxError> {
        let conn = self.conn();
        let s = conn
            .query_row(
                "SELECT site_id, interval_secs, last_end, mark_rowid, mark_below, mark_worker, mark_minute, last_total
                 FROM builder_state WHERE id = 1",
                [],
                |r| {
                    let worker: Option<String> = r.get(5)?;
                    let minute: Option<i64> = r.get(6)?;
                    Ok(BuilderState {
                        site_id: r.get(0)?,
                        interval_secs: r.get(1)?,
                        last_end: r.get(2)?,
                        hashes: HashMark {
                            rowid: r.get(3)?,
                            below: r.get(4)?,
                            row: worker.zip(minute),
                            total: r.get(7)?,
                        },
                    })
                },
            )
            .optional()?;
        Ok(s)
    }

    /// Queue `reports` and record `state`, in one transaction. An interval already queued keeps
    /// its first version (that one may have reached the pool).
    pub fn enqueue(&self, reports: &[NewReport], state: &BuilderState) -> Result<(), OutboxError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO outbox (interval_start, interval_end, site_id, body, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let now = now_ms();
            for r in reports {
                insert.execute(params![
                    r.interval_start,
                    r.interval_end,
                    state.site_id,
                    r.body,
                    now
                ])?;
            }
        }
        let (worker, minute) = match &state.hashes.row {
            Some((w, m)) => (Some(w.as_str()), Some(*m)),
            None => (None, None),
        };
        tx.execute(
            "INSERT INTO builder_state (id, site_id, interval_secs, last_end, mark_rowid, mark_below, mark_worker, mark_minute, last_total)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO UPDATE SET site_id = excluded.site_id, interval_secs = excluded.interval_secs,
                last_end = excluded.last_end, mark_rowid = excluded.mark_rowid, mark_below = excluded.mark_below,
                mark_worker = excluded.mark_worker, mark_minute = excluded.mark_minute, last_total = excluded.last_total",
            params![
                state.site_id,
                state.interval_secs,
                state.last_end,
                state.hashes.rowid,
                state.hashes.below,
                worker,
                minute,
                state.hashes.total
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The oldest report not yet acknowledged.
    pub fn oldest(&self) -> Result<Option<Queued>, OutboxError> {
        let q = self
            .conn()
            .query_row(
                "SELECT interval_start, body, attempts FROM outbox ORDER BY interval_start LIMIT 1",
                [],
                |r| {
                    Ok(Queued {
                        interval_start: r.get(0)?,
                        body: r.get(1)?,
                        attempts: r.get(2)?,
                    })
                },
            )
            .optional()?;
        Ok(q)
    }

    /// The pool has it: forget it.
    pub fn acknowledged(&self, interval_start: i64) -> Result<(), OutboxError> {
        self.conn().execute(
            "DELETE FROM outbox WHERE interval_start = ?1",
            [interval_start],
        )?;
        Ok(())
    }

    /// A send failed; it stays first in line.
    pub fn failed(&self, interval_start: i64, error: &str) -> Result<(), OutboxError> {
        self.conn().execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE interval_start = ?1",
            params![interval_start, error],
        )?;
        Ok(())
    }

    /// The pool will never take this report (it holds a different one for the interval): move
    /// it aside, so later reports are not held up, and keep it for the operator.
    pub fn refuse(
        &self,
        interval_start: i64,
        status: u16,
        answer: &str,
    ) -> Result<(), OutboxError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO refused (interval_start, site_id, body, status, answer, at_ms)
             SELECT interval_start, site_id, body, ?2, ?3, ?4 FROM outbox WHERE interval_start = ?1",
            params![interval_start, status, answer, now_ms()],
        )?;
        tx.execute(
            "DELETE FROM outbox WHERE interval_start = ?1",
            [interval_start],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Reports queued under another site id (the config's `energy.site_id` changed): this
    /// site's token cannot send them. They are moved to `refused`; returns how many.
    pub fn set_aside_other_sites(&self, site_id: &str) -> Result<usize, OutboxError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO refused (interval_start, site_id, body, status, answer, at_ms)
             SELECT interval_start, site_id, body, 0, 'not sent: energy.site_id changed', ?2 FROM outbox WHERE site_id != ?1",
            params![site_id, now_ms()],
        )?;
        let n = tx.execute("DELETE FROM outbox WHERE site_id != ?1", [site_id])?;
        tx.commit()?;
        Ok(n)
    }

    pub fn len(&self) -> Result<u64, OutboxError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    pub fn is_empty(&self) -> Result<bool, OutboxError> {
        Ok(self.len()? == 0)
    }

    pub fn refused_count(&self) -> Result<u64, OutboxError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM refused", [], |r| r.get(0))?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(last_end: i64) -> BuilderState {
        BuilderState {
            site_id: "site-a".into(),
            interval_secs: 300,
            last_end,
            hashes: HashMark {
                rowid: 7,
                below: 1.5,
                row: Some(("w".into(), 60)),
                total: 2.5,
            },
        }
    }

    fn report(start: i64) -> NewReport {
        NewReport {
            interval_start: start,
            interval_end: start + 300,
            body: format!("{{\"interval_start\": {start}}}"),
        }
    }

    #[test]
    fn a_week_of_reports_comes_out_oldest_first_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let week = 2016; // 7 days of 5-minute intervals
        {
            let o = Outbox::open(&path).unwrap();
            // Queued in a scrambled order, in batches, like a builder catching up.
            let mut starts: Vec<i64> = (0..week).map(|i| 1_000_000 + i * 300).collect();
            starts.reverse();
            starts.rotate_left(700);
            for chunk in starts.chunks(100) {
                let batch: Vec<NewReport> = chunk.iter().map(|s| report(*s)).collect();
                o.enqueue(&batch, &state(chunk[0] + 300)).unwrap();
            }
            assert_eq!(o.len().unwrap(), week as u64);
        }
        let o = Outbox::open(&path).unwrap();
        assert_eq!(o.len().unwrap(), week as u64);
        let mut previous = i64::MIN;
        let mut seen = 0;
        while let Some(q) = o.oldest().unwrap() {
            assert!(q.interval_start > previous, "out of order");
            assert_eq!(q.body, report(q.interval_start).body);
            previous = q.interval_start;
            o.acknowledged(q.interval_start).unwrap();
            seen += 1;
        }
        assert_eq!(seen, week);
        assert!(o.is_empty().unwrap());
    }

    #[test]
    fn failures_keep_the_report_first_and_refusals_move_it_aside() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(&dir.path().join("o.db")).unwrap();
        o.enqueue(&[report(600), report(300)], &state(900)).unwrap();
        o.failed(300, "connection refused").unwrap();
        o.failed(300, "connection refused").unwrap();
        let q = o.oldest().unwrap().unwrap();
        assert_eq!((q.interval_start, q.attempts), (300, 2));
        o.refuse(300, 409, "a different report is stored").unwrap();
        assert_eq!(o.oldest().unwrap().unwrap().interval_start, 600);
        assert_eq!(o.refused_count().unwrap(), 1);
        // A second version of a queued interval does not replace the first.
        let mut other = report(600);
        other.body = "changed".into();
        o.enqueue(&[other], &state(900)).unwrap();
        assert_eq!(o.oldest().unwrap().unwrap().body, report(600).body);
    }

    #[test]
    fn state_round_trips_and_other_sites_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(&dir.path().join("o.db")).unwrap();
        assert_eq!(o.state().unwrap(), None);
        o.enqueue(&[report(0)], &state(300)).unwrap();
        assert_eq!(o.state().unwrap(), Some(state(300)));
        let mut s = state(600);
        s.hashes.row = None;
        o.enqueue(&[], &s).unwrap();
        assert_eq!(o.state().unwrap(), Some(s));
        assert_eq!(o.set_aside_other_sites("site-b").unwrap(), 1);
        assert!(o.is_empty().unwrap());
    }

    #[test]
    fn unwritable_path_names_the_key() {
        let e = Outbox::open(Path::new("/proc/definitely/not/here.db"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("energy.outbox_path"), "{e}");
    }
}
