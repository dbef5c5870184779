//! From packets to what they mean: every layer of every packet of one
//! conversation, named, with encrypted TLS and QUIC opened by the
//! connection's own secrets. Sans-IO: a list of IP packets (in the order
//! they were sent) and a key log in, labels out.
//!
//! How each transport is followed:
//!
//! * **TCP**: sequence numbers are shown relative to each side's initial
//!   one; the payload bytes are put back into each direction's byte stream
//!   (a retransmission carries bytes already seen and is marked so), and
//!   TLS records are cut from that stream. A record's messages are
//!   attached to the segment that completed it.
//! * **TLS**: the ClientHello (its `random` names the connection in the key
//!   log) and ServerHello (the cipher suite) are read first, in the clear;
//!   then the keys are derived and every protected record decrypted
//!   (`tls.rs`).
//! * **QUIC**: the first Initial's Destination Connection ID gives the
//!   Initial keys; the CRYPTO frames inside carry the ClientHello and
//!   ServerHello; then Handshake, 0-RTT and 1-RTT packets open with keys
//!   from the key log (`quic.rs`).
//! * **UDP** otherwise: the payload as text.
//!
//! Nothing is dropped: a packet that cannot be decoded is still listed,
//! with whatever its headers say.

use super::keylog::KeyLog;
use super::quic::{self, PacketType, Space};
use super::sctp;
use super::tcpip::{self, IpPacket, TcpHeader, TcpOption, Transport};
use super::tls::{self, HandshakeReader, PacketKey, RecordDecryptor};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// Which way a packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Dir {
    #[serde(rename = "c2s")]
    ClientToServer,
    #[serde(rename = "s2c")]
    ServerToClient,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::ClientToServer => 0,
            Dir::ServerToClient => 1,
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Dir::ClientToServer => "c2s",
            Dir::ServerToClient => "s2c",
        }
    }
}

/// The protocol layer a label belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Ip,
    Tcp,
    Udp,
    Tls,
    Quic,
    Sctp,
    /// The application's own bytes (the echo text).
    Data,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Label {
    pub layer: Layer,
    pub text: String,
}

/// Everything decoded from one packet.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Decoded {
    pub labels: Vec<Label>,
    /// TCP flags as tshark writes them, e.g. "SYN,ACK".
    pub tcp_flags: Option<String>,
    /// TLS handshake message types, in order (over TCP or in QUIC CRYPTO frames).
    pub tls_handshake: Vec<u8>,
    /// QUIC packet types of the datagram, in order.
    pub quic_packets: Vec<String>,
    /// QUIC frame types (all packets of the datagram), in order.
    pub quic_frames: Vec<u64>,
    /// SCTP chunk types, in order (SCTP over UDP).
    pub sctp_chunks: Vec<u64>,
    /// The packet carries application data (decrypted when encrypted).
    pub app_data: bool,
    /// All its payload was sent before: a retransmission.
    pub retransmission: bool,
    /// Short names a fault can match ("SYN", "ClientHello", "Initial", ...).
    pub names: Vec<String>,
}

impl Decoded {
    fn push(&mut self, layer: Layer, text: impl Into<String>) {
        self.labels.push(Label {
            layer,
            text: text.into(),
        });
    }
}

/// A conversation: one TCP connection or one UDP flow, by its two ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    /// IP protocol number.
    pub protocol: u8,
    /// Indices into the packet list, in order.
    pub packets: Vec<usize>,
    /// Direction of each of those packets.
    pub dirs: Vec<Dir>,
}

impl Conversation {
    pub fn describe(&self) -> String {
        let proto = match self.protocol {
            6 => "TCP".to_string(),
            17 => "UDP".to_string(),
            p => format!("IP protocol {p}"),
        };
        match (self.client, self.server) {
            (Some(c), Some(s)) => format!("{proto} {c} → {s}"),
            _ => proto,
        }
    }
}

/// Groups packets into conversations. The client is whoever sent the
/// first packet (for TCP: the SYN, when the capture has it).
pub fn conversations(packets: &[&[u8]]) -> Vec<Conversation> {
    let mut out: Vec<Conversation> = Vec::new();
    let mut index: HashMap<(u8, SocketAddr, SocketAddr), usize> = HashMap::new();
    let mut other: HashMap<(u8, String), usize> = HashMap::new();
    for (i, bytes) in packets.iter().enumerate() {
        let parsed = tcpip::parse(bytes);
        let ends = parsed
            .as_ref()
            .ok()
            .and_then(|p| Some((p.protocol(), p.src_addr()?, p.dst_addr()?)));
        match ends {
            Some((proto, src, dst)) => {
                let (key, dir) = if let Some(&c) = index.get(&(proto, src, dst)) {
                    (c, out[c].dir_of(src))
                } else if let Some(&c) = index.get(&(proto, dst, src)) {
                    (c, out[c].dir_of(src))
                } else {
                    // A SYN-ACK first (capture began mid-handshake): its receiver is the client.
                    let server_first = matches!(&parsed, Ok(IpPacket { transport: Transport::Tcp(t), .. }) if t.flags.syn && t.flags.ack);
                    let (client, server) = if server_first { (dst, src) } else { (src, dst) };
                    out.push(Conversation {
                        client: Some(client),
                        server: Some(server),
                        protocol: proto,
                        packets: Vec::new(),
                        dirs: Vec::new(),
                    });
                    let c = out.len() - 1;
                    index.insert((proto, client, server), c);
                    (c, out[c].dir_of(src))
                };
                out[key].packets.push(i);
                out[key].dirs.push(dir);
            }
            None => {
                let (proto, name) = match &parsed {
                    Ok(p) => (p.protocol(), format!("{} → {}", p.src, p.dst)),
                    Err(_) => (0, "not IP".to_string()),
                };
                let c = *other.entry((proto, name)).or_insert_with(|| {
                    out.push(Conversation {
                        client: None,
                        server: None,
                        protocol: proto,
                        packets: Vec::new(),
                        dirs: Vec::new(),
                    });
                    out.len() - 1
                });
                out[c].packets.push(i);
                out[c].dirs.push(Dir::ClientToServer);
            }
        }
    }
    out
}

