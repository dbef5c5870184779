//! A bulk transfer across the lab, with the sender's congestion-control
//! state sampled from the stack itself (`proto transfer`, claim C9).
//!
//! TCP keeps two limits on how much it may have in flight:
//!
//! * the **receiver's window** (flow control): the free space the receiver
//!   advertises in every ACK, so a fast sender cannot overrun a slow reader;
//! * the **congestion window** (cwnd, congestion control): the sender's own
//!   guess of what the network can carry. It starts at 10 segments and
//!   doubles every round trip (**slow start**) until a loss or ssthresh; then
//!   it grows by one segment per RTT (**congestion avoidance**), and each
//!   loss cuts it (Reno to ½, CUBIC to 0.7): the sawtooth.
//!
//! The sender may have `min(cwnd, receiver's window)` unacknowledged bytes.
//! Nothing here models any of that: the client's kernel runs the real TCP
//! and `getsockopt(TCP_INFO)` reads its state every millisecond, while the
//! lab's forwarder reports its queue on the same clock.

use crate::lab::{Lab, LinkCounters, SERVER_IP};
use serde::Serialize;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which stack carries the transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    /// TLS over the kernel's TCP (rustls): the same TCP_INFO, plus records.
    Tls,
    Quic,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
            Protocol::Quic => "quic",
        }
    }
}

/// How much to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    Bytes(u64),
    For(Duration),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct TransferConfig {
    pub protocol: Protocol,
    /// Congestion controller (`TCP_CONGESTION`); `None` keeps the kernel's default.
    pub cc: Option<String>,
    pub amount: Amount,
    /// The receiver reads at most this many bytes per second (flow control demo).
    pub slow_reader: Option<u64>,
    /// How often the sender's state is read.
    pub sample_every: Duration,
    /// Give up after this long, whatever happened.
    pub limit: Duration,
}

/// The sender's state at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Milliseconds since the connection was established.
    pub t_ms: f64,
    /// Congestion window in segments (packets).
    pub cwnd: u32,
    /// Slow-start threshold in segments; `None` while still "infinite"
    /// (the first slow start has not ended).
    pub ssthresh: Option<u32>,
    /// Smoothed RTT and its variation, as the sender estimates them.
    pub srtt_ms: f64,
    pub rttvar_ms: f64,
    /// Segments sent and not yet acknowledged.
    pub unacked: u32,
    /// Segments the sender believes are in the network (unacked − sacked −
    /// lost + retransmitted): what cwnd limits.
    pub in_flight: Option<u32>,
    /// The congestion-control state: open, disorder, cwr, recovery, loss.
    pub ca_state: &'static str,
    /// Bytes the receiver has acknowledged so far.
    pub bytes_acked: u64,
    /// Bytes sent again so far.
    pub bytes_retrans: u64,
    /// Segments retransmitted so far.
    pub total_retrans: u32,
    /// The kernel's estimate of the delivery rate, bit/s.
    pub delivery_rate_bps: u64,
    /// The rate the sender paces at, bit/s (`None` if unlimited).
    pub pacing_rate_bps: Option<u64>,
    /// The receiver's advertised window, bytes (`None` if the kernel does not say).
    pub peer_window: Option<u32>,
    /// Unanswered zero-window probes.
    pub probes: u8,
    /// Segment size the sender uses.
    pub mss: u32,
    /// The lab's bottleneck queue on the data's way: the wait a packet
    /// entering now would have, and the bytes queued (wait × rate).
    pub queue_delay_ms: f64,
    pub queue_bytes: u64,
    /// Packets the link dropped so far on the data's way (queue full, random
    /// loss, forced).
    pub link_drops: u64,
}

/// Everything one run produced: the samples and what was decided about them.
#[derive(Clone, Debug, Serialize)]
pub struct TransferRun {
    pub protocol: Protocol,
    /// The congestion controller the socket really used (read back).
    pub cc: String,
    /// Bytes the receiver read.
    pub bytes: u64,
    /// From the connection being established to the receiver's last byte.
    pub seconds: f64,
    /// TCP options the handshake negotiated, as TCP_INFO reports them.
    pub options: TcpOptions,
    /// Window-limit counters from TCP_INFO (µs): busy sending, limited by the
    /// receiver's window, limited by the send buffer.
    pub busy_us: u64,
    pub rwnd_limited_us: u64,
    pub sndbuf_limited_us: u64,
    /// Lowest RTT the sender saw (ms).
    pub min_rtt_ms: f64,
    pub samples: Vec<Sample>,
    /// What the link did (both directions).
    pub link: LinkCounters,
    /// Packets the client's kernel dropped before they reached the link
    /// (its TUN device's queue was full: the forwarder fell behind, e.g. on
    /// a busy machine). Such losses are the host's, not the emulated link's.
    pub host_drops: u64,
    /// What TLS wrote into the TCP connection (`proto transfer tls` only).
    pub tls: Option<TlsSent>,
    /// Things that could not be measured, said plainly.
    pub notes: Vec<String>,
}

