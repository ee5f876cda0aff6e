//! Miners' power learned from the site meter: every pause, resume or power limit is a step the
//! meter should see, and a clean step measures the miner.
//!
//! A step is **clean** when it is the only command in its window and the meter is good on both
//! sides: the reading before it is good, at most `max_before_age` old, and taken after the
//! previous command had settled; the first reading at least `settle` after it is good; and no
//! other command was sent in between (commands sent together, as a shed of several miners is,
//! are all rejected). The change in the site's power is then this miner's change, plus whatever
//! the rest of the site did meanwhile (noise).
//!
//! What it measures: the miner's power at full hash rate. A step between full power and a known
//! level gives `nominal = level + |Δ|`: paused (the configured `idle_w`) or a power target (the
//! target, taken as reached). Steps between two reduced levels say nothing about full power and
//! are ignored. A step whose sign is wrong, or whose value is more than `max_deviation` away
//! from the configured nominal (or, once learned, from the estimate), is noise (other load
//! moved) and is rejected. Accepted samples update an exponentially weighted estimate
//! (`weight` for the newest sample). When the step left full power and the miner's hash rate at
//! that moment is known (the proxy's per-worker rate), `nominal / hash rate` is a J/TH sample,
//! kept the same way.
//!
//! The loop uses a learned value in place of the configured `nominal_w` (and `efficiency_j_per_th`)
//! once it rests on at least `min_samples` samples. Without a measured hash rate, the J/TH is
//! derived from the learned power at the rated hash rate (`nominal_w / efficiency_j_per_th` from
//! the config): a miner drawing more than its rating for the same work is that much less
//! efficient.
//!
//! Pure: time is passed in, so it is tested over recorded scenarios.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct LearnerConfig {
    /// Weight of the newest sample in the estimate (0 < weight ≤ 1).
    pub weight: f64,
    /// Samples before a learned value replaces the configured one; 0 = never replace.
    pub min_samples: u32,
    /// How long after a command the meter shows it (the controller's `settle`).
    pub settle: Duration,
    /// The reading before a command may be at most this old.
    pub max_before_age: Duration,
    /// Largest relative distance of a sample from the reference (configured nominal, or the
    /// estimate once usable) that is still believed.
    pub max_deviation: f64,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        LearnerConfig {
            weight: 0.3,
            min_samples: 3,
            settle: Duration::from_secs(3),
            max_before_age: Duration::from_secs(3),
            max_deviation: 0.3,
        }
    }
}

/// A power level a command moves a miner from or to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    /// Hashing at nominal power.
    Full,
    /// Paused.
    Idle,
    /// Hashing under a power target (watts).
    Target(f64),
}

/// One command, as the loop sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    pub at: Instant,
    pub from: Level,
    pub to: Level,
    /// The configured power while paused.
    pub idle_w: f64,
    /// The configured nominal power (the reference for the noise check).
    pub configured_w: f64,
    /// The miner's hash rate (TH/s) when the command was sent, if known.
    pub hashrate_ths: Option<f64>,
}

/// Why a step taught nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Another command was sent within its window.
    Overlap,
    /// No good, fresh, settled reading before it, or a bad one after it.
    MeterNotGood,
    /// Neither end is full power: it says nothing about nominal.
    NotInformative,
    /// The meter moved the wrong way or too far: other load changed meanwhile.
    Noise,
}

/// What was learned about one miner.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Estimate {
    /// Power at full hash rate, watts.
    pub nominal_w: f64,
    pub samples: u32,
    /// Measured J/TH, when hash rates were known.
    pub j_per_th: Option<f64>,
    pub j_per_th_samples: u32,
}

#[derive(Debug, Clone)]
struct Pending {
    step: Step,
    before_kw: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Learner {
    cfg: LearnerConfig,
    /// The latest reading: when, and the site's kW (`None` = bad).
    last_reading: Option<(Instant, Option<f64>)>,
    last_command: Option<Instant>,
    pending: Vec<Pending>,
    estimates: BTreeMap<String, Estimate>,
    /// Rejected steps, for the status and the tests.
    rejected: Vec<(String, Rejected)>,
}

impl Learner {
    pub fn new(cfg: LearnerConfig) -> Learner {
        Learner {
            cfg,
            ..Learner::default()
        }
    }

