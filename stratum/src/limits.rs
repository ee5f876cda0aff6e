//! Resource limits shared by the proxy's and the pool's Stratum servers: the connection caps
//! (whole server and per source IP), a per-connection message token bucket, the reasons a
//! connection is cut (one counter each, exported as a metric label) and a log throttle so an
//! attack does not flood the log. Plain state, no sockets: the servers apply it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a connection was refused or cut by a limit. The `as_str` names are the metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReason {
    /// The server already holds `max_connections`.
    MaxConnections,
    /// This source IP already holds `max_connections_per_ip`.
    PerIp,
    /// No subscribe + authorize within `handshake_timeout_ms`.
    HandshakeTimeout,
    /// A line started but no newline within `partial_line_timeout_ms`.
    PartialLineTimeout,
    /// A line longer than `max_line_length`.
    LineTooLong,
    /// More messages than `max_messages_per_sec` (after `message_burst`).
    RateLimit,
    /// More than `max_send_queue_bytes` waiting to be written to a client that does not read.
    SendQueue,
    /// A write made no progress for `write_stall_timeout_ms`.
    WriteStall,
}

impl LimitReason {
    pub const ALL: [LimitReason; 8] = [
        LimitReason::MaxConnections,
        LimitReason::PerIp,
        LimitReason::HandshakeTimeout,
        LimitReason::PartialLineTimeout,
        LimitReason::LineTooLong,
        LimitReason::RateLimit,
        LimitReason::SendQueue,
        LimitReason::WriteStall,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitReason::MaxConnections => "max_connections",
            LimitReason::PerIp => "per_ip",
            LimitReason::HandshakeTimeout => "handshake_timeout",
            LimitReason::PartialLineTimeout => "partial_line_timeout",
            LimitReason::LineTooLong => "line_too_long",
            LimitReason::RateLimit => "rate_limit",
            LimitReason::SendQueue => "send_queue",
            LimitReason::WriteStall => "write_stall",
        }
    }

    /// The config key (in `[proxy]` or `[pool]`) that sets this limit.
    pub fn config_key(self) -> &'static str {
        match self {
            LimitReason::MaxConnections => "max_connections",
            LimitReason::PerIp => "max_connections_per_ip",
            LimitReason::HandshakeTimeout => "handshake_timeout_ms",
            LimitReason::PartialLineTimeout => "partial_line_timeout_ms",
            LimitReason::LineTooLong => "max_line_length",
            LimitReason::RateLimit => "max_messages_per_sec",
            LimitReason::SendQueue => "max_send_queue_bytes",
            LimitReason::WriteStall => "write_stall_timeout_ms",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One counter per [`LimitReason`], plus the log throttle.
#[derive(Debug)]
pub struct LimitCounters {
    counts: [AtomicU64; LimitReason::ALL.len()],
    log: LogThrottle,
}

impl Default for LimitCounters {
    fn default() -> Self {
        LimitCounters {
            counts: Default::default(),
            log: LogThrottle::new(Duration::from_secs(10)),
        }
    }
}

impl LimitCounters {
    /// Count one event. Returns `Some(suppressed)` when this event should be logged (the first
    /// one, then at most one per 10 s across all reasons, with how many were not logged since).
    pub fn count(&self, reason: LimitReason) -> Option<u64> {
        self.counts[reason.index()].fetch_add(1, Relaxed);
        self.log.should_log()
    }

    pub fn get(&self, reason: LimitReason) -> u64 {
        self.counts[reason.index()].load(Relaxed)
    }

    /// Count a connection refused or cut by a resource limit and log it: the first one and
    /// then at most one per 10 s at warn (an attack must not flood the log), every one at
    /// debug. `section` is the server's config section (`proxy` or `pool`), so the warning
    /// names the key to raise.
    pub fn hit(&self, reason: LimitReason, peer: SocketAddr, section: &str) {
        let key = reason.config_key();
        match self.count(reason) {
            Some(suppressed) => tracing::warn!(
                %peer,
                reason = reason.as_str(),
                suppressed,
                "Stratum connection cut by a resource limit ({section}.{key}); further ones are logged at most every 10 s"
            ),
            None => {
                tracing::debug!(%peer, reason = reason.as_str(), "Stratum connection cut by a resource limit")
            }
        }
    }

    /// `(label, count)` for every reason, for the metrics endpoint.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        LimitReason::ALL.iter().map(|r| (r.as_str(), self.get(*r)))
    }
}