/// The client's TLS records, counted as rustls wrote them into the TCP
/// socket: every byte TLS adds to the application's is here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TlsSent {
    pub version: String,
    pub cipher_suite: String,
    /// Bytes the client sent during the handshake (ClientHello, Finished, …).
    pub handshake_bytes: u64,
    /// After the handshake: records, their 5-byte headers, and their bodies
    /// (ciphertext + inner content type + AEAD tag).
    pub records: u64,
    pub record_header_bytes: u64,
    pub record_body_bytes: u64,
    /// Application bytes handed to TLS after the handshake.
    pub plaintext_bytes: u64,
}

impl TlsSent {
    /// What the record protection added beyond the plaintext: per record the
    /// AEAD tag (16 bytes) and TLS 1.3's inner content type (1 byte), plus
    /// the whole of the close_notify alert record.
    pub fn protection_bytes(&self) -> u64 {
        self.record_body_bytes.saturating_sub(self.plaintext_bytes)
    }
}

/// The options negotiated in the SYN / SYN-ACK, from `tcpi_options`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TcpOptions {
    pub timestamps: bool,
    pub sack: bool,
    pub window_scale: bool,
    pub ecn: bool,
}

impl TcpOptions {
    /// Option bytes every full data segment carries: 12 with timestamps
    /// (10 bytes + 2 of NOP padding), none otherwise. SACK and window
    /// scaling appear only in the SYNs (and SACK blocks only after a loss).
    pub fn bytes_per_data_segment(&self) -> u32 {
        if self.timestamps {
            12
        } else {
            0
        }
    }
}

// ---------------------------------------------------------------------------
// TCP_INFO: the kernel's view of one connection (include/uapi/linux/tcp.h).
// We read it as bytes and pick fields by offset: the struct grew over the
// years, and the kernel returns only as much as it has, so a field past the
// returned length is "not available" rather than garbage.
// ---------------------------------------------------------------------------

/// The fields of `struct tcp_info` proto uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub ca_state: u8,
    pub probes: u8,
    pub options: u8,
    pub snd_mss: u32,
    pub unacked: u32,
    pub sacked: u32,
    pub lost: u32,
    pub retrans: u32,
    pub rtt_us: u32,
    pub rttvar_us: u32,
    pub snd_ssthresh: u32,
    pub snd_cwnd: u32,
    pub total_retrans: u32,
    pub pacing_rate: Option<u64>,
    pub bytes_acked: Option<u64>,
    pub min_rtt_us: Option<u32>,
    pub delivery_rate: Option<u64>,
    pub busy_time_us: Option<u64>,
    pub rwnd_limited_us: Option<u64>,
    pub sndbuf_limited_us: Option<u64>,
    pub bytes_retrans: Option<u64>,
    pub snd_wnd: Option<u32>,
}

/// `tcpi_snd_ssthresh` while the first slow start runs.
pub const INFINITE_SSTHRESH: u32 = 0x7fff_ffff;
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
const TCPI_OPT_ECN: u8 = 8;

