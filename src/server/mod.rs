//! The echo servers: accept loops, per-connection tasks, graceful shutdown.
//!
//! Following mini-redis, [`run`] takes *already-bound* sockets and a
//! shutdown token. That is what lets tests bind port 0 in-process, and the
//! lab create the sockets inside its "server" network namespace.
//!
//! * [`session`]: one stream connection (TCP, TLS, QUIC stream), lines or frames.
//! * [`udp`]: one datagram in, one datagram out.
//! * [`tls`]: the TLS handshake (with 0-RTT early data) before a session.
//! * [`quic`]: QUIC connections, each bidirectional stream one session.
//! * [`sctp`]: SCTP over UDP: the stateless cookie handshake, one message per echo.
//! * [`blocking`]: plain TCP sessions on a thread each (the same session
//!   logic, one system call per wait).
//! * [`limits`]: how many connections a server takes (derived from the
//!   kernel's limits) and what a client over the limit hears.

pub mod blocking;
pub mod limits;
pub mod quic;
pub mod sctp;
pub mod session;
pub mod tls;
pub mod udp;

use crate::transport::certs::{CertDir, ServerIdentity};
use crate::transport::tls::TlsVersion;
use crate::transport::Transport;

use anyhow::Context;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Limits every server applies to its clients.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Longest text line accepted, in bytes (without the `\n`).
    pub max_line: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// After a shutdown request, connections get this long to finish the
    /// message in hand before they are cut.
    pub grace: Duration,
    /// No per-connection log lines.
    pub quiet: bool,
    /// The certificate and key of the TLS and QUIC services (required only
    /// when those are served).
    pub identity: Option<Arc<ServerIdentity>>,
    /// Accept only this TLS version over TCP (QUIC is always TLS 1.3).
    pub tls_version: Option<TlsVersion>,
    /// A TLS or QUIC handshake must finish within this time.
    pub handshake_timeout: Duration,
    /// Most connections open at once (TCP, TLS and QUIC together); `None`
    /// derives it from the process's limits ([`limits::ProcessLimits`]).
    pub max_connections: Option<usize>,
    /// Most connections open at once from one client address.
    pub max_per_address: usize,
    /// A message (a line or a frame) must arrive whole within this time
    /// after its first byte, plus one second per `min_rate` bytes received:
    /// a client dripping a byte now and then ("slowloris") is closed even
    /// though it is never idle.
    pub message_timeout: Duration,
    /// The slowest a message may arrive, in bytes per second, once
    /// `message_timeout` has passed.
    pub min_rate: u64,
    /// When QUIC clients must prove their address with a Retry round trip.
    pub quic_retry: quic::RetryPolicy,
    /// Most QUIC handshakes in progress at once; more are refused.
    pub max_handshakes: usize,
    /// Write TLS and QUIC session secrets to `$SSLKEYLOGFILE` when it is set
    /// (for Wireshark). The lab turns this off for its in-process servers:
    /// its client already logs the same secrets into the same file.
    pub key_log: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_line: 64 * 1024,
            idle_timeout: Duration::from_secs(300),
            grace: Duration::from_secs(5),
            quiet: false,
            identity: None,
            tls_version: None,
            handshake_timeout: Duration::from_secs(10),
            max_connections: None,
            max_per_address: 1024,
            message_timeout: Duration::from_secs(10),
            min_rate: 500,
            quic_retry: quic::RetryPolicy::Auto,
            max_handshakes: 256,
            key_log: true,
        }
    }
}

impl ServerConfig {
    /// Defaults without per-connection logging (for in-process servers of
    /// `proto lab`, `compare` and `bench`), with the certificate from the
    /// default certificate directory (created on first use).
    pub fn quiet_default() -> anyhow::Result<ServerConfig> {
        ServerConfig::quiet_with_cert_dir(&CertDir::default_dir()?)
    }

    /// Like [`ServerConfig::quiet_default`] with certificates in `dir`
    /// (created there if missing; clients trust `dir/ca.pem`).
    pub fn quiet_with_cert_dir(dir: &CertDir) -> anyhow::Result<ServerConfig> {
        ServerConfig::quiet_with_certs(dir, &[])
    }

