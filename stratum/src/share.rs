//! Share validation: rebuild the header a miner hashed and judge it.
//!
//! The proxy and the pool both call [`check_share`]; what depends on session state (is the job
//! known, is the share a duplicate, is the worker authorized) is decided by the caller and
//! reported with the same [`ShareRejection`] type so miners see one vocabulary of errors.

use crate::{Difficulty, ErrorCode, Job, ShareHash, StratumError, Submit, Target};

/// The rules a share must follow besides its target, as the upstream applies them.
#[derive(Debug, Clone, Copy)]
pub struct ShareRules {
    /// Bits the miner may roll (the upstream's grant ∩ the miner's request); 0 = none.
    pub version_mask: u32,
    /// Earliest acceptable ntime (normally the job's ntime).
    pub ntime_min: u32,
    /// Latest acceptable ntime.
    pub ntime_max: u32,
    /// The extranonce2 length the miner was told to use.
    pub extranonce2_size: usize,
}

/// Every reason a share is refused, with its Stratum error code.
#[derive(Debug, Clone, PartialEq)]
pub enum ShareRejection {
    NotSubscribed,
    Unauthorized {
        worker: String,
    },
    /// Unknown or superseded job: the miner is working on old data.
    Stale {
        job_id: String,
    },
    Duplicate,
    LowDifficulty {
        achieved: Difficulty,
        required: Difficulty,
    },
    WrongExtranonce2Length {
        expected: usize,
        got: usize,
    },
    VersionBitsOutsideMask {
        bits: u32,
        mask: u32,
    },
    NtimeOutOfRange {
        ntime: u32,
        min: u32,
        max: u32,
    },
    /// Params that could not be decoded (the text names the field).
    Malformed(String),
}

impl ShareRejection {
    pub fn code(&self) -> ErrorCode {
        match self {
            ShareRejection::NotSubscribed => ErrorCode::NotSubscribed,
            ShareRejection::Unauthorized { .. } => ErrorCode::Unauthorized,
            ShareRejection::Stale { .. } => ErrorCode::JobNotFound,
            ShareRejection::Duplicate => ErrorCode::Duplicate,
            ShareRejection::LowDifficulty { .. } => ErrorCode::LowDifficulty,
            ShareRejection::WrongExtranonce2Length { .. }
            | ShareRejection::VersionBitsOutsideMask { .. }
            | ShareRejection::NtimeOutOfRange { .. }
            | ShareRejection::Malformed(_) => ErrorCode::Other,
        }
    }

    /// A short stable label for ledgers and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ShareRejection::NotSubscribed => "not_subscribed",
            ShareRejection::Unauthorized { .. } => "unauthorized",
            ShareRejection::Stale { .. } => "stale",
            ShareRejection::Duplicate => "duplicate",
            ShareRejection::LowDifficulty { .. } => "low_difficulty",
            ShareRejection::WrongExtranonce2Length { .. } => "bad_extranonce2",
            ShareRejection::VersionBitsOutsideMask { .. } => "bad_version",
            ShareRejection::NtimeOutOfRange { .. } => "bad_ntime",
            ShareRejection::Malformed(_) => "malformed",
        }
    }

    pub fn to_stratum_error(&self) -> StratumError {
        StratumError::new(self.code(), self.to_string())
    }
}

impl std::fmt::Display for ShareRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShareRejection::NotSubscribed => {
                f.write_str("Not subscribed: send mining.subscribe before submitting")
            }
            ShareRejection::Unauthorized { worker } => write!(
                f,
                "Unauthorized worker {worker:?}: send mining.authorize for it before submitting"
            ),
            ShareRejection::Stale { job_id } => {
                write!(
                    f,
                    "Job not found (stale): job {job_id:?} is unknown or superseded"
                )
            }
            ShareRejection::Duplicate => f.write_str("Duplicate share"),
            ShareRejection::LowDifficulty { achieved, required } => write!(
                f,
                "Low difficulty share: {:.6} < {}",
                achieved.as_f64(),
                required
            ),
            ShareRejection::WrongExtranonce2Length { expected, got } => write!(
                f,
                "extranonce2 must be {expected} bytes ({} hex digits), got {got} bytes",
                expected * 2
            ),
            ShareRejection::VersionBitsOutsideMask { bits, mask } => write!(
                f,
                "version bits {bits:08x} outside the negotiated mask {mask:08x}"
            ),
            ShareRejection::NtimeOutOfRange { ntime, min, max } => write!(
                f,
                "ntime {ntime:08x} out of range: must be between {min:08x} and {max:08x}"
            ),
            ShareRejection::Malformed(text) => write!(f, "malformed submit: {text}"),
        }
    }
}

/// A share that passed: its hash, the header version used, and the coinbase txid.
#[derive(Debug, Clone, Copy)]
pub struct CheckedShare {
    pub hash: ShareHash,
    pub version: u32,
    pub coinbase_txid: [u8; 32],
}

impl CheckedShare {
    /// The difficulty the hash actually reached.
    pub fn achieved_difficulty(&self) -> Difficulty {
        hash_difficulty(&self.hash)
    }
}

/// The difficulty a hash reaches (`diff1 / hash`).
pub fn hash_difficulty(hash: &ShareHash) -> Difficulty {
    // A hash is a 256-bit number like a target, so Target's conversion applies.
    crate::target::target_from_le_bytes(hash.as_bytes()).to_difficulty()
}

/// Rebuild coinbase → merkle root → header from `job` and `submit`, hash it, and check it against
/// `target` and `rules`.
pub fn check_share(
    job: &Job,
    extranonce1: &[u8],
    submit: &Submit,
    rules: &ShareRules,
    target: &Target,
) -> Result<CheckedShare, ShareRejection> {
    if submit.extranonce2.len() != rules.extranonce2_size {
        return Err(ShareRejection::WrongExtranonce2Length {
            expected: rules.extranonce2_size,
            got: submit.extranonce2.len(),
        });
    }
    if submit.ntime < rules.ntime_min || submit.ntime > rules.ntime_max {
        return Err(ShareRejection::NtimeOutOfRange {
            ntime: submit.ntime,
            min: rules.ntime_min,
            max: rules.ntime_max,
        });
    }
    let version = match submit.version_bits {
        None => job.version,
        Some(bits) => {
            if bits & !rules.version_mask != 0 {
                return Err(ShareRejection::VersionBitsOutsideMask {
                    bits,
                    mask: rules.version_mask,
                });
            }
            (job.version & !rules.version_mask) | bits
        }
    };
    let coinbase_txid = job.coinbase_txid(extranonce1, submit.extranonce2.as_bytes());
    let root = job.merkle_root(coinbase_txid);
    let header = job.header(&root, version, submit.ntime, submit.nonce);
    let hash = ShareHash::from_internal_bytes(crate::sha256d(&header));
    if !target.is_met_by(&hash) {
        return Err(ShareRejection::LowDifficulty {
            achieved: hash_difficulty(&hash),
            required: target.to_difficulty(),
        });
    }
    Ok(CheckedShare {
        hash,
        version,
        coinbase_txid,
    })
}
