//! The curtailment loop: the site meter and the grid signal go into the controller; its decisions
//! go out to the miners' firmware; compliance reports go back to the grid operator.
//!
//! The loop wakes on every new signal (so a limit is acted on at once) and on a short tick (so
//! the meter's verdict is checked and more is shed if the site is still over). Commands to many
//! miners are sent concurrently, each with its own timeout; a miner whose command failed keeps
//! its state and is tried again on the next decision.
//!
//! Power limits: a miner whose `min_power_w` is set and whose backend says it takes power targets
//! ([`crate::control::Capabilities::power_limit`]) may be limited instead of paused. A limit
//! command that fails (the firmware refuses the target, does not answer) takes that miner's
//! limits out of the controller's hands until the signal ends, so the next decision pauses it
//! instead of retrying a limit that does not work. Firmware resumes at the last target it was
//! given, so resuming a miner the loop had limited also lifts the limit (a target of nominal).

use crate::control::{ControlError, MinerControl};
use crate::controller::{
    decide, Action, ControllerConfig, ControllerState, Inputs, MinerInfo, PowerState,
};
use crate::efficiency::{Learner, LearnerConfig, Level, Step};
use crate::grid::{ComplianceReport, GridLink, Signal};
use crate::meter::MeterHandle;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A miner the controller may pause, power-limit and resume.
pub struct ManagedMiner {
    pub info: MinerInfo,
    pub control: Arc<dyn MinerControl>,
}

#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub controller: ControllerConfig,
    /// How often the meter's verdict is re-checked.
    pub tick: Duration,
    /// How often a compliance report is published during a signal.
    pub report_interval: Duration,
    /// Per-command timeout (the backends have their own too).
    pub command_timeout: Duration,
    /// Weight of the newest sample in each miner's learned power (see [`crate::efficiency`]).
    pub learn_weight: f64,
    /// Clean meter steps before a miner's learned power replaces its configured one; 0 = never.
    pub learn_min_samples: u32,
    /// Each miner's hash rate now, for learned J/TH; `None`: J/TH derived from learned watts.
    pub hashrate: Option<HashrateSource>,
}

/// A miner's hash rate in TH/s by its id, `None` when unknown.
pub type HashrateFn = dyn Fn(&str) -> Option<f64> + Send + Sync;

/// Where the loop reads hash rates (the proxy reads its workers' share rates).
#[derive(Clone)]
pub struct HashrateSource(pub Arc<HashrateFn>);

impl std::fmt::Debug for HashrateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashrateSource")
    }
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            controller: ControllerConfig::default(),
            tick: Duration::from_millis(250),
            report_interval: Duration::from_secs(5),
            command_timeout: Duration::from_secs(3),
            learn_weight: LearnerConfig::default().weight,
            learn_min_samples: LearnerConfig::default().min_samples,
            hashrate: None,
        }
    }
}

/// What the loop is doing, for the proxy's API and for tests.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CurtailmentStatus {
    pub signal_id: Option<String>,
    pub limit_kw: Option<f64>,
    pub measured_kw: Option<f64>,
    /// Miners the loop has cut: paused plus power-limited.
    pub miners_shed: usize,
    pub commands_ok: u64,
    pub commands_failed: u64,
    pub last_decision: String,
    /// Ids of the miners the loop has paused.
    pub paused: Vec<String>,
    /// The miners the loop has power-limited, with their targets.
    pub limited: Vec<LimitedMiner>,
    /// What the meter taught about each miner's power (see [`crate::efficiency`]).
    pub learned: Vec<LearnedMiner>,
    /// Ids of the miners an operator paused (the loop leaves them alone).
    pub held: Vec<String>,
    /// The most recent events (signals starting and ending, decisions), oldest first.
    pub history: Vec<CurtailmentEvent>,
}

/// A miner hashing under a power target the loop set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LimitedMiner {
    pub id: String,
    pub watts: u32,
}

