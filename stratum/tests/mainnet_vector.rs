//! The real mainnet block 702861, rebuilt from its Stratum job (../shared/vectors).

use blgv_stratum::{check_share, Extranonce, Job, ShareRules, Submit, Target};
use serde_json::Value;

fn vector() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/mainnet-block-702861-job.json"
    );
    let text =
        std::fs::read_to_string(path).expect("shared/vectors must sit beside the project root");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn rebuilds_block_702861_and_meets_the_network_target() {
    let v = vector();
    let job = Job::from_notify_params(&v["notify"]).unwrap();
    let submit = Submit::from_params(&v["submit"]).unwrap();
    let en1 = Extranonce::from_hex(v["extranonce1"].as_str().unwrap()).unwrap();
    let network = Target::from_compact(job.nbits).unwrap();
    assert_eq!(network.to_string(), v["network_target"].as_str().unwrap());

    let rules = ShareRules {
        version_mask: 0,
        ntime_min: job.ntime,
        ntime_max: job.ntime + 600,
        extranonce2_size: v["extranonce2_size"].as_u64().unwrap() as usize,
    };
    let share = check_share(&job, en1.as_bytes(), &submit, &rules, &network).unwrap();
    assert_eq!(share.hash.to_string(), v["block_hash"].as_str().unwrap());

    let root = job.merkle_root(share.coinbase_txid);
    let header = job.header(&root, share.version, submit.ntime, submit.nonce);
    assert_eq!(hex::encode(header), v["header_hex"].as_str().unwrap());
    assert!(
        share.achieved_difficulty().as_f64() > 1.8e13,
        "block 702861 was ~18.4T difficulty"
    );
}

#[test]
fn one_flipped_nonce_bit_is_low_difficulty() {
    let v = vector();
    let job = Job::from_notify_params(&v["notify"]).unwrap();
    let mut submit = Submit::from_params(&v["submit"]).unwrap();
    submit.nonce ^= 1;
    let en1 = Extranonce::from_hex(v["extranonce1"].as_str().unwrap()).unwrap();
    let rules = ShareRules {
        version_mask: 0,
        ntime_min: job.ntime,
        ntime_max: job.ntime,
        extranonce2_size: 4,
    };
    let err = check_share(
        &job,
        en1.as_bytes(),
        &submit,
        &rules,
        &Target::from_compact(job.nbits).unwrap(),
    )
    .unwrap_err();
    assert_eq!(err.reason(), "low_difficulty");
    assert_eq!(err.code() as i64, 23);
}

#[test]
fn notify_round_trips_through_params() {
    let v = vector();
    let job = Job::from_notify_params(&v["notify"]).unwrap();
    assert_eq!(job.to_notify_params(), v["notify"]);
}

#[test]
fn share_rules_reject_mask_ntime_and_length_violations() {
    let v = vector();
    let job = Job::from_notify_params(&v["notify"]).unwrap();
    let en1 = Extranonce::from_hex("0475a455").unwrap();
    let rules = ShareRules {
        version_mask: 0x1fffe000,
        ntime_min: job.ntime,
        ntime_max: job.ntime + 10,
        extranonce2_size: 4,
    };
    let mut s = Submit::from_params(&v["submit"]).unwrap();
    s.version_bits = Some(0x2000_0000);
    assert_eq!(
        check_share(&job, en1.as_bytes(), &s, &rules, &Target::MAX)
            .unwrap_err()
            .reason(),
        "bad_version"
    );
    let mut s = Submit::from_params(&v["submit"]).unwrap();
    s.ntime = job.ntime + 11;
    assert_eq!(
        check_share(&job, en1.as_bytes(), &s, &rules, &Target::MAX)
            .unwrap_err()
            .reason(),
        "bad_ntime"
    );
    let mut s = Submit::from_params(&v["submit"]).unwrap();
    s.extranonce2 = Extranonce::from_hex("00").unwrap();
    let e = check_share(&job, en1.as_bytes(), &s, &rules, &Target::MAX).unwrap_err();
    assert_eq!(
        e.to_string(),
        "extranonce2 must be 4 bytes (8 hex digits), got 1 bytes"
    );
}