impl Conversation {
    fn dir_of(&self, src: SocketAddr) -> Dir {
        if Some(src) == self.client {
            Dir::ClientToServer
        } else {
            Dir::ServerToClient
        }
    }
}

/// Decodes every packet of one conversation (packets in send order, with
/// their directions).
pub fn dissect(packets: &[(&[u8], Dir)], keylog: &KeyLog) -> Vec<Decoded> {
    let parsed: Vec<Result<IpPacket, tcpip::NotIp>> =
        packets.iter().map(|(b, _)| tcpip::parse(b)).collect();
    let first_tcp = parsed.iter().any(|p| {
        matches!(
            p,
            Ok(IpPacket {
                transport: Transport::Tcp(_),
                ..
            })
        )
    });
    let first_udp_c2s = packets.iter().zip(&parsed).find_map(|((b, d), p)| match p {
        Ok(
            ip @ IpPacket {
                transport: Transport::Udp { .. },
                ..
            },
        ) if *d == Dir::ClientToServer => b.get(ip.payload.clone()),
        _ => None,
    });
    if first_tcp {
        TcpDissector::new(packets, &parsed, keylog).run(packets, &parsed)
    } else if first_udp_c2s.is_some_and(is_quic_initial) {
        QuicDissector::new(packets, &parsed, keylog).run(packets, &parsed)
    } else if first_udp_c2s.is_some_and(|p| sctp::Packet::parse(p).is_ok()) {
        packets
            .iter()
            .zip(&parsed)
            .map(|((bytes, _), p)| sctp_over_udp(bytes, p))
            .collect()
    } else {
        packets
            .iter()
            .zip(&parsed)
            .map(|((bytes, _), p)| plain(bytes, p))
            .collect()
    }
}

fn is_quic_initial(payload: &[u8]) -> bool {
    payload.len() >= 6 && payload[0] & 0xf0 == 0xc0 && payload[1..5] == [0, 0, 0, 1]
}

/// What a single packet visibly carries without any key: TCP's SYN,
/// SYN-ACK, FIN, RST; a plaintext TLS handshake message (ClientHello,
/// ServerHello, ...); QUIC long-header packet types (Initial, 0-RTT,
/// Handshake); SCTP chunk types (INIT, COOKIE_ECHO, ...); "data" for any payload. Faults (`--drop`) match these.
pub fn plaintext_names(packet: &[u8]) -> Vec<String> {
    let Ok(ip) = tcpip::parse(packet) else {
        return Vec::new();
    };
    let payload = packet.get(ip.payload.clone()).unwrap_or_default();
    let mut names = Vec::new();
    match &ip.transport {
        Transport::Tcp(t) => {
            if t.flags.syn {
                names.push(if t.flags.ack { "SYN-ACK" } else { "SYN" }.to_string());
            }
            if t.flags.fin {
                names.push("FIN".into());
            }
            if t.flags.rst {
                names.push("RST".into());
            }
            if tls::looks_like_record(payload) {
                let mut at = 0;
                while let Some(h) = payload.get(at..at + tls::RECORD_HEADER_LEN) {
                    if h[0] == tls::HANDSHAKE {
                        if let Some(&kind) = payload.get(at + tls::RECORD_HEADER_LEN) {
                            names.push(tls::handshake_name(kind));
                        }
                    }
                    at += tls::RECORD_HEADER_LEN + u16::from_be_bytes([h[3], h[4]]) as usize;
                }
            }
        }
        Transport::Udp { .. } => {
            if let Ok(packet) = sctp::Packet::parse(payload) {
                names.extend(packet.chunks.iter().map(|c| c.kind.name().to_string()));
            } else if payload.first().is_some_and(|b| b & 0x80 != 0) {
                for h in quic::split_datagram(payload, 0) {
                    names.push(h.packet_type.name().to_string());
                }
            }
        }
        Transport::Other { .. } => {}
    }
    if !payload.is_empty() {
        names.push("data".into());
    }
    names
}

