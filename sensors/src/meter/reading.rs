//! What a meter poll produces: a timestamped [`Reading`] with a [`Quality`] mark.

use std::time::SystemTime;

use serde::Serialize;

/// How far a [`Reading`] can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Fresh values, just read from the meter and decoded without error.
    Good,
    /// The meter stopped answering (timeout, connection refused or closed) less than
    /// `stale_after_ms` ago. The values are the last good ones, measured at `since`.
    Stale { since: SystemTime },
    /// No usable values: the meter has not answered for longer than `stale_after_ms`, or it
    /// answered with something wrong (a Modbus exception, a garbage frame, a value that does not
    /// decode). `reason` says which, in words an operator can act on.
    Bad { reason: String },
}

impl Quality {
    /// True for [`Quality::Good`].
    pub fn is_good(&self) -> bool {
        matches!(self, Quality::Good)
    }
}

/// One phase (L1, L2, L3) of a reading. `None` where the meter or its map has no such value.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PhaseReading {
    pub voltage_v: Option<f64>,
    pub current_a: Option<f64>,
    pub power_w: Option<f64>,
}

/// One poll of one meter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// The `id` of the meter in the configuration.
    pub meter_id: String,
    /// When this reading was produced (the end of the poll).
    pub at: SystemTime,
    pub quality: Quality,
    /// Total active power of all phases, in watts (positive = consumed by the site).
    pub total_power_w: Option<f64>,
    /// Imported active energy counter, in kWh.
    pub import_energy_kwh: Option<f64>,
    /// L1, L2, L3 in that order; as many as the meter has (1 for single-phase meters).
    pub phases: Vec<PhaseReading>,
}

impl Reading {
    /// Total power in kW, only when the reading is [`Quality::Good`]. A stale or bad reading gives
    /// `None` so a caller cannot act on old numbers by accident.
    pub fn power_kw(&self) -> Option<f64> {
        match self.quality {
            Quality::Good => self.total_power_w.map(|w| w / 1000.0),
            _ => None,
        }
    }

    /// A reading with no values and [`Quality::Bad`].
    pub fn bad(meter_id: impl Into<String>, at: SystemTime, reason: impl Into<String>) -> Self {
        Reading {
            meter_id: meter_id.into(),
            at,
            quality: Quality::Bad {
                reason: reason.into(),
            },
            total_power_w: None,
            import_energy_kwh: None,
            phases: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(quality: Quality) -> Reading {
        Reading {
            meter_id: "m".into(),
            at: SystemTime::UNIX_EPOCH,
            quality,
            total_power_w: Some(12_500.0),
            import_energy_kwh: Some(1.0),
            phases: vec![],
        }
    }

    #[test]
    fn power_kw_only_when_good() {
        assert_eq!(reading(Quality::Good).power_kw(), Some(12.5));
        let stale = Quality::Stale {
            since: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(reading(stale).power_kw(), None);
        let bad = Quality::Bad {
            reason: "timeout".into(),
        };
        assert_eq!(reading(bad).power_kw(), None);
        let mut no_power = reading(Quality::Good);
        no_power.total_power_w = None;
        assert_eq!(no_power.power_kw(), None);
    }
}
