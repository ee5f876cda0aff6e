//! The curtailment loop: the site meter and the grid signal go into the controller; its decisions
//! go out to the miners' firmware; compliance reports go back to the grid operator.
//!
//! The loop wakes on every new signal (so a limit is acted on at once) and on a short tick (so
//! the meter's verdict is checked and more is shed if the site is still over). Commands to many
//! miners are sent concurrently, each with its own timeout; a miner whose command failed keeps
//! its state and is tried again on the next decision.

use crate::control::MinerControl;
use crate::controller::{
    decide, Action, ControllerConfig, ControllerState, Inputs, MinerInfo, PowerState,
};
use crate::grid::{ComplianceReport, GridLink, Signal};
use crate::meter::MeterHandle;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A miner the controller may pause and resume.
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
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            controller: ControllerConfig::default(),
            tick: Duration::from_millis(250),
            report_interval: Duration::from_secs(5),
            command_timeout: Duration::from_secs(3),
        }
    }
}

/// What the loop is doing, for the proxy's API and for tests.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CurtailmentStatus {
    pub signal_id: Option<String>,
    pub limit_kw: Option<f64>,
    pub measured_kw: Option<f64>,
    pub miners_shed: usize,
    pub commands_ok: u64,
    pub commands_failed: u64,
    pub last_decision: String,
    /// Ids of the miners the loop has paused.
    pub paused: Vec<String>,
    /// Ids of the miners an operator paused (the loop leaves them alone).
    pub held: Vec<String>,
    /// The most recent events (signals starting and ending, decisions), oldest first.
    pub history: Vec<CurtailmentEvent>,
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
    // In the background: a signal arriving meanwhile must not wait for slow miners.
    let probes = miners
        .iter()
        .map(|m| (m.info.id.clone(), m.control.clone()))
        .collect();
    tokio::spawn(warm_up(probes, cfg.command_timeout));
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
                let r = operator_command(&mut miners, &mut held, &cmd, cfg.command_timeout).await;
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
        // Miners an operator holds are not the controller's to move.
        let infos: Vec<MinerInfo> = miners
            .iter()
            .filter(|m| !held.contains(&m.info.id))
            .map(|m| m.info.clone())
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
            let (o, f) = execute(&mut miners, &decision.actions, cfg.command_timeout).await;
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
        let shed = paused.len();
        status.send_replace(CurtailmentStatus {
            signal_id: active.as_ref().map(|s| s.id.clone()),
            limit_kw,
            measured_kw,
            miners_shed: shed,
            commands_ok: ok,
            commands_failed: failed,
            last_decision: decision.why.to_string(),
            paused,
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

/// An operator's pause or resume of one miner, through its firmware.
async fn operator_command(
    miners: &mut [ManagedMiner],
    held: &mut Vec<String>,
    cmd: &OperatorCommand,
    timeout: Duration,
) -> Result<(), String> {
    let (id, pause) = match cmd {
        OperatorCommand::Pause(id) => (id, true),
        OperatorCommand::Resume(id) => (id, false),
    };
    let m = miners
        .iter_mut()
        .find(|m| &m.info.id == id)
        .ok_or_else(|| format!("no managed miner {id:?}; miners are listed in [[miners]]"))?;
    let control = m.control.clone();
    let r = tokio::time::timeout(timeout, async {
        if pause {
            control.pause().await
        } else {
            control.resume().await
        }
    })
    .await
    .map_err(|_| format!("the firmware did not answer within {timeout:?}"))?;
    r.map_err(|e| e.to_string())?;
    if pause {
        m.info.state = PowerState::Paused;
        if !held.contains(id) {
            held.push(id.clone());
        }
    } else {
        m.info.state = PowerState::Running;
        held.retain(|h| h != id);
    }
    Ok(())
}

/// Ask every miner's firmware for its status once, at start: it shows at once which miners
/// cannot be reached (before a signal needs them), and backends that cache what they learn
/// (cgminer's device list) answer the first curtailment in one round trip.
async fn warm_up(miners: Vec<(String, Arc<dyn MinerControl>)>, timeout: Duration) {
    let managed = miners.len();
    let mut probes = tokio::task::JoinSet::new();
    for (id, control) in miners {
        probes.spawn(async move { (id, tokio::time::timeout(timeout, control.status()).await) });
    }
    let mut reachable = 0;
    for (id, r) in probes.join_all().await {
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
/// over every core); update the state of the miners that obeyed.
async fn execute(miners: &mut [ManagedMiner], actions: &[Action], timeout: Duration) -> (u64, u64) {
    let mut running = tokio::task::JoinSet::new();
    for a in actions {
        let (id, pause) = match a {
            Action::Pause(id) => (id, true),
            Action::Resume(id) => (id, false),
        };
        let Some(m) = miners.iter().position(|m| &m.info.id == id) else {
            continue;
        };
        let control = miners[m].control.clone();
        running.spawn(async move {
            let r = tokio::time::timeout(timeout, async {
                if pause {
                    control.pause().await
                } else {
                    control.resume().await
                }
            })
            .await;
            (m, pause, r)
        });
    }
    let results = running.join_all().await;
    let (mut ok, mut failed) = (0, 0);
    for (m, pause, r) in results {
        match r {
            Ok(Ok(())) => {
                ok += 1;
                miners[m].info.state = if pause {
                    PowerState::Paused
                } else {
                    PowerState::Running
                };
            }
            Ok(Err(e)) => {
                failed += 1;
                tracing::warn!(miner = %miners[m].info.id, "firmware command failed: {e}");
            }
            Err(_) => {
                failed += 1;
                tracing::warn!(miner = %miners[m].info.id, "firmware command timed out");
            }
        }
    }
    (ok, failed)
}
