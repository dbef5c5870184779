//! The UDP echo: one datagram in, one datagram out, no connection at all.
//!
//! UDP has no handshake, no ordering and no retransmission: the server just
//! answers each datagram to the address it came from. A datagram whose first
//! byte is the frame magic is decoded as one whole frame (one datagram = one
//! message); anything else is text, uppercased as a whole.

use super::ServerContext;
use crate::echo::uppercase_into;
use crate::wire::{frame, Frame, MAGIC};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::wire::limits::MAX_UDP_PAYLOAD;

/// The reply to one datagram (sans-IO, so it is testable without sockets).
pub fn answer_datagram(datagram: &[u8], reply: &mut Vec<u8>) -> Result<(), String> {
    if datagram.first() == Some(&MAGIC) {
        match frame::decode_datagram(datagram) {
            Ok(request) => super::session::answer_frame(&request, reply),
            Err(e) => {
                let why = e.to_string();
                let _ = Frame::error(0, 0, &why).encode(reply);
                Err(why)
            }
        }
    } else {
        uppercase_into(datagram, reply);
        Ok(())
    }
}

/// How often the blocking UDP loop looks at the shutdown token while idle.
const SHUTDOWN_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The UDP echo on a thread of its own with a blocking socket, as the C
/// reference server does: one `recvfrom` that returns with the datagram
/// and one `sendto` per message. (An async loop needs an `epoll_wait` and
/// a failed `recvfrom` more per datagram, which on loopback costs ~10 %.)
/// Checks the shutdown token (and `abandoned`, true once nobody waits for
/// this server any more) whenever the socket has been idle for
/// [`SHUTDOWN_POLL`]. `server::run` runs this on a thread of its own.
pub fn serve_blocking(
    socket: std::net::UdpSocket,
    ctx: Arc<ServerContext>,
    abandoned: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(SHUTDOWN_POLL))?;
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 1];
    let mut reply = Vec::with_capacity(MAX_UDP_PAYLOAD);
    while !ctx.shutdown.is_cancelled() && !abandoned() {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(pair) => pair,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            // e.g. ECONNREFUSED left by an ICMP error from an earlier
            // reply: it concerns a past client, not this socket.
            Err(e) => {
                ctx.log(format_args!("udp: receive error ignored: {e}"));
                continue;
            }
        };
        answer_into(&buf[..len], peer, &mut reply, &ctx);
        match socket.send_to(&reply, peer) {
            Ok(n) => {
                ctx.stats.bytes_out.fetch_add(n as u64, Relaxed);
            }
            Err(e) => ctx.log(format_args!("udp {peer}: reply not sent: {e}")),
        }
    }
    Ok(())
}

/// Counts one datagram and puts its reply into `reply`.
fn answer_into(
    datagram: &[u8],
    peer: std::net::SocketAddr,
    reply: &mut Vec<u8>,
    ctx: &ServerContext,
) {
    ctx.stats.datagrams.fetch_add(1, Relaxed);
    ctx.stats.bytes_in.fetch_add(datagram.len() as u64, Relaxed);
    reply.clear();
    match answer_datagram(datagram, reply) {
        Ok(()) => {
            ctx.stats.messages.fetch_add(1, Relaxed);
        }
        Err(why) => {
            ctx.stats.protocol_errors.fetch_add(1, Relaxed);
            ctx.log(format_args!("udp {peer}: bad frame: {why}"));
        }
    }
    if reply.len() > MAX_UDP_PAYLOAD {
        // Unicode uppercasing made the text too long for one datagram.
        ctx.stats.protocol_errors.fetch_add(1, Relaxed);
        reply.clear();
        reply.extend_from_slice(b"ERROR reply too long for one UDP datagram\n");
    }
}

/// The same echo as [`serve_blocking`] as an async task (one socket among
/// many tasks; costs more system calls per datagram).
pub async fn serve(socket: tokio::net::UdpSocket, ctx: Arc<ServerContext>) -> anyhow::Result<()> {
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 1];
    let mut reply = Vec::with_capacity(MAX_UDP_PAYLOAD);
    loop {
        let (len, peer) = tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            received = socket.recv_from(&mut buf) => match received {
                Ok(pair) => pair,
                // e.g. ECONNREFUSED left by an ICMP error from an earlier
                // reply: it concerns a past client, not this socket.
                Err(e) => {
                    ctx.log(format_args!("udp: receive error ignored: {e}"));
                    continue;
                }
            },
        };
        answer_into(&buf[..len], peer, &mut reply, &ctx);
        match socket.send_to(&reply, peer).await {
            Ok(n) => {
                ctx.stats.bytes_out.fetch_add(n as u64, Relaxed);
            }
            Err(e) => ctx.log(format_args!("udp {peer}: reply not sent: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_datagram_is_uppercased_whole() {
        let mut reply = Vec::new();
        answer_datagram(b"hello\n", &mut reply).unwrap();
        assert_eq!(reply, b"HELLO\n");
    }

    #[test]
    fn framed_datagram_gets_framed_reply() {
        let mut reply = Vec::new();
        let request = Frame::request(5, 6, &b"x"[..]);
        answer_datagram(&request.to_bytes().unwrap(), &mut reply).unwrap();
        assert_eq!(
            frame::decode_datagram(&reply).unwrap(),
            request.response_to(&b"X"[..])
        );
    }

    #[test]
    fn truncated_frame_gets_error_frame() {
        let mut reply = Vec::new();
        assert!(answer_datagram(&[MAGIC, 0x11, 0], &mut reply).is_err());
        let err = frame::decode_datagram(&reply).unwrap();
        assert_eq!(err.frame_type, crate::wire::FrameType::Error);
    }
}
