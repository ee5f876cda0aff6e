//! A pool job: a real coinbase transaction split around the extranonce space, plus the
//! header fields a `mining.notify` carries.
//!
//! The pool keeps jobs in this decoded form and validates shares against it; the same type
//! can be built from the params of a `mining.notify` (that is how the mainnet vector test feeds
//! a real block through the pool's validation).

use bitcoin::hashes::Hash;
use bitcoin::{absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn};
use bitcoin::{TxOut, WPubkeyHash, Witness};
use rand::Rng;
use serde_json::{json, Value};

use crate::share_math::{parse_hex32, parse_u32_hex8, swap_prevhash_words};

/// Block version of generated jobs (BIP9 top bits only, so every rolled bit is free).
pub const JOB_VERSION: u32 = 0x2000_0000;
/// nBits of generated jobs: the regtest limit. Irrelevant to share validity; present so the
/// header is well-formed.
pub const JOB_NBITS: u32 = 0x207f_ffff;
/// Text after the extranonce space in generated coinbases.
const COINBASE_TAG: &[u8] = b"/blgv-testpool/";

/// One job, fields in the form used to build a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Unique job id string (a hex counter for generated jobs).
    pub id: String,
    /// Previous block hash in header (internal) byte order.
    pub prevhash: [u8; 32],
    /// Coinbase bytes before extranonce1.
    pub coinb1: Vec<u8>,
    /// Coinbase bytes after extranonce2.
    pub coinb2: Vec<u8>,
    /// Merkle branch entries as raw bytes.
    pub merkle_branch: Vec<[u8; 32]>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
}

impl Job {
    /// Builds a fresh job with a real, legacy-serialized coinbase:
    /// version 2, one input with a null prevout whose scriptSig is
    /// `<BIP34 height push> <extranonce_space zero bytes> <tag>`, one P2WPKH output.
    /// coinb1/coinb2 are the serialization split around the extranonce space, so whatever
    /// extranonce the miner fills in, the bytes still deserialize as that transaction.
    ///
    /// `extranonce_space` is `extranonce1 size + extranonce2 size`. The prevhash, the merkle
    /// branch and the output's key hash are random, so no two jobs share a coinbase.
    pub fn generate(id: String, height: u32, extranonce_space: usize, branch_len: usize) -> Job {
        let mut rng = rand::thread_rng();
        let height_push = bip34_height(height);
        let mut script_sig = Vec::with_capacity(1 + height_push.len() + extranonce_space + 16);
        script_sig.push(height_push.len() as u8);
        script_sig.extend_from_slice(&height_push);
        let extranonce_at_in_script = script_sig.len();
        script_sig.resize(script_sig.len() + extranonce_space, 0);
        script_sig.extend_from_slice(COINBASE_TAG);
        let script_len = script_sig.len();

        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(script_sig),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(312_500_000),
                script_pubkey: ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array(rng.gen())),
            }],
        };
        // No witness, so this is the legacy serialization Stratum expects.
        let bytes = bitcoin::consensus::encode::serialize(&tx);
        // version(4) + input count(1) + outpoint(36) + scriptSig length varint.
        let varint_len = if script_len < 0xfd { 1 } else { 3 };
        let at = 4 + 1 + 36 + varint_len + extranonce_at_in_script;
        debug_assert!(bytes[at..at + extranonce_space].iter().all(|&b| b == 0));

        Job {
            id,
            prevhash: rng.gen(),
            coinb1: bytes[..at].to_vec(),
            coinb2: bytes[at + extranonce_space..].to_vec(),
            merkle_branch: (0..branch_len).map(|_| rng.gen()).collect(),
            version: JOB_VERSION,
            nbits: JOB_NBITS,
            ntime: unix_now(),
        }
    }

    /// The 9 `mining.notify` params.
    pub fn notify_params(&self, clean_jobs: bool) -> Value {
        json!([
            self.id,
            hex::encode(swap_prevhash_words(self.prevhash)),
            hex::encode(&self.coinb1),
            hex::encode(&self.coinb2),
            self.merkle_branch
                .iter()
                .map(hex::encode)
                .collect::<Vec<_>>(),
            format!("{:08x}", self.version),
            format!("{:08x}", self.nbits),
            format!("{:08x}", self.ntime),
            clean_jobs,
        ])
    }

    /// Parses `mining.notify` params (the clean_jobs flag is returned separately).
    pub fn from_notify_params(params: &Value) -> Result<(Job, bool), String> {
        let p = params.as_array().ok_or("notify params are not an array")?;
        if p.len() < 9 {
            return Err(format!("notify has {} params, expected 9", p.len()));
        }
        let s = |i: usize| {
            p[i].as_str()
                .ok_or(format!("notify param {i} is not a string"))
        };
        let id = s(0)?.to_string();
        let prevhash = parse_hex32(s(1)?).ok_or("bad prevhash")?;
        let coinb1 = hex::decode(s(2)?).map_err(|e| format!("bad coinb1: {e}"))?;
        let coinb2 = hex::decode(s(3)?).map_err(|e| format!("bad coinb2: {e}"))?;
        let merkle_branch = p[4]
            .as_array()
            .ok_or("merkle branch is not an array")?
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(parse_hex32)
                    .ok_or("bad merkle branch entry")
            })
            .collect::<Result<Vec<_>, _>>()?;
        let version = parse_u32_hex8(s(5)?).ok_or("bad version")?;
        let nbits = parse_u32_hex8(s(6)?).ok_or("bad nbits")?;
        let ntime = parse_u32_hex8(s(7)?).ok_or("bad ntime")?;
        let clean = p[8].as_bool().ok_or("clean_jobs is not a bool")?;
        let job = Job {
            id,
            prevhash: swap_prevhash_words(prevhash),
            coinb1,
            coinb2,
            merkle_branch,
            version,
            nbits,
            ntime,
        };
        Ok((job, clean))
    }
}

