//! `proto client … --count N | --duration D`: latency under load.
//!
//! Options → [`LoadConfig`] → [`crate::measure::load`] → renderers in
//! [`crate::output::latency`] and [`crate::output::plot`]. The same
//! [`run_load`] serves `proto bench`. The engine's typed errors get their
//! flag names and advice here ([`config_error`], [`load_error`], [`hints`]).

use crate::cmd::client::ClientArgs;
use crate::measure::histogram::Unit;
use crate::measure::load::{
    self, ConfigError, Failure, LoadConfig, LoadError, LoadProgress, LoadReport, Stop,
};
use crate::output::latency;
use crate::output::plot::LatencyScale;
use crate::transport::{quic, tls, Stream, Target, Transport};
use crate::units::{parse_duration, parse_request_rate, parse_size};
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Load-mode options of `proto client` (flattened into its arguments).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Load mode (latency percentiles under load)")]
pub struct LoadArgs {
    /// Load mode: send N requests in all (over all connections), then print
    /// latency percentiles, throughput and a histogram.
    #[arg(long, value_name = "N", conflicts_with_all = ["duration", "messages"])]
    pub count: Option<u64>,
    /// Load mode: send requests for this long (after --warmup).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", conflicts_with = "messages")]
    pub duration: Option<Duration>,
    /// Connections (UDP: sockets), each with one request in flight.
    #[arg(short = 'c', long, default_value_t = 1, value_name = "C")]
    pub connections: usize,
    /// QUIC and SCTP: streams per connection (association), each with one
    /// request in flight. With -m (sctp): messages go round-robin over them.
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub streams: usize,
    /// Payload bytes per message (text: letters before the newline).
    #[arg(long, default_value = "64", value_parser = parse_size, value_name = "BYTES")]
    pub size: usize,
    /// Send for this long first without recording (connections warm up,
    /// caches fill, CPU clocks rise).
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub warmup: Duration,
    /// Open loop: send R requests per second in all, on a fixed schedule,
    /// and count each latency from its intended send time
    /// (coordinated-omission correction). Default: closed loop.
    #[arg(long, value_parser = parse_request_rate, value_name = "R/s")]
    pub rate: Option<f64>,
    /// UDP: a reply not back within this long counts as lost.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub lost_after: Duration,
    /// Write HdrHistogram's percentile distribution (.hgrm, milliseconds)
    /// to FILE, for its plotter.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Draw latency by percentile as an SVG chart into FILE (16:9, sized
    /// for a slide; the title says where it ran).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// The chart's latency axis: linear from 0, or log (1-2-5 ticks), which
    /// keeps the median readable beside a tail 1000× longer.
    #[arg(
        long,
        value_enum,
        default_value = "linear",
        requires = "plot",
        value_name = "SCALE"
    )]
    pub plot_scale: LatencyScale,
}

impl LoadArgs {
    /// Whether the user asked for load mode at all.
    pub fn is_load(&self) -> bool {
        self.count.is_some() || self.duration.is_some()
    }

    /// The run's shape, before any socket is opened.
    pub fn config(&self, transport: Transport, framed: bool, timeout: Duration) -> LoadConfig {
        LoadConfig {
            // Every QUIC stream is one request-in-flight "connection" of the load.
            connections: self.connections * self.streams.max(1),
            size: self.size,
            framed,
            stop: match (self.count, self.duration) {
                (Some(n), _) => Stop::Count(n),
                (None, Some(d)) => Stop::Duration(d),
                (None, None) => Stop::Count(1),
            },
            warmup: self.warmup,
            rate: self.rate,
            timeout: if transport == Transport::Udp {
                self.lost_after
            } else {
                timeout
            },
            unit: Unit::Nanos,
        }
    }
}

/// Where a run went, in words, for a chart's title: across `proto lab`
/// (which describes its link in `PROTO_LAB_LINK`), over loopback, or over
/// whatever network lies between here and the target.
fn conditions(target: &Target) -> String {
    if let Some(link) = std::env::var("PROTO_LAB_LINK")
        .ok()
        .filter(|l| !l.is_empty())
    {
        return format!("across proto lab ({link})");
    }
    if target.is_loopback() {
        "loopback (no emulated link)".into()
    } else {
        format!("over the network to {target}")
    }
}

