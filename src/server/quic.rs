//! The QUIC echo server: connections → bidirectional streams → the same
//! echo session as TCP and TLS (`tokio::io::join(recv, send)` makes a QUIC
//! stream look like any byte stream). QUIC DATAGRAM frames are echoed
//! uppercased, one datagram for one.
//!
//! Streams are independent: each has its own task and its own flow of
//! bytes, so a lost packet delays only the streams whose data it carried
//! (no head-of-line blocking across streams, unlike one TCP connection).

use super::limits::ConnectionPermit;
use super::{session, ServerContext};
use crate::echo::uppercase_into;
use crate::transport::quic::QuicHandshakeInfo;
use quinn::Runtime;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// When a QUIC client must prove it owns its address before the server
/// keeps any state for it.
///
/// A QUIC Initial packet is a UDP datagram, and UDP source addresses can
/// be forged: a flood of Initials would make the server start (and keep,
/// until the handshake times out) a half-open connection for each, and
/// send each forged address up to three times what it received. With a
/// Retry (RFC 9000 §8.1.2) the server instead answers with a small packet
/// holding an encrypted token and forgets the client; only a client that
/// really receives at that address can send its Initial again with the
/// token. The price is one extra round trip for honest clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum RetryPolicy {
    /// Retry only while many unvalidated handshakes are in progress (a
    /// quarter of `--max-handshakes`): a flood costs honest clients one
    /// round trip, normal times cost nothing.
    #[default]
    Auto,
    /// Every new client proves its address first (one more round trip).
    Always,
    /// Never (handshakes still count against `--max-handshakes`).
    Never,
}

impl RetryPolicy {
    /// Whether a client whose address is not validated gets a Retry when
    /// `in_progress` handshakes are under way.
    pub fn wants_retry(self, in_progress: usize, max_handshakes: usize) -> bool {
        match self {
            RetryPolicy::Always => true,
            RetryPolicy::Never => false,
            RetryPolicy::Auto => in_progress >= (max_handshakes / 4).max(1),
        }
    }
}

impl std::str::FromStr for RetryPolicy {
    type Err = String;
    fn from_str(text: &str) -> Result<RetryPolicy, String> {
        match text {
            "auto" => Ok(RetryPolicy::Auto),
            "always" => Ok(RetryPolicy::Always),
            "never" => Ok(RetryPolicy::Never),
            other => Err(format!(
                "'{other}' is not a Retry policy: use auto, always or never"
            )),
        }
    }
}

/// Bytes the kernel may queue for the QUIC socket before it drops
/// datagrams: a burst of Initials (a flood, or the server losing the CPU
/// for a moment) must not push a real client's packets out of the queue.
pub const RECEIVE_BUFFER: libc::c_int = 4 << 20;