impl TcpInfo {
    /// Decode the bytes `getsockopt(TCP_INFO)` returned.
    ///
    /// ```text
    ///  0 state  1 ca_state  2 retransmits  3 probes  4 backoff  5 options  6 wscale  7 flags
    ///  8 rto   12 ato   16 snd_mss   20 rcv_mss   24 unacked   28 sacked   32 lost
    /// 36 retrans   40 fackets   44..60 last_* times   60 pmtu   64 rcv_ssthresh
    /// 68 rtt   72 rttvar   76 snd_ssthresh   80 snd_cwnd   84 advmss   88 reordering
    /// 92 rcv_rtt   96 rcv_space   100 total_retrans   104 pacing_rate (u64)
    /// 112 max_pacing_rate   120 bytes_acked   128 bytes_received   136 segs_out
    /// 140 segs_in   144 notsent_bytes   148 min_rtt   152 data_segs_in   156 data_segs_out
    /// 160 delivery_rate (u64)   168 busy_time   176 rwnd_limited   184 sndbuf_limited
    /// 192 delivered   196 delivered_ce   200 bytes_sent   208 bytes_retrans
    /// 216 dsack_dups   220 reord_seen   224 rcv_ooopack   228 snd_wnd
    /// ```
    pub fn parse(b: &[u8]) -> Option<TcpInfo> {
        let u32_at = |o: usize| {
            b.get(o..o + 4)
                .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        };
        let u64_at = |o: usize| {
            b.get(o..o + 8).map(|s| {
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                u64::from_ne_bytes(a)
            })
        };
        Some(TcpInfo {
            ca_state: *b.get(1)?,
            probes: *b.get(3)?,
            options: *b.get(5)?,
            snd_mss: u32_at(16)?,
            unacked: u32_at(24)?,
            sacked: u32_at(28)?,
            lost: u32_at(32)?,
            retrans: u32_at(36)?,
            rtt_us: u32_at(68)?,
            rttvar_us: u32_at(72)?,
            snd_ssthresh: u32_at(76)?,
            snd_cwnd: u32_at(80)?,
            total_retrans: u32_at(100)?,
            pacing_rate: u64_at(104),
            bytes_acked: u64_at(120),
            min_rtt_us: u32_at(148),
            delivery_rate: u64_at(160),
            busy_time_us: u64_at(168),
            rwnd_limited_us: u64_at(176),
            sndbuf_limited_us: u64_at(184),
            bytes_retrans: u64_at(208),
            snd_wnd: u32_at(228),
        })
    }

    /// Packets in the network as Linux counts them (`tcp_packets_in_flight`).
    pub fn in_flight(&self) -> u32 {
        (self.unacked + self.retrans).saturating_sub(self.sacked + self.lost)
    }

    pub fn ca_state_name(&self) -> &'static str {
        match self.ca_state {
            0 => "open",
            1 => "disorder",
            2 => "cwr",
            3 => "recovery",
            4 => "loss",
            _ => "unknown",
        }
    }

    pub fn negotiated(&self) -> TcpOptions {
        TcpOptions {
            timestamps: self.options & TCPI_OPT_TIMESTAMPS != 0,
            sack: self.options & TCPI_OPT_SACK != 0,
            window_scale: self.options & TCPI_OPT_WSCALE != 0,
            ecn: self.options & TCPI_OPT_ECN != 0,
        }
    }
}

/// `getsockopt(IPPROTO_TCP, option)` into `buf`; returns the length the
/// kernel wrote.
fn tcp_option(fd: RawFd, option: libc::c_int, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is writable for len bytes; the kernel writes at most len
    // bytes and stores the length it wrote in len.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            option,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((len as usize).min(buf.len()))
}

/// Read TCP_INFO of a connected socket.
pub fn tcp_info(fd: RawFd) -> io::Result<TcpInfo> {
    let mut buf = [0u8; 256];
    let len = tcp_option(fd, libc::TCP_INFO, &mut buf)?;
    TcpInfo::parse(&buf[..len]).ok_or_else(|| io::Error::other("TCP_INFO is shorter than expected"))
}

