//! Credits through confirmations and orphaning, and payout batches as PSBTs.

mod payout_support;

use bitcoin::ecdsa;
use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::Message;
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{Amount, Network, OutPoint, ScriptBuf, Transaction, Txid, Witness};
use blgv_cloud::ledger::BlockStatus;
use blgv_cloud::payout::{
    BatchStatus, InputKind, PayoutConfig, PayoutError, PayoutLedger, PoolUtxo, Sats,
};
use payout_support::{p2pkh_address, p2tr_address, p2wpkh_address, secp, secret, Chain};
use std::str::FromStr;

/// Regtest settings: no fee, X = 1, 3 confirmations, min payout 10 000, 2 sat/vB;
/// alice is paid to a P2WPKH address, bob to a P2TR one, carol has no address.
fn config_text() -> String {
    format!(
        r#"
fee_percent = "0"
pplns_window_x = 1.0
confirmations = 3
min_payout_sats = 10000
change_address = "{change}"
fee_rate_sat_per_vb = 2.0

[[accounts]]
name = "alice"
address = "{alice}"

[[accounts]]
name = "bob"
address = "{bob}"
"#,
        change = p2wpkh_address(9, Network::Regtest),
        alice = p2wpkh_address(1, Network::Regtest),
        bob = p2tr_address(2, Network::Regtest),
    )
}

fn open(chain: &Chain) -> PayoutLedger {
    let config: PayoutConfig = toml::from_str(&config_text()).unwrap();
    chain.open(config.resolve(Network::Regtest).unwrap())
}

fn pool_utxo(byte: u8, value: u64) -> PoolUtxo {
    PoolUtxo {
        outpoint: OutPoint::new(Txid::from_byte_array([byte; 32]), 1),
        value: Sats(value),
        script_pubkey: p2wpkh_address(8, Network::Regtest).script_pubkey(),
        kind: InputKind::P2wpkh,
    }
}

/// alice and bob each fill half of a window at height 100: reward 1 000 000 → 500 000 each.
fn one_block(chain: &mut Chain) -> String {
    chain.share("alice", 0.5);
    chain.block("bob", 0.5, 1_000_000)
}

#[test]
fn credits_mature_after_the_configured_confirmations() {
    let mut chain = Chain::new();
    let mut payout = open(&chain);
    let hash = one_block(&mut chain);
    payout.credit_new_blocks().unwrap();
    // Block at height 100. Tip 101: 2 confirmations (< 3) → immature.
    payout.update_confirmations(101).unwrap();
    let b = payout.balance("alice").unwrap();
    assert_eq!((b.immature, b.mature), (Sats(500_000), Sats(0)));
    // Tip 102: 3 confirmations → mature.
    let r = payout.update_confirmations(102).unwrap();
    assert_eq!((r.matured_blocks, r.matured_credits), (1, 2));
    let b = payout.balance("alice").unwrap();
    assert_eq!((b.immature, b.mature), (Sats(0), Sats(500_000)));
    let e = payout.earnings("alice", 10, None).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].block_hash.as_deref(), e[0].height, e[0].amount),
        (Some(hash.as_str()), 100, Sats(500_000))
    );
}

#[test]
fn confirmations_default_to_100() {
    let mut chain = Chain::new();
    let mut payout = chain.open(PayoutConfig::default().resolve(Network::Bitcoin).unwrap());
    assert_eq!(payout.settings().confirmations, 100);
    one_block(&mut chain);
    payout.credit_new_blocks().unwrap();
    payout.update_confirmations(198).unwrap(); // 99 confirmations
    assert_eq!(payout.balance("alice").unwrap().mature, Sats(0));
    payout.update_confirmations(199).unwrap(); // 100
    assert!(payout.balance("alice").unwrap().mature > Sats(0));
}

#[test]
fn orphaned_block_credits_are_reversed() {
    let mut chain = Chain::new();
    let mut payout = open(&chain);
    let hash = one_block(&mut chain);
    payout.process(100).unwrap();
    assert_eq!(payout.balance("bob").unwrap().immature, Sats(500_000));
    // The coordinator marks it orphaned in the ledger: the next pass reverses it.
    chain.set_status(&hash, BlockStatus::Orphaned);
    let r = payout.process(105).unwrap();
    assert_eq!(r.orphaned, vec![hash.clone()]);
    for who in ["alice", "bob"] {
        let b = payout.balance(who).unwrap();
        assert_eq!((b.immature, b.mature), (Sats(0), Sats(0)), "{who}");
    }
    let e = payout.earnings("bob", 10, None).unwrap();
    assert_eq!(e[0].status, blgv_cloud::payout::CreditStatus::Orphaned);
    // Idempotent, and an orphaned block is never credited again.
    assert_eq!(payout.orphan_block(&hash).unwrap(), Sats(0));
    assert!(payout.credit_block(&hash).unwrap().is_none());

    // A mature block orphaned directly through the API is reversed too.
    let hash2 = chain.block("alice", 1.0, 40_000);
    payout.process(200).unwrap();
    assert_eq!(payout.balance("alice").unwrap().mature, Sats(40_000));
    assert_eq!(payout.orphan_block(&hash2).unwrap(), Sats(40_000));
    assert_eq!(payout.balance("alice").unwrap().mature, Sats(0));
}

