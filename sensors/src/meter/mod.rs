//! Power meters over Modbus TCP and RTU.
//!
//! [`spawn_meter`] starts one polling task per meter. Every `poll_interval_ms` it reads the
//! meter's registers (one request per contiguous block, each with `timeout_ms`, the whole poll
//! tried `1 + retries` times), decodes them with the meter's register map and publishes a
//! [`Reading`] stamped with its time and a [`Quality`]:
//!
//! * **Good**: fresh values; [`Reading::power_kw`] returns the total power.
//! * **Stale { since }**: the meter stopped answering (timeout, connection refused or lost) less
//!   than `stale_after_ms` ago; the reading carries the last good values, measured at `since`.
//! * **Bad { reason }**: no answer for longer than `stale_after_ms`, or a wrong answer (Modbus
//!   exception with its code and name, garbage frame, value that does not decode), or no good
//!   reading yet. The reason says which.
//!
//! The task reconnects by itself (a failed or timed-out connection is dropped and opened again on
//! the next attempt) and never panics on what a meter sends: answers are checked for function
//! and length before decoding, and non-finite numbers are rejected.
//!
//! Register maps: Eastron SDM630 / SDM120, Carlo Gavazzi EM24 / EM340 ([`presets`]), SunSpec
//! meter models 201–204 and 211–214 found by walking the SunSpec model list ([`sunspec`]), or a
//! custom map from the configuration ([`RegisterSpec`]).
//!
//! One RTU meter per serial port: two meters on the same RS-485 bus would open the port twice.

pub mod config;
pub mod decode;
pub mod error;
#[cfg(feature = "runtime")]
mod link;
#[cfg(feature = "runtime")]
mod poller;
pub mod presets;
#[cfg(feature = "runtime")]
mod quality;
pub mod reading;
pub mod register_map;
pub mod sunspec;

#[cfg(feature = "runtime")]
use std::time::{Duration, SystemTime};

#[cfg(feature = "runtime")]
use tokio::sync::watch;
#[cfg(feature = "runtime")]
use tokio_util::sync::CancellationToken;

pub use config::{
    parse_tcp_target, validate_all, MeterConfig, MeterRole, Parity, Preset, Quantity,
    RegisterFunction, RegisterSpec, RtuSettings, Transport, ValueKind, WordOrder,
};
pub use error::PollError;
pub use reading::{PhaseReading, Quality, Reading};

/// The reading side of a running meter poller. Cheap to clone; every clone sees the same
/// readings.
#[cfg(feature = "runtime")]
#[derive(Debug, Clone)]
pub struct MeterHandle {
    id: String,
    role: MeterRole,
    stale_after: Duration,
    rx: watch::Receiver<Reading>,
}

#[cfg(feature = "runtime")]
impl MeterHandle {
    /// The most recent reading. A Good reading older than `stale_after_ms` (the poller is busy
    /// retrying a meter that stopped answering, or has stopped) is returned as
    /// `Stale { since: reading.at }`.
    pub fn latest(&self) -> Reading {
        let r = self.rx.borrow().clone();
        quality::aged(r, SystemTime::now(), self.stale_after)
    }

    /// Every reading as it is published (the receiver holds the newest one; see
    /// [`tokio::sync::watch`]). Unlike [`MeterHandle::latest`], the values are not aged.
    pub fn subscribe(&self) -> watch::Receiver<Reading> {
        self.rx.clone()
    }

    /// The meter's `id` from the configuration.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn role(&self) -> MeterRole {
        self.role
    }
}

/// Start polling a meter. Must be called inside a Tokio runtime. The task ends when `shutdown`
/// is cancelled (its last reading is then Bad "meter poller stopped") or when every handle is
/// dropped.
///
/// An invalid configuration does not panic: the handle's reading is Bad with the validation
/// error, and nothing is polled.
#[cfg(feature = "runtime")]
pub fn spawn_meter(cfg: MeterConfig, shutdown: CancellationToken) -> MeterHandle {
    let initial = Reading::bad(cfg.id.clone(), SystemTime::now(), "no reading yet");
    let (tx, rx) = watch::channel(initial);
    let handle = MeterHandle {
        id: cfg.id.clone(),
        role: cfg.role,
        stale_after: Duration::from_millis(cfg.stale_after_ms),
        rx,
    };
    if let Err(e) = cfg.validate() {
        tracing::error!(meter = %cfg.id, error = %e, "meter not started: invalid configuration");
        tx.send_replace(Reading::bad(
            cfg.id.clone(),
            SystemTime::now(),
            format!("invalid configuration: {e}"),
        ));
        // Keep the sender alive with the handle's lifetime so subscribers do not see a closed
        // channel as a panic-worthy surprise; it is dropped when shutdown fires.
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tx.closed() => {}
            }
        });
        return handle;
    }
    tokio::spawn(poller::Poller::new(cfg).run(tx, shutdown));
    handle
}
