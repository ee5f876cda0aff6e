//! Grid-signal validation on arbitrary MQTT payloads: never panics, and every accepted signal
//! is within the documented bounds (`sensors/src/grid/signal.rs`).
//!
//! Shared by the `grid_signal` fuzz target and the stable corpus replay
//! (`tests/tests/fuzz_corpus.rs`). The input is the payload, judged at a fixed time, both live
//! and as a retained message.

use blgv_sensors::grid::signal::MAX_PAYLOAD_BYTES;
use blgv_sensors::grid::{
    parse_signal_delivered, Delivery, SignalError, SignalMessage, SignalRules,
};
use std::time::{Duration, UNIX_EPOCH};

/// The replay clock: 2027-01-15T08:00:00Z (the seed signals are issued around it).
pub const NOW_SECS: u64 = 1_800_000_000;

fn valid_id(id: &str) -> bool {
    !id.trim().is_empty() && id.len() <= 128 && !id.chars().any(char::is_control)
}

pub fn check(data: &[u8]) {
    let rules = SignalRules::default();
    let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
    for delivery in [Delivery::Live, Delivery::Retained] {
        let verdict = parse_signal_delivered(data, &rules, now, delivery);
        if data.len() > MAX_PAYLOAD_BYTES {
            assert!(matches!(verdict, Err(SignalError::TooLarge(_))));
        }
        match verdict {
            Ok(SignalMessage::End { id }) => assert!(valid_id(&id), "{id:?}"),
            Ok(SignalMessage::Curtail(s)) => {
                assert!(valid_id(&s.id), "{:?}", s.id);
                assert!(s.duration > Duration::ZERO);
                assert!(s.duration.as_secs() <= rules.max_duration_s);
                assert!(!s.is_expired(now), "accepted an expired signal");
                assert!(s.start >= UNIX_EPOCH && s.issued_at >= UNIX_EPOCH);
                // Not issued further in the future than the allowed skew.
                if let Ok(ahead) = s.issued_at.duration_since(now) {
                    assert!(ahead.as_secs() <= rules.max_clock_skew_s);
                }
                // A live signal is not stale.
                if delivery == Delivery::Live {
                    if let Ok(age) = now.duration_since(s.issued_at) {
                        assert!(age.as_secs() <= rules.max_age_s);
                    }
                }
                match (s.level, s.limit_kw) {
                    (Some(level), limit) => {
                        assert!(level <= 3);
                        let want =
                            (level > 0).then(|| rules.level_limits_kw[usize::from(level) - 1]);
                        assert_eq!(limit, want);
                    }
                    (None, Some(kw)) => {
                        assert!(
                            kw.is_finite() && (0.0..=rules.max_limit_kw).contains(&kw),
                            "{kw}"
                        );
                    }
                    (None, None) => panic!("a curtailment with neither level nor limit"),
                }
                // Its end is representable and after its start.
                assert!(s.end() > s.start);
            }
            Err(e) => {
                // Every refusal has a reason a human can read on the ack topic.
                assert!(!e.to_string().is_empty());
            }
        }
    }
}
