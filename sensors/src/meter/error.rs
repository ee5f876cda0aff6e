//! Why a poll failed, in words an operator can act on.

/// The failure of one poll attempt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PollError {
    /// The meter did not answer a request in time.
    #[error("timeout: no answer within {timeout_ms} ms to {request}")]
    Timeout { timeout_ms: u64, request: String },
    /// The TCP connection or the serial port could not be opened.
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    /// The connection broke while waiting for an answer (closed by the meter, reset).
    #[error("connection to {target} lost: {reason}")]
    ConnectionLost { target: String, reason: String },
    /// The meter answered with a Modbus exception.
    #[error("Modbus exception {code:#04x} {name} in answer to {request}")]
    Exception {
        code: u8,
        name: &'static str,
        request: String,
    },
    /// The answer was not a valid Modbus frame, or not the answer to our request.
    #[error("garbage answer to {request}: {detail}")]
    Garbage { request: String, detail: String },
    /// SunSpec discovery found no usable meter model.
    #[error("SunSpec discovery failed: {0}")]
    SunSpec(String),
}

impl PollError {
    /// True when the meter simply did not answer (as opposed to answering something wrong).
    /// Such failures leave the last good values [`super::Quality::Stale`] for `stale_after_ms`.
    pub fn is_no_answer(&self) -> bool {
        matches!(
            self,
            PollError::Timeout { .. }
                | PollError::Connect { .. }
                | PollError::ConnectionLost { .. }
        )
    }

    /// True when the connection cannot be trusted afterwards (a late or partial answer could
    /// still arrive), so it must be closed and opened again.
    pub fn needs_reconnect(&self) -> bool {
        !matches!(self, PollError::Exception { .. } | PollError::SunSpec(_))
    }
}

/// The name of a Modbus exception code, as the Modbus application protocol specification
/// (V1.1b3, section 7) spells it.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "Illegal Function",
        0x02 => "Illegal Data Address",
        0x03 => "Illegal Data Value",
        0x04 => "Server Device Failure",
        0x05 => "Acknowledge",
        0x06 => "Server Device Busy",
        0x08 => "Memory Parity Error",
        0x0A => "Gateway Path Unavailable",
        0x0B => "Gateway Target Device Failed to Respond",
        _ => "Unknown Exception",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let e = PollError::Exception {
            code: 2,
            name: exception_name(2),
            request: "read input registers 0x0000 (18)".into(),
        };
        assert_eq!(
            e.to_string(),
            "Modbus exception 0x02 Illegal Data Address in answer to read input registers 0x0000 (18)"
        );
        assert!(!e.is_no_answer());
        assert!(!e.needs_reconnect());
        let t = PollError::Timeout {
            timeout_ms: 500,
            request: "x".into(),
        };
        assert!(t.is_no_answer() && t.needs_reconnect());
        assert_eq!(
            exception_name(0x0B),
            "Gateway Target Device Failed to Respond"
        );
        assert_eq!(exception_name(0x42), "Unknown Exception");
    }
}
