//! The quality rules, as a pure state machine (no I/O, no clock of its own).
//!
//! * A poll that decodes the total power gives [`Quality::Good`].
//! * A poll the meter did not answer (timeout, connection refused, connection lost) gives
//!   [`Quality::Stale`] with the last good values while the last good reading is younger than
//!   `stale_after`; after that, or if there never was a good reading, [`Quality::Bad`] with the
//!   reason.
//! * A poll the meter answered wrongly (Modbus exception, garbage frame, total power that does
//!   not decode) gives [`Quality::Bad`] at once, and forgets the last good values: only a new
//!   good reading restores trust.

use std::time::{Duration, Instant, SystemTime};

use super::error::PollError;
use super::reading::{Quality, Reading};
use super::register_map::Sample;

#[derive(Debug, Clone)]
struct LastGood {
    at: SystemTime,
    mono: Instant,
    reading: Reading,
}

/// Keeps what the rules need between polls.
#[derive(Debug, Clone)]
pub struct QualityState {
    meter_id: String,
    stale_after: Duration,
    last_good: Option<LastGood>,
}

impl QualityState {
    pub fn new(meter_id: impl Into<String>, stale_after: Duration) -> Self {
        QualityState {
            meter_id: meter_id.into(),
            stale_after,
            last_good: None,
        }
    }

    /// The meter answered and the answer decoded into `sample`.
    pub fn on_sample(&mut self, sample: Sample, at: SystemTime, now: Instant) -> Reading {
        if sample.total_power_w.is_none() {
            let why = sample
                .total_power_problem()
                .unwrap_or("total_power_w is not in the register map")
                .to_string();
            self.last_good = None;
            return Reading::bad(self.meter_id.clone(), at, format!("decode error: {why}"));
        }
        let reading = Reading {
            meter_id: self.meter_id.clone(),
            at,
            quality: Quality::Good,
            total_power_w: sample.total_power_w,
            import_energy_kwh: sample.import_energy_kwh,
            phases: sample.phases,
        };
        self.last_good = Some(LastGood {
            at,
            mono: now,
            reading: reading.clone(),
        });
        reading
    }

    /// The poll failed with `error` after `attempts` attempts.
    pub fn on_error(
        &mut self,
        error: &PollError,
        attempts: u32,
        at: SystemTime,
        now: Instant,
    ) -> Reading {
        if error.is_no_answer() {
            if let Some(last) = &self.last_good {
                if now.saturating_duration_since(last.mono) < self.stale_after {
                    return Reading {
                        at,
                        quality: Quality::Stale { since: last.at },
                        ..last.reading.clone()
                    };
                }
            }
        } else {
            self.last_good = None;
        }
        let tries = if attempts > 1 {
            format!(" ({attempts} attempts)")
        } else {
            String::new()
        };
        Reading::bad(self.meter_id.clone(), at, format!("{error}{tries}"))
    }
}

/// What [`super::MeterHandle::latest`] shows: a Good reading older than `stale_after` (the
/// poller is stuck in retries or was stopped) is shown as Stale since its own time.
pub fn aged(mut reading: Reading, now: SystemTime, stale_after: Duration) -> Reading {
    if reading.quality == Quality::Good {
        let age = now.duration_since(reading.at).unwrap_or(Duration::ZERO);
        if age > stale_after {
            reading.quality = Quality::Stale { since: reading.at };
        }
    }
    reading
}

#[cfg(test)]
mod tests {
    use super::super::error::exception_name;
    use super::*;

    fn sample(w: Option<f64>) -> Sample {
        Sample {
            total_power_w: w,
            import_energy_kwh: Some(5.0),
            phases: vec![],
            problems: if w.is_none() {
                vec![(
                    super::super::config::Quantity::TotalPowerW,
                    "total_power_w (input register 0x0034, f32): value is not a number (NaN)"
                        .into(),
                )]
            } else {
                vec![]
            },
        }
    }

    fn timeout() -> PollError {
        PollError::Timeout {
            timeout_ms: 100,
            request: "read input registers 0x0000 (18)".into(),
        }
    }

    #[test]
    fn good_then_stale_then_bad_then_good() {
        let t0 = Instant::now();
        let w0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut q = QualityState::new("m", Duration::from_secs(5));
        let r = q.on_sample(sample(Some(1000.0)), w0, t0);
        assert_eq!(r.quality, Quality::Good);

        let r = q.on_error(
            &timeout(),
            3,
            w0 + Duration::from_secs(2),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(r.quality, Quality::Stale { since: w0 });
        assert_eq!(r.total_power_w, Some(1000.0));
        assert_eq!(r.at, w0 + Duration::from_secs(2));
        assert_eq!(r.power_kw(), None);

        let r = q.on_error(
            &timeout(),
            3,
            w0 + Duration::from_secs(6),
            t0 + Duration::from_secs(6),
        );
        match &r.quality {
            Quality::Bad { reason } => {
                assert!(
                    reason.starts_with("timeout: no answer within 100 ms"),
                    "{reason}"
                );
                assert!(reason.ends_with("(3 attempts)"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.total_power_w, None);

        let r = q.on_sample(
            sample(Some(2000.0)),
            w0 + Duration::from_secs(7),
            t0 + Duration::from_secs(7),
        );
        assert_eq!(r.power_kw(), Some(2.0));
    }

    #[test]
    fn wrong_answers_are_bad_at_once_and_forget_the_last_good_values() {
        let t0 = Instant::now();
        let w0 = SystemTime::UNIX_EPOCH;
        let mut q = QualityState::new("m", Duration::from_secs(5));
        q.on_sample(sample(Some(1000.0)), w0, t0);
        let exc = PollError::Exception {
            code: 2,
            name: exception_name(2),
            request: "x".into(),
        };
        let r = q.on_error(&exc, 1, w0, t0 + Duration::from_millis(10));
        match &r.quality {
            Quality::Bad { reason } => {
                assert!(reason.contains("0x02 Illegal Data Address"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // A timeout right after is Bad too: the good values are forgotten.
        let r = q.on_error(&timeout(), 1, w0, t0 + Duration::from_millis(20));
        assert!(matches!(r.quality, Quality::Bad { .. }));
    }

    #[test]
    fn no_good_reading_yet_is_bad() {
        let mut q = QualityState::new("m", Duration::from_secs(5));
        let r = q.on_error(&timeout(), 1, SystemTime::UNIX_EPOCH, Instant::now());
        assert!(matches!(r.quality, Quality::Bad { .. }));
    }

    #[test]
    fn nan_total_power_is_bad() {
        let mut q = QualityState::new("m", Duration::from_secs(5));
        let r = q.on_sample(sample(None), SystemTime::UNIX_EPOCH, Instant::now());
        match &r.quality {
            Quality::Bad { reason } => assert!(reason.contains("NaN"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ageing() {
        let w0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut q = QualityState::new("m", Duration::from_secs(5));
        let r = q.on_sample(sample(Some(1.0)), w0, Instant::now());
        assert_eq!(
            aged(
                r.clone(),
                w0 + Duration::from_secs(5),
                Duration::from_secs(5)
            )
            .quality,
            Quality::Good
        );
        assert_eq!(
            aged(
                r.clone(),
                w0 + Duration::from_secs(6),
                Duration::from_secs(5)
            )
            .quality,
            Quality::Stale { since: w0 }
        );
        // A clock that went backwards does not make a reading stale.
        assert_eq!(
            aged(r, w0 - Duration::from_secs(60), Duration::from_secs(5)).quality,
            Quality::Good
        );
    }
}
