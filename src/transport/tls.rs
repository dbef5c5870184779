//! TLS over TCP, both sides' rustls configuration, and the client's
//! measured connect.
//!
//! # The handshakes, flight by flight
//!
//! TLS 1.2 (RFC 5246) needs two round trips after TCP's before the client
//! may send data:
//!
//! ```text
//! client                                  server
//! ClientHello                 ──────▶                              ┐
//!                             ◀──────  ServerHello, Certificate,   │ RTT 1
//!                                      ServerKeyExchange, Done     ┘
//! ClientKeyExchange, CCS, Finished ──▶                             ┐
//!                             ◀──────  CCS, Finished               ┘ RTT 2
//! application data            ──────▶
//! ```
//!
//! TLS 1.3 (RFC 8446) guesses the key exchange: the ClientHello already
//! carries a key share (an ephemeral X25519 public key), so the server can
//! answer with its share, certificate and Finished at once; everything after
//! ServerHello is encrypted. One round trip:
//!
//! ```text
//! ClientHello + key_share     ──────▶                              ┐
//!                             ◀──────  ServerHello + key_share,    │ RTT 1
//!                                      {EncryptedExtensions, Certificate,
//!                                       CertificateVerify, Finished}┘
//! {Finished}, application data ─────▶
//! ```
//!
//! # Session resumption and tickets
//!
//! After a TLS 1.3 handshake the server sends NewSessionTicket messages: an
//! opaque ticket plus a secret (the resumption PSK) the client stores. Next
//! time the client offers the ticket (`pre_shared_key`); a server that
//! recognises it skips the certificate, which proves nothing new. proto's
//! servers keep tickets in memory ("stateful" tickets) and accept each only
//! once. TLS 1.2 resumes by session ID: the server remembers the session
//! under an ID it gave the client, and an abbreviated handshake follows
//! (still a round trip, but no certificate and no key exchange).
//!
//! # 0-RTT ("early data")
//!
//! With a ticket, a TLS 1.3 client may send application data in its very
//! first flight, encrypted under a key derived from the ticket's PSK alone.
//! The server can answer it right away with its own first flight ("0.5-RTT
//! data"). The catch: early data is **replayable**. Nothing in the first
//! flight is fresh from the server, so an attacker who records it can send
//! it again and the server cannot tell. It also lacks forward secrecy with
//! respect to the ticket key. Only idempotent requests belong in early data:
//! proto's uppercase echo changes nothing on the server, so a replay only
//! produces another identical answer. proto's servers also accept each
//! ticket only once, which stops naive replays against one server.
//!
//! # ALPN
//!
//! Application-Layer Protocol Negotiation: the client lists the protocols
//! it can speak inside the TLS connection (`h2`, `http/1.1`, ...), the server
//! picks one in its reply. proto speaks `proto-echo`. A client that offers
//! no ALPN at all (plain `openssl s_client`) is served anyway; one that
//! offers only protocols we do not speak is refused with the
//! `no_application_protocol` alert.

use super::certs::CertDir;
use super::{tcp, ConnectInfo, Stream, Target, Transport};
use anyhow::{bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The ALPN name of proto's echo protocol.
pub const ALPN: &[u8] = b"proto-echo";

/// Largest 0-RTT data a TLS-over-TCP server accepts per connection.
pub const MAX_EARLY_DATA: u32 = 16 * 1024;

/// A TLS protocol version to restrict to (`--tls-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2: two round trips of handshake.
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3: one round trip; 0-RTT on resumption.
    #[serde(rename = "1.3")]
    V1_3,
}

impl TlsVersion {
    pub const ALL: [TlsVersion; 2] = [TlsVersion::V1_2, TlsVersion::V1_3];

    /// The short id used on the command line: `1.2`, `1.3`.
    pub fn id(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }

    /// What the version costs, in one line (for `--help`).
    pub fn summary(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "TLS 1.2: two round trips of handshake",
            TlsVersion::V1_3 => "TLS 1.3: one round trip; 0-RTT on resumption",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "TLS 1.2",
            TlsVersion::V1_3 => "TLS 1.3",
        }
    }
}

/// The protocol versions to enable: one, or both when `None`.
pub fn versions(only: Option<TlsVersion>) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static V13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static V12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    match only {
        None => &BOTH,
        Some(TlsVersion::V1_3) => &V13,
        Some(TlsVersion::V1_2) => &V12,
    }
}

