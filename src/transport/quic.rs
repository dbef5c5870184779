//! QUIC (RFC 9000) over UDP with quinn: configuration of both sides, the
//! client's measured connect, 0-RTT, and a window into QUIC's TLS handshake.
//!
//! # One handshake instead of two
//!
//! TCP + TLS 1.3 costs two round trips before data: TCP's SYN/SYN-ACK, then
//! TLS's ClientHello/ServerHello. QUIC carries the TLS 1.3 handshake
//! messages inside its own packets (CRYPTO frames) from the very first
//! datagram, and the transport parameters (stream limits, idle timeout, ...)
//! ride inside the TLS handshake as an extension. So connection set-up and
//! key agreement happen in the same round trip:
//!
//! ```text
//! client                                        server
//! Initial[ClientHello + transport params] ───▶            ┐
//!                 ◀─── Initial[ServerHello]                │ 1 RTT
//!                      Handshake[EncryptedExtensions,      │
//!                        Certificate, CertVerify, Finished]┘
//! Handshake[Finished], 1-RTT[STREAM data] ───▶
//! ```
//!
//! The client's first datagram is padded to at least 1200 bytes, and the
//! server sends at most three times what it received before it knows the
//! client's address is real (anti-amplification): watch the handshake byte
//! counts.
//!
//! # 0-RTT
//!
//! With a ticket from an earlier connection, the client sends stream data in
//! 0-RTT packets right behind its Initial: the request reaches the server
//! with the ClientHello, and the reply comes back with the server's first
//! flight. Like TLS early data it is replayable, so it suits idempotent
//! requests only (an uppercase echo is one).
//!
//! # What we can see of the handshake
//!
//! quinn keeps its rustls session private, so proto wraps quinn's crypto
//! session (`Observed`) and reads the plaintext ServerHello as it passes
//! (the client receives it, the server writes it): the chosen cipher suite,
//! key-exchange group, and whether the server accepted a pre-shared key
//! (resumption). Nothing is changed, only looked at. Plain QUIC v1 + ALPN:
//! any QUIC v1 client offering `proto-echo` can talk to proto's server.

use super::certs::ServerIdentity;
use super::tls::{self, Trust};
use super::{ConnectInfo, Stream, Target, Transport};
use crate::wire::tls::{parse_server_hello, ServerHelloInfo};
use anyhow::{bail, Context};
use quinn_proto::crypto::{
    self as qcrypto, ExportKeyingMaterialError, HeaderKey, KeyPair, Keys, PacketKey,
    UnsupportedVersion,
};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::{ConnectError, ConnectionId, Side, TransportError};
use std::any::Any;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What proto learnt about one QUIC connection's TLS handshake; returned
/// by `quinn::Connection::handshake_data()` for connections made with
/// proto's configs (downcast the `Box<dyn Any>` to this).
#[derive(Debug, Clone, Default)]
pub struct QuicHandshakeInfo {
    pub alpn: Option<String>,
    /// The SNI the client asked for (server side only).
    pub server_name: Option<String>,
    pub cipher_suite: Option<String>,
    pub key_exchange_group: Option<String>,
    /// The server accepted a pre-shared key from a ticket.
    pub resumed: Option<bool>,
    /// A Certificate message went by (client: received, server: sent);
    /// `None` until the handshake is over. A resumed handshake has none.
    pub certificate: Option<bool>,
    /// Server side: the server accepted the client's 0-RTT data.
    pub early_data_accepted: Option<bool>,
    /// The TLS handshake has finished on this side: a server has received
    /// and checked the client's Finished. Only this says "handshake done"
    /// for sure: a connection can be both finished *and* already closed,
    /// when the client's close arrives in the same flight as its Finished
    /// (a 0-RTT client that got its echo does exactly that).
    pub handshake_complete: bool,
}

