//! Grid curtailment signals: the message format and its validation ([`signal`]), and the MQTT
//! client that receives them and publishes acknowledgements and compliance reports ([`mqtt`]).

pub mod signal;

pub use signal::{parse_signal, Signal, SignalError, SignalMessage, SignalRules};
