//! Finding shares cheaply: the header's first 64 bytes are hashed once per (miner, job) into a
//! SHA-256 midstate, then each nonce costs two compressions (SHA-NI when the CPU has it).
//!
//! At a miner difficulty of 2^-27 a share takes ~32 nonces, so the generator precomputes a
//! whole phase's shares for thousands of miners in a second or two, before the clock starts.

use sha2::digest::generic_array::GenericArray;

use crate::pool::Job;
use crate::share_math::{hash_meets_target_le, merkle_root, sha256d};

const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

/// One miner's header for one job, ready to roll the nonce.
#[derive(Clone)]
pub struct HeaderTemplate {
    midstate: [u32; 8],
    /// Second SHA-256 block of the header: merkle root tail, ntime, nbits, nonce, padding.
    tail: [u8; 64],
}

impl HeaderTemplate {
    /// The header of `job` with coinbase `coinb1 ‖ en1 ‖ en2 ‖ coinb2`, the job's version and
    /// the given ntime.
    pub fn new(job: &Job, en1: &[u8], en2: &[u8], ntime: u32) -> HeaderTemplate {
        let coinbase = [&job.coinb1[..], en1, en2, &job.coinb2[..]].concat();
        let root = merkle_root(sha256d(&coinbase), &job.merkle_branch);
        let mut head = [0u8; 64];
        head[..4].copy_from_slice(&job.version.to_le_bytes());
        head[4..36].copy_from_slice(&job.prevhash);
        head[36..64].copy_from_slice(&root[..28]);
        let mut midstate = IV;
        compress(&mut midstate, &head);
        let mut tail = [0u8; 64];
        tail[..4].copy_from_slice(&root[28..]);
        tail[4..8].copy_from_slice(&ntime.to_le_bytes());
        tail[8..12].copy_from_slice(&job.nbits.to_le_bytes());
        tail[16] = 0x80;
        tail[56..].copy_from_slice(&(80u64 * 8).to_be_bytes());
        HeaderTemplate { midstate, tail }
    }

    /// sha256d of the header with this nonce, in internal byte order (a little-endian number).
    pub fn hash(&self, nonce: u32) -> [u8; 32] {
        let mut block = self.tail;
        block[12..16].copy_from_slice(&nonce.to_le_bytes());
        let mut s = self.midstate;
        compress(&mut s, &block);
        let mut second = [0u8; 64];
        for (i, w) in s.iter().enumerate() {
            second[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        second[32] = 0x80;
        second[56..].copy_from_slice(&(32u64 * 8).to_be_bytes());
        let mut s2 = IV;
        compress(&mut s2, &second);
        let mut out = [0u8; 32];
        for (i, w) in s2.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// A share the generator will submit: its nonce, and whether its hash also meets the upstream
/// target (so the proxy must forward it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solution {
    pub nonce: u32,
    pub forward: bool,
}

/// Scans nonces from `*next_nonce` until `count` shares meeting `target_le` are found.
pub fn find_solutions(
    t: &HeaderTemplate,
    target_le: &[u8; 32],
    upstream_target_le: &[u8; 32],
    next_nonce: &mut u32,
    count: usize,
    out: &mut Vec<Solution>,
) {
    let mut found = 0;
    while found < count {
        let nonce = *next_nonce;
        *next_nonce = next_nonce.wrapping_add(1);
        let h = t.hash(nonce);
        if hash_meets_target_le(&h, target_le) {
            out.push(Solution {
                nonce,
                forward: hash_meets_target_le(&h, upstream_target_le),
            });
            found += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::block::{Header, Version};
    use bitcoin::hashes::Hash;
    use bitcoin::{BlockHash, CompactTarget, TxMerkleNode};

    #[test]
    fn midstate_hash_matches_rust_bitcoin() {
        let job = Job::generate("1".into(), 800_001, 12, 2);
        let en1 = [1, 2, 3, 4, 0, 7];
        let en2 = [9u8; 6];
        let t = HeaderTemplate::new(&job, &en1, &en2, job.ntime + 3);
        let coinbase = [&job.coinb1[..], &en1, &en2, &job.coinb2[..]].concat();
        let root = merkle_root(sha256d(&coinbase), &job.merkle_branch);
        for nonce in [0u32, 1, 0xdead_beef] {
            let header = Header {
                version: Version::from_consensus(job.version as i32),
                prev_blockhash: BlockHash::from_byte_array(job.prevhash),
                merkle_root: TxMerkleNode::from_byte_array(root),
                time: job.ntime + 3,
                bits: CompactTarget::from_consensus(job.nbits),
                nonce,
            };
            assert_eq!(t.hash(nonce), header.block_hash().to_byte_array());
        }
    }
}
