//! Measurements, kept apart from presentation: these modules produce data
//! (structs that serialize to JSON); `crate::output` turns data into text.
//!
//! * [`handshake`]: how many round trips each protocol spends before the
//!   first byte of data gets an answer (`proto compare`).
//! * [`hol`]: head-of-line blocking, TCP (one ordered byte stream) vs QUIC
//!   (independent streams) under loss (`proto hol`).
//! * [`histogram`]: HdrHistogram wrapper, percentiles, coordinated-omission
//!   correction through intended send times (pure, no I/O).
//! * [`load`]: the load generator, closed and open loop, returning a
//!   [`load::LoadReport`]: one sans-IO connection core ([`load::core`])
//!   driven by a blocking loop (plain TCP and UDP, a thread per connection)
//!   and an async loop (any async stream: TLS, QUIC; UDP sockets).
//! * [`transfer`]: a bulk transfer across the lab with the sender's TCP
//!   state (cwnd, RTT, window) sampled from `TCP_INFO` every millisecond;
//!   [`phases`] reads slow start, loss responses and window limits from it;
//!   [`transfer_tls`] does the same over TLS (the same TCP_INFO, and the
//!   records counted as rustls writes them), [`transfer_quic`] over QUIC
//!   from quinn's path statistics;
//!   [`overhead`] measures header bytes per layer from the lab's capture.
//! * [`trace`]: one connection's packets, decoded and timed, for a ladder
//!   diagram (`proto trace`).

pub mod handshake;
pub mod histogram;
pub mod hol;
pub mod load;
pub mod overhead;
pub mod phases;
pub mod sweep;
pub mod trace;
pub mod transfer;
pub mod transfer_quic;
pub mod transfer_tls;
