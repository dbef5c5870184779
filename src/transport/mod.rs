//! Transports, client side: getting from "host and port" to a connected
//! byte stream (or datagram socket), and timing how long that took.
//!
//! Every stream transport ends up as one [`Stream`], so the echo client and
//! the load generator are written once for all of them. The set of
//! transports is closed, so this is an enum, not a trait object: a `match`
//! shows every place a new transport must be handled.
//!
//! | module    | what it shows |
//! |-----------|---------------|
//! | [`tcp`]   | the three-way handshake, timed |
//! | [`udp`]   | no handshake at all |
//! | [`tls`]   | TLS 1.2 vs 1.3 flights, tickets, 0-RTT, ALPN; both sides' rustls configs |
//! | [`quic`]  | QUIC's combined handshake, 0-RTT, datagrams; a look at its ServerHello |
//! | [`sctp`]  | SCTP over UDP: the 4-way handshake with a State Cookie, streams of messages |
//! | [`certs`] | a local CA and server certificate, so everything is verified |
//!
//! # Making one measured connection (for `proto compare`)
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use proto::client::resume;
//! use proto::transport::{quic, tls, Target};
//! use std::time::Duration;
//! let target = Target::parse("localhost", 8443)?;
//! let trust = tls::Trust::from_options(None, false)?; // proto's local CA
//! // TLS: keep `opts` (its Arc<ClientConfig> holds the session tickets).
//! let mut opts = tls::ClientTlsOptions::new(&trust, Some(tls::TlsVersion::V1_3))?;
//! resume::fetch_tls_ticket(&target, &opts, Duration::from_secs(5)).await?; // for resumption/0-RTT
//! opts.early_data = true;
//! let (stream, mut info) = tls::connect(&target, &opts, Duration::from_secs(5)).await?;
//! // ... write the request, flush, read the reply (t0 → first reply) ...
//! stream.negotiated(&mut info); // after 0-RTT: resumed / early data accepted
//! // QUIC: keep `qopts` (one endpoint, one ticket store) across connections.
//! let mut qopts = quic::ClientQuicOptions::new(&trust)?;
//! resume::fetch_quic_ticket(&target, &qopts, Duration::from_secs(5)).await?;
//! qopts.zero_rtt = true;
//! let (stream, info) = quic::connect(&target, &qopts, Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
//!
//! Tickets are single-use. After a 0-RTT connection, read until the server
//! closes (or give it a round trip) before dropping it: the replacement
//! tickets arrive after the server has seen the client's Finished.

pub mod certs;
pub mod quic;
pub mod sctp;
pub mod tcp;
pub mod tls;
pub mod udp;

use anyhow::{bail, Context};
use serde::Serialize;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The protocols proto speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP: a reliable, ordered byte stream; 1 RTT handshake (SYN, SYN-ACK, ACK).
    Tcp,
    /// UDP: single datagrams, no connection, no delivery or order guarantee.
    Udp,
    /// TLS 1.3/1.2 over TCP: TCP's stream, encrypted and authenticated.
    Tls,
    /// QUIC over UDP: encrypted streams with one combined handshake.
    Quic,
    /// SCTP over UDP (RFC 6951, port 9899): messages on independent
    /// streams; 4-way handshake with a signed cookie.
    Sctp,
}

impl Transport {
    /// Every transport, in the order tables list them.
    pub const ALL: [Transport; 5] = [
        Transport::Tcp,
        Transport::Udp,
        Transport::Tls,
        Transport::Quic,
        Transport::Sctp,
    ];

    /// What the transport is, in one line (for `--help`).
    pub fn summary(self) -> &'static str {
        match self {
            Transport::Tcp => {
                "a reliable, ordered byte stream; 1 RTT handshake (SYN, SYN-ACK, ACK)"
            }
            Transport::Udp => "single datagrams, no connection, no delivery or order guarantee",
            Transport::Tls => "TLS 1.3/1.2 over TCP: TCP's stream, encrypted and authenticated",
            Transport::Quic => "QUIC over UDP: encrypted streams with one combined handshake",
            Transport::Sctp => "SCTP over UDP (RFC 6951): messages on independent streams; 4-way handshake with a signed cookie",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Tls => "tls",
            Transport::Quic => "quic",
            Transport::Sctp => "sctp",
        }
    }

    /// TLS or QUIC: encrypted, with certificates and a TLS handshake.
    pub fn is_encrypted(self) -> bool {
        matches!(self, Transport::Tls | Transport::Quic)
    }

    /// The port `proto serve` uses for this transport by default.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tcp | Transport::Udp => crate::wire::limits::PLAIN_PORT,
            Transport::Tls | Transport::Quic => crate::wire::limits::SECURE_PORT,
            Transport::Sctp => crate::wire::sctp::UDP_ENCAPS_PORT,
        }
    }
}

