//! The report's types. Field order is the JSON's (and the canonical text's) order.
//!
//! `Deserialize` is derived for the proxy's own round trips (its tests, its outbox); it checks
//! only the shape. Anything received from outside goes through [`crate::parse`], which checks
//! every value and names the field at fault.

use crate::units::{GramsPerKwh, KilowattHours, Kilowatts, SourceKind};
use serde::{Deserialize, Serialize};

/// The report version the proxy writes and the only one the pool understands.
pub const VERSION: u32 = 1;

/// A site's identifier (`energy.site_id` on the proxy, `energy.sites[].id` at the pool); see
/// [`crate::valid_site_id`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SiteId(pub String);

impl std::fmt::Display for SiteId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The energy one source (one meter's feed) delivered in the interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEnergy {
    pub kind: SourceKind,
    /// The id of the meter (`[[meters]]` on the proxy) that measures this feed.
    pub meter: String,
    /// For `grid`: the grid region, whose factor the pool holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub kwh: KilowattHours,
    /// Seconds of the interval the meter's good readings covered (less than the interval when
    /// the meter was blind or the proxy was not running).
    pub measured_secs: f64,
    /// A factor the site declares for this source (a PPA, a measured generator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub g_co2_per_kwh: Option<GramsPerKwh>,
}

/// One line of the site's curtailment loop history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurtailmentEvent {
    pub at: i64,
    /// Written as `null` when absent (not left out): the wire format has always done so.
    pub signal_id: Option<String>,
    pub what: String,
}

/// The grid operator's signals during the interval and how the site obeyed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CurtailmentSummary {
    /// Seconds a grid signal was in force.
    pub signal_secs: f64,
    /// Of those, seconds the site meter read at or under the limit.
    pub compliant_secs: f64,
    pub signal_ids: Vec<String>,
    pub events: Vec<CurtailmentEvent>,
    /// Events the site left out to keep the report small.
    pub events_omitted: u64,
}

/// An energy report for one interval of one site.
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
    /// Σ accepted difficulty × 2³² of the shares the site accepted in the interval.
    pub hashes: f64,
    /// `None` when the site runs no curtailment loop (or was not running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curtailment: Option<CurtailmentSummary>,
}

impl EnergyReport {
    /// The canonical JSON text: the body the proxy stores in its outbox and sends byte for byte
    /// on every retry, and the text the pool stores. A retry of the same report has the same
    /// canonical text (numbers round-trip exactly, field order is fixed), which is how the pool
    /// tells a duplicate from a different report for the same interval without comparing
    /// floating-point numbers.
    pub fn canonical(&self) -> String {
        // Cannot fail: no maps with non-string keys, no fallible Serialize impls (a non-finite
        // f64 is written as null, which the validator then refuses).
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn total_kwh(&self) -> KilowattHours {
        self.sources
            .iter()
            .fold(KilowattHours(0.0), |a, s| a + s.kwh)
    }
}
