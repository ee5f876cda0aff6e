//! The power controller: a pure decision function.
//!
//! Inputs: the site's measured power (or nothing, when the meter is blind), the active limit,
//! and every managed miner's nominal and idle power, efficiency, priority and (when its firmware
//! takes a power target) the lowest target it accepts. Output: which miners to pause, which to
//! power-limit (and to how many watts), which to resume or raise, now. Policy:
//! - Over the limit: shed `site − (limit − margin)`, taking watts from the least efficient miners
//!   first (highest J/TH, then lowest priority). A miner whose firmware takes a power target is
//!   limited down toward its `min_power_w` when that covers what is left to shed (the last one
//!   only as far as needed); otherwise it is paused. When pausing the next miner would shed more
//!   than needed, the controller compares, in hashes lost (see [`MinerInfo::hashes_per_watt`]):
//!   (a) pausing it, (b) limiting it to its minimum and covering the rest from the next miners,
//!   (c) leaving it and covering everything with power limits on the next miners; and takes the
//!   cheapest. So a miner is never paused while a less efficient one still runs above its
//!   minimum. Shedding is never ramped: the grid wants compliance within seconds. The next
//!   decision (with a new reading) sheds more if the site is still over; a limit that cannot be
//!   reached in time shows as "still over" and sheds by pausing.
//! - Under `limit − margin − hysteresis`: restore, most efficient first, at most
//!   `restore_step_kw` per `restore_interval`, and only what fits under the band's middle: a
//!   paused miner is resumed whole, a limited miner's target is raised (partly, when that is all
//!   the step or the band allows) until it is back at nominal ([`Action::Limit`] with
//!   `watts ≥ nominal_w` lifts the limit).
//! - No active signal (ended or expired): restore in the same ramped steps until every miner
//!   runs at nominal.
//! - Blind meter during a signal: fail safe. Never restore; if the estimate from the miners'
//!   powers is over the limit, shed by estimate.
//!
//! Being pure (time passed in), it is tested over recorded scenarios without sleeping.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    Running,
    /// Paused by this controller (miners paused by an operator are not handed to it).
    Paused,
    /// Hashing under a power target of this many watts, set by this controller.
    Limited(u32),
}

impl PowerState {
    /// The state a miner of `nominal_w` is in once its firmware took a target of `watts`: a
    /// target at or above nominal is no limit.
    pub fn after_limit(nominal_w: f64, watts: u32) -> PowerState {
        if f64::from(watts) >= nominal_w {
            PowerState::Running
        } else {
            PowerState::Limited(watts)
        }
    }
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
    /// The lowest power target its firmware accepts; `None`: it cannot be power-limited (no
    /// such firmware feature, not configured, or a limit command failed during this signal).
    pub min_power_w: Option<f64>,
    pub state: PowerState,
}

impl MinerInfo {
    /// What it draws now, by the model (nominal, idle, or its power target).
    pub fn draw_w(&self) -> f64 {
        match self.state {
            PowerState::Running => self.nominal_w,
            PowerState::Paused => self.idle_w,
            PowerState::Limited(w) => f64::from(w).clamp(self.idle_w, self.nominal_w),
        }
    }

    /// The lowest whole-watt target to send, when it can be limited at all below nominal.
    fn floor_w(&self) -> Option<f64> {
        let floor = self.min_power_w?.ceil().max(self.idle_w.ceil());
        (floor.is_finite() && floor < self.nominal_w).then_some(floor)
    }

    /// Hash rate lost per watt shed (TH/s per W). The model: the rated hash rate
    /// (`nominal_w / efficiency`) scales with the power drawn above idle, the same for a pause
    /// and for a power limit. Real firmware is usually more efficient when limited, so the model
    /// errs toward pausing, never toward limits that lose more than promised.
    pub fn hashes_per_watt(&self) -> f64 {
        let hashing_w = self.nominal_w - self.idle_w;
        if hashing_w <= 0.0 || self.efficiency_j_per_th <= 0.0 {
            return 0.0;
        }
        self.nominal_w / self.efficiency_j_per_th / hashing_w
    }
}

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Aim this far under the limit (meter noise, miners that ramp up).
    pub margin_kw: f64,
    /// Resume only when this far under `limit − margin`: no flapping.
    pub hysteresis_kw: f64,
    /// Most power restored per step (resumed miners and raised limits together).
    pub restore_step_kw: f64,
    /// Time between restore steps.
    pub restore_interval: Duration,
    /// How long paused or limited miners take to show on the meter (boards ramping down, the
    /// meter's own poll period). Until a reading taken this long after the last shed arrives,
    /// the controller does not shed more on the strength of an older reading: it would pause
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
    /// When the controller last restored, and what it expected the site to draw after it.
    restored_to: Option<(Instant, f64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Pause(String),
    Resume(String),
    /// Set the miner's power target; `watts ≥ nominal_w` lifts a limit (back to nominal).
    Limit {
        id: String,
        watts: u32,
    },
}

