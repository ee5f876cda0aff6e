//! The energy report a site proxy sends every interval (`POST /api/energy/report`), and its
//! validation.
//!
//! The JSON shape (version 1) is the one `blgv-proxy` builds in `proxy/src/energy/report.rs`
//! (the two crates do not depend on each other; `tests/tests/site_energy.rs` checks that the
//! coordinator accepts what the proxy sends):
//!
//! ```json
//! {"version": 1, "site_id": "site1", "interval_start": 1767225600, "interval_end": 1767225900,
//!  "sources": [{"kind": "solar", "meter": "pv", "kwh": 12.5, "measured_secs": 300.0},
//!              {"kind": "grid", "meter": "grid-in", "region": "DE", "kwh": 3.1,
//!               "measured_secs": 300.0, "g_co2_per_kwh": 350.0}],
//!  "average_kw": 187.2, "peak_kw": 201.3, "hashes": 1.3e18,
//!  "curtailment": {"signal_secs": 120.0, "compliant_secs": 118.0, "signal_ids": ["evt-42"],
//!                  "events": [{"at": 1767225610, "signal_id": "evt-42", "what": "…"}],
//!                  "events_omitted": 0}}
//! ```
//!
//! Times are unix seconds (UTC); the interval is `[interval_start, interval_end)`. Parsing is
//! done by hand from a JSON value so that every error names the exact field
//! (`sources[1].kwh`), as the rest of the API does. The validated report is re-serialized into
//! a canonical JSON text: a retry of the same report has the same canonical text (numbers
//! round-trip exactly), which is how a duplicate is told from a different report for the same
//! interval without comparing floating-point numbers.

use super::carbon::{GramsPerKwh, KilowattHours, SourceKind};
use super::config::{valid_site_id, EnergySection, MAX_FACTOR_G_PER_KWH};
use serde::Serialize;
use serde_json::{Map, Value};

/// The only report version this coordinator understands.
pub const VERSION: u64 = 1;
/// Most sources one report may list.
pub const MAX_SOURCES: usize = 32;
/// Most curtailment events one report may carry.
pub const MAX_EVENTS: usize = 200;
/// A bound far above any real site's energy in one report (a 100 MW site for a day is 2.4 GWh):
/// larger numbers are a unit mix-up.
pub const MAX_KWH: f64 = 1e7;

/// A site's identifier (`energy.site_id` on the proxy, `energy.sites[].id` here).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SiteId(pub String);

impl std::fmt::Display for SiteId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One energy source of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceEnergy {
    pub kind: SourceKind,
    /// The id of the meter that measures this feed at the site.
    pub meter: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub kwh: KilowattHours,
    /// Seconds of the interval the meter's readings covered.
    pub measured_secs: f64,
    /// A factor the site declares for this source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub g_co2_per_kwh: Option<GramsPerKwh>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurtailmentEvent {
    pub at: i64,
    pub signal_id: Option<String>,
    pub what: String,
}

/// Grid curtailment during the interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurtailmentSummary {
    /// Seconds a grid signal was in force.
    pub signal_secs: f64,
    /// Of those, seconds the site measured at or under the limit.
    pub compliant_secs: f64,
    pub signal_ids: Vec<String>,
    pub events: Vec<CurtailmentEvent>,
    /// Events the site had to leave out (too many in one interval).
    pub events_omitted: u64,
}

/// A validated report. Field order is the canonical JSON's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnergyReport {
    pub version: u64,
    pub site_id: SiteId,
    pub interval_start: i64,
    pub interval_end: i64,
    pub sources: Vec<SourceEnergy>,
    pub average_kw: f64,
    pub peak_kw: f64,
    pub hashes: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curtailment: Option<CurtailmentSummary>,
}

impl EnergyReport {
    /// The canonical JSON text (see the module documentation).
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn total_kwh(&self) -> KilowattHours {
        self.sources
            .iter()
            .fold(KilowattHours(0.0), |a, s| a + s.kwh)
    }
}