/// The server's QUIC configuration: TLS 1.3 with ALPN `proto-echo`,
/// tickets and 0-RTT, DATAGRAM frames enabled.
/// A connection that sends nothing for `idle` (at most 30 s here) is
/// closed: that is how a client that vanished is noticed. With `key_log`
/// the session secrets go to `$SSLKEYLOGFILE` when it is set.
pub fn server_config(
    identity: &ServerIdentity,
    idle: Duration,
    key_log: bool,
) -> anyhow::Result<quinn::ServerConfig> {
    let mut tls = tls::server_config(identity, None, true)?;
    if !key_log {
        tls.key_log = Arc::new(rustls::NoKeyLog);
    }
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| anyhow::anyhow!("building the QUIC TLS config: {e}"))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(ObservedServerConfig {
        inner: Arc::new(crypto),
    }));
    config.transport_config(Arc::new(transport_config(idle)));
    Ok(config)
}

fn transport_config(idle: Duration) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    // Offer DATAGRAM frames (RFC 9221): unreliable messages inside the
    // encrypted connection.
    transport.datagram_receive_buffer_size(Some(1 << 20));
    // No path-MTU probing: it would add large probe packets right after the
    // handshake and blur the handshake byte counts.
    transport.mtu_discovery_config(None);
    let idle = idle
        .min(Duration::from_secs(30))
        .max(Duration::from_millis(100));
    let millis = u32::try_from(idle.as_millis()).unwrap_or(30_000);
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        millis,
    ))));
    transport
}

/// Everything a QUIC client connection needs; cheap to clone. Keep one
/// and reuse it: the endpoint is one UDP socket for many connections, and
/// the session store inside `tls` carries tickets to the next connection.
#[derive(Debug, Clone)]
pub struct ClientQuicOptions {
    pub endpoint: quinn::Endpoint,
    /// For connections without 0-RTT: does not even offer early data.
    pub config: quinn::ClientConfig,
    /// For 0-RTT connections: offers early data. Shares `sessions`.
    pub config_0rtt: quinn::ClientConfig,
    /// The rustls config inside `config`.
    pub tls: Arc<rustls::ClientConfig>,
    /// Its session store: where tickets wait for the next connection.
    pub sessions: Arc<dyn rustls::client::ClientSessionStore>,
    /// The name to ask for (SNI) and to verify; `None` uses the target's host.
    pub server_name: Option<String>,
    /// Send the first stream's data in 0-RTT when a ticket allows it.
    pub zero_rtt: bool,
    pub insecure: bool,
}

impl ClientQuicOptions {
    /// A client endpoint on an ephemeral UDP port (dual-stack `[::]:0` when
    /// possible, else `0.0.0.0:0`).
    pub fn new(trust: &Trust) -> anyhow::Result<ClientQuicOptions> {
        let endpoint = match quinn::Endpoint::client("[::]:0".parse()?) {
            Ok(e) => e,
            Err(_) => quinn::Endpoint::client("0.0.0.0:0".parse()?)
                .context("creating a UDP socket for QUIC")?,
        };
        Self::with_endpoint(trust, endpoint)
    }

    /// Like [`ClientQuicOptions::new`] on an endpoint you made (e.g. from a
    /// socket inside a network namespace).
    pub fn with_endpoint(
        trust: &Trust,
        endpoint: quinn::Endpoint,
    ) -> anyhow::Result<ClientQuicOptions> {
        let tls = tls::client_config(trust, None, true)?;
        Self::with_tls(tls, endpoint, trust.is_insecure())
    }

    /// Like [`ClientQuicOptions::with_endpoint`] with a rustls config you
    /// made (e.g. with a key log of your own); its session store is replaced.
    pub fn with_tls(
        mut tls: rustls::ClientConfig,
        endpoint: quinn::Endpoint,
        insecure: bool,
    ) -> anyhow::Result<ClientQuicOptions> {
        let sessions: Arc<dyn rustls::client::ClientSessionStore> =
            Arc::new(rustls::client::ClientSessionMemoryCache::new(256));
        tls.resumption = rustls::client::Resumption::store(sessions.clone());
        let tls = Arc::new(tls);
        // A server that accepts an offer of early data counts it, even if
        // no 0-RTT packet follows: offer it only when 0-RTT is wanted.
        let mut no_early = (*tls).clone();
        no_early.enable_early_data = false;
        Ok(ClientQuicOptions {
            endpoint,
            config: quinn_client_config(Arc::new(no_early))?,
            config_0rtt: quinn_client_config(tls.clone())?,
            tls,
            sessions,
            server_name: None,
            zero_rtt: false,
            insecure,
        })
    }
}