/// Asks for [`RECEIVE_BUFFER`]: with SO_RCVBUFFORCE when privileged, else
/// SO_RCVBUF (capped by `net.core.rmem_max`). Best effort.
fn enlarge_receive_buffer(socket: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let size = RECEIVE_BUFFER;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt on a socket we own, with an int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// A QUIC handshake in progress, counted until dropped.
struct HandshakeSlot(Arc<AtomicUsize>);

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Decides, before any state is kept, what happens to a connection
/// attempt: a Retry (address not yet validated, see [`RetryPolicy`]), a
/// refusal (too many handshakes in progress or connections open: the
/// client gets CONNECTION_REFUSED at once), or a slot to go ahead.
fn triage(
    incoming: quinn::Incoming,
    ctx: &ServerContext,
    handshakes: &Arc<AtomicUsize>,
) -> Option<(quinn::Incoming, ConnectionPermit, HandshakeSlot)> {
    let peer = incoming.remote_address();
    let in_progress = handshakes.load(Relaxed);
    let max_handshakes = ctx.config.max_handshakes.max(1);
    let mut incoming = incoming;
    if !incoming.remote_address_validated()
        && incoming.may_retry()
        && ctx
            .config
            .quic_retry
            .wants_retry(in_progress, max_handshakes)
    {
        match incoming.retry() {
            Ok(()) => {
                ctx.stats.quic_retries.fetch_add(1, Relaxed);
                return None;
            }
            Err(e) => incoming = e.into_incoming(),
        }
    }
    if in_progress >= max_handshakes {
        let seen = ctx.stats.refused.fetch_add(1, Relaxed) + 1;
        if seen <= 10 || seen.is_multiple_of(1000) {
            ctx.log(format_args!(
                "quic {peer}: refused, {in_progress} handshakes in progress (the limit, --max-handshakes) ({seen} refused so far)"
            ));
        }
        incoming.refuse();
        return None;
    }
    let Ok(permit) = ctx.admit("quic", peer) else {
        incoming.refuse();
        return None;
    };
    handshakes.fetch_add(1, Relaxed);
    Some((incoming, permit, HandshakeSlot(handshakes.clone())))
}

/// Serves QUIC on `socket` until shutdown.
pub async fn serve(
    socket: std::net::UdpSocket,
    config: quinn::ServerConfig,
    ctx: Arc<ServerContext>,
) -> anyhow::Result<()> {
    enlarge_receive_buffer(&socket);
    let runtime = Arc::new(quinn::TokioRuntime);
    let socket = runtime
        .wrap_udp_socket(socket)
        .map_err(|e| anyhow::anyhow!("registering the QUIC socket: {e}"))?;
    let socket = Arc::new(InspectingSocket {
        inner: socket,
        ctx: ctx.clone(),
        budgets: Mutex::default(),
    });
    let mut endpoint_config = quinn::EndpointConfig::default();
    // Do not let clients "grease" (randomise) the QUIC fixed bit: then a
    // datagram whose fixed bit is 0 is certainly not QUIC, and can be
    // reported as such.
    endpoint_config.grease_quic_bit(false);
    let endpoint =
        quinn::Endpoint::new_with_abstract_socket(endpoint_config, Some(config), socket, runtime)
            .map_err(|e| anyhow::anyhow!("starting the QUIC endpoint: {e}"))?;
    let mut connections = JoinSet::new();
    let handshakes = Arc::new(AtomicUsize::new(0));
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Some((incoming, permit, slot)) = triage(incoming, &ctx, &handshakes) else {
                    continue;
                };
                let ctx = ctx.clone();
                connections.spawn(async move {
                    serve_connection(incoming, ctx, slot).await;
                    drop(permit);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // New connection attempts are refused from now on; open ones get the
    // grace period to finish, then a CONNECTION_CLOSE.
    endpoint.set_server_config(None);
    super::finish_connections(connections, ctx.config.grace).await;
    endpoint.close(quinn::VarInt::from_u32(0), b"server shutting down");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), endpoint.wait_idle()).await;
    Ok(())
}

async fn serve_connection(incoming: quinn::Incoming, ctx: Arc<ServerContext>, slot: HandshakeSlot) {
    let peer = incoming.remote_address();
    let started = Instant::now();
    ctx.stats.connections.fetch_add(1, Relaxed);
    ctx.log(format_args!("quic {peer}: connecting"));
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            ctx.stats.quic.fail();
            ctx.log(format_args!("quic {peer}: refused: {e}"));
            return;
        }
    };
    // On a server, into_0rtt always succeeds: it lets us take streams the
    // client opened in 0-RTT packets before the handshake completes.
    let handshake: Handshake = match connecting.into_0rtt() {
        // Resolves when the handshake completes (its value only means
        // something on a client).
        Ok((connection, done)) => (
            connection,
            Box::pin(async move {
                let _ = done.await;
            }),
        ),
        Err(connecting) => match connecting.await {
            Ok(connection) => (connection, Box::pin(async {})),
            Err(e) => {
                ctx.stats.quic.fail();
                ctx.log(format_args!("quic {peer}: handshake failed: {e}"));
                return;
            }
        },
    };
    serve_established(handshake, peer, ctx, started, slot).await
}

type Handshake = (
    quinn::Connection,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
);