/// Entry point from `proto client` when `--count` or `--duration` is given.
pub async fn run(args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let load = &args.load;
    let target = Target::parse(
        args.target.as_deref().unwrap_or("localhost"),
        args.transport.default_port(),
    )?;
    let config = load.config(args.transport, args.framed, args.timeout);
    validate(&config, args.transport, "--rate")?;
    if load.streams != 1 && !matches!(args.transport, Transport::Quic | Transport::Sctp) {
        bail!(
            "--streams is for QUIC and SCTP (streams inside one connection); use --connections for {}",
            args.transport.name()
        );
    }
    let label = format!("{} {}", args.transport.name(), target);
    let lanes = latency::Lanes::new(args.transport, load.connections, load.streams);
    if !args.json {
        outln!(
            "proto client: {}",
            latency::describe_load(&label, &config, lanes)
        );
    }
    let progress = Arc::new(LoadProgress::default());
    let bar =
        crate::output::progress::ProgressDisplay::start(&progress, &config, args.transport.name());
    let security = Security::from_args(args)?;
    let result = run_load(
        args.transport,
        &target,
        &config,
        &security,
        load.streams.max(1),
        args.timeout,
        progress,
    )
    .await;
    bar.finish().await;
    let report = result?;
    for hint in hints(&report, &target.to_string()) {
        eprintln!("hint: {hint}");
    }

    if let Some(path) = &load.hgrm {
        std::fs::write(path, latency::hgrm(&report.latency))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &load.plot {
        let conditions = conditions(&target);
        let chart = latency::load_chart(&label, &conditions, &report, load.plot_scale);
        std::fs::write(path, chart).with_context(|| format!("writing {}", path.display()))?;
    }
    let target_text = target.to_string();
    if args.json {
        let json = latency::LoadJson::new(&report, args.transport.name(), &target_text, lanes);
        outln!("{}", crate::output::json::pretty(&json)?);
    } else {
        out!("{}", latency::load_text(&report, lanes));
        for (what, path) in [
            ("percentile distribution", &load.hgrm),
            ("chart", &load.plot),
        ] {
            if let Some(p) = path {
                outln!("{what} written to {}", p.display());
            }
        }
    }
    Ok(if healthy(&report) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Checks a config before anything is opened, in the command line's words
/// (`rate_flag`: how this command spells the request rate).
pub fn validate(config: &LoadConfig, transport: Transport, rate_flag: &str) -> anyhow::Result<()> {
    let checked = if transport == Transport::Udp {
        config.validate_datagrams()
    } else {
        config.validate()
    };
    checked.map_err(|e| config_error(&e, rate_flag))
}

/// The engine's [`ConfigError`] as a sentence that names the flag to change.
pub fn config_error(e: &ConfigError, rate_flag: &str) -> anyhow::Error {
    anyhow::anyhow!(match e {
        ConfigError::NoConnections => "--connections must be at least 1".to_string(),
        ConfigError::Size { size, max } => {
            format!("--size must be between 1 byte and {max} (got {size})")
        }
        ConfigError::FrameTooLarge { size, max } => {
            format!("a frame carries at most {max} payload bytes (--size {size})")
        }
        ConfigError::DatagramTooLarge { max, overhead, .. } => format!(
            "a UDP datagram carries at most {max} bytes: use --size {} or less",
            max - overhead
        ),
        ConfigError::Rate(_) => {
            format!("{rate_flag} must be a positive number of requests per second")
        }
        ConfigError::ZeroCount => "--count must be at least 1".to_string(),
        ConfigError::ZeroDuration => "--duration must be more than 0".to_string(),
    })
}

/// Why a run could not start, with what to check. Connections the load
/// opened itself (plain TCP and UDP) fail with an I/O error that says
/// little on its own.
pub fn load_error(e: LoadError, transport: Transport, target: &str) -> anyhow::Error {
    let advice = match &e {
        LoadError::Config(c) => return config_error(c, "--rate"),
        LoadError::Connect { source, .. } => match source.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => format!(
                "connection refused: is 'proto serve {}' running on {target}?",
                transport.name()
            ),
            Some(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                format!("no answer from {target}: is the host reachable and the port open? (--timeout waits longer)")
            }
            _ => return e.into(),
        },
    };
    anyhow::anyhow!("{e}: {advice}")
}

/// What to try after connections failed during a run.
pub fn hints(report: &LoadReport, target: &str) -> Vec<String> {
    let mut hints = Vec::new();
    let failed = |f: fn(&Failure) -> bool| report.errors.iter().any(|e| f(&e.failure));
    if failed(|f| *f == Failure::Refused) {
        hints.push(format!(
            "an ICMP port unreachable came back: is 'proto serve udp' running on {target}?"
        ));
    }
    if failed(|f| matches!(f, Failure::NoReply(_))) {
        hints.push(
            "a server slower than --timeout fails the connection: --timeout waits longer".into(),
        );
    }
    hints
}

/// A run succeeded if something was measured and every reply was right.
/// UDP losses are a measurement, not a failure.
pub fn healthy(report: &LoadReport) -> bool {
    report.latency.count() > 0 && report.mismatches == 0 && report.failed_connections == 0
}

/// Connects and runs the load for one transport. The one place where a
/// new transport plugs into load mode.
/// How a load client reaches a TLS or QUIC server (unused for tcp/udp).
pub struct Security {
    pub trust: tls::Trust,
    pub server_name: Option<String>,
    pub tls_version: Option<tls::TlsVersion>,
}

impl Security {
    fn from_args(args: &ClientArgs) -> anyhow::Result<Security> {
        let trust = if args.transport.is_encrypted() {
            super::trust_from_args(args.ca.as_deref(), args.insecure)?
        } else {
            tls::Trust::Insecure // never used for tcp/udp
        };
        Ok(Security {
            trust,
            server_name: args.server_name.clone(),
            tls_version: args.tls_version,
        })
    }
}

/// Any stream the async load driver can use: a TLS stream, a QUIC stream.
pub trait LoadStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> LoadStream for T {}

pub async fn run_load(
    transport: Transport,
    target: &Target,
    config: &LoadConfig,
    security: &Security,
    streams_per_connection: usize,
    connect_timeout: Duration,
    progress: Arc<LoadProgress>,
) -> anyhow::Result<LoadReport> {
    let report = match transport {
        // Plain TCP and UDP: a blocking thread per connection, like the C
        // reference client (one system call per wait instead of two).
        Transport::Tcp | Transport::Udp => {
            let addr = *target.resolve().await?.first().context("no address")?;
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                if transport == Transport::Tcp {
                    load::blocking::run_tcp(&config, addr, connect_timeout, progress)
                } else {
                    load::blocking::run_udp(&config, addr, progress)
                }
            })
            .await
            .context("the load threads failed")?
        }
        // TLS: a full handshake per connection (before the clock starts),
        // then requests over the encrypted stream.
        Transport::Tls => {
            let mut opts = tls::ClientTlsOptions::new(&security.trust, security.tls_version)?;
            opts.server_name = security.server_name.clone();
            let connect = |_| {
                let opts = opts.clone();
                async move { Ok(tls::connect(target, &opts, connect_timeout).await?.0) }
            };
            load::task::run_streams(config, connect, progress).await
        }
        // QUIC: `--streams S` streams share each connection; each stream has
        // one request in flight, so S streams multiplex S requests on one
        // congestion-controlled connection.
        Transport::Quic => {
            let mut opts = quic::ClientQuicOptions::new(&security.trust)?;
            opts.server_name = security.server_name.clone();
            let current: std::sync::Mutex<Option<quinn::Connection>> = Default::default();
            let connect = |i: usize| {
                let opts = opts.clone();
                let current = &current;
                async move {
                    let existing = if i.is_multiple_of(streams_per_connection) {
                        None
                    } else {
                        current.lock().ok().and_then(|c| c.clone())
                    };
                    let stream: Box<dyn LoadStream> = match existing {
                        Some(connection) => {
                            let (send, recv) = connection
                                .open_bi()
                                .await
                                .map_err(|e| anyhow::anyhow!("cannot open a QUIC stream: {e}"))?;
                            Box::new(tokio::io::join(recv, send))
                        }
                        None => {
                            let (stream, _) = quic::connect(target, &opts, connect_timeout).await?;
                            if let Stream::Quic(q) = &stream {
                                if let Ok(mut c) = current.lock() {
                                    *c = Some(q.connection.clone());
                                }
                            }
                            Box::new(stream)
                        }
                    };
                    Ok::<_, load::BoxError>(stream)
                }
            };
            load::task::run_streams(config, connect, progress).await
        }
        // SCTP: like QUIC, `--streams S` streams of one association; every
        // message is one SCTP user message.
        Transport::Sctp => {
            let opts = crate::transport::sctp::SctpOptions::default();
            // Every association, kept to close them gracefully at the end
            // (SHUTDOWN), so the server does not hold them until its idle timeout.
            let associations: std::sync::Mutex<Vec<crate::transport::sctp::ConnectedSctp>> =
                Default::default();
            let connect = |i: usize| {
                let opts = opts.clone();
                let associations = &associations;
                async move {
                    if i.is_multiple_of(streams_per_connection) {
                        let (association, _) =
                            crate::transport::sctp::connect(target, &opts, connect_timeout).await?;
                        if let Ok(mut all) = associations.lock() {
                            all.push(association);
                        }
                    }
                    let id = (i % streams_per_connection) as u16;
                    let stream = associations
                        .lock()
                        .ok()
                        .and_then(|all| all.last().map(|a| a.stream(id, false)))
                        .context("no SCTP association to open a stream on")?;
                    Ok::<_, load::BoxError>(stream)
                }
            };
            let report = load::task::run_streams(config, connect, progress).await;
            let all = associations.into_inner().unwrap_or_default();
            futures_util::future::join_all(all.into_iter().map(|a| a.close(connect_timeout))).await;
            report
        }
    };
    report.map_err(|e| load_error(e, transport, &target.to_string()))
}