/// SCTP in UDP (RFC 6951): the UDP payload is an SCTP packet; its chunks by name.
fn sctp_over_udp(bytes: &[u8], parsed: &Result<IpPacket, tcpip::NotIp>) -> Decoded {
    let Ok(ip) = parsed else {
        return plain(bytes, parsed);
    };
    let payload = bytes.get(ip.payload.clone()).unwrap_or_default();
    let Ok(packet) = sctp::Packet::parse(payload) else {
        return plain(bytes, parsed);
    };
    let mut d = Decoded::default();
    d.push(Layer::Udp, format!("UDP len={}", payload.len()));
    d.push(
        Layer::Sctp,
        format!(
            "SCTP {} → {} vtag={:#010x}",
            packet.header.src_port, packet.header.dst_port, packet.header.verification_tag
        ),
    );
    for chunk in &packet.chunks {
        let name = chunk.kind.name();
        d.sctp_chunks.push(u64::from(chunk.kind.0));
        d.names.push(name.to_string());
        let text = match chunk.kind {
            sctp::ChunkType::DATA => match sctp::Data::parse(chunk) {
                Ok(data) => {
                    d.app_data = true;
                    format!(
                        "DATA tsn={} stream={} ssn={} {}",
                        data.tsn,
                        data.stream_id,
                        data.ssn,
                        quote(data.user_data)
                    )
                }
                Err(_) => "DATA (malformed)".into(),
            },
            sctp::ChunkType::SACK => match sctp::Sack::parse(chunk) {
                Ok(sack) => format!("SACK cum_tsn={}", sack.cumulative_tsn_ack),
                Err(_) => "SACK".into(),
            },
            _ => name.to_string(),
        };
        d.push(Layer::Sctp, text);
    }
    if d.app_data {
        d.names.push("data".into());
    }
    d
}

/// A packet shown by its headers only (and UDP payload as text).
fn plain(bytes: &[u8], parsed: &Result<IpPacket, tcpip::NotIp>) -> Decoded {
    let mut d = Decoded::default();
    match parsed {
        Err(e) => d.push(Layer::Ip, format!("{} bytes, {e}", bytes.len())),
        Ok(ip) => match &ip.transport {
            Transport::Udp { .. } => {
                let payload = bytes.get(ip.payload.clone()).unwrap_or_default();
                d.push(Layer::Udp, format!("UDP len={}", payload.len()));
                if !payload.is_empty() {
                    d.app_data = true;
                    d.names.push("data".into());
                    d.push(Layer::Data, quote(payload));
                }
            }
            Transport::Other { protocol } => {
                d.push(
                    Layer::Ip,
                    format!(
                        "IP protocol {protocol}, {} bytes (not decoded)",
                        bytes.len()
                    ),
                );
            }
            Transport::Tcp(_) => d.push(Layer::Tcp, "TCP"),
        },
    }
    d
}

/// Application bytes as a short quoted text (escaped, cut at 40 characters).
pub fn quote(bytes: &[u8]) -> String {
    const MAX: usize = 40;
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .flat_map(char::escape_default)
        .collect();
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX).collect();
        format!("\"{cut}…\" ({} B)", bytes.len())
    } else {
        format!("\"{text}\"")
    }
}

// ---------------------------------------------------------------------------
// TCP (and TLS inside it).

#[derive(Default)]
struct TcpSide {
    isn: Option<u32>,
    /// Next stream offset expected (bytes delivered to the TLS/text decoder).
    next: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    /// Stream ranges already sent, with the labels they produced.
    sent: Vec<(u64, u64, Vec<Label>, Vec<String>)>,
    tls: TlsSide,
}

#[derive(Default)]
struct TlsSide {
    buf: Vec<u8>,
    handshake: HandshakeReader,
    protected: RecordDecryptor,
    /// TLS 1.2: this side sent ChangeCipherSpec; what follows is encrypted.
    tls12_encrypting: bool,
}

struct TcpDissector<'k> {
    sides: [TcpSide; 2],
    is_tls: bool,
    tls13: bool,
    keylog: &'k KeyLog,
    client_hello: Option<tls::ClientHelloInfo>,
    server_hello: Option<tls::ServerHelloInfo>,
}

/// Largest out-of-order TCP data kept per side.
const MAX_TCP_PENDING: usize = 4 << 20;

