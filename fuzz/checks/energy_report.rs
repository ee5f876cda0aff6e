//! The energy-report validation (`blgv_energy::parse`, what the pool runs on every body) on
//! arbitrary bodies: never panics, every accepted report satisfies the validator's invariants,
//! its canonical text parses back to itself (the duplicate detection relies on it), and the
//! proxy's derived deserializer reads the same report from it (one wire format, both ends).
//!
//! Shared by the `energy_report` fuzz target and the stable corpus replay
//! (`tests/tests/fuzz_corpus.rs`). The input is the HTTP body, judged at a fixed time.

use blgv_energy::{
    parse, EnergyReport, Rules, MAX_EVENTS, MAX_EVENT_WHAT_CHARS, MAX_KWH, MAX_METER_CHARS,
    MAX_SIGNAL_IDS, MAX_SIGNAL_ID_CHARS, MAX_SITE_ID_CHARS, MAX_SOURCES, VERSION,
};

/// The replay clock: 2026-01-01T00:05:00Z (the seed report ends then).
pub const NOW_SECS: i64 = 1_767_225_900;

pub fn check(data: &[u8]) {
    // The pool's defaults (its `[energy]` section builds the same `Rules`).
    let cfg = Rules::default();
    let Ok(r) = parse(data, NOW_SECS, &cfg) else {
        return;
    };
    assert_eq!(r.version, VERSION);
    let id = &r.site_id.0;
    assert!(!id.is_empty() && id.len() <= MAX_SITE_ID_CHARS);
    assert!(r.interval_start >= 0 && r.interval_end > r.interval_start);
    let length = r.interval_end - r.interval_start;
    assert!(length as u64 <= cfg.max_interval_secs);
    assert!(r.interval_end <= NOW_SECS + cfg.max_clock_skew_secs as i64);
    assert!(!r.sources.is_empty() && r.sources.len() <= MAX_SOURCES);
    for (i, s) in r.sources.iter().enumerate() {
        assert!((0.0..=MAX_KWH).contains(&s.kwh.0), "{:?}", s.kwh);
        assert!(s.measured_secs.is_finite() && s.measured_secs >= 0.0);
        assert!(s.measured_secs <= length as f64 + 1.0);
        if let Some(g) = s.g_co2_per_kwh {
            assert!(g.0.is_finite() && g.0 >= 0.0);
        }
        assert!(!s.meter.is_empty() && s.meter.len() <= MAX_METER_CHARS);
        assert!(
            r.sources[..i].iter().all(|o| o.meter != s.meter),
            "meter {:?} twice",
            s.meter
        );
    }
    let total = r.total_kwh().0;
    assert!(total.is_finite() && total >= 0.0);
    for v in [r.average_kw.0, r.peak_kw.0, r.hashes] {
        assert!(v.is_finite() && v >= 0.0, "{v}");
    }
    if let Some(c) = &r.curtailment {
        assert!(c.signal_secs.is_finite() && c.signal_secs >= 0.0);
        assert!(c.signal_secs <= length as f64 + 1.0);
        assert!(c.compliant_secs.is_finite() && c.compliant_secs >= 0.0);
        assert!(c.compliant_secs <= c.signal_secs + 1e-6);
        assert!(c.events.len() <= MAX_EVENTS);
        assert!(c.signal_ids.len() <= MAX_SIGNAL_IDS);
        for id in &c.signal_ids {
            assert!(!id.is_empty() && id.len() <= MAX_SIGNAL_ID_CHARS);
        }
        for e in &c.events {
            assert!(e.at >= 0);
            assert!(!e.what.is_empty() && e.what.len() <= MAX_EVENT_WHAT_CHARS);
        }
    }
    // The canonical text is a valid report equal to this one, and a fixed point.
    let canonical = r.canonical();
    let again = parse(canonical.as_bytes(), NOW_SECS, &cfg)
        .unwrap_or_else(|e| panic!("canonical text refused ({e:?}): {canonical}"));
    assert_eq!(again, r);
    assert_eq!(again.canonical(), canonical);
    // The proxy's side (serde's derived deserializer) reads the same report from that text.
    let derived: EnergyReport = serde_json::from_str(&canonical)
        .unwrap_or_else(|e| panic!("derived deserializer refused ({e}): {canonical}"));
    assert_eq!(derived, r);
}