/// quinn's client config around a rustls one, observed (see [`Observed`]).
fn quinn_client_config(tls: Arc<rustls::ClientConfig>) -> anyhow::Result<quinn::ClientConfig> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| anyhow::anyhow!("building the QUIC TLS config: {e}"))?;
    let mut config = quinn::ClientConfig::new(Arc::new(ObservedClientConfig {
        inner: Arc::new(crypto),
    }));
    config.transport_config(Arc::new(transport_config(Duration::from_secs(30))));
    Ok(config)
}

impl ClientQuicOptions {
    /// The same options, but every connection is a full handshake (the
    /// server sends its certificate): tickets are neither offered nor kept.
    pub fn without_resumption(mut self) -> anyhow::Result<ClientQuicOptions> {
        let mut tls = (*self.tls).clone();
        tls.resumption = rustls::client::Resumption::disabled();
        tls.enable_early_data = false;
        let tls = Arc::new(tls);
        self.config = quinn_client_config(tls.clone())?;
        self.config_0rtt = self.config.clone();
        self.tls = tls;
        self.zero_rtt = false;
        Ok(self)
    }

    /// Records the next connections made with these options as qlog
    /// (JSON text sequences, which qvis opens), written to `writer`.
    pub fn qlog_to(
        &mut self,
        writer: Box<dyn std::io::Write + Send + Sync>,
        title: &str,
    ) -> anyhow::Result<()> {
        let mut qlog = quinn_proto::QlogConfig::default();
        qlog.writer(writer).title(Some(title.to_string()));
        let stream = qlog.into_stream().context("starting the qlog stream")?;
        let mut transport = transport_config(Duration::from_secs(30));
        transport.qlog_stream(Some(stream));
        let transport = Arc::new(transport);
        self.config.transport_config(transport.clone());
        self.config_0rtt.transport_config(transport);
        Ok(())
    }
}

/// One bidirectional QUIC stream used as a byte stream, together with the
/// connection it belongs to (dropping the last handle closes it).
///
/// If the server rejects 0-RTT, quinn discards the 0-RTT stream and its
/// data; this stream then opens a new one after the handshake and sends
/// the same bytes again, as TLS over TCP does (the reply just comes a round
/// trip later). `early_data_accepted` still reports the rejection.
pub struct QuicStream {
    pub connection: quinn::Connection,
    io: tokio::io::Join<quinn::RecvStream, quinn::SendStream>,
    zero_rtt: Option<Arc<Mutex<Option<bool>>>>,
    /// While the fate of 0-RTT is unknown: a copy of what was written.
    early_copy: EarlyCopy,
    /// Our side was finished (the resent stream must be finished too).
    finished: bool,
    /// Opening the replacement stream after a rejection.
    reopen: Option<Mutex<Reopen>>,
    /// The replacement stream is (being) finished already.
    resent_finished: bool,
}

type Reopen = Pin<
    Box<
        dyn std::future::Future<Output = std::io::Result<(quinn::SendStream, quinn::RecvStream)>>
            + Send,
    >,
>;

/// Up to this much 0-RTT data is kept for a resend.
const MAX_EARLY_COPY: usize = 64 * 1024;

enum EarlyCopy {
    /// Not 0-RTT, or the server accepted it.
    NotNeeded,
    Keeping(Vec<u8>),
    /// More than MAX_EARLY_COPY was written: a rejection cannot be repaired.
    TooMuch,
}

impl std::fmt::Debug for QuicStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicStream")
            .field("connection", &self.connection.stable_id())
            .field("remote", &self.connection.remote_address())
            .finish_non_exhaustive()
    }
}

fn is_zero_rtt_rejected(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| {
        matches!(
            inner.downcast_ref::<quinn::ReadError>(),
            Some(quinn::ReadError::ZeroRttRejected)
        ) || matches!(
            inner.downcast_ref::<quinn::WriteError>(),
            Some(quinn::WriteError::ZeroRttRejected)
        )
    })
}

