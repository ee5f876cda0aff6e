//! Work withholding: the curtailment loop's last resort, when a miner's firmware will not pause.
//!
//! A withheld miner's Stratum sessions are closed and its reconnects refused (at accept when it
//! is known by IP, at authorize when known by worker name) until the curtailment releases it. An
//! ASIC without a pool stops submitting and most firmware idles its hash boards after a while,
//! but it keeps drawing fan and control power, which is why this comes only after the
//! firmware's own pause failed (see `blgv_sensors::control::last_resort`), and why the meter
//! stays the judge of whether the site is under its limit.

use blgv_sensors::control::{Capabilities, ControlError, FirmwareKind, MinerControl, MinerStatus};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Which sessions belong to one miner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MinerSelector {
    /// Sessions that authorized this worker name.
    Worker(String),
    /// Sessions connected from this address.
    Ip(IpAddr),
}

impl MinerSelector {
    fn matches(&self, ip: IpAddr, workers: &[Arc<str>]) -> bool {
        match self {
            MinerSelector::Worker(w) => workers.iter().any(|x| **x == **w),
            MinerSelector::Ip(a) => *a == ip,
        }
    }
}

/// The set of miners whose work is withheld; sessions watch it.
pub struct Withholding {
    held: RwLock<Vec<MinerSelector>>,
    /// `held.len()`, read without the lock: the common case (nothing withheld) costs one load.
    count: AtomicUsize,
    changed: watch::Sender<u64>,
}

impl Default for Withholding {
    fn default() -> Self {
        Withholding {
            held: RwLock::new(Vec::new()),
            count: AtomicUsize::new(0),
            changed: watch::channel(0).0,
        }
    }
}

impl Withholding {
    pub fn withhold(&self, who: MinerSelector) {
        {
            let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
            if held.contains(&who) {
                return;
            }
            held.push(who);
            self.count.store(held.len(), Ordering::Release);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn release(&self, who: &MinerSelector) {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        held.retain(|h| h != who);
        self.count.store(held.len(), Ordering::Release);
    }

    pub fn is_withheld(&self, ip: IpAddr, workers: &[Arc<str>]) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|h| h.matches(ip, workers))
    }

    /// Changes whenever a miner is withheld (releases need no action from live sessions).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn withheld(&self) -> Vec<MinerSelector> {
        self.held.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One miner's withholding, as a [`MinerControl`] the curtailment loop can fall back to.
pub struct WithholdWork {
    registry: Arc<Withholding>,
    who: MinerSelector,
    /// The firmware this stands in for (the trait reports a kind).
    stands_in_for: FirmwareKind,
}

impl WithholdWork {
    pub fn new(
        registry: Arc<Withholding>,
        who: MinerSelector,
        stands_in_for: FirmwareKind,
    ) -> Self {
        WithholdWork {
            registry,
            who,
            stands_in_for,
        }
    }
}

#[async_trait::async_trait]
impl MinerControl for WithholdWork {
    async fn pause(&self) -> Result<(), ControlError> {
        self.registry.withhold(self.who.clone());
        Ok(())
    }

    async fn resume(&self) -> Result<(), ControlError> {
        self.registry.release(&self.who);
        Ok(())
    }

    async fn set_power_limit(&self, _watts: u32) -> Result<(), ControlError> {
        Err(ControlError::Unsupported {
            address: format!("{:?}", self.who),
            what: "withholding work cannot limit power".into(),
        })
    }

    async fn status(&self) -> Result<MinerStatus, ControlError> {
        let held = self
            .registry
            .held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&self.who);
        Ok(MinerStatus {
            hashing: !held,
            power_w: None,
            power_limit_w: None,
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause: true,
            power_limit: false,
        }
    }

    fn kind(&self) -> FirmwareKind {
        self.stands_in_for
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_by_worker_or_by_address() {
        let w = Withholding::default();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let other: IpAddr = "10.0.0.8".parse().unwrap();
        let workers: Vec<Arc<str>> = vec![Arc::from("acct.rig7")];
        assert!(!w.is_withheld(ip, &workers));
        w.withhold(MinerSelector::Worker("acct.rig7".into()));
        assert!(w.is_withheld(other, &workers));
        assert!(!w.is_withheld(ip, &[]));
        w.withhold(MinerSelector::Ip(ip));
        assert!(w.is_withheld(ip, &[]));
        w.release(&MinerSelector::Worker("acct.rig7".into()));
        assert!(!w.is_withheld(other, &workers));
        w.release(&MinerSelector::Ip(ip));
        assert!(!w.is_withheld(ip, &workers));
    }

    #[test]
    fn withholding_notifies_watchers_once_per_new_miner() {
        let w = Withholding::default();
        let mut rx = w.subscribe();
        w.withhold(MinerSelector::Worker("a".into()));
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        w.withhold(MinerSelector::Worker("a".into()));
        assert!(!rx.has_changed().unwrap());
    }
}