impl Action {
    pub fn id(&self) -> &str {
        match self {
            Action::Pause(id) | Action::Resume(id) | Action::Limit { id, .. } => id,
        }
    }
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
    /// What the site should draw after the actions (measurement adjusted by the miners' powers).
    pub expected_kw: f64,
    pub why: &'static str,
}

fn estimated_kw(miners: &[MinerInfo]) -> f64 {
    miners.iter().map(MinerInfo::draw_w).sum::<f64>() / 1000.0
}

/// Worst efficiency first, then lowest priority, then id for a stable order.
fn shed_order(miners: &[MinerInfo]) -> Vec<&MinerInfo> {
    let mut v: Vec<&MinerInfo> = miners
        .iter()
        .filter(|m| m.state != PowerState::Paused)
        .collect();
    v.sort_by(|a, b| {
        b.efficiency_j_per_th
            .total_cmp(&a.efficiency_j_per_th)
            .then(a.priority.cmp(&b.priority))
            .then(a.id.cmp(&b.id))
    });
    v
}

/// Best efficiency first, then highest priority: paused miners and limited ones alike.
fn restore_order(miners: &[MinerInfo]) -> Vec<&MinerInfo> {
    let mut v: Vec<&MinerInfo> = miners
        .iter()
        .filter(|m| m.state != PowerState::Running)
        .collect();
    v.sort_by(|a, b| {
        a.efficiency_j_per_th
            .total_cmp(&b.efficiency_j_per_th)
            .then(b.priority.cmp(&a.priority))
            .then(a.id.cmp(&b.id))
    });
    v
}

/// One shed step on a candidate (by its index in shed order).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shed {
    Pause,
    /// A whole-watt power target.
    LimitTo(f64),
}

/// Shed steps, the watts they save and the hash rate they cost.
#[derive(Debug, Clone, Default)]
struct Plan {
    steps: Vec<(usize, Shed)>,
    saved_w: f64,
    lost: f64,
}

impl Plan {
    fn push(&mut self, i: usize, m: &MinerInfo, step: Shed) {
        let to = match step {
            Shed::Pause => m.idle_w,
            Shed::LimitTo(w) => w,
        };
        let saved = (m.draw_w() - to).max(0.0);
        self.steps.push((i, step));
        self.saved_w += saved;
        self.lost += saved * m.hashes_per_watt();
    }
}

/// The power target that takes `need_w` off `m`, if its firmware can go that low: whole watts,
/// rounded down so the saving is at least `need_w`.
fn partial_limit(m: &MinerInfo, need_w: f64) -> Option<f64> {
    let floor = m.floor_w()?;
    let target = (m.draw_w() - need_w).floor();
    (target >= floor && target < m.draw_w()).then_some(target)
}

/// The simple greedy, used to price the alternatives in [`plan_shed`]: in order, a partial
/// limit when one covers what is left, else a pause (or, with `pauses` off, a limit to the
/// floor). `None` when it cannot shed `need_w`.
fn greedy(cands: &[&MinerInfo], offset: usize, mut need_w: f64, pauses: bool) -> Option<Plan> {
    let mut plan = Plan::default();
    for (k, m) in cands.iter().enumerate() {
        if need_w <= 0.0 {
            break;
        }
        let before = plan.saved_w;
        if let Some(t) = partial_limit(m, need_w) {
            plan.push(offset + k, m, Shed::LimitTo(t));
        } else if pauses {
            plan.push(offset + k, m, Shed::Pause);
        } else if let Some(f) = m.floor_w().filter(|f| *f < m.draw_w()) {
            plan.push(offset + k, m, Shed::LimitTo(f));
        }
        need_w -= plan.saved_w - before;
    }
    (need_w <= 0.0).then_some(plan)
}

