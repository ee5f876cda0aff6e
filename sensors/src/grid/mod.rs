//! Grid curtailment signals: the message format and its validation ([`signal`]), and the MQTT
//! client that receives them and publishes acknowledgements and compliance reports ([`mqtt`]).

#[cfg(feature = "runtime")]
pub mod mqtt;
pub mod signal;

#[cfg(feature = "runtime")]
pub use mqtt::{ComplianceReport, GridLink, MqttConfig, MqttTls, Topics};
pub use signal::{
    parse_signal, parse_signal_delivered, Delivery, Signal, SignalError, SignalMessage, SignalRules,
};