async fn serve_established(
    (connection, handshake): Handshake,
    peer: std::net::SocketAddr,
    ctx: Arc<ServerContext>,
    started: Instant,
    slot: HandshakeSlot,
) {
    let mut slot = Some(slot);
    let limit = ctx.config.handshake_timeout;
    let handshake = tokio::time::timeout(limit, handshake);
    tokio::pin!(handshake);
    let mut handshake_done = false;
    let mut established = false;
    let mut streams = JoinSet::new();
    let mut datagrams_ok = true;
    let ending: String = loop {
        tokio::select! {
            // The handshake's end first: a client that closes right after
            // it must not look like a failed handshake.
            biased;
            finished = &mut handshake, if !handshake_done => {
                handshake_done = true;
                drop(slot.take()); // no longer a handshake in progress
                if finished.is_err() {
                    ctx.stats.quic.fail();
                    connection.close(quinn::VarInt::from_u32(1), b"handshake timeout");
                    break format!(
                        "QUIC handshake not finished within {} (--handshake-timeout)",
                        crate::units::format_duration(limit)
                    );
                }
                // `done` resolves both when the handshake completes and when
                // the connection dies first, so ask TLS which it was. Do not
                // look at `close_reason()`: a client that closes right after
                // its Finished (a 0-RTT client already has its echo by then)
                // delivers both in one flight, and quinn reports "connected"
                // and "closed" in the same breath. That connection succeeded.
                if !handshake_info(&connection).handshake_complete {
                    // The handshake failed; accept_bi reports why.
                    continue;
                }
                established = true;
                record_handshake(&connection, peer, &ctx);
            }
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let ctx = ctx.clone();
                    let id = send.id();
                    let connection = connection.clone();
                    streams.spawn(async move {
                        let mut report = session::serve_stream(tokio::io::join(recv, send), &ctx).await;
                        // A client may end with CONNECTION_CLOSE instead of
                        // waiting for each stream's end (its FIN and the close
                        // often arrive together): its streams then fail with
                        // "connection lost", but nothing went wrong.
                        if report.ending.is_some()
                            && connection.close_reason().as_ref().is_some_and(|e| client_closed(&describe_close(e)))
                        {
                            report.ending = None;
                        }
                        ctx.stats.record_session(&report);
                        ctx.log(format_args!(
                            "quic {peer} stream {}: {}",
                            id.index(),
                            report.describe()
                        ));
                    });
                }
                Err(e) if established => break describe_close(&e),
                Err(e) => {
                    ctx.stats.quic.fail();
                    break format!("handshake failed: {e}");
                }
            },
            datagram = connection.read_datagram(), if datagrams_ok => match datagram {
                Ok(bytes) => {
                    ctx.stats.datagrams.fetch_add(1, Relaxed);
                    ctx.stats.messages.fetch_add(1, Relaxed);
                    ctx.stats.bytes_in.fetch_add(bytes.len() as u64, Relaxed);
                    let mut reply = Vec::with_capacity(bytes.len());
                    uppercase_into(&bytes, &mut reply);
                    let n = reply.len() as u64;
                    match connection.send_datagram(reply.into()) {
                        Ok(()) => {
                            ctx.stats.bytes_out.fetch_add(n, Relaxed);
                        }
                        Err(e) => ctx.log(format_args!("quic {peer}: datagram reply not sent: {e}")),
                    }
                }
                // Closed connection (accept_bi reports it) or datagrams off.
                Err(_) => datagrams_ok = false,
            },
            _ = ctx.shutdown.cancelled() => break "server shutting down".into(),
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    };
    // Streams in progress get the server's grace period.
    super::finish_connections(streams, ctx.config.grace).await;
    let normal = established && client_closed(&ending);
    if !normal {
        ctx.stats.abnormal_closes.fetch_add(1, Relaxed);
    }
    ctx.log(format_args!(
        "quic {peer}: closed after {:.1} s ({ending})",
        started.elapsed().as_secs_f64()
    ));
}

fn record_handshake(
    connection: &quinn::Connection,
    peer: std::net::SocketAddr,
    ctx: &ServerContext,
) {
    let info = handshake_info(connection);
    let resumed = info.resumed == Some(true);
    let early = info.early_data_accepted == Some(true);
    ctx.stats.quic.record(resumed, early);
    ctx.log(format_args!(
        "quic {peer}: QUIC v1, {}, {}, ALPN {}{}{}",
        info.cipher_suite.as_deref().unwrap_or("?"),
        info.key_exchange_group.as_deref().unwrap_or("?"),
        info.alpn.as_deref().unwrap_or("none"),
        if resumed { ", resumed" } else { "" },
        if early { ", 0-RTT accepted" } else { "" },
    ));
}

