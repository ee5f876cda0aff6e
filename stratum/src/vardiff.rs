//! Variable difficulty: steer each miner toward a configured number of shares per minute.
//!
//! Pure and clock-free (callers pass `now`), so it is tested without sleeping. Difficulties sent
//! are powers of two: exact as targets and accepted by every firmware. Below 1 only when the
//! configured minimum allows it (regtest, tests, benchmarks).

use crate::Difficulty;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct VardiffRules {
    pub min: Difficulty,
    pub max: Difficulty,
    pub target_shares_per_minute: f64,
    pub retarget_interval: Duration,
}

impl VardiffRules {
    /// Snap a wish (suggest_difficulty, config initial) to a power of two within bounds.
    pub fn snap(&self, d: Difficulty, ceiling: Difficulty) -> Difficulty {
        let max = self.max.min(ceiling).max_with(self.min);
        d.clamp(self.min, max)
            .floor_power_of_two()
            .clamp(self.min, max)
    }
}

trait MaxWith {
    fn max_with(self, other: Difficulty) -> Difficulty;
}

impl MaxWith for Difficulty {
    fn max_with(self, other: Difficulty) -> Difficulty {
        if other.as_f64() > self.as_f64() {
            other
        } else {
            self
        }
    }
}

/// One miner's vardiff state.
#[derive(Debug, Clone)]
pub struct Vardiff {
    current: Difficulty,
    window_start: Instant,
    shares: u32,
}

impl Vardiff {
    pub fn new(initial: Difficulty, now: Instant) -> Vardiff {
        Vardiff {
            current: initial,
            window_start: now,
            shares: 0,
        }
    }

    pub fn current(&self) -> Difficulty {
        self.current
    }

    /// Set from outside (suggest_difficulty, upstream ceiling); restarts the measurement.
    pub fn reset_to(&mut self, d: Difficulty, now: Instant) {
        self.current = d;
        self.window_start = now;
        self.shares = 0;
    }

    /// Count an accepted share; returns the new difficulty (already in force here) when one is
    /// due: the caller must announce it to the miner.
    pub fn on_share(
        &mut self,
        rules: &VardiffRules,
        ceiling: Difficulty,
        now: Instant,
    ) -> Option<Difficulty> {
        self.shares += 1;
        // Retarget early when shares arrive far too fast, so a miner that starts too low does
        // not flood the proxy for a whole interval.
        let expected_per_window =
            rules.target_shares_per_minute * rules.retarget_interval.as_secs_f64() / 60.0;
        let early = self.shares as f64 >= (4.0 * expected_per_window).max(8.0)
            && now.duration_since(self.window_start) >= rules.retarget_interval / 8;
        if early || now.duration_since(self.window_start) >= rules.retarget_interval {
            return self.retarget(rules, ceiling, now);
        }
        None
    }

    /// Periodic check, so a miner whose difficulty is too high (few or no shares) comes down.
    pub fn on_tick(
        &mut self,
        rules: &VardiffRules,
        ceiling: Difficulty,
        now: Instant,
    ) -> Option<Difficulty> {
        if now.duration_since(self.window_start) >= rules.retarget_interval {
            return self.retarget(rules, ceiling, now);
        }
        None
    }

