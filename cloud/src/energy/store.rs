//! Energy reports in the pool's ledger database (SQLite, WAL).
//!
//! Table `energy_reports` has one row per (site, interval start): the totals, the footprint as
//! computed when the report arrived, and the report's canonical JSON. Table `energy_sources`
//! has one row per source of each report with the factor used and where it came from.
//!
//! One connection, behind a mutex, does every write (in an IMMEDIATE transaction, so the
//! duplicate check and the insert are one step even against another process); reports come
//! every few minutes per site, so this is never a bottleneck and never waits for the share
//! writer for long (WAL, 5 s busy timeout).

use super::carbon::{FactorBasis, GramsCo2e, GramsPerKwh, KilowattHours, SourceKind, Totals};
use super::report::{EnergyReport, SiteId};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS energy_reports (
    site_id TEXT NOT NULL,
    interval_start INTEGER NOT NULL,      -- unix seconds; the interval is [start, end)
    interval_end INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    kwh REAL NOT NULL,                    -- Σ of the sources
    gco2e REAL NOT NULL,                  -- Σ of the sources' kwh × factor
    hashes REAL NOT NULL,
    average_kw REAL NOT NULL,
    peak_kw REAL NOT NULL,
    signal_secs REAL NOT NULL,            -- curtailment signal in force
    compliant_secs REAL NOT NULL,
    canonical TEXT NOT NULL,              -- the report as canonical JSON: a retry must equal it
    PRIMARY KEY (site_id, interval_start)
);
CREATE INDEX IF NOT EXISTS energy_reports_by_start ON energy_reports (interval_start);
CREATE TABLE IF NOT EXISTS energy_sources (
    site_id TEXT NOT NULL,
    interval_start INTEGER NOT NULL,
    position INTEGER NOT NULL,            -- index in the report's sources
    kind TEXT NOT NULL,
    meter TEXT NOT NULL,
    region TEXT,
    kwh REAL NOT NULL,
    measured_secs REAL NOT NULL,
    g_per_kwh REAL NOT NULL,              -- the factor used
    basis TEXT NOT NULL,                  -- site_declared, grid_region:<r>, ipcc_ar5_median
    gco2e REAL NOT NULL,
    PRIMARY KEY (site_id, interval_start, position)
);
CREATE INDEX IF NOT EXISTS energy_sources_by_start ON energy_sources (interval_start);
";

/// What became of a report.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingest {
    /// New: stored, with its footprint.
    Stored { gco2e: GramsCo2e },
    /// The very same report was stored before (a retry): nothing counted twice.
    Duplicate,
    /// A different report for this (site, interval start) is stored already.
    Conflict,
    /// The interval overlaps another stored interval of the site.
    Overlap { start: i64, end: i64 },
}

/// One source kind (and grid region) over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSummary {
    pub kind: SourceKind,
    /// The grid region, for grid sources.
    pub region: Option<String>,
    pub kwh: KilowattHours,
    pub gco2e: GramsCo2e,
    /// Every distinct factor basis used, comma separated.
    pub basis: String,
}

/// One site over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteSummary {
    pub site_id: SiteId,
    pub reports: u64,
    /// Σ interval lengths of its reports.
    pub interval_secs: i64,
    pub totals: Totals,
    pub signal_secs: f64,
    pub compliant_secs: f64,
    pub sources: Vec<SourceSummary>,
}

/// Every site with reports starting in `[from, to)`, and the pool's blocks found then.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub sites: Vec<SiteSummary>,
    pub blocks_found: u64,
}

pub struct EnergyStore {
    conn: Mutex<Connection>,
}