/// What to shed to take `need_w` off the site, fewest hashes lost within the rule "never pause
/// a miner while a less efficient one runs above its floor". `cands` are in shed order. When
/// not even everything covers `need_w`, everything is shed.
fn plan_shed(cands: &[&MinerInfo], mut need_w: f64) -> Plan {
    let mut plan = Plan::default();
    let mut i = 0;
    while i < cands.len() && need_w > 0.0 {
        let m = cands[i];
        let before = plan.saved_w;
        if let Some(t) = partial_limit(m, need_w) {
            // Its own watts are the cheapest left: take just what is needed.
            plan.push(i, m, Shed::LimitTo(t));
            break;
        }
        let pause_saves = (m.draw_w() - m.idle_w).max(0.0);
        if need_w >= pause_saves {
            plan.push(i, m, Shed::Pause);
            need_w -= plan.saved_w - before;
            i += 1;
            continue;
        }
        // Pausing it sheds more than needed: price the alternatives in hash rate lost.
        let rest = &cands[i + 1..];
        let pause_lost = pause_saves * m.hashes_per_watt();
        let floored = m.floor_w().filter(|f| *f < m.draw_w()).map(|f| {
            let saves = m.draw_w() - f;
            let then = greedy(rest, i + 1, need_w - saves, true);
            (f, saves * m.hashes_per_watt(), then)
        });
        let to_floor = floored
            .as_ref()
            .and_then(|(f, lost, then)| then.as_ref().map(|p| (*f, lost + p.lost)));
        let skip = greedy(rest, i + 1, need_w, false);
        let best_alt = match (to_floor, &skip) {
            (Some((f, lost)), Some(s)) if lost <= s.lost => Some((Some(f), lost)),
            (Some((f, lost)), None) => Some((Some(f), lost)),
            (_, Some(s)) => Some((None, s.lost)),
            (None, None) => None,
        };
        match best_alt {
            // (b) down to its floor, then go on with the next miners (which may branch again).
            Some((Some(f), lost)) if lost < pause_lost => {
                plan.push(i, m, Shed::LimitTo(f));
                need_w -= plan.saved_w - before;
                i += 1;
            }
            // (c) leave it; power limits on the next miners cover the rest.
            Some((None, lost)) if lost < pause_lost => {
                if let Some(s) = skip {
                    for (k, step) in s.steps {
                        plan.push(k, cands[k], step);
                    }
                }
                break;
            }
            // (a) pause it: the overshoot costs fewer hashes than any alternative.
            _ => {
                plan.push(i, m, Shed::Pause);
                break;
            }
        }
    }
    plan
}