/// The one crypto provider proto uses (ring), passed explicitly to every
/// config: never a process-wide default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server configuration shared by TLS-over-TCP and (with
/// `for_quic`) QUIC: certificate, ALPN, tickets, early data, key log.
pub fn server_config(
    identity: &super::certs::ServerIdentity,
    only: Option<TlsVersion>,
    for_quic: bool,
) -> anyhow::Result<rustls::ServerConfig> {
    let only = if for_quic {
        Some(TlsVersion::V1_3) // QUIC v1 is defined with TLS 1.3 only (RFC 9001)
    } else {
        only
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(only))
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .context("the server certificate and key do not fit together")?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // Stateful resumption: tickets (TLS 1.3) and session IDs (TLS 1.2) name
    // sessions kept in this in-memory cache. rustls accepts 0-RTT only with
    // stateful tickets, because they can be made single-use.
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    // QUIC allows only 0 or u32::MAX here (the QUIC stream limits apply).
    config.max_early_data_size = if for_quic { u32::MAX } else { MAX_EARLY_DATA };
    // Let the answer to early data leave with the server's first flight.
    config.send_half_rtt_data = true;
    // SSLKEYLOGFILE=path writes the session secrets for Wireshark.
    config.key_log = Arc::new(rustls::KeyLogFile::new());
    Ok(config)
}

/// How a client decides whether to believe the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Certificates signed by this CA (proto's local CA by default).
    Ca {
        cert: CertificateDer<'static>,
        path: PathBuf,
    },
    /// No verification at all (`--insecure`): anyone on the path can
    /// impersonate the server. Always announced.
    Insecure,
}

impl Trust {
    /// `--insecure`, else `--ca FILE`, else the local CA in the default
    /// certificate directory.
    pub fn from_options(ca: Option<&Path>, insecure: bool) -> anyhow::Result<Trust> {
        if insecure {
            return Ok(Trust::Insecure);
        }
        let path = match ca {
            Some(p) => p.to_path_buf(),
            None => {
                let dir = CertDir::default_dir()?;
                let path = dir.ca_cert();
                if !path.exists() {
                    bail!(
                        "no CA certificate at {}: run 'proto serve tls' (or quic) once on this machine to create it, pass the server's ca.pem with --ca FILE, or use --insecure to skip verification",
                        path.display()
                    );
                }
                path
            }
        };
        Trust::ca_file(&path)
    }

    /// Trusts the first certificate in the PEM file `path`.
    pub fn ca_file(path: &Path) -> anyhow::Result<Trust> {
        let cert = super::certs::load_certs(path)?
            .into_iter()
            .next()
            .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
        Ok(Trust::Ca {
            cert,
            path: path.to_path_buf(),
        })
    }

    pub fn is_insecure(&self) -> bool {
        matches!(self, Trust::Insecure)
    }
}

/// The rustls client configuration for TLS (or, with `for_quic`, QUIC).
/// Reuse one `Arc` of it across connections: its in-memory session store is
/// what makes resumption and 0-RTT possible on the next connection.
pub fn client_config(
    trust: &Trust,
    only: Option<TlsVersion>,
    for_quic: bool,
) -> anyhow::Result<rustls::ClientConfig> {
    let only = if for_quic {
        Some(TlsVersion::V1_3)
    } else {
        only
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(only))
        .context("choosing TLS versions")?;
    let mut config = match trust {
        Trust::Ca { cert, path } => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(cert.clone())
                .with_context(|| format!("{} is not a usable CA certificate", path.display()))?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = true;
    config.key_log = Arc::new(rustls::KeyLogFile::new());
    Ok(config)
}

/// `--insecure`: accepts any certificate. Signatures are still checked,
/// so the handshake itself is intact; who the server *is* is not.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Everything a TLS client connection needs; cheap to clone. Keep one and
/// reuse it: the session store inside `config` carries tickets from one
/// connection to the next.
#[derive(Debug, Clone)]
pub struct ClientTlsOptions {
    pub config: Arc<rustls::ClientConfig>,
    /// The name to ask for (SNI) and to verify the certificate against;
    /// `None` uses the target's host.
    pub server_name: Option<String>,
    /// Send the first message as 0-RTT early data when a ticket allows it.
    pub early_data: bool,
    /// Whether verification is off (reported in [`ConnectInfo`]).
    pub insecure: bool,
}

impl ClientTlsOptions {
    pub fn new(trust: &Trust, only: Option<TlsVersion>) -> anyhow::Result<ClientTlsOptions> {
        Ok(ClientTlsOptions {
            config: Arc::new(client_config(trust, only, false)?),
            server_name: None,
            early_data: false,
            insecure: trust.is_insecure(),
        })
    }

    pub fn name_for(&self, target: &Target) -> anyhow::Result<ServerName<'static>> {
        server_name(self.server_name.as_deref().unwrap_or(&target.host))
    }
}

