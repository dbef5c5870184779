//! proto: see and measure how network protocols behave.
//!
//! # Layout
//!
//! | module        | role |
//! |---------------|------|
//! | [`wire`]      | the frame format, sans-IO: field table, diagram, encode/decode, tokio codec; IP/TCP/UDP, TLS and QUIC decoders with decryption, pcapng, key logs |
//! | [`echo`]      | the uppercase service: one pure function every server shares |
//! | [`server`]    | accept loops, one session per connection (lines or frames), UDP, TLS handshakes with 0-RTT, QUIC streams, shutdown |
//! | [`transport`] | connection setup per protocol (tcp, udp, tls, quic) with timings and what was negotiated; certificates |
//! | [`client`]    | echo clients over streams and datagrams; interactive mode |
//! | [`measure`]   | measurements as data: handshake round trips; latency histograms (HdrHistogram, coordinated omission) and the load generator |
//! | [`lab`]       | the emulated two-host network: namespaces, TUN devices, the link model, pcap |
//! | [`output`]    | pure renderers: tables, CSV, annotated byte dumps, latency tables, SVG charts, ladder diagrams |
//! | [`cmd`]       | one file per subcommand: arguments → work → output |
//! | [`cli`]       | clap definitions and the `250ms` / `64KiB` parsers |
//!
//! `main.rs` only parses arguments and dispatches to [`cmd`].

pub mod cli;
pub mod client;
pub mod cmd;
pub mod echo;
pub mod lab;
pub mod measure;
pub mod output;
pub mod server;
pub mod transport;
pub mod wire;
