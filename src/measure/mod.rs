//! Measurements, kept apart from presentation: these modules produce data
//! (structs that serialize to JSON); `crate::output` turns data into text.
//!
//! * [`handshake`]: how many round trips each protocol spends before the
//!   first byte of data gets an answer (`proto compare`).
//! * [`hol`]: head-of-line blocking, TCP (one ordered byte stream) vs QUIC
//!   (independent streams) under loss (`proto hol`).
//! * [`histogram`]: HdrHistogram wrapper, percentiles, coordinated-omission
//!   correction through intended send times (pure, no I/O).
//! * [`load`]: closed- and open-loop load over streams and datagrams,
//!   returning a [`load::LoadReport`]; generic over async streams.
//! * [`transfer`]: a bulk transfer across the lab with the sender's TCP
//!   state (cwnd, RTT, window) sampled from `TCP_INFO` every millisecond;
//!   [`phases`] reads slow start, loss responses and window limits from it.
//! * [`blocking`]: the same load over plain TCP and UDP with a blocking
//!   thread per connection (the fast path the CLI uses for those two).

pub mod blocking;
pub mod handshake;
pub mod histogram;
pub mod hol;
pub mod load;
pub mod phases;
pub mod transfer;