    fn retarget(
        &mut self,
        rules: &VardiffRules,
        ceiling: Difficulty,
        now: Instant,
    ) -> Option<Difficulty> {
        let minutes = now.duration_since(self.window_start).as_secs_f64() / 60.0;
        let rate = self.shares as f64 / minutes.max(1e-9);
        // With no shares at all, step down by 4× per interval rather than guessing a rate of 0.
        let ratio = if self.shares == 0 {
            0.25
        } else {
            rate / rules.target_shares_per_minute
        };
        self.window_start = now;
        self.shares = 0;
        // Hysteresis: within a factor of two of the goal, leave it alone (no flapping).
        if (0.5..=2.0).contains(&ratio) {
            return None;
        }
        let wish = Difficulty::new(self.current.as_f64() * ratio).unwrap_or(rules.min);
        let next = rules.snap(wish, ceiling);
        if next == self.current {
            return None;
        }
        self.current = next;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> VardiffRules {
        VardiffRules {
            min: Difficulty::new(1.0).unwrap(),
            max: Difficulty::new(65536.0).unwrap(),
            target_shares_per_minute: 12.0,
            retarget_interval: Duration::from_secs(60),
        }
    }
    const NO_CEILING: f64 = 1e12;

    #[test]
    fn fast_miner_goes_up_in_powers_of_two_and_early() {
        let t0 = Instant::now();
        let ceiling = Difficulty::new(NO_CEILING).unwrap();
        let mut v = Vardiff::new(Difficulty::new(1.0).unwrap(), t0);
        let mut changed = None;
        // 10 shares per second: 50× too fast.
        for i in 1..=100 {
            if let Some(d) = v.on_share(&rules(), ceiling, t0 + Duration::from_millis(100 * i)) {
                changed = Some((i, d));
                break;
            }
        }
        let (i, d) = changed.expect("retargets");
        assert!(i < 100, "retarget happened early, at share {i}");
        assert!(
            d.as_f64() >= 16.0 && d.as_f64().log2().fract() == 0.0,
            "{d}"
        );
    }

    #[test]
    fn silent_miner_steps_down_and_stops_at_min() {
        let t0 = Instant::now();
        let ceiling = Difficulty::new(NO_CEILING).unwrap();
        let mut v = Vardiff::new(Difficulty::new(64.0).unwrap(), t0);
        let d = v
            .on_tick(&rules(), ceiling, t0 + Duration::from_secs(61))
            .unwrap();
        assert_eq!(d.as_f64(), 16.0);
        let d = v
            .on_tick(&rules(), ceiling, t0 + Duration::from_secs(122))
            .unwrap();
        assert_eq!(d.as_f64(), 4.0);
        let d = v
            .on_tick(&rules(), ceiling, t0 + Duration::from_secs(183))
            .unwrap();
        assert_eq!(d.as_f64(), 1.0);
        assert!(v
            .on_tick(&rules(), ceiling, t0 + Duration::from_secs(244))
            .is_none());
    }

    #[test]
    fn on_target_miner_is_left_alone() {
        let t0 = Instant::now();
        let ceiling = Difficulty::new(NO_CEILING).unwrap();
        let mut v = Vardiff::new(Difficulty::new(256.0).unwrap(), t0);
        for i in 1..=12 {
            assert!(v
                .on_share(&rules(), ceiling, t0 + Duration::from_secs(5 * i))
                .is_none());
        }
        assert_eq!(v.current().as_f64(), 256.0);
    }

    #[test]
    fn never_above_the_upstream_ceiling() {
        let t0 = Instant::now();
        let ceiling = Difficulty::new(100.0).unwrap();
        let mut v = Vardiff::new(Difficulty::new(64.0).unwrap(), t0);
        let mut last = v.current();
        for i in 1..=2000 {
            if let Some(d) = v.on_share(&rules(), ceiling, t0 + Duration::from_millis(10 * i)) {
                last = d;
            }
        }
        assert_eq!(last.as_f64(), 64.0, "largest power of two ≤ 100 is 64");
        assert_eq!(
            rules()
                .snap(Difficulty::new(5000.0).unwrap(), ceiling)
                .as_f64(),
            64.0
        );
    }

    #[test]
    fn fractional_minimum_allows_fractional_powers_of_two() {
        let mut r = rules();
        r.min = Difficulty::new(1.0 / 1024.0).unwrap();
        let d = r.snap(
            Difficulty::new(0.003).unwrap(),
            Difficulty::new(NO_CEILING).unwrap(),
        );
        assert_eq!(d.as_f64(), 1.0 / 512.0);
    }
}
