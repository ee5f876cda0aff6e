//! The simulated site used by the end-to-end tests of the mining proxy.
//!
//! * [`pool`]: [`TestPool`], an upstream Stratum V1 pool that referees every share the proxy
//!   sends it.
//! * [`miner`]: [`SimMiner`], a Stratum V1 miner that really hashes (throttled), like firmware.
//!
//! Both speak plain newline-delimited JSON-RPC and do all share maths with `rust-bitcoin`, never
//! with the project's own `blgv-stratum` crate. That independence is the point: if the proxy and
//! its stratum library agree on a wrong idea of a share, this crate still says no.

pub mod asic;
pub mod browser;
pub mod demo;
pub mod grafana;
pub mod jsonrpc;
pub mod line_reader;
pub mod load;
pub mod meter_sim;
pub mod miner;
pub mod mosquitto;
pub mod node;
pub mod pool;
pub mod relay;
pub mod share_math;
pub mod wait;

pub use miner::{MinerConfig, MinerStats, PowerSwitch, SimMiner, SubscribeStyle};
pub use node::{AcceptedBlock, Malformed, NodeConfig, NodeStandIn, NodeStats};
pub use pool::{InvalidShare, PoolStats, TestPool, TestPoolConfig};
pub use wait::wait_until;