/// A name to verify: a DNS name or an IP address.
pub fn server_name(name: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(name.to_string()).map_err(|_| {
        anyhow::anyhow!("'{name}' is not a valid server name (DNS name or IP address)")
    })
}

/// Bytes that crossed a connection, counted below TLS (so: TLS records,
/// including the handshake), shared with whoever wants to look.
#[derive(Debug, Default)]
pub struct IoCounters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// A byte stream that counts what passes through it.
#[derive(Debug)]
pub struct CountingIo<S> {
    inner: S,
    pub counters: Arc<IoCounters>,
}

impl<S> CountingIo<S> {
    pub fn new(inner: S) -> CountingIo<S> {
        CountingIo {
            inner,
            counters: Arc::default(),
        }
    }
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        this.counters.received.fetch_add(n as u64, Relaxed);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            this.counters.sent.fetch_add(*n as u64, Relaxed);
        }
        poll
    }
    /// rustls hands over all its queued records at once as a vectored
    /// write; passing that on as one `writev` keeps a ClientHello and its
    /// 0-RTT early data in one TCP segment (with Fast Open: in the SYN).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &poll {
            this.counters.sent.fetch_add(*n as u64, Relaxed);
        }
        poll
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The client side of one TLS connection, as carried in [`Stream::Tls`].
pub type ClientTlsStream = tokio_rustls::client::TlsStream<CountingIo<tokio::net::TcpStream>>;

/// Makes one measured TLS connection: TCP connect, then the TLS handshake.
///
/// Timings go into the returned [`ConnectInfo`]: `tcp_connect_us` (TCP's
/// handshake), `handshake_us` (TLS's, after TCP's), and the bytes each
/// side sent during the TLS handshake.
///
/// With `opts.early_data` and a stored ticket for this server, the stream
/// comes back *before* the TLS handshake (0-RTT): the first write is sent as
/// early data, together with the ClientHello, when the stream is flushed.
/// Then `handshake_us` stays `None` and the negotiated fields are filled by
/// [`Stream::negotiated`] after the first reply. Callers that measure "time
/// to first reply" should start the clock before calling this.
pub async fn connect(
    target: &Target,
    opts: &ClientTlsOptions,
    limit: Duration,
) -> anyhow::Result<(Stream, ConnectInfo)> {
    let (tcp, tcp_took) = tcp::connect(target, limit, Transport::Tls).await?;
    handshake(tcp, Some(tcp_took), target, opts, limit).await
}

/// Like [`connect`], over TCP Fast Open (RFC 7413).
///
/// With `TCP_FASTOPEN_CONNECT`, `connect()` returns at once and the kernel
/// sends the SYN only with the first write, *carrying* that data (here the
/// ClientHello and any 0-RTT early data), if it holds a Fast Open cookie
/// from an earlier connection to this server. The server's reply can then
/// come with its SYN-ACK: TLS 1.3 0-RTT over TFO spends no round trip at
/// all before data. Without a cookie (first connection, or a server with
/// Fast Open off) the kernel silently does a normal 3-way handshake and
/// asks for a cookie. Linux only; `tcp_connect_us` stays `None` (there is
/// no separate TCP phase to time).
pub async fn connect_fast_open(
    target: &Target,
    opts: &ClientTlsOptions,
    limit: Duration,
) -> anyhow::Result<(Stream, ConnectInfo)> {
    let addr = target.resolve().await?[0];
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .context("creating a TCP socket")?;
    tcp::set_fast_open_connect(&socket)?;
    let tcp = socket
        .connect(addr)
        .await
        .map_err(|e| super::explain_connect_error(&e, Transport::Tls, target))?;
    tcp.set_nodelay(true)?;
    handshake(tcp, None, target, opts, limit).await
}

