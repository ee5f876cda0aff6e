//! Energy and carbon accounting for the pool: every site proxy reports, each interval, what
//! powered its hashing (kWh per source, measured by its meters), its hashes and its grid
//! curtailment; the pool stores the reports and shows the energy mix and the carbon footprint.
//!
//! * [`report`]: the report's JSON shape and its validation (every error names the field),
//!   shared with the proxy in `blgv-energy`; this module applies the `[energy]` settings.
//! * [`carbon`]: emission factors (IPCC AR5 medians, configured grid regions, site-declared)
//!   and the footprint arithmetic.
//! * [`store`]: the reports in the ledger database, deduplicated by (site, interval start).
//! * [`config`]: the `[energy]` section (sites and their tokens, grid regions).
//!
//! The HTTP side is `crate::api::energy`.

pub mod carbon;
pub mod config;
pub mod report;
pub mod store;

pub use carbon::{GramsCo2e, GramsPerKwh, KilowattHours, SourceFactors, SourceKind};
pub use config::{EnergySection, EnergySite};
pub use report::{EnergyReport, SiteId};
pub use store::{EnergyStore, Ingest};
