//! A mining job: the parsed `mining.notify` parameters, ready to hash shares against.

use crate::hex_field::{parse_hash32, parse_hex_bytes, parse_u32_hex};
use crate::message::ParamError;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The nine parameters of `mining.notify`, decoded.
#[derive(Clone)]
pub struct Job {
    pub job_id: String,
    /// Previous block hash in header byte order (Stratum's word swap already undone).
    pub prevhash: [u8; 32],
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub merkle_branch: Vec<[u8; 32]>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
    pub clean_jobs: bool,
    /// SHA-256 state after absorbing `coinb1`, so each share hashes only the bytes after it.
    coinb1_state: Sha256,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("job_id", &self.job_id)
            .field("version", &format_args!("{:08x}", self.version))
            .field("nbits", &format_args!("{:08x}", self.nbits))
            .field("ntime", &self.ntime)
            .field("clean_jobs", &self.clean_jobs)
            .finish()
    }
}

/// Convert between Stratum's prevhash (each 4-byte word reversed) and header byte order. The
/// transform is its own inverse.
pub fn swap_prevhash_words(bytes: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in bytes.chunks_exact(4).enumerate() {
        for j in 0..4 {
            out[i * 4 + j] = chunk[3 - j];
        }
    }
    out
}

impl Job {
    /// Build a job from its fields (used by pools that make their own jobs).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        job_id: String,
        prevhash: [u8; 32],
        coinb1: Vec<u8>,
        coinb2: Vec<u8>,
        merkle_branch: Vec<[u8; 32]>,
        version: u32,
        nbits: u32,
        ntime: u32,
        clean_jobs: bool,
    ) -> Job {
        let mut coinb1_state = Sha256::new();
        coinb1_state.update(&coinb1);
        Job {
            job_id,
            prevhash,
            coinb1,
            coinb2,
            merkle_branch,
            version,
            nbits,
            ntime,
            clean_jobs,
            coinb1_state,
        }
    }

    /// Decode `mining.notify` params. Extra trailing params are ignored (some pools append
    /// fields); missing or malformed ones are named in the error.
    pub fn from_notify_params(params: &Value) -> Result<Job, ParamError> {
        let p = params
            .as_array()
            .ok_or(ParamError::NotAnArray("mining.notify"))?;
        if p.len() < 9 {
            return Err(ParamError::TooFew {
                method: "mining.notify",
                expected: 9,
                got: p.len(),
            });
        }
        let job_id = match &p[0] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(ParamError::invalid("job_id", "a string")),
        };
        let prevhash_stratum = parse_hash32(&p[1], "prevhash")?;
        let coinb1 = parse_hex_bytes(&p[2], "coinb1")?;
        let coinb2 = parse_hex_bytes(&p[3], "coinb2")?;
        let branch_items = p[4].as_array().ok_or_else(|| {
            ParamError::invalid("merkle_branch", "an array of 32-byte hex hashes")
        })?;
        let mut merkle_branch = Vec::with_capacity(branch_items.len());
        for item in branch_items {
            merkle_branch.push(parse_hash32(item, "merkle_branch")?);
        }
        let version = parse_u32_hex(&p[5], "version")?;
        let nbits = parse_u32_hex(&p[6], "nbits")?;
        let ntime = parse_u32_hex(&p[7], "ntime")?;
        let clean_jobs = p[8]
            .as_bool()
            .ok_or_else(|| ParamError::invalid("clean_jobs", "true or false"))?;
        Ok(Job::new(
            job_id,
            swap_prevhash_words(&prevhash_stratum),
            coinb1,
            coinb2,
            merkle_branch,
            version,
            nbits,
            ntime,
            clean_jobs,
        ))
    }

    /// Encode as `mining.notify` params (the inverse of [`Job::from_notify_params`]).
    pub fn to_notify_params(&self) -> Value {
        Value::Array(vec![
            Value::from(self.job_id.as_str()),
            Value::from(hex::encode(swap_prevhash_words(&self.prevhash))),
            Value::from(hex::encode(&self.coinb1)),
            Value::from(hex::encode(&self.coinb2)),
            Value::Array(
                self.merkle_branch
                    .iter()
                    .map(|h| Value::from(hex::encode(h)))
                    .collect(),
            ),
            Value::from(format!("{:08x}", self.version)),
            Value::from(format!("{:08x}", self.nbits)),
            Value::from(format!("{:08x}", self.ntime)),
            Value::from(self.clean_jobs),
        ])
    }

    /// SHA256d of `coinb1 ‖ extranonce1 ‖ extranonce2 ‖ coinb2`: the coinbase txid in internal
    /// byte order.
    pub fn coinbase_txid(&self, extranonce1: &[u8], extranonce2: &[u8]) -> [u8; 32] {
        let mut h = self.coinb1_state.clone();
        h.update(extranonce1);
        h.update(extranonce2);
        h.update(&self.coinb2);
        Sha256::digest(h.finalize()).into()
    }

    /// Full coinbase bytes (for block assembly; share validation only needs the txid).
    pub fn coinbase(&self, extranonce1: &[u8], extranonce2: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(
            self.coinb1.len() + extranonce1.len() + extranonce2.len() + self.coinb2.len(),
        );
        v.extend_from_slice(&self.coinb1);
        v.extend_from_slice(extranonce1);
        v.extend_from_slice(extranonce2);
        v.extend_from_slice(&self.coinb2);
        v
    }

    /// Fold the merkle branch over the coinbase txid.
    pub fn merkle_root(&self, coinbase_txid: [u8; 32]) -> [u8; 32] {
        let mut root = coinbase_txid;
        let mut buf = [0u8; 64];
        for branch in &self.merkle_branch {
            buf[..32].copy_from_slice(&root);
            buf[32..].copy_from_slice(branch);
            root = crate::sha256d(&buf);
        }
        root
    }

    /// The 80-byte header for a given merkle root, ntime, nonce and (already masked) version.
    pub fn header(&self, merkle_root: &[u8; 32], version: u32, ntime: u32, nonce: u32) -> [u8; 80] {
        let mut h = [0u8; 80];
        h[0..4].copy_from_slice(&version.to_le_bytes());
        h[4..36].copy_from_slice(&self.prevhash);
        h[36..68].copy_from_slice(merkle_root);
        h[68..72].copy_from_slice(&ntime.to_le_bytes());
        h[72..76].copy_from_slice(&self.nbits.to_le_bytes());
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        h
    }
}
