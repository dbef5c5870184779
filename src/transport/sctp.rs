//! SCTP in userspace over UDP (RFC 6951), client side, and the plumbing the
//! server shares: message-based streams on one association.
//!
//! The kernel here has no SCTP, so proto runs it the way WebRTC data
//! channels do: an SCTP stack in the process (the sans-IO crate
//! `sctp-proto`), its packets carried in UDP datagrams to port 9899.
//!
//! # The four-way handshake (RFC 9260 §5.1), done by proto itself
//!
//! ```text
//!  client                                              server
//!    | INIT (tag 0; my tag Tc, my first TSN)              |   keeps nothing
//!    |--------------------------------------------------->|
//!    |         INIT-ACK (tag Tc; my tag Ts, State Cookie) |   cookie = both INITs,
//!    |<---------------------------------------------------|   signed (HMAC)
//!    | COOKIE-ECHO (tag Ts; the cookie) + DATA            |   checks the signature:
//!    |--------------------------------------------------->|   only now an association
//!    |                        COOKIE-ACK + DATA (the echo)|
//!    |<---------------------------------------------------|
//! ```
//!
//! Two round trips of chunks, but the client's first message rides in the
//! same packet as its COOKIE-ECHO (bundling), so data waits only one round
//! trip, like TCP's. The cookie is the point: the server answers an INIT
//! without remembering anything, so a flood of forged INITs costs it no
//! memory (TCP needs SYN cookies for the same effect).
//!
//! `sctp-proto` would keep state from the first INIT, so proto writes the
//! four chunks itself (here and in `server::sctp`) and hands the stack both
//! INIT chunks once the handshake is proven, through its "SNAP" entry point
//! (an association built from the two INITs, draft-hancke-tsvwg-snap).
//! Until the COOKIE-ACK arrives, every packet the client sends starts with
//! its COOKIE-ECHO, so a lost COOKIE-ECHO is repeated with the data.
//!
//! # What is not here: multi-homing
//!
//! SCTP lets each side list several addresses in its INIT and fail over
//! between them. `sctp-proto` keeps one remote address per association, so
//! proto shows the addresses a peer offers (usrsctp lists all of its own)
//! but sends to one path only; see [`ConnectedSctp::peer_addresses`].

use super::{ConnectInfo, Target, Transport};
use crate::wire::sctp::{self as wire, param, ChunkType, Init, OwnedChunk, Packet};
use anyhow::{bail, Context};
use bytes::Bytes;
use sctp_proto::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event,
    Payload, PayloadProtocolIdentifier, ReliabilityType, StreamEvent, TransportConfig,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// The largest user message proto sends or accepts (64 KiB, like a frame).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// The most streams proto opens in one association.
pub const MAX_STREAMS: u16 = 1024;
/// RTO.Initial (RFC 9260 §16: 1 s): the first INIT retransmission.
const RTO_INITIAL: Duration = Duration::from_secs(1);
/// How often INIT or a lone COOKIE-ECHO is sent before giving up
/// (RFC 9260 Max.Init.Retransmits = 8).
const MAX_INIT_RETRANSMITS: u32 = 8;
/// A packet bundling COOKIE-ECHO and data stays below this size, so it
/// fits a 1500-byte MTU after IP and UDP headers (else they go apart).
const MAX_BUNDLE: usize = 1400;
/// A client with nothing to say sends its COOKIE-ECHO alone after this.
const LONE_COOKIE_AFTER: Duration = Duration::from_millis(20);
/// Largest UDP datagram proto reads.
pub const MAX_PACKET: usize = 65535;

/// The stack's settings for one association between two SCTP ports.
///
/// RTO.min is 200 ms (Linux TCP's value) instead of RFC 9260's 1 s, so a
/// lost packet costs the same on SCTP as on TCP in `proto hol`.
pub fn transport_config(local_port: u16, remote_port: u16) -> Arc<TransportConfig> {
    Arc::new(
        TransportConfig::default()
            .with_local_port(local_port)
            .with_remote_port(remote_port)
            .with_max_num_outbound_streams(MAX_STREAMS)
            .with_max_num_inbound_streams(MAX_STREAMS)
            .with_max_send_message_size(MAX_MESSAGE as u32)
            .with_max_receive_message_size(MAX_MESSAGE as u32)
            .with_rto_initial_ms(RTO_INITIAL.as_millis() as u64)
            .with_rto_min_ms(200)
            .with_rto_max_ms(10_000),
    )
}

