//! Checks a Grafana dashboard against what a live `/metrics` really exports, so a renamed
//! metric breaks a test instead of silently emptying an operator's panel.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// Metric names in a Prometheus/OpenMetrics text exposition: every sample's name, and every
/// declared family (a gauge with nothing to report yet, like a limit without a signal, has only
/// its `# TYPE` line).
pub fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if l.starts_with('#') || l.trim().is_empty() => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(str::to_string)
        .collect()
}

/// Metric names a Grafana dashboard queries: identifiers starting `blgv_` in its `expr`s.
pub fn queried_names(dashboard: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    collect_queried(dashboard, &mut out);
    out
}

fn collect_queried(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" {
                    let mut rest = v.as_str().unwrap_or("");
                    while let Some(i) = rest.find("blgv_") {
                        let name: String = rest[i..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        rest = &rest[i + name.len()..];
                        out.insert(name);
                    }
                } else {
                    collect_queried(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_queried(v, out)),
        _ => {}
    }
}

/// Reads a dashboard from `deploy/grafana/<file>` and returns (what it queries, the queried
/// names that `metrics_text` does not export). Histogram series (`_bucket`, `_count`, `_sum`)
/// count as their family; OpenMetrics counters are matched with their `_total` sample name.
pub fn dashboard_against_metrics(
    file: &str,
    metrics_text: &str,
) -> Result<(BTreeSet<String>, Vec<String>), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/grafana")
        .join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dashboard: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let exported = exported_names(metrics_text);
    let queried = queried_names(&dashboard);
    let missing = queried
        .iter()
        .filter(|q| {
            let base = q
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum");
            !exported.contains(*q) && !exported.contains(base)
        })
        .cloned()
        .collect();
    Ok((queried, missing))
}
