//! `proto trace`: one connection, every packet, as data for a ladder diagram.
//!
//! A live trace runs one connection of a `proto compare` variant across
//! the lab while the link's tap (`lab/tap.rs`) records every packet with
//! the link's own decision about it; the client's TLS stack hands over its
//! secrets through a key log kept in memory. `wire::dissect` then names
//! what each packet carries, decrypted. A trace can also come from a
//! capture file (`--read`), where each packet has one timestamp only.
//!
//! The handshake cost uses `proto compare`'s formula on the wire's times:
//!
//! ```text
//! handshake RTTs = (first reply arrives − first packet sent − RTT) / RTT
//! RTT = the first exchange: SYN → SYN-ACK (TCP), first datagram → first
//!       answer (QUIC, UDP), as seen from the client
//! ```

use crate::client::{DatagramClient, StreamClient};
use crate::lab::servers::LabServers;
use crate::lab::tap::{Fault, LinkEvent, LinkTap, SentFate};
use crate::lab::LabConfig;
use crate::measure::handshake::{Endpoints, Variant};
use crate::transport::{quic, tls, Stream, Target};
use crate::wire::dissect::{self, Decoded, Dir, Label};
use crate::wire::keylog::KeyLog;
use crate::wire::pcapng::{self, PcapNgWriter};
use anyhow::Context;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the link did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fate {
    Delivered,
    Dropped,
    Duplicated,
    Reordered,
    /// Read from a capture file: what happened after is unknown.
    Captured,
}

/// One packet of the ladder.
#[derive(Clone, Debug, Serialize)]
pub struct TracedPacket {
    /// When it entered the link (live) or was captured (file), ms after the first packet.
    pub time_ms: f64,
    /// When it left the link at the far end (live only; `None` if dropped).
    pub arrival_ms: Option<f64>,
    pub direction: Dir,
    /// IP packet length.
    pub wire_bytes: usize,
    /// One string per flag set, message, frame: what it carries, every layer.
    pub labels: Vec<String>,
    pub fate: Fate,
    /// Why it was dropped, how long it queued, when its copy arrived.
    pub fate_detail: Option<String>,
    #[serde(skip)]
    pub layers: Vec<Label>,
    pub tcp_flags: Option<String>,
    pub tls_handshake: Vec<u8>,
    pub quic_packets: Vec<String>,
    pub quic_frames: Vec<u64>,
    pub sctp_chunks: Vec<u64>,
    pub app_data: bool,
    pub retransmission: bool,
}

/// A span of the connection on the ladder's margin.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub name: String,
    pub start_ms: f64,
    pub end_ms: f64,
    pub rtts: Option<f64>,
}

/// One conversation, ready to draw.
#[derive(Clone, Debug, Serialize)]
pub struct Ladder {
    pub title: String,
    pub client: Option<String>,
    pub server: Option<String>,
    /// The time unit for "RTT" columns: the first exchange on the wire.
    pub rtt_ms: Option<f64>,
    pub phases: Vec<Phase>,
    /// `proto compare`'s handshake cost, from the wire's times.
    pub handshake_rtts: Option<f64>,
    pub packets: Vec<TracedPacket>,
    pub notes: Vec<String>,
}

/// A whole trace: the ladders, and what a capture file needs.
#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    pub variant: Option<Variant>,
    /// "lab" or the file read.
    pub source: String,
    pub configured_rtt_ms: Option<f64>,
    pub ladders: Vec<Ladder>,
    #[serde(skip)]
    pub keylog: KeyLog,
    /// Every packet of the drawn ladders: (time, bytes, direction, comment).
    #[serde(skip)]
    pub raw: Vec<RawPacket>,
}

#[derive(Clone, Debug)]
pub struct RawPacket {
    pub ts_nanos: u128,
    pub bytes: Vec<u8>,
    pub dir: Dir,
    pub comment: Option<String>,
}

