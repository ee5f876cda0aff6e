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
    let s = v
        .as_str()
        .ok_or_else(|| ParamError::invalid(field, "8 hex digits"))?;
    if s.len() != 8 {
        return Err(ParamError::invalid(field, "8 hex digits"));
    }
    u32::from_str_radix(s, 16).map_err(|_| ParamError::invalid(field, "8 hex digits"))
}
