//! The command line: clap definitions and the human-friendly value parsers
//! (`250ms`, `64KiB`) every subcommand shares. No work happens here.

use clap::{Parser, Subcommand};
use std::time::Duration;

/// See and measure how network protocols behave.
///
/// proto runs uppercase echo servers and clients over TCP, UDP, TLS and
/// QUIC, speaks a small big-endian binary frame format, and measures what
/// each protocol costs, so that what the textbook says can be checked.
#[derive(Debug, Parser)]
#[command(
    name = "proto",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an uppercase echo server (TCP, UDP, TLS, QUIC, or all at once).
    ///
    /// Every line (or frame, or datagram) comes back uppercased: the
    /// simplest request/response protocol there is, so what you measure is
    /// the transport underneath.
    Serve(crate::cmd::serve::ServeArgs),
    /// Talk to an echo server: interactively like nc, with -m messages, or under load.
    ///
    /// With --count or --duration it becomes a load generator: every round
    /// trip goes into a latency histogram, because averages hide the slow
    /// requests users notice (the p99 tail).
    Client(crate::cmd::client::ClientArgs),
    /// Measure every transport under the same load, with in-process servers.
    ///
    /// Starts echo servers (on 127.0.0.1, or across an emulated link with the
    /// lab's options), loads each transport in turn and prints one table:
    /// latency percentiles and throughput per transport, so the cost of
    /// encryption (TLS) and of a userspace transport (QUIC) is visible.
    Bench(crate::cmd::bench::BenchArgs),
    /// Encode and decode proto frames: see a binary protocol byte by byte.
    #[command(subcommand)]
    Codec(crate::cmd::codec::CodecCommand),
    /// Show a number's bytes in big-endian (network) and little-endian (x86) order.
    ///
    /// Network protocols put the most significant byte first ("network
    /// byte order", big-endian); x86 and most ARM CPUs store the least
    /// significant byte first. Every protocol implementation converts.
    Endian(crate::cmd::codec::EndianArgs),
    /// Measure how many round trips each protocol spends before data flows.
    ///
    /// TCP's 3-way handshake costs 1 RTT, TLS 1.2 adds 2, TLS 1.3 adds 1,
    /// QUIC does transport and crypto in 1, and 0-RTT resumption sends data
    /// in the very first flight. This runs real connections of each and
    /// prints the measured cost next to the theory.
    Compare(crate::cmd::compare::CompareArgs),
    /// Run a command on an emulated network (delay, loss, rate…) between two private hosts.
    ///
    /// On loopback a round trip takes microseconds; the lab puts a realistic
    /// link (329 ms to Australia, lossy Wi-Fi, a 10 Mbit/s uplink) between a
    /// "client" and a "server" network namespace, so handshake round trips,
    /// loss and queueing become visible. COMMAND runs on the client host,
    /// proto's servers on the server host. No root needed: without it the lab
    /// lives in a user namespace of proto's own (needs a world-accessible /dev/net/tun).
    Lab(crate::cmd::lab::LabArgs),
    /// Measure head-of-line blocking: TCP's one ordered stream vs QUIC's independent streams.
    ///
    /// Several streams send small requests across a lossy emulated link. On
    /// TCP (all streams on one connection, as HTTP/2 does) a lost packet
    /// holds up every stream behind it until it is retransmitted; on QUIC
    /// only the stream whose data was lost waits. Runs across the lab (root or
    /// a user namespace).
    Hol(crate::cmd::hol::HolArgs),
    /// Watch congestion and flow control: a bulk transfer with the sender's cwnd sampled every ms.
    ///
    /// Sends data across an emulated bottleneck and reads the sender's own
    /// state from the kernel (TCP_INFO: congestion window, ssthresh, RTT,
    /// the receiver's window) while the lab reports its queue. Shows slow
    /// start doubling per round trip, the cut after each loss (Reno ½,
    /// CUBIC 0.7), the queue filling (bufferbloat), and a window-limited
    /// transfer when socket buffers are smaller than the bandwidth-delay
    /// product. Runs in the lab (rootless when possible).
    Transfer(crate::cmd::transfer::TransferArgs),
    /// Draw one connection as a ladder diagram: every packet, every layer, decrypted.
    ///
    /// Runs one connection of a `proto compare` variant across the emulated
    /// link and shows each packet as an arrow from client to server or
    /// back, with what it carries: TCP flags and sequence numbers, TLS
    /// handshake messages, QUIC packets and frames (decrypted with the
    /// connection's own secrets), the echo text, and what the link did to
    /// it (dropped, duplicated, reordered). Needs root (the lab); --read
    /// draws any pcap/pcapng file instead, without root.
    Trace(crate::cmd::trace::TraceArgs),
}

