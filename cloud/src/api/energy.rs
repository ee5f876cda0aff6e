//! Energy reports from the sites, the energy mix and the carbon footprint.
//!
//! * `POST /api/energy/report`: one site's report for one interval, with that site's bearer
//!   token (`[[energy.sites]]`). New: 201. The very same report again (a site retrying after a
//!   lost answer): 200 `{"status": "duplicate"}`, counted once. A different report for the same
//!   (site, interval start), or one overlapping another interval of the site: 409.
//! * `GET /api/energy/sources?from=&to=&site=`: kWh by source per site and for all sites, with
//!   each source's share in %.
//! * `GET /api/carbon/footprint?from=&to=&site=`: gCO₂e in total, per kWh, per TH, per block
//!   the pool found in the period, and J/TH, per site and for all sites.
//!
//! A period `[from, to)` is in unix seconds (default: the last 24 h) and takes the reports
//! whose interval starts in it.

use super::{bearer_token, constant_time_eq, ApiError, ApiResult, Shared};
use crate::energy::carbon::{
    resolve_factor, FactorError, GramsCo2e, KilowattHours, SourceFactors, Totals,
};
use crate::energy::config::valid_site_id;
use crate::energy::store::{Ingest, SiteSummary, SourceSummary, Summary};
use crate::energy::{report, EnergySection, EnergySite, SourceKind};
use crate::monitor::unix_ms;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// The site whose token the request carries.
fn authorize_site<'a>(
    cfg: &'a EnergySection,
    headers: &HeaderMap,
) -> Result<&'a EnergySite, ApiError> {
    if cfg.sites.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "energy reports are disabled: no [[energy.sites]] is configured; fix: add the site with its id and token to the coordinator's config",
        ));
    }
    let Some(given) = bearer_token(headers) else {
        return Err(ApiError::unauthorized(
            "missing bearer token; fix: send Authorization: Bearer <the site's energy.report.token>",
        ));
    };
    // Compare with every site's token, without stopping at the first match: the time taken
    // says nothing about which site (if any) matched.
    let mut found = None;
    for site in &cfg.sites {
        if constant_time_eq(given.as_bytes(), site.token.as_bytes()) {
            found = Some(site);
        }
    }
    found.ok_or_else(|| {
        ApiError::unauthorized(
            "wrong bearer token: no site in [[energy.sites]] has it; fix: use the token configured for this site",
        )
    })
}

pub async fn post_report(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let cfg = &state.config.energy;
    let site = authorize_site(cfg, &headers)?;
    let now_ms = unix_ms();
    let report = report::parse(&body, now_ms.div_euclid(1000), cfg)
        .map_err(|e| ApiError::bad_field(&e.field, e.message))?;
    if report.site_id.0 != site.id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "site_id: this token is site {:?}'s; a report for {:?} needs that site's token",
                site.id, report.site_id.0
            ),
        )
        .with_field("site_id"));
    }
    let mut factors = Vec::with_capacity(report.sources.len());
    for (i, s) in report.sources.iter().enumerate() {
        let field = format!("sources[{i}].region");
        let f = resolve_factor(s.kind, s.region.as_deref(), s.g_co2_per_kwh, &cfg.grid_regions)
            .map_err(|e| {
                let message = match e {
                    FactorError::MissingRegion => "a grid source needs its region (energy.sources[].region on the proxy)".to_string(),
                    FactorError::UnknownRegion { region, known } => format!(
                        "unknown grid region {region:?} (known: {}); fix: add it with its gCO2e/kWh to [energy.grid_regions] in the coordinator's config, or correct the site's region",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                };
                ApiError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    message: format!("{field}: {message}"),
                    field: Some(field.clone()),
                }
            })?;
        factors.push(f);
    }
    let store = state.energy.clone();
    let (site_id, start, end) = (
        report.site_id.0.clone(),
        report.interval_start,
        report.interval_end,
    );
    let outcome = tokio::task::spawn_blocking(move || store.ingest(&report, &factors, now_ms))
        .await
        .map_err(|e| ApiError::internal(format!("energy store task failed: {e}")))??;
    let ack = |status: &str| json!({"status": status, "site_id": site_id, "interval_start": start, "interval_end": end});
    match outcome {
        Ingest::Stored { gco2e } => {
            let mut body = ack("stored");
            body["gco2e"] = json!(gco2e.0);
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
        Ingest::Duplicate => Ok((StatusCode::OK, Json(ack("duplicate"))).into_response()),
        Ingest::Conflict => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("interval_start: a different report for site {site_id:?} and interval {start} is stored already; a site sends one report per interval"),
        )
        .with_field("interval_start")),
        Ingest::Overlap { start: s, end: e } => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("interval_start: [{start}, {end}) overlaps the stored interval [{s}, {e}) of site {site_id:?}; intervals of one site must not overlap"),
        )
        .with_field("interval_start")),
    }
}

