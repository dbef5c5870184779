//! proto: see and measure how network protocols behave.
//!
//! # Layout
//! * `lab/`: an emulated two-host network with a configurable link (delay,
//!   loss, rate, reordering, duplication) inside one process — `proto lab`.
//! * `cmd/`: one file per subcommand: arguments → work → output.

pub mod cmd;
pub mod lab;
