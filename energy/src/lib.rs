//! Energy reports: the wire format a site's proxy sends to the pool every interval
//! (`POST /api/energy/report`), its limits, and its validation.
//!
//! One crate, so the proxy (which builds and serializes reports), the pool coordinator (which
//! parses and validates them) and the fuzzer share one definition instead of two copies kept in
//! step by hand. Only `serde`/`serde_json` below it: the fuzzer links it without the pool.
//!
//! ```json
//! {"version": 1, "site_id": "site1", "interval_start": 1767225600, "interval_end": 1767225900,
//!  "sources": [{"kind": "solar", "meter": "pv", "kwh": 12.5, "measured_secs": 300.0},
//!              {"kind": "grid", "meter": "grid-in", "region": "DE", "kwh": 3.1,
//!               "measured_secs": 300.0, "g_co2_per_kwh": 350.0}],
//!  "average_kw": 187.2, "peak_kw": 201.3, "hashes": 1.3e18,
//!  "curtailment": {"signal_secs": 120.0, "compliant_secs": 118.0, "signal_ids": ["evt-42"],
//!                  "events": [{"at": 1767225610, "signal_id": "evt-42", "what": "…"}],
//!                  "events_omitted": 0}}
//! ```
//!
//! Times are unix seconds (UTC); the interval is `[interval_start, interval_end)`.
//!
//! * [`units`]: kWh, kW, gCO₂e/kWh, gCO₂e and the source kinds.
//! * [`report`]: the report's types and its canonical JSON text.
//! * [`validate`]: [`parse`], which turns a body into a checked [`EnergyReport`] or an
//!   [`Invalid`] naming the field at fault, under [`Rules`] the pool configures.

pub mod report;
pub mod units;
pub mod validate;

pub use report::{
    CurtailmentEvent, CurtailmentSummary, EnergyReport, SiteId, SourceEnergy, VERSION,
};
pub use units::{GramsCo2e, GramsPerKwh, KilowattHours, Kilowatts, SourceKind};
pub use validate::{
    parse, valid_site_id, Invalid, Rules, MAX_EVENTS, MAX_EVENT_WHAT_CHARS, MAX_FACTOR_G_PER_KWH,
    MAX_KWH, MAX_METER_CHARS, MAX_REGION_CHARS, MAX_SIGNAL_IDS, MAX_SIGNAL_ID_CHARS,
    MAX_SITE_ID_CHARS, MAX_SOURCES,
};