/// What proto's crypto session saw of this connection's TLS handshake
/// (empty, and `handshake_complete: false`, before the ClientHello).
fn handshake_info(connection: &quinn::Connection) -> QuicHandshakeInfo {
    connection
        .handshake_data()
        .and_then(|d| d.downcast::<QuicHandshakeInfo>().ok())
        .map(|b| *b)
        .unwrap_or_default()
}

const CLOSED_BY_CLIENT: &str = "closed by the client";
const CLOSED_BY_CLIENT_IN_HANDSHAKE: &str =
    "closed by the client before the handshake was confirmed (its code hidden as APPLICATION_ERROR)";

/// Whether a connection's ending (from [`describe_close`]) is the client's
/// ordinary close.
fn client_closed(ending: &str) -> bool {
    ending == CLOSED_BY_CLIENT || ending == CLOSED_BY_CLIENT_IN_HANDSHAKE
}

fn describe_close(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) if close.error_code.into_inner() == 0 => {
            CLOSED_BY_CLIENT.into()
        }
        // A client that closes before it has seen HANDSHAKE_DONE sends its
        // CONNECTION_CLOSE in Handshake packets too, where an application's
        // error code must not appear (RFC 9000 §10.2.3): it arrives as the
        // transport error APPLICATION_ERROR (0x0c) with an empty reason. A
        // 0-RTT client that closes right after its echo does exactly that.
        quinn::ConnectionError::ConnectionClosed(close)
            if close.error_code == quinn::TransportErrorCode::APPLICATION_ERROR =>
        {
            CLOSED_BY_CLIENT_IN_HANDSHAKE.into()
        }
        quinn::ConnectionError::TimedOut => "idle timeout: the client went silent".into(),
        quinn::ConnectionError::LocallyClosed => "closed by the server".into(),
        other => other.to_string(),
    }
}

/// Why the server will drop (or refuse) `datagram` before any connection
/// sees it, when that can be told from its first bytes; `None` when it
/// looks like QUIC (it may still fail decryption, and be dropped silently
/// by quinn: an attacker without the keys cannot forge packets).
///
/// ```text
/// long header:  1 F T T x x x x | version (32) | DCID len | DCID | ...
/// short header: 0 F x x x x x x | DCID | ...        (F: the fixed bit, 1)
/// ```
pub fn classify_datagram(datagram: &[u8]) -> Option<String> {
    let first = *datagram.first()?;
    if first & 0x40 == 0 {
        return Some("not QUIC: the fixed bit (0x40 of the first byte) is 0".into());
    }
    if first & 0x80 == 0 {
        return None; // a short-header packet: only its connection can judge it
    }
    let Some(version) = datagram.get(1..5) else {
        return Some(format!(
            "a truncated QUIC long header ({} bytes)",
            datagram.len()
        ));
    };
    let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
    if version != 1 {
        return Some(format!(
            "QUIC version {version:#x} is not supported (answered with Version Negotiation if large enough)"
        ));
    }
    if (first >> 4) & 0x3 == 0 && datagram.len() < 1200 {
        return Some(format!(
            "an Initial packet in a datagram of {} bytes: clients must pad the first flight to 1200 bytes (anti-amplification)",
            datagram.len()
        ));
    }
    None
}

/// The anti-amplification limit (RFC 9000 §8.1): until a client's address
/// is validated, the server sends it at most three times what it received
/// from it, so that a forged source address cannot turn the server into
/// an amplifier aimed at someone else.
///
/// quinn 0.11 checks that limit before each datagram and then allows a
/// whole datagram (quinn issue #1082): one 1 200-byte Initial from an
/// address that never answers got 3 822 bytes back, 3.19×. This enforces
/// the limit on the socket, per address: a datagram over the budget is not
/// sent (quinn sees a loss, as if the network dropped it). An address
/// counts as validated once a Handshake packet or a 1-RTT packet arrives
/// from it: only a client that received the server's Initial can send one.
#[derive(Debug, Default)]
pub struct AmplificationBudgets {
    peers: HashMap<SocketAddr, Budget>,
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    received: u64,
    sent: u64,
    validated: bool,
    last: Instant,
}