    /// Like [`ServerConfig::quiet_with_cert_dir`], with a server certificate
    /// that also names `extra_names` (e.g. the lab's 10.x server address),
    /// re-issued under the same CA if the stored one lacks any of them.
    pub fn quiet_with_certs(dir: &CertDir, extra_names: &[String]) -> anyhow::Result<ServerConfig> {
        Ok(ServerConfig {
            quiet: true,
            identity: Some(Arc::new(dir.load_or_create(extra_names)?)),
            // Every client of an in-process server is proto's own load
            // generator, from one address: only the total limit applies.
            max_per_address: usize::MAX,
            ..ServerConfig::default()
        })
    }
}

/// How the handshakes of one secure transport (TLS over TCP, or QUIC)
/// ended. Kept per transport: `serve all` runs both, and a reader must see
/// which one resumed or took early data.
#[derive(Debug, Default)]
pub struct HandshakeStats {
    /// Handshakes that completed.
    pub completed: AtomicU64,
    /// Completed handshakes that resumed a session (a ticket's key, no certificate).
    pub resumed: AtomicU64,
    /// Completed handshakes whose 0-RTT early data the server accepted.
    pub early_data_accepted: AtomicU64,
    /// Handshakes that failed or timed out.
    pub failed: AtomicU64,
}

impl HandshakeStats {
    /// Counts one completed handshake.
    pub fn record(&self, resumed: bool, early_data_accepted: bool) {
        self.completed.fetch_add(1, Relaxed);
        if resumed {
            self.resumed.fetch_add(1, Relaxed);
        }
        if early_data_accepted {
            self.early_data_accepted.fetch_add(1, Relaxed);
        }
    }

    /// Counts one failed handshake.
    pub fn fail(&self) {
        self.failed.fetch_add(1, Relaxed);
    }

    fn summary(&self) -> HandshakeSummary {
        HandshakeSummary {
            completed: self.completed.load(Relaxed),
            resumed: self.resumed.load(Relaxed),
            early_data_accepted: self.early_data_accepted.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }
}

/// [`HandshakeStats`] when the server stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HandshakeSummary {
    pub completed: u64,
    pub resumed: u64,
    pub early_data_accepted: u64,
    pub failed: u64,
}

impl HandshakeSummary {
    /// `3 QUIC handshakes (1 resumed, 1 with early data accepted, 0 failed)`.
    fn describe(&self, transport: &str) -> String {
        format!(
            "{} {transport} handshake{} ({} resumed, {} with early data accepted, {} failed)",
            self.completed,
            if self.completed == 1 { "" } else { "s" },
            self.resumed,
            self.early_data_accepted,
            self.failed
        )
    }
}

/// Counters shared by every connection of one server run.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections: AtomicU64,
    pub messages: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub abnormal_closes: AtomicU64,
    pub datagrams: AtomicU64,
    /// TLS-over-TCP handshakes.
    pub tls: HandshakeStats,
    /// QUIC handshakes (QUIC's own TLS 1.3, inside QUIC packets).
    pub quic: HandshakeStats,
    /// Datagrams to the QUIC port dropped as not (valid) QUIC.
    pub invalid_datagrams: AtomicU64,
    /// Connections refused because the server (or the client's address)
    /// was at its connection limit, or QUIC at its handshake limit.
    pub refused: AtomicU64,
    /// Connections closed because a message did not arrive in time.
    pub message_timeouts: AtomicU64,
    /// QUIC connection attempts answered with a Retry (address validation).
    pub quic_retries: AtomicU64,
    /// QUIC datagrams held back by the anti-amplification limit.
    pub amplification_drops: AtomicU64,
    /// SCTP INITs answered with an INIT-ACK and forgotten (stateless).
    pub sctp_inits_answered: AtomicU64,
    /// SCTP associations created by a valid COOKIE-ECHO.
    pub sctp_associations: AtomicU64,
    /// SCTP COOKIE-ECHOs refused (forged, stale, wrong tag or address).
    pub sctp_cookies_refused: AtomicU64,
    /// Packets to the SCTP port dropped: not SCTP, bad checksum, no such
    /// association.
    pub sctp_packets_dropped: AtomicU64,
}

