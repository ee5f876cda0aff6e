//! Curtailment signals from the grid operator: the JSON format, validation and lifetime.
//!
//! A signal asks the site to stay under a power limit from `start` for `duration_s` seconds:
//!
//! ```json
//! {"signal_id": "evt-42", "issued_at": "2026-11-23T10:00:00Z", "start": "2026-11-23T10:00:05Z",
//!  "duration_s": 900, "limit_kw": 400.0}
//! ```
//!
//! Instead of `limit_kw` a signal may carry `"level": 0..3`, mapped to kW by the site's config
//! (level 0 = no limit). Times are RFC 3339 strings or unix seconds. `{"signal_id": "evt-42",
//! "end": true}` ends a signal early. Every field is checked; a bad signal is refused with a
//! reason that names the field, and the site keeps following the signal it had.

use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest payload accepted: a signal is a few hundred bytes.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

/// Validation rules from the site's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalRules {
    /// kW for levels 1, 2 and 3 (level 0 means "no limit").
    pub level_limits_kw: [f64; 3],
    /// Refuse limits above this (a typo like 40000 for 400).
    pub max_limit_kw: f64,
    /// Refuse signals issued longer ago than this (replays, clock trouble).
    pub max_age_s: u64,
    /// Refuse signals issued this far in the future (clock trouble).
    pub max_clock_skew_s: u64,
    /// Longest signal accepted.
    pub max_duration_s: u64,
}

impl Default for SignalRules {
    fn default() -> Self {
        SignalRules {
            level_limits_kw: [750.0, 500.0, 0.0],
            max_limit_kw: 100_000.0,
            max_age_s: 300,
            max_clock_skew_s: 60,
            max_duration_s: 24 * 3600,
        }
    }
}

/// A validated signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub id: String,
    pub issued_at: SystemTime,
    pub start: SystemTime,
    pub duration: Duration,
    /// `None` = no limit (level 0).
    pub limit_kw: Option<f64>,
    pub level: Option<u8>,
}

impl Signal {
    pub fn end(&self) -> SystemTime {
        self.start + self.duration
    }

    /// In force at `now`: started and not yet over.
    pub fn is_active(&self, now: SystemTime) -> bool {
        now >= self.start && now < self.end()
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.end()
    }
}

/// What a message on the signal topic asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalMessage {
    Curtail(Signal),
    /// End the named signal now.
    End {
        id: String,
    },
}

/// Why a signal was refused; the text goes back on the ack topic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignalError {
    #[error("payload of {0} bytes is larger than the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload must be a JSON object")]
    NotAnObject,
    #[error("field `{field}`: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error("signal {id:?} was issued {age_s} s ago (more than {max_s} s): stale")]
    Stale { id: String, age_s: u64, max_s: u64 },
    #[error("signal {id:?} ended already at {end}")]
    Expired { id: String, end: String },
    #[error("signal {id:?} was already received with different content; a new signal needs a new signal_id")]
    Duplicate { id: String },
}

fn field(field: &'static str, problem: impl Into<String>) -> SignalError {
    SignalError::Field {
        field,
        problem: problem.into(),
    }
}

fn parse_time(v: &Value, name: &'static str) -> Result<SystemTime, SignalError> {
    match v {
        Value::Number(n) => {
            let secs = n
                .as_u64()
                .ok_or_else(|| field(name, "unix seconds must be a positive integer"))?;
            if secs > LAST_RFC3339_SECOND {
                return Err(field(
                    name,
                    format!("{secs} unix seconds is after the year 9999; send seconds since 1970"),
                ));
            }
            Ok(UNIX_EPOCH + Duration::from_secs(secs))
        }
        Value::String(s) => humantime::parse_rfc3339(s)
            .map_err(|e| field(name, format!("{s:?} is not an RFC 3339 time ({e})"))),
        Value::Null => Err(field(name, "missing")),
        _ => Err(field(name, "must be an RFC 3339 string or unix seconds")),
    }
}

/// 9999-12-31T23:59:59Z: the last instant RFC 3339 can write (four-digit years). Times after it
/// are refused at parse time, because humantime's formatter fails on them and `to_string`
/// turns that failure into a panic (found by the grid_signal fuzz target).
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// Formats `t` for an error text or a report. Never panics: a time past year 9999 (which the
/// parser does not let in, but `start + duration` could reach) is written as unix seconds.
fn rfc3339(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() <= LAST_RFC3339_SECOND => {
            humantime::format_rfc3339_seconds(t).to_string()
        }
        Ok(d) => format!("{} unix seconds", d.as_secs()),
        Err(_) => "before 1970".to_string(),
    }
}

/// How a message arrived: live from the operator, or replayed by the broker as the retained
/// "current signal" (after a restart). A retained signal may be older than `max_age_s` and still
/// in force; only its end decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Live,
    Retained,
}

/// Parse and validate one live message at time `now`.
pub fn parse_signal(
    payload: &[u8],
    rules: &SignalRules,
    now: SystemTime,
) -> Result<SignalMessage, SignalError> {
    parse_signal_delivered(payload, rules, now, Delivery::Live)
}

