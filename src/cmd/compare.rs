//! `proto compare`: how many round trips each protocol spends before the
//! first byte of data gets an answer, side by side with what theory says.

use crate::cmd::link_args::LinkArgs;
use crate::lab::servers::LabServers;
use crate::lab::Lab;
use crate::measure::handshake::{self, Endpoints, RunEvent, Variant, VariantResult};
use crate::output::compare::{render_csv, render_explanation, render_table, CompareReport};
use crate::output::link::describe;
use crate::output::progress::Counter;
use crate::server::{self, Listeners, ServerConfig};
use crate::transport::Target;
use anyhow::Context;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  proto compare                        every variant, 5 runs each\n  proto compare --protocols tcp,udp --runs 10\n  proto compare --to server.example    against 'proto serve all' elsewhere\n  proto compare --json | jq '.variants[] | {protocol, handshake_rtts}'\n\nDefault link: 100 ms round trip, no loss, no rate limit, across the emulated\nlink (the link options and --link change it). Where the lab cannot be built,\ncompare says so and measures loopback; with any link option it fails instead.\n--loopback measures loopback on purpose, --to a real server."
)]
pub struct CompareArgs {
    /// Variants to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Variant::ALL.to_vec())]
    pub protocols: Vec<Variant>,
    /// Measured connections per variant (a warm-up connection comes first and is not counted).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub runs: u64,
    /// Measure against `proto serve all` running on HOST (ports 8081 and 8443)
    /// instead of in-process servers.
    #[arg(long, value_name = "HOST")]
    pub to: Option<String>,
    /// With --to: the port of the server's TCP and UDP echo.
    #[arg(long, default_value_t = crate::wire::limits::PLAIN_PORT, requires = "to")]
    pub plain_port: u16,
    /// With --to: the port of the server's TLS and QUIC echo.
    #[arg(long, default_value_t = crate::wire::limits::SECURE_PORT, requires = "to")]
    pub secure_port: u16,
    /// With --to: the UDP port of the server's SCTP echo.
    #[arg(long, default_value_t = crate::wire::sctp::UDP_ENCAPS_PORT, requires = "to")]
    pub sctp_port: u16,
    /// Measure on loopback even where the emulated link is available.
    #[arg(long, conflicts_with = "to")]
    pub loopback: bool,
    /// Name to verify the server's certificate against (default: the --to host).
    #[arg(long)]
    pub server_name: Option<String>,
    /// With --to: trust this CA certificate (PEM) instead of proto's local CA.
    #[arg(long, value_name = "FILE", requires = "to")]
    pub ca: Option<std::path::PathBuf>,
    /// With --to: do not verify the server's certificate at all (anyone on
    /// the path could impersonate it; the round trips are the same).
    #[arg(long, requires = "to")]
    pub insecure: bool,
    /// Give up on a connection after this long.
    #[arg(long, default_value = "10s", value_parser = crate::units::parse_duration)]
    pub timeout: Duration,
    /// The emulated link (used unless --to or --loopback; without root it is
    /// built in a user namespace).
    /// Without --rtt or --delay, the link has a 100 ms round trip.
    #[command(flatten)]
    pub link: LinkArgs,
    /// Print JSON (one object per variant, with `protocol` and `handshake_rtts`).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV, one row per variant.
    #[arg(long)]
    pub csv: bool,
    /// After the table, trace one more connection of each variant across
    /// the same link and print its ladder (see `proto trace`). Lab only.
    #[arg(long, conflicts_with_all = ["json", "csv", "to", "loopback"])]
    pub ladder: bool,
    /// With --ladder: write one SVG ladder per variant into DIR instead of printing them.
    #[arg(long, value_name = "DIR", requires = "ladder")]
    pub ladder_svg: Option<std::path::PathBuf>,
    /// Measure every variant at several RTTs or loss rates, a fresh link per
    /// point: `rtt=10ms..400ms` (5 evenly spaced points; `rtt=10ms..400ms:8`
    /// for 8), `rtt=20ms,60ms,329ms`, or `loss=0%..10%` (at the --rtt given,
    /// 100 ms by default; use --runs 20 or more to see the spread). An RTT
    /// sweep fits time-to-first-reply = intercept + slope × RTT per variant:
    /// slope − 1 is the handshake's round trips, the intercept its CPU and
    /// crypto time. A loss sweep shows the median and p90 and names the
    /// timer behind each jump (TCP's initial RTO, QUIC's PTO); UDP never
    /// resends, so its lost runs each wait the whole --timeout (lower it, e.g.
    /// --timeout 2s). Ctrl-C stops it and prints what was measured.
    #[arg(long, value_name = "rtt=…|loss=…", value_parser = parse_sweep,
          conflicts_with_all = ["to", "loopback", "ladder"])]
    pub sweep: Option<crate::measure::sweep::SweepSpec>,
    /// With --sweep: draw the figure (time to first reply against RTT or
    /// loss, theory dashed) into FILE as SVG.
    #[arg(long, value_name = "FILE", requires = "sweep")]
    pub svg: Option<std::path::PathBuf>,
}