/// Sign every (P2WPKH, key 8) input of the batch for real, as the pool wallet would.
fn sign(psbt: &Psbt) -> Transaction {
    let secp = secp();
    let sk = secret(8);
    let pk = bitcoin::CompressedPublicKey(sk.public_key(&secp));
    let mut tx = psbt.unsigned_tx.clone();
    let mut witnesses = Vec::new();
    {
        let mut cache = SighashCache::new(&tx);
        for (i, input) in psbt.inputs.iter().enumerate() {
            let utxo = input
                .witness_utxo
                .as_ref()
                .expect("segwit input has witness_utxo");
            let sighash = cache
                .p2wpkh_signature_hash(i, &utxo.script_pubkey, utxo.value, EcdsaSighashType::All)
                .unwrap();
            let msg = Message::from_digest(sighash.to_byte_array());
            let signature = ecdsa::Signature {
                signature: secp.sign_ecdsa(&msg, &sk),
                sighash_type: EcdsaSighashType::All,
            };
            witnesses.push(Witness::p2wpkh(&signature, &pk.0));
        }
    }
    for (input, w) in tx.input.iter_mut().zip(witnesses) {
        input.witness = w;
    }
    tx
}

#[test]
fn payout_batch_psbt_pays_balances_and_debits_only_when_sent() {
    let mut chain = Chain::new();
    let mut payout = open(&chain);
    one_block(&mut chain);
    // carol (no address) earns too: 40 000 from a second block found alone.
    let carol_block = chain.block("carol", 1.0, 40_000);
    // dave earns 5 000, below the threshold.
    chain.block("dave", 1.0, 5_000);
    payout.process(101).unwrap(); // 2 confirmations
    assert_eq!(payout.balance("carol").unwrap().immature, Sats(40_000));
    payout.process(110).unwrap();
    assert!(payout.credit_block(&carol_block).unwrap().is_none());

    let utxos = [pool_utxo(0xaa, 300_000), pool_utxo(0xbb, 2_000_000)];
    let batch = payout.create_payout_batch(&utxos).unwrap();
    assert_eq!(batch.status, BatchStatus::Pending);
    let psbt = Psbt::deserialize(&batch.psbt().unwrap().serialize()).unwrap();
    let tx = &psbt.unsigned_tx;

    // Inputs: the largest coin alone covers 1 000 000 + fee.
    assert_eq!(
        tx.input
            .iter()
            .map(|i| i.previous_output)
            .collect::<Vec<_>>(),
        vec![utxos[1].outpoint]
    );
    assert_eq!(
        psbt.inputs[0].witness_utxo.as_ref().unwrap().value,
        Amount::from_sat(2_000_000)
    );
    // Outputs: alice (P2WPKH) 500 000, bob (P2TR) 500 000, change (P2WPKH).
    // Size: 40 (version, locktime, counts) + 2 (marker, flag) + 272 (P2WPKH input)
    //   + 124 (P2WPKH out) + 172 (P2TR out) + 124 (P2WPKH change) = 734 WU = 183.5 → 184 vB.
    // Fee at 2 sat/vB: 368. Change: 2 000 000 − 1 000 000 − 368 = 999 632.
    let expected = vec![
        (p2wpkh_address(1, Network::Regtest).script_pubkey(), 500_000),
        (p2tr_address(2, Network::Regtest).script_pubkey(), 500_000),
        (p2wpkh_address(9, Network::Regtest).script_pubkey(), 999_632),
    ];
    let outputs: Vec<(ScriptBuf, u64)> = tx
        .output
        .iter()
        .map(|o| (o.script_pubkey.clone(), o.value.to_sat()))
        .collect();
    assert_eq!(outputs, expected);
    let out_sum: u64 = outputs.iter().map(|o| o.1).sum();
    assert_eq!(2_000_000 - out_sum, 368);
    assert_eq!((batch.fee, batch.estimated_vsize), (Sats(368), 184));
    assert_eq!(batch.change, Some((2, Sats(999_632))));
    assert_eq!(
        batch
            .items
            .iter()
            .map(|i| (i.account.as_str(), i.amount.0, i.vout))
            .collect::<Vec<_>>(),
        vec![("alice", 500_000, 0), ("bob", 500_000, 1)]
    );

    // The estimate holds for the real signed transaction.
    let signed = sign(&psbt);
    assert!(signed.vsize() as u64 <= batch.estimated_vsize);
    assert!(batch.estimated_vsize - signed.vsize() as u64 <= 1);

    // Reserved, not debited.
    let a = payout.balance("alice").unwrap();
    assert_eq!(
        (a.mature, a.pending, a.paid),
        (Sats(0), Sats(500_000), Sats(0))
    );
    assert_eq!(payout.pending_batches().unwrap().len(), 1);
    // Nothing else to pay while reserved: carol has no address, dave is under the threshold.
    match payout.create_payout_batch(&utxos) {
        Err(PayoutError::NothingToPay {
            threshold,
            largest,
            without_address,
        }) => {
            assert_eq!(threshold, Sats(10_000));
            assert_eq!(largest, Some(("carol".to_string(), Sats(40_000))));
            assert_eq!(without_address, vec!["carol".to_string()]);
        }
        other => panic!("{other:?}"),
    }

    // A transaction that is not the batch's is refused.
    let mut wrong = signed.clone();
    wrong.output[0].value = Amount::from_sat(600_000);
    let hex = bitcoin::consensus::encode::serialize_hex(&wrong);
    assert!(matches!(
        payout.record_sent(batch.id, &hex),
        Err(PayoutError::TxMismatch { .. })
    ));
    let hex = bitcoin::consensus::encode::serialize_hex(&signed);
    let txid = payout.record_sent(batch.id, &hex).unwrap();
    assert_eq!(txid, signed.compute_txid());
    assert_eq!(txid.to_string(), batch.unsigned_txid);
    let a = payout.balance("alice").unwrap();
    assert_eq!(
        (a.mature, a.pending, a.paid),
        (Sats(0), Sats(0), Sats(500_000))
    );
    assert!(payout.pending_batches().unwrap().is_empty());
    assert!(matches!(
        payout.record_sent(batch.id, &hex),
        Err(PayoutError::BatchNotPending { .. })
    ));
    assert!(matches!(
        payout.cancel_batch(batch.id),
        Err(PayoutError::BatchNotPending { .. })
    ));

    // The spent coin is gone; the change is spendable by the next batch.
    let spendable = payout.spendable_utxos(&utxos).unwrap();
    assert_eq!(
        spendable
            .iter()
            .map(|u| (u.outpoint, u.value))
            .collect::<Vec<_>>(),
        vec![
            (utxos[0].outpoint, Sats(300_000)),
            (OutPoint::new(txid, 2), Sats(999_632))
        ]
    );
}

