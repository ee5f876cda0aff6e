//! The energy report a site proxy sends every interval (`POST /api/energy/report`) and its
//! validation. The wire format, its limits and the validator live in `blgv-energy`, shared with
//! the proxy that writes the reports (and the fuzzer); this module applies the pool's
//! `[energy]` settings to it.

use super::config::EnergySection;
pub use blgv_energy::report::*;
pub use blgv_energy::validate::*;

/// Parse and check a report body under the pool's `[energy]` settings. `now_secs` is the
/// coordinator's clock (unix seconds).
pub fn parse(body: &[u8], now_secs: i64, cfg: &EnergySection) -> Result<EnergyReport, Invalid> {
    blgv_energy::parse(body, now_secs, &cfg.report_rules())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The section's limits reach the shared validator (its own tests cover every field).
    #[test]
    fn the_sections_limits_apply() {
        let now = 1_767_225_900;
        let body = json!({
            "version": 1, "site_id": "site-a", "interval_start": now - 600, "interval_end": now + 60,
            "sources": [{"kind": "solar", "meter": "pv", "kwh": 1.0, "measured_secs": 600.0}],
            "average_kw": 6.0, "peak_kw": 6.5, "hashes": 1e15
        })
        .to_string();
        let mut cfg = EnergySection::default();
        parse(body.as_bytes(), now, &cfg).unwrap();
        cfg.max_interval_secs = 300;
        assert_eq!(
            parse(body.as_bytes(), now, &cfg).unwrap_err().field,
            "interval_end"
        );
        cfg.max_interval_secs = 660;
        cfg.max_clock_skew_secs = 30;
        let e = parse(body.as_bytes(), now, &cfg).unwrap_err();
        assert_eq!(e.field, "interval_end");
        assert!(e.message.contains("in the future"), "{e}");
    }
}
