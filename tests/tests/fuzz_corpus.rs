//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the same check
//! the fuzz target runs (`fuzz/checks/<target>.rs`), on stable, as part of `cargo test`: a
//! crash or invariant violation the fuzzers once found (or a seed's behaviour) stays fixed
//! without nightly or libFuzzer. `scripts/fuzz` runs the fuzzers themselves.

#[path = "../../fuzz/checks/energy_report.rs"]
mod energy_report;
#[path = "../../fuzz/checks/grid_signal.rs"]
mod grid_signal;
#[path = "../../fuzz/checks/modbus_decode.rs"]
mod modbus_decode;
#[path = "../../fuzz/checks/share_header.rs"]
mod share_header;
#[path = "../../fuzz/checks/stratum_line.rs"]
mod stratum_line;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Runs `check` on every file of `fuzz/corpus/<target>` and fails naming each file that panics.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.iter().any(|p| p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))),
        "{}: the realistic seeds are missing (python3 fuzz/seed_corpus.py writes them)",
        dir.display()
    );
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("read corpus file");
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} corpus files fail their check (the panic messages are above); \
         reproduce one with `cargo +nightly fuzz run {target} <file>` in fuzz/: {failed:#?}",
        failed.len(),
        files.len()
    );
    eprintln!("{target}: {} corpus files replayed", files.len());
}

#[test]
fn stratum_line_corpus() {
    replay("stratum_line", stratum_line::check);
}

#[test]
fn share_header_corpus() {
    replay("share_header", share_header::check);
}

#[test]
fn modbus_decode_corpus() {
    replay("modbus_decode", modbus_decode::check);
}

#[test]
fn grid_signal_corpus() {
    replay("grid_signal", grid_signal::check);
}

#[test]
fn energy_report_corpus() {
    replay("energy_report", energy_report::check);
}
