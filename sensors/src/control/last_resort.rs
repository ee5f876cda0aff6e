//! A miner's firmware API first, withholding its work only when the firmware does not obey.
//!
//! Withholding Stratum work is not curtailment: an ASIC without work keeps its fans, control
//! board and often its hash boards' idle draw, and some firmware keeps hashing stale work for a
//! while. It is still better than nothing when a miner's API is unreachable, refuses our
//! credentials or cannot pause, so the site proxy offers it as the last resort: this wrapper
//! tries the firmware, and only when that fails says so loudly and falls back. The meter then
//! tells the controller whether it was enough; if not, it sheds more miners.
//!
//! This crate knows nothing of Stratum: the fallback is any [`MinerControl`] (the proxy passes
//! one that disconnects and refuses the miner's Stratum sessions).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Capabilities, ControlError, FirmwareKind, MinerControl, MinerStatus};

/// How the miner is currently paused, so resume undoes the right thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PausedBy {
    Firmware,
    WorkWithheld,
}

pub struct WithLastResort {
    firmware: Arc<dyn MinerControl>,
    last_resort: Arc<dyn MinerControl>,
    /// The firmware gets this long before the fallback is used.
    firmware_timeout: Duration,
    /// A label for logs (the miner's id in the site config).
    miner: String,
    paused_by: Mutex<Option<PausedBy>>,
}

impl WithLastResort {
    pub fn new(
        miner: impl Into<String>,
        firmware: Arc<dyn MinerControl>,
        last_resort: Arc<dyn MinerControl>,
        firmware_timeout: Duration,
    ) -> Self {
        WithLastResort {
            firmware,
            last_resort,
            firmware_timeout,
            miner: miner.into(),
            paused_by: Mutex::new(None),
        }
    }

    fn set_paused_by(&self, by: Option<PausedBy>) {
        *self.paused_by.lock().unwrap_or_else(|e| e.into_inner()) = by;
    }

    fn paused_by(&self) -> Option<PausedBy> {
        *self.paused_by.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the miner's work is being withheld right now.
    pub fn is_withholding(&self) -> bool {
        self.paused_by() == Some(PausedBy::WorkWithheld)
    }

    async fn firmware_pause(&self) -> Result<(), ControlError> {
        match tokio::time::timeout(self.firmware_timeout, self.firmware.pause()).await {
            Ok(r) => r,
            Err(_) => Err(ControlError::Timeout {
                address: format!("{} ({})", self.miner, self.firmware.kind()),
                after_ms: self.firmware_timeout.as_millis() as u64,
            }),
        }
    }
}

#[async_trait::async_trait]
impl MinerControl for WithLastResort {
    async fn pause(&self) -> Result<(), ControlError> {
        match self.firmware_pause().await {
            Ok(()) => {
                self.set_paused_by(Some(PausedBy::Firmware));
                Ok(())
            }
            Err(firmware_error) => {
                tracing::warn!(
                    miner = %self.miner,
                    error = %firmware_error,
                    "firmware did not pause the miner; LAST RESORT: withholding its Stratum work \
                     (the ASIC keeps drawing idle power, so the meter decides whether more \
                     miners must be shed)"
                );
                match self.last_resort.pause().await {
                    Ok(()) => {
                        self.set_paused_by(Some(PausedBy::WorkWithheld));
                        Ok(())
                    }
                    // Report the firmware's failure: that is what the operator must fix.
                    Err(e) => {
                        tracing::error!(miner = %self.miner, error = %e, "withholding work failed too");
                        Err(firmware_error)
                    }
                }
            }
        }
    }

    async fn resume(&self) -> Result<(), ControlError> {
        match self.paused_by() {
            Some(PausedBy::WorkWithheld) => {
                self.last_resort.resume().await?;
                tracing::info!(miner = %self.miner, "work no longer withheld");
                self.set_paused_by(None);
                Ok(())
            }
            // Paused by firmware, or state unknown (after a restart): the firmware resumes;
            // resuming a running miner is harmless on every backend.
            _ => {
                self.firmware.resume().await?;
                self.set_paused_by(None);
                Ok(())
            }
        }
    }

