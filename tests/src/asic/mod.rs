//! Emulated ASIC firmware control APIs (being written).
