//! The power controller: a pure decision function.
//!
//! Inputs: the site's measured power (or nothing, when the meter is blind), the active limit,
//! and every managed miner's nominal and idle power, efficiency and priority. Output: which
//! miners to pause and which to resume, now. Policy:
//! - Over the limit: pause running miners, least efficient (highest J/TH) first, then lowest
//!   priority, until the estimate is under `limit − margin`. Shedding is never ramped: the grid
//!   wants compliance within seconds. The next decision (with a new reading) sheds more if the
//!   site is still over.
//! - Under `limit − margin − hysteresis`: resume paused miners, most efficient first, at most
//!   `restore_step_kw` per `restore_interval`, and only what fits under the band's middle.
//! - No active signal (ended or expired): resume in the same ramped steps until none is paused.
//! - Blind meter during a signal: fail safe. Never resume; if the estimate from nominal powers is
//!   over the limit, shed by estimate.
//!
//! Being pure (time passed in), it is tested over recorded scenarios without sleeping.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    Running,
    /// Paused by this controller (miners paused by an operator are not handed to it).
    Paused,
}

#[derive(Debug, Clone)]
pub struct MinerInfo {
    pub id: String,
    /// Power drawn while hashing.
    pub nominal_w: f64,
    /// Power drawn while paused (fans, control board).
    pub idle_w: f64,
    /// Joules per terahash: higher is worse, and is shed first.
    pub efficiency_j_per_th: f64,
    /// Higher priority is kept running longer among equally efficient miners.
    pub priority: i32,
    pub state: PowerState,
}

impl MinerInfo {
    fn saving_w(&self) -> f64 {
        (self.nominal_w - self.idle_w).max(0.0)
    }
}

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Aim this far under the limit (meter noise, miners that ramp up).
    pub margin_kw: f64,
    /// Resume only when this far under `limit − margin`: no flapping.
    pub hysteresis_kw: f64,
    /// Most power resumed per step.
    pub restore_step_kw: f64,
    /// Time between restore steps.
    pub restore_interval: Duration,
    /// How long paused miners take to show on the meter (boards ramping down, the meter's own
    /// poll period). Until a reading taken this long after the last shed arrives, the
    /// controller does not shed more on the strength of an older reading: it would pause
    /// miners for power that is already gone.
    pub settle: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            margin_kw: 2.0,
            hysteresis_kw: 5.0,
            restore_step_kw: 20.0,
            restore_interval: Duration::from_secs(10),
            settle: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ControllerState {
    last_restore: Option<Instant>,
    /// When the controller last shed, and what it expected the site to draw after it.
    last_shed: Option<(Instant, f64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Pause(String),
    Resume(String),
}

#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub now: Instant,
    /// Fresh, good measurement of the whole site; `None` when the meter is blind.
    pub measured_kw: Option<f64>,
    /// When that measurement was taken; `None` = just now.
    pub measured_at: Option<Instant>,
    /// The active signal's limit; `None` when no signal is in force.
    pub limit_kw: Option<f64>,
    pub miners: &'a [MinerInfo],
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// What the site should draw after the actions (measurement adjusted by nominal powers).
    pub expected_kw: f64,
    pub why: &'static str,
}

fn estimated_kw(miners: &[MinerInfo]) -> f64 {
    miners
        .iter()
        .map(|m| {
            if m.state == PowerState::Running {
                m.nominal_w
            } else {
                m.idle_w
            }
        })
        .sum::<f64>()
        / 1000.0
}

/// Worst efficiency first, then lowest priority, then id for a stable order.
fn shed_order(miners: &[MinerInfo]) -> Vec<&MinerInfo> {
    let mut v: Vec<&MinerInfo> = miners
        .iter()
        .filter(|m| m.state == PowerState::Running)
        .collect();
    v.sort_by(|a, b| {
        b.efficiency_j_per_th
            .total_cmp(&a.efficiency_j_per_th)
            .then(a.priority.cmp(&b.priority))
            .then(a.id.cmp(&b.id))
    });
    v
}

/// Best efficiency first, then highest priority.
fn restore_order(miners: &[MinerInfo]) -> Vec<&MinerInfo> {
    let mut v: Vec<&MinerInfo> = miners
        .iter()
        .filter(|m| m.state == PowerState::Paused)
        .collect();
    v.sort_by(|a, b| {
        a.efficiency_j_per_th
            .total_cmp(&b.efficiency_j_per_th)
            .then(b.priority.cmp(&a.priority))
            .then(a.id.cmp(&b.id))
    });
    v
}

