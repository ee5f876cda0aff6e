//! ASIC firmware control clients: pause, resume and power-limit miners through their own
//! firmware APIs during grid curtailment (withholding Stratum work does not cut an ASIC's power).
//!
//! One backend per firmware family, all behind [`MinerControl`]; [`connect`] picks the backend
//! from a [`MinerEndpoint`]. Each call opens what it needs, is bounded by the endpoint's
//! `timeout_ms`, and maps every failure to a [`ControlError`] that names the miner and the fix.
//! Credentials live in [`Secret`]s and are never logged.
//!
//! | kind | transport | pause / resume | power limit |
//! |---|---|---|---|
//! | [`cgminer`] (and bmminer) | JSON on TCP 4028 | `ascdisable`/`ascenable` (`pgadisable`/`pgaenable`) per device | unsupported |
//! | [`luxos`] | JSON on TCP 4028, session | `curtail` `sleep` / `wakeup` | `profileset` to the highest profile ≤ limit |
//! | [`braiins`] | gRPC on TCP 50051 | `ActionsService/PauseMining` / `ResumeMining` | `PerformanceService/SetPowerTarget` |
//! | [`whatsminer`] | API v2, AES-encrypted JSON on TCP 4028 | `power_off` / `power_on` | `adjust_power_limit` |
//! | [`vnish`] | HTTP `/api/v1` | `mining/pause` / `mining/resume` | `settings` preset ≤ limit |

pub mod braiins;
pub mod cgminer;
mod endpoint;
mod error;
pub mod last_resort;
pub mod luxos;
mod rpc;
mod secret;
pub mod vnish;
pub mod whatsminer;

use std::sync::Arc;

use serde::Serialize;

pub use endpoint::{FirmwareKind, MinerEndpoint, DEFAULT_TIMEOUT_MS};
pub use error::ControlError;
pub use last_resort::WithLastResort;
pub use secret::Secret;

/// What a miner reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinerStatus {
    /// The hash boards are working (not paused, sleeping or powered off).
    pub hashing: bool,
    /// The firmware's own power estimate, where it has one.
    pub power_w: Option<f64>,
    /// The active power limit/target, where the firmware has one.
    pub power_limit_w: Option<u32>,
}

/// What a backend can do, before asking the miner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub pause: bool,
    pub power_limit: bool,
}

/// One miner's firmware control API.
#[async_trait::async_trait]
pub trait MinerControl: Send + Sync {
    /// Stop hashing and drop to idle power.
    async fn pause(&self) -> Result<(), ControlError>;
    /// Start hashing again (at the last power limit, if one was set).
    async fn resume(&self) -> Result<(), ControlError>;
    /// Cap the miner's power; [`ControlError::Unsupported`] where the firmware cannot.
    async fn set_power_limit(&self, watts: u32) -> Result<(), ControlError>;
    async fn status(&self) -> Result<MinerStatus, ControlError>;
    fn capabilities(&self) -> Capabilities;
    fn kind(&self) -> FirmwareKind;
}

/// The backend for `endpoint.kind`. Nothing is sent until the first command.
pub fn connect(endpoint: &MinerEndpoint) -> Box<dyn MinerControl> {
    match endpoint.kind {
        FirmwareKind::Cgminer => Box::new(cgminer::Cgminer::new(endpoint)),
        FirmwareKind::LuxOs => Box::new(luxos::LuxOs::new(endpoint)),
        FirmwareKind::BraiinsOs => Box::new(braiins::BraiinsOs::new(endpoint)),
        FirmwareKind::Whatsminer => Box::new(whatsminer::Whatsminer::new(endpoint)),
        FirmwareKind::Vnish => Box::new(vnish::Vnish::new(endpoint)),
    }
}

/// [`connect`], shareable between tasks.
pub fn connect_shared(endpoint: &MinerEndpoint) -> Arc<dyn MinerControl> {
    Arc::from(connect(endpoint))
}