/// A miner's power learned from clean meter steps.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LearnedMiner {
    pub id: String,
    /// Power at full hash rate, watts.
    pub nominal_w: f64,
    pub samples: u32,
    /// Measured J/TH (when hash rates were known).
    pub j_per_th: Option<f64>,
    /// The controller uses these values instead of the configured ones.
    pub in_use: bool,
}

/// One line of the loop's history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CurtailmentEvent {
    /// Unix seconds.
    pub at: u64,
    pub signal_id: Option<String>,
    pub what: String,
}

/// How many events [`CurtailmentStatus::history`] keeps.
pub const HISTORY_LEN: usize = 50;

/// An operator's direct command for one managed miner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorCommand {
    /// Pause it through its firmware and keep it out of the controller's hands.
    Pause(String),
    /// Resume it and hand it back to the controller.
    Resume(String),
}

type CommandReply = tokio::sync::oneshot::Sender<Result<(), String>>;

pub struct CurtailmentHandle {
    status: watch::Receiver<CurtailmentStatus>,
    commands: tokio::sync::mpsc::Sender<(OperatorCommand, CommandReply)>,
}

impl CurtailmentHandle {
    pub fn status(&self) -> CurtailmentStatus {
        self.status.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<CurtailmentStatus> {
        self.status.clone()
    }

    /// Run an operator's command; the answer says what went wrong (unknown miner, firmware
    /// error).
    pub async fn operator(&self, cmd: OperatorCommand) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands
            .send((cmd, tx))
            .await
            .map_err(|_| "the curtailment loop has stopped".to_string())?;
        rx.await
            .map_err(|_| "the curtailment loop has stopped".to_string())?
    }
}

/// Start the loop; it runs until `shutdown`.
pub fn spawn(
    cfg: LoopConfig,
    miners: Vec<ManagedMiner>,
    meter: MeterHandle,
    signal: watch::Receiver<Option<Signal>>,
    grid: Option<GridLink>,
    shutdown: CancellationToken,
) -> CurtailmentHandle {
    let (tx, rx) = watch::channel(CurtailmentStatus::default());
    let (commands, command_rx) = tokio::sync::mpsc::channel(16);
    let outputs = Outputs {
        status: tx,
        commands: command_rx,
    };
    tokio::spawn(run(cfg, miners, meter, signal, grid, outputs, shutdown));
    CurtailmentHandle {
        status: rx,
        commands,
    }
}

/// The loop's side of its handle: where it publishes its status, where operators' commands
/// arrive.
struct Outputs {
    status: watch::Sender<CurtailmentStatus>,
    commands: tokio::sync::mpsc::Receiver<(OperatorCommand, CommandReply)>,
}

