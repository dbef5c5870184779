//! TCP, client side. `connect()` returns once the kernel has finished the
//! three-way handshake (SYN → SYN-ACK → ACK): exactly one round trip, which
//! is what [`connect`] times.

use super::{explain_connect_error, Target, Transport};
use anyhow::Context;
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
                    crate::units::format_duration(limit)
                ))
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no address to connect to for {target}")))
}

/// Asks the kernel for TCP Fast Open on a client socket: `connect()` will
/// return at once and the SYN leaves with the first write, carrying it.
pub fn set_fast_open_connect(socket: &tokio::net::TcpSocket) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    set_int_option(socket.as_raw_fd(), libc::TCP_FASTOPEN_CONNECT, 1)
        .context("enabling TCP Fast Open (TCP_FASTOPEN_CONNECT) on the client socket")
}

/// Lets a listening socket accept data in SYNs (TCP Fast Open), with up to
/// `queue` pending Fast Open connections. The kernel must allow it too:
/// `net.ipv4.tcp_fastopen` needs bit 2 (value 2 or 3) for servers.
pub fn set_fast_open_listener(listener: &std::net::TcpListener, queue: i32) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    set_int_option(listener.as_raw_fd(), libc::TCP_FASTOPEN, queue)
        .context("enabling TCP Fast Open (TCP_FASTOPEN) on the listener")
}

/// The kernel's Fast Open setting (`net.ipv4.tcp_fastopen`) for the
/// network namespace of the calling thread: bit 1 client, bit 2 server.
pub const FAST_OPEN_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_fastopen";

fn set_int_option(
    fd: std::os::fd::RawFd,
    option: libc::c_int,
    value: libc::c_int,
) -> anyhow::Result<()> {
    // SAFETY: fd is a valid socket for the duration of the call, and we
    // pass a pointer to an int with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            option,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}