fn parse_sweep(s: &str) -> Result<crate::measure::sweep::SweepSpec, String> {
    crate::measure::sweep::SweepSpec::parse(s).map_err(|e| e.to_string())
}

pub async fn run(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let runs = args.runs as usize;
    if (args.to.is_some() || args.loopback) && args.link.asks_for_link() {
        anyhow::bail!(
            "proto compare: link options (--rtt, --link, --loss, …) shape proto's emulated link, \
             which --to and --loopback do not use; drop one or the other"
        );
    }
    if let Some(spec) = &args.sweep {
        return super::sweep::run(&args, spec).await;
    }
    let report = if let Some(host) = &args.to {
        let endpoints = remote_endpoints(host, &args).await?;
        let setting = format!(
            "Measured against {host} (tcp/udp {}, tls/quic {}), {runs} runs per variant after a warm-up.",
            endpoints.tcp, endpoints.tls
        );
        let variants = measure_all(&args.protocols, &endpoints, runs, args.timeout).await;
        CompareReport {
            environment: "remote".into(),
            setting,
            runs,
            variants,
            link: None,
            configured_rtt_ms: None,
        }
    } else if args.loopback {
        loopback(&args, runs).await?
    } else {
        match Lab::check_available() {
            Ok(()) => in_lab(&args, runs).await?,
            // The user asked for a link: measuring loopback instead would
            // answer a different question. Fail with the reason.
            Err(why) if args.link.asks_for_link() => {
                return Err(why).context(
                    "proto compare: the link options ask for the emulated link, which cannot be built here",
                )
            }
            Err(why) => {
                eprintln!(
                    "proto compare: measuring on LOOPBACK, not across an emulated link: {why}\n\
                     On loopback round trips take microseconds: CPU time (key exchange, certificate \
                     checks) dominates and the RTT counts below mean little."
                );
                loopback(&args, runs).await?
            }
        }
    };
    print_report(&report, &args)?;
    if args.ladder {
        if report.environment == "lab" {
            print_ladders(&args).await?;
        } else {
            eprintln!("proto compare: --ladder needs the emulated link (root); no ladders drawn");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--ladder`: one traced connection per variant, drawn.
async fn print_ladders(args: &CompareArgs) -> anyhow::Result<()> {
    use crate::measure::trace::{trace_live, TraceOptions};
    use crate::output::ladder;
    if let Some(dir) = &args.ladder_svg {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for &variant in &args.protocols {
        let trace = trace_live(TraceOptions {
            variant,
            lab: lab_config(&args.link)?,
            faults: Vec::new(),
            all: false,
            timeout: args.timeout,
            probes: 3,
            qlog: None,
        })
        .await
        .with_context(|| format!("tracing {}", variant.id()))?;
        match &args.ladder_svg {
            Some(dir) => {
                let path = dir.join(format!("{}.svg", variant.id()));
                std::fs::write(&path, ladder::render_svg(&trace))
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("{}: {}", variant.id(), path.display());
            }
            None => print!(
                "{}",
                ladder::render_text(
                    &trace,
                    std::io::IsTerminal::is_terminal(&std::io::stdout()),
                    true
                )
            ),
        }
    }
    Ok(())
}

fn print_report(report: &CompareReport, args: &CompareArgs) -> anyhow::Result<()> {
    if args.json {
        outln!("{}", crate::output::json::pretty(report)?);
    } else if args.csv {
        out!("{}", render_csv(report));
    } else {
        outln!("{}", render_table(report));
        outln!("{}", render_explanation(report));
    }
    Ok(())
}

async fn remote_endpoints(host: &str, args: &CompareArgs) -> anyhow::Result<Endpoints> {
    let plain = Target::parse(host, args.plain_port)?;
    let ip = plain.resolve().await?[0].ip();
    Ok(Endpoints {
        tcp: (ip, args.plain_port).into(),
        udp: (ip, args.plain_port).into(),
        tls: (ip, args.secure_port).into(),
        sctp: (ip, args.sctp_port).into(),
        quic: (ip, args.secure_port).into(),
        server_name: args.server_name.clone().unwrap_or(plain.host),
        trust: super::trust_from_args(args.ca.as_deref(), args.insecure)?,
    })
}

/// Servers in this process on 127.0.0.1, clients too.
async fn loopback(args: &CompareArgs, runs: usize) -> anyhow::Result<CompareReport> {
    // The server's certificate first: the clients trust its CA.
    let config = ServerConfig::quiet_default()?;
    let listeners = Listeners::bind_all(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0, 0)?;
    let endpoints = Endpoints::from_addresses(&listeners.addresses(), "localhost")?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(server::run(listeners, config, shutdown.clone()));
    let variants = measure_all(&args.protocols, &endpoints, runs, args.timeout).await;
    shutdown.cancel();
    server.await.context("the in-process server failed")??;
    Ok(CompareReport {
        environment: "loopback".into(),
        setting: format!("Measured on loopback (127.0.0.1), {runs} runs per variant after a warm-up: RTTs are microseconds, so CPU time dominates."),
        runs,
        variants,
        link: None,
        configured_rtt_ms: None,
    })
}

/// Servers on the lab's server host, clients on its client host, the
/// emulated link between them: real round trips, on one machine.
async fn in_lab(args: &CompareArgs, runs: usize) -> anyhow::Result<CompareReport> {
    let config = lab_config(&args.link)?;
    let configured_rtt_ms =
        Some((config.client_to_server.delay + config.server_to_client.delay).as_secs_f64() * 1e3);
    let setting = format!(
        "Measured across proto's emulated link (client→server: {}; server→client: {}), \
         {runs} runs per variant after a warm-up.",
        describe(&config.client_to_server),
        describe(&config.server_to_client)
    );
    let servers = LabServers::start(config.clone()).await?;
    let server_ip = servers.lab().server_ip();
    let endpoints = Endpoints::from_addresses(&servers.addresses, &server_ip.to_string())?;
    let protocols = args.protocols.clone();
    let timeout = args.timeout;
    let mut variants = servers
        .on_client(move || async move { measure_all(&protocols, &endpoints, runs, timeout).await })
        .await?;
    if let Err(why) = &servers.fast_open {
        for v in variants
            .iter_mut()
            .filter(|v| v.protocol == Variant::Tls13ZeroRttTfo)
        {
            v.note = Some(format!("TCP Fast Open is not available here: {why}"));
        }
    }
    let (_, counters) = servers.stop().await?;
    let fidelity = crate::lab::fidelity::assess_lab(&config, &counters);
    if !fidelity.faithful {
        eprintln!("{}", crate::output::link::fidelity_verdict(&fidelity));
    }
    let mut link = serde_json::to_value(counters).ok();
    if let Some(link) = link.as_mut() {
        link["fidelity"] = serde_json::to_value(&fidelity)?;
    }
    Ok(CompareReport {
        environment: "lab".into(),
        setting,
        runs,
        variants,
        link,
        configured_rtt_ms,
    })
}

/// The link the options describe, with [`DEFAULT_LAB_RTT`] when they give no delay.
pub fn lab_config(link: &LinkArgs) -> anyhow::Result<crate::lab::LabConfig> {
    let mut link = link.with_preset();
    if [link.rtt, link.delay, link.up_delay, link.down_delay]
        .iter()
        .all(Option::is_none)
    {
        link.rtt = Some(DEFAULT_LAB_RTT);
    }
    link.to_config()
}

/// The round trip of the lab's link when none is given.
pub const DEFAULT_LAB_RTT: Duration = Duration::from_millis(100);

/// Measures each variant in turn, with a progress bar on a terminal.
pub async fn measure_all(
    variants: &[Variant],
    endpoints: &Endpoints,
    runs: usize,
    timeout: Duration,
) -> Vec<VariantResult> {
    let bar = Counter::new((variants.len() * runs) as u64, "connections");
    let results =
        handshake::measure_variants(variants, endpoints, runs, timeout, |event| match event {
            RunEvent::VariantStarted(variant) => bar.set_message(variant.id()),
            RunEvent::ConnectionDone => bar.inc(1),
            RunEvent::VariantSkipped { connections } => bar.inc(connections as u64),
        })
        .await;
    bar.finish();
    results
}
