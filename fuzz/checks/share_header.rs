//! Coinbase → merkle root → header assembly and the share check, on arbitrary job fields,
//! extranonces, ntime, nonce and version bits; and the pool's coinbase builder and merkle
//! branch.
//!
//! Shared by the `share_header` fuzz target and the stable corpus replay
//! (`tests/tests/fuzz_corpus.rs`). The input is read as a sequence of fields (see [`Input`]);
//! a short input reads as zeros.

use bitcoin::consensus::Decodable;
use blgv_coinbase as coinbase;
use blgv_stratum::{
    check_share, hash_difficulty, sha256d, Difficulty, Extranonce, Job, ShareHash, ShareRejection,
    ShareRules, Submit, Target,
};
use sha2::{Digest, Sha256};

/// Reads fields off the input, giving zeros when it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
    fn hash(&mut self) -> [u8; 32] {
        self.bytes(32).try_into().unwrap()
    }
}

/// SHA256d written out with the sha2 crate, independent of the stratum crate's helpers.
fn reference_sha256d(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

pub fn check(data: &[u8]) {
    let mut input = Input(data);
    check_share_path(&mut input);
    check_pool_coinbase(&mut input);
}

fn check_share_path(input: &mut Input<'_>) {
    let prevhash = input.hash();
    let version = input.u32();
    let nbits = input.u32();
    let job_ntime = input.u32();
    let coinb1_len = usize::from(input.u8());
    let coinb1 = input.bytes(coinb1_len);
    let coinb2_len = usize::from(input.u8());
    let coinb2 = input.bytes(coinb2_len);
    let branch_len = usize::from(input.u8() % 16);
    let branch: Vec<[u8; 32]> = (0..branch_len).map(|_| input.hash()).collect();
    let en1_len = usize::from(input.u8() % 16);
    let en1 = input.bytes(en1_len);
    let en2_len = usize::from(input.u8() % 16);
    let en2 = input.bytes(en2_len);
    let ntime = input.u32();
    let nonce = input.u32();
    let version_bits = (input.u8() & 1 == 1).then(|| input.u32());
    let rules = ShareRules {
        version_mask: input.u32(),
        ntime_min: input.u32(),
        ntime_max: input.u32(),
        extranonce2_size: usize::from(input.u8() % 16),
    };
    // The share target: from a difficulty, or a compact nBits, or the easiest one.
    let target = match input.u8() % 3 {
        0 => Difficulty::new(f64::from_bits(input.u64()))
            .map(Difficulty::to_target)
            .unwrap_or(Target::MAX),
        1 => Target::from_compact(input.u32()).unwrap_or(Target::MAX),
        _ => Target::MAX,
    };

    let job = Job::new(
        "j".into(),
        prevhash,
        coinb1.clone(),
        coinb2.clone(),
        branch.clone(),
        version,
        nbits,
        job_ntime,
        false,
    );

    // Coinbase is the plain concatenation; its txid is SHA256d of it.
    let mut cb = coinb1.clone();
    cb.extend_from_slice(&en1);
    cb.extend_from_slice(&en2);
    cb.extend_from_slice(&coinb2);
    assert_eq!(job.coinbase(&en1, &en2), cb);
    let txid = job.coinbase_txid(&en1, &en2);
    assert_eq!(txid, reference_sha256d(&cb));
    assert_eq!(sha256d(&cb), txid);

    // Merkle root: fold the branch, written out again.
    let mut root = txid;
    for b in &branch {
        let mut pair = Vec::with_capacity(64);
        pair.extend_from_slice(&root);
        pair.extend_from_slice(b);
        root = reference_sha256d(&pair);
    }
    assert_eq!(job.merkle_root(txid), root);

    // Header: 80 bytes, every field little endian in its place.
    let header = job.header(&root, version, ntime, nonce);
    assert_eq!(header.len(), 80);
    assert_eq!(header[0..4], version.to_le_bytes());
    assert_eq!(header[4..36], prevhash);
    assert_eq!(header[36..68], root);
    assert_eq!(header[68..72], ntime.to_le_bytes());
    assert_eq!(header[72..76], nbits.to_le_bytes());
    assert_eq!(header[76..80], nonce.to_le_bytes());

    // The notify round trip keeps every field (so the proxy hashes what the pool sent).
    let again = Job::from_notify_params(&job.to_notify_params()).expect("own notify parses");
    assert_eq!(again.coinbase_txid(&en1, &en2), txid);
    assert_eq!(again.merkle_root(txid), root);
    assert_eq!(again.header(&root, version, ntime, nonce), header);

    // The share check: its verdict follows the rules in order, and an accepted share's hash is
    // the header's SHA256d and meets the target.
    let submit = Submit {
        worker: "w".into(),
        job_id: "j".into(),
        extranonce2: Extranonce::from_bytes(en2.clone()),
        ntime,
        nonce,
        version_bits,
    };
    let verdict = check_share(&job, &en1, &submit, &rules, &target);
    if en2.len() != rules.extranonce2_size {
        assert!(matches!(
            verdict,
            Err(ShareRejection::WrongExtranonce2Length { .. })
        ));
        return;
    }
    if ntime < rules.ntime_min || ntime > rules.ntime_max {
        assert!(matches!(
            verdict,
            Err(ShareRejection::NtimeOutOfRange { .. })
        ));
        return;
    }
    let rolled = match version_bits {
        Some(bits) if bits & !rules.version_mask != 0 => {
            assert!(matches!(
                verdict,
                Err(ShareRejection::VersionBitsOutsideMask { .. })
            ));
            return;
        }
        Some(bits) => (version & !rules.version_mask) | bits,
        None => version,
    };
    let header = job.header(&root, rolled, ntime, nonce);
    let hash = ShareHash::from_internal_bytes(reference_sha256d(&header));
    let achieved = hash_difficulty(&hash);
    assert!(achieved.as_f64().is_finite() && achieved.as_f64() > 0.0);
    match verdict {
        Ok(share) => {
            assert!(target.is_met_by(&hash));
            assert_eq!(share.hash, hash);
            assert_eq!(share.version, rolled);
            assert_eq!(share.coinbase_txid, txid);
        }
        Err(ShareRejection::LowDifficulty { .. }) => assert!(!target.is_met_by(&hash)),
        Err(other) => panic!("unexpected rejection {other:?}"),
    }
}

/// The pool's coinbase: coinb1 ‖ extranonce ‖ coinb2 is a transaction Bitcoin decodes, with the
/// BIP34 height and the extranonce in its scriptSig; the merkle branch folds to the root of the
/// whole transaction list.
fn check_pool_coinbase(input: &mut Input<'_>) {
    let height = input.u32();
    let en_len = usize::from(input.u8() % 32);
    let tag_len = usize::from(input.u8() % 64);
    let tag = input.bytes(tag_len);
    let n_outputs = usize::from(input.u8() % 4);
    let outputs: Vec<(u64, bitcoin::ScriptBuf)> = (0..n_outputs)
        .map(|_| {
            let value = input.u64();
            let len = usize::from(input.u8() % 40);
            (value, bitcoin::ScriptBuf::from_bytes(input.bytes(len)))
        })
        .collect();
    let commitment = (input.u8() & 1 == 1).then(|| {
        let mut s = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
        s.extend_from_slice(&input.hash());
        bitcoin::ScriptBuf::from_bytes(s)
    });
    let extranonce = input.bytes(en_len);
    let parts = coinbase::build(height, en_len, &tag, &outputs, commitment.as_ref());
    let mut raw = parts.coinb1.clone();
    raw.extend_from_slice(&extranonce);
    raw.extend_from_slice(&parts.coinb2);
    let tx = bitcoin::Transaction::consensus_decode(&mut raw.as_slice())
        .expect("the pool's coinbase decodes as a transaction");
    assert_eq!(bitcoin::consensus::serialize(&tx), raw, "no trailing bytes");
    assert_eq!(tx.input.len(), 1);
    let mut script_sig = coinbase::bip34_height_push(height);
    script_sig.extend_from_slice(&extranonce);
    script_sig.extend_from_slice(&tag);
    assert_eq!(tx.input[0].script_sig.as_bytes(), script_sig.as_slice());
    assert_eq!(
        tx.output.len(),
        outputs.len() + usize::from(commitment.is_some())
    );
    for (out, (value, script)) in tx.output.iter().zip(&outputs) {
        assert_eq!(out.value.to_sat(), *value);
        assert_eq!(&out.script_pubkey, script);
    }
    let witness = coinbase::with_witness_reserved_value(&raw);
    let wtx = bitcoin::Transaction::consensus_decode(&mut witness.as_slice())
        .expect("the witness coinbase decodes");
    assert_eq!(wtx.compute_txid(), tx.compute_txid());

    // Merkle branch vs a plain merkle tree over [coinbase, txids...].
    let n_txids = usize::from(input.u8() % 12);
    let txids: Vec<[u8; 32]> = (0..n_txids).map(|_| input.hash()).collect();
    let cb_txid = reference_sha256d(&raw);
    let mut level: Vec<[u8; 32]> = std::iter::once(cb_txid).chain(txids.clone()).collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| {
                let mut pair = p[0].to_vec();
                pair.extend_from_slice(p.get(1).unwrap_or(&p[0]));
                reference_sha256d(&pair)
            })
            .collect();
    }
    let job = Job::new(
        "p".into(),
        [0; 32],
        parts.coinb1.clone(),
        parts.coinb2.clone(),
        coinbase::merkle_branch(&txids),
        2,
        0x1d00_ffff,
        0,
        true,
    );
    let txid = job.coinbase_txid(&extranonce, &[]);
    assert_eq!(txid, cb_txid);
    assert_eq!(job.merkle_root(txid), level[0]);
}