impl Trace {
    /// The packets as pcapng, with the key log in a Decryption Secrets Block.
    pub fn to_pcapng(&self) -> std::io::Result<Vec<u8>> {
        let mut w = PcapNgWriter::new(Vec::new())?;
        if !self.keylog.is_empty() {
            w.write_secrets(&self.keylog)?;
        }
        for p in &self.raw {
            let direction = match p.dir {
                Dir::ClientToServer => pcapng::Direction::Outbound,
                Dir::ServerToClient => pcapng::Direction::Inbound,
            };
            w.write_packet(p.ts_nanos, &p.bytes, Some(direction), p.comment.as_deref())?;
        }
        Ok(w.into_inner())
    }
}

/// A packet as the link saw it.
struct LinkPacket {
    dir: Dir,
    sent: Instant,
    bytes: Vec<u8>,
    fate: SentFate,
    deliveries: Vec<(Instant, bool)>,
    reordered: bool,
}

/// Options of a live trace.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    pub variant: Variant,
    pub lab: LabConfig,
    pub faults: Vec<Fault>,
    /// Also draw the connection that fetched the ticket or cookie.
    pub all: bool,
    pub timeout: Duration,
    /// Echoes after the first reply, to measure the connection's own RTT
    /// as `proto compare` does.
    pub probes: usize,
    /// QUIC variants: write the client's qlog of the measured connection here.
    pub qlog: Option<std::path::PathBuf>,
}

/// The message the traced client sends.
pub const MESSAGE: &[u8] = b"hello from proto trace";

/// Collects the client's TLS secrets in memory (rustls calls it).
#[derive(Debug, Default)]
pub struct MemoryKeyLog(pub Mutex<KeyLog>);

impl rustls::KeyLog for MemoryKeyLog {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        if let Ok(mut k) = self.0.lock() {
            k.push(label, client_random, secret);
        }
    }

    fn will_log(&self, _label: &str) -> bool {
        true
    }
}

/// Runs one connection of `opts.variant` across the lab and returns its ladder.
pub async fn trace_live(opts: TraceOptions) -> anyhow::Result<Trace> {
    let tap = LinkTap::new(opts.faults.clone());
    let mut lab = opts.lab.clone();
    lab.tap = Some(tap.clone());
    let configured_rtt = lab.client_to_server.delay + lab.server_to_client.delay;
    let servers = LabServers::start(lab).await?;
    let server_ip = servers.lab().server_ip();
    let endpoints = Endpoints::from_addresses(&servers.addresses, &server_ip.to_string())?;
    let secrets = Arc::new(MemoryKeyLog::default());
    let variant = opts.variant;
    let timeout = opts.timeout;
    let keys = secrets.clone();
    let tail = configured_rtt + Duration::from_millis(100);
    let probes = opts.probes;
    let qlog = opts.qlog.clone();
    servers
        .on_client(move || async move {
            let r = run_client(variant, &endpoints, keys, timeout, probes, qlog).await;
            // Let the last packets (FIN, ACK, CONNECTION_CLOSE) cross the link.
            tokio::time::sleep(tail).await;
            r
        })
        .await??;
    let _ = servers.stop().await?;
    let keylog = secrets.0.lock().map(|k| k.clone()).unwrap_or_default();
    let mut trace = build(tap.events(), keylog, configured_rtt);
    trace.variant = Some(variant);
    // The measured connection is the last to begin (a warm-up comes first).
    if !opts.all && trace.ladders.len() > 1 {
        let last = trace.ladders.len() - 1;
        trace.ladders.drain(..last);
        // The capture keeps only the measured conversation too.
        if let Some(l) = trace.ladders.first() {
            let (c, s) = (l.client.clone(), l.server.clone());
            trace.raw.retain(|r| {
                let (a, b) = conversation_of(&r.bytes);
                (a == c && b == s) || (a == s && b == c)
            });
        }
    }
    Ok(trace)
}