/// `from`, `to` (unix seconds) and `site` of a GET.
fn period(q: &HashMap<String, String>) -> Result<(i64, i64, Option<String>), ApiError> {
    let int = |key: &str| -> Result<Option<i64>, ApiError> {
        q.get(key)
            .map(|t| {
                t.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| {
                        ApiError::bad_field(key, format!("{t:?} is not a time in unix seconds"))
                    })
            })
            .transpose()
    };
    let now = unix_ms().div_euclid(1000);
    let to = int("to")?.unwrap_or(now);
    let from = int("from")?.unwrap_or(to.saturating_sub(86_400));
    if from >= to {
        return Err(ApiError::bad_field(
            "from",
            format!("{from} is not before to ({to})"),
        ));
    }
    let site = match q.get("site").map(String::as_str) {
        None | Some("") => None,
        Some(s) if !valid_site_id(s) => {
            return Err(ApiError::bad_field(
                "site",
                format!("{s:?} is not a site id"),
            ))
        }
        Some(s) => Some(s.to_string()),
    };
    Ok((from, to, site))
}

async fn summary(
    state: &Shared,
    q: &HashMap<String, String>,
) -> Result<(i64, i64, Summary), ApiError> {
    let (from, to, site) = period(q)?;
    let configured = site
        .as_ref()
        .is_none_or(|s| state.config.energy.sites.iter().any(|c| &c.id == s));
    let store = state.energy.clone();
    let s = tokio::task::spawn_blocking(move || -> Result<Summary, ApiError> {
        if let Some(s) = site.as_deref().filter(|_| !configured) {
            if !store.has_site(s)? {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("site: no site {s:?} is configured or has reported"),
                )
                .with_field("site"));
            }
        }
        Ok(store.summary(from, to, site.as_deref())?)
    })
    .await
    .map_err(|e| ApiError::internal(format!("energy query task failed: {e}")))??;
    Ok((from, to, s))
}

/// The sources of several sites merged by (kind, region).
fn merge_sources<'a>(sites: impl Iterator<Item = &'a SiteSummary>) -> Vec<SourceSummary> {
    let mut merged: BTreeMap<(SourceKind, Option<String>), SourceSummary> = BTreeMap::new();
    for src in sites.flat_map(|s| s.sources.iter()) {
        let e = merged
            .entry((src.kind, src.region.clone()))
            .or_insert_with(|| SourceSummary {
                kind: src.kind,
                region: src.region.clone(),
                kwh: KilowattHours(0.0),
                gco2e: GramsCo2e(0.0),
                basis: String::new(),
            });
        e.kwh = e.kwh + src.kwh;
        e.gco2e = e.gco2e + src.gco2e;
        for b in src.basis.split(',').filter(|b| !b.is_empty()) {
            if !e.basis.split(',').any(|x| x == b) {
                if !e.basis.is_empty() {
                    e.basis.push(',');
                }
                e.basis.push_str(b);
            }
        }
    }
    merged.into_values().collect()
}

fn percent(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| 100.0 * part / whole)
}

