//! `proto trace`: one connection as a ladder diagram, every packet decoded
//! and decrypted, with the link's own decisions.

use crate::cmd::link_args::LinkArgs;
use crate::lab::tap::Fault;
use crate::lab::Lab;
use crate::measure::handshake::Variant;
use crate::measure::trace::{self, Trace, TraceOptions};
use crate::output::ladder;
use crate::wire::dissect::Dir;
use crate::wire::keylog::KeyLog;
use anyhow::Context;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  proto trace tls1.2 --rtt 329ms       the three round trips of TLS 1.2
  proto trace quic                     QUIC: transport + crypto in one RTT
  proto trace tcp --drop c2s:SYN       a lost SYN: TCP's 1 s initial timeout
  proto trace quic --drop s2c:Initial  QUIC's probe timeout (PTO) at work
  proto trace tls1.3 --pcap t.pcapng   then: wireshark t.pcapng (keys inside)
  proto trace quic-0rtt --all --json
  proto trace --read capture.pcap --keylog keys.txt
                                       any capture, e.g. from tcpdump

Faults (--drop DIR:NAME[*N]): DIR is c2s (client→server) or s2c; NAME is
what the packet visibly carries: SYN, SYN-ACK, FIN, RST (TCP), ClientHello,
ServerHello (TLS over TCP, plaintext), Initial, Handshake, 0-RTT (QUIC long
headers), INIT, INIT_ACK, COOKIE_ECHO, COOKIE_ACK (SCTP chunks), or data
(any payload). The link drops the first N (default 1) such packets.

Reading the ladder: time flows down; the left column is the client's clock
(when it sent its packet, or when the server's arrived), the right one the
server's. 'RTT' counts round trips of the first exchange (SYN→SYN-ACK, or
QUIC's first datagram to the first answer). The handshake cost is proto
compare's formula on the wire's times: (first reply − one RTT) ÷ RTT.")]
pub struct TraceArgs {
    /// The variant to trace (the ids of `proto compare`).
    #[arg(value_enum, required_unless_present = "read")]
    pub variant: Option<Variant>,
    /// Draw a capture file (pcap or pcapng) instead of running a connection.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["variant", "drop", "all"])]
    pub read: Option<PathBuf>,
    /// With --read: TLS/QUIC secrets in the NSS key log format
    /// (SSLKEYLOGFILE). pcapng files may carry them inside already.
    #[arg(long, value_name = "FILE", requires = "read")]
    pub keylog: Option<PathBuf>,
    /// Drop the first packet going DIR that carries NAME, e.g. c2s:SYN,
    /// s2c:Initial, c2s:ClientHello*2 (repeatable). See below.
    #[arg(long, value_name = "DIR:NAME[*N]", value_parser = parse_fault)]
    pub drop: Vec<Fault>,
    /// Also draw the warm-up connection that fetched the session ticket or
    /// TCP Fast Open cookie (resumed and 0-RTT variants).
    #[arg(long)]
    pub all: bool,
    /// One line per packet: the arrows only, without the per-layer details.
    #[arg(long)]
    pub brief: bool,
    /// Print JSON: per ladder, one object per packet (time_ms, direction,
    /// wire_bytes, labels, fate, ...).
    #[arg(long)]
    pub json: bool,
    /// Also write the ladder as an SVG figure.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Also write the packets as pcapng, with the secrets inside (a
    /// Decryption Secrets Block): Wireshark and tshark open it decrypted.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// QUIC variants: write the client's qlog of the measured connection
    /// (JSON-SEQ, opens in qvis) as DIR/VARIANT-client.sqlog. Only the
    /// client's view: proto's servers do not log qlog.
    #[arg(long, value_name = "DIR")]
    pub qlog: Option<PathBuf>,
    /// Echo round trips after the first reply that measure the connection's
    /// RTT, as `proto compare` does (the RTT unit of the ladder).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=20))]
    pub probes: u64,
    /// Give up on the connection after this long.
    #[arg(long, default_value = "10s", value_parser = crate::units::parse_duration)]
    pub timeout: Duration,
    /// The emulated link. Without --rtt or --delay, the link has a 100 ms round trip.
    #[command(flatten)]
    pub link: LinkArgs,
}

/// Parses `c2s:SYN`, `s2c:Initial*2`.
pub fn parse_fault(text: &str) -> Result<Fault, String> {
    let (dir, rest) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected DIR:NAME, e.g. c2s:SYN or s2c:Initial"))?;
    let dir = match dir.to_ascii_lowercase().as_str() {
        "c2s" | "up" => Dir::ClientToServer,
        "s2c" | "down" => Dir::ServerToClient,
        other => return Err(format!("{other:?}: the direction is c2s or s2c")),
    };
    let (name, count) = match rest.split_once('*') {
        Some((n, c)) => (
            n,
            c.parse::<u32>()
                .ok()
                .filter(|c| (1..=100).contains(c))
                .ok_or_else(|| format!("{c:?}: the count after * is a number from 1 to 100"))?,
        ),
        None => (rest, 1),
    };
    const NAMES: [&str; 12] = [
        "SYN",
        "SYN-ACK",
        "FIN",
        "RST",
        "ClientHello",
        "ServerHello",
        "Initial",
        "Handshake",
        "0-RTT",
        "Retry",
        "1-RTT",
        "data",
    ];
    let Some(name) = NAMES.iter().find(|n| n.eq_ignore_ascii_case(name)) else {
        return Err(format!(
            "{name:?} is not a name a fault can match; use one of {}",
            NAMES.join(", ")
        ));
    };
    if *name == "1-RTT" {
        return Err(
            "1-RTT packets carry no visible type a fault could match before decryption; use data"
                .into(),
        );
    }
    Ok(Fault {
        dir,
        name: name.to_string(),
        count,
    })
}

pub async fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let trace = match &args.read {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the capture {}", path.display()))?;
            let keys = match &args.keylog {
                Some(k) => Some(KeyLog::parse(
                    &std::fs::read_to_string(k)
                        .with_context(|| format!("reading the key log {}", k.display()))?,
                )),
                None => None,
            };
            trace::trace_file(&bytes, keys.as_ref(), &path.display().to_string())
                .with_context(|| format!("reading {}", path.display()))?
        }
        None => {
            let variant = args
                .variant
                .context("name a variant to trace, or --read FILE")?;
            Lab::check_available()
                .context("proto trace runs its connection across the emulated link")?;
            let lab = crate::cmd::compare::lab_config(&args.link)?;
            trace::trace_live(TraceOptions {
                variant,
                lab,
                faults: args.drop.clone(),
                all: args.all,
                timeout: args.timeout,
                probes: args.probes as usize,
                qlog: qlog_path(&args, variant)?,
            })
            .await?
        }
    };
    write_outputs(&trace, &args)?;
    Ok(ExitCode::SUCCESS)
}

