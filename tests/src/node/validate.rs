//! Block checks in Bitcoin Core's order, with Core's reject reasons, done with rust-bitcoin.
//!
//! Core validates a block submitted by `submitblock` in three stages, and the first failure
//! wins, so the order matters for which reason a pool sees:
//!
//! 1. [`check_block`] (Core's `CheckBlock`): proof of work (`high-hash`), merkle root
//!    (`bad-txnmrklroot`, `bad-txns-duplicate`), size (`bad-blk-length`), coinbase placement
//!    (`bad-cb-missing`, `bad-cb-multiple`), per-transaction sanity (`bad-cb-length`,
//!    `bad-txns-*`), legacy sigops (`bad-blk-sigops`).
//! 2. [`check_header_contextual`] (Core's `ContextualCheckBlockHeader`): `bad-diffbits`,
//!    `time-too-old`, `time-too-new`, `bad-version(0x…)`.
//! 3. [`check_block_contextual`] (Core's `ContextualCheckBlock`): `bad-txns-nonfinal`,
//!    `bad-cb-height` (BIP34, exact `CScript() << nHeight` prefix), the BIP141 witness checks
//!    (`bad-witness-nonce-size`, `bad-witness-merkle-match`, `unexpected-witness`) and
//!    `bad-blk-weight`.
//!
//! Connecting the block (`bad-txns-inputs-missingorspent`, `bad-cb-amount`) needs the chain
//! and mempool, and lives in `chain.rs`.

use bitcoin::block::Header;
use bitcoin::hashes::{sha256d, Hash};
use bitcoin::{Block, CompactTarget, Target, Transaction};

/// Regtest's proof-of-work limit (`powLimit`), also the only valid `nBits` on regtest.
pub const REGTEST_BITS: u32 = 0x207f_ffff;
/// `MAX_BLOCK_WEIGHT`.
pub const MAX_BLOCK_WEIGHT: u64 = 4_000_000;
/// `MAX_BLOCK_SIGOPS_COST`.
pub const MAX_BLOCK_SIGOPS_COST: u64 = 80_000;
/// `WITNESS_SCALE_FACTOR`.
pub const WITNESS_SCALE_FACTOR: u64 = 4;
/// `MAX_MONEY` in satoshis.
pub const MAX_MONEY: u64 = 21_000_000 * 100_000_000;
/// `MAX_FUTURE_BLOCK_TIME`: how far ahead of the node's clock a block's time may be.
pub const MAX_FUTURE_BLOCK_TIME: u32 = 2 * 60 * 60;
/// `OP_RETURN OP_PUSHBYTES_36 aa21a9ed`: the start of a BIP141 commitment output.
pub const WITNESS_COMMITMENT_HEADER: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
/// Regtest's subsidy halving interval (`nSubsidyHalvingInterval`).
pub const REGTEST_HALVING_INTERVAL: u32 = 150;

/// Core's `GetBlockSubsidy` with regtest's halving interval.
pub fn block_subsidy(height: u32) -> u64 {
    let halvings = height / REGTEST_HALVING_INTERVAL;
    if halvings >= 64 {
        return 0;
    }
    (50 * 100_000_000u64) >> halvings
}

/// Core's `CScriptNum::serialize`: minimal little-endian sign-magnitude bytes.
pub fn script_num_serialize(value: i64) -> Vec<u8> {
    if value == 0 {
        return Vec::new();
    }
    let neg = value < 0;
    let mut abs = value.unsigned_abs();
    let mut out = Vec::new();
    while abs > 0 {
        out.push((abs & 0xff) as u8);
        abs >>= 8;
    }
    if out.last().is_some_and(|b| b & 0x80 != 0) {
        out.push(if neg { 0x80 } else { 0x00 });
    } else if neg {
        *out.last_mut().expect("non-empty") |= 0x80;
    }
    out
}