/// A fresh INIT chunk for our side (random tag and first TSN), as the
/// stack would send it, and its parsed value.
pub fn local_init(config: &TransportConfig) -> anyhow::Result<(Bytes, OwnedChunk)> {
    let token = sctp_proto::generate_snap_token(config)
        .map_err(|e| anyhow::anyhow!("building an INIT chunk: {e}"))?;
    let chunk = chunk_from_bytes(&token).context("the stack's own INIT chunk")?;
    Ok((token, chunk))
}

/// Parses one chunk on its own (type, flags, length, value).
fn chunk_from_bytes(bytes: &[u8]) -> anyhow::Result<OwnedChunk> {
    if bytes.len() < wire::CHUNK_HEADER_LEN {
        bail!("chunk shorter than its header");
    }
    let len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
    if len < wire::CHUNK_HEADER_LEN || len > bytes.len() {
        bail!("chunk length {len} does not fit {} bytes", bytes.len());
    }
    Ok(OwnedChunk::new(
        ChunkType(bytes[0]),
        bytes[1],
        bytes[wire::CHUNK_HEADER_LEN..len].to_vec(),
    ))
}

/// Turns a peer's INIT or INIT-ACK into the INIT chunk the stack's SNAP
/// entry point takes. Only parameters the stack understands are kept:
/// addresses (multi-homing), AUTH and the State Cookie are left out.
pub fn init_for_stack(init: &Init<'_>) -> Bytes {
    let kept: Vec<wire::Param<'_>> = init
        .params
        .iter()
        .filter(|p| {
            matches!(
                p.kind,
                param::SUPPORTED_EXTENSIONS | param::FORWARD_TSN_SUPPORTED
            )
        })
        .copied()
        .collect();
    let value = init.encode_value(&kept);
    let mut out = Vec::with_capacity(4 + value.len());
    out.push(ChunkType::INIT.0);
    out.push(0);
    out.extend_from_slice(&((4 + value.len()) as u16).to_be_bytes());
    out.extend_from_slice(&value);
    Bytes::from(out)
}

/// A stack endpoint that never accepts an association by itself: every
/// association comes from [`Endpoint::connect`] with both INITs (SNAP).
pub fn snap_only_endpoint() -> Endpoint {
    let mut endpoint = Endpoint::new(
        Arc::new(EndpointConfig::default()),
        Some(Arc::new(sctp_proto::ServerConfig::default())),
    );
    endpoint.reject_new_associations();
    endpoint
}

/// Builds the stack's association from both INIT chunks.
pub fn snap_association(
    endpoint: &mut Endpoint,
    config: Arc<TransportConfig>,
    local_init: Bytes,
    remote_init: Bytes,
    peer: SocketAddr,
) -> anyhow::Result<(AssociationHandle, Association)> {
    let mut client = ClientConfig::new().with_snap(local_init, remote_init);
    client.transport = config;
    endpoint
        .connect(client, peer)
        .map_err(|e| anyhow::anyhow!("the SCTP stack refused the association: {e}"))
}

/// Everything an association produced after input or a timer: packets to
/// send, whole messages received (stream, bytes), and whether it ended.
#[derive(Debug, Default)]
pub struct Output {
    pub packets: Vec<Bytes>,
    pub messages: Vec<(u16, PayloadProtocolIdentifier, Bytes)>,
    /// Streams the peer opened.
    pub opened: Vec<u16>,
    /// Set when the association is over (the reason, for the log).
    pub ended: Option<String>,
}

/// Drains an association after input, a timeout or a write: its events
/// (messages become whole `Bytes`) and its packets.
pub fn pump(association: &mut Association, now: Instant, out: &mut Output) {
    while let Some(event) = association.poll() {
        match event {
            Event::Stream(StreamEvent::Readable { id }) => {
                read_stream(association, id, out);
            }
            Event::Stream(StreamEvent::Opened { id }) => {
                // Take it off the accept queue (which would grow otherwise).
                let _ = association.accept_stream();
                out.opened.push(id);
                read_stream(association, id, out);
            }
            Event::AssociationLost { reason } => {
                out.ended = Some(format!("association lost: {reason}"));
            }
            Event::HandshakeFailed { reason } => {
                out.ended = Some(format!("handshake failed: {reason}"));
            }
            _ => {}
        }
    }
    // The stack tells its endpoint to forget an association as soon as a
    // SHUTDOWN starts ("drained"), after which the endpoint would drop the
    // SHUTDOWN-ACK. proto gives every association an endpoint of its own
    // and drops both together, so these events are not passed on.
    while association.poll_endpoint_event().is_some() {}
    while let Some(transmit) = association.poll_transmit(now) {
        if let Payload::RawEncode(packets) = transmit.payload {
            out.packets.extend(packets);
        }
    }
    if association.is_closed() && out.ended.is_none() {
        out.ended = Some("association closed".into());
    }
}