/// Parse and validate one message at time `now`, delivered as `delivery`.
pub fn parse_signal_delivered(
    payload: &[u8],
    rules: &SignalRules,
    now: SystemTime,
    delivery: Delivery,
) -> Result<SignalMessage, SignalError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(SignalError::TooLarge(payload.len()));
    }
    let v: Value =
        serde_json::from_slice(payload).map_err(|e| SignalError::NotJson(e.to_string()))?;
    let o = v.as_object().ok_or(SignalError::NotAnObject)?;
    let id = match o.get("signal_id") {
        Some(Value::String(s))
            if !s.trim().is_empty() && s.len() <= 128 && !s.chars().any(char::is_control) =>
        {
            s.clone()
        }
        Some(Value::String(_)) => {
            return Err(field("signal_id", "must be 1–128 printable characters"))
        }
        Some(_) => return Err(field("signal_id", "must be a string")),
        None => return Err(field("signal_id", "missing")),
    };
    match o.get("end") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => return Ok(SignalMessage::End { id }),
        Some(_) => return Err(field("end", "must be true or false")),
    }
    let issued_at = parse_time(o.get("issued_at").unwrap_or(&Value::Null), "issued_at")?;
    if let Ok(age) = now.duration_since(issued_at) {
        if age.as_secs() > rules.max_age_s && delivery == Delivery::Live {
            return Err(SignalError::Stale {
                id,
                age_s: age.as_secs(),
                max_s: rules.max_age_s,
            });
        }
    } else if issued_at
        .duration_since(now)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        > rules.max_clock_skew_s
    {
        return Err(field(
            "issued_at",
            format!(
                "{} is in the future (clocks out of sync?)",
                rfc3339(issued_at)
            ),
        ));
    }
    let start = match o.get("start") {
        None | Some(Value::Null) => issued_at,
        Some(v) => parse_time(v, "start")?,
    };
    let duration_s = o
        .get("duration_s")
        .ok_or_else(|| field("duration_s", "missing"))?
        .as_u64()
        .filter(|d| *d > 0)
        .ok_or_else(|| {
            field(
                "duration_s",
                "must be a whole number of seconds greater than 0",
            )
        })?;
    if duration_s > rules.max_duration_s {
        return Err(field(
            "duration_s",
            format!(
                "{duration_s} s is longer than the {} s allowed",
                rules.max_duration_s
            ),
        ));
    }
    let (limit_kw, level) = match (o.get("limit_kw"), o.get("level")) {
        (Some(_), Some(_)) => {
            return Err(field("limit_kw", "give either limit_kw or level, not both"))
        }
        (None, None) => return Err(field("limit_kw", "missing (or give a level 0–3)")),
        (Some(l), None) => {
            let kw = l
                .as_f64()
                .filter(|k| k.is_finite() && *k >= 0.0)
                .ok_or_else(|| field("limit_kw", "must be a number ≥ 0"))?;
            if kw > rules.max_limit_kw {
                return Err(field(
                    "limit_kw",
                    format!("{kw} kW is above the site's {} kW", rules.max_limit_kw),
                ));
            }
            (Some(kw), None)
        }
        (None, Some(l)) => {
            let level =
                l.as_u64()
                    .filter(|l| *l <= 3)
                    .ok_or_else(|| field("level", "must be 0, 1, 2 or 3"))? as u8;
            let kw = if level == 0 {
                None
            } else {
                Some(rules.level_limits_kw[level as usize - 1])
            };
            (kw, Some(level))
        }
    };
    let signal = Signal {
        id,
        issued_at,
        start,
        duration: Duration::from_secs(duration_s),
        limit_kw,
        level,
    };
    if signal.is_expired(now) {
        let end = rfc3339(signal.end());
        return Err(SignalError::Expired { id: signal.id, end });
    }
    Ok(SignalMessage::Curtail(signal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn parse(v: Value) -> Result<SignalMessage, SignalError> {
        parse_signal(v.to_string().as_bytes(), &SignalRules::default(), now())
    }

    #[test]
    fn good_signals_in_both_time_formats_and_levels() {
        let s = parse(json!({"signal_id": "a", "issued_at": 1_800_000_000u64 - 10, "duration_s": 60, "limit_kw": 400})).unwrap();
        let SignalMessage::Curtail(s) = s else {
            panic!()
        };
        assert_eq!(s.limit_kw, Some(400.0));
        assert!(s.is_active(now()));
        let s = parse(json!({"signal_id": "b", "issued_at": "2027-01-15T08:00:00Z", "start": "2027-01-15T08:00:30Z", "duration_s": 60, "level": 2})).unwrap();
        let SignalMessage::Curtail(s) = s else {
            panic!()
        };
        assert_eq!((s.limit_kw, s.level), (Some(500.0), Some(2)));
        assert!(!s.is_active(now()), "starts in 30 s");
        let SignalMessage::Curtail(s) = parse(
            json!({"signal_id": "c", "issued_at": 1_800_000_000u64, "duration_s": 60, "level": 0}),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(s.limit_kw, None);
        assert_eq!(
            parse(json!({"signal_id": "a", "end": true})).unwrap(),
            SignalMessage::End { id: "a".into() }
        );
    }

    /// Regression for the grid_signal fuzz finding: a unix time past year 9999 made the
    /// "in the future" error text panic inside humantime's formatter.
    #[test]
    fn times_past_year_9999_are_refused_not_panicked_on() {
        for at in [399_995_998_020u64, LAST_RFC3339_SECOND + 1, u64::MAX] {
            let err =
                parse(json!({"signal_id": "e3", "issued_at": at, "duration_s": 60, "limit_kw": 1}))
                    .unwrap_err()
                    .to_string();
            assert!(
                err.contains("`issued_at`") && err.contains("year 9999"),
                "{err}"
            );
            let err = parse(json!({"signal_id": "e3", "issued_at": 1_800_000_000u64, "start": at, "duration_s": 60, "limit_kw": 1}))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`start`") && err.contains("year 9999"),
                "{err}"
            );
        }
        // The last writable second is still a time (in the future here, so refused as such).
        let err = parse(json!({"signal_id": "e3", "issued_at": LAST_RFC3339_SECOND, "duration_s": 60, "limit_kw": 1}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("9999-12-31T23:59:59Z is in the future"),
            "{err}"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(LAST_RFC3339_SECOND + 1)),
            "253402300800 unix seconds"
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let t = 1_800_000_000u64;
        let cases = [
            (json!([1]), "JSON object"),
            (
                json!({"issued_at": t, "duration_s": 60, "limit_kw": 1}),
                "`signal_id`: missing",
            ),
            (
                json!({"signal_id": "", "issued_at": t, "duration_s": 60, "limit_kw": 1}),
                "`signal_id`",
            ),
            (
                json!({"signal_id": 5, "issued_at": t, "duration_s": 60, "limit_kw": 1}),
                "`signal_id`: must be a string",
            ),
            (
                json!({"signal_id": "x", "duration_s": 60, "limit_kw": 1}),
                "`issued_at`: missing",
            ),
            (
                json!({"signal_id": "x", "issued_at": "yesterday", "duration_s": 60, "limit_kw": 1}),
                "`issued_at`",
            ),
            (
                json!({"signal_id": "x", "issued_at": t + 3600, "duration_s": 60, "limit_kw": 1}),
                "in the future",
            ),
            (
                json!({"signal_id": "x", "issued_at": t - 3600, "duration_s": 60, "limit_kw": 1}),
                "stale",
            ),
            (
                json!({"signal_id": "x", "issued_at": t, "duration_s": 0, "limit_kw": 1}),
                "`duration_s`",
            ),
            (
                json!({"signal_id": "x", "issued_at": t, "duration_s": 999999, "limit_kw": 1}),
                "longer than",
            ),
            (
                json!({"signal_id": "x", "issued_at": t, "duration_s": 60}),
                "`limit_kw`: missing",
            ),
            (
                json!({"signal_id": "x", "issued_at": t, "duration_s": 60, "limit_kw": -1}),
                "≥ 0",
            ),
            (
                json!({"signal_id": "x", "issued_at": t, "duration_s": 60, "limit_kw": "lots"}),
                "`limit_kw`",
            ),
            (
                json!({"signal_id": "x", "issued_at": t, "duration_s": 60, "limit_kw": 1e9}),
                "above the site",
            ),
            (
                json!({"signal_id": "x", "issued_at": t, "duration_s": 60, "level": 7}),
                "`level`",
            ),
            (
                json!({"signal_id": "x", "issued_at": t, "duration_s": 60, "level": 1, "limit_kw": 3}),
                "not both",
            ),
            (
                json!({"signal_id": "x", "issued_at": t - 200, "start": t - 200, "duration_s": 60, "limit_kw": 1}),
                "ended already",
            ),
            (json!({"signal_id": "x", "end": "yes"}), "`end`"),
        ];
        for (payload, expected) in cases {
            let e = parse(payload.clone()).unwrap_err().to_string();
            assert!(e.contains(expected), "{payload}: {e}");
        }
        assert!(parse_signal(b"{not json", &SignalRules::default(), now())
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(
            parse_signal(&big, &SignalRules::default(), now()),
            Err(SignalError::TooLarge(_))
        ));
    }

    #[test]
    fn a_retained_signal_may_be_old_but_not_over() {
        let t = 1_800_000_000u64;
        let old_but_running =
            json!({"signal_id": "r", "issued_at": t - 1000, "duration_s": 3600, "limit_kw": 5})
                .to_string();
        let rules = SignalRules::default();
        assert!(
            parse_signal(old_but_running.as_bytes(), &rules, now()).is_err(),
            "live: stale"
        );
        assert!(parse_signal_delivered(
            old_but_running.as_bytes(),
            &rules,
            now(),
            Delivery::Retained
        )
        .is_ok());
        let over =
            json!({"signal_id": "r", "issued_at": t - 1000, "duration_s": 600, "limit_kw": 5})
                .to_string();
        let e =
            parse_signal_delivered(over.as_bytes(), &rules, now(), Delivery::Retained).unwrap_err();
        assert!(matches!(e, SignalError::Expired { .. }), "{e}");
    }
}