/// What is shared by every task of one server run.
#[derive(Debug)]
pub struct ServerContext {
    pub config: ServerConfig,
    pub stats: Arc<ServerStats>,
    pub shutdown: CancellationToken,
    /// Open connections, in total and per address.
    pub limiter: Arc<limits::ConnectionLimiter>,
}

impl ServerContext {
    /// A connection log line on stderr, unless `--quiet`.
    pub fn log(&self, line: std::fmt::Arguments<'_>) {
        if !self.config.quiet {
            eprintln!("{line}");
        }
    }

    /// Takes a connection slot for `peer`, or counts and logs the refusal
    /// (the first ten, then every thousandth: a flood must not become a
    /// flood of log lines).
    pub fn admit(
        &self,
        service: &str,
        peer: SocketAddr,
    ) -> Result<limits::ConnectionPermit, limits::Refusal> {
        self.limiter.try_acquire(peer.ip()).inspect_err(|refusal| {
            let seen = self.stats.refused.fetch_add(1, Relaxed) + 1;
            if seen <= 10 || seen.is_multiple_of(1000) {
                self.log(format_args!(
                    "{service} {peer}: refused, {refusal} ({seen} refused so far)"
                ));
            }
        })
    }
}

/// The totals printed when a server stops.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSummary {
    pub uptime_secs: f64,
    pub connections: u64,
    pub messages: u64,
    pub datagrams: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub protocol_errors: u64,
    pub abnormal_closes: u64,
    /// TLS-over-TCP handshakes.
    pub tls: HandshakeSummary,
    /// QUIC handshakes.
    pub quic: HandshakeSummary,
    /// Datagrams to the QUIC port dropped as not (valid) QUIC.
    pub invalid_datagrams: u64,
    /// Connections refused at the connection (or handshake) limit.
    pub refused: u64,
    /// The connection limit that applied.
    pub max_connections: usize,
    /// Connections closed because a message did not arrive in time.
    pub message_timeouts: u64,
    /// QUIC connection attempts answered with a Retry.
    pub quic_retries: u64,
    /// SCTP INITs answered with an INIT-ACK and forgotten (stateless).
    pub sctp_inits_answered: u64,
    /// SCTP associations created by a valid COOKIE-ECHO.
    pub sctp_associations: u64,
    /// SCTP COOKIE-ECHOs refused (forged, stale, wrong tag or address).
    pub sctp_cookies_refused: u64,
    /// Packets to the SCTP port dropped (not SCTP, bad checksum, unknown tag).
    pub sctp_packets_dropped: u64,
}

impl std::fmt::Display for ServerSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "served {} connections and {} datagrams in {:.1} s: {} messages, {} bytes in, {} bytes out, {} protocol errors, {} connections closed abnormally",
            self.connections,
            self.datagrams,
            self.uptime_secs,
            self.messages,
            self.bytes_in,
            self.bytes_out,
            self.protocol_errors,
            self.abnormal_closes
        )?;
        for (name, handshakes) in [("TLS", &self.tls), ("QUIC", &self.quic)] {
            if *handshakes != HandshakeSummary::default() {
                write!(f, "; {}", handshakes.describe(name))?;
            }
        }
        if self.refused > 0 {
            write!(
                f,
                ", {} connections refused (server busy, limit {})",
                self.refused, self.max_connections
            )?;
        }
        if self.message_timeouts > 0 {
            write!(
                f,
                ", {} connections closed for a message too slow to arrive",
                self.message_timeouts
            )?;
        }
        if self.quic_retries > 0 {
            write!(f, ", {} QUIC Retry packets sent", self.quic_retries)?;
        }
        if self.invalid_datagrams > 0 {
            write!(
                f,
                ", {} invalid QUIC datagrams dropped",
                self.invalid_datagrams
            )?;
        }
        if self.sctp_inits_answered + self.sctp_packets_dropped > 0 {
            write!(
                f,
                "; SCTP: {} INITs answered without keeping state, {} associations from valid cookies, {} cookies refused, {} packets dropped",
                self.sctp_inits_answered,
                self.sctp_associations,
                self.sctp_cookies_refused,
                self.sctp_packets_dropped
            )?;
        }
        Ok(())
    }
}

