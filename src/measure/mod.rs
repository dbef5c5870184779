//! Measurements as data: latency recording and the load generator.
//!
//! * [`histogram`]: HdrHistogram wrapper, percentiles, coordinated-omission
//!   correction through intended send times (pure, no I/O).
//! * [`load`]: closed- and open-loop load over streams and datagrams,
//!   returning a [`load::LoadReport`].
//!
//! Nothing here prints: `output/` turns these values into text.

pub mod histogram;
pub mod load;
