//! Timing a handshake in round trips — the idea behind `proto compare`.
//!
//! Time one connection from just before `connect()` to its first echo
//! reply (t₁ − t₀), then measure that connection's own round-trip time
//! (RTT) with a few more echoes. The reply itself needs one round trip, so
//!
//! ```text
//!     handshake cost in RTTs = (t₁ − t₀ − RTT) / RTT
//! ```
//!
//! TCP spends 1 (SYN, SYN-ACK), TCP + TLS 1.3 spends 2, QUIC 1. On loopback
//! an RTT is a few microseconds and CPU time swamps it, so this example
//! builds proto's lab: two network namespaces joined by an emulated link
//! with 100 ms of round-trip delay. That needs root, or (once available)
//! unprivileged user namespaces — if neither works, the error says why.
//!
//! ```text
//! cargo build --examples && sudo target/debug/examples/handshake_rtts
//! ```

use proto::lab::servers::LabServers;
use proto::lab::LabConfig;
use proto::measure::handshake::{measure_variant, Endpoints, Variant};
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 50 ms each way: a 100 ms round trip, nothing else in the way.
    let mut link = LabConfig::default();
    link.client_to_server.delay = Duration::from_millis(50);
    link.server_to_client.delay = Duration::from_millis(50);
    let servers = LabServers::start(link).await?;
    let server_ip = servers.lab().server_ip().to_string();
    let endpoints = Endpoints::from_addresses(&servers.addresses, &server_ip)?;

    let results = servers
        .on_client(move || async move {
            let mut results = Vec::new();
            for variant in [Variant::Tcp, Variant::Tls13, Variant::Quic] {
                // A warm-up connection, then three measured ones (medians kept).
                let timeout = Duration::from_secs(10);
                results.push(measure_variant(variant, &endpoints, 3, timeout, || {}).await);
            }
            results
        })
        .await?;
    servers.stop().await?;

    println!("variant   first reply      RTT   handshake (RTTs)   theory");
    for result in results {
        let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        match result.handshake_rtts {
            Some(rtts) => println!(
                "{:<9} {:>8.1} ms {:>6.1} ms {:>18.2} {:>8}",
                result.protocol.id(),
                ms(result.first_reply),
                ms(result.rtt),
                rtts,
                result.theory_rtts
            ),
            None => println!(
                "{:<9} not measured: {}",
                result.protocol.id(),
                result.note.unwrap_or_default()
            ),
        }
    }
    Ok(())
}
