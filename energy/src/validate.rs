//! Parsing and validation of a report body: what the pool accepts.
//!
//! Parsing is done by hand from a JSON value (not with the derived `Deserialize`) so that every
//! error names the exact field (`sources[1].kwh`), as the rest of the pool's API does, and so
//! that every number is checked (finite, in range) before anything is stored or summed. The
//! checks are pure (the clock is an argument): the fuzzer runs them at a fixed time.

use crate::report::{
    CurtailmentEvent, CurtailmentSummary, EnergyReport, SiteId, SourceEnergy, VERSION,
};
use crate::units::{GramsPerKwh, KilowattHours, Kilowatts, SourceKind};
use serde_json::{Map, Value};

/// Most sources one report may list (a site's feeds, one meter each).
pub const MAX_SOURCES: usize = 32;
/// Most curtailment events one report may carry (the proxy sends fewer, see its
/// `energy::report`).
pub const MAX_EVENTS: usize = 200;
/// Most signal ids in one report's curtailment summary.
pub const MAX_SIGNAL_IDS: usize = 64;
/// A bound far above any real site's energy in one report (a 100 MW site for a day is 2.4 GWh):
/// larger numbers are a unit mix-up.
pub const MAX_KWH: f64 = 1e7;
/// The highest emission factor accepted anywhere (lignite is ~1 200; anything far above is a
/// typo).
pub const MAX_FACTOR_G_PER_KWH: f64 = 2_000.0;
/// Longest site id, in bytes (see [`valid_site_id`]).
pub const MAX_SITE_ID_CHARS: usize = 64;
/// Longest meter id, in bytes.
pub const MAX_METER_CHARS: usize = 64;
/// Longest grid region name, in bytes.
pub const MAX_REGION_CHARS: usize = 64;
/// Longest grid signal id, in bytes (the grid signal's own limit).
pub const MAX_SIGNAL_ID_CHARS: usize = 128;
/// Longest curtailment event text, in bytes.
pub const MAX_EVENT_WHAT_CHARS: usize = 512;

/// Site ids are short, printable and safe in URLs and logs: 1 to 64 ASCII letters, digits,
/// '-', '_' or '.'. The proxy's config, the pool's config and the report use this one rule.
pub fn valid_site_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SITE_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What the pool configures about the reports it takes (its `[energy]` section builds this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Reports whose interval ends later than now + this are refused (clock skew allowance).
    pub max_clock_skew_secs: u64,
    /// The longest interval one report may cover.
    pub max_interval_secs: u64,
}

impl Default for Rules {
    /// The pool's defaults: 5 minutes of clock skew, intervals up to a day.
    fn default() -> Self {
        Rules {
            max_clock_skew_secs: 300,
            max_interval_secs: 86_400,
        }
    }
}

/// A rejected report: the field at fault (`sources[1].kwh`, or `body` for the whole text) and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
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

/// Parse and check a report body. `now_secs` is the pool's clock (unix seconds).
pub fn parse(body: &[u8], now_secs: i64, rules: &Rules) -> Result<EnergyReport, Invalid> {
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
    if version != u64::from(VERSION) {
        return Err(bad(
            "version",
            format!("version {version} is not understood; this coordinator takes version {VERSION}: upgrade it"),
        ));
    }
    let site_id = top.string("site_id", MAX_SITE_ID_CHARS)?;
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
    // Both are ≥ 0 (checked by `int`), so neither this nor `end - now` below can overflow
    // for a clock at or after 1970; the saturating forms keep that true for any clock.
    let length = end - start;
    let max_interval = i64::try_from(rules.max_interval_secs).unwrap_or(i64::MAX);
    if length > max_interval {
        return Err(bad(
            "interval_end",
            format!(
                "the interval is {length} s long; at most {} s (energy.max_interval_secs)",
                rules.max_interval_secs
            ),
        ));
    }
    let skew = i64::try_from(rules.max_clock_skew_secs).unwrap_or(i64::MAX);
    if end > now_secs.saturating_add(skew) {
        return Err(bad(
            "interval_end",
            format!(
                "{end} is {} s in the future; an interval is reported after it ended (check the site's clock: NTP)",
                end.saturating_sub(now_secs)
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
        let meter = s.string("meter", MAX_METER_CHARS)?;
        if sources.iter().any(|o: &SourceEnergy| o.meter == meter) {
            return Err(bad(
                s.field("meter"),
                format!("meter {meter:?} is listed twice; one meter measures one source"),
            ));
        }
        let region = s.opt_string("region", MAX_REGION_CHARS)?;
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
    let average_kw = Kilowatts(top.number("average_kw")?);
    let peak_kw = Kilowatts(top.number("peak_kw")?);
    let hashes = top.number("hashes")?;
    let curtailment = match top.get("curtailment") {
        None => None,
        Some(v) => Some(parse_curtailment(v, length)?),
    };
    Ok(EnergyReport {
        version: VERSION,
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
    for (i, id) in c.array("signal_ids", MAX_SIGNAL_IDS)?.iter().enumerate() {
        let field = format!("curtailment.signal_ids[{i}]");
        match id.as_str() {
            Some(s) if !s.is_empty() && s.len() <= MAX_SIGNAL_ID_CHARS => {
                signal_ids.push(s.to_string())
            }
            _ => {
                return Err(bad(
                    field,
                    format!("must be a signal id (1 to {MAX_SIGNAL_ID_CHARS} characters)"),
                ))
            }
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
            signal_id: e.opt_string("signal_id", MAX_SIGNAL_ID_CHARS)?,
            what: e.string("what", MAX_EVENT_WHAT_CHARS)?,
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
        parse(v.to_string().as_bytes(), NOW, &Rules::default())
    }

    #[test]
    fn a_good_report_parses_and_its_canonical_form_is_stable() {
        let r = check(&good()).unwrap();
        assert_eq!(r.sources[1].kind, SourceKind::Grid);
        assert_eq!(r.total_kwh(), KilowattHours(15.75));
        // The canonical text parses back to the same report and is a fixed point.
        let again = parse(r.canonical().as_bytes(), NOW, &Rules::default()).unwrap();
        assert_eq!(again, r);
        assert_eq!(again.canonical(), r.canonical());
        // Key order and whitespace of the input do not matter; a changed number does.
        let reordered = r#"{"sources":[{"measured_secs":300.0,"kwh":12.5,"meter":"pv","kind":"solar"},
            {"kind":"grid","meter":"grid","region":"DE","kwh":3.25,"measured_secs":299.5,"g_co2_per_kwh":350}],
            "site_id":"site-a","version":1,"interval_end":1767225900,"interval_start":1767225600,
            "average_kw":189,"peak_kw":201.5,"hashes":1500000000000000000,
            "curtailment":{"signal_secs":10,"compliant_secs":9.5,"signal_ids":["evt-1"],"events_omitted":0,
              "events":[{"what":"signal evt-1 in force","at":1767225800,"signal_id":"evt-1"}]}}"#;
        let r2 = parse(reordered.as_bytes(), NOW, &Rules::default()).unwrap();
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
        let e = parse(b"{not json", NOW, &Rules::default()).unwrap_err();
        assert_eq!(e.field, "body");
        assert!(e.message.contains("malformed JSON"), "{}", e.message);
        let e = parse(b"[1]", NOW, &Rules::default()).unwrap_err();
        assert_eq!(e.field, "body");
    }
}