async fn run(
    cfg: LoopConfig,
    mut miners: Vec<ManagedMiner>,
    meter: MeterHandle,
    mut signal: watch::Receiver<Option<Signal>>,
    grid: Option<GridLink>,
    outputs: Outputs,
    shutdown: CancellationToken,
) {
    let Outputs {
        status,
        mut commands,
    } = outputs;
    // In the background: a signal arriving meanwhile must not wait for slow miners. And its
    // commands must not queue behind a thousand probes either (a restart finds the retained
    // signal at once): the first command round stops whatever is left of the warm-up.
    let probes = miners
        .iter()
        .map(|m| (m.info.id.clone(), m.control.clone()))
        .collect();
    let warming = CancellationToken::new();
    tokio::spawn(warm_up(probes, cfg.command_timeout, warming.clone()));
    // A configured `min_power_w` on a backend that cannot take a power target is ignored (the
    // site config refuses it for the firmware kinds known to lack it; this covers the rest).
    for m in miners.iter_mut() {
        if m.info.min_power_w.is_some() && !m.control.capabilities().power_limit {
            tracing::warn!(miner = %m.info.id, firmware = %m.control.kind(), "min_power_w is set but this firmware cannot take a power target: the miner will be paused, never limited");
            m.info.min_power_w = None;
        }
    }
    let mut runtime: Vec<Runtime> = miners.iter().map(|_| Runtime::default()).collect();
    let mut learner = Learner::new(LearnerConfig {
        weight: cfg.learn_weight,
        min_samples: cfg.learn_min_samples,
        settle: cfg.controller.settle,
        // The reading just before a command is at most one meter poll old; a settle time is
        // generous for that and still too short for other load to wander far.
        max_before_age: cfg.controller.settle,
        ..LearnerConfig::default()
    });
    let mut last_fed: Option<SystemTime> = None;
    let mut state = ControllerState::default();
    let mut tick = tokio::time::interval(cfg.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_report: Option<Instant> = None;
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut held: Vec<String> = Vec::new();
    let mut history: std::collections::VecDeque<CurtailmentEvent> = Default::default();
    let mut last_signal: Option<String> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = signal.changed() => if changed.is_err() { return; },
            Some((cmd, reply)) = commands.recv() => {
                let sent = Instant::now();
                let before = state_of(&miners, &cmd);
                let r = operator_command(&mut miners, &mut runtime, &mut held, &cmd, cfg.command_timeout).await;
                if let Some((i, from)) = before {
                    learner.command(step_of(&miners[i], sent, from, miners[i].info.state, cfg.hashrate.as_ref()));
                }
                let (id, verb) = match &cmd {
                    OperatorCommand::Pause(id) => (id, "paused"),
                    OperatorCommand::Resume(id) => (id, "resumed"),
                };
                push_event(&mut history, last_signal.clone(), match &r {
                    Ok(()) => format!("operator {verb} {id}"),
                    Err(e) => format!("operator could not have {id} {verb}: {e}"),
                });
                let _ = reply.send(r);
            }
            _ = shutdown.cancelled() => return,
        }
        let now = SystemTime::now();
        let current = signal.borrow().clone();
        let active = current.filter(|s| s.is_active(now));
        let limit_kw = active.as_ref().and_then(|s| s.limit_kw);
        let reading = meter.latest();
        let measured_kw = reading.power_kw();
        let now_instant = Instant::now();
        // The reading's age, as an Instant the pure controller can compare.
        let measured_at = now
            .duration_since(reading.at)
            .ok()
            .and_then(|age| now_instant.checked_sub(age));
        if last_fed != Some(reading.at) {
            last_fed = Some(reading.at);
            learner.reading(measured_at.unwrap_or(now_instant), measured_kw);
        }
        let id_now = active.as_ref().map(|s| s.id.clone());
        if id_now != last_signal {
            let what = match (&last_signal, &id_now) {
                (_, Some(id)) => format!(
                    "signal {id} in force: limit {}",
                    limit_kw.map_or("none".to_string(), |l| format!("{l} kW"))
                ),
                (Some(old), None) => format!("signal {old} ended: restoring"),
                (None, None) => String::new(),
            };
            push_event(&mut history, id_now.clone(), what);
            last_signal = id_now;
        }
        if limit_kw.is_none() {
            // A new signal gives every miner's power limits another chance.
            for r in runtime.iter_mut() {
                r.limit_blocked = false;
            }
        }
        // Miners an operator holds are not the controller's to move.
        let infos: Vec<MinerInfo> = miners
            .iter()
            .zip(&runtime)
            .filter(|(m, _)| !held.contains(&m.info.id))
            .map(|(m, r)| {
                let mut info = m.info.clone();
                if r.limit_blocked {
                    info.min_power_w = None;
                }
                // What the meter measured beats the nameplate, once it rests on enough steps.
                if let Some(w) = learner.nominal_w(&info.id) {
                    info.nominal_w = w;
                }
                if let Some(j) =
                    learner.j_per_th(&info.id, m.info.nominal_w, m.info.efficiency_j_per_th)
                {
                    info.efficiency_j_per_th = j;
                }
                info
            })
            .collect();
        let decision = decide(
            &cfg.controller,
            &mut state,
            Inputs {
                now: now_instant,
                measured_kw,
                measured_at,
                limit_kw,
                miners: &infos,
            },
        );
        if !decision.actions.is_empty() {
            tracing::info!(
                why = decision.why,
                actions = decision.actions.len(),
                ?limit_kw,
                ?measured_kw,
                "curtailment decision"
            );
            warming.cancel();
            let sent = Instant::now();
            let (o, f, moved) = execute(
                &mut miners,
                &mut runtime,
                &decision.actions,
                cfg.command_timeout,
            )
            .await;
            for (i, from) in moved {
                let to = miners[i].info.state;
                learner.command(step_of(&miners[i], sent, from, to, cfg.hashrate.as_ref()));
            }
            ok += o;
            failed += f;
            push_event(
                &mut history,
                last_signal.clone(),
                format!(
                    "{}: {} command(s), {o} obeyed, {f} failed (measured {})",
                    decision.why,
                    decision.actions.len(),
                    measured_kw.map_or("nothing".to_string(), |m| format!("{m:.1} kW"))
                ),
            );
        }
        let paused: Vec<String> = miners
            .iter()
            .filter(|m| m.info.state == PowerState::Paused && !held.contains(&m.info.id))
            .map(|m| m.info.id.clone())
            .collect();
        let limited: Vec<LimitedMiner> = miners
            .iter()
            .filter(|m| !held.contains(&m.info.id))
            .filter_map(|m| match m.info.state {
                PowerState::Limited(watts) => Some(LimitedMiner {
                    id: m.info.id.clone(),
                    watts,
                }),
                _ => None,
            })
            .collect();
        let shed = paused.len() + limited.len();
        status.send_replace(CurtailmentStatus {
            signal_id: active.as_ref().map(|s| s.id.clone()),
            limit_kw,
            measured_kw,
            miners_shed: shed,
            commands_ok: ok,
            commands_failed: failed,
            last_decision: decision.why.to_string(),
            paused,
            limited,
            learned: learner
                .estimates()
                .iter()
                .map(|(id, e)| LearnedMiner {
                    id: id.clone(),
                    nominal_w: e.nominal_w,
                    samples: e.samples,
                    j_per_th: e.j_per_th,
                    in_use: learner.nominal_w(id).is_some(),
                })
                .collect(),
            held: held.clone(),
            history: history.iter().cloned().collect(),
        });
        if let (Some(s), Some(link)) = (&active, &grid) {
            if last_report.is_none_or(|t| t.elapsed() >= cfg.report_interval) {
                last_report = Some(Instant::now());
                let compliant = match (measured_kw, s.limit_kw) {
                    (Some(m), Some(l)) => m <= l,
                    (None, Some(_)) => false,
                    (_, None) => true,
                };
                link.publish_report(&ComplianceReport {
                    signal_id: s.id.clone(),
                    limit_kw: s.limit_kw,
                    measured_kw,
                    miners_shed: shed,
                    seconds_since_start: now
                        .duration_since(s.start)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    compliant,
                })
                .await;
            }
        } else {
            last_report = None;
        }
    }
}