/// BIP34 height: the minimal little-endian script-number encoding (a sign byte is added when
/// the top bit is set).
pub fn bip34_height(height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut h = height;
    while h > 0 {
        out.push((h & 0xff) as u8);
        h >>= 8;
    }
    if out.last().is_some_and(|b| b & 0x80 != 0) {
        out.push(0);
    }
    if out.is_empty() {
        out.push(0);
    }
    out
}

/// Seconds since the Unix epoch, as a header's ntime.
pub fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_coinbase_deserializes_with_any_extranonce() {
        let job = Job::generate("1".into(), 800_123, 4 + 8, 2);
        for fill in [0u8, 0xab, 0xff] {
            let cb = [&job.coinb1[..], &[fill; 12], &job.coinb2[..]].concat();
            let tx: Transaction = bitcoin::consensus::encode::deserialize(&cb).unwrap();
            assert!(tx.is_coinbase());
            let script = tx.input[0].script_sig.as_bytes();
            assert_eq!(&script[..4], &[3, 0x7b, 0x35, 0x0c]); // push3 800123 = 0x0c357b, LE
            assert_eq!(&script[4..16], &[fill; 12]);
        }
    }

    #[test]
    fn notify_params_round_trip() {
        let job = Job::generate("ab".into(), 1, 4 + 4, 3);
        let (back, clean) = Job::from_notify_params(&job.notify_params(true)).unwrap();
        assert_eq!(back, job);
        assert!(clean);
        assert!(Job::from_notify_params(&json!([1, 2])).is_err());
        assert!(Job::from_notify_params(&json!({"a": 1})).is_err());
    }

    #[test]
    fn bip34_heights() {
        assert_eq!(bip34_height(702_861), vec![0x8d, 0xb9, 0x0a]);
        assert_eq!(bip34_height(128), vec![0x80, 0x00]);
        assert_eq!(bip34_height(0), vec![0x00]);
    }
}
