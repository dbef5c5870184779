//! `proto hol`: head-of-line blocking, TCP vs QUIC and SCTP, across a lossy link.

use crate::cmd::link_args::LinkArgs;
use crate::lab::servers::LabServers;
use crate::lab::Lab;
use crate::measure::hol::{self, HolConfig};
use crate::transport::{tls, Transport};
use anyhow::Context;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  proto hol                          8 streams, 10 s per transport\n  proto hol --loss 5% --streams 16\n  proto hol --link wifi              a named link instead of the default\n  proto hol --json\n\nDefault link: 50 ms round trip, 2 % loss each way, no rate limit (the link\noptions and --link change any of it). Head-of-line blocking needs losses, so\nhol always runs across the emulated link, never on loopback."
)]
pub struct HolArgs {
    /// Logical streams (TCP: multiplexed on one connection; QUIC and SCTP:
    /// one stream each in one connection/association).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=256))]
    pub streams: u64,
    /// Each stream sends one small request this often (staggered between streams).
    #[arg(long, default_value = "20ms", value_parser = crate::units::parse_duration)]
    pub interval: Duration,
    /// How long each transport runs.
    #[arg(long, default_value = "10s", value_parser = crate::units::parse_duration)]
    pub duration: Duration,
    /// The emulated link. Without --rtt/--delay: 50 ms RTT; without --loss: 2 %.
    #[command(flatten)]
    pub link: LinkArgs,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: HolArgs) -> anyhow::Result<ExitCode> {
    Lab::check_available().context(
        "proto hol needs the emulated link (a lossy path; loopback never loses a packet)",
    )?;
    let mut link = args.link.with_preset();
    if [link.rtt, link.delay, link.up_delay, link.down_delay]
        .iter()
        .all(Option::is_none)
    {
        link.rtt = Some(Duration::from_millis(50));
    }
    if link.loss.is_none()
        && link.loss_ge.is_none()
        && link.up_loss.is_none()
        && link.down_loss.is_none()
    {
        link.loss = Some(0.02);
    }
    let lab_config = link.to_config()?;
    anyhow::ensure!(
        args.interval > Duration::ZERO,
        "--interval must be more than 0"
    );
    let config = HolConfig {
        streams: args.streams as usize,
        interval: args.interval,
        duration: args.duration,
        drain: Duration::from_secs(30),
    };
    let mut results = Vec::new();
    for transport in ["tcp", "quic", "sctp"] {
        if !args.json {
            eprintln!(
                "proto hol: {transport}, {} streams for {:?}…",
                config.streams, config.duration
            );
        }
        // A fresh link per transport, so its loss counters are its own.
        let servers = LabServers::start(lab_config.clone()).await?;
        let addr_of = |t| servers.addresses.get(t);
        let (tcp, quic, sctp) = (
            addr_of(Transport::Tcp)?,
            addr_of(Transport::Quic)?,
            addr_of(Transport::Sctp)?,
        );
        let server_name = servers.lab().server_ip().to_string();
        let trust = tls::Trust::from_options(None, false)?;
        let replies = servers
            .on_client(move || async move {
                match transport {
                    "tcp" => hol::over_tcp(tcp, config).await,
                    "sctp" => hol::over_sctp(sctp, config, Duration::from_secs(10)).await,
                    _ => {
                        hol::over_quic(quic, &trust, &server_name, config, Duration::from_secs(10))
                            .await
                    }
                }
            })
            .await;
        let (_, counters) = servers.stop().await?;
        if let Some(warning) = crate::output::link::fidelity_warning(&lab_config, &counters) {
            eprintln!("proto hol ({transport}): {warning}");
        }
        let replies = replies??;
        let lost = counters.client_to_server.dropped_loss + counters.server_to_client.dropped_loss;
        results.push(hol::summarize(transport, &replies, lost));
    }
    if args.json {
        outln!("{}", crate::output::json::pretty(&results)?);
    } else {
        outln!(
            "{}",
            crate::output::hol::hol_table(&results, &lab_config, &config)
        );
    }
    Ok(ExitCode::SUCCESS)
}
