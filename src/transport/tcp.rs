//! TCP, client side. `connect()` returns once the kernel has finished the
//! three-way handshake (SYN → SYN-ACK → ACK): exactly one round trip, which
//! is what [`connect`] times.

use super::{explain_connect_error, Target, Transport};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Connects to the first address of `target` that answers, within `limit`.
/// Returns the stream and the duration of the TCP handshake.
pub async fn connect(
    target: &Target,
    limit: Duration,
    transport: Transport,
) -> anyhow::Result<(TcpStream, Duration)> {
    let addrs = target.resolve().await?;
    let mut last_error = None;
    for addr in addrs {
        let started = Instant::now();
        match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let took = started.elapsed();
                // Send small messages at once instead of waiting for Nagle's
                // algorithm to gather more (it would add up to 40 ms per reply).
                stream.set_nodelay(true)?;
                return Ok((stream, took));
            }
            Ok(Err(e)) => last_error = Some(explain_connect_error(&e, transport, target)),
            Err(_) => {
                last_error = Some(anyhow::anyhow!(
                    "no answer from {target} within {}: is the host reachable and the port open? (--timeout waits longer)",
                    crate::cli::format_duration(limit)
                ))
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no address to connect to for {target}")))
}