/// Choose the socket's congestion controller (`TCP_CONGESTION`).
pub fn set_congestion_control(fd: RawFd, name: &str) -> io::Result<()> {
    // SAFETY: name points to name.len() readable bytes.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The socket's congestion controller, read back.
pub fn congestion_control(fd: RawFd) -> io::Result<String> {
    let mut buf = [0u8; 32];
    let len = tcp_option(fd, libc::TCP_CONGESTION, &mut buf)?;
    let name = &buf[..len];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// The controllers this host's kernel offers.
pub fn available_congestion_controls() -> Vec<String> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------

/// Run one TCP transfer across `lab`, client → server, sampling the client.
pub fn run_tcp(lab: &Lab, config: &TransferConfig) -> anyhow::Result<TransferRun> {
    run_stream(lab, config, StreamEnds::plain())
}

/// The receiving end's setup: the accepted connection and the run's stop
/// flag in, what the receiver reads out.
pub(crate) type Accept =
    Box<dyn FnOnce(TcpStream, &AtomicBool) -> io::Result<Box<dyn Read>> + Send>;

/// What runs on top of the TCP connection at each end: nothing (plain
/// TCP), or TLS (see `transfer_tls`).
pub(crate) struct StreamEnds {
    /// Turns the server's accepted connection into what the receiver reads
    /// (with TLS: after the server's side of the handshake). The stream has
    /// a short read timeout; the flag says the run is over.
    pub accept: Accept,
    /// Turns the client's connected stream into what the sender writes
    /// (with TLS: after the client's side of the handshake, in the sending
    /// thread, so the samples cover the handshake's round trips too).
    pub connect: Box<dyn FnOnce(TcpStream) -> io::Result<Box<dyn BulkSender>> + Send>,
}

impl StreamEnds {
    fn plain() -> StreamEnds {
        StreamEnds {
            accept: Box::new(|conn, _| Ok(Box::new(conn))),
            connect: Box::new(|conn| Ok(Box::new(conn))),
        }
    }
}

/// The sending end of a bulk transfer.
pub(crate) trait BulkSender: Send {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()>;
    /// Everything is written: close the sending direction.
    fn finish(&mut self) -> io::Result<()>;
    /// What TLS wrote, if this is TLS.
    fn tls_sent(&self) -> Option<TlsSent> {
        None
    }
}

impl BulkSender for TcpStream {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        Write::write_all(self, data)
    }
    fn finish(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// Run one transfer over the kernel's TCP across `lab`, client → server,
/// sampling the client's TCP_INFO, with `ends` on top of TCP.
pub(crate) fn run_stream(
    lab: &Lab,
    config: &TransferConfig,
    ends: StreamEnds,
) -> anyhow::Result<TransferRun> {
    use anyhow::Context;
    let listener = lab
        .in_server(|| TcpListener::bind(SocketAddr::from((SERVER_IP, 0))))
        .context("listening on the lab's server host")?;
    let to = listener.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let StreamEnds { accept, connect } = ends;
    let receiver = {
        let (received, done, stop) = (received.clone(), done.clone(), stop.clone());
        let slow = config.slow_reader;
        std::thread::Builder::new()
            .name("transfer-recv".into())
            .spawn(move || receive(listener, accept, slow, &received, &stop, &done))?
    };

    let stream = lab
        .in_client(|| TcpStream::connect(to))
        .context("connecting across the lab")?;
    let started = Instant::now();
    let fd = stream.as_raw_fd();
    let mut notes = Vec::new();
    if let Some(cc) = &config.cc {
        set_congestion_control(fd, cc).with_context(|| {
            format!(
                "choosing congestion control {cc:?} (this kernel offers: {})",
                available_congestion_controls().join(", ")
            )
        })?;
    }
    let cc = congestion_control(fd).unwrap_or_else(|_| "unknown".into());

    let sender = {
        let stream = stream.try_clone()?;
        let amount = config.amount;
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("transfer-send".into())
            .spawn(move || {
                let mut sender = connect(stream)?;
                send(sender.as_mut(), amount, &stop)?;
                Ok(sender.tls_sent())
            })?
    };

    let mut last = TcpInfo::default();
    let samples = sample_loop(lab, config, started, &done, &mut notes, |at| {
        let info = tcp_info(fd).map_err(|e| format!("TCP_INFO failed: {e}"))?;
        last = info;
        Ok(sample(at, &info))
    });
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let sent: io::Result<Option<TlsSent>> = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sending thread panicked"))?;
    let tls = match sent {
        Ok(tls) => tls,
        Err(e) => {
            if !stop.load(Ordering::Acquire) || done.load(Ordering::Acquire) {
                notes.push(format!("sending stopped early: {e}"));
            }
            None
        }
    };
    let receiver_time = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the receiving thread panicked"))?;
    if last.snd_wnd.is_none() {
        notes.push(
            "this kernel's TCP_INFO has no tcpi_snd_wnd: the receiver's window is not shown".into(),
        );
    }
    if last.delivery_rate.is_none() {
        notes.push("this kernel's TCP_INFO has no delivery rate or window-limit counters".into());
    }
    let host_drops = host_drops(lab, &mut notes);
    let bytes = received.load(Ordering::Acquire);
    Ok(TransferRun {
        protocol: config.protocol,
        cc,
        bytes,
        seconds: receiver_time
            .map(|t| t.saturating_duration_since(started).as_secs_f64())
            .unwrap_or(seconds),
        options: last.negotiated(),
        busy_us: last.busy_time_us.unwrap_or(0),
        rwnd_limited_us: last.rwnd_limited_us.unwrap_or(0),
        sndbuf_limited_us: last.sndbuf_limited_us.unwrap_or(0),
        min_rtt_ms: last.min_rtt_us.map_or(0.0, |us| us as f64 / 1e3),
        samples,
        link: lab.counters(),
        host_drops,
        tls,
        notes,
    })
}

/// Real-time scheduling (SCHED_FIFO, lowest priority) and a 1 ns timer
/// slack for the sampling thread while it lives; restored on drop. Best
/// effort: without the privilege, sampling runs at normal priority.
struct SamplerPriority {
    raised: bool,
}

impl SamplerPriority {
    fn raise() -> SamplerPriority {
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: plain syscalls on the calling thread with valid arguments.
        let raised = unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
            libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) == 0
        };
        SamplerPriority { raised }
    }
}

impl Drop for SamplerPriority {
    fn drop(&mut self) {
        if self.raised {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as above; back to the normal policy.
            unsafe {
                libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_OTHER, &param);
                libc::prctl(libc::PR_SET_TIMERSLACK, 50_000 as libc::c_ulong, 0, 0, 0);
            }
        }
    }
}

