//! Energy from power readings: the trapezoid rule over a meter's readings, split at interval
//! boundaries.
//!
//! A meter publishes a reading every `poll_interval_ms`, stamped with its time. Between two
//! consecutive good readings power is taken to change linearly (trapezoid), so the energy of a
//! span is the mean of its ends times its length; a span that crosses an interval boundary is
//! cut there, the power at the cut interpolated on the same line. Negative power (a feed
//! exporting, or a meter wired the other way) counts as zero: a report says what the site drew
//! from each source.
//!
//! Readings further apart than `max_gap` (the meter's `stale_after_ms`), and the time around a
//! stale or bad reading, are not integrated: that time is missing from `measured_secs`, so a
//! blind meter shows as less coverage, never as invented energy.
//!
//! When an interval is closed before the reading after its end has arrived (a slow meter), the
//! last good reading is held up to the boundary if it is fresh (within `max_gap`), and the
//! next span is then integrated from the boundary on: each instant is counted once.

use std::collections::BTreeMap;

/// One good reading: unix time in seconds and power in kW (≥ 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: f64,
    pub kw: f64,
}

impl Sample {
    /// A reading's power in watts at unix time `t`; negative power counts as zero.
    pub fn from_watts(t: f64, watts: f64) -> Option<Sample> {
        (t.is_finite() && watts.is_finite()).then(|| Sample {
            t,
            kw: watts.max(0.0) / 1000.0,
        })
    }
}

/// What one source delivered in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Energy {
    /// kW·s (kilojoules); kWh = this / 3600.
    pub kw_secs: f64,
    /// Seconds covered by good readings.
    pub covered_secs: f64,
}

impl Energy {
    pub fn kwh(&self) -> f64 {
        self.kw_secs / 3600.0
    }

    /// Mean power over the covered time.
    pub fn mean_kw(&self) -> Option<f64> {
        (self.covered_secs > 0.0).then(|| self.kw_secs / self.covered_secs)
    }
}

/// The trapezoid integral of `samples` (in time order) over `[from, to)`: pairs further apart
/// than `max_gap` are not integrated. The reference the streaming integrator is tested against.
pub fn trapezoid(samples: &[Sample], from: f64, to: f64, max_gap: f64) -> Energy {
    let mut e = Energy::default();
    for w in samples.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.t <= a.t || b.t - a.t > max_gap {
            continue;
        }
        let (lo, hi) = (a.t.max(from), b.t.min(to));
        if hi <= lo {
            continue;
        }
        let (plo, phi) = (lerp(a, b, lo), lerp(a, b, hi));
        e.kw_secs += (plo + phi) / 2.0 * (hi - lo);
        e.covered_secs += hi - lo;
    }
    e
}

fn lerp(a: Sample, b: Sample, t: f64) -> f64 {
    if b.t == a.t {
        return a.kw;
    }
    a.kw + (b.kw - a.kw) * (t - a.t) / (b.t - a.t)
}

/// The aligned interval start of unix time `t`.
pub fn interval_of(t: f64, interval_secs: i64) -> i64 {
    (t / interval_secs as f64).floor() as i64 * interval_secs
}

/// One source's readings as they arrive, accumulated per interval (keyed by aligned start).
#[derive(Debug)]
pub struct SourceIntegrator {
    interval: i64,
    max_gap: f64,
    last: Option<Sample>,
    /// Time before which everything is integrated already (by holding a reading up to a closed
    /// interval's end).
    done_until: f64,
    buckets: BTreeMap<i64, Energy>,
}

impl SourceIntegrator {
    pub fn new(interval_secs: i64, max_gap_secs: f64) -> SourceIntegrator {
        SourceIntegrator {
            interval: interval_secs.max(1),
            max_gap: max_gap_secs,
            last: None,
            done_until: f64::NEG_INFINITY,
            buckets: BTreeMap::new(),
        }
    }

    /// The latest good reading, if any.
    pub fn last(&self) -> Option<Sample> {
        self.last
    }

