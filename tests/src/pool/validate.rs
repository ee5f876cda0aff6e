//! Share validation, independent of the project's stratum crate.
//!
//! [`parse_submit`] checks the shape of `mining.submit` params and [`build_share`] turns a share
//! into a rust-bitcoin `Header` (checking extranonce2 width, hex, ntime window, version bits
//! and that the coinbase really is a transaction). Job lookup, authorization, duplicates and the
//! target check need pool state and live in the connection handler, in the order the Stratum
//! error codes imply.

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, CompactTarget, Transaction, TxMerkleNode};
use serde_json::Value;

use super::job::Job;
use crate::jsonrpc::ERR_OTHER;
use crate::share_math::{merkle_root, parse_u32_hex8, rolled_version};

/// A rejected share: Stratum error code and a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub code: i64,
    pub reason: String,
}

impl Reject {
    pub fn new(code: i64, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// `mining.submit` params, still as the strings the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitParams {
    pub worker: String,
    pub job_id: String,
    pub extranonce2: String,
    pub ntime: String,
    pub nonce: String,
    /// The optional 6th param (BIP310 version bits).
    pub version_bits: Option<String>,
}

/// Checks that params are `[worker, job_id, en2, ntime, nonce]` plus an optional 6th string,
/// all strings. Anything else is error 20.
pub fn parse_submit(params: &Value) -> Result<SubmitParams, Reject> {
    let p = params
        .as_array()
        .ok_or_else(|| Reject::new(ERR_OTHER, "submit params are not an array"))?;
    if !(5..=6).contains(&p.len()) {
        return Err(Reject::new(
            ERR_OTHER,
            format!("submit has {} params, expected 5 or 6", p.len()),
        ));
    }
    let s = |i: usize| -> Result<String, Reject> {
        p[i].as_str()
            .map(str::to_string)
            .ok_or_else(|| Reject::new(ERR_OTHER, format!("submit param {i} is not a string")))
    };
    Ok(SubmitParams {
        worker: s(0)?,
        job_id: s(1)?,
        extranonce2: s(2)?,
        ntime: s(3)?,
        nonce: s(4)?,
        version_bits: if p.len() == 6 { Some(s(5)?) } else { None },
    })
}

/// What a share looks like once rebuilt.
#[derive(Debug, Clone)]
pub struct BuiltShare {
    pub header: Header,
    pub hash: BlockHash,
    pub coinbase_txid: [u8; 32],
    pub extranonce2: Vec<u8>,
    pub ntime: u32,
    pub nonce: u32,
    pub version: u32,
}

/// Rules for [`build_share`] that come from the connection and the pool config.
#[derive(Debug, Clone, Copy)]
pub struct ShareRules<'a> {
    pub extranonce1: &'a [u8],
    pub extranonce2_size: usize,
    /// The version-rolling mask granted on this connection (0 = none).
    pub version_mask: u32,
    pub ntime_max_ahead_secs: u32,
}

