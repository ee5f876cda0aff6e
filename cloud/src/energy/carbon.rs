//! Carbon accounting: emission factors per energy source and the footprint arithmetic.
//!
//! Factors are life-cycle emissions in gCO₂e per kWh. Fuels and generators use the IPCC AR5
//! (WG III, Annex III, table A.III.2) medians; grid electricity uses the factor the operator
//! configures for its region (`[energy.grid_regions]`), because a grid's mix differs by
//! country and year; a site may also declare a fixed factor for a source (a PPA, a measured
//! generator), which is then used as declared and recorded as such.
//!
//! The factor used for each source is resolved when the report arrives and stored with it, so
//! a footprint never changes after the fact when the configuration is edited.

pub use blgv_energy::{GramsCo2e, GramsPerKwh, KilowattHours, SourceKind};
use serde::Serialize;

/// Joules in one kilowatt-hour.
pub const JOULES_PER_KWH: f64 = 3_600_000.0;
/// Hashes in one terahash.
pub const HASHES_PER_TH: f64 = 1e12;

/// The pool's knowledge about each source kind (the kinds themselves are the wire format's,
/// in blgv-energy, which knows nothing about carbon accounting).
pub trait SourceFactors {
    /// The IPCC AR5 life-cycle median; `None` for the grid (its factor is regional).
    fn ipcc_ar5_median(self) -> Option<GramsPerKwh>;
    /// Renewable sources, for the mix's "renewable %".
    fn is_renewable(&self) -> bool;
}

impl SourceFactors for SourceKind {
    fn ipcc_ar5_median(self) -> Option<GramsPerKwh> {
        let g = match self {
            SourceKind::Coal => 820.0,
            SourceKind::Gas => 490.0,
            SourceKind::Biomass => 230.0,
            SourceKind::Solar => 48.0,
            SourceKind::Geothermal => 38.0,
            SourceKind::Hydro => 24.0,
            SourceKind::Nuclear => 12.0,
            SourceKind::Wind => 11.0,
            SourceKind::Grid => return None,
        };
        Some(GramsPerKwh(g))
    }

    fn is_renewable(&self) -> bool {
        matches!(
            *self,
            SourceKind::Solar
                | SourceKind::Wind
                | SourceKind::Hydro
                | SourceKind::Geothermal
                | SourceKind::Biomass
        )
    }
}

/// Where a source's factor came from; stored with every source of every report.
#[derive(Debug, Clone, PartialEq)]
pub enum FactorBasis {
    /// The site declared a fixed factor for this source (`g_co2_per_kwh` in its config).
    SiteDeclared,
    /// `[energy.grid_regions]` of the coordinator, for this region.
    GridRegion(String),
    /// The IPCC AR5 median for the kind.
    IpccAr5Median,
}

impl FactorBasis {
    pub fn label(&self) -> String {
        match self {
            FactorBasis::SiteDeclared => "site_declared".into(),
            FactorBasis::GridRegion(r) => format!("grid_region:{r}"),
            FactorBasis::IpccAr5Median => "ipcc_ar5_median".into(),
        }
    }
}

/// Why a source's factor could not be resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum FactorError {
    /// A grid source without a region.
    MissingRegion,
    /// A grid region the coordinator has no factor for.
    UnknownRegion { region: String, known: Vec<String> },
}

/// The factor for one source: the site's declared factor, else the grid region's, else the
/// IPCC median. `regions` is `[energy.grid_regions]`.
pub fn resolve_factor(
    kind: SourceKind,
    region: Option<&str>,
    declared: Option<GramsPerKwh>,
    regions: &std::collections::BTreeMap<String, f64>,
) -> Result<(GramsPerKwh, FactorBasis), FactorError> {
    if let Some(d) = declared {
        return Ok((d, FactorBasis::SiteDeclared));
    }
    if let Some(g) = kind.ipcc_ar5_median() {
        return Ok((g, FactorBasis::IpccAr5Median));
    }
    let region = region.ok_or(FactorError::MissingRegion)?;
    match regions.get(region) {
        Some(g) => Ok((GramsPerKwh(*g), FactorBasis::GridRegion(region.to_string()))),
        None => Err(FactorError::UnknownRegion {
            region: region.to_string(),
            known: regions.keys().cloned().collect(),
        }),
    }
}

/// Totals over a set of reports, and the figures derived from them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub kwh: KilowattHours,
    pub gco2e: GramsCo2e,
    pub hashes: f64,
}

