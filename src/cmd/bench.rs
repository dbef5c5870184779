//! `proto bench`: echo servers in-process, the same load against each
//! transport, one comparison table.
//!
//! Servers bind `127.0.0.1:0` inside this process ([`crate::server::run`]),
//! the load generator ([`crate::cmd::load::run_load`]) runs against each in
//! turn, and the table puts p50/p99/p99.9 and throughput side by side, with
//! each transport's ratio to TCP's.

use crate::cmd::link_args::LinkArgs;
use crate::cmd::load::{healthy, run_load, validate, Security};
use crate::lab::servers::LabServers;
use crate::measure::histogram::Unit;
use crate::measure::load::{LoadConfig, LoadProgress, LoadReport, Stop};
use crate::output::latency::LoadJson;
use crate::output::progress::ProgressDisplay;
use crate::server::{self, Listeners, ServerConfig};
use crate::transport::{tls, Target, Transport};
use crate::units::{parse_duration, parse_request_rate, parse_size};
use anyhow::bail;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  proto bench                                   tcp and udp, 3 s each, closed loop\n  proto bench --protocols tcp --connections 8   8 connections\n  proto bench --size 32K --count 5000           large messages\n  proto bench --request-rate 5000/s --duration 5s   open loop, corrected latency\n  proto bench --rtt 20ms --loss 1%              across an emulated link (proto lab)"
)]
pub struct BenchArgs {
    /// Transports to compare, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "tcp,udp,tls,quic"
    )]
    pub protocols: Vec<Transport>,
    /// Requests per transport (instead of --duration).
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    pub count: Option<u64>,
    /// How long to load each transport.
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Connections (UDP: sockets), each with one request in flight.
    #[arg(short = 'c', long, default_value_t = 1, value_name = "C")]
    pub connections: usize,
    /// Payload bytes per message.
    #[arg(long, default_value = "64", value_parser = parse_size, value_name = "BYTES")]
    pub size: usize,
    /// Use the binary frame format instead of text lines.
    #[arg(long)]
    pub framed: bool,
    /// Unrecorded warm-up before each transport's measurement.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DURATION")]
    pub warmup: Duration,
    /// Open loop at this many requests per second (latency corrected for
    /// coordinated omission). Default: closed loop.
    #[arg(long, value_parser = parse_request_rate, value_name = "R/s")]
    pub request_rate: Option<f64>,
    /// UDP: a reply not back within this long counts as lost.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub lost_after: Duration,
    /// An emulated link between the load and the servers (`proto lab`'s
    /// options; without root, in a user namespace). Without any, the bench runs
    /// over loopback; with any, it never falls back to loopback.
    #[command(flatten)]
    pub link: LinkArgs,
    /// Print all results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One transport's result.
struct Row {
    transport: Transport,
    report: LoadReport,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let mut protocols = args.protocols.clone();
    protocols.dedup();
    if protocols.is_empty() {
        bail!("--protocols needs at least one of tcp, udp, tls, quic");
    }
    let link = args.link.to_config()?;
    let over_lab = args.link.asks_for_link();
    let (rows, addresses) = if over_lab {
        let servers = LabServers::start(link).await?;
        let addresses = servers.addresses.clone();
        let (args2, protocols2, addresses2) = (args.clone(), protocols.clone(), addresses.clone());
        let result = servers
            .on_client(move || async move { bench_all(&args2, &protocols2, &addresses2).await })
            .await;
        let (_, counters) = servers.stop().await?;
        // On stderr even with --json: stdout stays one clean JSON document.
        eprintln!("{}", crate::output::link::counters_table(&counters));
        (result??, addresses)
    } else {
        // In-process servers on loopback, each on a free port.
        let config = ServerConfig::quiet_default()?;
        let listeners = Listeners::bind_all(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0, 0)?;
        let addresses = listeners.addresses();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(server::run(listeners, config, shutdown.clone()));
        let result = bench_all(&args, &protocols, &addresses).await;
        shutdown.cancel();
        let _ = server.await;
        (result?, addresses)
    };

    if args.json {
        let targets: Vec<String> = rows
            .iter()
            .map(|r| address_of(&addresses, r.transport))
            .collect();
        let json: Vec<LoadJson<'_>> = rows
            .iter()
            .zip(&targets)
            .map(|(r, t)| LoadJson::new(&r.report, r.transport.name(), t))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let table: Vec<(Transport, &LoadReport)> =
            rows.iter().map(|r| (r.transport, &r.report)).collect();
        outln!("{}", crate::output::bench::comparison_table(&table));
        for r in &rows {
            for e in &r.report.errors {
                outln!("{}: {e}", r.transport.name());
            }
        }
    }
    Ok(if rows.iter().all(|r| healthy(&r.report)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn address_of(addresses: &[(&'static str, SocketAddr)], t: Transport) -> String {
    addresses
        .iter()
        .find(|(name, _)| *name == t.name())
        .map(|(_, a)| a.to_string())
        .unwrap_or_default()
}

async fn bench_all(
    args: &BenchArgs,
    protocols: &[Transport],
    addresses: &[(&'static str, SocketAddr)],
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // proto's local CA signed the in-process servers' certificates.
    let security = Security {
        trust: tls::Trust::from_options(None, false)?,
        server_name: None,
        tls_version: None,
    };
    for &transport in protocols {
        let target = Target::parse(&address_of(addresses, transport), 0)?;
        let config = LoadConfig {
            connections: args.connections,
            size: args.size,
            framed: args.framed,
            stop: match args.count {
                Some(n) => Stop::Count(n),
                None => Stop::Duration(args.duration),
            },
            warmup: args.warmup,
            rate: args.request_rate,
            timeout: if transport == Transport::Udp {
                args.lost_after
            } else {
                Duration::from_secs(5)
            },
            unit: Unit::Nanos,
        };
        validate(&config, transport, "--request-rate")?;
        let progress = Arc::new(LoadProgress::default());
        let bar = ProgressDisplay::start(&progress, &config, transport.name());
        let report = run_load(
            transport,
            &target,
            &config,
            &security,
            1,
            Duration::from_secs(5),
            progress,
        )
        .await;
        bar.finish().await;
        rows.push(Row {
            transport,
            report: report?,
        });
    }
    Ok(rows)
}
