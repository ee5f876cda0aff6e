//! Decoding hex-encoded JSON fields, with errors that name the field.

use crate::message::ParamError;
use serde_json::Value;

pub(crate) fn parse_hex_bytes(v: &Value, field: &'static str) -> Result<Vec<u8>, ParamError> {
    let s = v
        .as_str()
        .ok_or_else(|| ParamError::invalid(field, "a hex string"))?;
    hex::decode(s).map_err(|_| ParamError::invalid(field, "an even number of hex digits"))
}

pub(crate) fn parse_hash32(v: &Value, field: &'static str) -> Result<[u8; 32], ParamError> {
    let bytes = parse_hex_bytes(v, field)?;
    bytes
        .try_into()
        .map_err(|_| ParamError::invalid(field, "64 hex digits (32 bytes)"))
}

/// A big-endian u32 written as exactly 8 hex digits (version, nbits, ntime, nonce).
pub(crate) fn parse_u32_hex(v: &Value, field: &'static str) -> Result<u32, ParamError> {
    v.as_str()
        .and_then(u32_from_hex8)
        .ok_or_else(|| ParamError::invalid(field, "8 hex digits"))
}

/// The text form of [`parse_u32_hex`], shared with the submit fast path so both accept exactly
/// the same inputs.
pub(crate) fn u32_from_hex8(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}
