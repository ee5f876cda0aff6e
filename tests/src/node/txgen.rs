//! Synthetic mempool transactions for templates.
//!
//! They are well-formed (Core's `CheckTransaction` passes, rust-bitcoin round-trips them) but
//! spend random outpoints and carry random signatures: the stand-in pretends those outpoints
//! are unspent coins until a block confirms the transaction. Segwit ones look like P2WPKH
//! spends (witness = a 72-byte DER-shaped signature and a 33-byte compressed key, paying
//! P2WPKH outputs); legacy ones look like P2PKH spends paying P2PKH outputs.

use bitcoin::absolute::LockTime;
use bitcoin::blockdata::opcodes::all::{OP_CHECKSIG, OP_DUP, OP_EQUALVERIFY, OP_HASH160};
use bitcoin::blockdata::script::{Builder, PushBytesBuf, ScriptBuf};
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use rand::Rng;

use super::validate::{legacy_sigops, WITNESS_SCALE_FACTOR};

/// A transaction waiting in the stand-in's mempool, with what a template says about it.
#[derive(Debug, Clone)]
pub struct MempoolTx {
    pub tx: Transaction,
    /// Declared fee in satoshis (the inputs' values are imaginary).
    pub fee: u64,
    /// Sigop cost as Core reports it in templates (legacy ×4 plus witness sigops).
    pub sigops: u64,
    /// BIP141 weight.
    pub weight: u64,
}

fn random_sig<R: Rng>(rng: &mut R) -> Vec<u8> {
    // DER: 30 44 02 20 <r:32> 02 20 <s:32>, then SIGHASH_ALL.
    let mut sig = vec![0x30, 0x44, 0x02, 0x20];
    let mut r = [0u8; 32];
    rng.fill(&mut r);
    r[0] &= 0x7f;
    r[0] |= 0x01;
    sig.extend_from_slice(&r);
    sig.extend_from_slice(&[0x02, 0x20]);
    let mut s = [0u8; 32];
    rng.fill(&mut s);
    s[0] &= 0x3f;
    s[0] |= 0x01;
    sig.extend_from_slice(&s);
    sig.push(0x01);
    sig
}

fn random_pubkey<R: Rng>(rng: &mut R) -> Vec<u8> {
    let mut pk = vec![if rng.gen::<bool>() { 0x02 } else { 0x03 }];
    let mut x = [0u8; 32];
    rng.fill(&mut x);
    pk.extend_from_slice(&x);
    pk
}

/// A random P2WPKH output script (`OP_0 <20 bytes>`).
pub fn random_p2wpkh<R: Rng>(rng: &mut R) -> ScriptBuf {
    let mut h = [0u8; 20];
    rng.fill(&mut h);
    let mut s = vec![0x00, 0x14];
    s.extend_from_slice(&h);
    ScriptBuf::from_bytes(s)
}

/// A random P2PKH output script.
pub fn random_p2pkh<R: Rng>(rng: &mut R) -> ScriptBuf {
    let mut h = [0u8; 20];
    rng.fill(&mut h);
    Builder::new()
        .push_opcode(OP_DUP)
        .push_opcode(OP_HASH160)
        .push_slice(h)
        .push_opcode(OP_EQUALVERIFY)
        .push_opcode(OP_CHECKSIG)
        .into_script()
}

fn random_outpoint<R: Rng>(rng: &mut R) -> OutPoint {
    let mut t = [0u8; 32];
    rng.fill(&mut t);
    OutPoint {
        txid: Txid::from_byte_array(t),
        vout: rng.gen_range(0..4),
    }
}

/// One synthetic transaction; `segwit` chooses a P2WPKH-style spend with a witness.
pub fn synthetic_tx<R: Rng>(rng: &mut R, segwit: bool) -> MempoolTx {
    let n_in = rng.gen_range(1..=2);
    let n_out = rng.gen_range(1..=2);
    let input = (0..n_in)
        .map(|_| {
            if segwit {
                TxIn {
                    previous_output: random_outpoint(rng),
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence(0xffff_fffd),
                    witness: Witness::from_slice(&[random_sig(rng), random_pubkey(rng)]),
                }
            } else {
                let sig = PushBytesBuf::try_from(random_sig(rng)).expect("72 bytes");
                let pk = PushBytesBuf::try_from(random_pubkey(rng)).expect("33 bytes");
                TxIn {
                    previous_output: random_outpoint(rng),
                    script_sig: Builder::new().push_slice(sig).push_slice(pk).into_script(),
                    sequence: Sequence(0xffff_fffe),
                    witness: Witness::new(),
                }
            }
        })
        .collect::<Vec<_>>();
    let output = (0..n_out)
        .map(|_| TxOut {
            value: Amount::from_sat(rng.gen_range(10_000..50_000_000)),
            script_pubkey: if segwit {
                random_p2wpkh(rng)
            } else {
                random_p2pkh(rng)
            },
        })
        .collect();
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input,
        output,
    };
    // Legacy sigops count ×4; each P2WPKH spend costs 1 witness sigop.
    let witness_sigops = if segwit { n_in as u64 } else { 0 };
    let sigops = legacy_sigops(&tx) * WITNESS_SCALE_FACTOR + witness_sigops;
    let weight = tx.weight().to_wu();
    MempoolTx {
        fee: rng.gen_range(500..20_000) * n_in as u64,
        sigops,
        weight,
        tx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::validate::check_transaction;
    use bitcoin::consensus::{deserialize, serialize};

    #[test]
    fn synthetic_txs_round_trip_and_pass_check_transaction() {
        let mut rng = rand::thread_rng();
        for i in 0..200 {
            let segwit = i % 2 == 0;
            let m = synthetic_tx(&mut rng, segwit);
            let bytes = serialize(&m.tx);
            let back: Transaction = deserialize(&bytes).expect("round trip");
            assert_eq!(back, m.tx);
            assert_eq!(serialize(&back), bytes);
            check_transaction(&m.tx).expect("sane");
            assert_eq!(
                m.tx.compute_txid().to_byte_array() != m.tx.compute_wtxid().to_byte_array(),
                segwit
            );
            if segwit {
                assert_eq!(m.sigops, m.tx.input.len() as u64);
            } else {
                assert_eq!(m.sigops, 4 * m.tx.output.len() as u64);
            }
            assert!(m.fee >= 500);
        }
    }
}