/// Rebuilds the share's header with rust-bitcoin and hashes it.
///
/// Every failure here is error 20: wrong extranonce2 width, bad hex, ntime outside
/// `[job.ntime, job.ntime + max_ahead]`, version bits outside the granted mask, or a coinbase
/// that does not deserialize to exactly one `bitcoin::Transaction`.
pub fn build_share(job: &Job, rules: &ShareRules, p: &SubmitParams) -> Result<BuiltShare, Reject> {
    let bad = |why: String| Reject::new(ERR_OTHER, why);
    if p.extranonce2.len() != rules.extranonce2_size * 2 {
        return Err(bad(format!(
            "extranonce2 {:?} is {} hex digits, expected {}",
            p.extranonce2,
            p.extranonce2.len(),
            rules.extranonce2_size * 2
        )));
    }
    let extranonce2 =
        hex::decode(&p.extranonce2).map_err(|e| bad(format!("extranonce2 is not hex: {e}")))?;
    let ntime = parse_u32_hex8(&p.ntime).ok_or_else(|| bad(format!("bad ntime {:?}", p.ntime)))?;
    let nonce = parse_u32_hex8(&p.nonce).ok_or_else(|| bad(format!("bad nonce {:?}", p.nonce)))?;
    let version_bits = match &p.version_bits {
        None => 0,
        Some(v) => parse_u32_hex8(v).ok_or_else(|| bad(format!("bad version bits {v:?}")))?,
    };
    if ntime < job.ntime
        || u64::from(ntime) > u64::from(job.ntime) + u64::from(rules.ntime_max_ahead_secs)
    {
        return Err(bad(format!(
            "ntime {ntime:08x} outside [{:08x}, +{}s]",
            job.ntime, rules.ntime_max_ahead_secs
        )));
    }
    if version_bits & !rules.version_mask != 0 {
        return Err(bad(format!(
            "version bits {version_bits:08x} outside granted mask {:08x}",
            rules.version_mask
        )));
    }
    let version = rolled_version(job.version, rules.version_mask, version_bits);

    let coinbase = [
        &job.coinb1[..],
        rules.extranonce1,
        &extranonce2[..],
        &job.coinb2[..],
    ]
    .concat();
    // `deserialize` insists every byte is consumed, so trailing garbage is caught too.
    let tx: Transaction = bitcoin::consensus::encode::deserialize(&coinbase)
        .map_err(|e| bad(format!("coinbase is not a transaction: {e}")))?;
    let coinbase_txid = tx.compute_txid().to_byte_array();
    let root = merkle_root(coinbase_txid, &job.merkle_branch);

    let header = Header {
        version: Version::from_consensus(version as i32),
        prev_blockhash: BlockHash::from_byte_array(job.prevhash),
        merkle_root: TxMerkleNode::from_byte_array(root),
        time: ntime,
        bits: CompactTarget::from_consensus(job.nbits),
        nonce,
    };
    Ok(BuiltShare {
        hash: header.block_hash(),
        header,
        coinbase_txid,
        extranonce2,
        ntime,
        nonce,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(en2: &str, ntime: &str, nonce: &str, vb: Option<&str>) -> SubmitParams {
        SubmitParams {
            worker: "w".into(),
            job_id: "1".into(),
            extranonce2: en2.into(),
            ntime: ntime.into(),
            nonce: nonce.into(),
            version_bits: vb.map(str::to_string),
        }
    }

    #[test]
    fn submit_shape() {
        assert!(parse_submit(&json!(["w", "j", "00", "00000000", "00000000"])).is_ok());
        let six = parse_submit(&json!(["w", "j", "00", "0", "0", "00002000"])).unwrap();
        assert_eq!(six.version_bits.as_deref(), Some("00002000"));
        for bad in [
            json!([]),
            json!(["w", "j", "00", "0"]),
            json!(["w", "j", 5, "0", "0"]),
            json!(["w", "j", "00", "0", "0", "0", "0"]),
            json!({"worker": "w"}),
            json!(null),
        ] {
            assert_eq!(parse_submit(&bad).unwrap_err().code, 20, "{bad}");
        }
    }

    #[test]
    fn field_errors_are_code_20() {
        let job = Job::generate("1".into(), 5, 4 + 4, 2);
        let rules = ShareRules {
            extranonce1: &[1, 2, 3, 4],
            extranonce2_size: 4,
            version_mask: 0x1fff_e000,
            ntime_max_ahead_secs: 60,
        };
        let nt = format!("{:08x}", job.ntime);
        let late = format!("{:08x}", job.ntime + 61);
        let early = format!("{:08x}", job.ntime - 1);
        assert!(build_share(&job, &rules, &params("00000000", &nt, "00000000", None)).is_ok());
        let ok_vb = params("00000000", &nt, "00000000", Some("1fffe000"));
        assert_eq!(
            build_share(&job, &rules, &ok_vb).unwrap().version,
            0x3fff_e000
        );
        for p in [
            params("000000", &nt, "00000000", None),
            params("0000000g", &nt, "00000000", None),
            params("00000000", &late, "00000000", None),
            params("00000000", &early, "00000000", None),
            params("00000000", &nt, "0000000", None),
            params("00000000", &nt, "00000000", Some("00001000")),
            params("00000000", &nt, "00000000", Some("xyz")),
        ] {
            assert_eq!(build_share(&job, &rules, &p).unwrap_err().code, 20, "{p:?}");
        }
        let mut broken = job.clone();
        broken.coinb2.push(0);
        let p = params("00000000", &nt, "00000000", None);
        assert_eq!(build_share(&broken, &rules, &p).unwrap_err().code, 20);
    }
}