/// The client side: a warm-up connection when the variant needs a ticket
/// or cookie, then the measured connection. Returns when that began.
async fn run_client(
    variant: Variant,
    endpoints: &Endpoints,
    secrets: Arc<MemoryKeyLog>,
    timeout: Duration,
    probes: usize,
    qlog: Option<std::path::PathBuf>,
) -> anyhow::Result<Instant> {
    use tls::TlsVersion::{V1_2, V1_3};
    let target = |addr: std::net::SocketAddr| Target {
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    let warm_up = matches!(
        variant,
        Variant::Tls12Resumed
            | Variant::Tls13Resumed
            | Variant::Tls13ZeroRtt
            | Variant::Tls13ZeroRttTfo
            | Variant::QuicResumed
            | Variant::QuicZeroRtt
    );
    match variant {
        Variant::Tcp => {
            let start = Instant::now();
            let tcp = tokio::net::TcpStream::connect(endpoints.tcp).await?;
            tcp.set_nodelay(true)?;
            let mut client = StreamClient::new(Stream::Tcp(tcp), timeout);
            echoes(&mut client, probes).await?;
            client.finish_and_drain(timeout).await;
            Ok(start)
        }
        Variant::Udp => {
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
            socket.connect(endpoints.udp).await?;
            let start = Instant::now();
            let mut client = DatagramClient::new(socket, timeout);
            for _ in 0..=probes {
                client.exchange(MESSAGE).await?;
            }
            Ok(start)
        }
        Variant::Sctp => {
            use crate::transport::sctp;
            let start = Instant::now();
            let (association, _) = sctp::connect(
                &target(endpoints.sctp),
                &sctp::SctpOptions::default(),
                timeout,
            )
            .await?;
            let mut stream = association.stream(0, false);
            for _ in 0..=probes {
                stream.exchange(MESSAGE, timeout).await?;
            }
            drop(stream);
            association.close(timeout).await;
            Ok(start)
        }
        Variant::Quic | Variant::QuicResumed | Variant::QuicZeroRtt => {
            let mut config = tls::client_config(&endpoints.trust, None, true)?;
            config.key_log = secrets;
            let endpoint = quinn::Endpoint::client("0.0.0.0:0".parse()?)?;
            let mut opts = quic::ClientQuicOptions::with_tls(config, endpoint, false)?;
            opts.server_name = Some(endpoints.server_name.clone());
            let t = target(endpoints.quic);
            if warm_up {
                crate::client::resume::fetch_quic_ticket(&t, &opts, timeout).await?;
                // A fresh socket: the measured connection is its own conversation.
                opts.endpoint = quinn::Endpoint::client("0.0.0.0:0".parse()?)?;
                opts.zero_rtt = variant == Variant::QuicZeroRtt;
            }
            if let Some(path) = &qlog {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                opts.qlog_to(
                    Box::new(std::io::BufWriter::new(file)),
                    &format!("proto trace {} (client)", variant.id()),
                )?;
            }
            let start = Instant::now();
            let (stream, _) = quic::connect(&t, &opts, timeout).await?;
            let mut client = StreamClient::new(stream, timeout);
            echoes(&mut client, probes).await?;
            let stream = client.finish_and_drain(timeout).await;
            if let Stream::Quic(q) = &stream {
                q.close();
            }
            opts.endpoint.wait_idle().await;
            Ok(start)
        }
        _ => {
            let version = match variant {
                Variant::Tls12 | Variant::Tls12Resumed => V1_2,
                _ => V1_3,
            };
            let mut opts = tls::ClientTlsOptions::new(&endpoints.trust, Some(version))?;
            let mut config = (*opts.config).clone();
            config.key_log = secrets;
            if !warm_up {
                config.resumption = rustls::client::Resumption::disabled();
            }
            opts.config = Arc::new(config);
            opts.server_name = Some(endpoints.server_name.clone());
            opts.early_data = matches!(variant, Variant::Tls13ZeroRtt | Variant::Tls13ZeroRttTfo);
            let tfo = variant == Variant::Tls13ZeroRttTfo;
            let t = target(endpoints.tls);
            let once = |opts: tls::ClientTlsOptions, t: Target| async move {
                let (stream, _) = if tfo {
                    tls::connect_fast_open(&t, &opts, timeout).await?
                } else {
                    tls::connect(&t, &opts, timeout).await?
                };
                let mut client = StreamClient::new(stream, timeout);
                echoes(&mut client, probes).await?;
                client.finish_and_drain(timeout).await;
                anyhow::Ok(())
            };
            if warm_up {
                once(opts.clone(), t.clone()).await?;
            }
            let start = Instant::now();
            once(opts, t).await?;
            Ok(start)
        }
    }
}

/// The first echo, then `probes` more for the RTT.
async fn echoes<S>(client: &mut StreamClient<S>, probes: usize) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for _ in 0..=probes {
        client.exchange_line(MESSAGE).await?;
    }
    Ok(())
}