    /// A command was sent. Call [`Learner::reading`] with every new meter reading, before the
    /// commands sent on its strength.
    pub fn command(&mut self, step: Step) {
        // Whatever is still waiting for its "after" reading now has this command in its window.
        for p in std::mem::take(&mut self.pending) {
            self.reject(&p.step.id, Rejected::Overlap);
        }
        let settled_since = self.last_command.map(|c| c + self.cfg.settle);
        self.last_command = Some(step.at);
        let before = match self.last_reading {
            Some((at, Some(kw)))
                if at <= step.at
                    && step.at.duration_since(at) <= self.cfg.max_before_age
                    && settled_since.is_none_or(|s| at >= s) =>
            {
                kw
            }
            _ => {
                let why = match settled_since {
                    // The previous command had not settled before the last reading.
                    Some(s) if self.last_reading.is_some_and(|(at, _)| at < s) => Rejected::Overlap,
                    _ => Rejected::MeterNotGood,
                };
                self.reject(&step.id, why);
                return;
            }
        };
        if !matches!(
            (step.from, step.to),
            (Level::Full, Level::Idle | Level::Target(_))
                | (Level::Idle | Level::Target(_), Level::Full)
        ) {
            self.reject(&step.id, Rejected::NotInformative);
            return;
        }
        self.pending.push(Pending {
            step,
            before_kw: before,
        });
    }

    /// A meter reading (`None` = bad). Readings must come in time order; a repeat of the
    /// latest one is ignored.
    pub fn reading(&mut self, at: Instant, kw: Option<f64>) {
        if self.last_reading.is_some_and(|(t, _)| at <= t) {
            return;
        }
        self.last_reading = Some((at, kw));
        let settle = self.cfg.settle;
        let (due, waiting): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| at >= p.step.at + settle);
        self.pending = waiting;
        for p in due {
            match kw {
                None => self.reject(&p.step.id, Rejected::MeterNotGood),
                Some(after) => self.learn(&p, after),
            }
        }
    }

    fn learn(&mut self, p: &Pending, after_kw: f64) {
        let s = &p.step;
        // Watts the site lost (a step down) or gained (a step up).
        let delta_w = (after_kw - p.before_kw) * 1000.0;
        let (other_end, change_w) = match (s.from, s.to) {
            (Level::Full, Level::Idle) => (s.idle_w, -delta_w),
            (Level::Full, Level::Target(w)) => (w, -delta_w),
            (Level::Idle, Level::Full) => (s.idle_w, delta_w),
            (Level::Target(w), Level::Full) => (w, delta_w),
            _ => return self.reject(&s.id, Rejected::NotInformative),
        };
        let sample = other_end + change_w;
        let reference = match self.estimates.get(&s.id) {
            Some(e) if self.cfg.min_samples > 0 && e.samples >= self.cfg.min_samples => e.nominal_w,
            _ => s.configured_w,
        };
        let plausible = change_w > 0.0
            && sample.is_finite()
            && (sample - reference).abs() <= self.cfg.max_deviation * reference;
        if !plausible {
            return self.reject(&s.id, Rejected::Noise);
        }
        let weight = self.cfg.weight.clamp(f64::MIN_POSITIVE, 1.0);
        let e = self.estimates.entry(s.id.clone()).or_insert(Estimate {
            nominal_w: sample,
            samples: 0,
            j_per_th: None,
            j_per_th_samples: 0,
        });
        if e.samples > 0 {
            e.nominal_w += weight * (sample - e.nominal_w);
        }
        e.samples += 1;
        // The hash rate at the command is the full-power rate only when it left full power.
        if let (Level::Full, Some(ths)) = (s.from, s.hashrate_ths.filter(|h| *h > 0.0)) {
            let jth = sample / ths;
            e.j_per_th = Some(match e.j_per_th {
                Some(old) => old + weight * (jth - old),
                None => jth,
            });
            e.j_per_th_samples += 1;
        }
    }

    fn reject(&mut self, id: &str, why: Rejected) {
        if self.rejected.len() >= 100 {
            self.rejected.remove(0);
        }
        self.rejected.push((id.to_string(), why));
    }

    /// Everything learned so far, usable or not.
    pub fn estimates(&self) -> &BTreeMap<String, Estimate> {
        &self.estimates
    }

    /// The most recent rejected steps (at most 100), oldest first.
    pub fn rejected(&self) -> &[(String, Rejected)] {
        &self.rejected
    }

    /// The learned nominal power, once it rests on enough samples.
    pub fn nominal_w(&self, id: &str) -> Option<f64> {
        let e = self.estimates.get(id)?;
        (self.cfg.min_samples > 0 && e.samples >= self.cfg.min_samples).then_some(e.nominal_w)
    }

