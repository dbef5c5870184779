//! What the integration tests share, in one place:
//!
//! * [`process`]: the real `proto` binary as a child process (`proto serve`
//!   on port 0, waiting for its "listening on" lines), outside programs
//!   (`nc`), and the lab gate [`lab_or_skip`];
//! * [`inproc`]: proto's servers run inside the test process on port 0,
//!   with their own certificate directory, watched through their counters.
//!
//! Each test file uses a different part, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod inproc;
pub mod process;

pub use inproc::*;
pub use process::*;