impl QuicStream {
    fn new(
        connection: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        zero_rtt: Option<Arc<Mutex<Option<bool>>>>,
    ) -> QuicStream {
        QuicStream {
            early_copy: if zero_rtt.is_some() {
                EarlyCopy::Keeping(Vec::new())
            } else {
                EarlyCopy::NotNeeded
            },
            connection,
            io: tokio::io::join(recv, send),
            zero_rtt,
            finished: false,
            reopen: None,
            resent_finished: false,
        }
    }

    /// Drops the copy of early data once the server has accepted it.
    fn settle_early_copy(&mut self) {
        if self.zero_rtt_accepted() == Some(true) {
            self.early_copy = EarlyCopy::NotNeeded;
        }
    }

    /// After a 0-RTT rejection: a new stream carrying the same bytes.
    fn poll_reopen(&mut self, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        if self.reopen.is_none() {
            let copy = match std::mem::replace(&mut self.early_copy, EarlyCopy::NotNeeded) {
                EarlyCopy::Keeping(copy) => copy,
                _ => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "the server rejected 0-RTT and the data was too large to send again",
                    )))
                }
            };
            let connection = self.connection.clone();
            let finish = self.finished;
            self.resent_finished = finish;
            self.reopen = Some(Mutex::new(Box::pin(async move {
                let (mut send, recv) = connection.open_bi().await.map_err(std::io::Error::other)?;
                send.write_all(&copy).await?;
                if finish {
                    send.finish().map_err(std::io::Error::other)?;
                }
                Ok((send, recv))
            })));
        }
        let done = match self.reopen.as_mut().map(|m| m.get_mut()) {
            Some(Ok(future)) => std::task::ready!(future.as_mut().poll(cx)),
            _ => Err(std::io::Error::other("reopening the stream failed")),
        };
        self.reopen = None;
        let (send, recv) = done?;
        self.io = tokio::io::join(recv, send);
        Poll::Ready(Ok(()))
    }
}

impl QuicStream {
    /// Whether the server accepted our 0-RTT data: `None` while unknown or
    /// when 0-RTT was not tried.
    pub fn zero_rtt_accepted(&self) -> Option<bool> {
        self.zero_rtt
            .as_ref()
            .and_then(|slot| slot.lock().ok().and_then(|v| *v))
    }

    /// Closes the connection politely (CONNECTION_CLOSE with code 0).
    pub fn close(&self) {
        self.connection.close(quinn::VarInt::from_u32(0), b"done");
    }

    /// Fills `info` from the connection's state.
    pub fn negotiated(&self, info: &mut ConnectInfo) {
        info.version = Some("QUIC v1 (TLS 1.3)".into());
        if let Some(hs) = self
            .connection
            .handshake_data()
            .and_then(|d| d.downcast::<QuicHandshakeInfo>().ok())
        {
            info.alpn = hs.alpn.clone().or(info.alpn.take());
            info.cipher_suite = hs.cipher_suite.clone().or(info.cipher_suite.take());
            info.key_exchange_group = hs
                .key_exchange_group
                .clone()
                .or(info.key_exchange_group.take());
            info.resumed = hs.resumed.or(info.resumed);
            info.certificate_received = hs.certificate.or(info.certificate_received);
        }
        if self.zero_rtt.is_some() {
            // The ZeroRttAccepted future's answer, or rustls's own once the
            // handshake is over.
            let from_tls = self
                .connection
                .handshake_data()
                .and_then(|d| d.downcast::<QuicHandshakeInfo>().ok())
                .and_then(|hs| hs.early_data_accepted);
            info.early_data_accepted = self
                .zero_rtt_accepted()
                .or(from_tls)
                .or(info.early_data_accepted);
        } else if info.early_data_accepted.is_none() {
            info.early_data_accepted = Some(false);
        }
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.reopen.is_some() {
                std::task::ready!(this.poll_reopen(cx))?;
            }
            match Pin::new(&mut this.io).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if is_zero_rtt_rejected(&e) => {
                    std::task::ready!(this.poll_reopen(cx))?;
                }
                other => {
                    this.settle_early_copy();
                    return other;
                }
            }
        }
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.reopen.is_some() {
                std::task::ready!(this.poll_reopen(cx))?;
            }
            match Pin::new(&mut this.io).poll_write(cx, buf) {
                Poll::Ready(Err(e)) if is_zero_rtt_rejected(&e) => {
                    std::task::ready!(this.poll_reopen(cx))?;
                }
                Poll::Ready(Ok(n)) => {
                    this.settle_early_copy();
                    if let EarlyCopy::Keeping(copy) = &mut this.early_copy {
                        if copy.len() + n > MAX_EARLY_COPY {
                            this.early_copy = EarlyCopy::TooMuch;
                        } else {
                            copy.extend_from_slice(&buf[..n]);
                        }
                    }
                    return Poll::Ready(Ok(n));
                }
                other => return other,
            }
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    /// Finishes our side of the stream (a STREAM frame with the FIN bit).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.finished = true;
        loop {
            if this.reopen.is_some() {
                std::task::ready!(this.poll_reopen(cx))?;
                if this.resent_finished {
                    return Poll::Ready(Ok(()));
                }
            }
            match Pin::new(&mut this.io).poll_shutdown(cx) {
                Poll::Ready(Err(e)) if is_zero_rtt_rejected(&e) => {
                    std::task::ready!(this.poll_reopen(cx))?;
                    if this.resent_finished {
                        return Poll::Ready(Ok(()));
                    }
                }
                other => return other,
            }
        }
    }
}

