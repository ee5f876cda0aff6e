//! `blgv-cloud`: the BLGV pool coordinator.
//!
//! Block templates from a Bitcoin node become Stratum V1 jobs; shares from site proxies and
//! miners are validated, recorded in a ledger, and the ones that meet the network target become
//! blocks submitted at once.

pub mod config;

pub use config::{Config, ConfigError, LoadError};
