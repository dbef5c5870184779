//! proto: see and measure how network protocols behave.
//!
//! # Layout
//!
//! | module        | role |
//! |---------------|------|
//! | [`wire`]      | the frame format, sans-IO: field table, diagram, encode/decode, tokio codec |
//! | [`echo`]      | the uppercase service: one pure function every server shares |
//! | [`server`]    | accept loops, one session per connection (lines or frames), UDP, shutdown |
//! | [`transport`] | client-side connection setup per protocol, with timings |
//! | [`client`]    | echo clients over streams and datagrams; interactive mode |
//! | [`measure`]   | latency histograms (HdrHistogram, coordinated omission) and the load generator |
//! | [`output`]    | pure renderers: tables, annotated byte dumps, latency tables, SVG charts |
//! | [`cmd`]       | one file per subcommand: arguments → work → output |
//! | [`cli`]       | clap definitions and the `250ms` / `64KiB` parsers |
//!
//! `main.rs` only parses arguments and dispatches to [`cmd`].

pub mod cli;
pub mod client;
pub mod cmd;
pub mod echo;
pub mod measure;
pub mod output;
pub mod server;
pub mod transport;
pub mod wire;