fn mix_json(sources: &[SourceSummary]) -> Value {
    let total: f64 = sources.iter().map(|s| s.kwh.0).sum();
    let renewable: f64 = sources
        .iter()
        .filter(|s| s.kind.is_renewable())
        .map(|s| s.kwh.0)
        .sum();
    let list: Vec<Value> = sources
        .iter()
        .map(|s| {
            let mut v = json!({
                "kind": s.kind.as_str(),
                "kwh": s.kwh.0,
                "share_percent": percent(s.kwh.0, total),
                "renewable": s.kind.is_renewable(),
            });
            if let Some(r) = &s.region {
                v["region"] = json!(r);
            }
            v
        })
        .collect();
    json!({"kwh": total, "renewable_percent": percent(renewable, total), "sources": list})
}

pub async fn sources(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (from, to, s) = summary(&state, &q).await?;
    let mut total = mix_json(&merge_sources(s.sites.iter()));
    total["reports"] = json!(s.sites.iter().map(|x| x.reports).sum::<u64>());
    let sites: Vec<Value> = s
        .sites
        .iter()
        .map(|site| {
            let mut v = mix_json(&site.sources);
            v["site_id"] = json!(site.site_id.0);
            v["reports"] = json!(site.reports);
            v["interval_secs"] = json!(site.interval_secs);
            v
        })
        .collect();
    Ok(Json(json!({"from": from, "to": to, "total": total, "sites": sites})).into_response())
}

fn footprint_json(totals: &Totals, blocks: u64, sources: &[SourceSummary], reports: u64) -> Value {
    let i = totals.intensities(blocks);
    let by_source: Vec<Value> = sources
        .iter()
        .map(|s| {
            let mut v = json!({
                "kind": s.kind.as_str(),
                "kwh": s.kwh.0,
                "gco2e": s.gco2e.0,
                "g_per_kwh": (s.kwh.0 > 0.0).then(|| s.gco2e.0 / s.kwh.0),
                "basis": s.basis,
            });
            if let Some(r) = &s.region {
                v["region"] = json!(r);
            }
            v
        })
        .collect();
    json!({
        "reports": reports,
        "kwh": totals.kwh.0,
        "gco2e": totals.gco2e.0,
        "hashes": totals.hashes,
        "terahashes": totals.hashes / crate::energy::carbon::HASHES_PER_TH,
        "g_per_kwh": i.g_per_kwh,
        "g_per_th": i.g_per_th,
        "g_per_block": i.g_per_block,
        "j_per_th": i.j_per_th,
        "blocks_found": blocks,
        "by_source": by_source,
    })
}

pub async fn footprint(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (from, to, s) = summary(&state, &q).await?;
    let mut all = Totals::default();
    for site in &s.sites {
        all.kwh = all.kwh + site.totals.kwh;
        all.gco2e = all.gco2e + site.totals.gco2e;
        all.hashes += site.totals.hashes;
    }
    let reports = s.sites.iter().map(|x| x.reports).sum();
    let total = footprint_json(
        &all,
        s.blocks_found,
        &merge_sources(s.sites.iter()),
        reports,
    );
    // A site's per-block figure is its share of each block the pool found: the sites' figures
    // add up to the pool's.
    let sites: Vec<Value> = s
        .sites
        .iter()
        .map(|site| {
            let mut v = footprint_json(&site.totals, s.blocks_found, &site.sources, site.reports);
            v["site_id"] = json!(site.site_id.0);
            v["curtailment"] = json!({
                "signal_secs": site.signal_secs,
                "compliant_secs": site.compliant_secs,
                "compliance_percent": percent(site.compliant_secs, site.signal_secs),
            });
            v
        })
        .collect();
    let ipcc: serde_json::Map<String, Value> = SourceKind::ALL
        .iter()
        .filter_map(|k| {
            k.ipcc_ar5_median()
                .map(|g| (k.as_str().to_string(), json!(g.0)))
        })
        .collect();
    Ok(Json(json!({
        "from": from,
        "to": to,
        "total": total,
        "sites": sites,
        "factors": {"ipcc_ar5_median": ipcc, "grid_regions": state.config.energy.grid_regions},
    }))
    .into_response())
}
