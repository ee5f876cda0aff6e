//! Sensors and curtailment for a BLGV site.
//!
//! * [`meter`]: power meters over Modbus TCP/RTU (register-map presets and custom maps), polled
//!   into timestamped readings with a quality mark.
//! * [`grid`]: the grid operator's curtailment signals over MQTT, validated and acknowledged.
//! * [`controller`]: the pure decision function that turns readings, the active signal and the
//!   miners' properties into "shed / restore these miners".
//! * [`efficiency`]: each miner's power (and J/TH) learned from the meter's response to
//!   commands.
//! * [`control`]: the ASIC firmware clients that pause, power-limit and resume miners.
//! * [`curtailment`]: the loop that ties them together and reports compliance.
//!
//! Nothing here knows Stratum; the proxy wires these pieces to its miner registry.

pub mod control;
pub mod controller;
pub mod curtailment;
pub mod efficiency;
pub mod grid;
pub mod meter;