impl<'k> TcpDissector<'k> {
    fn new(
        packets: &[(&[u8], Dir)],
        parsed: &[Result<IpPacket, tcpip::NotIp>],
        keylog: &'k KeyLog,
    ) -> Self {
        // First pass: the two byte streams' beginnings, for the hellos.
        let mut streams: [TcpSide; 2] = Default::default();
        let mut prefixes: [Vec<u8>; 2] = Default::default();
        for ((bytes, dir), p) in packets.iter().zip(parsed) {
            if let Ok(IpPacket {
                transport: Transport::Tcp(t),
                payload,
                ..
            }) = p
            {
                let side = &mut streams[dir.index()];
                let data = bytes.get(payload.clone()).unwrap_or_default();
                if let Some(off) = stream_offset(side, t) {
                    prefixes[dir.index()].extend(reassemble(side, off, data));
                }
            }
        }
        let is_tls = tls::looks_like_record(&prefixes[0]);
        let hello = |stream: &[u8], want: u8| {
            let (records, _) = tls::split_records(stream);
            let mut reader = HandshakeReader::default();
            for r in records
                .iter()
                .take_while(|r| r.content_type == tls::HANDSHAKE)
            {
                for (kind, body) in reader.feed(r.body) {
                    if kind == want {
                        return Some(body);
                    }
                }
            }
            None
        };
        let client_hello = hello(&prefixes[0], 1).and_then(|b| tls::parse_client_hello(&b));
        let server_hello = hello(&prefixes[1], 2).and_then(|b| tls::parse_server_hello(&b));
        let mut d = TcpDissector {
            sides: Default::default(),
            is_tls,
            tls13: server_hello.as_ref().is_some_and(|s| s.tls13),
            keylog,
            client_hello,
            server_hello,
        };
        d.install_keys();
        d
    }

    fn install_keys(&mut self) {
        let (Some(ch), Some(sh)) = (&self.client_hello, &self.server_hello) else {
            return;
        };
        let Some(suite) = tls::suite(sh.cipher_suite) else {
            return;
        };
        let get = |label: &str| self.keylog.get(label, &ch.random);
        let [c2s, s2c] = &mut self.sides;
        if sh.tls13 {
            for (label, epoch) in [
                ("CLIENT_EARLY_TRAFFIC_SECRET", "early data"),
                ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "handshake"),
                ("CLIENT_TRAFFIC_SECRET_0", "application"),
            ] {
                if let Some(key) = get(label).and_then(|s| PacketKey::tls13(suite, s)) {
                    c2s.tls.protected.push(key, epoch);
                }
            }
            for (label, epoch) in [
                ("SERVER_HANDSHAKE_TRAFFIC_SECRET", "handshake"),
                ("SERVER_TRAFFIC_SECRET_0", "application"),
            ] {
                if let Some(key) = get(label).and_then(|s| PacketKey::tls13(suite, s)) {
                    s2c.tls.protected.push(key, epoch);
                }
            }
        } else if let Some((client, server)) = get("CLIENT_RANDOM")
            .and_then(|master| tls::tls12_keys(suite, master, &ch.random, &sh.random))
        {
            c2s.tls.protected.push(client, "application");
            s2c.tls.protected.push(server, "application");
        }
    }

    fn run(
        mut self,
        packets: &[(&[u8], Dir)],
        parsed: &[Result<IpPacket, tcpip::NotIp>],
    ) -> Vec<Decoded> {
        let mut out = Vec::with_capacity(packets.len());
        for ((bytes, dir), p) in packets.iter().zip(parsed) {
            let d = match p {
                Ok(IpPacket {
                    transport: Transport::Tcp(t),
                    payload,
                    ..
                }) => self.segment(*dir, t, bytes.get(payload.clone()).unwrap_or_default()),
                other => plain(bytes, other),
            };
            out.push(d);
        }
        out
    }

    fn segment(&mut self, dir: Dir, t: &TcpHeader, data: &[u8]) -> Decoded {
        let mut d = Decoded {
            tcp_flags: Some(t.flags.names()),
            ..Decoded::default()
        };
        let other_isn = self.sides[1 - dir.index()].isn;
        let side = &mut self.sides[dir.index()];
        if t.flags.syn && side.isn.is_none() {
            side.isn = Some(t.seq);
        }
        let rel_seq = side.isn.map_or(t.seq, |isn| tcpip::seq_diff(t.seq, isn));
        let mut text = format!("{} seq={rel_seq}", t.flags.names());
        if t.flags.ack {
            let rel_ack = other_isn.map_or(t.ack, |isn| tcpip::seq_diff(t.ack, isn));
            text.push_str(&format!(" ack={rel_ack}"));
        }
        text.push_str(&format!(" win={} len={}", t.window, data.len()));
        for o in &t.options {
            text.push(' ');
            text.push_str(&option_text(o));
        }
        d.push(Layer::Tcp, text);
        // Names a fault can match: the flags, e.g. SYN or SYN-ACK.
        if t.flags.syn {
            d.names
                .push(if t.flags.ack { "SYN-ACK" } else { "SYN" }.into());
        }
        if t.flags.fin {
            d.names.push("FIN".into());
        }
        if t.flags.rst {
            d.names.push("RST".into());
        }
        if data.is_empty() {
            return d;
        }
        let Some(offset) = stream_offset(side, t) else {
            d.push(
                Layer::Tcp,
                "data before any SYN (cannot place it in the stream)",
            );
            return d;
        };
        let end = offset + data.len() as u64;
        if end <= side.next {
            // Everything here was sent before.
            d.retransmission = true;
            d.push(Layer::Tcp, "retransmission");
            let earlier: Vec<(Vec<Label>, Vec<String>)> = side
                .sent
                .iter()
                .filter(|(s, e, _, _)| *s < end && offset < *e)
                .map(|(_, _, l, n)| (l.clone(), n.clone()))
                .collect();
            // The messages again, by name; not as new handshake messages
            // (like Wireshark, which marks the segment a retransmission).
            for (labels, names) in earlier {
                d.labels.extend(labels);
                d.names.extend(names);
            }
            d.app_data = d.labels.iter().any(|l| l.layer == Layer::Data);
            return d;
        }
        let fresh = reassemble(side, offset, data);
        let before = d.labels.len();
        if self.is_tls {
            self.tls_bytes(dir, &fresh, &mut d);
        } else if !fresh.is_empty() {
            d.app_data = true;
            d.push(Layer::Data, quote(&fresh));
        }
        d.names.extend(names_of(&d));
        d.names.dedup();
        let side = &mut self.sides[dir.index()];
        side.sent
            .push((offset, end, d.labels[before..].to_vec(), d.names.clone()));
        if side.sent.len() > 4096 {
            side.sent.remove(0);
        }
        d
    }

    fn tls_bytes(&mut self, dir: Dir, fresh: &[u8], d: &mut Decoded) {
        let tls13 = self.tls13;
        let side = &mut self.sides[dir.index()].tls;
        side.buf.extend_from_slice(fresh);
        let (records, used) = tls::split_records(&side.buf);
        let mut any = false;
        for r in &records {
            any = true;
            let encrypted = r.content_type == tls::APPLICATION_DATA
                || (side.tls12_encrypting && r.content_type != tls::CHANGE_CIPHER_SPEC);
            if !encrypted {
                match r.content_type {
                    tls::CHANGE_CIPHER_SPEC => {
                        d.push(
                            Layer::Tls,
                            if tls13 {
                                "ChangeCipherSpec (middlebox compatibility, ignored)"
                            } else {
                                "ChangeCipherSpec"
                            },
                        );
                        if !tls13 {
                            side.tls12_encrypting = true;
                        }
                    }
                    tls::ALERT => d.push(Layer::Tls, tls::alert_name(r.body)),
                    tls::HANDSHAKE => {
                        for (kind, body) in side.handshake.feed(r.body) {
                            handshake_label(kind, &body, d);
                        }
                    }
                    other => d.push(Layer::Tls, format!("record type {other}")),
                }
                continue;
            }
            if !side.protected.has_keys() {
                d.push(
                    Layer::Tls,
                    format!(
                        "encrypted record, {} B (no key for this connection)",
                        r.body.len()
                    ),
                );
                continue;
            }
            match side.protected.open(r) {
                Some((kind, plain, epoch)) => match kind {
                    tls::HANDSHAKE => {
                        for (kind, body) in side.handshake.feed(&plain) {
                            handshake_label(kind, &body, d);
                        }
                    }
                    tls::APPLICATION_DATA => {
                        d.app_data = true;
                        let what = if epoch == "early data" {
                            "early data"
                        } else {
                            "application data"
                        };
                        d.push(Layer::Tls, format!("{what} {} B", plain.len()));
                        d.push(Layer::Data, quote(&plain));
                    }
                    tls::ALERT => d.push(Layer::Tls, tls::alert_name(&plain)),
                    other => d.push(Layer::Tls, format!("record type {other}")),
                },
                None => d.push(
                    Layer::Tls,
                    format!("encrypted record, {} B (did not decrypt)", r.body.len()),
                ),
            }
        }
        side.buf.drain(..used);
        if !any && !fresh.is_empty() {
            d.push(Layer::Tls, "part of a TLS record");
        }
    }
}