    async fn set_power_limit(&self, watts: u32) -> Result<(), ControlError> {
        self.firmware.set_power_limit(watts).await
    }

    async fn status(&self) -> Result<MinerStatus, ControlError> {
        self.firmware.status().await
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause: true,
            ..self.firmware.capabilities()
        }
    }

    fn kind(&self) -> FirmwareKind {
        self.firmware.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A control that counts calls and fails or hangs as told.
    struct Fake {
        pauses: AtomicU32,
        resumes: AtomicU32,
        fail: bool,
        hang: bool,
    }

    impl Fake {
        fn new(fail: bool, hang: bool) -> Arc<Fake> {
            Arc::new(Fake {
                pauses: AtomicU32::new(0),
                resumes: AtomicU32::new(0),
                fail,
                hang,
            })
        }

        async fn answer(&self) -> Result<(), ControlError> {
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self.fail {
                return Err(ControlError::Unreachable {
                    address: "10.0.0.9:4028".into(),
                    detail: "connection refused".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl MinerControl for Fake {
        async fn pause(&self) -> Result<(), ControlError> {
            self.pauses.fetch_add(1, Ordering::SeqCst);
            self.answer().await
        }
        async fn resume(&self) -> Result<(), ControlError> {
            self.resumes.fetch_add(1, Ordering::SeqCst);
            self.answer().await
        }
        async fn set_power_limit(&self, _: u32) -> Result<(), ControlError> {
            self.answer().await
        }
        async fn status(&self) -> Result<MinerStatus, ControlError> {
            Ok(MinerStatus {
                hashing: true,
                power_w: None,
                power_limit_w: None,
            })
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                pause: false,
                power_limit: false,
            }
        }
        fn kind(&self) -> FirmwareKind {
            FirmwareKind::Cgminer
        }
    }

    fn wrap(fw: &Arc<Fake>, lr: &Arc<Fake>) -> WithLastResort {
        WithLastResort::new("m1", fw.clone(), lr.clone(), Duration::from_millis(50))
    }

    #[tokio::test]
    async fn an_obedient_firmware_never_touches_the_last_resort() {
        let (fw, lr) = (Fake::new(false, false), Fake::new(false, false));
        let c = wrap(&fw, &lr);
        c.pause().await.unwrap();
        c.resume().await.unwrap();
        assert_eq!(fw.pauses.load(Ordering::SeqCst), 1);
        assert_eq!(fw.resumes.load(Ordering::SeqCst), 1);
        assert_eq!(lr.pauses.load(Ordering::SeqCst), 0);
        assert_eq!(lr.resumes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_failing_firmware_falls_back_and_resume_releases_the_fallback() {
        let (fw, lr) = (Fake::new(true, false), Fake::new(false, false));
        let c = wrap(&fw, &lr);
        c.pause().await.unwrap();
        assert!(c.is_withholding());
        c.resume().await.unwrap();
        assert!(!c.is_withholding());
        assert_eq!(lr.pauses.load(Ordering::SeqCst), 1);
        assert_eq!(lr.resumes.load(Ordering::SeqCst), 1);
        // The firmware never paused the miner, so it is not asked to resume it.
        assert_eq!(fw.resumes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_hanging_firmware_falls_back_after_its_timeout() {
        let (fw, lr) = (Fake::new(false, true), Fake::new(false, false));
        let c = wrap(&fw, &lr);
        c.pause().await.unwrap();
        assert!(c.is_withholding());
    }

    #[tokio::test]
    async fn when_both_fail_the_firmware_error_is_reported() {
        let (fw, lr) = (Fake::new(true, false), Fake::new(true, false));
        let c = wrap(&fw, &lr);
        let e = c.pause().await.unwrap_err();
        assert!(matches!(e, ControlError::Unreachable { .. }), "{e}");
        assert!(!c.is_withholding());
    }
}