impl EnergyStore {
    /// Open the ledger database at `path` (its share tables must exist or be creatable: the
    /// pool opens the ledger first) and create the energy tables.
    pub fn open(path: &Path) -> rusqlite::Result<EnergyStore> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(EnergyStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store `report` (with the factor resolved for each source, in order) unless it is a
    /// duplicate, a conflicting second version, or overlaps another interval of the site.
    pub fn ingest(
        &self,
        report: &EnergyReport,
        factors: &[(GramsPerKwh, FactorBasis)],
        received_at_ms: i64,
    ) -> rusqlite::Result<Ingest> {
        let canonical = report.canonical();
        let site = &report.site_id.0;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT canonical FROM energy_reports WHERE site_id = ?1 AND interval_start = ?2",
                params![site, report.interval_start],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(stored) = existing {
            return Ok(if stored == canonical {
                Ingest::Duplicate
            } else {
                Ingest::Conflict
            });
        }
        let overlap: Option<(i64, i64)> = tx
            .query_row(
                "SELECT interval_start, interval_end FROM energy_reports
                 WHERE site_id = ?1 AND interval_start < ?3 AND interval_end > ?2 LIMIT 1",
                params![site, report.interval_start, report.interval_end],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((start, end)) = overlap {
            return Ok(Ingest::Overlap { start, end });
        }
        let mut total = GramsCo2e(0.0);
        for (i, (s, (factor, basis))) in report.sources.iter().zip(factors).enumerate() {
            let g = s.kwh * *factor;
            total = total + g;
            tx.execute(
                "INSERT INTO energy_sources (site_id, interval_start, position, kind, meter, region, kwh,
                    measured_secs, g_per_kwh, basis, gco2e) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    site,
                    report.interval_start,
                    i as i64,
                    s.kind.as_str(),
                    s.meter,
                    s.region,
                    s.kwh.0,
                    s.measured_secs,
                    factor.0,
                    basis.label(),
                    g.0
                ],
            )?;
        }
        let (signal, compliant) = report
            .curtailment
            .as_ref()
            .map_or((0.0, 0.0), |c| (c.signal_secs, c.compliant_secs));
        tx.execute(
            "INSERT INTO energy_reports (site_id, interval_start, interval_end, received_at_ms, kwh, gco2e,
                hashes, average_kw, peak_kw, signal_secs, compliant_secs, canonical)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                site,
                report.interval_start,
                report.interval_end,
                received_at_ms,
                report.total_kwh().0,
                total.0,
                report.hashes,
                report.average_kw.0,
                report.peak_kw.0,
                signal,
                compliant,
                canonical
            ],
        )?;
        tx.commit()?;
        Ok(Ingest::Stored { gco2e: total })
    }

    /// Whether any report of `site` is stored.
    pub fn has_site(&self, site: &str) -> rusqlite::Result<bool> {
        self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM energy_reports WHERE site_id = ?1)",
            [site],
            |r| r.get(0),
        )
    }

    /// Reports whose interval starts in `[from, to)` (unix seconds), of one site or all.
    pub fn summary(&self, from: i64, to: i64, site: Option<&str>) -> rusqlite::Result<Summary> {
        let conn = self.conn();
        let mut sites: BTreeMap<String, SiteSummary> = BTreeMap::new();
        let mut stmt = conn.prepare_cached(
            "SELECT site_id, COUNT(*), SUM(interval_end - interval_start), SUM(kwh), SUM(gco2e),
                    SUM(hashes), SUM(signal_secs), SUM(compliant_secs)
             FROM energy_reports
             WHERE interval_start >= ?1 AND interval_start < ?2 AND (?3 IS NULL OR site_id = ?3)
             GROUP BY site_id",
        )?;
        let rows = stmt.query_map(params![from, to, site], |r| {
            Ok(SiteSummary {
                site_id: SiteId(r.get(0)?),
                reports: r.get::<_, i64>(1)? as u64,
                interval_secs: r.get(2)?,
                totals: Totals {
                    kwh: KilowattHours(r.get(3)?),
                    gco2e: GramsCo2e(r.get(4)?),
                    hashes: r.get(5)?,
                },
                signal_secs: r.get(6)?,
                compliant_secs: r.get(7)?,
                sources: Vec::new(),
            })
        })?;
        for row in rows {
            let s = row?;
            sites.insert(s.site_id.0.clone(), s);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT site_id, kind, CASE WHEN kind = 'grid' THEN region END, SUM(kwh), SUM(gco2e),
                    GROUP_CONCAT(DISTINCT basis)
             FROM energy_sources
             WHERE interval_start >= ?1 AND interval_start < ?2 AND (?3 IS NULL OR site_id = ?3)
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )?;
        let rows = stmt.query_map(params![from, to, site], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, f64>(3)?,
                r.get::<_, f64>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        for row in rows {
            let (site, kind, region, kwh, g, basis) = row?;
            // Only kinds this coordinator wrote are in the table.
            let Some(kind) = SourceKind::parse(&kind) else {
                continue;
            };
            if let Some(s) = sites.get_mut(&site) {
                s.sources.push(SourceSummary {
                    kind,
                    region,
                    kwh: KilowattHours(kwh),
                    gco2e: GramsCo2e(g),
                    basis: basis.unwrap_or_default(),
                });
            }
        }
        // Blocks the pool found in the period; the node's rejects were not blocks.
        let blocks_found: i64 = conn.query_row(
            "SELECT COUNT(*) FROM blocks WHERE found_at_ms >= ?1 AND found_at_ms < ?2 AND status != 'rejected'",
            params![from.saturating_mul(1000), to.saturating_mul(1000)],
            |r| r.get(0),
        )?;
        Ok(Summary {
            sites: sites.into_values().collect(),
            blocks_found: blocks_found as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::EnergySection;
    use super::super::report::parse;
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_767_225_900;

    fn report(site: &str, start: i64, solar_kwh: f64, grid_kwh: f64) -> EnergyReport {
        let v = json!({
            "version": 1, "site_id": site, "interval_start": start, "interval_end": start + 300,
            "sources": [
                {"kind": "solar", "meter": "pv", "kwh": solar_kwh, "measured_secs": 300.0},
                {"kind": "grid", "meter": "grid", "region": "DE", "kwh": grid_kwh, "measured_secs": 300.0}
            ],
            "average_kw": 1.0, "peak_kw": 2.0, "hashes": 1e15
        });
        parse(v.to_string().as_bytes(), NOW, &EnergySection::default()).unwrap()
    }

    fn factors() -> Vec<(GramsPerKwh, FactorBasis)> {
        vec![
            (GramsPerKwh(48.0), FactorBasis::IpccAr5Median),
            (GramsPerKwh(400.0), FactorBasis::GridRegion("DE".into())),
        ]
    }

    fn store(dir: &tempfile::TempDir) -> EnergyStore {
        let path = dir.path().join("c.db");
        // The pool's ledger creates `blocks`; do the same here.
        crate::ledger::open_database(&path).unwrap();
        EnergyStore::open(&path).unwrap()
    }

    #[test]
    fn duplicates_conflicts_and_overlaps() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let a = report("a", NOW - 600, 10.0, 5.0);
        assert_eq!(
            s.ingest(&a, &factors(), 1).unwrap(),
            Ingest::Stored {
                gco2e: GramsCo2e(10.0 * 48.0 + 5.0 * 400.0)
            }
        );
        assert_eq!(s.ingest(&a, &factors(), 2).unwrap(), Ingest::Duplicate);
        let changed = report("a", NOW - 600, 10.0, 5.5);
        assert_eq!(s.ingest(&changed, &factors(), 3).unwrap(), Ingest::Conflict);
        let mut shifted = report("a", NOW - 500, 1.0, 1.0);
        shifted.interval_end = NOW - 400;
        assert_eq!(
            s.ingest(&shifted, &factors(), 4).unwrap(),
            Ingest::Overlap {
                start: NOW - 600,
                end: NOW - 300
            }
        );
        // Another site's same interval is its own.
        assert!(matches!(
            s.ingest(&report("b", NOW - 600, 1.0, 0.0), &factors(), 5)
                .unwrap(),
            Ingest::Stored { .. }
        ));
        let n: i64 = s
            .conn()
            .query_row("SELECT COUNT(*) FROM energy_reports", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn summaries_add_up_by_site_and_source() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        for (i, start) in [NOW - 900, NOW - 600, NOW - 300].into_iter().enumerate() {
            s.ingest(&report("a", start, 10.0 + i as f64, 5.0), &factors(), 1)
                .unwrap();
        }
        s.ingest(&report("b", NOW - 600, 2.0, 0.0), &factors(), 1)
            .unwrap();
        let sum = s.summary(NOW - 600, NOW, None).unwrap();
        assert_eq!(sum.sites.len(), 2);
        let a = &sum.sites[0];
        assert_eq!(
            (a.site_id.0.as_str(), a.reports, a.interval_secs),
            ("a", 2, 600)
        );
        assert_eq!(a.totals.kwh, KilowattHours(11.0 + 12.0 + 10.0));
        assert_eq!(a.totals.gco2e, GramsCo2e(23.0 * 48.0 + 10.0 * 400.0));
        assert_eq!(a.totals.hashes, 2e15);
        assert_eq!(a.sources.len(), 2);
        let grid = a
            .sources
            .iter()
            .find(|x| x.kind == SourceKind::Grid)
            .unwrap();
        assert_eq!(grid.region.as_deref(), Some("DE"));
        assert_eq!(grid.basis, "grid_region:DE");
        let only_b = s.summary(NOW - 600, NOW, Some("b")).unwrap();
        assert_eq!(only_b.sites.len(), 1);
        assert_eq!(only_b.sites[0].totals.kwh, KilowattHours(2.0));
        assert!(s.has_site("b").unwrap() && !s.has_site("c").unwrap());
        // Reopening finds everything again.
        drop(s);
        let again = EnergyStore::open(&dir.path().join("c.db")).unwrap();
        assert_eq!(again.summary(0, NOW, None).unwrap().sites[0].reports, 3);
    }
}