/// Names of what a packet carries (messages, data), for faults and phases.
fn names_of(d: &Decoded) -> Vec<String> {
    let mut names: Vec<String> = d
        .tls_handshake
        .iter()
        .map(|t| tls::handshake_name(*t))
        .collect();
    if d.app_data {
        names.push("data".into());
    }
    names
}

fn handshake_label(kind: u8, body: &[u8], d: &mut Decoded) {
    d.tls_handshake.push(kind);
    let mut text = tls::handshake_name(kind);
    match kind {
        1 => {
            if let Some(ch) = tls::parse_client_hello(body) {
                let mut extra = Vec::new();
                if let Some(sni) = &ch.server_name {
                    extra.push(format!("SNI {sni}"));
                }
                for g in &ch.key_share_groups {
                    extra.push(format!("key_share {}", tls::group_name(*g)));
                }
                if ch.psk {
                    extra.push("psk".into());
                }
                if ch.early_data {
                    extra.push("early_data".into());
                }
                if ch.session_ticket {
                    extra.push("session ticket".into());
                }
                if !extra.is_empty() {
                    text = format!("{text} ({})", extra.join(", "));
                }
            }
        }
        2 => {
            if let Some(sh) = tls::parse_server_hello(body) {
                let mut extra = vec![if sh.tls13 { "TLS 1.3" } else { "TLS 1.2" }.to_string()];
                extra.push(rustls_suite_name(sh.cipher_suite));
                if let Some(g) = sh.key_share_group {
                    extra.push(format!("key_share {}", tls::group_name(g)));
                }
                if sh.psk {
                    extra.push("psk accepted".into());
                }
                if sh.hello_retry {
                    text = "HelloRetryRequest".into();
                }
                text = format!("{text} ({})", extra.join(", "));
            }
        }
        _ => {}
    }
    d.push(Layer::Tls, text);
}