/// Lets one event through per period and counts the rest.
#[derive(Debug)]
pub struct LogThrottle {
    start: Instant,
    period_ms: u64,
    /// Milliseconds since `start` when an event may be logged next (0: the first one).
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub fn new(period: Duration) -> LogThrottle {
        LogThrottle {
            start: Instant::now(),
            period_ms: period.as_millis().max(1) as u64,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(events suppressed since the last logged one)` when this event should be logged.
    pub fn should_log(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + self.period_ms, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

/// The server-wide and per-IP connection caps. [`ConnectionLimiter::try_acquire`] runs in the
/// accept loop before anything is allocated for the connection; the permit gives the slot back
/// when the session ends.
#[derive(Debug)]
pub struct ConnectionLimiter {
    max_connections: usize,
    /// 0 = no per-IP cap.
    max_per_ip: usize,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionLimiter {
    pub fn new(max_connections: usize, max_per_ip: usize) -> Arc<ConnectionLimiter> {
        Arc::new(ConnectionLimiter {
            max_connections,
            max_per_ip,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, LimitReason> {
        let prev = self.open.fetch_add(1, Relaxed);
        if prev >= self.max_connections {
            self.open.fetch_sub(1, Relaxed);
            return Err(LimitReason::MaxConnections);
        }
        if self.max_per_ip > 0 {
            let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                drop(map);
                self.open.fetch_sub(1, Relaxed);
                return Err(LimitReason::PerIp);
            }
            *n += 1;
        }
        Ok(ConnectionPermit {
            limiter: self.clone(),
            ip,
        })
    }
}

/// A held connection slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let l = &self.limiter;
        if l.max_per_ip > 0 {
            let mut map = l.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.ip);
                }
            }
        }
        l.open.fetch_sub(1, Relaxed);
    }
}

/// A per-connection message budget: `burst` messages at once, then `rate` per second.
///
/// Cheap on the hot path: while tokens are left a message costs a decrement; the clock is read
/// only when the bucket is empty, and then it refills with what accrued since the last refill
/// (capped at `burst`). Because accrual is only settled at refill, a connection idle for a
/// while can send up to 2 × `burst` in one go; the sustained rate is never above `rate`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: u32,
    last_refill: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            last_refill: now,
        }
    }

    /// Take one token; false when the connection is over its rate.
    #[inline]
    pub fn take(&mut self, rate_per_sec: u32, burst: u32) -> bool {
        if self.tokens > 0 {
            self.tokens -= 1;
            return true;
        }
        self.refill(rate_per_sec, burst, Instant::now())
    }

    /// [`TokenBucket::take`] with the clock given (tests).
    pub fn take_at(&mut self, rate_per_sec: u32, burst: u32, now: Instant) -> bool {
        if self.tokens > 0 {
            self.tokens -= 1;
            return true;
        }
        self.refill(rate_per_sec, burst, now)
    }

    #[cold]
    fn refill(&mut self, rate_per_sec: u32, burst: u32, now: Instant) -> bool {
        let rate = rate_per_sec.max(1) as u128;
        let elapsed_ns = now.saturating_duration_since(self.last_refill).as_nanos();
        let accrued = elapsed_ns * rate / 1_000_000_000;
        if accrued == 0 {
            return false;
        }
        if accrued >= burst as u128 {
            self.tokens = burst.max(1) - 1;
            self.last_refill = now;
        } else {
            self.tokens = accrued as u32 - 1;
            // Keep the fraction of a token already earned.
            let used_ns = accrued * 1_000_000_000 / rate;
            self.last_refill += Duration::from_nanos(used_ns as u64);
        }
        true
    }
}

/// The limit keys as a server's config section holds them (`[proxy]` or `[pool]`), for the
/// shared checks in [`LimitSettings::check`].
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub handshake_timeout_ms: u64,
    pub partial_line_timeout_ms: u64,
    pub max_messages_per_sec: u32,
    pub message_burst: u32,
    pub max_send_queue_bytes: usize,
    pub write_stall_timeout_ms: u64,
}

/// A bad limit key: `(key without its section, problem, fix)`.
pub type LimitSettingError = (&'static str, String, String);

impl LimitSettings {
    /// Check what serde cannot; the caller prefixes the section to the key.
    pub fn check(&self) -> Result<(), LimitSettingError> {
        if self.max_connections == 0 {
            return Err((
                "max_connections",
                "0 would refuse every miner".into(),
                "use the most connections the server may hold, e.g. 100000".into(),
            ));
        }
        if self.max_connections_per_ip > self.max_connections {
            return Err((
                "max_connections_per_ip",
                format!(
                    "{} is above max_connections ({})",
                    self.max_connections_per_ip, self.max_connections
                ),
                "lower it to at most max_connections, or use 0 for no per-IP cap".into(),
            ));
        }
        for (key, value, least) in [
            ("handshake_timeout_ms", self.handshake_timeout_ms, 1000),
            (
                "partial_line_timeout_ms",
                self.partial_line_timeout_ms,
                1000,
            ),
            ("write_stall_timeout_ms", self.write_stall_timeout_ms, 1000),
        ] {
            if value < least {
                return Err((
                    key,
                    format!("{value} ms is too short for a miner on a slow link"),
                    format!("use at least {least} milliseconds"),
                ));
            }
        }
        if self.max_messages_per_sec == 0 {
            return Err((
                "max_messages_per_sec",
                "0 would cut every miner at its first message".into(),
                "use a positive rate well above a miner's share rate, e.g. 500".into(),
            ));
        }
        if self.message_burst == 0 {
            return Err((
                "message_burst",
                "0 would cut every miner at its first message".into(),
                "use a positive number of messages, e.g. 1000".into(),
            ));
        }
        if self.max_send_queue_bytes < 4096 {
            return Err((
                "max_send_queue_bytes",
                format!(
                    "{} bytes cannot hold a clean job",
                    self.max_send_queue_bytes
                ),
                "use at least 4096 (default 65536)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        for _ in 0..10 {
            assert!(b.take_at(100, 10, t0));
        }
        assert!(!b.take_at(100, 10, t0));
        // 100/s: one token per 10 ms.
        assert!(!b.take_at(100, 10, t0 + Duration::from_millis(9)));
        assert!(b.take_at(100, 10, t0 + Duration::from_millis(10)));
        assert!(!b.take_at(100, 10, t0 + Duration::from_millis(15)));
        assert!(b.take_at(100, 10, t0 + Duration::from_millis(20)));
        // Over one second at most rate + burst (+ the 2× burst slack) get through.
        let mut ok = 0;
        for i in 0..10_000u64 {
            if b.take_at(
                100,
                10,
                t0 + Duration::from_millis(20) + Duration::from_micros(i * 100),
            ) {
                ok += 1;
            }
        }
        assert!((95..=120).contains(&ok), "{ok}");
    }

    #[test]
    fn limiter_caps_total_and_per_ip_and_frees_on_drop() {
        let l = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(a).unwrap();
        assert_eq!(l.try_acquire(a).unwrap_err(), LimitReason::PerIp);
        let _p3 = l.try_acquire(b).unwrap();
        assert_eq!(l.try_acquire(b).unwrap_err(), LimitReason::MaxConnections);
        assert_eq!(l.open(), 3);
        drop(p1);
        assert_eq!(l.open(), 2);
        let _p4 = l.try_acquire(a).unwrap();
        let unlimited = ConnectionLimiter::new(10, 0);
        let _held: Vec<_> = (0..10).map(|_| unlimited.try_acquire(a).unwrap()).collect();
        assert_eq!(
            unlimited.try_acquire(a).unwrap_err(),
            LimitReason::MaxConnections
        );
    }

    #[test]
    fn log_throttle_lets_one_through_per_period() {
        let t = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(t.should_log(), Some(0));
        assert_eq!(t.should_log(), None);
        assert_eq!(t.should_log(), None);
        let c = LimitCounters::default();
        assert!(c.count(LimitReason::RateLimit).is_some());
        assert!(c.count(LimitReason::RateLimit).is_none());
        assert_eq!(c.get(LimitReason::RateLimit), 2);
    }
}