fn push_event(
    history: &mut std::collections::VecDeque<CurtailmentEvent>,
    signal_id: Option<String>,
    what: String,
) {
    if what.is_empty() {
        return;
    }
    if history.len() == HISTORY_LEN {
        history.pop_front();
    }
    let at = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    history.push_back(CurtailmentEvent {
        at,
        signal_id,
        what,
    });
}

fn level(state: PowerState) -> Level {
    match state {
        PowerState::Running => Level::Full,
        PowerState::Paused => Level::Idle,
        PowerState::Limited(w) => Level::Target(f64::from(w)),
    }
}

/// The learner's view of a command sent to `m` at `at` (a failed one moves it nowhere, but
/// still spoils the window of any other step).
fn step_of(
    m: &ManagedMiner,
    at: Instant,
    from: PowerState,
    to: PowerState,
    hashrate: Option<&HashrateSource>,
) -> Step {
    Step {
        id: m.info.id.clone(),
        at,
        from: level(from),
        to: level(to),
        idle_w: m.info.idle_w,
        configured_w: m.info.nominal_w,
        hashrate_ths: hashrate.and_then(|h| (h.0)(&m.info.id)),
    }
}

/// The index and state of the miner an operator's command is for.
fn state_of(miners: &[ManagedMiner], cmd: &OperatorCommand) -> Option<(usize, PowerState)> {
    let id = match cmd {
        OperatorCommand::Pause(id) | OperatorCommand::Resume(id) => id,
    };
    let i = miners.iter().position(|m| &m.info.id == id)?;
    Some((i, miners[i].info.state))
}

