//! Presentation only: pure functions from measured or decoded data to text.
//!
//! * [`bench`]: `proto bench`'s table, each transport against TCP.
//! * [`bytes`]: annotated byte dumps of frames.
//! * [`compare`]: `proto compare`'s table, CSV and verdicts.
//! * [`hol`]: `proto hol`'s table and what it shows.
//! * [`json`]: `--json` output, floats rounded to what was measured.
//! * [`latency`]: percentile tables, ASCII histograms, `.hgrm`, JSON of load runs.
//! * [`ladder`]: the ladder diagram of `proto trace`, as text and SVG.
//! * [`link`]: the emulated link in one line; its counters.
//! * [`plot`]: the latency-by-percentile chart as SVG.
//! * [`progress`]: progress bars on stderr (terminal only).
//! * [`transfer`]: `proto transfer`'s table, cwnd sparkline, CSV;
//!   [`cwnd_plot`] its figure (cwnd, RTT, throughput over time) as SVG.

pub mod bench;
pub mod bytes;
pub mod compare;
pub mod cwnd_plot;
pub mod hol;
pub mod json;
pub mod ladder;
pub mod latency;
pub mod link;
pub mod plot;
pub mod progress;
pub mod sweep;
pub mod transfer;