/// Makes one measured QUIC connection and opens one bidirectional stream.
///
/// `handshake_us` is the whole QUIC handshake (there is no separate TCP
/// phase); the handshake byte counts are UDP payload bytes, padding
/// included. With `opts.zero_rtt` and a stored ticket, the stream comes
/// back at once and its first data travels as 0-RTT; whether the server
/// accepted it is known after the first reply ([`Stream::negotiated`]).
pub async fn connect(
    target: &Target,
    opts: &ClientQuicOptions,
    limit: Duration,
) -> anyhow::Result<(Stream, ConnectInfo)> {
    let addr = pick_address(target, &opts.endpoint).await?;
    let name = opts
        .server_name
        .as_deref()
        .unwrap_or(&target.host)
        .to_string();
    // Fail early, with a clear message, on a name rustls cannot verify.
    tls::server_name(&name)?;
    let mut info = ConnectInfo {
        transport: Some(Transport::Quic),
        peer: Some(addr),
        server_name: Some(name.clone()),
        verified: Some(!opts.insecure),
        ..ConnectInfo::default()
    };
    let started = Instant::now();
    let config = if opts.zero_rtt {
        opts.config_0rtt.clone()
    } else {
        opts.config.clone()
    };
    let connecting = opts
        .endpoint
        .connect_with(config, addr, &name)
        .with_context(|| format!("cannot start a QUIC connection to {addr}"))?;
    let (connection, zero_rtt) = if opts.zero_rtt {
        match connecting.into_0rtt() {
            Ok((connection, accepted)) => {
                info.early_data_offered = Some(true);
                let slot = Arc::new(Mutex::new(None));
                let fill = slot.clone();
                tokio::spawn(async move {
                    let ok = accepted.await;
                    if let Ok(mut v) = fill.lock() {
                        *v = Some(ok);
                    }
                });
                (connection, Some(slot))
            }
            Err(connecting) => {
                // No ticket for this server: a full handshake it is.
                info.early_data_offered = Some(false);
                (await_handshake(connecting, target, limit).await?, None)
            }
        }
    } else {
        (await_handshake(connecting, target, limit).await?, None)
    };
    if zero_rtt.is_none() {
        info.handshake_us = Some(started.elapsed().as_secs_f64() * 1e6);
        let stats = connection.stats();
        info.handshake_bytes_sent = Some(stats.udp_tx.bytes);
        info.handshake_bytes_received = Some(stats.udp_rx.bytes);
    }
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| anyhow::anyhow!("cannot open a QUIC stream: {e}"))?;
    let stream = QuicStream::new(connection, send, recv, zero_rtt);
    stream.negotiated(&mut info);
    Ok((Stream::Quic(Box::new(stream)), info))
}

async fn await_handshake(
    connecting: quinn::Connecting,
    target: &Target,
    limit: Duration,
) -> anyhow::Result<quinn::Connection> {
    match tokio::time::timeout(limit, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(explain_quic_error(&e, target)),
        Err(_) => bail!(
            "no QUIC handshake with {target} within {}: is 'proto serve quic' running there (UDP port {})? (--timeout waits longer)",
            crate::units::format_duration(limit),
            target.port
        ),
    }
}

