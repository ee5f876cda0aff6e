//! The pieces of `blgv-demo`, the one-command simulated site (`scripts/demo`).
//!
//! The demo runs the real `blgv-cloud` and `blgv-proxy` binaries as child processes and
//! surrounds them with simulated hardware that lives inside the demo process:
//!
//! * [`NodeStandIn`](crate::node::NodeStandIn): the DEMO chain, a regtest-style chain served
//!   over Bitcoin Core's JSON-RPC, which `blgv-cloud` takes its templates from.
//! * [`site::Machines`]: a dozen ASICs, each an emulated firmware API (cgminer, LuxOS, Braiins
//!   OS, Whatsminer, Vnish) plus a [`SimMiner`](crate::SimMiner) that really hashes while that
//!   firmware says its boards are on; and an SDM630 meter on Modbus TCP that reads their sum.
//! * [`broker::Broker`]: an embedded MQTT broker (rumqttd) for the grid operator's signals.
//! * [`grid::GridOperator`]: the grid operator, publishing a curtailment signal and reading the
//!   site's acknowledgements and compliance reports.
//!
//! [`config`] writes the two binaries' configuration files, [`child`] starts and stops them,
//! [`ports`] picks the fixed demo ports or free ones, [`status`] reads their HTTP APIs.
//!
//! Nothing here binds anything but 127.0.0.1.

pub mod broker;
pub mod child;
pub mod config;
pub mod grid;
pub mod ports;
pub mod site;
pub mod status;
