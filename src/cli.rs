//! The command line: clap definitions only. The value parsers (`250ms`,
//! `64KiB`) live in [`crate::units`]; no work happens here.

use clap::{Parser, Subcommand};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
