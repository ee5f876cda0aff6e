//! A share that meets the network target becomes a block that rust-bitcoin accepts: merkle root,
//! BIP141 witness commitment, BIP34 height, proof of work, coinbase value.

use bitcoin::blockdata::transaction::{OutPoint, TxIn, TxOut};
use bitcoin::hashes::Hash;
use bitcoin::{absolute, transaction, Amount, Block, ScriptBuf, Sequence, Transaction, Witness};
use blgv_cloud::job::{CoinbasePolicy, PoolJob};
use blgv_cloud::template::PreparedTemplate;
use blgv_stratum::{check_share, Extranonce, ShareRules, Submit};
use std::sync::Arc;

fn witness_tx(seed: u8) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: bitcoin::Txid::from_byte_array([seed; 32]),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[vec![seed; 71], vec![2; 33]]),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(10_000 * seed as u64),
            script_pubkey: ScriptBuf::from_hex("0014751e76e8199196d454941c45d1b3a323f1433bd6")
                .unwrap(),
        }],
    }
}

fn template(height: u32, txs: &[Transaction], segwit: bool) -> PreparedTemplate {
    let witness_commitment = segwit.then(|| {
        let wtxids = std::iter::once(bitcoin::Wtxid::all_zeros())
            .chain(txs.iter().map(|t| t.compute_wtxid()));
        let root = bitcoin::WitnessMerkleNode::from_byte_array(
            bitcoin::merkle_tree::calculate_root(wtxids.map(|w| w.to_raw_hash()))
                .map(|h: bitcoin::hashes::sha256d::Hash| h.to_byte_array())
                .unwrap(),
        );
        let commitment = Block::compute_witness_commitment(&root, &[0u8; 32]);
        ScriptBuf::from_hex(&format!(
            "6a24aa21a9ed{}",
            hex::encode(commitment.to_byte_array())
        ))
        .unwrap()
    });
    let mut tx_data = Vec::new();
    for t in txs {
        tx_data.extend(bitcoin::consensus::serialize(t));
    }
    PreparedTemplate {
        height,
        version: 0x2000_0000,
        prevhash: [7; 32],
        prevhash_display: hex::encode([7; 32]),
        nbits: 0x207f_ffff,
        curtime: 1_700_000_000,
        mintime: 1_699_999_000,
        coinbase_value: 5_000_000_000 + 30_000,
        txids: txs
            .iter()
            .map(|t| t.compute_txid().to_byte_array())
            .collect(),
        tx_data,
        witness_commitment,
        longpoll_id: None,
    }
}

/// Grind a share that meets the network target and assemble its block.
fn mine(t: PreparedTemplate) -> (Block, PoolJob) {
    let payout = ScriptBuf::from_hex("0014751e76e8199196d454941c45d1b3a323f1433bd6").unwrap();
    let policy = CoinbasePolicy {
        tag: b"/BLGV-test/".to_vec(),
        payout_script: payout,
        extranonce_len: 12,
    };
    let job = PoolJob::build("1".into(), Arc::new(t), true, 1_700_000_000, &policy);
    let en1 = [0xde, 0xad, 0xbe, 0xef];
    let rules = ShareRules {
        version_mask: 0,
        ntime_min: job.job.ntime,
        ntime_max: job.job.ntime,
        extranonce2_size: 8,
    };
    for nonce in 0u32.. {
        let submit = Submit {
            worker: "w".into(),
            job_id: "1".into(),
            extranonce2: Extranonce::from_bytes(vec![0, 0, 0, 0, 0, 0, 0, 9]),
            ntime: job.job.ntime,
            nonce,
            version_bits: None,
        };
        if let Ok(share) = check_share(&job.job, &en1, &submit, &rules, &job.network_target) {
            let root = job.job.merkle_root(share.coinbase_txid);
            let header = job
                .job
                .header(&root, share.version, submit.ntime, submit.nonce);
            let bytes = job.block(&header, &en1, submit.extranonce2.as_bytes());
            let block: Block = bitcoin::consensus::deserialize(&bytes).expect("block decodes");
            assert_eq!(block.block_hash().to_string(), share.hash.to_string());
            return (block, job);
        }
    }
    unreachable!()
}

#[test]
fn segwit_block_with_transactions_is_valid() {
    let txs: Vec<Transaction> = (1..=3).map(witness_tx).collect();
    let (block, job) = mine(template(300, &txs, true));
    assert!(block.check_merkle_root(), "merkle root");
    assert!(
        block.check_witness_commitment(),
        "BIP141 witness commitment"
    );
    assert_eq!(block.bip34_block_height().unwrap(), 300);
    let target = block.header.target();
    assert!(block.header.validate_pow(target).is_ok(), "proof of work");
    assert_eq!(block.txdata.len(), 4);
    let paid: u64 = block.txdata[0]
        .output
        .iter()
        .map(|o| o.value.to_sat())
        .sum();
    assert_eq!(
        paid, job.template.coinbase_value,
        "coinbase pays exactly the template's value"
    );
    assert_eq!(
        block.txdata[1..]
            .iter()
            .map(|t| t.compute_txid())
            .collect::<Vec<_>>(),
        txs.iter().map(|t| t.compute_txid()).collect::<Vec<_>>()
    );
}

#[test]
fn empty_and_legacy_blocks_are_valid_at_low_heights() {
    for height in [1u32, 16, 17] {
        let (block, _) = mine(template(height, &[], false));
        assert!(block.check_merkle_root());
        assert!(
            block.txdata[0].input[0].witness.is_empty(),
            "no witness without a commitment"
        );
        // Core's BIP34 check: the scriptSig starts with `CScript() << nHeight` (OP_1..OP_16 for
        // 1–16). rust-bitcoin's script builder encodes integers the same way.
        let expected = bitcoin::blockdata::script::Builder::new()
            .push_int(height as i64)
            .into_script();
        assert!(
            block.txdata[0].input[0]
                .script_sig
                .as_bytes()
                .starts_with(expected.as_bytes()),
            "height {height}"
        );
        if height > 16 {
            assert_eq!(block.bip34_block_height().unwrap(), height as u64);
        }
    }
}
