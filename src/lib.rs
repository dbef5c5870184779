//! proto: see and measure how network protocols behave.
//!
//! # Layout
//!
//! Layers from the ground up; each module uses only the ones above it in
//! this table (`tests/layers.rs` checks it, so a cycle cannot creep back):
//!
//! | module        | role |
//! |---------------|------|
//! | [`units`]     | durations, sizes, request rates vs bit rates, percentages: parsing and formatting; the process clock |
//! | [`wire`]      | wire formats, sans-IO: the frame (field table, diagram, encode/decode, tokio codec); protocol limits and ports; IP/TCP/UDP, TLS, QUIC and SCTP decoders with decryption, pcapng, key logs |
//! | [`echo`]      | the uppercase service: one pure function every server shares |
//! | [`transport`] | connection setup per protocol (tcp, udp, tls, quic) with timings and what was negotiated; certificates |
//! | [`server`]    | accept loops, one session per connection (lines or frames), UDP, TLS handshakes with 0-RTT, QUIC streams, shutdown |
//! | [`client`]    | echo clients over streams and datagrams; fetching tickets for resumption; interactive mode |
//! | [`lab`]       | the emulated two-host network: namespaces, TUN devices, the link model, pcap |
//! | [`measure`]   | measurements as data: handshake round trips, head-of-line blocking, latency histograms and load |
//! | [`output`]    | all presentation: tables, CSV, byte dumps, SVG charts, ladder diagrams, progress bars |
//! | [`cmd`]       | one file per subcommand: arguments → work → output; the only users of clap besides [`cli`] |
//! | [`cli`]       | the clap command tree |
//!
//! `server` and `client` are peers and never use each other. `main.rs` only
//! parses arguments and dispatches to [`cmd`]. Errors: library code returns
//! typed errors (`thiserror`) where a caller may act on the kind, and
//! `anyhow` with context elsewhere; `cmd` adds the flag names and `main`
//! prints the chain as one `error:` line.
//!
//! `examples/` shows the library from outside, one idea per file.

pub mod cli;
pub mod client;
pub mod cmd;
pub mod echo;
pub mod lab;
pub mod measure;
pub mod output;
pub mod server;
pub mod transport;
pub mod units;
pub mod wire;