    /// A new reading: `Some` good one, or `None` for a stale or bad one (which breaks the line:
    /// the time up to the next good reading is not integrated).
    pub fn push(&mut self, sample: Option<Sample>) {
        let Some(s) = sample else {
            self.last = None;
            return;
        };
        match self.last {
            // The same reading again (the meter task republished it): nothing new.
            Some(p) if s.t == p.t => return,
            // Time went backwards by more than a gap (the clock was stepped): start over.
            Some(p) if s.t < p.t => {
                if p.t - s.t > self.max_gap {
                    self.last = Some(s);
                    self.done_until = f64::NEG_INFINITY;
                }
                return;
            }
            Some(p) if s.t - p.t <= self.max_gap => {
                let from = p.t.max(self.done_until);
                self.add(from, s.t, |t| lerp(p, s, t));
            }
            _ => {}
        }
        self.last = Some(s);
    }

    /// Add `power(t)` (linear on the span) over `[from, to)`, cut at interval boundaries.
    fn add(&mut self, from: f64, to: f64, power: impl Fn(f64) -> f64) {
        let mut a = from;
        while a < to {
            let k = interval_of(a, self.interval);
            let b = to.min((k + self.interval) as f64);
            if b <= a {
                // Float rounding at a boundary: step over it.
                break;
            }
            let e = self.buckets.entry(k).or_default();
            e.kw_secs += (power(a) + power(b)) / 2.0 * (b - a);
            e.covered_secs += b - a;
            a = b;
        }
    }

    /// Close the interval with aligned start `start`, ending at `end`: hold the last reading up
    /// to `end` if it is fresh and the next one has not come yet, then hand out (and forget)
    /// what was gathered for it and anything older.
    pub fn close(&mut self, start: i64, end: i64) -> Energy {
        let end = end as f64;
        if let Some(p) = self.last {
            let from = p.t.max(self.done_until);
            if from < end && end - p.t <= self.max_gap {
                self.add(from, end, |_| p.kw);
                self.done_until = end;
            }
        }
        let e = self.buckets.remove(&start).unwrap_or_default();
        self.buckets.retain(|k, _| *k > start);
        e
    }
}

/// The highest total site power seen per interval.
#[derive(Debug, Default)]
pub struct PeakTracker {
    interval: i64,
    buckets: BTreeMap<i64, f64>,
}

impl PeakTracker {
    pub fn new(interval_secs: i64) -> PeakTracker {
        PeakTracker {
            interval: interval_secs.max(1),
            buckets: BTreeMap::new(),
        }
    }

    pub fn observe(&mut self, t: f64, kw: f64) {
        let k = interval_of(t, self.interval);
        let e = self.buckets.entry(k).or_insert(0.0);
        *e = e.max(kw);
    }