/// Sockets to serve, bound beforehand. `None` means "not this service".
#[derive(Debug, Default)]
pub struct Listeners {
    pub tcp: Option<std::net::TcpListener>,
    pub udp: Option<std::net::UdpSocket>,
    pub tls: Option<std::net::TcpListener>,
    pub quic: Option<std::net::UdpSocket>,
    /// SCTP over UDP (port 9899 by default).
    pub sctp: Option<std::net::UdpSocket>,
}

impl Listeners {
    /// Binds all five services on `ip`: TCP and UDP on `plain_port`, TLS
    /// and QUIC on `secure_port`, SCTP over UDP on `sctp_port` (RFC 6951's
    /// 9899 is [`crate::wire::sctp::UDP_ENCAPS_PORT`]). Port 0 picks free ports (each service its
    /// own). Uses std sockets so it can run on a thread inside a network
    /// namespace; the sockets stay in that namespace.
    pub fn bind_all(
        ip: IpAddr,
        plain_port: u16,
        secure_port: u16,
        sctp_port: u16,
    ) -> anyhow::Result<Listeners> {
        Ok(Listeners {
            tcp: Some(bind_tcp(SocketAddr::new(ip, plain_port))?),
            udp: Some(bind_udp(SocketAddr::new(ip, plain_port))?),
            tls: Some(bind_tcp(SocketAddr::new(ip, secure_port))?),
            quic: Some(bind_udp(SocketAddr::new(ip, secure_port))?),
            sctp: Some(bind_udp(SocketAddr::new(ip, sctp_port))?),
        })
    }

    /// Where every bound socket listens, by the transport it serves.
    pub fn addresses(&self) -> ServiceAddresses {
        let tcp_addr =
            |l: &Option<std::net::TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        let udp_addr =
            |s: &Option<std::net::UdpSocket>| s.as_ref().and_then(|s| s.local_addr().ok());
        let all = [
            (Transport::Tcp, tcp_addr(&self.tcp)),
            (Transport::Udp, udp_addr(&self.udp)),
            (Transport::Tls, tcp_addr(&self.tls)),
            (Transport::Quic, udp_addr(&self.quic)),
            (Transport::Sctp, udp_addr(&self.sctp)),
        ];
        ServiceAddresses(
            all.into_iter()
                .filter_map(|(t, a)| a.map(|a| (t, a)))
                .collect(),
        )
    }
}

/// Where each service listens, by the transport it serves (the "listening
/// on" lines, and what clients dial).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAddresses(pub Vec<(Transport, SocketAddr)>);

impl ServiceAddresses {
    /// The address of `transport`'s service, or an error naming it.
    pub fn get(&self, transport: Transport) -> anyhow::Result<SocketAddr> {
        self.0
            .iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, a)| *a)
            .with_context(|| format!("no {} listener", transport.name()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Transport, SocketAddr)> {
        self.0.iter()
    }
}

/// The same services on several addresses, served by one server (one set
/// of limits and counters): `proto serve` listens on 127.0.0.1 *and* ::1,
/// because `localhost` resolves to ::1 first on many systems and a UDP
/// client (`nc -u localhost 8081`) does not fall back to 127.0.0.1.
#[derive(Debug, Default)]
pub struct ListenerSet(pub Vec<Listeners>);

impl From<Listeners> for ListenerSet {
    fn from(listeners: Listeners) -> ListenerSet {
        ListenerSet(vec![listeners])
    }
}

impl ListenerSet {
    /// Whether any of the sets serves TLS or QUIC (and so needs a certificate).
    pub fn needs_identity(&self) -> bool {
        self.0.iter().any(|l| l.tls.is_some() || l.quic.is_some())
    }

    /// Where every bound socket listens, set by set.
    pub fn addresses(&self) -> ServiceAddresses {
        ServiceAddresses(self.0.iter().flat_map(|l| l.addresses().0).collect())
    }
}

