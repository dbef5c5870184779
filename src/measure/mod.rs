//! Measurements as data: latency recording and the load generator.
//!
//! * [`histogram`]: HdrHistogram wrapper, percentiles, coordinated-omission
//!   correction through intended send times (pure, no I/O).
//! * [`load`]: closed- and open-loop load over streams and datagrams,
//!   returning a [`load::LoadReport`]; generic over async streams.
//! * [`blocking`]: the same load over plain TCP and UDP with a blocking
//!   thread per connection (the fast path the CLI uses for those two).
//!
//! Nothing here prints: `output/` turns these values into text.

pub mod blocking;
pub mod histogram;
pub mod load;