fn read_stream(association: &mut Association, id: u16, out: &mut Output) {
    let Ok(mut stream) = association.stream(id) else {
        return;
    };
    while let Ok(Some(chunks)) = stream.read_sctp() {
        let mut message = vec![0u8; chunks.len()];
        if let Ok(n) = chunks.read(&mut message) {
            message.truncate(n);
            out.messages.push((id, chunks.ppi, Bytes::from(message)));
        }
    }
}

/// SCTP user messages are 1 byte to [`MAX_MESSAGE`] here.
fn check_message_size(message: &[u8]) -> anyhow::Result<()> {
    if message.is_empty() {
        bail!("SCTP cannot carry an empty user message");
    }
    if message.len() > MAX_MESSAGE {
        bail!(
            "a message of {} bytes is over proto's SCTP limit of {MAX_MESSAGE} bytes",
            message.len()
        );
    }
    Ok(())
}

/// Queues one user message on `stream` (opening it if needed), ordered or
/// unordered (the U flag: delivered as soon as it is complete).
pub fn write_message(
    association: &mut Association,
    stream: u16,
    unordered: bool,
    ppi: PayloadProtocolIdentifier,
    message: &Bytes,
) -> anyhow::Result<()> {
    check_message_size(message)?;
    let mut s = match association.stream(stream) {
        Ok(s) => s,
        Err(_) => association
            .open_stream(stream, ppi)
            .map_err(|e| anyhow::anyhow!("cannot open SCTP stream {stream}: {e}"))?,
    };
    s.set_reliability_params(unordered, ReliabilityType::Reliable, 0)
        .map_err(|e| anyhow::anyhow!("stream {stream}: {e}"))?;
    s.write_sctp(message, ppi)
        .map_err(|e| anyhow::anyhow!("cannot send on SCTP stream {stream}: {e}"))?;
    Ok(())
}

/// Options of a client association.
#[derive(Debug, Clone)]
pub struct SctpOptions {
    /// The SCTP port of the service inside the UDP encapsulation.
    pub sctp_port: u16,
}

impl Default for SctpOptions {
    fn default() -> Self {
        SctpOptions {
            sctp_port: wire::ECHO_SCTP_PORT,
        }
    }
}

/// What the client learnt in the handshake, beyond [`ConnectInfo`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SctpHandshake {
    pub local_tag: u32,
    pub peer_tag: u32,
    /// Streams usable each way (the smaller of what both sides offered).
    pub outbound_streams: u16,
    pub inbound_streams: u16,
    pub cookie_bytes: usize,
    /// Addresses the peer listed in its INIT-ACK (multi-homing); proto's
    /// stack sends to one path only.
    pub peer_addresses: Vec<std::net::IpAddr>,
    /// INIT sent → INIT-ACK received (one round trip).
    pub init_to_init_ack_us: f64,
    /// How many INITs were sent (more than one: one was lost or late).
    pub init_attempts: u32,
}

/// An open association: hand out streams, then close it.
pub struct ConnectedSctp {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    driver: tokio::task::JoinHandle<()>,
    pub handshake: SctpHandshake,
    pub peer: SocketAddr,
}

#[derive(Debug, Default)]
struct Shared {
    /// Why the association ended, once it has.
    ended: Mutex<Option<String>>,
    /// The COOKIE-ACK has arrived (the server has state now).
    cookie_acked: std::sync::atomic::AtomicBool,
}

enum Command {
    Open {
        stream: u16,
        deliver: mpsc::UnboundedSender<Bytes>,
    },
    Send {
        stream: u16,
        unordered: bool,
        message: Bytes,
    },
    Close,
}

/// Connects: INIT, INIT-ACK (retransmitting INIT as RFC 9260 says), then
/// an established association whose first packets carry the COOKIE-ECHO.
pub async fn connect(
    target: &Target,
    opts: &SctpOptions,
    limit: Duration,
) -> anyhow::Result<(ConnectedSctp, ConnectInfo)> {
    let socket = super::udp::connect(target).await?;
    let addr = socket.peer_addr().context("the UDP peer")?;
    connect_on(socket, addr, opts, limit).await
}