async fn pick_address(target: &Target, endpoint: &quinn::Endpoint) -> anyhow::Result<SocketAddr> {
    let addrs = target.resolve().await?;
    let v6_socket = endpoint.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    addrs
        .iter()
        .find(|a| v6_socket || a.is_ipv4())
        .copied()
        .with_context(|| format!("no IPv4 address for {target} (the QUIC socket is IPv4 only)"))
}

/// Turns a failed QUIC handshake into a sentence that says what to do.
pub fn explain_quic_error(e: &quinn::ConnectionError, target: &Target) -> anyhow::Error {
    let text = e.to_string();
    if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        anyhow::anyhow!(
            "certificate verification failed: the server's certificate is not signed by the CA we trust (UnknownIssuer); pass the server's ca.pem with --ca FILE (or --insecure to skip verification) [{text}]"
        )
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        anyhow::anyhow!(
            "certificate verification failed: the certificate is not valid for the name we asked for; use --server-name NAME, or restart the server with --san [{text}]"
        )
    } else if matches!(e, quinn::ConnectionError::TimedOut) {
        anyhow::anyhow!("no answer from {target} over QUIC: is 'proto serve quic' running there?")
    } else {
        anyhow::anyhow!("QUIC handshake with {target} failed: {text}")
    }
}

/// Whether the client's session store holds a TLS 1.3 ticket for the
/// server `info` names.
pub fn has_ticket(store: &dyn rustls::client::ClientSessionStore, info: &ConnectInfo) -> bool {
    let Some(name) = info
        .server_name
        .as_deref()
        .and_then(|n| tls::server_name(n).ok())
    else {
        return true;
    };
    // take + put back: the store has no "peek".
    match store.take_tls13_ticket(&name) {
        Some(ticket) => {
            store.insert_tls13_ticket(name, ticket);
            true
        }
        None => false,
    }
}

/// Sends one QUIC DATAGRAM and waits for one back (unreliable: a lost one
/// times out). The server answers each with its uppercase.
pub async fn exchange_datagram(
    connection: &quinn::Connection,
    message: &[u8],
    limit: Duration,
) -> anyhow::Result<Vec<u8>> {
    if connection.max_datagram_size().is_none() {
        bail!("the server did not enable QUIC DATAGRAM frames");
    }
    connection
        .send_datagram(bytes::Bytes::copy_from_slice(message))
        .map_err(|e| anyhow::anyhow!("cannot send a QUIC datagram: {e}"))?;
    match tokio::time::timeout(limit, connection.read_datagram()).await {
        Ok(Ok(reply)) => Ok(reply.to_vec()),
        Ok(Err(e)) => Err(anyhow::anyhow!("connection lost: {e}")),
        Err(_) => bail!(
            "no datagram back within {} (datagrams are not retransmitted)",
            crate::units::format_duration(limit)
        ),
    }
}

// ---------------------------------------------------------------------------
// Looking at QUIC's TLS handshake: a transparent wrapper around quinn's
// rustls session.

/// Wraps quinn's client crypto config so each session is [`Observed`].
struct ObservedClientConfig {
    inner: Arc<quinn::crypto::rustls::QuicClientConfig>,
}

impl qcrypto::ClientConfig for ObservedClientConfig {
    fn start_session(
        self: Arc<Self>,
        version: u32,
        server_name: &str,
        params: &TransportParameters,
    ) -> Result<Box<dyn qcrypto::Session>, ConnectError> {
        let inner =
            qcrypto::ClientConfig::start_session(self.inner.clone(), version, server_name, params)?;
        Ok(Box::new(Observed::new(inner, Side::Client)))
    }
}

/// Wraps quinn's server crypto config so each session is [`Observed`].
struct ObservedServerConfig {
    inner: Arc<quinn::crypto::rustls::QuicServerConfig>,
}

