//! Extranonce bytes.

use std::fmt;

/// Extranonce bytes (extranonce1 from the pool, or a miner's extranonce2), kept as raw bytes and
/// shown as hex on the wire.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Extranonce(Vec<u8>);

impl Extranonce {
    pub fn from_bytes(bytes: Vec<u8>) -> Extranonce {
        Extranonce(bytes)
    }

    /// Parse from hex. `None` when the text is not an even number of hex digits.
    pub fn from_hex(text: &str) -> Option<Extranonce> {
        hex::decode(text).ok().map(Extranonce)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `self ‖ suffix`: how the proxy extends the upstream's extranonce1 with a miner's index.
    pub fn extended_with(&self, suffix: &[u8]) -> Extranonce {
        let mut v = Vec::with_capacity(self.0.len() + suffix.len());
        v.extend_from_slice(&self.0);
        v.extend_from_slice(suffix);
        Extranonce(v)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Display for Extranonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Extranonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Extranonce({})", self.to_hex())
    }
}
