//! `proto transfer`: a bulk transfer across the lab with the sender's
//! congestion window, RTT and the link's queue sampled every millisecond.

use crate::cmd::link_args::LinkArgs;
use crate::lab::{buffers, Lab};
use crate::measure::phases::{self, LinkFacts};
use crate::measure::transfer::{self, Amount, Protocol, TransferConfig};
use crate::output::link::describe;
use crate::output::transfer as render;
use crate::units::parse_bit_rate;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TransferProtocol {
    /// The kernel's TCP; state from getsockopt(TCP_INFO).
    Tcp,
    /// TLS (rustls) over the kernel's TCP: the same TCP_INFO, plus what the
    /// records add (5-byte header, 16-byte AEAD tag, 1-byte inner type).
    Tls,
    /// QUIC (quinn, in proto's process); state from quinn's path statistics.
    Quic,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  proto transfer tcp                        at 100 ms × 50 Mbit/s
  proto transfer tcp --cc reno --queue-bdp 1 --svg cwnd.svg
                                            the lecture figure
  proto transfer tcp --cc cubic --drop-nth 400
                                            one loss, always the same packet
  proto transfer tcp --cc bbr --queue-bdp 4
                                            BBR vs a deep buffer (bufferbloat)
  proto transfer tcp --slow-reader 2mbit    the receiver's window closes
  proto transfer tls --overhead --svg tls.svg
                                            what TLS records add, per layer
  proto transfer tcp --rtt 100ms --rate 1gbit --host-buffers kernel
                                            window-limited: default buffers")]
pub struct TransferArgs {
    /// What carries the transfer.
    #[arg(value_enum)]
    pub protocol: TransferProtocol,
    /// Send this many bytes (e.g. 20M); default: for --duration.
    #[arg(long, value_parser = crate::units::parse_size, conflicts_with = "duration")]
    pub size: Option<usize>,
    /// Send for this long (default 5s).
    #[arg(long, value_parser = crate::units::parse_duration)]
    pub duration: Option<Duration>,
    /// Congestion control: for TCP and TLS whatever the kernel offers
    /// (/proc/sys/net/ipv4/tcp_available_congestion_control: reno, cubic, bbr…);
    /// for QUIC quinn's newreno, cubic or bbr. Default: cubic (Linux's and
    /// quinn's usual default), set explicitly so that a run does not depend
    /// on this machine's net.ipv4.tcp_congestion_control.
    #[arg(long, value_name = "NAME", default_value = "cubic")]
    pub cc: String,
    /// The receiver reads only this fast (bit/s, e.g. 2mbit): its buffer
    /// fills, its advertised window shrinks to zero and the sender stalls.
    #[arg(long, value_parser = parse_bit_rate, value_name = "BIT/S")]
    pub slow_reader: Option<u64>,
    /// The bottleneck queue as a multiple of the bandwidth-delay product
    /// (overrides --queue): 1 is the classic rule of thumb, 4+ a bloated buffer.
    #[arg(long, value_name = "FACTOR")]
    pub queue_bdp: Option<f64>,
    /// How often the sender's state is read.
    #[arg(long, default_value = "1ms", value_parser = crate::units::parse_duration)]
    pub sample_every: Duration,
    /// Draw the figure (cwnd and in-flight, RTT and queueing delay,
    /// delivery rate, losses marked) as SVG to this file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Capture every packet on the link to this pcap file (and measure the
    /// header overhead from it).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Measure the header bytes per layer from the forwarded packets
    /// (captures to a temporary file; costs disk and CPU at high rates).
    #[arg(long)]
    pub overhead: bool,
    /// Write every sample as CSV to this file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Print the report (with every sample) as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The emulated link. Without --rtt/--delay: 100 ms RTT; without --rate: 50 Mbit/s.
    #[command(flatten)]
    pub link: LinkArgs,
}

pub async fn run(args: TransferArgs) -> anyhow::Result<ExitCode> {
    let mut link = args.link.with_preset();
    if [link.rtt, link.delay, link.up_delay, link.down_delay]
        .iter()
        .all(Option::is_none)
    {
        link.rtt = Some(Duration::from_millis(100));
    }
    if link.rate.is_none() && link.up_rate.is_none() && link.down_rate.is_none() {
        link.rate = Some(50_000_000);
    }
    let mut lab_config = link.to_config()?;
    if let Some(factor) = args.queue_bdp {
        anyhow::ensure!(
            factor > 0.0 && factor <= 100.0,
            "--queue-bdp must be above 0 and at most 100"
        );
        let (bdp, _, _) = buffers::bdp(&lab_config);
        let packets = ((bdp as f64 * factor) / f64::from(lab_config.mtu)).ceil() as usize;
        lab_config.client_to_server.queue_packets = packets.max(1);
        lab_config.server_to_client.queue_packets = packets.max(1);
    }
    anyhow::ensure!(
        args.sample_every >= Duration::from_micros(100),
        "--sample-every must be at least 100µs"
    );
    let amount = match (args.size, args.duration) {
        (Some(bytes), _) => Amount::Bytes(bytes as u64),
        (None, Some(d)) => Amount::For(d),
        (None, None) => Amount::For(Duration::from_secs(5)),
    };
    let limit = match amount {
        Amount::For(d) => d + Duration::from_secs(30),
        Amount::Bytes(_) => Duration::from_secs(600),
    };
    let config = TransferConfig {
        protocol: match args.protocol {
            TransferProtocol::Tcp => Protocol::Tcp,
            TransferProtocol::Tls => Protocol::Tls,
            TransferProtocol::Quic => Protocol::Quic,
        },
        cc: Some(args.cc.clone()),
        amount,
        slow_reader: args.slow_reader.map(|bits| (bits / 8).max(1)),
        sample_every: args.sample_every,
        limit,
    };
    Lab::check_available()
        .context("proto transfer needs the emulated link (a bottleneck with a queue to fill)")?;
    if !args.json {
        eprintln!(
            "proto transfer: {} across client→server {} …",
            config.protocol.name(),
            describe(&lab_config.client_to_server)
        );
    }
    let certs = crate::transport::certs::CertDir::default_dir()?;
    let temporary_pcap = (args.overhead && args.pcap.is_none())
        .then(|| std::env::temp_dir().join(format!("proto-transfer-{}.pcap", std::process::id())));
    lab_config.pcap = args.pcap.clone().or(temporary_pcap.clone());
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let lab = Lab::start(lab_config.clone()).context("starting the lab")?;
        let run = match config.protocol {
            Protocol::Tcp => transfer::run_tcp(&lab, &config)?,
            Protocol::Tls => crate::measure::transfer_tls::run_tls(&lab, &config, &certs)?,
            Protocol::Quic => crate::measure::transfer_quic::run_quic(&lab, &config, &certs)?,
        };
        let host_buffers = lab.host_buffers().clone();
        let mut run = run;
        run.link = lab.shutdown();
        if let Some(warning) = crate::output::link::fidelity_warning(&lab_config, &run.link) {
            eprintln!("proto transfer: {warning}");
        }
        let (bdp_bytes, _, rtt) = buffers::bdp(&lab_config);
        let facts = LinkFacts {
            rate_bps: lab_config.client_to_server.rate_bps,
            rtt_ms: rtt.as_secs_f64() * 1e3,
            queue_packets: lab_config.client_to_server.queue_packets,
            bdp_bytes,
            description: format!(
                "client→server {}; server→client {}",
                describe(&lab_config.client_to_server),
                describe(&lab_config.server_to_client)
            ),
        };
        let mut report = phases::analyze(run, facts, host_buffers);
        if let Some(path) = &lab_config.pcap {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            report.overhead = Some(
                crate::measure::overhead::from_capture(
                    &bytes,
                    crate::lab::CLIENT_IP.into(),
                    report.run.bytes,
                    report.run.tls.as_ref(),
                )
                .map_err(|e| anyhow::anyhow!("reading the capture {}: {e}", path.display()))?,
            );
        }
        if let Some(path) = &temporary_pcap {
            let _ = std::fs::remove_file(path);
        }
        Ok(report)
    })
    .await
    .context("the transfer thread failed")??;

    if let Some(path) = &args.svg {
        std::fs::write(path, crate::output::cwnd_plot::figure(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, render::csv(&report.run.samples))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        // The notes are in the JSON; stderr shows them to the person too.
        for note in &report.run.notes {
            eprintln!("note: {note}");
        }
        let json = crate::output::json::pretty(&report).context("encoding the report")?;
        let _ = writeln!(stdout, "{json}");
    } else {
        let _ = writeln!(
            stdout,
            "Link: {}\n{}\n{} transfer, congestion control {}\n{}\n{}\n{}{}",
            report.link.description,
            report.host_buffers.describe(),
            report.run.protocol.name(),
            report.run.cc,
            render::summary_table(&report),
            render::sparklines(&report.run.samples, 72),
            report
                .overhead
                .as_ref()
                .map_or(String::new(), |o| render::overhead_table(
                    o,
                    report.run.protocol
                ) + "\n"),
            render::what_this_shows(&report)
        );
    }
    Ok(ExitCode::SUCCESS)
}
