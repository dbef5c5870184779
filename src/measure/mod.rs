//! Measurements, kept apart from presentation: these modules produce data
//! (structs that serialize to JSON); `crate::output` turns data into text.
//!
//! * [`handshake`]: how many round trips each protocol spends before the
//!   first byte of data gets an answer (`proto compare`).

pub mod handshake;
