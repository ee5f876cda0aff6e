//! The `blgv-proxy` binary: check-config on the shipped example and on broken files.

use std::path::Path;
use std::process::Command;

fn proxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blgv-proxy"))
}

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/proxy.example.toml")
}

#[test]
fn example_config_checks_ok() {
    let out = proxy().arg("check-config").arg(example()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK (2 upstream pools"), "{stdout}");
}

#[test]
fn broken_configs_exit_2_naming_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[proxy]\nlisten = \"0.0.0.0:3333\"\n", "`upstreams`"),
        (
            "[[upstreams]]\nurl = \"pool:3333\"\nuser = \"a\"\n[vardiff]\nmin = -1\n",
            "`vardiff.min`",
        ),
        (
            "[[upstreams]]\nurl = \"pool\"\nuser = \"a\"\n",
            "`upstreams[0].url`",
        ),
    ];
    for (text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = proxy().arg("check-config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(key) && stderr.contains("fix:"),
            "{key}: {stderr}"
        );
    }
    let out = proxy()
        .arg("check-config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn env_override_applies_in_check_config() {
    let out = proxy()
        .arg("check-config")
        .arg(example())
        .env("BLGV_PROXY__LISTEN", "127.0.0.1:4555")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:4555"));
    let out = proxy()
        .arg("check-config")
        .arg(example())
        .env("BLGV_VARDIFF__MIN", "zero")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("vardiff"));
}

#[test]
fn running_without_config_explains_the_fix() {
    let out = proxy().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config FILE"));
}

#[test]
fn version_flag_prints_version() {
    let out = proxy().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("blgv-proxy 0."));
}