/// The bytes of `CScript() << nHeight`, which a coinbase scriptSig must start with (BIP34 as
/// Core enforces it).
///
/// Core's `CScript::push_int64` writes 0 as `OP_0`, 1..=16 as the single opcodes
/// `OP_1`..`OP_16` (0x51..0x60), and everything else as a minimal `CScriptNum` data push. So
/// height 5 must start `55`, not `01 05`; height 17 is `01 11`, height 128 is `02 80 00`.
pub fn bip34_height_prefix(height: u32) -> Vec<u8> {
    match height {
        0 => vec![0x00],
        1..=16 => vec![0x50 + height as u8],
        _ => {
            let num = script_num_serialize(i64::from(height));
            let mut out = Vec::with_capacity(num.len() + 1);
            out.push(num.len() as u8); // at most 5 bytes: a direct push
            out.extend_from_slice(&num);
            out
        }
    }
}

/// Core's `CheckProofOfWork`: `bits` must decode to a positive, non-overflowing target no
/// easier than regtest's limit, and the hash must not exceed it.
pub fn check_proof_of_work(header: &Header) -> bool {
    let bits = header.bits.to_consensus();
    // Decode like arith_uint256::SetCompact to catch negative and overflowing encodings,
    // which rust-bitcoin's Target::from_compact silently maps.
    let size = bits >> 24;
    let mantissa = bits & 0x007f_ffff;
    let negative = mantissa != 0 && (bits & 0x0080_0000) != 0;
    let overflow = mantissa != 0
        && (size > 34 || (mantissa > 0xff && size > 33) || (mantissa > 0xffff && size > 32));
    if negative || overflow || mantissa == 0 {
        return false;
    }
    let target = Target::from_compact(CompactTarget::from_consensus(bits));
    if target > Target::MAX_ATTAINABLE_REGTEST {
        return false;
    }
    // The rust-bitcoin check, with the block's own target (already checked against the limit).
    header.validate_pow(target).is_ok()
}

/// Core's merkle computation's mutation flag (CVE-2012-2459): two equal hashes paired at
/// any level.
pub fn merkle_is_mutated(block: &Block) -> bool {
    let mut hashes: Vec<[u8; 32]> = block
        .txdata
        .iter()
        .map(|tx| tx.compute_txid().to_byte_array())
        .collect();
    let mut mutated = false;
    while hashes.len() > 1 {
        for pair in hashes.chunks(2) {
            if pair.len() == 2 && pair[0] == pair[1] {
                mutated = true;
            }
        }
        if hashes.len() % 2 == 1 {
            hashes.push(*hashes.last().expect("non-empty"));
        }
        hashes = hashes
            .chunks(2)
            .map(|p| {
                let mut buf = [0u8; 64];
                buf[..32].copy_from_slice(&p[0]);
                buf[32..].copy_from_slice(&p[1]);
                sha256d::Hash::hash(&buf).to_byte_array()
            })
            .collect();
    }
    mutated
}

/// Core's `CheckTransaction` (context-free sanity). Reasons are Core's.
pub fn check_transaction(tx: &Transaction) -> Result<(), &'static str> {
    if tx.input.is_empty() {
        return Err("bad-txns-vin-empty");
    }
    if tx.output.is_empty() {
        return Err("bad-txns-vout-empty");
    }
    if tx.base_size() as u64 * WITNESS_SCALE_FACTOR > MAX_BLOCK_WEIGHT {
        return Err("bad-txns-oversize");
    }
    let mut total: u64 = 0;
    for out in &tx.output {
        let v = out.value.to_sat();
        if (v as i64) < 0 {
            return Err("bad-txns-vout-negative");
        }
        if v > MAX_MONEY {
            return Err("bad-txns-vout-toolarge");
        }
        total += v;
        if total > MAX_MONEY {
            return Err("bad-txns-txouttotal-toolarge");
        }
    }
    let mut seen = std::collections::HashSet::new();
    for input in &tx.input {
        if !seen.insert(input.previous_output) {
            return Err("bad-txns-inputs-duplicate");
        }
    }
    if tx.is_coinbase() {
        let len = tx.input[0].script_sig.len();
        if !(2..=100).contains(&len) {
            return Err("bad-cb-length");
        }
    } else if tx.input.iter().any(|i| i.previous_output.is_null()) {
        return Err("bad-txns-prevout-null");
    }
    Ok(())
}

