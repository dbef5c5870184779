//! Header overhead, measured from the packets the lab forwarded (claim C9:
//! "a TCP segment header costs 20 bytes").
//!
//! Every full-size TCP data segment on the link is
//!
//! ```text
//!   ┌──────────────┬──────────────┬────────────────────┬─────────────────────┐
//!   │ IPv4  20 B   │ TCP   20 B   │ TCP options        │ payload (MSS)       │
//!   │              │              │ 12 B: timestamps   │ 1500 − 20 − 20 − 12 │
//!   │              │              │ (10 + 2 NOP)       │ = 1448 B            │
//!   └──────────────┴──────────────┴────────────────────┴─────────────────────┘
//! ```
//!
//! The options a data segment carries were agreed in the SYN / SYN-ACK:
//! timestamps (RFC 7323) ride on every segment once both sides offered them;
//! window scaling, SACK-permitted and the MSS appear only in the SYNs; SACK
//! blocks appear in ACKs after a loss.
//!
//! TLS adds a 5-byte header and a 16-byte AEAD tag (plus TLS 1.3's 1-byte
//! inner content type) to every record of up to 16 384 bytes; a record
//! spans about a dozen segments, so those bytes are counted from what TLS
//! wrote (`TlsSent`), not per packet. A QUIC packet is IPv4 20 + UDP 8 +
//! QUIC's short header (a first byte and the connection ID), the packet
//! number and frame headers, and a 16-byte AEAD tag; the inside is
//! encrypted, so proto counts what the capture shows for sure (the first
//! byte, the connection ID's length from the handshake, a tag per packet)
//! and reports the rest of QUIC's bytes as one share.

use super::transfer::TlsSent;
use crate::lab::pcap;
use crate::wire::tcpip::{self, TcpOption, Transport};
use serde::Serialize;
use std::net::IpAddr;

/// Bytes of one full-size data packet, by layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FullPacket {
    pub ip: u32,
    /// TCP's fixed 20 bytes, or UDP's 8.
    pub transport: u32,
    /// TCP options on a data segment (0 for UDP).
    pub options: u32,
    /// What the transport carries: application bytes for TCP; TLS records
    /// for TLS; for QUIC the whole (encrypted) QUIC packet.
    pub payload: u32,
    /// How many packets of this exact layout were seen.
    pub count: u64,
}

/// One layer's share of the bytes on the wire.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Layer {
    /// e.g. "IPv4 header", "TLS record header".
    pub name: String,
    /// Bytes of this layer in one full-size packet, where a packet has a
    /// fixed share (a TLS record spans many packets: then `None`).
    pub per_packet: Option<u32>,
    /// Bytes of this layer per 1000 bytes of application data, over the
    /// whole transfer (the client → server direction).
    pub per_1000: f64,
    /// How the figure was obtained.
    pub how: String,
}

/// Header overhead of the data direction (client → server).
#[derive(Clone, Debug, Serialize)]
pub struct Overhead {
    /// The most common full-size data packet.
    pub full_packet: FullPacket,
    /// Options the client's SYN offered and the server's SYN-ACK accepted,
    /// by name (TCP only).
    pub syn_options: Vec<String>,
    pub syn_ack_options: Vec<String>,
    /// Option bytes a data segment should carry after that negotiation:
    /// 12 with timestamps on both SYNs, else 0.
    pub negotiated_option_bytes: u32,
    /// Bytes on the wire per 1000 bytes of application data, split by
    /// layer, over every client→server packet (ACKs and retransmissions
    /// included): ip, transport header, options, and for QUIC everything
    /// inside UDP that is not application data.
    pub per_1000: PerThousand,
    /// Every layer, outermost first, ending with the application's data
    /// (the table and the stacked bar are drawn from this).
    pub layers: Vec<Layer>,
    pub packets: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PerThousand {
    pub ip: f64,
    pub transport: f64,
    pub options: f64,
    /// TLS: record headers, AEAD tags with the inner content type, and
    /// the handshake's records.
    pub tls: f64,
    pub quic: f64,
}

impl Overhead {
    /// Header bytes per 1000 bytes of application data, all layers.
    pub fn total_per_1000(&self) -> f64 {
        self.layers
            .iter()
            .filter(|l| l.name != APPLICATION)
            .map(|l| l.per_1000)
            .sum()
    }
}

/// The name of the last layer: what the application sent.
pub const APPLICATION: &str = "application data";

fn option_name(o: &TcpOption) -> &'static str {
    match o {
        TcpOption::Mss(_) => "MSS",
        TcpOption::WindowScale(_) => "window scale",
        TcpOption::SackPermitted => "SACK permitted",
        TcpOption::Sack(_) => "SACK",
        TcpOption::Timestamps { .. } => "timestamps",
        TcpOption::FastOpenCookie(_) => "Fast Open",
        TcpOption::Other(_) => "other",
    }
}