pub fn decide(cfg: &ControllerConfig, state: &mut ControllerState, inputs: Inputs<'_>) -> Decision {
    let site_kw = inputs
        .measured_kw
        .unwrap_or_else(|| estimated_kw(inputs.miners));
    let Some(limit) = inputs.limit_kw else {
        return restore(
            cfg,
            state,
            inputs,
            site_kw,
            f64::INFINITY,
            "no active signal: restoring in steps",
        );
    };
    let goal = limit - cfg.margin_kw;
    if site_kw > goal {
        // A reading from before the last shed has settled does not show it yet: until the meter
        // catches up, trust what that shed was expected to leave (a lower limit arriving
        // meanwhile still sheds more, from there).
        let measured_at = inputs.measured_at.unwrap_or(inputs.now);
        let site_kw = match state.last_shed {
            Some((at, expected))
                if inputs.measured_kw.is_some() && measured_at < at + cfg.settle =>
            {
                site_kw.min(expected)
            }
            _ => site_kw,
        };
        if site_kw <= goal {
            return Decision {
                actions: vec![],
                expected_kw: site_kw,
                why: "waiting for the meter to show the last shed",
            };
        }
        let mut expected = site_kw;
        let mut actions = Vec::new();
        for m in shed_order(inputs.miners) {
            if expected <= goal {
                break;
            }
            actions.push(Action::Pause(m.id.clone()));
            expected -= m.saving_w() / 1000.0;
        }
        if !actions.is_empty() {
            state.last_shed = Some((inputs.now, expected));
        }
        let why = if inputs.measured_kw.is_none() {
            "meter blind during a signal: shedding by estimate"
        } else {
            "over the limit: shedding least efficient first"
        };
        return Decision {
            actions,
            expected_kw: expected,
            why,
        };
    }
    if inputs.measured_kw.is_none() {
        return Decision {
            actions: vec![],
            expected_kw: site_kw,
            why: "meter blind during a signal: holding (fail safe)",
        };
    }
    if site_kw < goal - cfg.hysteresis_kw {
        // Start below the band, fill to its middle: a reading near the goal never flips between
        // shedding and restoring.
        return restore(
            cfg,
            state,
            inputs,
            site_kw,
            goal - cfg.hysteresis_kw / 2.0,
            "under the limit: restoring in steps",
        );
    }
    Decision {
        actions: vec![],
        expected_kw: site_kw,
        why: "within the hysteresis band: holding",
    }
}