/// Where the qlog file goes (QUIC variants only).
fn qlog_path(args: &TraceArgs, variant: Variant) -> anyhow::Result<Option<PathBuf>> {
    let Some(dir) = &args.qlog else {
        return Ok(None);
    };
    if !matches!(
        variant,
        Variant::Quic | Variant::QuicResumed | Variant::QuicZeroRtt
    ) {
        anyhow::bail!(
            "--qlog is for QUIC variants (quic, quic-resumed, quic-0rtt); {} is not QUIC",
            variant.id()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(Some(dir.join(format!("{}-client.sqlog", variant.id()))))
}

fn write_outputs(trace: &Trace, args: &TraceArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.pcap {
        let bytes = trace.to_pcapng().context("encoding the pcapng file")?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, ladder::render_svg(trace))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", crate::output::json::pretty(trace)?);
    } else {
        print!(
            "{}",
            ladder::render_text(trace, std::io::stdout().is_terminal(), args.brief)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_explain_mistakes() {
        let f = parse_fault("c2s:syn").unwrap();
        assert_eq!(
            (f.dir, f.name.as_str(), f.count),
            (Dir::ClientToServer, "SYN", 1)
        );
        let f = parse_fault("s2c:Initial*2").unwrap();
        assert_eq!(
            (f.dir, f.name.as_str(), f.count),
            (Dir::ServerToClient, "Initial", 2)
        );
        assert!(parse_fault("SYN").unwrap_err().contains("DIR:NAME"));
        assert!(parse_fault("sideways:SYN")
            .unwrap_err()
            .contains("c2s or s2c"));
        assert!(parse_fault("c2s:Bogus")
            .unwrap_err()
            .contains("ClientHello"));
        assert!(parse_fault("c2s:SYN*0").is_err());
    }
}
