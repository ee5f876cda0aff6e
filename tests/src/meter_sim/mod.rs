//! A Modbus meter simulator whose power follows the emulated miners (being written).
