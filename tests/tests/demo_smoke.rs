//! The demo site (README's first command) starts, mines through the proxy and stops by itself.

use std::process::Command;

#[test]
fn demo_site_runs_and_mines() {
    let out = Command::new(env!("CARGO_BIN_EXE_blgv-demo"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--seconds",
            "6",
            "--every",
            "2",
            "--miners",
            "4",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("summary:"))
        .expect("summary line");
    let accepted: u64 = summary.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(accepted > 0, "{stdout}");
    assert!(summary.contains(" 0 upstream rejects"), "{summary}");
}