/// Reads the sender's state every `config.sample_every` until `done` (the
/// receiver has everything), the time limit, or the end of a slow-reader
/// run; `read` gives the sender's side of a sample, this adds the lab's.
pub(crate) fn sample_loop(
    lab: &Lab,
    config: &TransferConfig,
    started: Instant,
    done: &AtomicBool,
    notes: &mut Vec<String>,
    mut read: impl FnMut(Duration) -> Result<Sample, String>,
) -> Vec<Sample> {
    let rate = lab.config().client_to_server.rate_bps;
    let mut samples = Vec::new();
    let mut next = started;
    // Wake up on time: a sample that comes 10 ms late on a busy machine
    // misses the cwnd just before a loss. The sampler sleeps 99 % of the
    // time, so a real-time priority costs the other threads nothing.
    let _priority = SamplerPriority::raise();
    // A slow reader would take ages to drain what is buffered after the
    // sender stops: with --duration, the experiment ends on time instead.
    let slow_until = match (config.slow_reader, config.amount) {
        (Some(_), Amount::For(d)) => Some(d),
        _ => None,
    };
    while !done.load(Ordering::Acquire) {
        let at = started.elapsed();
        if slow_until.is_some_and(|d| at > d) {
            break;
        }
        if at > config.limit {
            notes.push(format!(
                "stopped after {:?} (the time limit) before the receiver had everything",
                config.limit
            ));
            break;
        }
        match read(at) {
            Ok(mut s) => {
                let (queue, _) = lab.queue_delay();
                let d = lab.counters().client_to_server;
                s.queue_delay_ms = queue.as_secs_f64() * 1e3;
                s.queue_bytes = rate.map_or(0, |r| (queue.as_secs_f64() * r as f64 / 8.0) as u64);
                s.link_drops = d.dropped_queue + d.dropped_loss + d.dropped_forced;
                samples.push(s);
            }
            Err(e) => {
                notes.push(e);
                break;
            }
        }
        next += config.sample_every;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    samples
}

/// Packets the client host dropped before the link, with a note if any.
pub(crate) fn host_drops(lab: &Lab, notes: &mut Vec<String>) -> u64 {
    let drops = lab
        .in_client(|| tx_dropped(crate::lab::CLIENT_IF))
        .unwrap_or(0);
    if drops > 0 {
        notes.push(format!(
            "{drops} packets were dropped by the client host before the link (its TUN queue \
             overflowed: the forwarder fell behind, likely a busy machine); those losses are not the \
             emulated link's"
        ));
    }
    drops
}

/// Transmit drops of `interface` in this thread's namespace, from
/// `/proc/thread-self/net/dev` ("face: rx bytes packets errs drop … tx
/// bytes packets errs drop …": tx drop is the 12th number).
fn tx_dropped(interface: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
    text.lines().find_map(|line| {
        let (name, numbers) = line.split_once(':')?;
        (name.trim() == interface)
            .then(|| numbers.split_whitespace().nth(11)?.parse().ok())
            .flatten()
    })
}

/// The sender's side of a sample from TCP_INFO (the lab's side is added
/// by [`sample_loop`]).
fn sample(at: Duration, info: &TcpInfo) -> Sample {
    Sample {
        t_ms: at.as_secs_f64() * 1e3,
        cwnd: info.snd_cwnd,
        ssthresh: (info.snd_ssthresh < INFINITE_SSTHRESH).then_some(info.snd_ssthresh),
        srtt_ms: info.rtt_us as f64 / 1e3,
        rttvar_ms: info.rttvar_us as f64 / 1e3,
        unacked: info.unacked,
        in_flight: Some(info.in_flight()),
        ca_state: info.ca_state_name(),
        bytes_acked: info.bytes_acked.unwrap_or(0),
        bytes_retrans: info.bytes_retrans.unwrap_or(0),
        total_retrans: info.total_retrans,
        delivery_rate_bps: info.delivery_rate.unwrap_or(0) * 8,
        pacing_rate_bps: info.pacing_rate.filter(|&r| r != u64::MAX).map(|r| r * 8),
        peer_window: info.snd_wnd,
        probes: info.probes,
        mss: info.snd_mss,
        ..Default::default()
    }
}

/// Write zeros until `amount` is sent, then close the sending direction.
fn send(stream: &mut dyn BulkSender, amount: Amount, stop: &AtomicBool) -> io::Result<()> {
    // Small writes: write() holds the socket's lock while it copies and
    // sends, and TCP_INFO waits for that lock, so big writes delay samples.
    // (16 KiB is also exactly one full TLS record of plaintext.)
    let chunk = vec![0u8; 16 * 1024];
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let want = match amount {
            Amount::Bytes(total) if sent >= total => break,
            Amount::Bytes(total) => (total - sent).min(chunk.len() as u64) as usize,
            Amount::For(d) if started.elapsed() >= d => break,
            Amount::For(_) => chunk.len(),
        };
        stream.write_all(&chunk[..want])?;
        sent += want as u64;
    }
    stream.finish()
}

