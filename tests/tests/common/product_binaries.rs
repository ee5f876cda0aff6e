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