/// What the loop knows of a miner beyond the controller's view.
#[derive(Debug, Clone, Default)]
struct Runtime {
    /// The power target the loop left in the firmware (kept across a pause: firmware resumes
    /// at it), to lift on resume.
    firmware_limit: Option<u32>,
    /// A limit command failed during this signal: pause it instead.
    limit_blocked: bool,
}

/// The target that lifts a limit: nominal, in whole watts.
fn nominal_target(info: &MinerInfo) -> u32 {
    info.nominal_w.ceil().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// Resume, then lift a power target the loop left in the firmware. The state it ends in: running,
/// or still limited when the lift failed (the controller raises it later).
async fn resume_lifting(
    control: &dyn MinerControl,
    nominal: u32,
    firmware_limit: Option<u32>,
) -> (Result<(), ControlError>, PowerState, Option<u32>) {
    if let Err(e) = control.resume().await {
        return (Err(e), PowerState::Paused, firmware_limit);
    }
    match firmware_limit {
        None => (Ok(()), PowerState::Running, None),
        Some(w) => match control.set_power_limit(nominal).await {
            Ok(()) => (Ok(()), PowerState::Running, None),
            Err(e) => {
                tracing::warn!(error = %e, "resumed, but its {w} W power target could not be lifted");
                (Ok(()), PowerState::Limited(w), Some(w))
            }
        },
    }
}

/// An operator's pause or resume of one miner, through its firmware.
async fn operator_command(
    miners: &mut [ManagedMiner],
    runtime: &mut [Runtime],
    held: &mut Vec<String>,
    cmd: &OperatorCommand,
    timeout: Duration,
) -> Result<(), String> {
    let (id, pause) = match cmd {
        OperatorCommand::Pause(id) => (id, true),
        OperatorCommand::Resume(id) => (id, false),
    };
    let i = miners
        .iter()
        .position(|m| &m.info.id == id)
        .ok_or_else(|| format!("no managed miner {id:?}; miners are listed in [[miners]]"))?;
    let (m, rt) = (&mut miners[i], &mut runtime[i]);
    let control = m.control.clone();
    if pause {
        tokio::time::timeout(timeout, control.pause())
            .await
            .map_err(|_| format!("the firmware did not answer within {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        m.info.state = PowerState::Paused;
        if !held.contains(id) {
            held.push(id.clone());
        }
    } else {
        let (r, state, limit) = tokio::time::timeout(
            timeout,
            resume_lifting(&*control, nominal_target(&m.info), rt.firmware_limit),
        )
        .await
        .map_err(|_| format!("the firmware did not answer within {timeout:?}"))?;
        r.map_err(|e| e.to_string())?;
        (m.info.state, rt.firmware_limit) = (state, limit);
        held.retain(|h| h != id);
    }
    Ok(())
}

/// Ask every miner's firmware for its status once, at start: it shows at once which miners
/// cannot be reached (before a signal needs them), and backends that cache what they learn
/// (cgminer's device list) answer the first curtailment in one round trip.
async fn warm_up(
    miners: Vec<(String, Arc<dyn MinerControl>)>,
    timeout: Duration,
    cancel: CancellationToken,
) {
    let managed = miners.len();
    let mut probes = tokio::task::JoinSet::new();
    for (id, control) in miners {
        probes.spawn(async move { (id, tokio::time::timeout(timeout, control.status()).await) });
    }
    let mut reachable = 0;
    let mut answered = Vec::with_capacity(managed);
    loop {
        tokio::select! {
            next = probes.join_next() => match next {
                Some(Ok(r)) => answered.push(r),
                Some(Err(_)) => {} // a probe task panicked or was aborted: nothing to report
                None => break,
            },
            _ = cancel.cancelled() => {
                // Dropping the set aborts the probes still in flight.
                tracing::info!(checked = answered.len(), managed, "curtailment: firmware check cut short by the first command round");
                return;
            }
        }
    }
    for (id, r) in answered {
        match r {
            Ok(Ok(_)) => reachable += 1,
            Ok(Err(e)) => tracing::warn!(miner = %id, "firmware API not usable yet: {e}"),
            Err(_) => tracing::warn!(miner = %id, "firmware API did not answer a status request"),
        }
    }
    tracing::info!(
        reachable,
        managed,
        "curtailment: miners' firmware APIs checked"
    );
}

/// Send every action at once, each command its own task (a thousand miners' commands spread
/// over every core); update the state of the miners that obeyed. Also returns every commanded
/// miner's index with its state before the command.
async fn execute(
    miners: &mut [ManagedMiner],
    runtime: &mut [Runtime],
    actions: &[Action],
    timeout: Duration,
) -> (u64, u64, Vec<(usize, PowerState)>) {
    let mut running = tokio::task::JoinSet::new();
    for a in actions {
        let Some(m) = miners.iter().position(|m| m.info.id == a.id()) else {
            continue;
        };
        let control = miners[m].control.clone();
        let nominal = nominal_target(&miners[m].info);
        let nominal_w = miners[m].info.nominal_w;
        let firmware_limit = runtime[m].firmware_limit;
        let action = a.clone();
        running.spawn(async move {
            let r = tokio::time::timeout(timeout, async {
                match &action {
                    Action::Pause(_) => control
                        .pause()
                        .await
                        .map(|()| (PowerState::Paused, firmware_limit)),
                    Action::Resume(_) => {
                        let (r, state, limit) =
                            resume_lifting(&*control, nominal, firmware_limit).await;
                        r.map(|()| (state, limit))
                    }
                    Action::Limit { watts, .. } => {
                        control.set_power_limit(*watts).await.map(|()| {
                            let state = PowerState::after_limit(nominal_w, *watts);
                            let limit = (state != PowerState::Running).then_some(*watts);
                            (state, limit)
                        })
                    }
                }
            })
            .await;
            (m, action, r)
        });
    }
    let results = running.join_all().await;
    let (mut ok, mut failed) = (0, 0);
    let mut moved = Vec::with_capacity(results.len());
    for (m, action, r) in results {
        moved.push((m, miners[m].info.state));
        let obeyed = matches!(r, Ok(Ok(_)));
        let id = &miners[m].info.id;
        match r {
            Ok(Ok((state, limit))) => {
                ok += 1;
                miners[m].info.state = state;
                runtime[m].firmware_limit = limit;
            }
            Ok(Err(e)) => {
                failed += 1;
                tracing::warn!(miner = %id, "firmware command failed: {e}");
            }
            Err(_) => {
                failed += 1;
                tracing::warn!(miner = %id, "firmware command timed out");
            }
        }
        if let (Action::Limit { watts, .. }, false) = (&action, obeyed) {
            tracing::warn!(miner = %id, watts, "power limit not applied: the miner is paused instead if more must be shed, until the signal ends");
            runtime[m].limit_blocked = true;
        }
    }
    (ok, failed, moved)
}