impl qcrypto::ServerConfig for ObservedServerConfig {
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<Keys, UnsupportedVersion> {
        self.inner.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.inner.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> Box<dyn qcrypto::Session> {
        let inner = qcrypto::ServerConfig::start_session(self.inner.clone(), version, params);
        Box::new(Observed::new(inner, Side::Server))
    }
}

/// A crypto session that passes everything through to rustls and reads the
/// plaintext ServerHello on its way (in on the client, out on the server).
struct Observed {
    inner: Box<dyn qcrypto::Session>,
    side: Side,
    hello: Mutex<HelloParser>,
    /// Server: rustls accepted 0-RTT and handed out the early keys.
    early_keys: AtomicBool,
}

impl Observed {
    fn new(inner: Box<dyn qcrypto::Session>, side: Side) -> Observed {
        Observed {
            inner,
            side,
            hello: Mutex::new(HelloParser::default()),
            early_keys: AtomicBool::new(false),
        }
    }

    fn feed(&self, bytes: &[u8]) {
        if let Ok(mut p) = self.hello.lock() {
            p.feed(bytes);
        }
    }
}

impl qcrypto::Session for Observed {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        self.inner.initial_keys(dst_cid, side)
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        let data = self.inner.handshake_data()?;
        let (alpn, server_name) = match data.downcast::<quinn::crypto::rustls::HandshakeData>() {
            Ok(hd) => (
                hd.protocol
                    .as_ref()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
                hd.server_name.clone(),
            ),
            Err(_) => (None, None),
        };
        let (hello, certificate) = match self.hello.lock() {
            Ok(p) => (p.hello.clone(), p.certificate),
            Err(_) => (None, false),
        };
        Some(Box::new(QuicHandshakeInfo {
            alpn,
            server_name,
            cipher_suite: hello
                .as_ref()
                .map(|h| format!("{:?}", rustls::CipherSuite::from(h.cipher_suite))),
            key_exchange_group: hello
                .as_ref()
                .and_then(|h| h.key_share_group)
                .map(|g| format!("{:?}", rustls::NamedGroup::from(g))),
            resumed: hello.as_ref().map(|h| h.psk),
            certificate: (hello.is_some() && !self.inner.is_handshaking()).then_some(certificate),
            early_data_accepted: match self.side {
                Side::Server => Some(self.early_keys.load(Relaxed)),
                Side::Client => self.inner.early_data_accepted(),
            },
            handshake_complete: !self.inner.is_handshaking(),
        }))
    }

    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        self.inner.peer_identity()
    }

    fn early_crypto(&self) -> Option<(Box<dyn HeaderKey>, Box<dyn PacketKey>)> {
        let keys = self.inner.early_crypto();
        if keys.is_some() {
            self.early_keys.store(true, Relaxed);
        }
        keys
    }

    fn early_data_accepted(&self) -> Option<bool> {
        self.inner.early_data_accepted()
    }

    fn is_handshaking(&self) -> bool {
        self.inner.is_handshaking()
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        if self.side == Side::Client {
            self.feed(buf);
        }
        self.inner.read_handshake(buf)
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        self.inner.transport_parameters()
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        let start = buf.len();
        let keys = self.inner.write_handshake(buf);
        if self.side == Side::Server {
            if let Some(written) = buf.get(start..) {
                self.feed(written);
            }
        }
        keys
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn PacketKey>>> {
        self.inner.next_1rtt_keys()
    }

    fn is_valid_retry(&self, orig_dst_cid: &ConnectionId, header: &[u8], payload: &[u8]) -> bool {
        self.inner.is_valid_retry(orig_dst_cid, header, payload)
    }

    fn export_keying_material(
        &self,
        output: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        self.inner.export_keying_material(output, label, context)
    }
}

/// Follows the TLS handshake messages of one direction (QUIC's CRYPTO
/// streams, Initial then Handshake then 1-RTT, in order): keeps the
/// ServerHello and notes whether a Certificate message went by.
///
/// ```text
/// handshake message: type (1) | length (3, big-endian) | body
///   2 ServerHello   8 EncryptedExtensions   11 Certificate
///  15 CertificateVerify   20 Finished   4 NewSessionTicket
/// ```
///
/// A resumed TLS 1.3 handshake (a pre-shared key from a ticket) has no
/// Certificate: the key itself proves the server is the one the earlier,
/// certificate-checked connection talked to. Only the ServerHello's body
/// is buffered; other bodies are skipped as they stream past.
#[derive(Debug, Default)]
struct HelloParser {
    buf: Vec<u8>,
    /// Bytes of the current (skipped) message body still to come.
    skip: usize,
    done: bool,
    hello: Option<ServerHelloInfo>,
    /// A Certificate message (type 11) went by.
    certificate: bool,
}

