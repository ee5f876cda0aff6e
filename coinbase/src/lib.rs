//! The pool's coinbase transaction and merkle branch for a Stratum job, from a block template.
//!
//! Its own crate (only `bitcoin` below it) so the fuzzer links it without the whole pool
//! (axum, SQLite, ...); blgv-cloud re-exports it as `blgv_cloud::coinbase`.
//!
//! The coinbase transaction, split around the extranonce for Stratum.
//!
//! Layout (legacy serialization, as Stratum hashes it):
//! `version ‖ 1 input (null prevout) ‖ scriptSig = BIP34 height ‖ extranonce1 ‖ extranonce2 ‖ tag
//! ‖ sequence ‖ outputs (payouts, then the witness commitment) ‖ locktime`.
//! coinb1 ends right after the height push; coinb2 starts with the tag. For a segwit block the
//! coinbase also carries the 32-byte witness reserved value (all zeros) that the commitment
//! assumes.

use bitcoin::consensus::encode::VarInt;
use bitcoin::consensus::Encodable;
use bitcoin::hashes::{sha256d, Hash as _};
use bitcoin::ScriptBuf;

const COINBASE_VERSION: i32 = 2;

/// The scriptSig prefix BIP34 requires: exactly what Bitcoin Core's `CScript() << nHeight`
/// produces — OP_0 for 0, OP_1..OP_16 for 1–16, else a minimal little-endian number push.
pub fn bip34_height_push(height: u32) -> Vec<u8> {
    match height {
        0 => vec![0x00],
        1..=16 => vec![0x50 + height as u8],
        _ => {
            let mut n = height.to_le_bytes().to_vec();
            while n.last() == Some(&0) {
                n.pop();
            }
            if n.last().is_some_and(|b| b & 0x80 != 0) {
                n.push(0); // keep the number positive
            }
            let mut v = vec![n.len() as u8];
            v.extend_from_slice(&n);
            v
        }
    }
}

fn var_int(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    VarInt(n as u64)
        .consensus_encode(&mut v)
        .expect("writing to a Vec cannot fail");
    v
}

#[derive(Debug, Clone, PartialEq)]
pub struct CoinbaseParts {
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
}

/// Build coinb1/coinb2 for `extranonce_len` bytes of extranonce (extranonce1 + extranonce2).
pub fn build(
    height: u32,
    extranonce_len: usize,
    tag: &[u8],
    outputs: &[(u64, ScriptBuf)],
    witness_commitment: Option<&ScriptBuf>,
) -> CoinbaseParts {
    let height_push = bip34_height_push(height);
    let script_len = height_push.len() + extranonce_len + tag.len();
    let mut coinb1 = Vec::with_capacity(64);
    coinb1.extend_from_slice(&COINBASE_VERSION.to_le_bytes());
    coinb1.push(1); // one input
    coinb1.extend_from_slice(&[0u8; 32]);
    coinb1.extend_from_slice(&u32::MAX.to_le_bytes()); // null prevout index
    coinb1.extend_from_slice(&var_int(script_len));
    coinb1.extend_from_slice(&height_push);

    let mut coinb2 = Vec::with_capacity(128);
    coinb2.extend_from_slice(tag);
    coinb2.extend_from_slice(&u32::MAX.to_le_bytes()); // sequence
    let count = outputs.len() + witness_commitment.is_some() as usize;
    coinb2.extend_from_slice(&var_int(count));
    for (value, script) in outputs
        .iter()
        .map(|(v, s)| (*v, s))
        .chain(witness_commitment.map(|s| (0u64, s)))
    {
        coinb2.extend_from_slice(&value.to_le_bytes());
        coinb2.extend_from_slice(&var_int(script.len()));
        coinb2.extend_from_slice(script.as_bytes());
    }
    coinb2.extend_from_slice(&0u32.to_le_bytes()); // locktime
    CoinbaseParts { coinb1, coinb2 }
}

/// Turn the legacy coinbase into its witness serialization, adding the witness reserved value
/// (one 32-byte zero item) that BIP141's commitment is computed with.
pub fn with_witness_reserved_value(legacy: &[u8]) -> Vec<u8> {
    let (version, rest) = legacy.split_at(4);
    let (body, locktime) = rest.split_at(rest.len() - 4);
    let mut v = Vec::with_capacity(legacy.len() + 36);
    v.extend_from_slice(version);
    v.extend_from_slice(&[0x00, 0x01]); // segwit marker and flag
    v.extend_from_slice(body);
    v.push(1); // one stack item for the one input
    v.push(32);
    v.extend_from_slice(&[0u8; 32]);
    v.extend_from_slice(locktime);
    v
}

