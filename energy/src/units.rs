//! The units of a report, as newtypes so a kWh is never added to a kW or a factor.
//! All serialize as bare JSON numbers (`#[serde(transparent)]`): the wire shows `"kwh": 12.5`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of energy, in kilowatt-hours.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KilowattHours(pub f64);

/// Power, in kilowatts.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Kilowatts(pub f64);

/// An emission factor, in grams of CO₂-equivalent per kilowatt-hour.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GramsPerKwh(pub f64);

/// An amount of emissions, in grams of CO₂-equivalent.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GramsCo2e(pub f64);

// Energy × factor = emissions. Defined here because Rust lets only the crate owning one of the
// types implement the operator; the carbon accounting that uses it lives in the pool.
impl std::ops::Mul<GramsPerKwh> for KilowattHours {
    type Output = GramsCo2e;
    fn mul(self, factor: GramsPerKwh) -> GramsCo2e {
        GramsCo2e(self.0 * factor.0)
    }
}

impl std::ops::Add for GramsCo2e {
    type Output = GramsCo2e;
    fn add(self, o: GramsCo2e) -> GramsCo2e {
        GramsCo2e(self.0 + o.0)
    }
}

impl std::ops::Add for KilowattHours {
    type Output = KilowattHours;
    fn add(self, o: KilowattHours) -> KilowattHours {
        KilowattHours(self.0 + o.0)
    }
}

/// What powers a feed of the site. The pool knows a life-cycle factor for each kind; `grid`
/// takes the factor of its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// Electricity from the public grid; its factor is the region's.
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

    /// The wire name (the same text serde writes).
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

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_wire_names() {
        for k in SourceKind::ALL {
            assert_eq!(SourceKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        assert_eq!(SourceKind::parse("diesel"), None);
        assert_eq!(SourceKind::parse("Solar"), None);
    }

    #[test]
    fn unit_arithmetic() {
        assert_eq!(KilowattHours(100.0) * GramsPerKwh(48.0), GramsCo2e(4_800.0));
        assert_eq!(GramsCo2e(1.0) + GramsCo2e(2.0), GramsCo2e(3.0));
        assert_eq!(
            KilowattHours(1.5) + KilowattHours(0.25),
            KilowattHours(1.75)
        );
        assert_eq!(serde_json::to_string(&Kilowatts(21.5)).unwrap(), "21.5");
    }
}