/// Where to connect: a host name or address and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    /// Parses `HOST`, `HOST:PORT`, `[::1]:PORT`, `::1` or `:PORT`, filling
    /// in `default_port` and `localhost`.
    pub fn parse(text: &str, default_port: u16) -> anyhow::Result<Target> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .with_context(|| format!("'{text}': missing ']' after the IPv6 address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => bail!("'{text}': expected ':PORT' after ']'"),
            };
            (host.to_string(), port)
        } else if text.matches(':').count() > 1 {
            (text.to_string(), None) // a bare IPv6 address
        } else if let Some((host, port)) = text.split_once(':') {
            (host.to_string(), Some(port))
        } else {
            (text.to_string(), None)
        };
        let port = match port {
            Some(p) => p
                .parse()
                .with_context(|| format!("'{p}' is not a port number (1-65535)"))?,
            None => default_port,
        };
        let host = if host.is_empty() {
            "localhost".to_string()
        } else {
            host
        };
        Ok(Target { host, port })
    }

    /// Whether the host is this machine's loopback (`localhost`, 127.x, ::1),
    /// by name, without resolving it.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Resolves the host name (DNS or `/etc/hosts`) to socket addresses.
    pub async fn resolve(&self) -> anyhow::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot resolve host '{}': check the name", self.host))?
            .collect();
        if addrs.is_empty() {
            bail!("host '{}' has no address", self.host);
        }
        Ok(addrs)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a client learnt while connecting: the raw material of the
/// handshake comparison. Fields a transport does not have stay `None`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectInfo {
    pub transport: Option<Transport>,
    pub peer: Option<SocketAddr>,
    /// TCP's three-way handshake: from `connect()` to the socket being usable.
    pub tcp_connect_us: Option<f64>,
    /// The TLS or QUIC handshake, after TCP's (QUIC: the whole handshake).
    pub handshake_us: Option<f64>,
    /// From the start of connecting to the first echo reply.
    pub first_reply_us: Option<f64>,
    /// The name the certificate was checked against (and sent as SNI).
    pub server_name: Option<String>,
    /// Whether the server's certificate was verified (`false` with --insecure).
    pub verified: Option<bool>,
    /// "TLS 1.3", "TLS 1.2", "QUIC v1 (TLS 1.3)".
    pub version: Option<String>,
    pub cipher_suite: Option<String>,
    /// The application protocol agreed by ALPN (`proto-echo`).
    pub alpn: Option<String>,
    /// The (EC)DHE group of the key exchange, e.g. `X25519`.
    pub key_exchange_group: Option<String>,
    /// The server accepted our session ticket / session ID.
    pub resumed: Option<bool>,
    /// The server sent its certificate chain (a full handshake). `false`
    /// when resumed: a pre-shared key from an earlier, verified session
    /// authenticates the server instead, and no certificate is sent.
    pub certificate_received: Option<bool>,
    /// We sent our first message as 0-RTT early data.
    pub early_data_offered: Option<bool>,
    /// The server accepted (not just received) that early data.
    pub early_data_accepted: Option<bool>,
    /// Bytes we sent during the handshake (TLS: TLS records over TCP;
    /// QUIC: UDP payloads, padding included). Not measured with 0-RTT.
    pub handshake_bytes_sent: Option<u64>,
    /// Bytes we received during the handshake (as above).
    pub handshake_bytes_received: Option<u64>,
}

/// A connected byte stream of any stream transport.
#[derive(Debug)]
pub enum Stream {
    Tcp(tokio::net::TcpStream),
    /// TLS over TCP (boxed: the TLS state is large).
    Tls(Box<tls::ClientTlsStream>),
    /// One bidirectional stream of a QUIC connection.
    Quic(Box<quic::QuicStream>),
}

impl Stream {
    /// Fills `info`'s negotiated fields (version, cipher suite, ALPN, group,
    /// resumed, early data accepted) from the connection's current state.
    /// After 0-RTT, call it once the first reply has arrived.
    pub fn negotiated(&self, info: &mut ConnectInfo) {
        match self {
            Stream::Tcp(_) => {}
            Stream::Tls(s) => tls::negotiated(s.get_ref().1, info),
            Stream::Quic(s) => s.negotiated(info),
        }
    }
}

/// Forwards a poll method to whichever transport is inside.
macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $call,
            Stream::Tls($s) => $call,
            Stream::Quic($s) => $call,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Turns a connect-time I/O error into a sentence that says what to do.
pub fn explain_connect_error(
    e: &std::io::Error,
    transport: Transport,
    target: &Target,
) -> anyhow::Error {
    let serve = format!("proto serve {}", transport.name());
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "connection refused: is '{serve}' running on {target}?"
        ),
        std::io::ErrorKind::TimedOut => anyhow::anyhow!(
            "no answer from {target}: is the host reachable and the port open? (--timeout waits longer)"
        ),
        _ => anyhow::anyhow!("cannot connect to {target}: {e}"),
    }
}

/// Runs `fut` with a deadline, turning expiry into a clear error.
pub async fn with_timeout<T>(
    limit: Duration,
    what: impl std::fmt::Display,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => bail!(
            "timed out after {} {what} (--timeout waits longer)",
            crate::units::format_duration(limit)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = |s| Target::parse(s, 8081).unwrap();
        assert_eq!(
            t("localhost"),
            Target {
                host: "localhost".into(),
                port: 8081
            }
        );
        assert_eq!(
            t("example.org:99"),
            Target {
                host: "example.org".into(),
                port: 99
            }
        );
        assert_eq!(
            t("[::1]:5"),
            Target {
                host: "::1".into(),
                port: 5
            }
        );
        assert_eq!(
            t("::1"),
            Target {
                host: "::1".into(),
                port: 8081
            }
        );
        assert_eq!(
            t(":7"),
            Target {
                host: "localhost".into(),
                port: 7
            }
        );
        assert!(Target::parse("host:http", 1).is_err());
        assert_eq!(t("[::1]:5").to_string(), "[::1]:5");
    }
}