fn rustls_suite_name(id: u16) -> String {
    match id {
        0x1301 => "TLS_AES_128_GCM_SHA256".into(),
        0x1302 => "TLS_AES_256_GCM_SHA384".into(),
        0x1303 => "TLS_CHACHA20_POLY1305_SHA256".into(),
        0xc02b => "ECDHE_ECDSA_AES_128_GCM_SHA256".into(),
        0xc02c => "ECDHE_ECDSA_AES_256_GCM_SHA384".into(),
        0xc02f => "ECDHE_RSA_AES_128_GCM_SHA256".into(),
        0xc030 => "ECDHE_RSA_AES_256_GCM_SHA384".into(),
        0xcca8 => "ECDHE_RSA_CHACHA20_POLY1305".into(),
        0xcca9 => "ECDHE_ECDSA_CHACHA20_POLY1305".into(),
        other => format!("suite {other:#06x}"),
    }
    .replace('"', "")
}

fn option_text(o: &TcpOption) -> String {
    match o {
        TcpOption::Mss(m) => format!("MSS={m}"),
        TcpOption::WindowScale(s) => format!("WS={}", 1u32 << s.min(&14)),
        TcpOption::SackPermitted => "SACK_PERM".into(),
        TcpOption::Sack(blocks) => format!("SACK×{}", blocks.len()),
        TcpOption::Timestamps { .. } => "TS".into(),
        TcpOption::FastOpenCookie(c) if c.is_empty() => "TFO cookie request".into(),
        TcpOption::FastOpenCookie(c) => format!("TFO cookie ({} B)", c.len()),
        TcpOption::Other(k) => format!("option {k}"),
    }
}

/// Where a segment's payload sits in its direction's byte stream (0 = first data byte).
fn stream_offset(side: &mut TcpSide, t: &TcpHeader) -> Option<u64> {
    if t.flags.syn && side.isn.is_none() {
        side.isn = Some(t.seq);
    }
    let isn = side.isn?;
    let rel = u64::from(tcpip::seq_diff(t.seq, isn));
    // The SYN takes sequence number ISN; data (even in a SYN) starts at ISN + 1.
    let first_data = if t.flags.syn { rel + 1 } else { rel };
    Some(first_data.saturating_sub(1))
}

