//! HTTP and JSON-RPC, the way Bitcoin Core's `httprpc.cpp` / `request.cpp` do it.
//!
//! * Only `/` and `/wallet/…` serve JSON-RPC; other paths get 404 with an empty body.
//! * Only POST: anything else gets 405 "JSONRPC server handles only POST requests".
//! * Basic auth: no `Authorization` header → 401 at once; wrong credentials → 401 after a
//!   250 ms pause (Core's brute-force brake). Both with an empty body and
//!   `WWW-Authenticate: Basic realm="jsonrpc"`.
//! * JSON-RPC 1.0 (legacy) replies are `{"result":…,"error":…,"id":…}` with HTTP 200 on
//!   success, 404 for -32601, 400 for -32600 and 500 for every other error. Requests marked
//!   `"jsonrpc":"2.0"` get 2.0 replies (HTTP 200, `result` xor `error`; 204 for a
//!   notification). Batches (arrays) get an array, HTTP 200.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use bitcoin::consensus::encode::serialize_hex;
use bitcoin::BlockHash;
use serde_json::{json, Value};

use super::chain::{SubmitOutcome, REGTEST_DIFFICULTY};
use super::{Malformed, Shared};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// Core's error codes used here.
mod code {
    pub const MISC_ERROR: i64 = -1;
    pub const TYPE_ERROR: i64 = -3;
    pub const INVALID_ADDRESS_OR_KEY: i64 = -5;
    pub const INVALID_PARAMETER: i64 = -8;
    pub const CLIENT_IN_INITIAL_DOWNLOAD: i64 = -10;
    pub const DESERIALIZATION_ERROR: i64 = -22;
    pub const IN_WARMUP: i64 = -28;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const PARSE_ERROR: i64 = -32700;
}

/// What a method call produced.
enum Outcome {
    Ok(Value),
    Err(i64, String),
    /// A whole HTTP answer that bypasses the JSON-RPC envelope (malformed mode, node down).
    Raw(StatusCode, &'static str, String),
}

fn err(code: i64, msg: impl Into<String>) -> Outcome {
    Outcome::Err(code, msg.into())
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn down_response() -> Response {
    json_response(StatusCode::SERVICE_UNAVAILABLE, down_body())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"jsonrpc\"")],
    )
        .into_response()
}

/// `{"result":…,"error":…,"id":…}\n` in Core's key order.
fn envelope_v1(id: &Value, r: Result<&Value, (i64, &str)>) -> String {
    match r {
        Ok(v) => format!("{{\"result\":{v},\"error\":null,\"id\":{id}}}\n"),
        Err((c, m)) => format!(
            "{{\"result\":null,\"error\":{},\"id\":{id}}}\n",
            json!({"code": c, "message": m})
        ),
    }
}

fn reply_value(v2: bool, id: &Value, r: Result<&Value, (i64, &str)>) -> Value {
    match (v2, r) {
        (false, Ok(v)) => json!({"result": v, "error": null, "id": id}),
        (false, Err((c, m))) => {
            json!({"result": null, "error": {"code": c, "message": m}, "id": id})
        }
        (true, Ok(v)) => json!({"jsonrpc": "2.0", "result": v, "id": id}),
        (true, Err((c, m))) => {
            json!({"jsonrpc": "2.0", "error": {"code": c, "message": m}, "id": id})
        }
    }
}

