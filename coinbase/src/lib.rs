//! The pool's coinbase transaction and merkle branch for a Stratum job (moved here from
//! blgv-cloud next, so the fuzzer links it without the whole pool).