/// Stratum's merkle branch: the hashes a miner folds with the coinbase txid to get the root.
pub fn merkle_branch(txids: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let mut branch = Vec::new();
    let mut level = txids.to_vec();
    while !level.is_empty() {
        branch.push(level[0]);
        // The next level pairs up what follows the coinbase's partner; an odd one out is hashed
        // with itself, as Bitcoin's merkle tree does.
        level = level[1..]
            .chunks(2)
            .map(|pair| {
                let mut buf = [0u8; 64];
                buf[..32].copy_from_slice(&pair[0]);
                buf[32..].copy_from_slice(pair.get(1).unwrap_or(&pair[0]));
                sha256d::Hash::hash(&buf).to_byte_array()
            })
            .collect();
    }
    branch
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::blockdata::script::Builder;
    use bitcoin::Transaction;

    #[test]
    fn bip34_pushes_match_core_for_every_boundary() {
        for h in [
            0u32, 1, 16, 17, 127, 128, 255, 256, 32767, 32768, 65535, 65536, 702861, 8388607,
            8388608,
        ] {
            // Core: CScript() << nHeight; rust-bitcoin's push_int is the same encoding.
            let core = Builder::new().push_int(h as i64).into_script();
            assert_eq!(bip34_height_push(h), core.as_bytes(), "height {h}");
        }
        assert_eq!(bip34_height_push(1), vec![0x51]);
        assert_eq!(bip34_height_push(16), vec![0x60]);
        assert_eq!(bip34_height_push(17), vec![0x01, 0x11]);
        assert_eq!(bip34_height_push(128), vec![0x02, 0x80, 0x00]);
        assert_eq!(bip34_height_push(702861), vec![0x03, 0x8d, 0xb9, 0x0a]);
    }

    #[test]
    fn coinbase_parses_as_a_transaction_with_the_right_fields() {
        let payout = ScriptBuf::from_hex("0014751e76e8199196d454941c45d1b3a323f1433bd6").unwrap();
        let commitment = ScriptBuf::from_hex(&format!("6a24aa21a9ed{}", "11".repeat(32))).unwrap();
        let parts = build(
            702861,
            12,
            b"/BLGV/",
            &[(625_000_000, payout.clone())],
            Some(&commitment),
        );
        let mut bytes = parts.coinb1.clone();
        bytes.extend_from_slice(&[0xab; 12]);
        bytes.extend_from_slice(&parts.coinb2);
        let tx: Transaction = bitcoin::consensus::deserialize(&bytes).unwrap();
        assert!(tx.is_coinbase());
        let script = tx.input[0].script_sig.as_bytes();
        assert_eq!(&script[..4], &[0x03, 0x8d, 0xb9, 0x0a]);
        assert_eq!(&script[4..16], &[0xab; 12]);
        assert_eq!(&script[16..], b"/BLGV/");
        assert_eq!(tx.output.len(), 2);
        assert_eq!(tx.output[0].value.to_sat(), 625_000_000);
        assert_eq!(tx.output[0].script_pubkey, payout);
        assert_eq!(tx.output[1].script_pubkey, commitment);

        let witness: Transaction =
            bitcoin::consensus::deserialize(&with_witness_reserved_value(&bytes)).unwrap();
        assert_eq!(
            witness.compute_txid(),
            tx.compute_txid(),
            "the witness does not change the txid"
        );
        assert_eq!(witness.input[0].witness.to_vec(), vec![vec![0u8; 32]]);
    }

    #[test]
    fn merkle_branch_folds_to_bitcoins_merkle_root() {
        for n in 0..9usize {
            let coinbase = [0xcc; 32];
            let txids: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 + 1; 32]).collect();
            let branch = merkle_branch(&txids);
            let mut root = coinbase;
            for b in &branch {
                let mut buf = [0u8; 64];
                buf[..32].copy_from_slice(&root);
                buf[32..].copy_from_slice(b);
                root = sha256d::Hash::hash(&buf).to_byte_array();
            }
            let all = std::iter::once(coinbase)
                .chain(txids.iter().copied())
                .map(bitcoin::Txid::from_byte_array);
            let expected = bitcoin::merkle_tree::calculate_root(all).unwrap();
            assert_eq!(root, expected.to_byte_array(), "{n} transactions");
        }
    }
}