/// A QUIC packet's first byte: 1 in the top bit is a long header (the
/// handshake's Initial and Handshake packets), 0 a short header (1-RTT).
///
/// ```text
///   long:  ┌─1─┬─type…─┬─version 4─┬─DCID len 1─┬─DCID─┬─SCID len 1─┬─SCID─┬ …
///   short: ┌─0─┬─flags─┬─DCID (length agreed in the handshake)─┬─packet number 1–4─┬ payload + tag 16
/// ```
/// The packet number's length sits in the protected (encrypted) bits of
/// the first byte, so only the first byte and the connection ID are counted
/// as "header" here; the packet number goes with the frames.
fn quic_long_header_scid_len(datagram: &[u8]) -> Option<usize> {
    let first = *datagram.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    let dcid_len = usize::from(*datagram.get(5)?);
    datagram.get(6 + dcid_len).map(|&l| usize::from(l))
}

/// The AEAD tag on every QUIC packet (AES-GCM, ChaCha20-Poly1305).
const QUIC_TAG: u64 = 16;

/// Reads a lab capture and measures the client → server overhead.
/// `app_bytes` is what the receiving application got; `tls` what TLS wrote
/// (for `transfer tls`: then the shares are per 1000 application bytes).
pub fn from_capture(
    bytes: &[u8],
    client: IpAddr,
    app_bytes: u64,
    tls: Option<&TlsSent>,
) -> Result<Overhead, String> {
    let capture = pcap::parse(bytes)?;
    let mut layouts: std::collections::HashMap<(u32, u32, u32, u32), u64> = Default::default();
    let (mut ip, mut transport, mut options, mut udp_payload) = (0u64, 0u64, 0u64, 0u64);
    let (mut tcp_payload, mut packets) = (0u64, 0u64);
    // QUIC: short-header packets and the bytes of long-header (handshake)
    // datagrams from the client; the connection ID length the server chose.
    let (mut short_packets, mut long_bytes, mut cid_len) = (0u64, 0u64, None);
    let mut syn = Vec::new();
    let mut syn_ack = Vec::new();
    let mut is_udp = false;
    for record in &capture.records {
        let Ok(p) = tcpip::parse(&record.data) else {
            continue;
        };
        let (len, payload_len) = (record.data.len() as u32, p.payload.len() as u32);
        let from_client = p.src == client;
        match &p.transport {
            Transport::Tcp(t) => {
                let names = || {
                    t.options
                        .iter()
                        .map(|o| option_name(o).to_string())
                        .collect()
                };
                if t.flags.syn && !t.flags.ack && from_client {
                    syn = names();
                } else if t.flags.syn && t.flags.ack && !from_client {
                    syn_ack = names();
                }
            }
            Transport::Udp { .. } if !from_client && cid_len.is_none() => {
                // The server's Source Connection ID is the Destination
                // Connection ID of every packet the client sends after.
                cid_len = quic_long_header_scid_len(&record.data[p.payload.clone()]);
            }
            _ => {}
        }
        if !from_client {
            continue;
        }
        packets += 1;
        let (l4, opts) = match &p.transport {
            Transport::Tcp(t) => (20, t.header_len as u32 - 20),
            Transport::Udp { .. } => {
                is_udp = true;
                udp_payload += u64::from(payload_len);
                match record.data.get(p.payload.start) {
                    Some(b) if b & 0x80 == 0 => short_packets += 1,
                    Some(_) => long_bytes += u64::from(payload_len),
                    None => {}
                }
                (8, 0)
            }
            Transport::Other { .. } => continue,
        };
        let ip_len = len - payload_len - l4 - opts;
        ip += u64::from(ip_len);
        transport += u64::from(l4);
        options += u64::from(opts);
        if !is_udp {
            tcp_payload += u64::from(payload_len);
        }
        if payload_len > 0 {
            *layouts.entry((ip_len, l4, opts, payload_len)).or_default() += 1;
        }
    }
    // The full-size packet: the largest payload among the common layouts.
    let full = layouts
        .iter()
        .filter(|(_, &n)| n * 20 >= packets.max(1))
        .max_by_key(|((_, _, _, payload), &n)| (*payload, n))
        .or_else(|| layouts.iter().max_by_key(|(_, &n)| n))
        .map(|(&(ip, transport, options, payload), &count)| FullPacket {
            ip,
            transport,
            options,
            payload,
            count,
        })
        .ok_or("the capture holds no client→server data packet")?;
    let both = |name: &str| syn.iter().any(|o| o == name) && syn_ack.iter().any(|o| o == name);
    // Plain TCP: per 1000 bytes the TCP segments carried (retransmissions
    // included); TLS and QUIC: per 1000 bytes the application got.
    let app = if is_udp || tls.is_some() {
        app_bytes
    } else {
        tcp_payload
    }
    .max(1) as f64;
    let per = |b: u64| b as f64 * 1000.0 / app;
    let negotiated_option_bytes = if both("timestamps") { 12 } else { 0 };

    let mut layers = vec![Layer {
        name: if full.ip == 20 {
            "IPv4 header"
        } else {
            "IP header"
        }
        .into(),
        per_packet: Some(full.ip),
        per_1000: per(ip),
        how: "every client→server packet in the capture".into(),
    }];
    let mut quic = 0.0;
    let mut tls_share = 0.0;
    if is_udp {
        let cid = cid_len.unwrap_or(0) as u64;
        let header = short_packets * (1 + cid);
        let tags = short_packets * QUIC_TAG;
        let rest = udp_payload.saturating_sub(app_bytes + header + tags + long_bytes);
        quic = per(udp_payload.saturating_sub(app_bytes));
        layers.extend([
            Layer {
                name: "UDP header".into(),
                per_packet: Some(full.transport),
                per_1000: per(transport),
                how: "every client→server datagram".into(),
            },
            Layer {
                name: format!("QUIC short header (first byte + {cid}-byte connection ID)"),
                per_packet: Some(1 + cid as u32),
                per_1000: per(header),
                how: format!(
                    "{short_packets} 1-RTT packets; the connection ID's length from the server's handshake packet{}",
                    if cid_len.is_none() { " (not seen: counted as 0)" } else { "" }
                ),
            },
            Layer {
                name: "QUIC AEAD tag".into(),
                per_packet: Some(QUIC_TAG as u32),
                per_1000: per(tags),
                how: "16 bytes on every 1-RTT packet".into(),
            },
            Layer {
                name: "QUIC packet numbers, frames, ACKs, resent data".into(),
                per_packet: None,
                per_1000: per(rest),
                how: "UDP payload − data − the rows above (encrypted: not split further)".into(),
            },
            Layer {
                name: "QUIC handshake packets (long header)".into(),
                per_packet: None,
                per_1000: per(long_bytes),
                how: "client datagrams starting with a long header".into(),
            },
        ]);
    } else {
        layers.extend([
            Layer {
                name: "TCP header".into(),
                per_packet: Some(full.transport),
                per_1000: per(transport),
                how: "every client→server segment (ACKs included)".into(),
            },
            Layer {
                name: format!(
                    "TCP options ({})",
                    if negotiated_option_bytes > 0 {
                        "timestamps on every segment"
                    } else {
                        "none negotiated for data"
                    }
                ),
                per_packet: Some(full.options),
                per_1000: per(options),
                how: "TCP header length − 20, per segment".into(),
            },
        ]);
        if let Some(t) = tls {
            let retransmitted_or_handshake = tcp_payload
                .saturating_sub(t.record_header_bytes + t.record_body_bytes + t.handshake_bytes);
            tls_share = per(t.record_header_bytes + t.protection_bytes() + t.handshake_bytes);
            layers.extend([
                Layer {
                    name: "TLS record header".into(),
                    per_packet: None,
                    per_1000: per(t.record_header_bytes),
                    how: format!(
                        "5 bytes × {} records, counted as rustls wrote them",
                        t.records
                    ),
                },
                Layer {
                    name: "TLS AEAD tag + inner content type".into(),
                    per_packet: None,
                    per_1000: per(t.protection_bytes()),
                    how: format!(
                        "record bodies − plaintext: {} bytes over {} records ({:.1} per record)",
                        t.protection_bytes(),
                        t.records,
                        t.protection_bytes() as f64 / t.records.max(1) as f64
                    ),
                },
                Layer {
                    name: "TLS handshake (client's records)".into(),
                    per_packet: None,
                    per_1000: per(t.handshake_bytes),
                    how: format!("{} bytes before the first data record", t.handshake_bytes),
                },
                Layer {
                    name: "TCP retransmissions".into(),
                    per_packet: None,
                    per_1000: per(retransmitted_or_handshake),
                    how: "TCP payload in the capture beyond what TLS wrote once".into(),
                },
            ]);
        }
    }
    layers.push(Layer {
        name: APPLICATION.into(),
        per_packet: (!is_udp && tls.is_none()).then_some(full.payload),
        per_1000: 1000.0,
        how: if tls.is_some() || is_udp {
            format!("{app_bytes} bytes the receiver read")
        } else {
            format!("{tcp_payload} bytes of TCP payload")
        },
    });
    Ok(Overhead {
        full_packet: full,
        negotiated_option_bytes,
        syn_options: syn,
        syn_ack_options: syn_ack,
        per_1000: PerThousand {
            ip: per(ip),
            transport: per(transport),
            options: per(options),
            tls: tls_share,
            quic,
        },
        layers,
        packets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    /// An IPv4+TCP packet with `options` and `payload` bytes of data.
    fn tcp_packet(
        src: [u8; 4],
        dst: [u8; 4],
        syn: bool,
        ack: bool,
        options: &[u8],
        payload: usize,
    ) -> Vec<u8> {
        let tcp_len = 20 + options.len();
        let total = 20 + tcp_len + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&8081u16.to_be_bytes());
        t[12] = ((tcp_len / 4) as u8) << 4;
        t[13] = (u8::from(syn) << 1) | (u8::from(ack) << 4);
        t[20..20 + options.len()].copy_from_slice(options);
        p
    }

    #[test]
    fn measures_a_tcp_transfer_with_timestamps() {
        let (c, s) = ([10, 77, 0, 1], [10, 77, 0, 2]);
        let mut segments = vec![1448; 10];
        segments.push(500);
        let bytes = timestamped_capture(c, s, &segments);
        let o = from_capture(&bytes, IpAddr::from(c), 0, None).unwrap();
        assert_eq!(
            o.full_packet,
            FullPacket {
                ip: 20,
                transport: 20,
                options: 12,
                payload: 1448,
                count: 10
            }
        );
        assert_eq!(o.negotiated_option_bytes, 12);
        assert!(o.syn_options.contains(&"timestamps".to_string()));
        assert_eq!(o.packets, 12);
        // 12 packets × 20 bytes of IP per 14 980 bytes of payload.
        assert!((o.per_1000.ip - 240.0 * 1000.0 / 14_980.0).abs() < 1e-9);
    }

    /// A capture of SYN, SYN-ACK (both offering timestamps) and data
    /// segments of these payload sizes from `c` to `s`.
    fn timestamped_capture(c: [u8; 4], s: [u8; 4], segments: &[usize]) -> Vec<u8> {
        // NOP NOP TS(10): the 12 bytes every data segment carries.
        let ts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        // SYN: MSS(4) SACK-permitted(2) TS(10) NOP(1) WS(3) = 20 bytes.
        let syn_opts = [
            2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let mut bytes = Vec::new();
        let mut w = pcap::PcapWriter::new(&mut bytes, 1500).unwrap();
        let now = SystemTime::now();
        w.write_packet(now, &tcp_packet(c, s, true, false, &syn_opts, 0))
            .unwrap();
        w.write_packet(now, &tcp_packet(s, c, true, true, &syn_opts, 0))
            .unwrap();
        for &payload in segments {
            w.write_packet(now, &tcp_packet(c, s, false, true, &ts, payload))
                .unwrap();
        }
        bytes
    }

    #[test]
    fn tls_layers_come_from_what_tls_wrote() {
        let (c, s) = ([10, 77, 0, 1], [10, 77, 0, 2]);
        // 100 segments of 1448 = 144 800 bytes of TLS: 300 handshake bytes,
        // 8 full records (8 × 16 406) and a close_notify, 0 retransmitted.
        let records_len = 8 * (5 + 16_384 + 17) + (5 + 19);
        let handshake = 144_800 - records_len;
        let tls = TlsSent {
            handshake_bytes: handshake as u64,
            records: 9,
            record_header_bytes: 45,
            record_body_bytes: (8 * (16_384 + 17) + 19) as u64,
            plaintext_bytes: 8 * 16_384,
            ..Default::default()
        };
        let o = from_capture(
            &timestamped_capture(c, s, &[1448; 100]),
            IpAddr::from(c),
            8 * 16_384,
            Some(&tls),
        )
        .unwrap();
        let layer = |name: &str| {
            o.layers
                .iter()
                .find(|l| l.name == name)
                .unwrap_or_else(|| panic!("no {name} in {:?}", o.layers))
                .per_1000
        };
        let per = |bytes: f64| bytes * 1000.0 / (8.0 * 16_384.0);
        assert!((layer("TLS record header") - per(45.0)).abs() < 1e-9);
        assert!((layer("TLS AEAD tag + inner content type") - per(8.0 * 17.0 + 19.0)).abs() < 1e-9);
        assert!((layer("TLS handshake (client's records)") - per(handshake as f64)).abs() < 1e-9);
        assert_eq!(layer("TCP retransmissions"), 0.0);
        // IP per 1000 application bytes (not per TCP payload byte).
        assert!((layer("IPv4 header") - per(102.0 * 20.0 - 20.0)).abs() < 1e-9);
        assert_eq!(o.layers.last().map(|l| l.name.as_str()), Some(APPLICATION));
    }

    /// An IPv4+UDP datagram carrying `payload`.
    fn udp_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&4433u16.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[28..].copy_from_slice(payload);
        p
    }

    #[test]
    fn quic_layers_use_the_connection_id_length_from_the_handshake() {
        let (c, s) = ([10, 77, 0, 1], [10, 77, 0, 2]);
        let mut bytes = Vec::new();
        let mut w = pcap::PcapWriter::new(&mut bytes, 1500).unwrap();
        let now = SystemTime::now();
        // Client Initial (long header, 1200 bytes), then the server's
        // Initial: DCID of 8, SCID of 8 (what the client uses from then on).
        let mut initial = vec![0xc0, 0, 0, 0, 1, 8];
        initial.resize(1200, 0);
        w.write_packet(now, &udp_packet(c, s, &initial)).unwrap();
        let mut reply = vec![0xc0, 0, 0, 0, 1, 8, 0, 0, 0, 0, 0, 0, 0, 0, 8];
        reply.resize(1200, 0);
        w.write_packet(now, &udp_packet(s, c, &reply)).unwrap();
        // 100 full 1-RTT packets of 1472 bytes.
        let mut short = vec![0x40];
        short.resize(1472, 0);
        for _ in 0..100 {
            w.write_packet(now, &udp_packet(c, s, &short)).unwrap();
        }
        let app = 100 * 1400;
        let o = from_capture(&bytes, IpAddr::from(c), app, None).unwrap();
        let per = |bytes: u64| bytes as f64 * 1000.0 / app as f64;
        let names: Vec<(&str, f64)> = o
            .layers
            .iter()
            .map(|l| (l.name.as_str(), l.per_1000))
            .collect();
        assert_eq!(
            names,
            vec![
                ("IPv4 header", per(101 * 20)),
                ("UDP header", per(101 * 8)),
                (
                    "QUIC short header (first byte + 8-byte connection ID)",
                    per(100 * 9)
                ),
                ("QUIC AEAD tag", per(100 * 16)),
                (
                    "QUIC packet numbers, frames, ACKs, resent data",
                    per(100 * (1472 - 9 - 16 - 1400))
                ),
                ("QUIC handshake packets (long header)", per(1200)),
                (APPLICATION, 1000.0),
            ]
        );
        assert_eq!(o.full_packet.payload, 1472);
    }
}
