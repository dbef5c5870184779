//! Presentation only: pure functions from measured or decoded data to text.
//!
//! * [`bytes`]: annotated byte dumps of frames.
//! * [`latency`]: percentile tables, ASCII histograms, `.hgrm`, JSON of load runs.
//! * [`ladder`]: the ladder diagram of `proto trace`, as text and SVG.
//! * [`plot`]: the latency-by-percentile chart as SVG.
//! * [`transfer`]: `proto transfer`'s table, cwnd sparkline, CSV;
//!   [`cwnd_plot`] its figure (cwnd, RTT, throughput over time) as SVG.

pub mod bytes;
pub mod compare;
pub mod cwnd_plot;
pub mod ladder;
pub mod latency;
pub mod plot;
pub mod transfer;