fn http_status_for(code: i64) -> StatusCode {
    match code {
        code::INVALID_REQUEST => StatusCode::BAD_REQUEST,
        code::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

enum Auth {
    Ok,
    Missing,
    Wrong,
}

fn check_auth(sh: &Shared, headers: &HeaderMap) -> Auth {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Auth::Missing;
    };
    let Some(b64) = value.strip_prefix("Basic ") else {
        return Auth::Wrong;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return Auth::Wrong;
    };
    let given = String::from_utf8_lossy(&decoded);
    let configured = format!("{}:{}", sh.cfg.rpc_user, sh.cfg.rpc_password);
    if given == configured {
        return Auth::Ok;
    }
    if let Some(pass) = &sh.cookie_password {
        if given == format!("__cookie__:{pass}") {
            return Auth::Ok;
        }
    }
    Auth::Wrong
}

async fn handle(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if sh.lock().down {
        return down_response();
    }
    let path = uri.path();
    if path != "/" && !path.starts_with("/wallet/") {
        return StatusCode::NOT_FOUND.into_response();
    }
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "JSONRPC server handles only POST requests",
        )
            .into_response();
    }
    match check_auth(&sh, &headers) {
        Auth::Ok => {}
        Auth::Missing => {
            sh.lock().stats.auth_failures += 1;
            return unauthorized();
        }
        Auth::Wrong => {
            sh.lock().stats.auth_failures += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
            return unauthorized();
        }
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                envelope_v1(&Value::Null, Err((code::PARSE_ERROR, "Parse error"))),
            )
        }
    };
    match request {
        Value::Object(_) => single(&sh, request).await,
        Value::Array(items) => {
            let mut replies = Vec::new();
            for item in items {
                if let Some(v) = batch_item(&sh, item).await {
                    replies.push(v);
                }
            }
            json_response(StatusCode::OK, format!("{}\n", Value::Array(replies)))
        }
        _ => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            envelope_v1(
                &Value::Null,
                Err((code::PARSE_ERROR, "Top-level object parse error")),
            ),
        ),
    }
}

/// A parsed request object (Core's `JSONRPCRequest::parse`).
struct Request {
    id: Value,
    /// false for notifications (2.0 requests without an id).
    has_id: bool,
    v2: bool,
    method: String,
    params: Value,
}

fn parse_request(v: Value) -> Result<Request, (Value, bool, i64, String)> {
    let Value::Object(mut obj) = v else {
        return Err((
            Value::Null,
            false,
            code::INVALID_REQUEST,
            "Invalid Request object".into(),
        ));
    };
    let has_id = obj.contains_key("id");
    let id = obj.remove("id").unwrap_or(Value::Null);
    let v2 = match obj.remove("jsonrpc") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "1.0" => false,
        Some(Value::String(s)) if s == "2.0" => true,
        Some(Value::String(_)) => {
            return Err((
                id,
                false,
                code::INVALID_REQUEST,
                "JSON-RPC version not supported".into(),
            ))
        }
        Some(_) => {
            return Err((
                id,
                false,
                code::INVALID_REQUEST,
                "jsonrpc field must be a string".into(),
            ))
        }
    };
    let method = match obj.remove("method") {
        None | Some(Value::Null) => {
            return Err((id, v2, code::INVALID_REQUEST, "Missing method".into()))
        }
        Some(Value::String(m)) => m,
        Some(_) => {
            return Err((
                id,
                v2,
                code::INVALID_REQUEST,
                "Method must be a string".into(),
            ))
        }
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => json!([]),
        Some(p @ (Value::Array(_) | Value::Object(_))) => p,
        Some(_) => {
            return Err((
                id,
                v2,
                code::INVALID_REQUEST,
                "Params must be an array or object".into(),
            ))
        }
    };
    Ok(Request {
        id,
        has_id,
        v2,
        method,
        params,
    })
}