/// The derived figures of a footprint; `None` where the divisor is zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Intensities {
    /// gCO₂e per kWh consumed.
    pub g_per_kwh: Option<f64>,
    /// gCO₂e per terahash (10¹² hashes).
    pub g_per_th: Option<f64>,
    /// gCO₂e per block the pool found in the period.
    pub g_per_block: Option<f64>,
    /// Joules per terahash: energy efficiency of the hashing.
    pub j_per_th: Option<f64>,
}

impl Totals {
    pub fn intensities(&self, blocks_found: u64) -> Intensities {
        let per = |num: f64, den: f64| (den > 0.0).then(|| num / den);
        let th = self.hashes / HASHES_PER_TH;
        Intensities {
            g_per_kwh: per(self.gco2e.0, self.kwh.0),
            g_per_th: per(self.gco2e.0, th),
            g_per_block: per(self.gco2e.0, blocks_found as f64),
            j_per_th: per(self.kwh.0 * JOULES_PER_KWH, th),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn ipcc_ar5_medians() {
        let expect = [
            ("coal", 820.0),
            ("gas", 490.0),
            ("biomass", 230.0),
            ("solar", 48.0),
            ("geothermal", 38.0),
            ("hydro", 24.0),
            ("nuclear", 12.0),
            ("wind", 11.0),
        ];
        for (name, g) in expect {
            let kind = SourceKind::parse(name).unwrap();
            assert_eq!(kind.ipcc_ar5_median(), Some(GramsPerKwh(g)), "{name}");
            assert_eq!(kind.as_str(), name);
        }
        assert_eq!(SourceKind::Grid.ipcc_ar5_median(), None);
        assert_eq!(SourceKind::parse("diesel"), None);
    }

    #[test]
    fn factors_resolve_declared_then_region_then_median() {
        let regions: BTreeMap<String, f64> = [("DE".to_string(), 380.0)].into();
        let r = |k, region, declared| resolve_factor(k, region, declared, &regions);
        assert_eq!(
            r(SourceKind::Solar, None, None).unwrap(),
            (GramsPerKwh(48.0), FactorBasis::IpccAr5Median)
        );
        assert_eq!(
            r(SourceKind::Grid, Some("DE"), None).unwrap(),
            (GramsPerKwh(380.0), FactorBasis::GridRegion("DE".into()))
        );
        assert_eq!(
            r(SourceKind::Gas, None, Some(GramsPerKwh(400.0))).unwrap(),
            (GramsPerKwh(400.0), FactorBasis::SiteDeclared)
        );
        assert_eq!(
            r(SourceKind::Grid, None, None).unwrap_err(),
            FactorError::MissingRegion
        );
        assert_eq!(
            r(SourceKind::Grid, Some("FR"), None).unwrap_err(),
            FactorError::UnknownRegion {
                region: "FR".into(),
                known: vec!["DE".into()]
            }
        );
        // A declared factor makes the region informative only.
        assert!(r(SourceKind::Grid, Some("FR"), Some(GramsPerKwh(50.0))).is_ok());
    }

    #[test]
    fn footprint_arithmetic() {
        // 100 kWh solar + 50 kWh of a 400 g grid = 4 800 + 20 000 g over 150 kWh.
        let solar = KilowattHours(100.0) * GramsPerKwh(48.0);
        let grid = KilowattHours(50.0) * GramsPerKwh(400.0);
        assert_eq!(solar, GramsCo2e(4_800.0));
        let t = Totals {
            kwh: KilowattHours(150.0),
            gco2e: solar + grid,
            // 20 TH
            hashes: 2e13,
        };
        let i = t.intensities(4);
        assert_eq!(i.g_per_kwh, Some(24_800.0 / 150.0));
        assert_eq!(i.g_per_th, Some(24_800.0 / 20.0));
        assert_eq!(i.g_per_block, Some(6_200.0));
        // 150 kWh = 540 MJ over 20 TH = 27 MJ/TH: what a 1 kW box doing 37 GH/s would use.
        assert_eq!(i.j_per_th, Some(150.0 * 3.6e6 / 20.0));
        let none = Totals::default().intensities(0);
        assert_eq!(
            (
                none.g_per_kwh,
                none.g_per_th,
                none.g_per_block,
                none.j_per_th
            ),
            (None, None, None, None)
        );
    }
}