pub fn decide(cfg: &ControllerConfig, state: &mut ControllerState, inputs: Inputs<'_>) -> Decision {
    let mut site_kw = inputs
        .measured_kw
        .unwrap_or_else(|| estimated_kw(inputs.miners));
    // A reading from before the last restore has settled does not show the miners it resumed
    // yet: until the meter catches up, count on what that restore was expected to bring. A
    // signal arriving right after a restore would otherwise shed for the lower, stale reading
    // and wait a whole `settle` before shedding the rest.
    if let (Some(measured), Some((at, expected))) = (inputs.measured_kw, state.restored_to) {
        if inputs.measured_at.unwrap_or(inputs.now) < at + cfg.settle {
            site_kw = measured.max(expected);
        }
    }
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
        let cands = shed_order(inputs.miners);
        let plan = plan_shed(&cands, (site_kw - goal) * 1000.0);
        let actions: Vec<Action> = plan
            .steps
            .iter()
            .map(|(k, step)| match step {
                Shed::Pause => Action::Pause(cands[*k].id.clone()),
                Shed::LimitTo(w) => Action::Limit {
                    id: cands[*k].id.clone(),
                    watts: *w as u32,
                },
            })
            .collect();
        let expected = site_kw - plan.saved_w / 1000.0;
        if !actions.is_empty() {
            state.last_shed = Some((inputs.now, expected));
            // What the last restore expected to bring is part of this expectation now.
            state.restored_to = None;
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
    let shed = restore_order(inputs.miners);
    if !due || shed.is_empty() {
        return Decision {
            actions: vec![],
            expected_kw: site_kw,
            why,
        };
    }
    let mut expected = site_kw;
    let mut step = 0.0;
    let mut actions = Vec::new();
    for m in shed {
        if let PowerState::Limited(_) = m.state {
            // A limit is raised as far as the step and the band allow, in whole watts: up to
            // nominal lifts it, less leaves it limited (and ends this step).
            let room = (m.nominal_w - m.draw_w()) / 1000.0;
            let add = room
                .min(cfg.restore_step_kw - step)
                .min(ceiling_kw - expected);
            let watts = (m.draw_w() + add * 1000.0).floor();
            if add >= room {
                actions.push(Action::Limit {
                    id: m.id.clone(),
                    watts: m.nominal_w.ceil() as u32,
                });
                expected += room;
                step += room;
                continue;
            }
            if watts > m.draw_w() {
                actions.push(Action::Limit {
                    id: m.id.clone(),
                    watts: watts as u32,
                });
                expected += (watts - m.draw_w()) / 1000.0;
            }
            break;
        }
        let add = (m.nominal_w - m.idle_w).max(0.0) / 1000.0;
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
        state.restored_to = Some((inputs.now, expected));
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
                min_power_w: None,
                state: PowerState::Running,
            })
            .collect()
    }

    fn apply(miners: &mut [MinerInfo], d: &Decision) {
        for a in &d.actions {
            let m = miners.iter_mut().find(|m| m.id == a.id()).unwrap();
            m.state = match a {
                Action::Pause(_) => PowerState::Paused,
                Action::Resume(_) => PowerState::Running,
                Action::Limit { watts, .. } => PowerState::after_limit(m.nominal_w, *watts),
            };
        }
    }

    fn ids(d: &Decision) -> Vec<String> {
        d.actions.iter().map(|a| a.id().to_string()).collect()
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

    /// A signal right after a restore, with the meter still reading the curtailed site: the
    /// shed is sized for what the restore brought back, not for the stale reading (which would
    /// leave the site over the limit for a whole settle time).
    #[test]
    fn a_signal_right_after_a_restore_sheds_for_the_restored_site() {
        let cfg = ControllerConfig {
            restore_step_kw: 1e9,
            restore_interval: Duration::ZERO,
            ..Default::default()
        };
        let mut st = ControllerState::default();
        let mut m = site();
        for x in &mut m[5..] {
            x.state = PowerState::Paused;
        }
        let t0 = Instant::now();
        // No signal: everything comes back. Five paused miners: 15.75 kW more expected.
        let stale_kw = 2.0 + 5.0 * 3.25 + 5.0 * 0.1;
        let d = decide(
            &cfg,
            &mut st,
            Inputs {
                now: t0,
                measured_kw: Some(stale_kw),
                measured_at: None,
                limit_kw: None,
                miners: &m,
            },
        );
        assert_eq!(ids(&d), ["m5", "m6", "m7", "m8", "m9"]);
        apply(&mut m, &d);
        let full_kw = d.expected_kw;
        assert!((full_kw - 34.5).abs() < 1e-9, "{full_kw}");
        // 100 ms later a signal; the newest reading was taken before the restore showed.
        let d = decide(
            &cfg,
            &mut st,
            Inputs {
                now: t0 + Duration::from_millis(100),
                measured_kw: Some(stale_kw),
                measured_at: Some(t0 + Duration::from_millis(50)),
                limit_kw: Some(13.8),
                miners: &m,
            },
        );
        // The same eight miners as from a settled full site, at once.
        assert_eq!(ids(&d), ["m9", "m8", "m7", "m6", "m5", "m4", "m3", "m2"]);
        assert!(d.expected_kw <= 13.8 - cfg.margin_kw, "{}", d.expected_kw);
        // A reading taken after the restore settled is believed as it is again.
        let mut st = ControllerState::default();
        let mut m2 = site();
        for x in &mut m2[5..] {
            x.state = PowerState::Paused;
        }
        let d = decide(
            &cfg,
            &mut st,
            Inputs {
                now: t0,
                measured_kw: Some(stale_kw),
                measured_at: None,
                limit_kw: None,
                miners: &m2,
            },
        );
        apply(&mut m2, &d);
        let later = t0 + cfg.settle + Duration::from_millis(100);
        let d = decide(
            &cfg,
            &mut st,
            Inputs {
                now: later,
                // Under limit − margin (11.8), inside the hysteresis band: hold.
                measured_kw: Some(11.0),
                measured_at: Some(later),
                limit_kw: Some(13.8),
                miners: &m2,
            },
        );
        assert!(
            d.actions.is_empty(),
            "a settled reading under the limit holds: {d:?}"
        );
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

    /// `site()` where the miners in `limitable` take power targets down to `min_w`.
    fn site_with_limits(limitable: &[usize], min_w: f64) -> Vec<MinerInfo> {
        let mut m = site();
        for i in limitable {
            m[*i].min_power_w = Some(min_w);
        }
        m
    }

    fn shed_once(m: &[MinerInfo], measured_kw: f64, limit_kw: f64) -> Decision {
        decide(
            &ControllerConfig::default(),
            &mut ControllerState::default(),
            Inputs {
                now: Instant::now(),
                measured_kw: Some(measured_kw),
                measured_at: None,
                limit_kw: Some(limit_kw),
                miners: m,
            },
        )
    }

    fn limit(id: &str, watts: u32) -> Action {
        Action::Limit {
            id: id.into(),
            watts,
        }
    }

    fn pause(id: &str) -> Action {
        Action::Pause(id.into())
    }

    #[test]
    fn the_last_miner_is_limited_only_as_far_as_needed_instead_of_paused() {
        // Every miner takes targets down to 1500 W. 34.5 kW, limit 30 → goal 28: 6.5 kW to shed.
        // m9 and m8 cannot give 6.5 and 3.35 kW by a limit (1.75 kW at most): paused; m7 gives
        // the last 200 W by a limit. Pausing only would have shed 9.45 kW.
        let mut m = site_with_limits(&(0..10).collect::<Vec<_>>(), 1500.0);
        let d = shed_once(&m, 34.5, 30.0);
        assert_eq!(d.actions, [pause("m9"), pause("m8"), limit("m7", 3050)]);
        assert_eq!(d.expected_kw, 28.0);
        apply(&mut m, &d);
        assert_eq!(m[7].state, PowerState::Limited(3050));
        // The meter agrees: inside the band, nothing more.
        let d = shed_once(&m, 28.0, 30.0);
        assert!(d.actions.is_empty(), "{d:?}");
    }

    #[test]
    fn a_small_excess_limits_a_better_miner_rather_than_pausing_a_worse_one_that_cannot_limit() {
        // m9 (29 J/TH) cannot limit; m8 (28 J/TH) can. 1 kW over: pausing m9 loses its whole
        // 112 TH/s, limiting m8 by 1 kW loses 37 TH/s.
        let m = site_with_limits(&[8], 1500.0);
        let d = shed_once(&m, 34.5, 35.5);
        assert_eq!(d.actions, [limit("m8", 2250)]);
        assert_eq!(d.expected_kw, 33.5);
    }

    #[test]
    fn a_worse_miner_is_paused_when_limits_on_better_ones_would_lose_more_hashes() {
        // 3 kW to shed. m9 cannot limit; m8..m5 can give 750 W each (floor 2500 W). Limiting all
        // four loses 117 TH/s; pausing m9 loses 112 TH/s (and overshoots by 150 W).
        let m = site_with_limits(&[8, 7, 6, 5], 2500.0);
        let d = shed_once(&m, 34.5, 33.5);
        assert_eq!(d.actions, [pause("m9")]);
        // With only three of them limitable the limits cannot cover it at all: still the pause.
        let m = site_with_limits(&[8, 7, 6], 2500.0);
        assert_eq!(shed_once(&m, 34.5, 33.5).actions, [pause("m9")]);
        // Even with floors of 1500 W, 3 kW by limits (m8 −1.75, m7 −1.25 kW) loses 112.3 TH/s:
        // pausing m9 still wins, narrowly.
        let m = site_with_limits(&[8, 7], 1500.0);
        assert_eq!(shed_once(&m, 34.5, 33.5).actions, [pause("m9")]);
        // For 2 kW, though, m8 at its floor and m7 by 250 W lose 74 TH/s: limits.
        assert_eq!(
            shed_once(&m, 34.5, 34.5).actions,
            [limit("m8", 1500), limit("m7", 3000)]
        );
    }

    #[test]
    fn a_worse_miner_goes_to_its_floor_and_a_better_one_gives_the_rest() {
        // 2.5 kW to shed; m9 and m8 take targets down to 1500 W. Pausing m9 loses 112 TH/s;
        // m9 at 1500 W (1.75 kW, 62 TH/s) plus m8 by 750 W (28 TH/s) loses 90.
        let m = site_with_limits(&[9, 8], 1500.0);
        let d = shed_once(&m, 34.5, 34.0);
        assert_eq!(d.actions, [limit("m9", 1500), limit("m8", 2500)]);
        assert_eq!(d.expected_kw, 32.0);
        // If m8 could not limit, the rest would need a pause of m8: pausing m9 is cheaper.
        let m = site_with_limits(&[9], 1500.0);
        assert_eq!(shed_once(&m, 34.5, 34.0).actions, [pause("m9")]);
    }

    #[test]
    fn still_over_with_a_miner_at_its_floor_pauses_it_next() {
        // m9 already runs at its 1500 W floor; the meter says 1.4 kW over: a limit cannot give
        // more, so it is paused (1.4 kW exactly) before anyone more efficient is touched.
        let mut m = site_with_limits(&[9, 8], 1500.0);
        m[9].state = PowerState::Limited(1500);
        let d = shed_once(&m, 30.4, 31.0);
        assert_eq!(d.actions, [pause("m9")]);
        // The blind estimate counts the limit: 9 × 3.25 + 1.5 = 30.75 kW, under a 33 kW goal.
        let d = decide(
            &ControllerConfig::default(),
            &mut ControllerState::default(),
            Inputs {
                now: Instant::now(),
                measured_kw: None,
                measured_at: None,
                limit_kw: Some(35.0),
                miners: &m,
            },
        );
        assert_eq!((d.actions.len(), d.expected_kw), (0, 30.75));
    }

    #[test]
    fn restoring_raises_limits_in_steps_most_efficient_first_then_resumes() {
        let cfg = ControllerConfig {
            restore_step_kw: 1.0,
            ..Default::default()
        };
        let mut st = ControllerState::default();
        let mut m = site_with_limits(&[0, 1], 1500.0);
        m[0].state = PowerState::Limited(1500);
        m[1].state = PowerState::Paused;
        let t0 = Instant::now();
        let mut steps = Vec::new();
        for i in 0..40u64 {
            let d = decide(
                &cfg,
                &mut st,
                Inputs {
                    now: t0 + Duration::from_secs(i),
                    measured_kw: None,
                    measured_at: None,
                    limit_kw: None,
                    miners: &m,
                },
            );
            if !d.actions.is_empty() {
                steps.push((i, d.actions.clone()));
            }
            apply(&mut m, &d);
        }
        assert_eq!(
            steps,
            [
                (0, vec![limit("m0", 2500)]),
                // 750 W lifts m0; the paused m1 (3.15 kW) does not fit the rest of the step.
                (10, vec![limit("m0", 3250)]),
                // A step smaller than one miner still resumes one when no signal is in force.
                (20, vec![Action::Resume("m1".into())]),
            ]
        );
        assert!(m.iter().all(|x| x.state == PowerState::Running));
    }

    #[test]
    fn under_the_limit_a_limit_is_raised_only_to_the_middle_of_the_band() {
        let cfg = ControllerConfig {
            hysteresis_kw: 2.0,
            ..Default::default()
        };
        let mut st = ControllerState::default();
        let mut m = site_with_limits(&[0], 1500.0);
        m[0].state = PowerState::Limited(1500);
        m[1].state = PowerState::Paused;
        let t0 = Instant::now();
        // Limit 30, goal 28, band 26–28: from 25.5 kW fill to 27 kW: m0 up by 1.5 kW only.
        let run = |st: &mut ControllerState, m: &[MinerInfo], secs: u64, kw: f64| {
            decide(
                &cfg,
                st,
                Inputs {
                    now: t0 + Duration::from_secs(secs),
                    measured_kw: Some(kw),
                    measured_at: None,
                    limit_kw: Some(30.0),
                    miners: m,
                },
            )
        };
        let d = run(&mut st, &m, 0, 25.5);
        assert_eq!(d.actions, [limit("m0", 3000)]);
        assert_eq!(d.expected_kw, 27.0);
        apply(&mut m, &d);
        // At 27 kW, inside the band: hold, even after the restore interval.
        assert!(run(&mut st, &m, 60, 27.0).actions.is_empty());
    }
}
