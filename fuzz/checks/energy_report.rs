//! The pool's energy-report validation on arbitrary bodies: never panics, every accepted
//! report satisfies the validator's invariants, and its canonical text parses back to itself
//! (the duplicate detection relies on it).
//!
//! Shared by the `energy_report` fuzz target and the stable corpus replay
//! (`tests/tests/fuzz_corpus.rs`). The input is the HTTP body, judged at a fixed time.

use blgv_cloud::energy::report::{parse, MAX_EVENTS, MAX_KWH, MAX_SOURCES, VERSION};
use blgv_cloud::energy::EnergySection;

/// The replay clock: 2026-01-01T00:05:00Z (the seed report ends then).
pub const NOW_SECS: i64 = 1_767_225_900;

pub fn check(data: &[u8]) {
    let cfg = EnergySection::default();
    let Ok(r) = parse(data, NOW_SECS, &cfg) else {
        return;
    };
    assert_eq!(r.version, VERSION);
    let id = &r.site_id.0;
    assert!(!id.is_empty() && id.len() <= 64);
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
        assert!(!s.meter.is_empty() && s.meter.len() <= 64);
        assert!(
            r.sources[..i].iter().all(|o| o.meter != s.meter),
            "meter {:?} twice",
            s.meter
        );
    }
    let total = r.total_kwh().0;
    assert!(total.is_finite() && total >= 0.0);
    for v in [r.average_kw, r.peak_kw, r.hashes] {
        assert!(v.is_finite() && v >= 0.0, "{v}");
    }
    if let Some(c) = &r.curtailment {
        assert!(c.signal_secs.is_finite() && c.signal_secs >= 0.0);
        assert!(c.signal_secs <= length as f64 + 1.0);
        assert!(c.compliant_secs.is_finite() && c.compliant_secs >= 0.0);
        assert!(c.compliant_secs <= c.signal_secs + 1e-6);
        assert!(c.events.len() <= MAX_EVENTS);
        for e in &c.events {
            assert!(e.at >= 0);
        }
    }
    // The canonical text is a valid report equal to this one, and a fixed point.
    let canonical = r.canonical();
    let again = parse(canonical.as_bytes(), NOW_SECS, &cfg)
        .unwrap_or_else(|e| panic!("canonical text refused ({e:?}): {canonical}"));
    assert_eq!(again, r);
    assert_eq!(again.canonical(), canonical);
}
