//! The energy report a site sends to the pool every interval. The wire format (types, limits,
//! validation) is `blgv-energy`, shared with the pool that parses it (`blgv_energy::parse`);
//! this module holds what only the sender decides: how many curtailment events it sends and
//! how large a body may get.
//!
//! Times are unix seconds (UTC) and the interval is `[interval_start, interval_end)`, aligned
//! to `energy.report_interval_secs`.

pub use blgv_energy::{
    CurtailmentEvent, CurtailmentSummary, EnergyReport, GramsPerKwh, KilowattHours, Kilowatts,
    SiteId, SourceEnergy, SourceKind, VERSION,
};

/// Most events one report carries (the pool takes up to `blgv_energy::MAX_EVENTS`; the body
/// must stay well under its `api.max_body_bytes`).
pub const MAX_EVENTS: usize = 50;
/// Longest event text sent, in characters (the pool takes `blgv_energy::MAX_EVENT_WHAT_CHARS`
/// bytes; 200 characters of up to 2 bytes each fit).
pub const MAX_EVENT_CHARS: usize = 200;
/// Largest body sent: well under the pool's default `api.max_body_bytes` (16 KiB), which a
/// report must never exceed (it would be refused on every retry and hold up the ones after it).
pub const MAX_BODY_BYTES: usize = 12 * 1024;

// What the proxy sends must stay within what the pool accepts.
const _: () = assert!(MAX_EVENTS <= blgv_energy::MAX_EVENTS);

/// An event's text as the pool accepts it: 1 to `blgv_energy::MAX_EVENT_WHAT_CHARS` bytes, no
/// control characters. The loop's texts can quote a firmware's error (line breaks) or a
/// non-ASCII signal id; one report the pool refuses would be retried forever and hold up the
/// ones after it, so the text is cleaned here rather than refused there.
pub fn event_text(what: &str) -> String {
    let mut out = String::new();
    for c in what.chars().take(MAX_EVENT_CHARS) {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > blgv_energy::MAX_EVENT_WHAT_CHARS {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// [`EnergyReport::canonical`], leaving out the newest curtailment events (counted in
/// `events_omitted`) while the body is over [`MAX_BODY_BYTES`]. The body is stored in the
/// outbox and sent byte for byte on every retry, so the pool can tell a retry from a different
/// report.
pub fn bounded_json(report: &mut EnergyReport) -> String {
    loop {
        let body = report.canonical();
        let Some(c) = report.curtailment.as_mut().filter(|c| !c.events.is_empty()) else {
            return body;
        };
        if body.len() <= MAX_BODY_BYTES {
            return body;
        }
        let drop = (c.events.len() / 4).max(1);
        c.events.truncate(c.events.len() - drop);
        c.events_omitted += drop as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let r = EnergyReport {
            version: VERSION,
            site_id: SiteId("site-a".into()),
            interval_start: 600,
            interval_end: 900,
            sources: vec![
                SourceEnergy {
                    kind: SourceKind::Solar,
                    meter: "pv".into(),
                    region: None,
                    kwh: KilowattHours(1.5),
                    measured_secs: 300.0,
                    g_co2_per_kwh: None,
                },
                SourceEnergy {
                    kind: SourceKind::Grid,
                    meter: "grid".into(),
                    region: Some("DE".into()),
                    kwh: KilowattHours(0.25),
                    measured_secs: 299.0,
                    g_co2_per_kwh: Some(GramsPerKwh(350.0)),
                },
            ],
            average_kw: Kilowatts(21.0),
            peak_kw: Kilowatts(22.5),
            hashes: 4.294967296e12,
            curtailment: None,
        };
        let v: serde_json::Value = serde_json::from_str(&r.canonical()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "version": 1, "site_id": "site-a", "interval_start": 600, "interval_end": 900,
                "sources": [
                    {"kind": "solar", "meter": "pv", "kwh": 1.5, "measured_secs": 300.0},
                    {"kind": "grid", "meter": "grid", "region": "DE", "kwh": 0.25,
                     "measured_secs": 299.0, "g_co2_per_kwh": 350.0}
                ],
                "average_kw": 21.0, "peak_kw": 22.5, "hashes": 4294967296000.0
            })
        );
        let back: EnergyReport = serde_json::from_str(&r.canonical()).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.total_kwh(), KilowattHours(1.75));
    }

    #[test]
    fn event_texts_are_what_the_pool_accepts() {
        assert_eq!(event_text("shed 3 miners"), "shed 3 miners");
        assert_eq!(event_text("error:\nboard 2\r\n"), "error: board 2  ");
        assert_eq!(event_text(""), "-");
        assert_eq!(event_text(&"x".repeat(500)).len(), MAX_EVENT_CHARS);
        // 200 four-byte characters would be 800 bytes: cut at the byte limit, on a char boundary.
        let wide = event_text(&"😀".repeat(300));
        assert_eq!(wide.len(), blgv_energy::MAX_EVENT_WHAT_CHARS);
        assert_eq!(wide.chars().count(), blgv_energy::MAX_EVENT_WHAT_CHARS / 4);
        // The pool takes a report carrying such events.
        let r = EnergyReport {
            version: VERSION,
            site_id: SiteId("a".into()),
            interval_start: 0,
            interval_end: 300,
            sources: vec![SourceEnergy {
                kind: SourceKind::Solar,
                meter: "pv".into(),
                region: None,
                kwh: KilowattHours(1.0),
                measured_secs: 300.0,
                g_co2_per_kwh: None,
            }],
            average_kw: Kilowatts(12.0),
            peak_kw: Kilowatts(12.0),
            hashes: 0.0,
            curtailment: Some(CurtailmentSummary {
                signal_secs: 10.0,
                compliant_secs: 10.0,
                signal_ids: vec!["s".into()],
                events: ["", "a\tb", &"😀".repeat(300)]
                    .iter()
                    .map(|w| CurtailmentEvent {
                        at: 5,
                        signal_id: None,
                        what: event_text(w),
                    })
                    .collect(),
                events_omitted: 0,
            }),
        };
        blgv_energy::parse(
            r.canonical().as_bytes(),
            300,
            &blgv_energy::Rules::default(),
        )
        .unwrap();
    }

    #[test]
    fn bodies_stay_under_the_pools_limit() {
        let event = CurtailmentEvent {
            at: 1,
            signal_id: Some("s".repeat(128)),
            what: "w".repeat(MAX_EVENT_CHARS),
        };
        let mut r = EnergyReport {
            version: VERSION,
            site_id: SiteId("a".into()),
            interval_start: 0,
            interval_end: 300,
            sources: vec![],
            average_kw: Kilowatts(0.0),
            peak_kw: Kilowatts(0.0),
            hashes: 0.0,
            curtailment: Some(CurtailmentSummary {
                events: vec![event; MAX_EVENTS],
                ..Default::default()
            }),
        };
        assert!(r.canonical().len() > MAX_BODY_BYTES);
        let body = bounded_json(&mut r);
        assert!(body.len() <= MAX_BODY_BYTES);
        let c = r.curtailment.as_ref().unwrap();
        assert!(!c.events.is_empty());
        assert_eq!(c.events.len() as u64 + c.events_omitted, MAX_EVENTS as u64);
    }
}
