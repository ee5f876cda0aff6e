//! The process's open-files limit: one per connected miner, so it caps the site's size.
//!
//! Shells and many service managers start processes with a soft `RLIMIT_NOFILE` of 1024 while
//! the hard limit is far higher; a proxy left at 1024 refuses its 1000th miner ("accept
//! failed: too many open files"). At start the proxy raises its soft limit to the hard limit
//! (no privilege needed) and says how many miners that allows. The systemd unit sets
//! `LimitNOFILE=1048576`; elsewhere `ulimit -Hn` is the ceiling.

/// Descriptors kept for everything but miners: upstream links, the ledger and its WAL, the
/// status API and its clients, meters, the MQTT link, logs.
pub const RESERVED: u64 = 64;

/// The soft limit before and after raising it, and the hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub was: u64,
    pub now: u64,
    pub hard: u64,
}

impl OpenFiles {
    /// Miners the limit leaves room for.
    pub fn miners(&self) -> u64 {
        self.now.saturating_sub(RESERVED)
    }
}

/// Raise the soft limit to the hard limit. Errors only when the limits cannot be read or set
/// (then the proxy runs with what it has and says so).
#[cfg(unix)]
// `rlim_t` is u64 here but u32 on 32-bit ARM (armv7 builds): the `u64::from`s are needed there.
#[allow(clippy::useless_conversion)]
pub fn raise_to_hard_limit() -> std::io::Result<OpenFiles> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let was = u64::from(lim.rlim_cur);
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(OpenFiles {
            was,
            now: u64::from(lim.rlim_cur),
            hard: u64::from(lim.rlim_max),
        })
    }
}

#[cfg(not(unix))]
pub fn raise_to_hard_limit() -> std::io::Result<OpenFiles> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "open-files limits are a unix notion",
    ))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let got = raise_to_hard_limit().expect("getrlimit works in tests");
        assert_eq!(got.now, got.hard);
        assert!(got.now >= got.was);
        // A second call finds nothing left to raise.
        let again = raise_to_hard_limit().unwrap();
        assert_eq!(again.was, got.now);
        assert_eq!(again.miners(), got.now - RESERVED);
    }
}