/// A rejected report: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Reads fields out of one JSON object, naming them with a path prefix.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn new(path: String, v: &'a Value, allowed: &[&str]) -> Result<Obj<'a>, Invalid> {
        let name = if path.is_empty() { "body" } else { &path };
        let map = v
            .as_object()
            .ok_or_else(|| bad(name, "must be a JSON object"))?;
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                return Err(bad(
                    format!("{}{key}", Self::prefix(&path)),
                    format!("unknown field; expected one of: {}", allowed.join(", ")),
                ));
            }
        }
        Ok(Obj { path, map })
    }

    fn prefix(path: &str) -> String {
        if path.is_empty() {
            String::new()
        } else {
            format!("{path}.")
        }
    }

    fn field(&self, key: &str) -> String {
        format!("{}{key}", Self::prefix(&self.path))
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn required(&self, key: &str) -> Result<&'a Value, Invalid> {
        self.get(key).ok_or_else(|| bad(self.field(key), "missing"))
    }

    fn string(&self, key: &str, max_len: usize) -> Result<String, Invalid> {
        let v = self.required(key)?;
        self.as_string(key, v, max_len)
    }

    fn opt_string(&self, key: &str, max_len: usize) -> Result<Option<String>, Invalid> {
        self.get(key)
            .map(|v| self.as_string(key, v, max_len))
            .transpose()
    }

    fn as_string(&self, key: &str, v: &Value, max_len: usize) -> Result<String, Invalid> {
        let s = v
            .as_str()
            .ok_or_else(|| bad(self.field(key), "must be a string"))?;
        if s.is_empty() || s.len() > max_len || s.chars().any(char::is_control) {
            return Err(bad(
                self.field(key),
                format!("must be 1 to {max_len} printable characters"),
            ));
        }
        Ok(s.to_string())
    }

    fn int(&self, key: &str) -> Result<i64, Invalid> {
        let v = self.required(key)?;
        v.as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad(self.field(key), "must be a whole number ≥ 0 (unix seconds)"))
    }

    /// A finite number ≥ 0 (negative energy, power or time is never meaningful here).
    fn non_negative(&self, key: &str, v: &Value) -> Result<f64, Invalid> {
        let n = v
            .as_f64()
            .ok_or_else(|| bad(self.field(key), "must be a number"))?;
        if !n.is_finite() {
            return Err(bad(self.field(key), "must be a finite number"));
        }
        if n < 0.0 {
            return Err(bad(
                self.field(key),
                format!("{n} is negative; must be ≥ 0"),
            ));
        }
        Ok(n)
    }

    fn number(&self, key: &str) -> Result<f64, Invalid> {
        let v = self.required(key)?;
        self.non_negative(key, v)
    }

    fn opt_number(&self, key: &str) -> Result<Option<f64>, Invalid> {
        self.get(key).map(|v| self.non_negative(key, v)).transpose()
    }

    fn array(&self, key: &str, max: usize) -> Result<&'a Vec<Value>, Invalid> {
        let a = self
            .required(key)?
            .as_array()
            .ok_or_else(|| bad(self.field(key), "must be an array"))?;
        if a.len() > max {
            return Err(bad(
                self.field(key),
                format!("{} items; at most {max}", a.len()),
            ));
        }
        Ok(a)
    }
}