    /// The J/TH to use for a miner rated `configured_w` at `configured_j_per_th`: measured when
    /// enough hash-rate samples exist, else derived from the learned power at the rated hash
    /// rate, else `None` (keep the configured value).
    pub fn j_per_th(&self, id: &str, configured_w: f64, configured_j_per_th: f64) -> Option<f64> {
        let e = self.estimates.get(id)?;
        let enough = |n: u32| self.cfg.min_samples > 0 && n >= self.cfg.min_samples;
        if let (Some(j), true) = (e.j_per_th, enough(e.j_per_th_samples)) {
            return Some(j);
        }
        let rated_ths = configured_w / configured_j_per_th;
        (enough(e.samples) && rated_ths.is_finite() && rated_ths > 0.0)
            .then(|| e.nominal_w / rated_ths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(3);

    fn learner() -> Learner {
        Learner::new(LearnerConfig {
            settle: SETTLE,
            max_before_age: SETTLE,
            ..Default::default()
        })
    }

    fn step(id: &str, at: Instant, from: Level, to: Level) -> Step {
        Step {
            id: id.into(),
            at,
            from,
            to,
            idle_w: 100.0,
            configured_w: 3250.0,
            hashrate_ths: None,
        }
    }

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    /// One clean step of a miner that really draws `true_w`: a reading just before, the command,
    /// readings every second, the site's other load `other_kw` plus `noise_w` on the after side.
    fn clean_pause(l: &mut Learner, t: Instant, id: &str, true_w: f64, noise_w: f64) -> Instant {
        let other_kw = 30.0;
        l.reading(secs(t, 0.0), Some(other_kw + true_w / 1000.0));
        l.command(step(id, secs(t, 0.5), Level::Full, Level::Idle));
        l.reading(secs(t, 1.5), Some(other_kw + true_w / 1000.0));
        l.reading(secs(t, 3.6), Some(other_kw + (100.0 + noise_w) / 1000.0));
        secs(t, 10.0)
    }

    #[test]
    fn clean_pauses_with_noise_converge_and_become_usable_after_min_samples() {
        let mut l = learner();
        let mut t = Instant::now();
        // The miner really draws 3400 W, not the configured 3250; the meter is ±40 W noisy.
        for (k, noise) in [40.0, -40.0, 25.0, -10.0, 0.0, 30.0, -35.0, 5.0]
            .into_iter()
            .enumerate()
        {
            t = clean_pause(&mut l, t, "a", 3400.0, noise);
            let usable = l.nominal_w("a");
            if k < 2 {
                assert_eq!(usable, None, "after {} sample(s)", k + 1);
            }
        }
        let e = &l.estimates()["a"];
        assert_eq!(e.samples, 8);
        let w = l.nominal_w("a").unwrap();
        assert!((w - 3400.0).abs() < 30.0, "{w}");
        // No hash rate was known: the J/TH is derived at the rated 3250 W / 21.5 J/TH.
        let j = l.j_per_th("a", 3250.0, 21.5).unwrap();
        assert!((j - 21.5 * w / 3250.0).abs() < 1e-9, "{j}");
        assert!(l.rejected().is_empty(), "{:?}", l.rejected());
    }

    #[test]
    fn commands_in_the_same_window_teach_nothing() {
        let mut l = learner();
        let t = Instant::now();
        l.reading(t, Some(40.0));
        // A shed of two miners at once.
        l.command(step("a", secs(t, 0.1), Level::Full, Level::Idle));
        l.command(step("b", secs(t, 0.1), Level::Full, Level::Idle));
        l.reading(secs(t, 4.0), Some(33.7));
        // A third command 1 s after a lone one, before it settled.
        l.reading(secs(t, 20.0), Some(33.7));
        l.command(step("c", secs(t, 20.5), Level::Full, Level::Idle));
        l.command(step("d", secs(t, 21.5), Level::Full, Level::Idle));
        l.reading(secs(t, 25.0), Some(27.4));
        // A command whose "before" reading predates the previous command's settling.
        l.reading(secs(t, 40.0), Some(27.4));
        l.command(step("e", secs(t, 40.2), Level::Full, Level::Idle));
        l.command(step("f", secs(t, 43.5), Level::Full, Level::Idle));
        l.reading(secs(t, 47.0), Some(21.1));
        assert!(l.estimates().is_empty(), "{:?}", l.estimates());
        assert_eq!(
            l.rejected(),
            [
                ("a".to_string(), Rejected::Overlap),
                ("b".to_string(), Rejected::Overlap),
                ("c".to_string(), Rejected::Overlap),
                ("d".to_string(), Rejected::Overlap),
                ("e".to_string(), Rejected::Overlap),
                ("f".to_string(), Rejected::Overlap),
            ]
        );
    }

    #[test]
    fn a_bad_or_stale_meter_on_either_side_teaches_nothing() {
        let mut l = learner();
        let t = Instant::now();
        // Bad before.
        l.reading(t, None);
        l.command(step("a", secs(t, 0.2), Level::Full, Level::Idle));
        // Good before, bad after.
        l.reading(secs(t, 10.0), Some(40.0));
        l.command(step("b", secs(t, 10.2), Level::Full, Level::Idle));
        l.reading(secs(t, 14.0), None);
        // Good but stale before (10 s old).
        l.reading(secs(t, 20.0), Some(40.0));
        l.command(step("c", secs(t, 30.0), Level::Full, Level::Idle));
        l.reading(secs(t, 34.0), Some(36.85));
        assert!(l.estimates().is_empty());
        assert_eq!(
            l.rejected(),
            [
                ("a".to_string(), Rejected::MeterNotGood),
                ("b".to_string(), Rejected::MeterNotGood),
                ("c".to_string(), Rejected::MeterNotGood),
            ]
        );
    }

    #[test]
    fn other_load_moving_during_a_step_is_rejected_as_noise() {
        let mut l = learner();
        let t = Instant::now();
        // A pause during which a 4 kW chiller started: the site rose.
        l.reading(t, Some(40.0));
        l.command(step("a", secs(t, 0.2), Level::Full, Level::Idle));
        l.reading(secs(t, 4.0), Some(40.85));
        // A resume during which other load dropped 2 kW: 3.15 − 2 = 1.15 kW, implausible.
        l.reading(secs(t, 10.0), Some(36.85));
        l.command(step("a", secs(t, 10.2), Level::Idle, Level::Full));
        l.reading(secs(t, 14.0), Some(38.0));
        // Limit steps between two reduced levels say nothing about full power.
        l.reading(secs(t, 20.0), Some(38.0));
        l.command(step("a", secs(t, 20.2), Level::Target(2000.0), Level::Idle));
        assert!(l.estimates().is_empty());
        assert_eq!(
            l.rejected(),
            [
                ("a".to_string(), Rejected::Noise),
                ("a".to_string(), Rejected::Noise),
                ("a".to_string(), Rejected::NotInformative),
            ]
        );
    }

    #[test]
    fn limit_steps_and_resumes_teach_and_hash_rates_give_j_per_th() {
        let mut l = learner();
        let mut t = Instant::now();
        // Full → 2000 W target: the site drops 1.2 kW, so full power is 3200 W.
        // 2000 W → full: it rises 1.2 kW. Idle → full: 3.1 kW above 100 W idle.
        let steps = [
            (Level::Full, Level::Target(2000.0), -1.2, Some(160.0)),
            (Level::Target(2000.0), Level::Full, 1.2, None),
            (Level::Idle, Level::Full, 3.1, Some(0.0)),
            (Level::Full, Level::Idle, -3.1, Some(160.0)),
            (Level::Full, Level::Idle, -3.1, Some(160.0)),
        ];
        for (from, to, dkw, ths) in steps {
            l.reading(t, Some(40.0));
            let mut s = step("a", secs(t, 0.2), from, to);
            s.hashrate_ths = ths;
            l.command(s);
            l.reading(secs(t, 3.5), Some(40.0 + dkw));
            t = secs(t, 10.0);
        }
        let e = l.estimates()["a"].clone();
        assert_eq!((e.samples, e.j_per_th_samples), (5, 3));
        assert!((e.nominal_w - 3200.0).abs() < 1e-6, "{e:?}");
        // 3200 W / 160 TH/s, measured: 20 J/TH, whatever the config says.
        assert!((l.j_per_th("a", 3250.0, 30.0).unwrap() - 20.0).abs() < 1e-9);
        assert!(l.rejected().is_empty(), "{:?}", l.rejected());
    }

    #[test]
    fn once_learned_the_estimate_is_the_reference_for_noise() {
        let mut l = learner();
        let mut t = Instant::now();
        for _ in 0..3 {
            t = clean_pause(&mut l, t, "a", 3400.0, 0.0);
        }
        // Learned 3400 W. A 2300 W step is 29 % off the configured 3250 W but 32 % off what was
        // learned: rejected. 2500 W (26 % off) is believed.
        t = clean_pause(&mut l, t, "a", 2300.0, 0.0);
        assert_eq!(l.rejected(), [("a".to_string(), Rejected::Noise)]);
        clean_pause(&mut l, t, "a", 2500.0, 0.0);
        assert_eq!(l.estimates()["a"].samples, 4);
    }
}