/// [`connect`] on a UDP socket already connected to `addr`.
pub async fn connect_on(
    socket: UdpSocket,
    addr: SocketAddr,
    opts: &SctpOptions,
    limit: Duration,
) -> anyhow::Result<(ConnectedSctp, ConnectInfo)> {
    // An ephemeral SCTP port for our side (it only has to differ per
    // association from the same UDP address, and it does: one socket each).
    let local_port = 49152 + (rand_u32() % 16384) as u16;
    let config = transport_config(local_port, opts.sctp_port);
    let (token, init_chunk) = local_init(&config)?;
    let init_packet = wire::encode(local_port, opts.sctp_port, 0, &[init_chunk]);
    let mut buf = vec![0u8; MAX_PACKET];
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut sent_at;
    let mut rto = RTO_INITIAL;
    let overall = tokio::time::Instant::now() + limit;
    // INIT until an INIT-ACK comes back.
    let (init_ack, answer_bytes) = 'init: loop {
        if attempts > MAX_INIT_RETRANSMITS {
            bail!("no INIT-ACK after {attempts} INITs: is 'proto serve sctp' running on {addr} (UDP)?");
        }
        attempts += 1;
        sent_at = Instant::now();
        socket
            .send(&init_packet)
            .await
            .map_err(|e| explain(e, addr))?;
        let retry = (tokio::time::Instant::now() + rto).min(overall);
        loop {
            let n = match tokio::time::timeout_at(retry, socket.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(explain(e, addr)),
                Err(_) if tokio::time::Instant::now() >= overall => bail!(
                    "no INIT-ACK from {addr} within {} after {attempts} INITs: is 'proto serve sctp' running there? (--timeout waits longer)",
                    crate::units::format_duration(limit)
                ),
                Err(_) => break,
            };
            let Ok(packet) = Packet::parse(&buf[..n]) else {
                continue;
            };
            if packet.header.verification_tag != init_tag(&token) {
                continue;
            }
            if let Some(abort) = packet.find(ChunkType::ABORT) {
                bail!("the server answered INIT with ABORT ({})", abort.summary());
            }
            if packet.first().kind == ChunkType::INIT_ACK {
                break 'init (buf[..n].to_vec(), n);
            }
        }
        rto = (rto * 2).min(Duration::from_secs(10));
    };
    let init_to_init_ack = sent_at.elapsed();
    let packet = Packet::parse(&init_ack).context("re-reading the INIT-ACK")?;
    let ack = Init::parse(packet.first()).context("the server's INIT-ACK")?;
    let cookie = ack
        .param(param::STATE_COOKIE)
        .context("the INIT-ACK carries no State Cookie (RFC 9260 requires one)")?
        .to_vec();
    if ack.initiate_tag == 0 {
        bail!("the INIT-ACK's Initiate Tag is 0, which RFC 9260 forbids");
    }
    let mut endpoint = snap_only_endpoint();
    let (handle, association) = snap_association(
        &mut endpoint,
        config,
        token.clone(),
        init_for_stack(&ack),
        addr,
    )?;
    let handshake = SctpHandshake {
        local_tag: init_tag(&token),
        peer_tag: ack.initiate_tag,
        outbound_streams: ack.inbound_streams.min(MAX_STREAMS),
        inbound_streams: ack.outbound_streams.min(MAX_STREAMS),
        cookie_bytes: cookie.len(),
        peer_addresses: ack.addresses(),
        init_to_init_ack_us: init_to_init_ack.as_secs_f64() * 1e6,
        init_attempts: attempts,
    };
    let info = ConnectInfo {
        transport: Some(Transport::Sctp),
        peer: Some(addr),
        handshake_us: Some(started.elapsed().as_secs_f64() * 1e6),
        handshake_bytes_sent: Some(
            (init_packet.len() + wire::CHUNK_HEADER_LEN + cookie.len()) as u64,
        ),
        handshake_bytes_received: Some(answer_bytes as u64 + wire::CHUNK_HEADER_LEN as u64),
        ..ConnectInfo::default()
    };
    let (commands, inbox) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::default());
    let driver = Driver {
        socket,
        peer: addr,
        endpoint,
        handle,
        association,
        cookie_echo: Some(CookieEcho {
            chunk: OwnedChunk::new(ChunkType::COOKIE_ECHO, 0, cookie),
            local_port,
            remote_port: opts.sctp_port,
            peer_tag: ack.initiate_tag,
            last_sent: None,
            first_due: Instant::now() + LONE_COOKIE_AFTER,
            rto: RTO_INITIAL,
            attempts: 0,
        }),
        streams: HashMap::new(),
        shared: shared.clone(),
        close_requested: false,
        closing: false,
        highest_tsn_sent: None,
        cumulative_ack: None,
    };
    let driver = tokio::spawn(driver.run(inbox));
    Ok((
        ConnectedSctp {
            commands,
            shared,
            driver,
            handshake,
            peer: addr,
        },
        info,
    ))
}