impl AmplificationBudgets {
    /// Most addresses tracked at once; when full, entries idle for
    /// [`Self::FORGET_AFTER`] go first, then any (memory stays bounded; a
    /// forgotten address starts again with a fresh budget).
    pub const MAX_PEERS: usize = 16_384;
    pub const FORGET_AFTER: Duration = Duration::from_secs(30);

    /// Accounts for a datagram from `peer`.
    pub fn received(&mut self, peer: SocketAddr, datagram: &[u8], now: Instant) {
        let Some(&first) = datagram.first() else {
            return;
        };
        let long_header = first & 0x80 != 0;
        let initial = long_header && (first >> 4) & 0x3 == 0;
        let proves_address = if long_header {
            (first >> 4) & 0x3 == 2 // a Handshake packet
        } else {
            first & 0x40 != 0 // a 1-RTT packet (fixed bit set)
        };
        if !self.peers.contains_key(&peer) {
            if !initial {
                return; // not the start of a handshake: nothing to limit
            }
            self.make_room(now);
        }
        let budget = self.peers.entry(peer).or_insert(Budget {
            received: 0,
            sent: 0,
            validated: false,
            last: now,
        });
        budget.received += datagram.len() as u64;
        budget.validated |= proves_address;
        budget.last = now;
    }

    /// How many of `segments` datagrams (`len` bytes in all) may go to
    /// `peer` now; the allowed ones are counted as sent.
    pub fn allow(&mut self, peer: SocketAddr, segment: usize, len: usize) -> usize {
        let Some(budget) = self.peers.get_mut(&peer) else {
            return len;
        };
        if budget.validated {
            return len;
        }
        let room = (budget.received * 3).saturating_sub(budget.sent) as usize;
        let allowed = if len <= room {
            len
        } else {
            room / segment.max(1) * segment.max(1)
        };
        budget.sent += allowed as u64;
        allowed
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.peers.len()
    }

    fn make_room(&mut self, now: Instant) {
        if self.peers.len() < Self::MAX_PEERS {
            return;
        }
        self.peers
            .retain(|_, b| now.duration_since(b.last) < Self::FORGET_AFTER);
        if self.peers.len() >= Self::MAX_PEERS {
            if let Some(&any) = self.peers.keys().next() {
                self.peers.remove(&any);
            }
        }
    }
}

/// The server's UDP socket, looking at every datagram on its way to quinn
/// so that obviously bad ones are counted and logged (quinn drops them
/// silently), and holding replies to the anti-amplification limit
/// ([`AmplificationBudgets`]).
#[derive(Debug)]
struct InspectingSocket {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    ctx: Arc<ServerContext>,
    budgets: Mutex<AmplificationBudgets>,
}

