//! Presentation only: pure functions from measured or decoded data to text.
//!
//! * [`bytes`]: annotated byte dumps of frames.
//! * [`latency`]: percentile tables, ASCII histograms, `.hgrm`, JSON of load runs.
//! * [`plot`]: the latency-by-percentile chart as SVG.
//! * [`transfer`]: `proto transfer`'s table, cwnd sparkline, CSV.

pub mod bytes;
pub mod compare;
pub mod latency;
pub mod plot;
pub mod transfer;