#[test]
fn cancel_releases_balances_and_coins() {
    let mut chain = Chain::new();
    let mut payout = open(&chain);
    one_block(&mut chain);
    payout.process(102).unwrap();
    let utxos = [pool_utxo(0xaa, 1_200_000)];
    let first = payout.create_payout_batch(&utxos).unwrap();
    // Its only coin is reserved.
    assert!(payout.spendable_utxos(&utxos).unwrap().is_empty());
    payout.cancel_batch(first.id).unwrap();
    assert_eq!(
        payout.batch(first.id).unwrap().status,
        BatchStatus::Cancelled
    );
    let a = payout.balance("alice").unwrap();
    assert_eq!(
        (a.mature, a.pending, a.paid),
        (Sats(500_000), Sats(0), Sats(0))
    );
    // The coin and the balances are available again: the same payouts can be rebuilt.
    let second = payout.create_payout_batch(&utxos).unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(second.items, first.items);
    assert_eq!(second.unsigned_txid, first.unsigned_txid);
    // Record by txid (all inputs are native segwit, so the txid is known before signing).
    let wrong = "11".repeat(32);
    assert!(matches!(
        payout.record_sent(second.id, &wrong),
        Err(PayoutError::TxMismatch { .. })
    ));
    assert!(matches!(
        payout.record_sent(second.id, "not a tx"),
        Err(PayoutError::BadSentProof { .. })
    ));
    payout
        .record_sent(second.id, &second.unsigned_txid)
        .unwrap();
    assert_eq!(payout.balance("bob").unwrap().paid, Sats(500_000));
    assert!(matches!(
        payout.cancel_batch(999),
        Err(PayoutError::BatchNotFound(999))
    ));
}

