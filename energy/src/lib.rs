//! Mission 1867 energy reports: the wire format a site's proxy sends and the pool coordinator
//! validates. One crate so both ends (and the fuzzer) share one definition.