async fn single(sh: &Arc<Shared>, v: Value) -> Response {
    let req = match parse_request(v) {
        Ok(r) => r,
        Err((id, v2, c, m)) => {
            if v2 {
                return json_response(
                    StatusCode::OK,
                    format!("{}\n", reply_value(true, &id, Err((c, &m)))),
                );
            }
            return json_response(http_status_for(c), envelope_v1(&id, Err((c, &m))));
        }
    };
    let outcome = call(sh, &req.method, req.params, &req.id).await;
    if req.v2 && !req.has_id {
        return StatusCode::NO_CONTENT.into_response();
    }
    match outcome {
        Outcome::Raw(status, content_type, body) => {
            (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Outcome::Ok(v) if req.v2 => json_response(
            StatusCode::OK,
            format!("{}\n", reply_value(true, &req.id, Ok(&v))),
        ),
        Outcome::Ok(v) => json_response(StatusCode::OK, envelope_v1(&req.id, Ok(&v))),
        Outcome::Err(c, m) if req.v2 => json_response(
            StatusCode::OK,
            format!("{}\n", reply_value(true, &req.id, Err((c, &m)))),
        ),
        Outcome::Err(c, m) => json_response(http_status_for(c), envelope_v1(&req.id, Err((c, &m)))),
    }
}

async fn batch_item(sh: &Arc<Shared>, v: Value) -> Option<Value> {
    let req = match parse_request(v) {
        Ok(r) => r,
        Err((id, v2, c, m)) => return Some(reply_value(v2, &id, Err((c, &m)))),
    };
    let outcome = call(sh, &req.method, req.params, &req.id).await;
    if req.v2 && !req.has_id {
        return None;
    }
    Some(match outcome {
        Outcome::Ok(v) => reply_value(req.v2, &req.id, Ok(&v)),
        Outcome::Err(c, m) => reply_value(req.v2, &req.id, Err((c, &m))),
        // Inside a batch, a broken answer becomes a string where the result should be.
        Outcome::Raw(_, _, body) => reply_value(req.v2, &req.id, Ok(&Value::String(body))),
    })
}

/// Parameter names per method, for calls with named (object) parameters.
fn param_names(method: &str) -> &'static [&'static str] {
    match method {
        "getblocktemplate" => &["template_request"],
        "submitblock" => &["hexdata", "dummy"],
        "getblock" => &["blockhash", "verbosity"],
        "getblockheader" => &["blockhash", "verbose"],
        "getblockhash" => &["height"],
        "validateaddress" => &["address"],
        _ => &[],
    }
}

fn positional(method: &str, params: Value) -> Result<Vec<Value>, Outcome> {
    match params {
        Value::Array(a) => Ok(a),
        Value::Object(map) => {
            let names = param_names(method);
            let mut out = vec![Value::Null; names.len()];
            for (k, v) in map {
                match names.iter().position(|n| *n == k) {
                    Some(i) => out[i] = v,
                    None => {
                        return Err(err(
                            code::INVALID_PARAMETER,
                            format!("Unknown named parameter {k}"),
                        ))
                    }
                }
            }
            while out.last().is_some_and(Value::is_null) {
                out.pop();
            }
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(v: &Value, expected: &str) -> Outcome {
    err(
        code::TYPE_ERROR,
        format!(
            "JSON value of type {} is not of expected type {expected}",
            type_name(v)
        ),
    )
}

/// The optional argument `i` (missing and null are the same, as in Core).
fn arg(p: &[Value], i: usize) -> Option<&Value> {
    p.get(i).filter(|v| !v.is_null())
}

fn usage(text: &str) -> Outcome {
    err(code::MISC_ERROR, text.to_string())
}

/// Core's `ParseHashV`.
fn parse_hash(v: &Value, name: &str) -> Result<BlockHash, Outcome> {
    let Some(s) = v.as_str() else {
        return Err(type_error(v, "string"));
    };
    if s.len() != 64 {
        return Err(err(
            code::INVALID_PARAMETER,
            format!("{name} must be of length 64 (not {}, for '{s}')", s.len()),
        ));
    }
    s.parse().map_err(|_| {
        err(
            code::INVALID_PARAMETER,
            format!("{name} must be hexadecimal string (not '{s}')"),
        )
    })
}

async fn call(sh: &Arc<Shared>, method: &str, params: Value, id: &Value) -> Outcome {
    *sh.lock().stats.calls.entry(method.to_string()).or_default() += 1;
    let p = match positional(method, params) {
        Ok(p) => p,
        Err(o) => return o,
    };
    match method {
        "getblocktemplate" => getblocktemplate(sh, &p, id).await,
        "submitblock" => submitblock(sh, &p),
        "getblockchaininfo" => getblockchaininfo(sh),
        "getblock" => getblock(sh, &p),
        "getblockheader" => getblockheader(sh, &p),
        "getblockhash" => getblockhash(sh, &p),
        "getbestblockhash" => Outcome::Ok(json!(sh.lock().chain.tip().hash.to_string())),
        "getblockcount" => Outcome::Ok(json!(sh.lock().chain.height())),
        "getdifficulty" => Outcome::Ok(json!(REGTEST_DIFFICULTY)),
        "getmininginfo" => {
            let inner = sh.lock();
            Outcome::Ok(json!({
                "blocks": inner.chain.height(),
                "difficulty": REGTEST_DIFFICULTY,
                "networkhashps": 0.0,
                "bits": "207fffff",
                "target": "7fffff0000000000000000000000000000000000000000000000000000000000",
                "next": {
                    "height": inner.chain.height() + 1,
                    "bits": "207fffff",
                    "difficulty": REGTEST_DIFFICULTY,
                    "target": "7fffff0000000000000000000000000000000000000000000000000000000000",
                },
                "pooledtx": inner.chain.mempool.len(),
                "chain": sh.cfg.network,
                "warnings": [],
            }))
        }
        "getnetworkinfo" => Outcome::Ok(json!({
            "version": 290000,
            "subversion": "/Satoshi:29.0.0/",
            "protocolversion": 70016,
            "localservices": "0000000000000c09",
            "localservicesnames": ["NETWORK", "WITNESS", "NETWORK_LIMITED", "P2P_V2"],
            "localrelay": true,
            "timeoffset": 0,
            "networkactive": true,
            "connections": 0,
            "connections_in": 0,
            "connections_out": 0,
            "networks": [],
            "relayfee": 0.00001,
            "incrementalfee": 0.00001,
            "localaddresses": [],
            "warnings": [],
        })),
        "validateaddress" => validateaddress(sh, &p),
        "ping" => Outcome::Ok(Value::Null),
        "uptime" => Outcome::Ok(json!(sh.started.elapsed().as_secs())),
        _ => err(code::METHOD_NOT_FOUND, "Method not found"),
    }
}

/// In Bitcoin Core 29.0's format (the version `getnetworkinfo` reports): `bits` and `target`
/// of the tip, `warnings` an array of strings; clients written for current Core (para) refuse
/// the older shape.
fn getblockchaininfo(sh: &Shared) -> Outcome {
    let inner = sh.lock();
    let c = &inner.chain;
    let h = c.height();
    let tip = c.tip();
    Outcome::Ok(json!({
        "chain": sh.cfg.network,
        "blocks": h,
        "headers": if inner.syncing { h + 500 } else { h },
        "bestblockhash": tip.hash.to_string(),
        "bits": "207fffff",
        "target": "7fffff0000000000000000000000000000000000000000000000000000000000",
        "difficulty": REGTEST_DIFFICULTY,
        "time": tip.block.header.time,
        "mediantime": c.median_time_past(h),
        "verificationprogress": if inner.syncing { 0.35 } else { 1.0 },
        "initialblockdownload": inner.syncing,
        "chainwork": format!("{:064x}", 2u64 * (u64::from(h) + 1)),
        "size_on_disk": 293 * (u64::from(h) + 1),
        "pruned": false,
        "warnings": [],
    }))
}

fn getblockhash(sh: &Shared, p: &[Value]) -> Outcome {
    let Some(v) = arg(p, 0) else {
        return usage("getblockhash height");
    };
    let Some(height) = v.as_i64() else {
        return type_error(v, "number");
    };
    let inner = sh.lock();
    if height < 0 || height > i64::from(inner.chain.height()) {
        return err(code::INVALID_PARAMETER, "Block height out of range");
    }
    Outcome::Ok(json!(inner.chain.blocks[height as usize].hash.to_string()))
}

fn getblock(sh: &Shared, p: &[Value]) -> Outcome {
    let Some(v) = arg(p, 0) else {
        return usage("getblock \"blockhash\" ( verbosity )");
    };
    let hash = match parse_hash(v, "blockhash") {
        Ok(h) => h,
        Err(o) => return o,
    };
    let verbosity = match arg(p, 1) {
        None => 1,
        Some(Value::Bool(b)) => u64::from(*b),
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().expect("checked"),
        Some(other) => return type_error(other, "number"),
    };
    let inner = sh.lock();
    let Some((sb, active)) = inner.chain.find(&hash) else {
        return err(code::INVALID_ADDRESS_OR_KEY, "Block not found");
    };
    if verbosity == 0 {
        return Outcome::Ok(json!(serialize_hex(&sb.block)));
    }
    Outcome::Ok(inner.chain.block_json(sb, active, verbosity))
}

fn getblockheader(sh: &Shared, p: &[Value]) -> Outcome {
    let Some(v) = arg(p, 0) else {
        return usage("getblockheader \"blockhash\" ( verbose )");
    };
    let hash = match parse_hash(v, "blockhash") {
        Ok(h) => h,
        Err(o) => return o,
    };
    let verbose = match arg(p, 1) {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => return type_error(other, "bool"),
    };
    let inner = sh.lock();
    let Some((sb, active)) = inner.chain.find(&hash) else {
        return err(code::INVALID_ADDRESS_OR_KEY, "Block not found");
    };
    if !verbose {
        return Outcome::Ok(json!(serialize_hex(&sb.block.header)));
    }
    Outcome::Ok(inner.chain.header_json(sb, active))
}

fn validateaddress(sh: &Shared, p: &[Value]) -> Outcome {
    let Some(v) = arg(p, 0) else {
        return usage("validateaddress \"address\"");
    };
    let Some(s) = v.as_str() else {
        return type_error(v, "string");
    };
    let network = match sh.cfg.network.as_str() {
        "main" => bitcoin::Network::Bitcoin,
        "test" | "testnet" | "testnet4" => bitcoin::Network::Testnet,
        "signet" => bitcoin::Network::Signet,
        _ => bitcoin::Network::Regtest,
    };
    let parsed = s
        .parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
        .ok()
        .and_then(|a| a.require_network(network).ok());
    match parsed {
        Some(addr) => {
            let spk = addr.script_pubkey();
            let mut out = json!({
                "isvalid": true,
                "address": addr.to_string(),
                "scriptPubKey": hex::encode(spk.as_bytes()),
                "isscript": spk.is_p2sh() || spk.is_p2wsh(),
                "iswitness": spk.is_witness_program(),
            });
            if spk.is_witness_program() {
                let b = spk.as_bytes();
                let version = if b[0] == 0 { 0 } else { b[0] - 0x50 };
                out["witness_version"] = json!(version);
                out["witness_program"] = json!(hex::encode(&b[2..]));
            }
            Outcome::Ok(out)
        }
        None => Outcome::Ok(json!({
            "isvalid": false,
            "error_locations": [],
            "error": "Invalid or unsupported Segwit (Bech32) or Base58 encoding.",
        })),
    }
}

fn submitblock(sh: &Arc<Shared>, p: &[Value]) -> Outcome {
    let Some(v) = arg(p, 0) else {
        return usage("submitblock \"hexdata\" ( \"dummy\" )");
    };
    let Some(hex_data) = v.as_str() else {
        return type_error(v, "string");
    };
    let outcome = {
        let mut inner = sh.lock();
        inner.stats.blocks_submitted += 1;
        let outcome = inner.chain.submit(hex_data);
        match &outcome {
            SubmitOutcome::DecodeError(m) => {
                inner.stats.rejections.push((m.to_string(), String::new()));
            }
            SubmitOutcome::Result {
                reason: Some(r),
                hash,
                ..
            } => inner.stats.rejections.push((r.clone(), hash.clone())),
            SubmitOutcome::Result {
                reason: None,
                accepted,
                ..
            } => {
                inner.stats.blocks_accepted += 1;
                if let Some(a) = accepted {
                    inner.stats.accepted_blocks.push(a.clone());
                }
            }
        }
        outcome
    };
    match outcome {
        SubmitOutcome::DecodeError(m) => err(code::DESERIALIZATION_ERROR, m),
        SubmitOutcome::Result {
            reason: Some(r), ..
        } => Outcome::Ok(Value::String(r)),
        SubmitOutcome::Result { reason: None, .. } => {
            sh.bump();
            Outcome::Ok(Value::Null)
        }
    }
}

async fn getblocktemplate(sh: &Arc<Shared>, p: &[Value], id: &Value) -> Outcome {
    sh.lock().stats.gbt_calls += 1;
    let empty = serde_json::Map::new();
    let req = match arg(p, 0) {
        None => &empty,
        Some(Value::Object(o)) => o,
        Some(other) => return type_error(other, "object"),
    };
    let mode = match req.get("mode") {
        None | Some(Value::Null) => "template",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return err(code::INVALID_PARAMETER, "Invalid mode"),
    };
    if mode == "proposal" {
        let Some(data) = req.get("data").and_then(Value::as_str) else {
            return err(
                code::INVALID_PARAMETER,
                "Missing data String key for proposal",
            );
        };
        let mut inner = sh.lock();
        inner.stats.proposals += 1;
        return match inner.chain.propose(data) {
            Ok(Some(r)) => Outcome::Ok(Value::String(r)),
            Ok(None) => Outcome::Ok(Value::Null),
            Err(m) => err(code::DESERIALIZATION_ERROR, m),
        };
    }
    if mode != "template" {
        return err(code::INVALID_PARAMETER, "Invalid mode");
    }
    let mut rules = Vec::new();
    if let Some(Value::Array(a)) = req.get("rules") {
        rules.extend(a.iter().filter_map(Value::as_str));
    }
    if sh.lock().syncing {
        return err(
            code::CLIENT_IN_INITIAL_DOWNLOAD,
            "Bitcoin Core is in initial sync and waiting for blocks...",
        );
    }
    if let Some(lp) = req.get("longpollid") {
        let watched = match lp {
            Value::String(s) => {
                let head: String = s.chars().take(64).collect();
                match parse_hash(&Value::String(head), "longpollid") {
                    Ok(h) => h,
                    Err(o) => return o,
                }
            }
            // Core: a non-string longpollid watches the current tip.
            _ => sh.lock().chain.tip().hash,
        };
        match wait_for_tip_change(sh, watched).await {
            Wait::Down => {
                return Outcome::Raw(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    down_body(),
                )
            }
            Wait::Changed => {
                sh.lock().stats.longpolls_answered += 1;
            }
            Wait::TimedOut => {
                let mut inner = sh.lock();
                inner.stats.longpolls_answered += 1;
                inner.stats.longpolls_timed_out += 1;
            }
        }
    }
    if !rules.contains(&"segwit") {
        return err(
            code::INVALID_PARAMETER,
            "getblocktemplate must be called with the segwit rule set (call with {\"rules\": [\"segwit\"]})",
        );
    }
    let mut inner = sh.lock();
    let template = inner.chain.template_json();
    let Some(mode) = inner.malformed else {
        return Outcome::Ok(template);
    };
    let kind =
        mode.unwrap_or_else(|| Malformed::ALL[inner.malformed_counter % Malformed::ALL.len()]);
    inner.malformed_counter += 1;
    drop(inner);
    malformed_answer(kind, template, id)
}

fn down_body() -> String {
    envelope_v1(
        &Value::Null,
        Err((code::IN_WARMUP, "Loading block index… (stand-in is down)")),
    )
}

enum Wait {
    Changed,
    TimedOut,
    Down,
}

/// Holds a longpoll until the tip differs from `watched`, the timeout passes, or the node
/// goes down/offline.
async fn wait_for_tip_change(sh: &Arc<Shared>, watched: BlockHash) -> Wait {
    let mut rx = sh.events.subscribe();
    let deadline = tokio::time::Instant::now() + sh.cfg.longpoll_timeout;
    loop {
        {
            let inner = sh.lock();
            if inner.down {
                return Wait::Down;
            }
            if inner.chain.tip().hash != watched {
                return Wait::Changed;
            }
        }
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    return Wait::Down;
                }
                if sh.offline.load(std::sync::atomic::Ordering::SeqCst) {
                    return Wait::Down;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Wait::TimedOut,
        }
    }
}

fn malformed_answer(kind: Malformed, mut template: Value, id: &Value) -> Outcome {
    let ok = |v: &Value| envelope_v1(id, Ok(v));
    match kind {
        Malformed::NotJson => Outcome::Raw(
            StatusCode::OK,
            "application/json",
            "this is not json at all }{ \u{fffd}\n".into(),
        ),
        Malformed::HtmlPage => Outcome::Raw(
            StatusCode::OK,
            "text/html",
            "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>\n".into(),
        ),
        Malformed::Truncated => {
            let full = ok(&template);
            Outcome::Raw(
                StatusCode::OK,
                "application/json",
                full[..full.len() / 2].to_string(),
            )
        }
        Malformed::ResultNotObject => Outcome::Raw(
            StatusCode::OK,
            "application/json",
            ok(&json!("template unavailable")),
        ),
        Malformed::WrongTypes => {
            template["height"] = json!(template["height"].to_string());
            template["bits"] = json!("zzzzzzzz");
            template["coinbasevalue"] = json!(-5);
            template["transactions"] = json!({"not": "a list"});
            template["previousblockhash"] = json!(12345);
            Outcome::Raw(StatusCode::OK, "application/json", ok(&template))
        }
        Malformed::MissingFields => {
            if let Value::Object(o) = &mut template {
                o.remove("previousblockhash");
                o.remove("coinbasevalue");
                o.remove("bits");
            }
            Outcome::Raw(StatusCode::OK, "application/json", ok(&template))
        }
    }
}
