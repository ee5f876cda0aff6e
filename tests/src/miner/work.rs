//! The miner's hashing: a header template for one (job, extranonce2) and a nonce search.
//!
//! The search hashes the first 64 header bytes once per chunk (the SHA-256 midstate) and only
//! the last 16 per nonce, the way ASICs do. The pool rebuilds shares with rust-bitcoin's
//! `Header::block_hash`, so this shortcut is checked by the pool on every share (and by the
//! unit test below).

use bitcoin::hashes::{sha256, Hash, HashEngine};

use crate::pool::Job;
use crate::share_math::{
    assemble_coinbase, deposit_bits, hash_meets_target_le, merkle_root, rolled_version, sha256d,
};

/// A job as the miner holds it: the notify plus the extranonce in force when it arrived.
#[derive(Debug, Clone)]
pub struct MinerJob {
    pub job: Job,
    pub clean: bool,
    /// `(extranonce1, extranonce2 size)` captured at notify time; `None` if the notify came
    /// before the subscribe answer (filled in when work is built).
    pub extranonce: Option<(Vec<u8>, usize)>,
}

/// A share the search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub nonce: u32,
    /// Full header version used (job version with rolled bits).
    pub version: u32,
    /// Header hash, internal byte order.
    pub hash: [u8; 32],
}

/// One unit of work: a fixed coinbase (so a fixed merkle root) and a nonce range.
#[derive(Debug, Clone)]
pub struct Work {
    pub job_id: String,
    pub ntime: u32,
    pub job_version: u32,
    pub extranonce2: Vec<u8>,
    pub coinbase_txid: [u8; 32],
    header: [u8; 80],
    next_nonce: u64,
    roll: u32,
}

impl Work {
    /// Builds the header template for `job` with the given extranonces.
    pub fn new(job: &Job, extranonce1: &[u8], extranonce2: Vec<u8>) -> Work {
        let coinbase = assemble_coinbase(&job.coinb1, extranonce1, &extranonce2, &job.coinb2);
        let coinbase_txid = sha256d(&coinbase);
        let root = merkle_root(coinbase_txid, &job.merkle_branch);
        let mut header = [0u8; 80];
        header[0..4].copy_from_slice(&job.version.to_le_bytes());
        header[4..36].copy_from_slice(&job.prevhash);
        header[36..68].copy_from_slice(&root);
        header[68..72].copy_from_slice(&job.ntime.to_le_bytes());
        header[72..76].copy_from_slice(&job.nbits.to_le_bytes());
        Work {
            job_id: job.id.clone(),
            ntime: job.ntime,
            job_version: job.version,
            extranonce2,
            coinbase_txid,
            header,
            next_nonce: 0,
            roll: 0,
        }
    }

    /// The whole 2^32 nonce space has been searched.
    pub fn exhausted(&self) -> bool {
        self.next_nonce > u64::from(u32::MAX)
    }

    /// Hashes up to `count` nonces and returns how many were hashed and the shares found.
    ///
    /// With a non-zero `version_mask` every chunk uses the next version-bit pattern inside the
    /// mask (BIP310 rolling); the nonce keeps counting, so no (version, nonce) pair repeats.
    pub fn hash_chunk(
        &mut self,
        count: u32,
        target_le: &[u8; 32],
        version_mask: u32,
    ) -> (u32, Vec<Found>) {
        let version = if version_mask == 0 {
            self.job_version
        } else {
            let bits = deposit_bits(self.roll, version_mask);
            self.roll = self.roll.wrapping_add(1);
            rolled_version(self.job_version, version_mask, bits)
        };
        self.header[0..4].copy_from_slice(&version.to_le_bytes());
        let mut midstate = sha256::HashEngine::default();
        midstate.input(&self.header[..64]);
        let mut tail = [0u8; 16];
        tail[..12].copy_from_slice(&self.header[64..76]);

        let mut found = Vec::new();
        let end = (self.next_nonce + u64::from(count)).min(u64::from(u32::MAX) + 1);
        let hashed = (end - self.next_nonce) as u32;
        for n in self.next_nonce..end {
            let nonce = n as u32;
            tail[12..].copy_from_slice(&nonce.to_le_bytes());
            let mut engine = midstate.clone();
            engine.input(&tail);
            let first = sha256::Hash::from_engine(engine);
            let hash = sha256::Hash::hash(first.as_byte_array()).to_byte_array();
            if hash_meets_target_le(&hash, target_le) {
                found.push(Found {
                    nonce,
                    version,
                    hash,
                });
            }
        }
        self.next_nonce = end;
        (hashed, found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::validate::{build_share, ShareRules, SubmitParams};
    use crate::share_math::difficulty_to_target;

    /// Shares found with the midstate shortcut are the hashes rust-bitcoin computes for the
    /// header the pool rebuilds from the submit.
    #[test]
    fn midstate_search_agrees_with_rust_bitcoin() {
        let job = Job::generate("7".into(), 800_001, 4 + 4, 3);
        let en1 = [9u8, 8, 7, 6];
        let mut work = Work::new(&job, &en1, vec![0, 0, 0, 5]);
        let target = difficulty_to_target(1.0 / 4096.0).to_le_bytes(); // ~1 in 2^20
        let mask = 0x1fff_e000;
        let mut found = Vec::new();
        while found.len() < 3 {
            let (n, f) = work.hash_chunk(4096, &target, mask);
            assert_eq!(n, 4096);
            found.extend(f);
        }
        let rules = ShareRules {
            extranonce1: &en1,
            extranonce2_size: 4,
            version_mask: mask,
            ntime_max_ahead_secs: 0,
        };
        for f in found {
            let p = SubmitParams {
                worker: "w".into(),
                job_id: job.id.clone(),
                extranonce2: "00000005".into(),
                ntime: format!("{:08x}", job.ntime),
                nonce: format!("{:08x}", f.nonce),
                version_bits: Some(format!("{:08x}", f.version & mask)),
            };
            let share = build_share(&job, &rules, &p).unwrap();
            assert_eq!(share.hash.to_byte_array(), f.hash);
            assert_eq!(share.coinbase_txid, work.coinbase_txid);
            assert!(difficulty_to_target(1.0 / 4096.0).is_met_by(share.hash));
        }
    }

    #[test]
    fn nonce_space_ends() {
        let job = Job::generate("1".into(), 1, 4 + 1, 0);
        let mut work = Work::new(&job, &[0; 4], vec![0]);
        work.next_nonce = u64::from(u32::MAX) - 9;
        let (n, _) = work.hash_chunk(100, &[0; 32], 0);
        assert_eq!(n, 10);
        assert!(work.exhausted());
    }
}

#[cfg(test)]
mod throughput {
    use super::*;

    /// `cargo test -p blgv-tests --lib throughput -- --ignored --nocapture`: the hash rate one
    /// core can give the simulated miners (their total `hashrate` should stay well below it).
    #[test]
    #[ignore]
    fn hash_throughput() {
        let job = Job::generate("1".into(), 1, 4 + 8, 2);
        let mut work = Work::new(&job, &[0; 4], vec![0; 8]);
        let start = std::time::Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < 1.0 {
            n += u64::from(work.hash_chunk(2048, &[0; 32], 0x1fff_e000).0);
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        println!("{rate:.0} H/s on one core");
    }
}
