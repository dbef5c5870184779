//! `proto serve`: run echo servers until Ctrl-C, then print a summary.

use crate::server::{self, bind_tcp, bind_udp, ListenerSet, Listeners, ServerConfig};
use crate::transport::certs::{self, CertDir, ServerIdentity};
use crate::transport::tls::TlsVersion;
use crate::units::{parse_duration, parse_size};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Which echo service to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// Text lines (or frames) over TCP, port 8081: try `nc localhost 8081`.
    Tcp,
    /// One datagram in, one datagram out, port 8081/udp: try `nc -u localhost 8081`.
    Udp,
    /// The TCP echo inside TLS 1.3/1.2, port 8443: try `proto client tls`.
    Tls,
    /// QUIC v1, port 8443/udp: each stream is an echo session; datagrams echoed too.
    Quic,
    /// SCTP in userspace over UDP port 9899 (RFC 6951): one message in, its
    /// uppercase out, on the same stream; try `proto client sctp -m hello`.
    Sctp,
    /// All five at once: tcp and udp on 8081, tls and quic on 8443, sctp on 9899/udp.
    All,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  proto serve tcp            then, in another terminal: nc localhost 8081\n  proto serve udp            then: nc -u localhost 8081\n  proto serve tcp --port 0   let the system pick a free port (printed)\n  proto serve tls            then: proto client tls -m hello\n  proto serve sctp           then: proto client sctp -m hello (over UDP 9899)\n  proto serve all            every service in one process\n\nCertificates: the first TLS/QUIC run creates a local CA and a server\ncertificate (ECDSA P-256, for localhost, 127.0.0.1, ::1 and any --san) in the\ncertificate directory and prints their paths and SHA-256 fingerprints;\nclients trust that CA:\n  openssl s_client -connect localhost:8443 \\\n      -CAfile ~/.local/share/proto/certs/ca.pem\n\nResumption and 0-RTT: the servers issue session tickets and accept TLS 1.3\nearly data and QUIC 0-RTT. Early data can be replayed by an attacker, so it\nis only safe for idempotent requests; an uppercase echo changes nothing, so a\nreplay only produces the same answer again. SSLKEYLOGFILE=FILE logs the\nsession keys for Wireshark."
)]
pub struct ServeArgs {
    /// Which service to run.
    #[arg(value_enum)]
    pub service: Service,
    /// Address to listen on (0.0.0.0 or :: to accept other machines).
    /// Default: this machine only, on both 127.0.0.1 and ::1, since
    /// `localhost` is ::1 first on many systems.
    #[arg(long)]
    pub host: Option<IpAddr>,
    /// Port to listen on; 0 picks a free one. Default: 8081 (tcp, udp),
    /// 8443 (tls, quic), 9899 (sctp, a UDP port). With `all`, the plain
    /// services' port.
    #[arg(long)]
    pub port: Option<u16>,
    /// With `all`: the port of tls and quic. Default: 8443.
    #[arg(long, value_name = "PORT")]
    pub secure_port: Option<u16>,
    /// With `all`: the UDP port of sctp. Default: 9899 (RFC 6951).
    #[arg(long, value_name = "PORT")]
    pub sctp_port: Option<u16>,
    /// Accept only this TLS version (TLS over TCP; QUIC is always TLS 1.3).
    #[arg(long, value_enum, value_name = "VERSION")]
    pub tls_version: Option<TlsVersion>,
    /// Where the CA and server certificate live (created on first use).
    /// Default: $XDG_DATA_HOME/proto/certs or ~/.local/share/proto/certs.
    #[arg(long, env = "PROTO_CERT_DIR", value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Serve this PEM certificate chain instead of the generated one (with --key).
    #[arg(long, requires = "key", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, requires = "cert", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// An extra name (DNS name or IP address) for the generated certificate
    /// (repeatable), e.g. the address clients use to reach this machine.
    #[arg(long, value_name = "NAME")]
    pub san: Vec<String>,
    /// Drop clients whose TLS or QUIC handshake takes longer than this.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub handshake_timeout: Duration,
    /// Longest accepted text line; a longer one gets an error and the connection is closed.
    #[arg(long, default_value = "64KiB", value_parser = parse_size, value_name = "BYTES")]
    pub max_line: usize,
    /// Close connections that send nothing for this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// Most connections open at once (tcp, tls and quic together); one more
    /// is told "server busy" and closed. Default: derived from this
    /// process's limits (open files, threads, memory mappings) with headroom,
    /// printed at start.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most connections open at once from one client address.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_per_address: usize,
    /// A line or frame must arrive whole within this time of its first byte
    /// (plus one second per --min-rate bytes): closes "slowloris" clients that
    /// drip a byte now and then and so are never idle.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub message_timeout: Duration,
    /// The slowest a long message may arrive after --message-timeout, in
    /// bytes per second (e.g. 500, 4KiB).
    #[arg(long, default_value = "500", value_parser = parse_size, value_name = "BYTES")]
    pub min_rate: usize,
    /// When QUIC clients must prove their address with a Retry round trip
    /// before the server keeps state for them: auto (only while many
    /// handshakes are in progress, e.g. during an Initial flood), always,
    /// never.
    #[arg(long, default_value = "auto", value_parser = parse_retry, value_name = "WHEN")]
    pub quic_retry: server::quic::RetryPolicy,
    /// Most QUIC handshakes in progress at once; more are refused
    /// (CONNECTION_REFUSED). Auto Retry starts at a quarter of this.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_handshakes: usize,
    /// No log line per connection.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let default_port = match args.service {
        Service::Tcp | Service::Udp | Service::All => crate::wire::limits::PLAIN_PORT,
        Service::Tls | Service::Quic => crate::wire::limits::SECURE_PORT,
        Service::Sctp => crate::wire::sctp::UDP_ENCAPS_PORT,
    };
    let port = args.port.unwrap_or(default_port);
    let host = args.host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let addr = SocketAddr::new(host, port);
    let listeners = match args.service {
        Service::Tcp => Listeners {
            tcp: Some(bind_tcp(addr)?),
            ..Listeners::default()
        },
        Service::Udp => Listeners {
            udp: Some(bind_udp(addr)?),
            ..Listeners::default()
        },
        Service::Tls => Listeners {
            tls: Some(bind_tcp(addr)?),
            ..Listeners::default()
        },
        Service::Quic => Listeners {
            quic: Some(bind_udp(addr)?),
            ..Listeners::default()
        },
        Service::Sctp => Listeners {
            sctp: Some(bind_udp(addr)?),
            ..Listeners::default()
        },
        Service::All => Listeners::bind_all(
            host,
            port,
            args.secure_port.unwrap_or(crate::wire::limits::SECURE_PORT),
            args.sctp_port.unwrap_or(crate::wire::sctp::UDP_ENCAPS_PORT),
        )?,
    };
    let mut listeners = ListenerSet::from(listeners);
    if args.host.is_none() {
        // Without --host: IPv6's loopback too, port for port. A machine
        // without IPv6 (or with ::1's port taken) still serves on 127.0.0.1.
        match listeners.0[0].mirror_on(IpAddr::V6(Ipv6Addr::LOCALHOST)) {
            Ok(v6) => listeners.0.push(v6),
            Err(e) => eprintln!(
                "proto serve: not listening on ::1 too ({e:#}); 127.0.0.1 only, so use \
                 127.0.0.1 rather than localhost if localhost is ::1 here"
            ),
        }
    }
    let identity = if listeners.needs_identity() {
        let identity = load_identity(&args)?;
        for line in identity.describe() {
            outln!("proto serve: {line}");
        }
        Some(Arc::new(identity))
    } else {
        None
    };
    if std::env::var_os("SSLKEYLOGFILE").is_some() && identity.is_some() {
        outln!("proto serve: SSLKEYLOGFILE is set: TLS/QUIC session keys are logged there (for Wireshark)");
    }
    for (service, addr) in listeners.addresses().iter() {
        outln!("proto serve: {} listening on {addr}", service.name());
    }
    use std::io::Write;
    std::io::stdout().flush()?;

    let config = ServerConfig {
        max_line: args.max_line,
        idle_timeout: args.idle_timeout,
        quiet: args.quiet,
        identity,
        tls_version: args.tls_version,
        handshake_timeout: args.handshake_timeout,
        max_connections: args.max_connections,
        max_per_address: args.max_per_address,
        message_timeout: args.message_timeout,
        min_rate: args.min_rate as u64,
        quic_retry: args.quic_retry,
        max_handshakes: args.max_handshakes,
        ..ServerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        server::shutdown_signal().await;
        eprintln!("proto serve: shutting down (open connections may finish their message)");
        on_signal.cancel();
    });
    let summary = server::run(listeners, config, shutdown).await?;
    if args.json {
        outln!("{}", crate::output::json::pretty(&summary)?);
    } else {
        outln!("proto serve: {summary}");
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_retry(text: &str) -> Result<server::quic::RetryPolicy, String> {
    text.parse()
}

/// The certificate to serve: `--cert`/`--key`, or the generated one in the
/// certificate directory, covering `--san` names and a non-loopback bind
/// address.
fn load_identity(args: &ServeArgs) -> anyhow::Result<ServerIdentity> {
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        return ServerIdentity::from_files(cert, key);
    }
    let dir = match &args.cert_dir {
        Some(dir) => CertDir::new(dir),
        None => CertDir::default_dir()?,
    };
    let mut names = args.san.clone();
    if let Some(host) = args.host {
        names.extend(certs::names_for_bind(host));
    }
    dir.load_or_create(&names)
}
