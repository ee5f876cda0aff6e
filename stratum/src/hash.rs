//! SHA256d and the header hash newtype.

use sha2::{Digest, Sha256};
use std::fmt;

/// Double SHA-256, Bitcoin's hash for headers, transactions and merkle nodes.
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

/// A block header hash in internal byte order (as SHA256d produces it). Displayed reversed, the
/// way block explorers and `getblockhash` show it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShareHash([u8; 32]);

impl ShareHash {
    pub fn from_internal_bytes(bytes: [u8; 32]) -> ShareHash {
        ShareHash(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A 128-bit fingerprint, enough to tell submissions apart in duplicate detection.
    pub fn fingerprint(&self) -> u128 {
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.0[..16]);
        u128::from_le_bytes(b)
    }
}

impl fmt::Display for ShareHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rev = self.0;
        rev.reverse();
        f.write_str(&hex::encode(rev))
    }
}

impl fmt::Debug for ShareHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShareHash({self})")
    }
}