/// Turns the tap's events into ladders, one per conversation.
fn build(events: Vec<LinkEvent>, keylog: KeyLog, configured_rtt: Duration) -> Trace {
    let mut packets: Vec<LinkPacket> = Vec::new();
    let mut by_seq: HashMap<(Dir, u64), usize> = HashMap::new();
    let mut sent_events: Vec<(Instant, LinkPacket, u64)> = Vec::new();
    let mut deliveries: Vec<(Dir, u64, Instant, bool)> = Vec::new();
    for e in events {
        match e {
            LinkEvent::Sent {
                dir,
                seq,
                at,
                bytes,
                fate,
            } => sent_events.push((
                at,
                LinkPacket {
                    dir,
                    sent: at,
                    bytes,
                    fate,
                    deliveries: Vec::new(),
                    reordered: false,
                },
                seq,
            )),
            LinkEvent::Delivered {
                dir,
                seq,
                at,
                is_copy,
            } => deliveries.push((dir, seq, at, is_copy)),
        }
    }
    sent_events.sort_by_key(|(at, _, _)| *at);
    for (_, p, seq) in sent_events {
        if p.fate != SentFate::Fault {
            by_seq.insert((p.dir, seq), packets.len());
        }
        packets.push(p);
    }
    // Delivery order per direction tells reordering: a packet delivered
    // after one that entered the link later.
    let mut max_seq: HashMap<Dir, u64> = HashMap::new();
    for (dir, seq, at, is_copy) in deliveries {
        if let Some(&i) = by_seq.get(&(dir, seq)) {
            packets[i].deliveries.push((at, is_copy));
            if !is_copy {
                let m = max_seq.entry(dir).or_insert(seq);
                if seq < *m {
                    packets[i].reordered = true;
                }
                *m = (*m).max(seq);
            }
        }
    }
    let origin = (Instant::now(), SystemTime::now());
    let wall = |t: Instant| -> u128 {
        let since = origin.1.duration_since(UNIX_EPOCH).unwrap_or_default();
        let back = origin.0.saturating_duration_since(t);
        since.saturating_sub(back).as_nanos()
    };
    let bytes: Vec<&[u8]> = packets.iter().map(|p| p.bytes.as_slice()).collect();
    let conversations = decoded_conversations(&bytes, &keylog);
    let mut trace = Trace {
        variant: None,
        source: "lab".into(),
        configured_rtt_ms: Some(ms(configured_rtt)),
        ladders: Vec::new(),
        keylog: keylog.clone(),
        raw: Vec::new(),
    };
    for (conv, decoded) in conversations {
        let Some(&first) = conv.packets.first() else {
            continue;
        };
        let t0 = packets[first].sent;
        let rel = |t: Instant| ms(t.saturating_duration_since(t0));
        let mut traced = Vec::new();
        for ((&i, &dir), d) in conv.packets.iter().zip(&conv.dirs).zip(decoded) {
            let p = &packets[i];
            let first_delivery = p.deliveries.iter().find(|(_, c)| !c).map(|(t, _)| *t);
            let copy = p.deliveries.iter().find(|(_, c)| *c).map(|(t, _)| *t);
            let (fate, detail) = match p.fate {
                SentFate::Lost => (Fate::Dropped, Some("lost on the link (random loss)".into())),
                SentFate::QueueFull => (
                    Fate::Dropped,
                    Some("dropped: the bottleneck queue was full".into()),
                ),
                SentFate::Fault => (Fate::Dropped, Some("dropped by --drop".into())),
                SentFate::Scheduled { due, .. } => {
                    let one_way = match dir {
                        Dir::ClientToServer => configured_rtt / 2,
                        Dir::ServerToClient => configured_rtt / 2,
                    };
                    let queued = due
                        .saturating_duration_since(p.sent)
                        .saturating_sub(one_way);
                    let mut notes = Vec::new();
                    if queued > Duration::from_micros(500) {
                        notes.push(format!("queued {:.1} ms", ms(queued)));
                    }
                    if let Some(c) = copy {
                        notes.push(format!("copy arrives at {:.1} ms", rel(c)));
                    }
                    if first_delivery.is_none() {
                        notes.push("still on the link when the trace ended".into());
                    }
                    let fate = if copy.is_some() {
                        Fate::Duplicated
                    } else if p.reordered {
                        Fate::Reordered
                    } else {
                        Fate::Delivered
                    };
                    (fate, (!notes.is_empty()).then(|| notes.join("; ")))
                }
            };
            let comment = match fate {
                Fate::Dropped => detail.clone(),
                _ => None,
            };
            trace.raw.push(RawPacket {
                ts_nanos: wall(p.sent),
                bytes: p.bytes.clone(),
                dir,
                comment,
            });
            traced.push(traced_packet(
                rel(p.sent),
                first_delivery.map(rel),
                dir,
                p.bytes.len(),
                fate,
                detail,
                d,
            ));
        }
        let one_way = |d: Dir| {
            traced
                .iter()
                .filter(|p| p.direction == d)
                .filter_map(|p| Some(p.arrival_ms? - p.time_ms))
                .reduce(f64::min)
        };
        let link_rtt = match (one_way(Dir::ClientToServer), one_way(Dir::ServerToClient)) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        trace
            .ladders
            .push(ladder_from(conv.describe(), &conv, traced, link_rtt));
    }
    let n = trace.ladders.len();
    for l in trace.ladders.iter_mut().take(n.saturating_sub(1)) {
        l.notes.push(
            "warm-up connection: it fetched the ticket (or TFO cookie) the measured one uses"
                .into(),
        );
    }
    trace
}