fn init_tag(token: &[u8]) -> u32 {
    // The Initiate Tag is the first field of the INIT value (after the
    // 4-byte chunk header); `local_init` built the token, so it is there.
    token
        .get(4..8)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// Whether TSN `a` comes after `b`. TSNs are 32-bit counters that wrap
/// around, so "after" is serial-number arithmetic (RFC 1982): `a` is after
/// `b` when it is less than 2^31 steps ahead.
pub fn tsn_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// A random u32 from the OS (tags must be unpredictable; ring's generator).
pub fn rand_u32() -> u32 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u32::from_be_bytes(b)
}

fn explain(e: std::io::Error, addr: SocketAddr) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        anyhow::anyhow!(
            "connection refused (ICMP port unreachable): is 'proto serve sctp' running on {addr} (UDP)?"
        )
    } else {
        anyhow::Error::new(e).context("SCTP over UDP")
    }
}

impl ConnectedSctp {
    /// A handle on stream `id` of this association. Messages written to it
    /// are sent in order, or unordered (`unordered`: U flag set).
    pub fn stream(&self, id: u16, unordered: bool) -> SctpStream {
        let (deliver, incoming) = mpsc::unbounded_channel();
        let _ = self.commands.send(Command::Open {
            stream: id,
            deliver,
        });
        SctpStream {
            id,
            unordered,
            commands: self.commands.clone(),
            incoming,
            pending: Bytes::new(),
            shared: self.shared.clone(),
        }
    }

    /// Whether the server has confirmed the association (COOKIE-ACK).
    pub fn cookie_acked(&self) -> bool {
        self.shared
            .cookie_acked
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes gracefully (SHUTDOWN, SHUTDOWN-ACK, SHUTDOWN-COMPLETE), waiting
    /// at most `limit`.
    pub async fn close(self, limit: Duration) {
        let _ = self.commands.send(Command::Close);
        let mut driver = self.driver;
        if tokio::time::timeout(limit, &mut driver).await.is_err() {
            driver.abort();
        }
    }

    /// Drops the association at once, telling the peer nothing.
    pub fn abandon(self) {
        self.driver.abort();
    }
}

/// One stream of an association: whole messages in and out. Also an
/// `AsyncRead`/`AsyncWrite` (each write is one message, reads return the
/// bytes of messages in order), for the load generator.
pub struct SctpStream {
    pub id: u16,
    unordered: bool,
    commands: mpsc::UnboundedSender<Command>,
    incoming: mpsc::UnboundedReceiver<Bytes>,
    pending: Bytes,
    shared: Arc<Shared>,
}

impl SctpStream {
    /// Sends one user message.
    pub fn send(&self, message: &[u8]) -> anyhow::Result<()> {
        check_message_size(message)?;
        self.commands
            .send(Command::Send {
                stream: self.id,
                unordered: self.unordered,
                message: Bytes::copy_from_slice(message),
            })
            .map_err(|_| self.ended())
    }

    /// Waits for the next whole message on this stream.
    pub async fn recv(&mut self, limit: Duration) -> anyhow::Result<Bytes> {
        if !self.pending.is_empty() {
            return Ok(std::mem::take(&mut self.pending));
        }
        match tokio::time::timeout(limit, self.incoming.recv()).await {
            Ok(Some(message)) => Ok(message),
            Ok(None) => Err(self.ended()),
            Err(_) => bail!(
                "no reply within {} (--timeout waits longer)",
                crate::units::format_duration(limit)
            ),
        }
    }

    /// Sends one message and waits for one back on the same stream.
    pub async fn exchange(&mut self, message: &[u8], limit: Duration) -> anyhow::Result<Bytes> {
        self.send(message)?;
        self.recv(limit).await
    }