impl Listeners {
    /// The same services on `ip`, each on the port it has here (so `::1`
    /// mirrors `127.0.0.1` port for port, even for ports picked with 0).
    pub fn mirror_on(&self, ip: IpAddr) -> anyhow::Result<Listeners> {
        let here = self.addresses();
        let port_of = |t| here.get(t).ok().map(|a| SocketAddr::new(ip, a.port()));
        let tcp_on = |t| port_of(t).map(bind_tcp).transpose();
        let udp_on = |t| port_of(t).map(bind_udp).transpose();
        Ok(Listeners {
            tcp: tcp_on(Transport::Tcp)?,
            udp: udp_on(Transport::Udp)?,
            tls: tcp_on(Transport::Tls)?,
            quic: udp_on(Transport::Quic)?,
            sctp: udp_on(Transport::Sctp)?,
        })
    }
}

/// Binds a TCP listener with a clear error when the port is taken.
pub fn bind_tcp(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| bind_error(e, "TCP", addr))?;
    listener.set_nonblocking(true)?;
    deepen_backlog(&listener);
    Ok(listener)
}

/// The listen backlog: completed handshakes the kernel queues until
/// `accept` takes them. std's 128 overflowed 2 015 times in an unpaced
/// burst of 1 000 connects (a full queue drops the client's ACK, and the
/// client waits a retransmission timeout, 1 s and more). The kernel caps
/// it at `net.core.somaxconn` (4 096 by default since Linux 5.4).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Calls `listen` again with [`LISTEN_BACKLOG`] (Linux lets a listening
/// socket change its backlog); best effort.
fn deepen_backlog(listener: &std::net::TcpListener) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: listen on a socket descriptor we own.
        unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
    }
}

/// Pauses after a failed `accept` (EMFILE: out of descriptors, ENFILE,
/// ENOBUFS) instead of retrying at once: 10 ms, doubling up to 1 s, back
/// to nothing after a success. One log line per streak of failures (and
/// every 100th), not one per attempt.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Duration,
    failures: u64,
}

impl AcceptBackoff {
    pub fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
        self.failures = 0;
    }

    pub async fn failed(&mut self, ctx: &ServerContext, service: &str, e: &std::io::Error) {
        self.failures += 1;
        if self.failures == 1 || self.failures.is_multiple_of(100) {
            ctx.log(format_args!(
                "{service}: accept failed: {e} ({} in a row; waiting before the next try{})",
                self.failures,
                if e.raw_os_error() == Some(libc::EMFILE) {
                    ": out of file descriptors, lower --max-connections or raise ulimit -n"
                } else {
                    ""
                }
            ));
        }
        self.delay = (self.delay * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::select! {
            _ = ctx.shutdown.cancelled() => {}
            () = tokio::time::sleep(self.delay) => {}
        }
    }
}

/// Binds a UDP socket with a clear error when the port is taken.
pub fn bind_udp(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr).map_err(|e| bind_error(e, "UDP", addr))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn bind_error(e: std::io::Error, proto: &str, addr: SocketAddr) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "{proto} port {} on {} is already in use: stop the other server or pick another port with --port (0 picks a free one)",
            addr.port(),
            addr.ip()
        ),
        std::io::ErrorKind::AddrNotAvailable => anyhow::anyhow!(
            "cannot bind {proto} {addr}: {} is not an address of this machine (try --host 127.0.0.1 or 0.0.0.0)",
            addr.ip()
        ),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "no permission to bind {proto} {addr}: ports below 1024 need root; pick a port ≥ 1024"
        ),
        _ => anyhow::Error::new(e).context(format!("binding {proto} {addr}")),
    }
}