/// Core's `GetLegacySigOpCount` (scriptSigs and output scripts, inaccurate counting).
pub fn legacy_sigops(tx: &Transaction) -> u64 {
    let ins: usize = tx
        .input
        .iter()
        .map(|i| i.script_sig.count_sigops_legacy())
        .sum();
    let outs: usize = tx
        .output
        .iter()
        .map(|o| o.script_pubkey.count_sigops_legacy())
        .sum();
    (ins + outs) as u64
}

/// Stage 1: Core's `CheckBlock` (and `CheckBlockHeader`), context-free. Block proposals
/// skip the proof-of-work check (`check_pow = false`), as Core's `TestBlockValidity` does.
pub fn check_block(block: &Block, check_pow: bool) -> Result<(), &'static str> {
    if check_pow && !check_proof_of_work(&block.header) {
        return Err("high-hash");
    }
    // rust-bitcoin's merkle check.
    // Core's root of no transactions is zero.
    let merkle_ok = if block.txdata.is_empty() {
        block.header.merkle_root == bitcoin::TxMerkleNode::all_zeros()
    } else {
        block.check_merkle_root()
    };
    if !merkle_ok {
        return Err("bad-txnmrklroot");
    }
    if merkle_is_mutated(block) {
        return Err("bad-txns-duplicate");
    }
    let stripped_size = {
        // Serialized size without witnesses.
        let header = 80u64;
        let count = bitcoin::VarInt::from(block.txdata.len()).size() as u64;
        header
            + count
            + block
                .txdata
                .iter()
                .map(|t| t.base_size() as u64)
                .sum::<u64>()
    };
    if block.txdata.is_empty()
        || block.txdata.len() as u64 * WITNESS_SCALE_FACTOR > MAX_BLOCK_WEIGHT
        || stripped_size * WITNESS_SCALE_FACTOR > MAX_BLOCK_WEIGHT
    {
        return Err("bad-blk-length");
    }
    if !block.txdata[0].is_coinbase() {
        return Err("bad-cb-missing");
    }
    if block.txdata[1..].iter().any(|t| t.is_coinbase()) {
        return Err("bad-cb-multiple");
    }
    for tx in &block.txdata {
        check_transaction(tx)?;
    }
    let sigops: u64 = block.txdata.iter().map(legacy_sigops).sum();
    if sigops * WITNESS_SCALE_FACTOR > MAX_BLOCK_SIGOPS_COST {
        return Err("bad-blk-sigops");
    }
    Ok(())
}

/// What stage 2 and 3 need to know about the block's parent.
#[derive(Debug, Clone, Copy)]
pub struct ParentContext {
    /// Height of the new block (parent's height + 1).
    pub height: u32,
    /// Median time past of the parent (median of the last 11 block times up to it).
    pub median_time_past: u32,
    /// The node's clock, in Unix seconds.
    pub now: u32,
}

/// Stage 2: Core's `ContextualCheckBlockHeader` on regtest (no retargeting; BIP34, BIP66 and
/// BIP65 active from height 1, so versions below 4 are rejected).
pub fn check_header_contextual(header: &Header, ctx: &ParentContext) -> Result<(), String> {
    if header.bits.to_consensus() != REGTEST_BITS {
        return Err("bad-diffbits".into());
    }
    if header.time <= ctx.median_time_past {
        return Err("time-too-old".into());
    }
    if u64::from(header.time) > u64::from(ctx.now) + u64::from(MAX_FUTURE_BLOCK_TIME) {
        return Err("time-too-new".into());
    }
    let v = header.version.to_consensus();
    if v < 4 && ctx.height >= 1 {
        return Err(format!("bad-version(0x{:08x})", v as u32));
    }
    Ok(())
}

