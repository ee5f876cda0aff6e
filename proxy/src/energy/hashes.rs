//! Hashes done per interval, from the proxy's own share accounting: the ledger's
//! `worker_minute` table (see `crate::ledger`), Σ `difficulty_sum` × 2³².
//!
//! The ledger keeps per-minute rows, which the ledger writer adds to at every flush. Read at
//! the end of an interval (after the flush that follows it), the Σ over the rows whose minute
//! started before the interval's end is a cumulative counter of accepted difficulty; an
//! interval's work is the difference between two readings. When intervals are whole minutes
//! (production: 300 s) the split is exact; for shorter intervals (tests) the shares of the
//! last flush interval before a boundary may be counted in the next one, and every share is
//! still counted exactly once.
//!
//! The ledger grows forever, so the sum is not taken over the whole table each time: rows are
//! appended in time order (their rowid grows), and a row whose minute ended before the last
//! flush never changes again. The builder keeps a mark — the highest rowid below which every
//! row is final, and their sum — and only reads the rows after it. A `VACUUM` may renumber
//! rowids; the row at the mark is checked and the mark rebuilt (one full scan) if it moved.
//!
//! Limit: a ledger flush that fails (disk full) and succeeds minutes later adds to rows that
//! may already be behind the mark; those shares are then missing from the reports.

use super::outbox::HashMark;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::time::Duration;

/// 2³²: hashes per unit of difficulty.
pub const HASHES_PER_DIFFICULTY: f64 = 4_294_967_296.0;

/// A read connection to the share ledger.
pub struct ShareLedger {
    conn: Connection,
}

impl ShareLedger {
    pub fn open(path: &Path) -> rusqlite::Result<ShareLedger> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(ShareLedger { conn })
    }

    /// Σ difficulty of the rows whose minute starts before `end`, and the mark moved past the
    /// rows that are final by now (minutes that ended at or before `end`'s minute). The
    /// returned mark's `total` is that Σ.
    pub fn total_before(&self, end: i64, mark: &HashMark) -> rusqlite::Result<HashMark> {
        let c = &self.conn;
        let mut mark = mark.clone();
        if mark.rowid > 0 {
            if let Some(expected) = &mark.row {
                let at: Option<(String, i64)> = c
                    .query_row(
                        "SELECT worker, minute FROM worker_minute WHERE rowid = ?1",
                        [mark.rowid],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if at.as_ref() != Some(expected) {
                    tracing::warn!("the share ledger's rows were renumbered (VACUUM?): re-reading it whole for the energy reports");
                    mark.rowid = 0;
                    mark.below = 0.0;
                    mark.row = None;
                }
            }
        }
        let open: f64 = c.query_row(
            "SELECT COALESCE(SUM(difficulty_sum), 0) FROM worker_minute WHERE rowid > ?1 AND minute < ?2",
            params![mark.rowid, end],
            |r| r.get(0),
        )?;
        let total = mark.below + open;
        // Rows of minutes that started before `end`'s minute are complete: every share in them
        // was recorded before `end` and flushed since.
        let final_before = end - end.rem_euclid(60);
        let first_open: Option<i64> = c.query_row(
            "SELECT MIN(rowid) FROM worker_minute WHERE rowid > ?1 AND minute >= ?2",
            params![mark.rowid, final_before],
            |r| r.get(0),
        )?;
        let last_final = match first_open {
            Some(r) => r - 1,
            None => c
                .query_row("SELECT MAX(rowid) FROM worker_minute", [], |r| {
                    r.get::<_, Option<i64>>(0)
                })?
                .unwrap_or(0),
        };
        if last_final > mark.rowid {
            let newly_final: f64 = c.query_row(
                "SELECT COALESCE(SUM(difficulty_sum), 0) FROM worker_minute WHERE rowid > ?1 AND rowid <= ?2",
                params![mark.rowid, last_final],
                |r| r.get(0),
            )?;
            mark.below += newly_final;
            mark.rowid = last_final;
            mark.row = c
                .query_row(
                    "SELECT worker, minute FROM worker_minute WHERE rowid = ?1",
                    [last_final],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
        }
        mark.total = total;
        Ok(mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{open_database, Ledger};
    use std::sync::Arc;

    fn add(conn: &Connection, worker: &str, minute: i64, d: f64) {
        conn.execute(
            "INSERT INTO worker_minute (worker, minute, accepted, difficulty_sum) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (worker, minute) DO UPDATE SET difficulty_sum = difficulty_sum + excluded.difficulty_sum",
            params![worker, minute, d],
        )
        .unwrap();
    }

    #[test]
    fn the_mark_moves_past_final_minutes_and_totals_stay_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let w = open_database(&path).unwrap();
        let l = ShareLedger::open(&path).unwrap();
        add(&w, "a", 0, 1.0);
        add(&w, "b", 0, 2.0);
        add(&w, "a", 60, 4.0);
        let m = l.total_before(90, &HashMark::default()).unwrap();
        assert_eq!(m.total, 7.0);
        // Minute 0 is final at 90 s; minute 60 is not.
        assert_eq!((m.rowid, m.below), (2, 3.0));
        assert_eq!(m.row, Some(("b".to_string(), 0)));
        add(&w, "a", 60, 8.0); // the open row grows
        add(&w, "b", 120, 16.0);
        let m2 = l.total_before(120, &m).unwrap();
        assert_eq!(
            m2.total, 15.0,
            "minute 120 starts at the end: not counted yet"
        );
        assert_eq!((m2.rowid, m2.below), (3, 15.0));
        let m3 = l.total_before(300, &m2).unwrap();
        assert_eq!(m3.total, 31.0);
        // A renumbered ledger (here: rows rewritten in another order) is noticed and re-read.
        w.execute_batch(
            "CREATE TABLE t AS SELECT * FROM worker_minute ORDER BY worker DESC; DELETE FROM worker_minute;
             INSERT INTO worker_minute SELECT * FROM t; DROP TABLE t;",
        )
        .unwrap();
        let m4 = l.total_before(300, &m3).unwrap();
        assert_eq!(m4.total, 31.0);
    }

    #[test]
    fn reads_what_the_ledger_writer_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let mut w = open_database(&path).unwrap();
        let ledger = Ledger::new();
        let worker: Arc<str> = Arc::from("rig");
        ledger.record_accepted(&worker, 0.5, false);
        ledger.record_accepted(&worker, 0.25, true);
        ledger.flush(&mut w).unwrap();
        let l = ShareLedger::open(&path).unwrap();
        let far = i64::MAX / 2;
        assert_eq!(
            l.total_before(far, &HashMark::default()).unwrap().total,
            0.75
        );
    }
}