fn restore(
    cfg: &ControllerConfig,
    state: &mut ControllerState,
    inputs: Inputs<'_>,
    site_kw: f64,
    ceiling_kw: f64,
    why: &'static str,
) -> Decision {
    let due = state
        .last_restore
        .is_none_or(|t| inputs.now.duration_since(t) >= cfg.restore_interval);
    let paused = restore_order(inputs.miners);
    if !due || paused.is_empty() {
        return Decision {
            actions: vec![],
            expected_kw: site_kw,
            why,
        };
    }
    let mut expected = site_kw;
    let mut step = 0.0;
    let mut actions = Vec::new();
    for m in paused {
        let add = m.saving_w() / 1000.0;
        // Always allow one miner per step when there is no limit, so a step smaller than one
        // miner still makes progress.
        let fits_step =
            step + add <= cfg.restore_step_kw || actions.is_empty() && ceiling_kw.is_infinite();
        if !fits_step || expected + add > ceiling_kw {
            break;
        }
        actions.push(Action::Resume(m.id.clone()));
        expected += add;
        step += add;
    }
    if !actions.is_empty() {
        state.last_restore = Some(inputs.now);
        // What the last shed expected to leave no longer holds.
        state.last_shed = None;
    }
    Decision {
        actions,
        expected_kw: expected,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 miners of 3.25 kW (idle 0.1 kW); efficiency 20..29 J/TH (m9 is the worst).
    fn site() -> Vec<MinerInfo> {
        (0..10)
            .map(|i| MinerInfo {
                id: format!("m{i}"),
                nominal_w: 3250.0,
                idle_w: 100.0,
                efficiency_j_per_th: 20.0 + i as f64,
                priority: 0,
                state: PowerState::Running,
            })
            .collect()
    }

    fn apply(miners: &mut [MinerInfo], d: &Decision) {
        for a in &d.actions {
            let (id, s) = match a {
                Action::Pause(id) => (id, PowerState::Paused),
                Action::Resume(id) => (id, PowerState::Running),
            };
            miners.iter_mut().find(|m| &m.id == id).unwrap().state = s;
        }
    }

    fn ids(d: &Decision) -> Vec<String> {
        d.actions
            .iter()
            .map(|a| match a {
                Action::Pause(i) | Action::Resume(i) => i.clone(),
            })
            .collect()
    }

    #[test]
    fn sheds_least_efficient_first_until_under_limit_minus_margin() {
        let cfg = ControllerConfig::default();
        let mut st = ControllerState::default();
        let mut m = site();
        let t0 = Instant::now();
        // 32.5 kW of miners + 2 kW of other load; limit 40 % of 34.5 ≈ 13.8 kW.
        let d = decide(
            &cfg,
            &mut st,
            Inputs {
                now: t0,
                measured_kw: Some(34.5),
                measured_at: None,
                limit_kw: Some(13.8),
                miners: &m,
            },
        );
        // 22.7 kW to shed at 3.15 kW per paused miner: eight miners.
        assert_eq!(ids(&d), ["m9", "m8", "m7", "m6", "m5", "m4", "m3", "m2"]);
        assert!(d.expected_kw <= 13.8 - cfg.margin_kw, "{}", d.expected_kw);
        apply(&mut m, &d);
        // The meter agrees: hold. No flapping inside the band.
        let d = decide(
            &cfg,
            &mut st,
            Inputs {
                now: t0 + Duration::from_secs(1),
                measured_kw: Some(d.expected_kw),
                measured_at: None,
                limit_kw: Some(13.8),
                miners: &m,
            },
        );
        assert!(d.actions.is_empty(), "{d:?}");
    }

    #[test]
    fn still_over_after_shedding_sheds_more() {
        let cfg = ControllerConfig::default();
        let mut st = ControllerState::default();
        let mut m = site();
        let t0 = Instant::now();
        let d = decide(
            &cfg,
            &mut st,
            Inputs {
                now: t0,
                measured_kw: Some(34.5),
                measured_at: None,
                limit_kw: Some(30.0),
                miners: &m,
            },
        );
        apply(&mut m, &d);
        assert_eq!(
            ids(&d),
            ["m9", "m8", "m7"],
            "34.5 → 25.05 kW, under the 28 kW goal"
        );
        // Other load grew by 8 kW: once the shed has settled, the meter says the site is still
        // over.
        let d = decide(
            &cfg,
            &mut st,
            Inputs {
                now: t0 + cfg.settle + Duration::from_secs(1),
                measured_kw: Some(33.0),
                measured_at: None,
                limit_kw: Some(30.0),
                miners: &m,
            },
        );
        assert_eq!(ids(&d), ["m6", "m5"]);
    }

    #[test]
    fn a_reading_older_than_the_settle_time_does_not_shed_more() {
        let cfg = ControllerConfig::default();
        let mut st = ControllerState::default();
        let mut m = site();
        let t0 = Instant::now();
        let first = Inputs {
            now: t0,
            measured_kw: Some(34.5),
            measured_at: None,
            limit_kw: Some(30.0),
            miners: &m,
        };
        let d = decide(&cfg, &mut st, first);
        assert_eq!(ids(&d), ["m9", "m8", "m7"]);
        apply(&mut m, &d);
        // 100 ms later the meter still shows the reading from before the pause (and another
        // taken just after it, before the boards ramped down): nothing more to shed.
        for measured_at in [t0 - Duration::from_millis(50), t0 + cfg.settle / 2] {
            let d = decide(
                &cfg,
                &mut st,
                Inputs {
                    now: t0 + cfg.settle / 2 + Duration::from_millis(100),
                    measured_kw: Some(34.5),
                    measured_at: Some(measured_at),
                    limit_kw: Some(30.0),
                    miners: &m,
                },
            );
            assert!(d.actions.is_empty(), "{d:?}");
        }
        // A lower limit during the settle time sheds more at once, counted from what the first
        // shed is expected to leave (25.05 kW → goal 18 kW: three more).
        let d = decide(
            &cfg,
            &mut st,
            Inputs {
                now: t0 + Duration::from_millis(200),
                measured_kw: Some(34.5),
                measured_at: Some(t0 - Duration::from_millis(50)),
                limit_kw: Some(20.0),
                miners: &m,
            },
        );
        assert_eq!(ids(&d), ["m6", "m5", "m4"]);
    }

    #[test]
    fn priority_breaks_ties_in_efficiency() {
        let cfg = ControllerConfig::default();
        let mut m = site();
        for x in m.iter_mut() {
            x.efficiency_j_per_th = 25.0;
        }
        m[0].priority = -1; // shed first
        m[9].priority = 10; // kept longest
        let d = decide(
            &cfg,
            &mut ControllerState::default(),
            Inputs {
                now: Instant::now(),
                measured_kw: Some(34.5),
                measured_at: None,
                limit_kw: Some(28.0),
                miners: &m,
            },
        );
        assert_eq!(ids(&d)[0], "m0");
        assert!(!ids(&d).contains(&"m9".to_string()));
    }

    #[test]
    fn blind_meter_during_a_signal_never_restores_and_sheds_by_estimate() {
        let cfg = ControllerConfig::default();
        let mut st = ControllerState::default();
        let mut m = site();
        let t0 = Instant::now();
        let d = decide(
            &cfg,
            &mut st,
            Inputs {
                now: t0,
                measured_kw: None,
                measured_at: None,
                limit_kw: Some(20.0),
                miners: &m,
            },
        );
        assert_eq!(
            d.actions.len(),
            5,
            "estimate 32.5 kW → 16.75 kW, under the 18 kW goal"
        );
        apply(&mut m, &d);
        for i in 1..20 {
            let d = decide(
                &cfg,
                &mut st,
                Inputs {
                    now: t0 + Duration::from_secs(i * 30),
                    measured_kw: None,
                    measured_at: None,
                    limit_kw: Some(20.0),
                    miners: &m,
                },
            );
            assert!(d.actions.is_empty(), "blind: hold, never restore ({d:?})");
        }
    }

    #[test]
    fn signal_end_restores_in_ramped_steps_most_efficient_first() {
        let cfg = ControllerConfig {
            restore_step_kw: 7.0,
            ..Default::default()
        };
        let mut st = ControllerState::default();
        let mut m = site();
        for x in m.iter_mut() {
            x.state = PowerState::Paused;
        }
        let t0 = Instant::now();
        let mut order = Vec::new();
        let mut steps = 0;
        for i in 0..100u64 {
            let now = t0 + Duration::from_secs(i);
            let d = decide(
                &cfg,
                &mut st,
                Inputs {
                    now,
                    measured_kw: None,
                    measured_at: None,
                    limit_kw: None,
                    miners: &m,
                },
            );
            if !d.actions.is_empty() {
                steps += 1;
                assert!(
                    d.actions.len() <= 2,
                    "step of at most 7 kW = two 3.15 kW miners"
                );
                order.extend(ids(&d));
            }
            apply(&mut m, &d);
        }
        assert_eq!(order, (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
        assert_eq!(steps, 5, "10 miners, 2 per 10 s step");
    }

    #[test]
    fn under_the_limit_restores_only_what_fits_and_respects_hysteresis() {
        let cfg = ControllerConfig::default();
        let mut st = ControllerState::default();
        let mut m = site();
        for x in m.iter_mut().take(4) {
            x.state = PowerState::Paused;
        }
        let t0 = Instant::now();
        // Limit 30, goal 28, band 23–28: at 22 kW restoring starts, filling to 25.5 kW: one
        // miner (3.15 kW) fits, two do not.
        let d = decide(
            &cfg,
            &mut st,
            Inputs {
                now: t0,
                measured_kw: Some(22.0),
                measured_at: None,
                limit_kw: Some(30.0),
                miners: &m,
            },
        );
        assert_eq!(ids(&d), ["m0"]);
        apply(&mut m, &d);
        // At 25.2 kW, inside the band: hold.
        let d = decide(
            &cfg,
            &mut st,
            Inputs {
                now: t0 + Duration::from_secs(60),
                measured_kw: Some(25.2),
                measured_at: None,
                limit_kw: Some(30.0),
                miners: &m,
            },
        );
        assert!(d.actions.is_empty());
    }
}
