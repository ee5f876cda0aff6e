//! What can go wrong commanding a miner. Every message names the miner and the likely fix.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControlError {
    /// TCP connect failed (refused, no route, DNS).
    #[error(
        "miner {address}: cannot connect ({detail}); check that the miner is powered and on the \
         network, that `address` (and port) in its endpoint config is right, and that its \
         firmware API is enabled"
    )]
    Unreachable { address: String, detail: String },

    /// Connected (or trying to) but no complete answer within the endpoint's `timeout_ms`.
    #[error(
        "miner {address}: no answer within {after_ms} ms; the miner may be rebooting, overloaded \
         or dropping traffic: check it, or raise `timeout_ms` in its endpoint config"
    )]
    Timeout { address: String, after_ms: u64 },

    /// The firmware refused our credentials or privileges.
    #[error("miner {address}: not authorized ({detail}); fix: {fix}")]
    Auth {
        address: String,
        detail: String,
        fix: String,
    },

    /// The firmware understood the command and said no.
    #[error("miner {address} rejected the command: {message}")]
    Rejected { address: String, message: String },

    /// The answer was not what this firmware's protocol sends.
    #[error(
        "miner {address}: unexpected reply ({detail}); check that the endpoint's `kind` matches \
         the firmware actually running on the miner"
    )]
    Protocol { address: String, detail: String },

    /// The firmware cannot do this at all (e.g. a power limit on cgminer).
    #[error("miner {address}: {what}")]
    Unsupported { address: String, what: String },
}

impl ControlError {
    /// The miner this error is about.
    pub fn address(&self) -> &str {
        match self {
            ControlError::Unreachable { address, .. }
            | ControlError::Timeout { address, .. }
            | ControlError::Auth { address, .. }
            | ControlError::Rejected { address, .. }
            | ControlError::Protocol { address, .. }
            | ControlError::Unsupported { address, .. } => address,
        }
    }

    /// Worth retrying later without changing anything (network trouble, not a refusal).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ControlError::Unreachable { .. } | ControlError::Timeout { .. }
        )
    }
}