/// Runs every service in `listeners` until `shutdown` is cancelled, then
/// lets open connections finish (up to `config.grace`) and returns totals.
///
/// Must be called inside a tokio runtime.
pub async fn run(
    listeners: impl Into<ListenerSet>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<ServerSummary> {
    run_observed(listeners, config, shutdown, Arc::default()).await
}

/// [`run`], counting into `stats`, which the caller can watch while the
/// server runs (tests wait on these counters instead of sleeping).
pub async fn run_observed(
    listeners: impl Into<ListenerSet>,
    config: ServerConfig,
    shutdown: CancellationToken,
    stats: Arc<ServerStats>,
) -> anyhow::Result<ServerSummary> {
    let started = Instant::now();
    let ListenerSet(sets) = listeners.into();
    let serves_plain_tcp = sets.iter().any(|l| l.tcp.is_some());
    let max_connections = config
        .max_connections
        .unwrap_or_else(|| limits::ProcessLimits::read().default_max_connections(serves_plain_tcp));
    let limiter = Arc::new(limits::ConnectionLimiter::new(
        max_connections,
        config.max_per_address,
    ));
    let ctx = Arc::new(ServerContext {
        config,
        stats,
        shutdown,
        limiter,
    });
    let mut services = JoinSet::new();
    for listeners in sets {
        if let Err(e) = spawn_services(listeners, &ctx, &mut services) {
            ctx.shutdown.cancel();
            return Err(e);
        }
    }
    while let Some(done) = services.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                ctx.shutdown.cancel();
                return Err(e);
            }
            Err(e) => {
                ctx.shutdown.cancel();
                return Err(anyhow::anyhow!("a server task failed: {e}"));
            }
        }
    }
    let s = &ctx.stats;
    Ok(ServerSummary {
        uptime_secs: started.elapsed().as_secs_f64(),
        connections: s.connections.load(Relaxed),
        messages: s.messages.load(Relaxed),
        datagrams: s.datagrams.load(Relaxed),
        bytes_in: s.bytes_in.load(Relaxed),
        bytes_out: s.bytes_out.load(Relaxed),
        protocol_errors: s.protocol_errors.load(Relaxed),
        abnormal_closes: s.abnormal_closes.load(Relaxed),
        tls: s.tls.summary(),
        quic: s.quic.summary(),
        invalid_datagrams: s.invalid_datagrams.load(Relaxed),
        refused: s.refused.load(Relaxed),
        max_connections: ctx.limiter.max_total(),
        message_timeouts: s.message_timeouts.load(Relaxed),
        quic_retries: s.quic_retries.load(Relaxed),
        sctp_inits_answered: s.sctp_inits_answered.load(Relaxed),
        sctp_associations: s.sctp_associations.load(Relaxed),
        sctp_cookies_refused: s.sctp_cookies_refused.load(Relaxed),
        sctp_packets_dropped: s.sctp_packets_dropped.load(Relaxed),
    })
}

/// Starts one task per service of `listeners` into `services`.
fn spawn_services(
    listeners: Listeners,
    ctx: &Arc<ServerContext>,
    services: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    if let Some(l) = listeners.tcp {
        let listener =
            tokio::net::TcpListener::from_std(l).context("registering the TCP listener")?;
        // Plain TCP: a thread per connection, see server::blocking.
        services.spawn(blocking::accept_loop(listener, ctx.clone()));
    }
    if let Some(socket) = listeners.udp {
        // A thread of its own with a blocking socket: see udp::serve_blocking.
        // A plain thread, not tokio's blocking pool (whose threads a runtime
        // waits for when dropped); it ends on shutdown, or when this task
        // (its `finished` receiver) is dropped with the runtime.
        let ctx = ctx.clone();
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("udp echo".into())
            .spawn(move || {
                let result = udp::serve_blocking(socket, ctx, &|| done.is_closed());
                let _ = done.send(result);
            })
            .context("starting the UDP server thread")?;
        services.spawn(async move {
            finished
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the UDP server thread failed")))
        });
    }
    if let Some(s) = listeners.sctp {
        let socket = tokio::net::UdpSocket::from_std(s).context("registering the SCTP socket")?;
        services.spawn(sctp::serve(socket, ctx.clone()));
    }
    if listeners.tls.is_some() || listeners.quic.is_some() {
        let Some(identity) = ctx.config.identity.clone() else {
            anyhow::bail!(
                "TLS and QUIC need a certificate: set ServerConfig::identity (e.g. ServerConfig::quiet_default())"
            );
        };
        if let Some(l) = listeners.tls {
            let mut config =
                crate::transport::tls::server_config(&identity, ctx.config.tls_version, false)?;
            if !ctx.config.key_log {
                config.key_log = Arc::new(rustls::NoKeyLog);
            }
            let listener =
                tokio::net::TcpListener::from_std(l).context("registering the TLS listener")?;
            let setup = tls::TlsSetup {
                config: Arc::new(config),
                ctx: ctx.clone(),
            };
            services.spawn(accept_loop(listener, ctx.clone(), setup));
        }
        if let Some(s) = listeners.quic {
            let config = crate::transport::quic::server_config(
                &identity,
                ctx.config.idle_timeout,
                ctx.config.key_log,
            )?;
            services.spawn(quic::serve(s, config, ctx.clone()));
        }
    }
    Ok(())
}

