//! The energy report a site sends to the pool every interval: the JSON shape (version 1) that
//! `blgv-cloud` takes at `POST /api/energy/report` (its parser is
//! `cloud/src/energy/report.rs`; the two crates do not depend on each other, and
//! `tests/tests/site_energy.rs` checks that what this side builds the coordinator accepts).
//!
//! Times are unix seconds (UTC) and the interval is `[interval_start, interval_end)`, aligned
//! to `energy.report_interval_secs`.

use serde::{Deserialize, Serialize};

/// The report version this proxy writes.
pub const VERSION: u32 = 1;

/// The site's identifier at the pool (`energy.site_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SiteId(pub String);

/// An amount of energy, in kilowatt-hours.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KilowattHours(pub f64);

/// Power, in kilowatts.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Kilowatts(pub f64);

/// An emission factor a site declares for one of its sources, in gCO₂e per kWh.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GramsPerKwh(pub f64);

/// What powers a feed of the site. The pool knows the IPCC AR5 life-cycle factor of each kind;
/// `grid` takes the factor of its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Solar,
    Wind,
    Hydro,
    Geothermal,
    Biomass,
    Nuclear,
    Gas,
    Coal,
    Grid,
}

impl SourceKind {
    pub const ALL: [SourceKind; 9] = [
        SourceKind::Solar,
        SourceKind::Wind,
        SourceKind::Hydro,
        SourceKind::Geothermal,
        SourceKind::Biomass,
        SourceKind::Nuclear,
        SourceKind::Gas,
        SourceKind::Coal,
        SourceKind::Grid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Solar => "solar",
            SourceKind::Wind => "wind",
            SourceKind::Hydro => "hydro",
            SourceKind::Geothermal => "geothermal",
            SourceKind::Biomass => "biomass",
            SourceKind::Nuclear => "nuclear",
            SourceKind::Gas => "gas",
            SourceKind::Coal => "coal",
            SourceKind::Grid => "grid",
        }
    }

    pub fn parse(text: &str) -> Option<SourceKind> {
        SourceKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// The energy one source delivered in the interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEnergy {
    pub kind: SourceKind,
    /// The `[[meters]]` id that measures this feed.
    pub meter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub kwh: KilowattHours,
    /// Seconds of the interval the meter's good readings covered (less than the interval when
    /// the meter was blind or the proxy was not running).
    pub measured_secs: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub g_co2_per_kwh: Option<GramsPerKwh>,
}

/// One line of the curtailment loop's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurtailmentEvent {
    pub at: i64,
    pub signal_id: Option<String>,
    pub what: String,
}

/// The grid operator's signals during the interval and how the site obeyed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CurtailmentSummary {
    /// Seconds a signal was in force.
    pub signal_secs: f64,
    /// Of those, seconds the site meter read at or under the limit.
    pub compliant_secs: f64,
    pub signal_ids: Vec<String>,
    pub events: Vec<CurtailmentEvent>,
    /// Events left out to keep the report small.
    pub events_omitted: u64,
}

/// Most events one report carries (the pool takes up to 200; the body must stay well under its
/// `api.max_body_bytes`).
pub const MAX_EVENTS: usize = 50;
/// Longest event text sent.
pub const MAX_EVENT_CHARS: usize = 200;
/// Largest body sent: well under the pool's default `api.max_body_bytes` (16 KiB), which a
/// report must never exceed (it would be refused on every retry and hold up the ones after it).
pub const MAX_BODY_BYTES: usize = 12 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyReport {
    pub version: u32,
    pub site_id: SiteId,
    pub interval_start: i64,
    pub interval_end: i64,
    pub sources: Vec<SourceEnergy>,
    /// Σ over the sources of each one's mean power while measured.
    pub average_kw: Kilowatts,
    /// Highest sum of the sources' latest readings seen in the interval.
    pub peak_kw: Kilowatts,
    /// Σ accepted difficulty × 2³² of the shares the proxy accepted in the interval.
    pub hashes: f64,
    /// `None` when the site runs no curtailment loop (or was not running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curtailment: Option<CurtailmentSummary>,
}

impl EnergyReport {
    pub fn total_kwh(&self) -> KilowattHours {
        KilowattHours(self.sources.iter().map(|s| s.kwh.0).sum())
    }

    /// The body sent to the pool; stored in the outbox and sent byte for byte on every retry,
    /// so the pool can tell a retry from a different report.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// [`EnergyReport::to_json`], leaving out the newest curtailment events (counted in
    /// `events_omitted`) while the body is over [`MAX_BODY_BYTES`].
    pub fn to_bounded_json(&mut self) -> String {
        loop {
            let body = self.to_json();
            let Some(c) = self.curtailment.as_mut().filter(|c| !c.events.is_empty()) else {
                return body;
            };
            if body.len() <= MAX_BODY_BYTES {
                return body;
            }
            let drop = (c.events.len() / 4).max(1);
            c.events.truncate(c.events.len() - drop);
            c.events_omitted += drop as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let r = EnergyReport {
            version: VERSION,
            site_id: SiteId("site-a".into()),
            interval_start: 600,
            interval_end: 900,
            sources: vec![
                SourceEnergy {
                    kind: SourceKind::Solar,
                    meter: "pv".into(),
                    region: None,
                    kwh: KilowattHours(1.5),
                    measured_secs: 300.0,
                    g_co2_per_kwh: None,
                },
                SourceEnergy {
                    kind: SourceKind::Grid,
                    meter: "grid".into(),
                    region: Some("DE".into()),
                    kwh: KilowattHours(0.25),
                    measured_secs: 299.0,
                    g_co2_per_kwh: Some(GramsPerKwh(350.0)),
                },
            ],
            average_kw: Kilowatts(21.0),
            peak_kw: Kilowatts(22.5),
            hashes: 4.294967296e12,
            curtailment: None,
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "version": 1, "site_id": "site-a", "interval_start": 600, "interval_end": 900,
                "sources": [
                    {"kind": "solar", "meter": "pv", "kwh": 1.5, "measured_secs": 300.0},
                    {"kind": "grid", "meter": "grid", "region": "DE", "kwh": 0.25,
                     "measured_secs": 299.0, "g_co2_per_kwh": 350.0}
                ],
                "average_kw": 21.0, "peak_kw": 22.5, "hashes": 4294967296000.0
            })
        );
        let back: EnergyReport = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.total_kwh(), KilowattHours(1.75));
    }

    #[test]
    fn bodies_stay_under_the_pools_limit() {
        let event = CurtailmentEvent {
            at: 1,
            signal_id: Some("s".repeat(128)),
            what: "w".repeat(MAX_EVENT_CHARS),
        };
        let mut r = EnergyReport {
            version: VERSION,
            site_id: SiteId("a".into()),
            interval_start: 0,
            interval_end: 300,
            sources: vec![],
            average_kw: Kilowatts(0.0),
            peak_kw: Kilowatts(0.0),
            hashes: 0.0,
            curtailment: Some(CurtailmentSummary {
                events: vec![event; MAX_EVENTS],
                ..Default::default()
            }),
        };
        assert!(r.to_json().len() > MAX_BODY_BYTES);
        let body = r.to_bounded_json();
        assert!(body.len() <= MAX_BODY_BYTES);
        let c = r.curtailment.as_ref().unwrap();
        assert!(!c.events.is_empty());
        assert_eq!(c.events.len() as u64 + c.events_omitted, MAX_EVENTS as u64);
    }
}