/// Adds a segment's data to the stream; returns the bytes that are now
/// contiguous and new.
fn reassemble(side: &mut TcpSide, offset: u64, data: &[u8]) -> Vec<u8> {
    let end = offset + data.len() as u64;
    if end <= side.next || data.is_empty() {
        return Vec::new();
    }
    let held: usize = side.pending.values().map(Vec::len).sum();
    if held + data.len() <= MAX_TCP_PENDING {
        side.pending.insert(offset, data.to_vec());
    }
    let mut out = Vec::new();
    while let Some((&off, _)) = side.pending.iter().next() {
        if off > side.next {
            break;
        }
        let Some(chunk) = side.pending.remove(&off) else {
            break;
        };
        let chunk_end = off + chunk.len() as u64;
        if chunk_end > side.next {
            out.extend_from_slice(&chunk[(side.next - off) as usize..]);
            side.next = chunk_end;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// QUIC.

/// One CRYPTO stream (per direction and packet-number space): reassembly,
/// handshake messages, and where each message lay in the stream.
#[derive(Default)]
struct CryptoState {
    stream: quic::CryptoStream,
    reader: HandshakeReader,
    /// Bytes handed to the reader so far.
    fed: u64,
    /// (start, end, type) of every message decoded.
    messages: Vec<(u64, u64, u8)>,
}

impl CryptoState {
    fn push(&mut self, offset: u64, data: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let fresh = self.stream.push(offset, data);
        self.fed += fresh.len() as u64;
        let msgs = self.reader.feed(&fresh);
        // The last message ends where the unread rest begins; walk back.
        let mut end = self.fed - self.reader.pending() as u64;
        let mut spans = Vec::new();
        for (kind, body) in msgs.iter().rev() {
            let start = end.saturating_sub(4 + body.len() as u64);
            spans.push((start, end, *kind));
            end = start;
        }
        spans.reverse();
        if self.messages.len() < 1024 {
            self.messages.extend(spans);
        }
        msgs
    }
}

struct QuicDissector {
    /// Connection ID lengths a short header carries, per direction.
    short_dcid_len: [usize; 2],
    initial: Option<(quic::Keys, quic::Keys)>,
    handshake: [Option<quic::Keys>; 2],
    zero_rtt: Vec<quic::Keys>,
    one_rtt: [Option<quic::Keys>; 2],
    largest: HashMap<(usize, Space), u64>,
    /// Packet number of the packet opened last.
    last_pn: Option<u64>,
    crypto: HashMap<(usize, Space), CryptoState>,
}

impl QuicDissector {
    fn new(
        packets: &[(&[u8], Dir)],
        parsed: &[Result<IpPacket, tcpip::NotIp>],
        keylog: &KeyLog,
    ) -> Self {
        let payloads: Vec<(&[u8], Dir)> = packets
            .iter()
            .zip(parsed)
            .filter_map(|((b, d), p)| match p {
                Ok(ip) => b.get(ip.payload.clone()).map(|x| (x, *d)),
                Err(_) => None,
            })
            .collect();
        let mut d = QuicDissector {
            short_dcid_len: [0, 0],
            initial: None,
            handshake: [None, None],
            zero_rtt: Vec::new(),
            one_rtt: [None, None],
            largest: HashMap::new(),
            last_pn: None,
            crypto: HashMap::new(),
        };
        // The client's first Initial: its DCID gives the Initial keys, its
        // SCID is what the server will address short headers to.
        if let Some((first, _)) = payloads.iter().find(|(_, d)| *d == Dir::ClientToServer) {
            if let Some(h) = quic::split_datagram(first, 0).first() {
                d.initial = quic::Keys::initial(&h.dcid);
                d.short_dcid_len[1] = h.scid.len();
            }
        }
        if let Some((first, _)) = payloads.iter().find(|(_, d)| *d == Dir::ServerToClient) {
            if let Some(h) = quic::split_datagram(first, 0).first() {
                d.short_dcid_len[0] = h.scid.len();
            }
        }
        // First pass over the Initials: the hellos.
        let mut hellos: [Option<Vec<u8>>; 2] = [None, None];
        for (payload, dir) in &payloads {
            for h in quic::split_datagram(payload, d.short_dcid_len[dir.index()]) {
                if h.packet_type != PacketType::Initial {
                    continue;
                }
                if let Some(frames) = d.open(payload, &h, *dir) {
                    for f in frames {
                        if let quic::Frame::Crypto { offset, data } = f {
                            for (kind, body) in
                                d.crypto_messages(*dir, Space::Initial, offset, &data)
                            {
                                if kind == 1 || kind == 2 {
                                    hellos[dir.index()].get_or_insert(body);
                                }
                            }
                        }
                    }
                }
            }
        }
        let ch = hellos[0].as_deref().and_then(tls::parse_client_hello);
        let sh = hellos[1].as_deref().and_then(tls::parse_server_hello);
        if let Some(ch) = &ch {
            let get = |label: &str| keylog.get(label, &ch.random);
            let suite = sh.as_ref().and_then(|s| tls::suite(s.cipher_suite));
            if let Some(suite) = suite {
                let keys = |label: &str| get(label).and_then(|s| quic::Keys::from_secret(suite, s));
                d.handshake = [
                    keys("CLIENT_HANDSHAKE_TRAFFIC_SECRET"),
                    keys("SERVER_HANDSHAKE_TRAFFIC_SECRET"),
                ];
                d.one_rtt = [
                    keys("CLIENT_TRAFFIC_SECRET_0"),
                    keys("SERVER_TRAFFIC_SECRET_0"),
                ];
            }
            // 0-RTT is sent before the ServerHello names a suite: try each
            // suite whose hash fits the secret.
            if let Some(secret) = get("CLIENT_EARLY_TRAFFIC_SECRET") {
                let suites = match suite {
                    Some(s) => vec![s],
                    None => tls::tls13_suites_for_secret(secret.len()),
                };
                d.zero_rtt = suites
                    .into_iter()
                    .filter_map(|s| quic::Keys::from_secret(s, secret))
                    .collect();
            }
        }
        // Start the real pass from scratch.
        d.largest.clear();
        d.crypto.clear();
        d
    }

    fn keys_for(&self, t: PacketType, dir: Dir) -> Vec<&quic::Keys> {
        let i = dir.index();
        match t {
            PacketType::Initial => self
                .initial
                .as_ref()
                .map(|(c, s)| if i == 0 { c } else { s })
                .into_iter()
                .collect(),
            PacketType::Handshake => self.handshake[i].iter().collect(),
            PacketType::ZeroRtt => self.zero_rtt.iter().collect(),
            PacketType::OneRtt => self.one_rtt[i].iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Opens one packet; updates the largest packet number seen.
    fn open(&mut self, datagram: &[u8], h: &quic::Header, dir: Dir) -> Option<Vec<quic::Frame>> {
        let space = h.packet_type.space()?;
        let key = (dir.index(), space);
        let largest = self.largest.get(&key).copied();
        let opened = self
            .keys_for(h.packet_type, dir)
            .into_iter()
            .find_map(|k| quic::open(datagram, h, k, largest))?;
        let l = self.largest.entry(key).or_insert(opened.packet_number);
        *l = (*l).max(opened.packet_number);
        self.last_pn = Some(opened.packet_number);
        Some(quic::parse_frames(&opened.payload))
    }

    fn crypto_messages(
        &mut self,
        dir: Dir,
        space: Space,
        offset: u64,
        data: &[u8],
    ) -> Vec<(u8, Vec<u8>)> {
        self.crypto
            .entry((dir.index(), space))
            .or_default()
            .push(offset, data)
    }

    /// Names of the messages an already-seen CRYPTO range carried.
    fn crypto_seen(&self, dir: Dir, space: Space, offset: u64, len: usize) -> Vec<u8> {
        let end = offset + len as u64;
        self.crypto
            .get(&(dir.index(), space))
            .map(|c| {
                c.messages
                    .iter()
                    .filter(|(s, e, _)| *s < end && offset < *e)
                    .map(|(_, _, k)| *k)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn run(
        mut self,
        packets: &[(&[u8], Dir)],
        parsed: &[Result<IpPacket, tcpip::NotIp>],
    ) -> Vec<Decoded> {
        let mut out = Vec::with_capacity(packets.len());
        for ((bytes, dir), p) in packets.iter().zip(parsed) {
            let payload = match p {
                Ok(
                    ip @ IpPacket {
                        transport: Transport::Udp { .. },
                        ..
                    },
                ) => bytes.get(ip.payload.clone()).unwrap_or_default(),
                other => {
                    out.push(plain(bytes, other));
                    continue;
                }
            };
            out.push(self.datagram(payload, *dir));
        }
        out
    }

    fn datagram(&mut self, payload: &[u8], dir: Dir) -> Decoded {
        let mut d = Decoded::default();
        d.push(Layer::Udp, format!("UDP len={}", payload.len()));
        let headers = quic::split_datagram(payload, self.short_dcid_len[dir.index()]);
        if headers.is_empty() {
            d.push(Layer::Quic, "not a QUIC packet proto can read");
            return d;
        }
        for h in &headers {
            let name = h.packet_type.name();
            d.quic_packets.push(name.to_string());
            d.names.push(name.to_string());
            self.last_pn = None;
            let Some(frames) = self.open(payload, h, dir) else {
                let why = if self.keys_for(h.packet_type, dir).is_empty() {
                    "no key"
                } else {
                    "did not decrypt"
                };
                d.push(
                    Layer::Quic,
                    format!("{name} {} B ({why})", h.end.saturating_sub(h.pn_offset)),
                );
                continue;
            };
            let pn = self.last_pn.unwrap_or_default();
            d.push(Layer::Quic, format!("{name} pn={pn}"));
            let Some(space) = h.packet_type.space() else {
                continue;
            };
            for f in frames {
                d.quic_frames.push(f.type_code());
                let text = match &f {
                    quic::Frame::Padding { count } => format!("PADDING {count} B"),
                    quic::Frame::Ack { ranges, .. } => {
                        let r: Vec<String> = ranges
                            .iter()
                            .map(|(lo, hi)| {
                                if lo == hi {
                                    format!("{lo}")
                                } else {
                                    format!("{lo}-{hi}")
                                }
                            })
                            .collect();
                        format!("ACK {}", r.join(","))
                    }
                    quic::Frame::Crypto { offset, data } => {
                        let seen = self.crypto_seen(dir, space, *offset, data.len());
                        let msgs = self.crypto_messages(dir, space, *offset, data);
                        if msgs.is_empty() && !seen.is_empty() {
                            // Data sent before: a retransmission of these messages.
                            let names: Vec<String> =
                                seen.iter().map(|k| tls::handshake_name(*k)).collect();
                            d.retransmission = true;
                            d.names.extend(names.iter().cloned());
                            d.push(
                                Layer::Quic,
                                format!("CRYPTO {} (retransmission)", names.join(" + ")),
                            );
                            continue;
                        }
                        let mut parts = Vec::new();
                        for (kind, body) in msgs {
                            let mut tmp = Decoded::default();
                            handshake_label(kind, &body, &mut tmp);
                            d.tls_handshake.push(kind);
                            d.names.push(tls::handshake_name(kind));
                            parts.extend(tmp.labels.into_iter().map(|l| l.text));
                        }
                        if parts.is_empty() {
                            format!("CRYPTO off={offset} len={} (part of a message)", data.len())
                        } else {
                            format!("CRYPTO {}", parts.join(" + "))
                        }
                    }
                    quic::Frame::Stream {
                        id,
                        offset,
                        fin,
                        data,
                        ..
                    } => {
                        if !data.is_empty() {
                            d.app_data = true;
                        }
                        format!(
                            "STREAM id={id} off={offset} len={}{} {}",
                            data.len(),
                            if *fin { " FIN" } else { "" },
                            quote(data)
                        )
                    }
                    quic::Frame::Datagram { data, .. } => {
                        d.app_data = true;
                        format!("DATAGRAM {}", quote(data))
                    }
                    quic::Frame::ConnectionClose { error, reason, .. } => {
                        format!(
                            "CONNECTION_CLOSE error={error} {}",
                            quote(reason.as_bytes())
                        )
                    }
                    quic::Frame::Unknown(t) => format!("unknown frame type {t:#x} (rest skipped)"),
                    other => other.name().to_string(),
                };
                d.push(Layer::Quic, text);
            }
        }
        if d.app_data {
            d.names.push("data".into());
        }
        d
    }
}