/// How an accepted TCP connection becomes a byte stream to echo on: as is
/// (plain TCP), or after a TLS handshake.
pub trait StreamSetup: Clone + Send + Sync + 'static {
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send;
    /// The service name in log lines.
    fn name(&self) -> &'static str;
    /// Tells a client over the connection limit so, without blocking, then
    /// drops the connection.
    fn refuse(&self, tcp: std::net::TcpStream, refusal: &limits::Refusal);
    /// Turns the TCP connection into the stream to serve, or explains why not.
    fn setup(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> impl std::future::Future<Output = anyhow::Result<Self::Stream>> + Send;
}

/// Plain TCP: the connection is the stream.
#[derive(Clone)]
pub struct Plain;

impl StreamSetup for Plain {
    type Stream = tokio::net::TcpStream;
    fn name(&self) -> &'static str {
        "tcp"
    }
    fn refuse(&self, tcp: std::net::TcpStream, refusal: &limits::Refusal) {
        limits::refuse_plain(&tcp, refusal);
    }
    async fn setup(&self, tcp: tokio::net::TcpStream) -> anyhow::Result<tokio::net::TcpStream> {
        Ok(tcp)
    }
}

/// Accepts connections until shutdown; one task per connection, so one
/// slow or hostile client never holds up another.
pub async fn accept_loop<S: StreamSetup>(
    listener: tokio::net::TcpListener,
    ctx: Arc<ServerContext>,
    setup: S,
) -> anyhow::Result<()> {
    let mut connections = JoinSet::new();
    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        backoff.failed(&ctx, setup.name(), &e).await;
                        continue;
                    }
                };
                backoff.succeeded();
                let permit = match ctx.admit(setup.name(), peer) {
                    Ok(permit) => permit,
                    Err(refusal) => {
                        if let Ok(std) = tcp.into_std() {
                            setup.refuse(std, &refusal);
                        }
                        continue;
                    }
                };
                // Small messages should leave at once, not wait for Nagle.
                let _ = tcp.set_nodelay(true);
                ctx.stats.connections.fetch_add(1, Relaxed);
                let ctx = ctx.clone();
                let setup = setup.clone();
                connections.spawn(async move {
                    serve_connection(tcp, peer, &ctx, &setup).await;
                    drop(permit);
                });
            }
            // Reap finished connections so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener); // stop accepting: new clients now get "connection refused"
    finish_connections(connections, ctx.config.grace).await;
    Ok(())
}

async fn serve_connection<S: StreamSetup>(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: &ServerContext,
    setup: &S,
) {
    let name = setup.name();
    ctx.log(format_args!("{name} {peer}: connected"));
    let started = Instant::now();
    let stream = match setup.setup(tcp).await {
        Ok(s) => s,
        Err(e) => {
            ctx.stats.abnormal_closes.fetch_add(1, Relaxed);
            ctx.log(format_args!("{name} {peer}: refused: {e:#}"));
            return;
        }
    };
    let report = session::serve_stream(stream, ctx).await;
    ctx.stats.record_session(&report);
    ctx.log(format_args!(
        "{name} {peer}: closed after {:.1} s, {}",
        started.elapsed().as_secs_f64(),
        report.describe()
    ));
}

/// Waits for connections to end by themselves, up to `grace`, then cuts the rest.
pub async fn finish_connections(mut connections: JoinSet<()>, grace: Duration) {
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Completes when the process receives Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