/// (client, server) of the conversation a packet belongs to, as strings.
fn conversation_of(bytes: &[u8]) -> (Option<String>, Option<String>) {
    let c = dissect::conversations(&[bytes]);
    let Some(conv) = c.first() else {
        return (None, None);
    };
    let (a, b) = (
        conv.client.map(|x| x.to_string()),
        conv.server.map(|x| x.to_string()),
    );
    (a, b)
}

fn traced_packet(
    time_ms: f64,
    arrival_ms: Option<f64>,
    direction: Dir,
    wire_bytes: usize,
    fate: Fate,
    fate_detail: Option<String>,
    d: Decoded,
) -> TracedPacket {
    TracedPacket {
        time_ms,
        arrival_ms,
        direction,
        wire_bytes,
        labels: d.labels.iter().map(|l| l.text.clone()).collect(),
        fate,
        fate_detail,
        layers: d.labels,
        tcp_flags: d.tcp_flags,
        tls_handshake: d.tls_handshake,
        quic_packets: d.quic_packets,
        quic_frames: d.quic_frames,
        sctp_chunks: d.sctp_chunks,
        app_data: d.app_data,
        retransmission: d.retransmission,
    }
}

/// Phases and the handshake cost from the decoded packets.
///
/// `link_rtt_ms`, when the link's own times are known, is the round trip
/// of the link itself: the fastest one-way trip each way. Otherwise the
/// first exchange seen from the client is used.
fn ladder_from(
    title: String,
    conv: &dissect::Conversation,
    packets: Vec<TracedPacket>,
    link_rtt_ms: Option<f64>,
) -> Ladder {
    // When the client sees a packet: sending time for its own, arrival for the server's.
    let at_client = |p: &TracedPacket| match p.direction {
        Dir::ClientToServer => Some(p.time_ms),
        Dir::ServerToClient => match p.fate {
            Fate::Dropped => None,
            _ => Some(p.arrival_ms.unwrap_or(p.time_ms)),
        },
    };
    let first_s2c = packets
        .iter()
        .filter(|p| p.direction == Dir::ServerToClient)
        .filter_map(&at_client)
        .reduce(f64::min);
    // The first exchange: the last client packet sent before the server's
    // first answer arrived, to that answer.
    let first_exchange = first_s2c.and_then(|answer| {
        packets
            .iter()
            .filter(|p| p.direction == Dir::ClientToServer && p.time_ms <= answer)
            .filter(|p| p.tcp_flags.as_deref().is_none_or(|f| f.contains("SYN")))
            .map(|p| answer - p.time_ms)
            .reduce(f64::min)
    });
    // proto compare's RTT: the median echo round trip after the first.
    let requests: Vec<f64> = packets
        .iter()
        .filter(|p| p.direction == Dir::ClientToServer && p.app_data && !p.retransmission)
        .map(|p| p.time_ms)
        .collect();
    let replies: Vec<f64> = packets
        .iter()
        .filter(|p| p.direction == Dir::ServerToClient && p.app_data && !p.retransmission)
        .filter_map(&at_client)
        .collect();
    let echo_rtts: Vec<f64> = requests
        .iter()
        .zip(&replies)
        .skip(1)
        .map(|(q, r)| r - q)
        .filter(|d| *d > 0.0)
        .collect();
    let echo_rtt = crate::measure::handshake::median(&echo_rtts);
    let rtt_ms = echo_rtt.or(link_rtt_ms).or(first_exchange);
    let mut phases = Vec::new();
    let rtts = |span: f64| rtt_ms.filter(|r| *r > 0.0).map(|r| span / r);
    let mut phase = |name: &str, start: Option<f64>, end: Option<f64>| {
        if let (Some(s), Some(e)) = (start, end) {
            if e >= s {
                phases.push(Phase {
                    name: name.into(),
                    start_ms: s,
                    end_ms: e,
                    rtts: rtts(e - s),
                });
            }
        }
    };
    let find = |pred: &dyn Fn(&TracedPacket) -> bool| packets.iter().find(|p| pred(p));
    let syn = find(&|p| p.tcp_flags.as_deref() == Some("SYN"));
    let syn_ack = find(&|p| p.tcp_flags.as_deref() == Some("SYN,ACK") && p.fate != Fate::Dropped);
    phase(
        "TCP handshake",
        syn.map(|p| p.time_ms),
        syn_ack.and_then(&at_client),
    );
    let client_hello =
        find(&|p| p.direction == Dir::ClientToServer && p.tls_handshake.contains(&1));
    let server_finished = find(&|p| {
        p.direction == Dir::ServerToClient
            && p.tls_handshake.contains(&20)
            && p.fate != Fate::Dropped
    });
    // SCTP's 4-way handshake: INIT → INIT_ACK → COOKIE_ECHO → COOKIE_ACK.
    let init = find(&|p| p.direction == Dir::ClientToServer && p.sctp_chunks.contains(&1));
    let cookie_ack = find(&|p| {
        p.direction == Dir::ServerToClient && p.sctp_chunks.contains(&11) && p.fate != Fate::Dropped
    });
    phase(
        "SCTP handshake",
        init.map(|p| p.time_ms),
        cookie_ack.and_then(&at_client),
    );
    let crypto = if packets.iter().any(|p| !p.quic_packets.is_empty()) {
        "QUIC handshake"
    } else {
        "TLS handshake"
    };
    phase(
        crypto,
        client_hello.map(|p| p.time_ms),
        server_finished.and_then(&at_client),
    );
    let request = find(&|p| p.direction == Dir::ClientToServer && p.app_data);
    let reply =
        find(&|p| p.direction == Dir::ServerToClient && p.app_data && p.fate != Fate::Dropped);
    phase(
        "request → reply",
        request.map(|p| p.time_ms),
        reply.and_then(&at_client),
    );
    let handshake_rtts = match (reply.and_then(&at_client), rtt_ms) {
        (Some(first_reply), Some(rtt)) if rtt > 0.0 => Some((first_reply - rtt) / rtt),
        _ => None,
    };
    let mut notes = Vec::new();
    if packets
        .iter()
        .any(|p| p.labels.iter().any(|l| l.contains("no key")))
    {
        notes.push("some records could not be decrypted: no secrets for this connection (give --keylog FILE)".into());
    }
    Ladder {
        title,
        client: conv.client.map(|c| c.to_string()),
        server: conv.server.map(|s| s.to_string()),
        rtt_ms,
        phases,
        handshake_rtts,
        packets,
        notes,
    }
}