    fn ended(&self) -> anyhow::Error {
        let why = self
            .shared
            .ended
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "the association ended".into());
        anyhow::anyhow!("SCTP: {why}")
    }
}

impl AsyncRead for SctpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            match this.incoming.poll_recv(cx) {
                Poll::Ready(Some(message)) => this.pending = message,
                Poll::Ready(None) => return Poll::Ready(Ok(())), // end of stream
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SctpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(MAX_MESSAGE);
        match self.send(&buf[..n]) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(e) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                format!("{e:#}"),
            ))),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The COOKIE-ECHO the client repeats until the COOKIE-ACK arrives.
struct CookieEcho {
    chunk: OwnedChunk,
    local_port: u16,
    remote_port: u16,
    peer_tag: u32,
    /// When it last left (alone or bundled); `None` before the first time.
    last_sent: Option<Instant>,
    /// If no message has carried it by then, it leaves alone.
    first_due: Instant,
    rto: Duration,
    attempts: u32,
}

/// The client's I/O loop: the only owner of the socket and the stack.
struct Driver {
    socket: UdpSocket,
    peer: SocketAddr,
    endpoint: Endpoint,
    handle: AssociationHandle,
    association: Association,
    cookie_echo: Option<CookieEcho>,
    streams: HashMap<u16, mpsc::UnboundedSender<Bytes>>,
    shared: Arc<Shared>,
    /// The owner asked to close: SHUTDOWN once all our data is acknowledged.
    close_requested: bool,
    /// SHUTDOWN has been started in the stack.
    closing: bool,
    /// The highest TSN we sent and the peer's cumulative acknowledgement,
    /// read from the packets themselves (see [`Driver::all_acked`]).
    highest_tsn_sent: Option<u32>,
    cumulative_ack: Option<u32>,
}