/// Parse and check a report body. `now_secs` is the coordinator's clock (unix seconds).
pub fn parse(body: &[u8], now_secs: i64, cfg: &EnergySection) -> Result<EnergyReport, Invalid> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad("body", format!("malformed JSON: {e}")))?;
    let top = Obj::new(
        String::new(),
        &value,
        &[
            "version",
            "site_id",
            "interval_start",
            "interval_end",
            "sources",
            "average_kw",
            "peak_kw",
            "hashes",
            "curtailment",
        ],
    )?;
    let version = top
        .required("version")?
        .as_u64()
        .ok_or_else(|| bad("version", "must be a whole number"))?;
    if version != VERSION {
        return Err(bad(
            "version",
            format!("version {version} is not understood; this coordinator takes version {VERSION}: upgrade it"),
        ));
    }
    let site_id = top.string("site_id", 64)?;
    if !valid_site_id(&site_id) {
        return Err(bad(
            "site_id",
            "must be 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let start = top.int("interval_start")?;
    let end = top.int("interval_end")?;
    if end <= start {
        return Err(bad(
            "interval_end",
            format!("{end} is not after interval_start {start}"),
        ));
    }
    let length = end - start;
    if length > cfg.max_interval_secs as i64 {
        return Err(bad(
            "interval_end",
            format!(
                "the interval is {length} s long; at most {} s (energy.max_interval_secs)",
                cfg.max_interval_secs
            ),
        ));
    }
    if end > now_secs.saturating_add(cfg.max_clock_skew_secs as i64) {
        return Err(bad(
            "interval_end",
            format!(
                "{end} is {} s in the future; an interval is reported after it ended (check the site's clock: NTP)",
                end - now_secs
            ),
        ));
    }
    let mut sources = Vec::new();
    let items = top.array("sources", MAX_SOURCES)?;
    if items.is_empty() {
        return Err(bad("sources", "empty; list at least one source"));
    }
    for (i, item) in items.iter().enumerate() {
        let s = Obj::new(
            format!("sources[{i}]"),
            item,
            &[
                "kind",
                "meter",
                "region",
                "kwh",
                "measured_secs",
                "g_co2_per_kwh",
            ],
        )?;
        let kind_text = s.string("kind", 32)?;
        let kind = SourceKind::parse(&kind_text).ok_or_else(|| {
            bad(
                s.field("kind"),
                format!(
                    "unknown source kind {kind_text:?}; use one of: {}",
                    SourceKind::ALL.map(SourceKind::as_str).join(", ")
                ),
            )
        })?;
        let meter = s.string("meter", 64)?;
        if sources.iter().any(|o: &SourceEnergy| o.meter == meter) {
            return Err(bad(
                s.field("meter"),
                format!("meter {meter:?} is listed twice; one meter measures one source"),
            ));
        }
        let region = s.opt_string("region", 64)?;
        let kwh = s.number("kwh")?;
        if kwh > MAX_KWH {
            return Err(bad(
                s.field("kwh"),
                format!("{kwh} kWh in one report is not plausible (at most {MAX_KWH}); is the unit kWh?"),
            ));
        }
        let measured_secs = s.number("measured_secs")?;
        // A little slack: the site's clock stamps readings with sub-second times.
        if measured_secs > length as f64 + 1.0 {
            return Err(bad(
                s.field("measured_secs"),
                format!("{measured_secs} s is longer than the {length} s interval"),
            ));
        }
        let declared = s.opt_number("g_co2_per_kwh")?;
        if let Some(g) = declared {
            if g > MAX_FACTOR_G_PER_KWH {
                return Err(bad(
                    s.field("g_co2_per_kwh"),
                    format!("{g} is above {MAX_FACTOR_G_PER_KWH} gCO2e/kWh"),
                ));
            }
        }
        sources.push(SourceEnergy {
            kind,
            meter,
            region,
            kwh: KilowattHours(kwh),
            measured_secs,
            g_co2_per_kwh: declared.map(GramsPerKwh),
        });
    }
    let average_kw = top.number("average_kw")?;
    let peak_kw = top.number("peak_kw")?;
    let hashes = top.number("hashes")?;
    let curtailment = match top.get("curtailment") {
        None => None,
        Some(v) => Some(parse_curtailment(v, length)?),
    };
    Ok(EnergyReport {
        version,
        site_id: SiteId(site_id),
        interval_start: start,
        interval_end: end,
        sources,
        average_kw,
        peak_kw,
        hashes,
        curtailment,
    })
}

fn parse_curtailment(v: &Value, length: i64) -> Result<CurtailmentSummary, Invalid> {
    let c = Obj::new(
        "curtailment".into(),
        v,
        &[
            "signal_secs",
            "compliant_secs",
            "signal_ids",
            "events",
            "events_omitted",
        ],
    )?;
    let signal_secs = c.number("signal_secs")?;
    if signal_secs > length as f64 + 1.0 {
        return Err(bad(
            "curtailment.signal_secs",
            format!("{signal_secs} s is longer than the {length} s interval"),
        ));
    }
    let compliant_secs = c.number("compliant_secs")?;
    if compliant_secs > signal_secs + 1e-6 {
        return Err(bad(
            "curtailment.compliant_secs",
            format!("{compliant_secs} s is more than signal_secs ({signal_secs} s)"),
        ));
    }
    let mut signal_ids = Vec::new();
    for (i, id) in c.array("signal_ids", 64)?.iter().enumerate() {
        let field = format!("curtailment.signal_ids[{i}]");
        match id.as_str() {
            Some(s) if !s.is_empty() && s.len() <= 128 => signal_ids.push(s.to_string()),
            _ => return Err(bad(field, "must be a signal id (1 to 128 characters)")),
        }
    }
    let mut events = Vec::new();
    for (i, e) in c.array("events", MAX_EVENTS)?.iter().enumerate() {
        let e = Obj::new(
            format!("curtailment.events[{i}]"),
            e,
            &["at", "signal_id", "what"],
        )?;
        events.push(CurtailmentEvent {
            at: e.int("at")?,
            signal_id: e.opt_string("signal_id", 128)?,
            what: e.string("what", 512)?,
        });
    }
    let events_omitted = match c.get("events_omitted") {
        None => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad("curtailment.events_omitted", "must be a whole number ≥ 0"))?,
    };
    Ok(CurtailmentSummary {
        signal_secs,
        compliant_secs,
        signal_ids,
        events,
        events_omitted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_767_225_900;

    fn good() -> Value {
        json!({
            "version": 1, "site_id": "site-a", "interval_start": NOW - 300, "interval_end": NOW,
            "sources": [
                {"kind": "solar", "meter": "pv", "kwh": 12.5, "measured_secs": 300.0},
                {"kind": "grid", "meter": "grid", "region": "DE", "kwh": 3.25, "measured_secs": 299.5,
                 "g_co2_per_kwh": 350.0}
            ],
            "average_kw": 189.0, "peak_kw": 201.5, "hashes": 1.5e18,
            "curtailment": {"signal_secs": 10.0, "compliant_secs": 9.5, "signal_ids": ["evt-1"],
                            "events": [{"at": NOW - 100, "signal_id": "evt-1", "what": "signal evt-1 in force"}],
                            "events_omitted": 0}
        })
    }

    fn check(v: &Value) -> Result<EnergyReport, Invalid> {
        parse(v.to_string().as_bytes(), NOW, &EnergySection::default())
    }

    #[test]
    fn a_good_report_parses_and_its_canonical_form_is_stable() {
        let r = check(&good()).unwrap();
        assert_eq!(r.sources[1].kind, SourceKind::Grid);
        assert_eq!(r.total_kwh(), KilowattHours(15.75));
        // The canonical text parses back to the same report and is a fixed point.
        let again = parse(r.canonical().as_bytes(), NOW, &EnergySection::default()).unwrap();
        assert_eq!(again, r);
        assert_eq!(again.canonical(), r.canonical());
        // Key order and whitespace of the input do not matter; a changed number does.
        let reordered = r#"{"sources":[{"measured_secs":300.0,"kwh":12.5,"meter":"pv","kind":"solar"},
            {"kind":"grid","meter":"grid","region":"DE","kwh":3.25,"measured_secs":299.5,"g_co2_per_kwh":350}],
            "site_id":"site-a","version":1,"interval_end":1767225900,"interval_start":1767225600,
            "average_kw":189,"peak_kw":201.5,"hashes":1500000000000000000,
            "curtailment":{"signal_secs":10,"compliant_secs":9.5,"signal_ids":["evt-1"],"events_omitted":0,
              "events":[{"what":"signal evt-1 in force","at":1767225800,"signal_id":"evt-1"}]}}"#;
        let r2 = parse(reordered.as_bytes(), NOW, &EnergySection::default()).unwrap();
        assert_eq!(r2.canonical(), r.canonical());
        let mut changed = good();
        changed["sources"][0]["kwh"] = json!(12.500000001);
        assert_ne!(check(&changed).unwrap().canonical(), r.canonical());
    }

    #[test]
    fn bad_fields_are_named() {
        type Edit = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "sources[0].kwh",
                Box::new(|v| v["sources"][0]["kwh"] = json!(-1.0)),
            ),
            (
                "interval_end",
                Box::new(|v| v["interval_end"] = json!(NOW + 3600)),
            ),
            (
                "interval_end",
                Box::new(|v| v["interval_end"] = v["interval_start"].clone()),
            ),
            (
                "interval_end",
                Box::new(|v| v["interval_end"] = json!(NOW - 400)),
            ),
            (
                "sources[1].kind",
                Box::new(|v| v["sources"][1]["kind"] = json!("diesel")),
            ),
            (
                "sources[0].colour",
                Box::new(|v| v["sources"][0]["colour"] = json!("green")),
            ),
            (
                "sources[0].measured_secs",
                Box::new(|v| v["sources"][0]["measured_secs"] = json!(1000.0)),
            ),
            (
                "sources[1].meter",
                Box::new(|v| v["sources"][1]["meter"] = json!("pv")),
            ),
            ("sources", Box::new(|v| v["sources"] = json!([]))),
            (
                "site_id",
                Box::new(|v| v["site_id"] = json!("no spaces please")),
            ),
            ("version", Box::new(|v| v["version"] = json!(2))),
            ("hashes", Box::new(|v| v["hashes"] = json!("lots"))),
            (
                "peak_kw",
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("peak_kw");
                }),
            ),
            (
                "curtailment.compliant_secs",
                Box::new(|v| v["curtailment"]["compliant_secs"] = json!(11.0)),
            ),
            (
                "sources[1].g_co2_per_kwh",
                Box::new(|v| v["sources"][1]["g_co2_per_kwh"] = json!(5000.0)),
            ),
        ];
        for (field, edit) in cases {
            let mut v = good();
            edit(&mut v);
            let e = check(&v).unwrap_err();
            assert_eq!(e.field, field, "{}", e.message);
        }
        let e = parse(b"{not json", NOW, &EnergySection::default()).unwrap_err();
        assert_eq!(e.field, "body");
        assert!(e.message.contains("malformed JSON"), "{}", e.message);
        let e = parse(b"[1]", NOW, &EnergySection::default()).unwrap_err();
        assert_eq!(e.field, "body");
    }
}