/// Every conversation among `packets` (in capture order), each with its
/// packets decoded in order, with the secrets in `keylog`.
fn decoded_conversations(
    packets: &[&[u8]],
    keylog: &KeyLog,
) -> Vec<(dissect::Conversation, Vec<dissect::Decoded>)> {
    dissect::conversations(packets)
        .into_iter()
        .map(|conv| {
            let list: Vec<(&[u8], Dir)> = conv
                .packets
                .iter()
                .zip(&conv.dirs)
                .map(|(&i, &d)| (packets[i], d))
                .collect();
            let decoded = dissect::dissect(&list, keylog);
            (conv, decoded)
        })
        .collect()
}

/// Draws a capture file: every conversation in it.
pub fn trace_file(bytes: &[u8], extra_keys: Option<&KeyLog>, name: &str) -> anyhow::Result<Trace> {
    let capture = pcapng::read(bytes)?;
    let mut keylog = capture.keylog.clone();
    if let Some(k) = extra_keys {
        keylog.extend(k);
    }
    let data: Vec<&[u8]> = capture.packets.iter().map(|p| p.data.as_slice()).collect();
    let conversations = decoded_conversations(&data, &keylog);
    let mut trace = Trace {
        variant: None,
        source: name.to_string(),
        configured_rtt_ms: None,
        ladders: Vec::new(),
        keylog: keylog.clone(),
        raw: Vec::new(),
    };
    for (conv, decoded) in conversations {
        let Some(&first) = conv.packets.first() else {
            continue;
        };
        let t0 = capture.packets[first].ts_nanos;
        let mut traced = Vec::new();
        for ((&i, &dir), d) in conv.packets.iter().zip(&conv.dirs).zip(decoded) {
            let p = &capture.packets[i];
            let dropped = p
                .comment
                .as_deref()
                .is_some_and(|c| c.starts_with("dropped") || c.starts_with("lost"));
            trace.raw.push(RawPacket {
                ts_nanos: p.ts_nanos,
                bytes: p.data.clone(),
                dir,
                comment: p.comment.clone(),
            });
            let mut d = d;
            if !p.is_ip {
                d.labels.insert(
                    0,
                    Label {
                        layer: dissect::Layer::Ip,
                        text: "link type not understood; raw frame".into(),
                    },
                );
            }
            traced.push(traced_packet(
                p.ts_nanos.saturating_sub(t0) as f64 / 1e6,
                None,
                dir,
                p.data.len(),
                if dropped {
                    Fate::Dropped
                } else {
                    Fate::Captured
                },
                p.comment.clone(),
                d,
            ));
        }
        trace
            .ladders
            .push(ladder_from(conv.describe(), &conv, traced, None));
    }
    Ok(trace)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
