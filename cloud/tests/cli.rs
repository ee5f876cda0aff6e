//! The `blgv-cloud` binary: check-config on the shipped example and on broken files.

use std::path::Path;
use std::process::Command;

fn cloud() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blgv-cloud"))
}

#[test]
fn example_config_checks_ok() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/cloud.example.toml");
    let out = cloud().arg("check-config").arg(example).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (network mainnet"));
}

#[test]
fn broken_configs_exit_2_naming_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[pool]\nnetwork = \"regtest\"\npayout_address = \"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080\"\n[node]\nurl = \"http://127.0.0.1:18443\"\nuser = \"u\"\npassword = \"p\"\n";
    let cases = [
        (
            base.replace("regtest\"", "testnet\""),
            "`pool.payout_address`",
        ),
        (base.replace("user = \"u\"\n", ""), "`node.password`"),
        (
            "[pool]\nnetwork = \"regtest\"\n".to_string(),
            "payout_address",
        ),
    ];
    for (text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = cloud().arg("check-config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
    let out = cloud().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config FILE"));
}
