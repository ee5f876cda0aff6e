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

// The `runtime` feature (default) is everything that talks to the outside: Modbus links and
// polling tasks, the MQTT grid link, the firmware control clients (gRPC, HTTP), the curtailment
// loop. Without it only the pure decoders and the power controller's arithmetic remain, which
// is what the fuzz targets need: the fuzz build then skips tonic, reqwest, rumqttc and
// tokio-modbus and their TLS stacks, all compiled with sanitizer coverage.
#[cfg(feature = "runtime")]
pub mod control;
pub mod controller;
#[cfg(feature = "runtime")]
pub mod curtailment;
pub mod efficiency;
pub mod grid;
pub mod meter;