impl InspectingSocket {
    fn budgets(&self) -> std::sync::MutexGuard<'_, AmplificationBudgets> {
        self.budgets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl quinn::AsyncUdpSocket for InspectingSocket {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        let len = transmit.contents.len();
        let segment = transmit.segment_size.unwrap_or(len);
        let allowed = self.budgets().allow(transmit.destination, segment, len);
        if allowed == len {
            return self.inner.try_send(transmit);
        }
        self.ctx.stats.amplification_drops.fetch_add(1, Relaxed);
        if allowed == 0 {
            return Ok(()); // "sent": lost on the way, as far as quinn knows
        }
        let mut within = quinn::udp::Transmit {
            contents: &transmit.contents[..allowed],
            ..*transmit
        };
        if allowed <= segment {
            within.segment_size = None;
        }
        self.inner.try_send(&within)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        let n = std::task::ready!(self.inner.poll_recv(cx, bufs, meta))?;
        for (buf, m) in bufs.iter().zip(meta.iter()).take(n) {
            let Some(received) = buf.get(..m.len) else {
                continue;
            };
            // With GRO, one buffer holds several datagrams of `stride` bytes.
            let now = Instant::now();
            let mut budgets = self.budgets();
            for datagram in received.chunks(m.stride.max(1)) {
                budgets.received(m.addr, datagram, now);
                if let Some(why) = classify_datagram(datagram) {
                    let seen = self.ctx.stats.invalid_datagrams.fetch_add(1, Relaxed) + 1;
                    // A flood must not become a flood of log lines.
                    if seen <= 10 || seen.is_multiple_of(1000) {
                        self.ctx.log(format_args!(
                            "quic {}: dropped a {}-byte datagram: {why} ({seen} so far)",
                            m.addr,
                            datagram.len()
                        ));
                    }
                }
            }
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::{classify_datagram, AmplificationBudgets, RetryPolicy};
    use std::time::Instant;

    #[test]
    fn unvalidated_addresses_get_at_most_three_times_what_they_sent() {
        let mut budgets = AmplificationBudgets::default();
        let peer = "10.0.0.1:4433".parse().unwrap();
        let now = Instant::now();
        let mut initial = vec![0xC3, 0, 0, 0, 1];
        initial.resize(1200, 0);
        budgets.received(peer, &initial, now);
        // 3 600 bytes of budget: three 1 200-byte datagrams, not a fourth.
        assert_eq!(budgets.allow(peer, 1200, 2400), 2400);
        assert_eq!(budgets.allow(peer, 1252, 1252), 0);
        assert_eq!(budgets.allow(peer, 1200, 1200), 1200);
        assert_eq!(budgets.allow(peer, 100, 100), 0);
        // A Handshake packet proves the address: no limit from then on.
        budgets.received(peer, &[0xE0, 0, 0, 0, 1], now);
        assert_eq!(budgets.allow(peer, 1200, 12_000), 12_000);
        // Addresses that never started a handshake here are not limited.
        let other = "10.0.0.2:1".parse().unwrap();
        budgets.received(other, &[0x40, 1, 2], now);
        assert_eq!(budgets.allow(other, 1200, 1200), 1200);
    }

    #[test]
    fn the_table_of_addresses_stays_bounded() {
        let mut budgets = AmplificationBudgets::default();
        let now = Instant::now();
        let mut initial = vec![0xC3, 0, 0, 0, 1];
        initial.resize(1200, 0);
        for i in 0..AmplificationBudgets::MAX_PEERS + 100 {
            let peer = std::net::SocketAddr::from((
                [10, 0, (i >> 8) as u8, i as u8],
                1000 + (i >> 16) as u16,
            ));
            budgets.received(peer, &initial, now);
        }
        assert!(budgets.tracked() <= AmplificationBudgets::MAX_PEERS);
    }

    #[test]
    fn retry_policy() {
        assert!(!RetryPolicy::Auto.wants_retry(63, 256));
        assert!(RetryPolicy::Auto.wants_retry(64, 256));
        assert!(RetryPolicy::Always.wants_retry(0, 256));
        assert!(!RetryPolicy::Never.wants_retry(1000, 256));
        assert_eq!("always".parse(), Ok(RetryPolicy::Always));
        assert!("sometimes".parse::<RetryPolicy>().is_err());
    }

    #[test]
    fn obvious_garbage_is_named() {
        assert!(classify_datagram(b"0 is not QUIC")
            .unwrap()
            .contains("fixed bit"));
        // Most ASCII text has the fixed bit set: it looks like a short header.
        assert_eq!(classify_datagram(b"hello"), None);
        assert!(classify_datagram(&[0xC0, 0, 0])
            .unwrap()
            .contains("truncated"));
        assert!(classify_datagram(&[0xC0, 0xff, 0, 0, 0x1d, 0])
            .unwrap()
            .contains("version"));
        let short_initial = [0xC0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        assert!(classify_datagram(&short_initial).unwrap().contains("1200"));
        let mut initial = vec![0xC3, 0, 0, 0, 1];
        initial.resize(1200, 0);
        assert_eq!(classify_datagram(&initial), None);
        assert_eq!(classify_datagram(&[0x40, 1, 2, 3]), None, "short header");
        assert_eq!(classify_datagram(&[]), None, "nothing to judge");
    }
}
