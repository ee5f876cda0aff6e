//! Every shipped proxy example config passes `blgv-proxy check-config`: proxy.example.toml and
//! each `deploy/config/*-site.example.toml` (small site, large site, ...), through the built
//! binary as an operator would run it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config")
}

/// proxy.example.toml and every `*-site.example.toml`, sorted.
fn proxy_examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(config_dir())
        .expect("deploy/config exists")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name == "proxy.example.toml" || name.ends_with("-site.example.toml")
        })
        .collect();
    files.sort();
    files
}

fn check_config(file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_blgv-proxy"))
        .arg("check-config")
        .arg(file)
        // Overrides from the developer's shell must not change the verdict.
        .env_clear()
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_proxy_example_config_checks_ok() {
    let files = proxy_examples();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "proxy.example.toml",
        "small-site.example.toml",
        "large-site.example.toml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from deploy/config: {names:?}"
        );
    }
    let mut failed = Vec::new();
    for file in &files {
        let (ok, output) = check_config(file);
        if ok && output.contains(": OK (") {
            println!("{}", output.trim());
        } else {
            failed.push(format!("{}: {}", file.display(), output.trim()));
        }
    }
    assert!(
        failed.is_empty(),
        "check-config failed:\n{}",
        failed.join("\n")
    );
}

#[test]
fn site_examples_describe_what_they_claim() {
    let (_, small) = check_config(&config_dir().join("small-site.example.toml"));
    assert!(small.contains("OK (1 upstream pool,"), "{small}");
    let (_, large) = check_config(&config_dir().join("large-site.example.toml"));
    assert!(large.contains("OK (3 upstream pools,"), "{large}");

    // Content the README points operators to: parse the TOML itself (what check-config does not
    // print) and check the shape of each example.
    let read = |name: &str| -> toml::Value {
        toml::from_str(&std::fs::read_to_string(config_dir().join(name)).unwrap()).unwrap()
    };
    let small = read("small-site.example.toml");
    let meters = small["meters"].as_array().unwrap();
    assert_eq!(meters.len(), 1);
    assert_eq!(meters[0]["preset"].as_str(), Some("sdm630"));
    assert!(small["miners"].as_array().unwrap().len() >= 2);

    let large = read("large-site.example.toml");
    let meters = large["meters"].as_array().unwrap();
    assert!(meters.len() >= 3);
    assert!(meters.iter().any(|m| m["role"].as_str() == Some("feeder")));
    let mqtt = &large["grid"]["mqtt"];
    assert!(mqtt.get("tls").is_some(), "large site uses MQTT over TLS");
    assert_eq!(large["upstreams"].as_array().unwrap().len(), 3);
    let mut firmware: Vec<&str> = large["miners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["firmware"].as_str().unwrap())
        .collect();
    firmware.sort();
    firmware.dedup();
    assert!(
        firmware.len() >= 4,
        "several firmware families: {firmware:?}"
    );
}