/// TLS handshake message types this parser cares about (RFC 8446 §4).
const SERVER_HELLO: u8 = 2;
const CERTIFICATE: u8 = 11;

impl HelloParser {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !self.done && !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            // Gather a header (4 bytes), and a ServerHello's whole body.
            let need = if self.buf.len() < 4 {
                4
            } else {
                4 + u32::from_be_bytes([0, self.buf[1], self.buf[2], self.buf[3]]) as usize
            };
            let n = need.saturating_sub(self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() < 4 {
                return;
            }
            let kind = self.buf[0];
            let len = u32::from_be_bytes([0, self.buf[1], self.buf[2], self.buf[3]]) as usize;
            if kind != SERVER_HELLO {
                self.certificate |= kind == CERTIFICATE;
                self.skip = len;
                self.buf.clear();
                continue;
            }
            if len > 16 * 1024 {
                self.done = true; // not a plausible ServerHello: stop looking
                return;
            }
            if self.buf.len() < 4 + len {
                continue;
            }
            match parse_server_hello(&self.buf[4..]) {
                // A HelloRetryRequest (RFC 8446 §4.1.4) is followed by the real ServerHello.
                Some(hello) if hello.hello_retry => {}
                Some(hello) => self.hello = Some(hello),
                None => self.done = true,
            }
            self.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_hello_is_read_across_pieces() {
        // A TLS 1.3 ServerHello: TLS_AES_128_GCM_SHA256, key_share x25519,
        // pre_shared_key (selected identity 0), supported_versions 1.3.
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // empty session id
        body.extend_from_slice(&[0x13, 0x01, 0x00]);
        let mut exts = Vec::new();
        exts.extend_from_slice(&[0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
        exts.extend_from_slice(&[9u8; 32]);
        exts.extend_from_slice(&[0x00, 0x29, 0x00, 0x02, 0x00, 0x00]);
        exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![2, 0, 0, body.len() as u8];
        msg.extend_from_slice(&body);
        let mut p = HelloParser::default();
        p.feed(&msg[..10]);
        assert!(p.hello.is_none());
        p.feed(&msg[10..]);
        let hello = p.hello.unwrap();
        assert_eq!(hello.cipher_suite, 0x1301);
        assert_eq!(hello.key_share_group, Some(0x001d));
        assert!(hello.psk);
        assert_eq!(
            format!("{:?}", rustls::CipherSuite::from(hello.cipher_suite)),
            "TLS13_AES_128_GCM_SHA256"
        );
    }

    #[test]
    fn a_certificate_is_noticed_and_skipped_unbuffered() {
        // EncryptedExtensions (empty), then a 3000-byte Certificate fed in
        // small pieces, then Finished: only the type is kept.
        let mut bytes = vec![8, 0, 0, 2, 0, 0];
        bytes.extend_from_slice(&[11, 0, 0x0b, 0xb8]);
        bytes.extend(std::iter::repeat_n(0xAB, 3000));
        bytes.extend_from_slice(&[20, 0, 0, 32]);
        bytes.extend_from_slice(&[0; 32]);
        let mut p = HelloParser::default();
        for piece in bytes.chunks(7) {
            p.feed(piece);
            assert!(
                p.buf.len() <= 4,
                "bodies other than ServerHello are not kept"
            );
        }
        assert!(p.certificate && !p.done);
        // A resumed flight: EncryptedExtensions and Finished, no Certificate.
        let mut p = HelloParser::default();
        p.feed(&[8, 0, 0, 2, 0, 0, 20, 0, 0, 1, 0]);
        assert!(!p.certificate);
    }

    #[test]
    fn garbage_is_not_a_server_hello() {
        let mut p = HelloParser::default();
        p.feed(&[2, 0, 0, 2, 0, 0]);
        assert!(p.done && p.hello.is_none());
        assert!(parse_server_hello(&[3, 3, 1]).is_none());
    }
}