/// Core's `IsFinalTx` with the median-time-past cutoff (CSV is active on regtest).
pub fn is_final_tx(tx: &Transaction, height: u32, time_cutoff: u32) -> bool {
    let lock = tx.lock_time.to_consensus_u32();
    if lock == 0 {
        return true;
    }
    let limit = if lock < 500_000_000 {
        height
    } else {
        time_cutoff
    };
    if lock < limit {
        return true;
    }
    tx.input.iter().all(|i| i.sequence.0 == 0xffff_ffff)
}

/// Core's `GetWitnessCommitmentIndex`: the *last* coinbase output whose script is at least
/// 38 bytes and starts with the commitment header.
pub fn witness_commitment_index(coinbase: &Transaction) -> Option<usize> {
    coinbase.output.iter().rposition(|o| {
        let s = o.script_pubkey.as_bytes();
        s.len() >= 38 && s[..6] == WITNESS_COMMITMENT_HEADER
    })
}

/// True when any input of `tx` has a non-empty witness (Core's `HasWitness`).
pub fn has_witness(tx: &Transaction) -> bool {
    tx.input.iter().any(|i| !i.witness.is_empty())
}

/// Merkle root as Core computes it (`sha256d` pairs, last one duplicated), over raw hashes.
pub fn merkle_root_of(mut hashes: Vec<[u8; 32]>) -> [u8; 32] {
    if hashes.is_empty() {
        return [0u8; 32];
    }
    while hashes.len() > 1 {
        if hashes.len() % 2 == 1 {
            hashes.push(*hashes.last().expect("non-empty"));
        }
        hashes = hashes
            .chunks(2)
            .map(|p| {
                let mut buf = [0u8; 64];
                buf[..32].copy_from_slice(&p[0]);
                buf[32..].copy_from_slice(&p[1]);
                sha256d::Hash::hash(&buf).to_byte_array()
            })
            .collect();
    }
    hashes[0]
}

/// Core's `BlockWitnessMerkleRoot` computed by hand: wtxids, the coinbase's replaced by zero.
pub fn witness_merkle_root(txs: &[Transaction]) -> [u8; 32] {
    let hashes = txs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i == 0 {
                [0u8; 32]
            } else {
                t.compute_wtxid().to_byte_array()
            }
        })
        .collect();
    merkle_root_of(hashes)
}

/// `sha256d(witness_root ‖ reserved_value)`: the 32 bytes after the commitment header.
pub fn witness_commitment(witness_root: &[u8; 32], reserved_value: &[u8]) -> [u8; 32] {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(witness_root);
    buf.extend_from_slice(reserved_value);
    sha256d::Hash::hash(&buf).to_byte_array()
}

/// The commitment output script a template announces (`default_witness_commitment`) for
/// a block made of a coinbase plus `txs`, with an all-zero witness reserved value.
pub fn default_witness_commitment_script(txs: &[&Transaction]) -> Vec<u8> {
    let mut hashes = vec![[0u8; 32]];
    hashes.extend(txs.iter().map(|t| t.compute_wtxid().to_byte_array()));
    let root = merkle_root_of(hashes);
    let mut script = WITNESS_COMMITMENT_HEADER.to_vec();
    script.extend_from_slice(&witness_commitment(&root, &[0u8; 32]));
    script
}

/// Core's `UpdateUncommittedBlockStructures`, which `submitblock` applies before validating:
/// when the coinbase has a commitment output but no witness at all, the node itself adds the
/// all-zero 32-byte witness reserved value. Returns whether it did.
pub fn fill_witness_nonce(block: &mut Block) -> bool {
    let Some(cb) = block.txdata.first_mut() else {
        return false;
    };
    if witness_commitment_index(cb).is_some() && !has_witness(cb) && !cb.input.is_empty() {
        cb.input[0].witness = bitcoin::Witness::from_slice(&[[0u8; 32]]);
        return true;
    }
    false
}

