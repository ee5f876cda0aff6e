#![no_main]
//! See fuzz/checks/modbus_decode.rs for what is checked; tests/tests/fuzz_corpus.rs replays the corpus
//! through the same function on stable.

#[path = "../checks/modbus_decode.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
