//! The product's own binaries (`blgv-cloud`, `blgv-proxy`) for tests that run them as real
//! processes (SIGKILL, the demo's children).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `target/<profile>/blgv-cloud` and `blgv-proxy`, brought up to date first.
///
/// They are built by `cargo test --workspace --no-run` with this test's profile: under the
/// workspace's `cargo test` (CI) that is a no-op, since the same command already built them.
/// A narrower `cargo build -p blgv-cloud -p blgv-proxy` would resolve features for those two
/// packages alone and recompile ~200 dependencies a second time (4 minutes of CI). Run once
/// per test process, however many tests ask.
pub fn product_binaries() -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn build() -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test runs from target/<profile>/deps")
        .to_path_buf();
    let target_dir = dir.parent().expect("target/<profile> has a parent");
    let release = dir.file_name().is_some_and(|n| n == "release");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace");
    let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cmd.args(["test", "--workspace", "--no-run", "--quiet"])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(workspace);
    remove_the_env_cargo_gives_tests(&mut cmd);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed");
    let (cloud, proxy) = (dir.join("blgv-cloud"), dir.join("blgv-proxy"));
    for bin in [&cloud, &proxy] {
        assert!(bin.is_file(), "{} missing after {cmd:?}", bin.display());
    }
    (cloud, proxy)
}

/// Cargo runs a test with variables describing the test's package (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_NAME`, `OUT_DIR`, ...). Some build scripts declare those very names with
/// `rerun-if-env-changed` (ring does), so a cargo started with them inherited sees "changed"
/// values, reruns ring's build script and rebuilds everything above it (rustls, reqwest, the
/// product crates, every test binary): 6.7 minutes of CI inside `demo_smoke`, and the same again
/// in the next plain `cargo` call, which sees the values change back. The nested cargo gets the
/// environment the workspace build had.
fn remove_the_env_cargo_gives_tests(cmd: &mut Command) {
    const PREFIXES: [&str; 5] = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_CFG_",
    ];
    const NAMES: [&str; 4] = [
        "OUT_DIR",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p)) {
            cmd.env_remove(name);
        }
    }
}
