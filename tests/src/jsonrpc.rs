//! Stratum V1 framing: newline-delimited JSON-RPC 1.0 style messages.
//!
//! Requests are `{"id":N,"method":..,"params":[..]}`, notifications are the same with
//! `"id":null`, responses are `{"id":N,"result":..,"error":null}` or
//! `{"id":N,"result":null,"error":[code,"message",null]}`. Every builder here returns the line
//! *with* its trailing `\n`, ready to write.

use serde_json::{json, Value};

/// "Other/unknown" error, also used for malformed messages and parameters.
pub const ERR_OTHER: i64 = 20;
/// The share's job is unknown to the pool (stale).
pub const ERR_JOB_NOT_FOUND: i64 = 21;
/// The exact same share was already submitted.
pub const ERR_DUPLICATE: i64 = 22;
/// The share's hash does not meet the difficulty in force.
pub const ERR_LOW_DIFFICULTY: i64 = 23;
/// The worker named in `mining.submit` was never authorized on this connection.
pub const ERR_UNAUTHORIZED: i64 = 24;
/// `mining.submit` before `mining.subscribe`.
pub const ERR_NOT_SUBSCRIBED: i64 = 25;

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A request (`id` is a number or string) or a notification (`id` is null).
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// A response to a request we sent. `error` is `Value::Null` on success.
    Response {
        id: Value,
        result: Value,
        error: Value,
    },
    /// Not JSON, not an object, or neither a request nor a response; the string says why.
    Invalid(String),
}

/// Parses one line (without its newline). Never panics: anything odd becomes
/// [`Incoming::Invalid`], because a referee must keep going after garbage.
pub fn parse_line(line: &str) -> Incoming {
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Incoming::Invalid(format!("not JSON: {e}")),
    };
    let Value::Object(mut obj) = value else {
        return Incoming::Invalid("not a JSON object".into());
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    match obj.remove("method") {
        Some(Value::String(method)) => Incoming::Request {
            id,
            method,
            // Missing params are treated as an empty list; a non-array is left for the
            // method handler to reject.
            params: obj.remove("params").unwrap_or_else(|| json!([])),
        },
        Some(_) => Incoming::Invalid("method is not a string".into()),
        None if obj.contains_key("result") || obj.contains_key("error") => Incoming::Response {
            id,
            result: obj.remove("result").unwrap_or(Value::Null),
            error: obj.remove("error").unwrap_or(Value::Null),
        },
        None => Incoming::Invalid("neither a request nor a response".into()),
    }
}

fn line(v: Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// A request with a numeric id.
pub fn request(id: u64, method: &str, params: Value) -> String {
    line(json!({"id": id, "method": method, "params": params}))
}

/// A notification (`"id": null`).
pub fn notification(method: &str, params: Value) -> String {
    line(json!({"id": null, "method": method, "params": params}))
}

/// A successful response echoing the request's id.
pub fn ok(id: &Value, result: Value) -> String {
    line(json!({"id": id, "result": result, "error": null}))
}

/// An error response `[code, message, null]` echoing the request's id.
pub fn error(id: &Value, code: i64, message: &str) -> String {
    line(json!({"id": id, "result": null, "error": [code, message, null]}))
}

/// The error code of a response's `error` member, if it has the usual `[code, msg, ..]` shape
/// (or the rarer `{"code":..}` object shape).
pub fn error_code(error: &Value) -> Option<i64> {
    match error {
        Value::Array(a) => a.first().and_then(Value::as_i64),
        Value::Object(o) => o.get("code").and_then(Value::as_i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_notifications_responses_and_garbage() {
        assert_eq!(
            parse_line(r#"{"id":1,"method":"mining.subscribe","params":[]}"#),
            Incoming::Request {
                id: json!(1),
                method: "mining.subscribe".into(),
                params: json!([])
            }
        );
        assert!(matches!(
            parse_line(r#"{"id":null,"method":"mining.notify","params":[1]}"#),
            Incoming::Request {
                id: Value::Null,
                ..
            }
        ));
        assert_eq!(
            parse_line(r#"{"id":7,"result":null,"error":[23,"low",null]}"#),
            Incoming::Response {
                id: json!(7),
                result: Value::Null,
                error: json!([23, "low", null])
            }
        );
        assert!(matches!(parse_line("{"), Incoming::Invalid(_)));
        assert!(matches!(parse_line("[1,2]"), Incoming::Invalid(_)));
        assert!(matches!(parse_line(r#"{"id":1}"#), Incoming::Invalid(_)));
        assert!(matches!(
            parse_line(r#"{"method":5}"#),
            Incoming::Invalid(_)
        ));
    }

    #[test]
    fn builders_end_with_newline_and_carry_codes() {
        let e = error(&json!(3), ERR_DUPLICATE, "duplicate");
        assert!(e.ends_with('\n'));
        let Incoming::Response { error, .. } = parse_line(e.trim_end()) else {
            panic!("not a response")
        };
        assert_eq!(error_code(&error), Some(22));
    }
}