/// How often a `--slow-reader` receiver wakes up to read its share.
pub const SLOW_READ_EVERY: Duration = Duration::from_millis(500);

/// Accept one connection and read it to the end (at `slow_reader` bytes/s
/// if set). Returns when the last byte arrived.
fn receive(
    listener: TcpListener,
    accept: Accept,
    slow_reader: Option<u64>,
    received: &AtomicU64,
    stop: &AtomicBool,
    done: &AtomicBool,
) -> Option<Instant> {
    let result = (|| -> io::Result<Option<Instant>> {
        let (conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(Duration::from_millis(50)))?;
        let mut conn = accept(conn, stop)?;
        let mut buf = vec![0u8; 256 * 1024];
        let started = Instant::now();
        let mut last = None;
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(last);
            }
            let want = match slow_reader {
                None => buf.len(),
                Some(rate) => {
                    // Read only what the rate allows so far, in bursts
                    // SLOW_READ_EVERY apart, like an application that
                    // works a while between reads: meanwhile the receive
                    // buffer fills and the advertised window closes.
                    let ticks =
                        (started.elapsed().as_secs_f64() / SLOW_READ_EVERY.as_secs_f64()).floor();
                    let allowed = (ticks * SLOW_READ_EVERY.as_secs_f64() * rate as f64) as u64;
                    let have = received.load(Ordering::Relaxed);
                    if allowed <= have {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    ((allowed - have) as usize).min(buf.len())
                }
            };
            match conn.read(&mut buf[..want]) {
                Ok(0) => return Ok(last),
                Ok(n) => {
                    received.fetch_add(n as u64, Ordering::Release);
                    last = Some(Instant::now());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    })();
    done.store(true, Ordering::Release);
    result.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_bytes(fields: &[(usize, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 232];
        for &(off, v) in fields {
            b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    #[test]
    fn parses_tcp_info_by_offset() {
        let mut b = info_bytes(&[
            (16, 1448),
            (24, 40),
            (28, 3),
            (32, 2),
            (36, 1),
            (68, 100_250),
            (76, INFINITE_SSTHRESH),
            (80, 42),
            (228, 65535),
        ]);
        b[1] = 3;
        b[5] = TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE;
        let i = TcpInfo::parse(&b).unwrap();
        assert_eq!((i.snd_mss, i.snd_cwnd, i.rtt_us), (1448, 42, 100_250));
        assert_eq!(i.ca_state_name(), "recovery");
        assert_eq!(i.in_flight(), 40 + 1 - 3 - 2);
        assert_eq!(i.snd_wnd, Some(65535));
        let o = i.negotiated();
        assert!(o.timestamps && o.sack && o.window_scale && !o.ecn);
        assert_eq!(o.bytes_per_data_segment(), 12);
        // An older kernel returns less: the newer fields are absent, not zero.
        let old = TcpInfo::parse(&b[..104]).unwrap();
        assert_eq!((old.snd_wnd, old.delivery_rate), (None, None));
        assert!(TcpInfo::parse(&b[..50]).is_none());
    }
}
