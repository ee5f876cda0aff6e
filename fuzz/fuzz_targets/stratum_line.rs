#![no_main]
//! See fuzz/checks/stratum_line.rs for what is checked; tests/tests/fuzz_corpus.rs replays the corpus
//! through the same function on stable.

#[path = "../checks/stratum_line.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