impl Driver {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; MAX_PACKET];
        let why = loop {
            // Take every command already queued first, so a message sent
            // right after connecting rides with the COOKIE-ECHO.
            let mut stop = None;
            while let Ok(command) = inbox.try_recv() {
                if let Err(why) = self.command(Some(command)) {
                    stop = Some(why);
                    break;
                }
            }
            if let Some(why) = stop {
                break why;
            }
            let now = Instant::now();
            let mut out = Output::default();
            pump(&mut self.association, now, &mut out);
            match self.flush(&out.packets, now).await {
                Ok(true) => break "closed".into(),
                Ok(false) => {}
                Err(e) => break format!("{e:#}"),
            }
            for (stream, _, message) in out.messages {
                if let Some(tx) = self.streams.get(&stream) {
                    let _ = tx.send(message);
                }
            }
            if let Some(why) = out.ended {
                break why;
            }
            if let Err(e) = self.cookie_timer(now).await {
                break format!("{e:#}");
            }
            let wake = [
                self.association.poll_timeout(),
                self.cookie_echo
                    .as_ref()
                    .map(|c| c.last_sent.map_or(c.first_due, |t| t + c.rto)),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(3600));
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wake));
            tokio::select! {
                received = self.socket.recv(&mut buf) => match received {
                    Ok(n) => {
                        self.incoming(&buf[..n]);
                        if let Err(why) = self.maybe_shutdown() {
                            break why;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        break format!("{:#}", explain(e, self.peer));
                    }
                    Err(_) => {}
                },
                command = inbox.recv() => {
                    if let Err(why) = self.command(command) {
                        break why;
                    }
                }
                _ = sleep => {
                    self.association.handle_timeout(Instant::now());
                }
            }
        };
        if let Ok(mut ended) = self.shared.ended.lock() {
            *ended = Some(why);
        }
        // Dropping `self.streams` ends every stream's `recv`.
    }

    /// Carries out one command from a stream handle or the owner; `Err`
    /// ends the association with that reason.
    fn command(&mut self, command: Option<Command>) -> Result<(), String> {
        match command {
            Some(Command::Open { stream, deliver }) => {
                self.streams.insert(stream, deliver);
            }
            Some(Command::Send {
                stream,
                unordered,
                message,
            }) => {
                write_message(
                    &mut self.association,
                    stream,
                    unordered,
                    PayloadProtocolIdentifier::Binary,
                    &message,
                )
                .map_err(|e| format!("{e:#}"))?;
            }
            Some(Command::Close) | None => {
                if self.close_requested {
                    return Err("closed".into());
                }
                self.close_requested = true;
            }
        }
        self.maybe_shutdown()
    }

    /// Starts SHUTDOWN once asked to and everything we sent is
    /// acknowledged: the stack ignores SACKs after its SHUTDOWN, so data
    /// still in flight then would be retransmitted forever.
    fn maybe_shutdown(&mut self) -> Result<(), String> {
        if !self.close_requested || self.closing || !self.all_acked() {
            return Ok(());
        }
        self.closing = true;
        self.association
            .shutdown()
            .map_err(|_| String::from("closed"))
    }

    /// Whether the peer's cumulative TSN ack covers every TSN we sent
    /// (serial-number arithmetic, RFC 1982: TSNs wrap around).
    fn all_acked(&self) -> bool {
        match (self.highest_tsn_sent, self.cumulative_ack) {
            (None, _) => self.cookie_echo.is_none(),
            (Some(_), None) => false,
            (Some(sent), Some(acked)) => !tsn_after(sent, acked),
        }
    }

    /// Feeds a received packet to the stack; a COOKIE-ACK in it ends the
    /// handshake (and is not the stack's business).
    fn incoming(&mut self, datagram: &[u8]) {
        let Ok(packet) = Packet::parse(datagram) else {
            return; // garbage or a bad checksum: SCTP drops it silently
        };
        for chunk in &packet.chunks {
            if let (ChunkType::SACK, Ok(sack)) = (chunk.kind, wire::Sack::parse(chunk)) {
                let newer = self
                    .cumulative_ack
                    .is_none_or(|old| tsn_after(sack.cumulative_tsn_ack, old));
                if newer {
                    self.cumulative_ack = Some(sack.cumulative_tsn_ack);
                }
            }
        }
        let mut bytes = Bytes::copy_from_slice(datagram);
        if self.cookie_echo.is_some() {
            if packet.find(ChunkType::COOKIE_ACK).is_some() {
                self.shared
                    .cookie_acked
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let rest: Vec<OwnedChunk> = packet
                    .chunks
                    .iter()
                    .filter(|c| c.kind != ChunkType::COOKIE_ACK)
                    .map(OwnedChunk::from_chunk)
                    .collect();
                self.cookie_echo = None;
                if rest.is_empty() {
                    return;
                }
                bytes = Bytes::from(wire::encode(
                    packet.header.src_port,
                    packet.header.dst_port,
                    packet.header.verification_tag,
                    &rest,
                ));
            } else if let Some(error) = packet.find(ChunkType::ERROR) {
                let stale = wire::parse_params(ChunkType::ERROR, error.value)
                    .map(|c| c.iter().any(|c| c.kind == wire::cause::STALE_COOKIE))
                    .unwrap_or(false);
                if stale {
                    if let Ok(mut ended) = self.shared.ended.lock() {
                        *ended = Some("the server found our State Cookie stale".into());
                    }
                }
            }
        }
        if let Some((handle, DatagramEvent::AssociationEvent(event))) =
            self.endpoint
                .handle(Instant::now(), self.peer, None, None, bytes)
        {
            if handle == self.handle {
                self.association.handle_event(event);
            }
        }
    }

    /// Sends the stack's packets; before the COOKIE-ACK each one carries
    /// the COOKIE-ECHO in front (RFC 9260 §5.1: DATA may follow it).
    /// Returns `true` once our SHUTDOWN-COMPLETE has left: the end.
    async fn flush(&mut self, packets: &[Bytes], now: Instant) -> std::io::Result<bool> {
        let mut complete = false;
        for p in packets {
            let Ok(parsed) = Packet::parse(p) else {
                continue;
            };
            for chunk in &parsed.chunks {
                match chunk.kind {
                    ChunkType::DATA => {
                        if let Ok(data) = wire::Data::parse(chunk) {
                            let newer = self
                                .highest_tsn_sent
                                .is_none_or(|old| tsn_after(data.tsn, old));
                            if newer {
                                self.highest_tsn_sent = Some(data.tsn);
                            }
                        }
                    }
                    ChunkType::SHUTDOWN_COMPLETE => complete = true,
                    _ => {}
                }
            }
            let Some(echo) = self.cookie_echo.as_mut() else {
                self.socket.send(p).await?;
                continue;
            };
            let mut chunks = vec![echo.chunk.clone()];
            chunks.extend(parsed.chunks.iter().map(OwnedChunk::from_chunk));
            let together = wire::encode(echo.local_port, echo.remote_port, echo.peer_tag, &chunks);
            echo.last_sent = Some(now);
            if together.len() <= MAX_BUNDLE {
                self.socket.send(&together).await?;
            } else {
                let alone = wire::encode(
                    echo.local_port,
                    echo.remote_port,
                    echo.peer_tag,
                    &chunks[..1],
                );
                self.socket.send(&alone).await?;
                self.socket.send(p).await?;
            }
        }
        Ok(complete)
    }

    /// T1-cookie (RFC 9260 §5.1 C): a lone COOKIE-ECHO when nothing else
    /// carried one for an RTO; gives up after Max.Init.Retransmits.
    async fn cookie_timer(&mut self, now: Instant) -> anyhow::Result<()> {
        let Some(echo) = self.cookie_echo.as_mut() else {
            return Ok(());
        };
        let due = match echo.last_sent {
            None => now >= echo.first_due,
            Some(t) => now >= t + echo.rto,
        };
        if !due {
            return Ok(());
        }
        if echo.last_sent.is_some() {
            echo.rto = (echo.rto * 2).min(Duration::from_secs(10));
        }
        echo.attempts += 1;
        if echo.attempts > MAX_INIT_RETRANSMITS + 1 {
            bail!("no COOKIE-ACK after {} COOKIE-ECHOs", echo.attempts - 1);
        }
        echo.last_sent = Some(now);
        let alone = wire::encode(
            echo.local_port,
            echo.remote_port,
            echo.peer_tag,
            std::slice::from_ref(&echo.chunk),
        );
        self.socket.send(&alone).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_gets_only_parameters_it_understands() {
        let init = Init {
            initiate_tag: 7,
            a_rwnd: 1000,
            outbound_streams: 10,
            inbound_streams: 20,
            initial_tsn: 99,
            params: vec![
                wire::Param {
                    kind: param::IPV4_ADDRESS,
                    value: &[10, 0, 0, 1],
                },
                wire::Param {
                    kind: param::FORWARD_TSN_SUPPORTED,
                    value: &[],
                },
                wire::Param {
                    kind: param::STATE_COOKIE,
                    value: &[1, 2, 3],
                },
                wire::Param {
                    kind: param::RANDOM,
                    value: &[0; 32],
                },
            ],
        };
        let chunk = init_for_stack(&init);
        let owned = chunk_from_bytes(&chunk).unwrap();
        assert_eq!(owned.kind, ChunkType::INIT);
        let bytes = wire::encode(1, 2, 0, &[owned]);
        let packet = Packet::parse(&bytes).unwrap();
        let back = Init::parse(packet.first()).unwrap();
        assert_eq!(
            (back.initiate_tag, back.initial_tsn, back.inbound_streams),
            (7, 99, 20)
        );
        let kinds: Vec<u16> = back.params.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, vec![param::FORWARD_TSN_SUPPORTED]);
    }

    #[test]
    fn the_stack_accepts_its_own_init_and_ours_built_from_it() {
        let config = transport_config(5000, 7);
        let (token, chunk) = local_init(&config).unwrap();
        let bytes = wire::encode(5000, 7, 0, &[chunk]);
        let packet = Packet::parse(&bytes).unwrap();
        let init = Init::parse(packet.first()).unwrap();
        assert_ne!(init.initiate_tag, 0);
        // Both sides' INITs make an established association (SNAP).
        let (peer_token, _) = local_init(&config).unwrap();
        let mut endpoint = snap_only_endpoint();
        let peer = "127.0.0.1:9".parse().unwrap();
        let (_, association) =
            snap_association(&mut endpoint, config, token, peer_token, peer).unwrap();
        assert!(!association.is_handshaking());
    }

    #[test]
    fn tsns_compare_across_the_wrap() {
        assert!(tsn_after(2, 1));
        assert!(!tsn_after(1, 1));
        assert!(tsn_after(0, u32::MAX), "0 follows 4294967295");
        assert!(tsn_after(5, u32::MAX - 5));
        assert!(!tsn_after(u32::MAX, 0));
    }

    #[test]
    fn message_sizes() {
        assert!(check_message_size(b"").is_err());
        assert!(check_message_size(&[0; MAX_MESSAGE]).is_ok());
        assert!(check_message_size(&[0; MAX_MESSAGE + 1]).is_err());
    }
}