    pub fn close(&mut self, start: i64) -> f64 {
        let p = self.buckets.remove(&start).unwrap_or(0.0);
        self.buckets.retain(|k, _| *k > start);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn constant_power_integrates_exactly() {
        // 36 kW for an hour is 36 kWh, whatever the sample spacing.
        let samples: Vec<Sample> = (0..=3600)
            .step_by(7)
            .map(|t| Sample {
                t: t as f64,
                kw: 36.0,
            })
            .collect();
        let e = trapezoid(&samples, 0.0, 3600.0, 10.0);
        // The last sample is at 3598: 2 s are not covered.
        assert!(close(e.kwh(), 36.0 * 3598.0 / 3600.0), "{e:?}");
        assert!(close(e.covered_secs, 3598.0));
    }

    #[test]
    fn a_ramp_is_exact_and_boundaries_are_interpolated() {
        // Power rises 0 → 10 kW over 10 s: 50 kW·s; [2, 6) holds (2+6)/2·4 = 16 kW·s.
        let s = [Sample { t: 0.0, kw: 0.0 }, Sample { t: 10.0, kw: 10.0 }];
        assert!(close(trapezoid(&s, 0.0, 10.0, 20.0).kw_secs, 50.0));
        assert!(close(trapezoid(&s, 2.0, 6.0, 20.0).kw_secs, 16.0));
        // Too far apart: not integrated at all.
        assert_eq!(trapezoid(&s, 0.0, 10.0, 5.0), Energy::default());
    }

    #[test]
    fn negative_power_counts_as_zero_and_nonsense_is_refused() {
        assert_eq!(Sample::from_watts(1.0, -500.0).unwrap().kw, 0.0);
        assert_eq!(Sample::from_watts(1.0, 2500.0).unwrap().kw, 2.5);
        assert!(Sample::from_watts(1.0, f64::NAN).is_none());
    }

    #[test]
    fn streaming_matches_the_reference_across_intervals() {
        // Irregular samples of a wobbly power over 0..50 s, intervals of 7 s.
        let samples: Vec<Sample> = (0..120)
            .map(|i| {
                let t = i as f64 * 0.41 + (i % 3) as f64 * 0.05;
                Sample {
                    t,
                    kw: 20.0 + 5.0 * (t * 0.7).sin(),
                }
            })
            .collect();
        let mut s = SourceIntegrator::new(7, 1.0);
        for x in &samples {
            s.push(Some(*x));
        }
        let mut total = 0.0;
        let last = *samples.last().unwrap();
        for k in 0..7 {
            let (a, b) = (k * 7, k * 7 + 7);
            let got = s.close(a, b);
            let mut want = trapezoid(&samples, a as f64, b as f64, 1.0);
            if last.t < b as f64 {
                // The last interval: its last reading is held up to the boundary.
                want.kw_secs += last.kw * (b as f64 - last.t);
                want.covered_secs += b as f64 - last.t;
            }
            assert!(
                close(got.kw_secs, want.kw_secs),
                "[{a},{b}) {got:?} {want:?}"
            );
            assert!(close(got.covered_secs, want.covered_secs));
            total += got.kw_secs;
        }
        let all = trapezoid(&samples, 0.0, 49.0, 1.0).kw_secs + last.kw * (49.0 - last.t);
        assert!(close(total, all), "{total} vs {all}");
    }

    #[test]
    fn a_late_reading_is_held_to_the_boundary_and_counted_once() {
        let mut s = SourceIntegrator::new(10, 10.0);
        s.push(Sample::from_watts(1.0, 6000.0));
        s.push(Sample::from_watts(9.0, 6000.0)); // 8 s at 6 kW
                                                 // The interval [0, 10) closes before the next reading: 9 → 10 is held.
        let first = s.close(0, 10);
        assert!(close(first.kw_secs, 6.0 * 9.0) && close(first.covered_secs, 9.0));
        // The next reading (11 s) integrates only 10 → 11.
        s.push(Sample::from_watts(11.0, 6000.0));
        s.push(Sample::from_watts(19.5, 6000.0));
        let second = s.close(10, 20);
        assert!(close(second.covered_secs, 10.0), "{second:?}");
        assert!(close(second.kw_secs, 60.0));
    }

    #[test]
    fn a_blind_meter_leaves_a_hole_not_energy() {
        let mut s = SourceIntegrator::new(10, 2.0);
        s.push(Sample::from_watts(0.0, 1000.0));
        s.push(Sample::from_watts(1.0, 1000.0));
        s.push(None); // stale
        s.push(Sample::from_watts(2.0, 1000.0));
        s.push(Sample::from_watts(3.0, 1000.0));
        s.push(Sample::from_watts(9.0, 1000.0)); // 6 s gap > max_gap
        s.push(Sample::from_watts(10.0, 1000.0));
        let e = s.close(0, 10);
        assert!(close(e.covered_secs, 3.0), "{e:?}");
        assert!(close(e.kwh(), 3.0 / 3600.0));
        // A stale reading at the end: nothing is held to the boundary.
        s.push(None);
        assert_eq!(s.close(10, 20), Energy::default());
    }

    #[test]
    fn repeated_and_backwards_readings_are_ignored() {
        let mut s = SourceIntegrator::new(10, 2.0);
        s.push(Sample::from_watts(1.0, 1000.0));
        s.push(Sample::from_watts(2.0, 1000.0));
        s.push(Sample::from_watts(2.0, 1000.0));
        s.push(Sample::from_watts(1.5, 1000.0));
        s.push(Sample::from_watts(3.0, 1000.0));
        // 1 → 3 only: 3 is too old (7 s > max_gap) to be held to the boundary.
        assert!(close(s.close(0, 10).covered_secs, 2.0));
    }

    #[test]
    fn peaks_per_interval() {
        let mut p = PeakTracker::new(5);
        p.observe(1.0, 3.0);
        p.observe(4.9, 7.0);
        p.observe(5.0, 2.0);
        assert_eq!(p.close(0), 7.0);
        assert_eq!(p.close(5), 2.0);
        assert_eq!(p.close(10), 0.0);
    }
}