/// The TLS handshake over an already connected (or Fast Open) TCP stream.
async fn handshake(
    tcp: tokio::net::TcpStream,
    tcp_took: Option<Duration>,
    target: &Target,
    opts: &ClientTlsOptions,
    limit: Duration,
) -> anyhow::Result<(Stream, ConnectInfo)> {
    let name = opts.name_for(target)?;
    let mut info = ConnectInfo {
        transport: Some(Transport::Tls),
        peer: tcp.peer_addr().ok(),
        tcp_connect_us: tcp_took.map(|d| d.as_secs_f64() * 1e6),
        server_name: Some(name.to_str().into_owned()),
        verified: Some(!opts.insecure),
        ..ConnectInfo::default()
    };
    let io = CountingIo::new(tcp);
    let counters = io.counters.clone();
    // Offer early data only when asked to: a server that accepts the offer
    // counts it, even if we then send nothing. Same session store either way.
    let config = if !opts.early_data && opts.config.enable_early_data {
        let mut config = (*opts.config).clone();
        config.enable_early_data = false;
        Arc::new(config)
    } else {
        opts.config.clone()
    };
    let connector = tokio_rustls::TlsConnector::from(config).early_data(opts.early_data);
    let started = Instant::now();
    let tls = match tokio::time::timeout(limit, connector.connect(name.clone(), io)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(explain_tls_error(&e, &name, target)),
        Err(_) => bail!(
            "no TLS handshake with {target} within {}: is it a TLS server? (--timeout waits longer)",
            crate::units::format_duration(limit)
        ),
    };
    let zero_rtt = tls.get_ref().1.is_handshaking();
    info.early_data_offered = Some(zero_rtt);
    if !zero_rtt {
        info.handshake_us = Some(started.elapsed().as_secs_f64() * 1e6);
        info.handshake_bytes_sent = Some(counters.sent.load(Relaxed));
        info.handshake_bytes_received = Some(counters.received.load(Relaxed));
    }
    let stream = Stream::Tls(Box::new(tls));
    stream.negotiated(&mut info);
    Ok((stream, info))
}

/// Copies what a TLS connection negotiated into `info`.
pub fn negotiated(conn: &rustls::ClientConnection, info: &mut ConnectInfo) {
    if conn.is_handshaking() {
        return;
    }
    info.version = conn.protocol_version().map(version_name);
    info.cipher_suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()));
    info.key_exchange_group = conn
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()));
    info.alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    info.resumed = Some(resumed);
    // rustls processes a Certificate message exactly in full handshakes
    // (TLS 1.2's abbreviated and TLS 1.3's PSK handshakes have none).
    info.certificate_received = Some(!resumed);
    info.early_data_accepted = Some(conn.is_early_data_accepted());
}

/// `TLS 1.3` rather than rustls's `TLSv1_3`.
pub fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".into(),
        other => format!("{other:?}"),
    }
}

/// Turns a failed handshake into a sentence that says what to do.
pub fn explain_tls_error(
    e: &std::io::Error,
    name: &ServerName<'_>,
    target: &Target,
) -> anyhow::Error {
    use rustls::{CertificateError, Error};
    let name = name.to_str();
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>());
    match tls {
        // BadSignature: an issuer of the same name but another key signed it.
        Some(Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => anyhow::anyhow!(
            "certificate verification failed: the server's certificate is not signed by the CA we trust (UnknownIssuer); pass the server's ca.pem with --ca FILE (or --insecure to skip verification)"
        ),
        Some(Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => anyhow::anyhow!(
            "certificate verification failed: the certificate is not valid for '{name}'; connect by a name it has (--server-name NAME), or restart the server with --san {name}"
        ),
        Some(Error::InvalidCertificate(other)) => {
            anyhow::anyhow!("certificate verification failed: {other:?}")
        }
        Some(Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)) => {
            anyhow::anyhow!("the server refused our ALPN protocols (it does not speak proto-echo)")
        }
        Some(Error::AlertReceived(rustls::AlertDescription::ProtocolVersion)) => anyhow::anyhow!(
            "the server refused our TLS version (check --tls-version on both sides)"
        ),
        Some(other) => anyhow::anyhow!("TLS handshake with {target} failed: {other}"),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => anyhow::anyhow!(
            "{target} closed the connection during the TLS handshake: is it a TLS server (proto serve tls)?"
        ),
        None => anyhow::anyhow!("TLS handshake with {target} failed: {e}"),
    }
}