#[test]
fn batch_errors_say_what_to_fix() {
    let mut chain = Chain::new();
    let mut payout = open(&chain);
    // Nothing mature yet.
    let e = payout
        .create_payout_batch(&[pool_utxo(1, 1_000_000)])
        .unwrap_err();
    assert!(matches!(e, PayoutError::NothingToPay { .. }));
    assert!(e.to_string().contains("payout.min_payout_sats"), "{e}");
    one_block(&mut chain);
    payout.process(102).unwrap();
    // Not enough money: 1 000 000 to pay from 1 000 100.
    let e = payout
        .create_payout_batch(&[pool_utxo(1, 600_000), pool_utxo(2, 400_100)])
        .unwrap_err();
    match &e {
        PayoutError::InsufficientFunds {
            available,
            coins,
            needed,
            payouts,
        } => {
            assert_eq!((*available, *coins, *payouts), (Sats(1_000_100), 2, 2));
            // 2 P2WPKH inputs: 40 + 2 + 2·272 + 124 + 172 + 124 = 1006 WU → 252 vB → 504 sat.
            assert_eq!(*needed, Sats(1_000_504));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("payout.utxos"), "{e}");
    // No change address.
    let mut no_change = payout.settings().clone();
    no_change.change_script = None;
    let mut p2 = PayoutLedger::open(&chain.path, no_change).unwrap();
    let e = p2
        .create_payout_batch(&[pool_utxo(1, 5_000_000)])
        .unwrap_err();
    assert!(matches!(e, PayoutError::NoChangeAddress));
    assert!(e.to_string().contains("payout.change_address"));
    // An address of another network in the database (the pool moved networks).
    let mut wrong_net = payout.settings().clone();
    wrong_net.accounts[0].address = Some(p2wpkh_address(1, Network::Bitcoin).to_string());
    let mut p3 = PayoutLedger::open(&chain.path, wrong_net).unwrap();
    let e = p3
        .create_payout_batch(&[pool_utxo(1, 5_000_000)])
        .unwrap_err();
    match &e {
        PayoutError::InvalidAddress { account, .. } => assert_eq!(account, "alice"),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("regtest"), "{e}");
}

#[test]
fn no_change_when_it_would_be_dust_and_legacy_inputs_are_estimated() {
    let mut chain = Chain::new();
    let mut payout = open(&chain);
    one_block(&mut chain);
    payout.process(102).unwrap();
    // One P2PKH coin, no witness at all: 40 + 592 + 124 + 172 = 928 WU = 232 vB → 464 sat
    // without change; with change (+124 WU = 1052 → 263 vB → 526 sat) the change would be
    // 1 000 700 − 1 000 000 − 526 = 174 < 294 (P2WPKH dust): no change, fee = 700.
    let legacy = PoolUtxo {
        outpoint: OutPoint::new(Txid::from_byte_array([7; 32]), 0),
        value: Sats(1_000_700),
        script_pubkey: p2pkh_address(8, Network::Regtest).script_pubkey(),
        kind: InputKind::P2pkh,
    };
    let batch = payout.create_payout_batch(&[legacy]).unwrap();
    assert_eq!(
        (batch.change, batch.fee, batch.estimated_vsize),
        (None, Sats(700), 232)
    );
    let psbt = batch.psbt().unwrap();
    assert_eq!(psbt.unsigned_tx.output.len(), 2);
    assert!(psbt.inputs[0].witness_utxo.is_none());
    // The txid of a legacy spend changes when signed, so any txid is accepted.
    let txid = Txid::from_str(&"ab".repeat(32)).unwrap();
    assert_eq!(
        payout.record_sent(batch.id, &txid.to_string()).unwrap(),
        txid
    );
}

#[test]
fn accounts_named_by_an_address_are_paid_to_it() {
    let mut chain = Chain::new();
    let mut payout = open(&chain);
    let miner = p2wpkh_address(5, Network::Regtest).to_string();
    chain.block(&format!("{miner}.rig1"), 1.0, 50_000);
    payout.process(200).unwrap();
    let b = payout.balance(&miner).unwrap();
    assert_eq!(
        (b.address.as_deref(), b.mature),
        (Some(miner.as_str()), Sats(50_000))
    );
    let batch = payout
        .create_payout_batch(&[pool_utxo(3, 1_000_000)])
        .unwrap();
    assert_eq!(batch.items[0].address, miner);
}

#[test]
fn delayed_pps_credits_mature_after_the_delay() {
    // pps_delay_blocks = 2: shares at height 100 are spendable once tip − 100 + 1 ≥ 2.
    let mut chain = Chain::new();
    let config: PayoutConfig = toml::from_str(&format!(
        "pps_delay_blocks = 2\ndefault_scheme = \"pps\"\n{}",
        config_text()
    ))
    .unwrap();
    let mut payout = chain.open(config.resolve(Network::Regtest).unwrap());
    // d = 1, D = 1000, 50 BTC, no fee: 5 000 000 sat.
    chain.network_difficulty = 1000.0;
    chain.share("alice", 1.0);
    payout.process(100).unwrap();
    let b = payout.balance("alice").unwrap();
    assert_eq!((b.immature, b.mature), (Sats(5_000_000), Sats(0)));
    payout.process(101).unwrap();
    let b = payout.balance("alice").unwrap();
    assert_eq!((b.immature, b.mature), (Sats(0), Sats(5_000_000)));
}