/// Stage 3: Core's `ContextualCheckBlock` on regtest (BIP34, CSV and segwit all active).
/// Returns whether the block carried a valid witness commitment.
pub fn check_block_contextual(block: &Block, ctx: &ParentContext) -> Result<bool, &'static str> {
    for tx in &block.txdata {
        if !is_final_tx(tx, ctx.height, ctx.median_time_past) {
            return Err("bad-txns-nonfinal");
        }
    }
    let coinbase = &block.txdata[0];
    let expect = bip34_height_prefix(ctx.height);
    if !coinbase.input[0].script_sig.as_bytes().starts_with(&expect) {
        return Err("bad-cb-height");
    }
    let mut have_witness = false;
    if let Some(pos) = witness_commitment_index(coinbase) {
        let stack: Vec<&[u8]> = coinbase.input[0].witness.iter().collect();
        if stack.len() != 1 || stack[0].len() != 32 {
            return Err("bad-witness-nonce-size");
        }
        let root = witness_merkle_root(&block.txdata);
        let commitment = witness_commitment(&root, stack[0]);
        if coinbase.output[pos].script_pubkey.as_bytes()[6..38] != commitment {
            return Err("bad-witness-merkle-match");
        }
        // Independent second opinion from rust-bitcoin (it only looks when some tx has a
        // witness, which is always the case here since the coinbase has one).
        debug_assert!(block.check_witness_commitment());
        have_witness = true;
    }
    if !have_witness && block.txdata.iter().any(has_witness) {
        return Err("unexpected-witness");
    }
    if block.weight().to_wu() > MAX_BLOCK_WEIGHT {
        return Err("bad-blk-weight");
    }
    Ok(have_witness)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::blockdata::script::ScriptBuf;

    #[test]
    fn bip34_prefix_matches_core_push_int64() {
        assert_eq!(bip34_height_prefix(0), vec![0x00]);
        assert_eq!(bip34_height_prefix(1), vec![0x51]);
        assert_eq!(bip34_height_prefix(16), vec![0x60]);
        assert_eq!(bip34_height_prefix(17), vec![0x01, 0x11]);
        assert_eq!(bip34_height_prefix(127), vec![0x01, 0x7f]);
        assert_eq!(bip34_height_prefix(128), vec![0x02, 0x80, 0x00]);
        assert_eq!(bip34_height_prefix(255), vec![0x02, 0xff, 0x00]);
        assert_eq!(bip34_height_prefix(256), vec![0x02, 0x00, 0x01]);
        assert_eq!(bip34_height_prefix(32767), vec![0x02, 0xff, 0x7f]);
        assert_eq!(bip34_height_prefix(32768), vec![0x03, 0x00, 0x80, 0x00]);
        assert_eq!(bip34_height_prefix(840_000), vec![0x03, 0x40, 0xd1, 0x0c]);
        // rust-bitcoin's script builder agrees for every height (push_int uses OP_N too).
        for h in 0..70_000u32 {
            let s = ScriptBuf::builder().push_int(i64::from(h)).into_script();
            assert_eq!(s.as_bytes(), &bip34_height_prefix(h)[..], "height {h}");
        }
    }

    #[test]
    fn subsidy_halves_every_150_blocks() {
        assert_eq!(block_subsidy(0), 5_000_000_000);
        assert_eq!(block_subsidy(149), 5_000_000_000);
        assert_eq!(block_subsidy(150), 2_500_000_000);
        assert_eq!(block_subsidy(300), 1_250_000_000);
        assert_eq!(block_subsidy(150 * 64), 0);
    }

    #[test]
    fn pow_rejects_bad_bits_encodings() {
        let mut h = bitcoin::constants::genesis_block(bitcoin::Network::Regtest).header;
        assert!(check_proof_of_work(&h));
        h.bits = CompactTarget::from_consensus(0x2100_ffff); // easier than powLimit
        assert!(!check_proof_of_work(&h));
        h.bits = CompactTarget::from_consensus(0x20ff_ffff); // negative
        assert!(!check_proof_of_work(&h));
        h.bits = CompactTarget::from_consensus(0x0100_0000); // zero target
        assert!(!check_proof_of_work(&h));
    }
}