impl Command {
    /// True when this command may build the emulated link. Without root,
    /// `main` then prepares a user namespace for it (see `lab::userns`),
    /// which must happen before any thread starts. Every subcommand decides
    /// here explicitly (no wildcard), so a new one cannot forget to.
    pub fn may_build_lab(&self) -> bool {
        match self {
            Command::Compare(args) => args.to.is_none() && !args.loopback,
            Command::Lab(_) | Command::Hol(_) | Command::Transfer(_) => true,
            Command::Trace(args) => args.read.is_none(),
            Command::Bench(args) => args.link.asks_for_link(),
            Command::Serve(_) | Command::Client(_) | Command::Codec(_) | Command::Endian(_) => {
                false
            }
        }
    }
}

/// Parses `250ms`, `1.5s`, `100us`/`100µs`, `2m`, `1h`, or `0`. A number
/// without a unit is refused (is `--rtt 100` 100 ms or 100 s?).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (value, unit) = number_and_unit(text)?;
    let seconds = match unit.as_str() {
        "ns" => value / 1e9,
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" | "sec" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "" if value == 0.0 => 0.0,
        "" => return Err(format!("{text:?}: add a unit, e.g. {value}ms or {value}s")),
        other => {
            return Err(format!(
                "{text:?}: unknown time unit {other:?} (use ns, us, ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Splits `"12.5ms"` into `(12.5, "ms")`; the number must be finite and ≥ 0.
pub fn number_and_unit(text: &str) -> Result<(f64, String), String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number followed by a unit"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?}: must be a non-negative number"));
    }
    Ok((value, unit.trim().to_ascii_lowercase()))
}

/// Parses byte sizes: `64`, `1K`/`1KiB` (1024), `1M`/`1MiB`, `1G`; `kB`/`MB` are powers of 1000.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size: use e.g. 64, 32K, 1M"))?;
    let factor: usize = match unit.trim() {
        "" | "B" | "b" => 1,
        "K" | "k" | "KiB" | "Ki" => 1 << 10,
        "M" | "MiB" | "Mi" => 1 << 20,
        "G" | "GiB" | "Gi" => 1 << 30,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{text}': use K, M or G"
            ))
        }
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses a request rate: `10000/s`, `10k/s`, `2.5k`, `500/ms`, `1M/s`; a
/// bare number is per second. Returns requests per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let (amount, per) = match text.split_once('/') {
        Some((a, p)) => (a.trim(), p.trim()),
        None => (text, "s"),
    };
    let (number, factor) = match amount.char_indices().last() {
        Some((i, 'k' | 'K')) => (&amount[..i], 1e3),
        Some((i, 'M')) => (&amount[..i], 1e6),
        _ => (amount, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a rate: use e.g. 10000/s, 10k/s, 500/ms"))?;
    let per_second = match per {
        "s" | "sec" => 1.0,
        "ms" => 1e3,
        "us" | "µs" => 1e6,
        "m" | "min" => 1.0 / 60.0,
        other => {
            return Err(format!(
                "unknown time unit '/{other}' in '{text}': use /s or /ms"
            ))
        }
    };
    let rate = value * factor * per_second;
    if !(rate.is_finite() && rate > 0.0 && rate <= 1e9) {
        return Err(format!(
            "'{text}' is out of range (more than 0, at most 1G/s)"
        ));
    }
    Ok(rate)
}

/// Formats a duration for people: `300ms`, `5s`, `2m30s`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1e-3 {
        format!("{:.0}µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.0}ms", secs * 1e3)
    } else if secs < 60.0 {
        format!("{}s", trim_float(secs))
    } else {
        let m = d.as_secs() / 60;
        let s = d.as_secs() % 60;
        if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{s}s")
        }
    }
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("100µs"), Ok(Duration::from_micros(100)));
        assert!(parse_duration("5").is_err(), "a bare number needs a unit");
        assert!(parse_duration("-5ms").is_err());
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("32K"), Ok(32768));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2kB"), Ok(2000));
        assert!(parse_size("1X").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10000/s"), Ok(10_000.0));
        assert_eq!(parse_rate("10k/s"), Ok(10_000.0));
        assert_eq!(parse_rate("2.5k"), Ok(2_500.0));
        assert_eq!(parse_rate("500/ms"), Ok(500_000.0));
        assert_eq!(parse_rate("1M/s"), Ok(1e6));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5/h").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
