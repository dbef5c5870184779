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
//! blocks appear in ACKs after a loss. A QUIC packet is IPv4 20 + UDP 8 +
//! QUIC's short header, frame headers and a 16-byte AEAD tag; those inner
//! parts are encrypted, so for QUIC proto reports what it can measure: the
//! UDP payload beyond the application's bytes.

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
    /// What the transport carries: application bytes for TCP; for QUIC the
    /// whole (encrypted) QUIC packet.
    pub payload: u32,
    /// How many packets of this exact layout were seen.
    pub count: u64,
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
    pub packets: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PerThousand {
    pub ip: f64,
    pub transport: f64,
    pub options: f64,
    pub quic: f64,
}

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

/// Reads a lab capture and measures the client → server overhead.
/// `app_bytes` is what the receiving application got (for QUIC's share).
pub fn from_capture(bytes: &[u8], client: IpAddr, app_bytes: u64) -> Result<Overhead, String> {
    let capture = pcap::parse(bytes)?;
    let mut layouts: std::collections::HashMap<(u32, u32, u32, u32), u64> = Default::default();
    let (mut ip, mut transport, mut options, mut udp_payload) = (0u64, 0u64, 0u64, 0u64);
    let (mut tcp_payload, mut packets) = (0u64, 0u64);
    let mut syn = Vec::new();
    let mut syn_ack = Vec::new();
    let mut is_udp = false;
    for record in &capture.records {
        let Ok(p) = tcpip::parse(&record.data) else {
            continue;
        };
        let (len, payload_len) = (record.data.len() as u32, p.payload.len() as u32);
        let from_client = p.src == client;
        if let Transport::Tcp(t) = &p.transport {
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
        if !from_client {
            continue;
        }
        packets += 1;
        let (l4, opts) = match &p.transport {
            Transport::Tcp(t) => (20, t.header_len as u32 - 20),
            Transport::Udp { .. } => {
                is_udp = true;
                udp_payload += u64::from(payload_len);
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
    let app = if is_udp { app_bytes } else { tcp_payload }.max(1) as f64;
    let per = |b: u64| b as f64 * 1000.0 / app;
    Ok(Overhead {
        full_packet: full,
        negotiated_option_bytes: if both("timestamps") { 12 } else { 0 },
        syn_options: syn,
        syn_ack_options: syn_ack,
        per_1000: PerThousand {
            ip: per(ip),
            transport: per(transport),
            options: per(options),
            quic: if is_udp {
                per(udp_payload.saturating_sub(app_bytes))
            } else {
                0.0
            },
        },
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
        // NOP NOP TS(10): the 12 bytes every data segment carries.
        let ts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        // SYN: MSS(4) SACK-permitted(2) TS(10) NOP(1) WS(3) = 20 bytes.
        let syn_opts = [
            2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let (c, s) = ([10, 77, 0, 1], [10, 77, 0, 2]);
        let mut bytes = Vec::new();
        let mut w = pcap::PcapWriter::new(&mut bytes, 1500).unwrap();
        let now = SystemTime::now();
        w.write_packet(now, &tcp_packet(c, s, true, false, &syn_opts, 0))
            .unwrap();
        w.write_packet(now, &tcp_packet(s, c, true, true, &syn_opts, 0))
            .unwrap();
        for _ in 0..10 {
            w.write_packet(now, &tcp_packet(c, s, false, true, &ts, 1448))
                .unwrap();
        }
        w.write_packet(now, &tcp_packet(c, s, false, true, &ts, 500))
            .unwrap();
        let o = from_capture(&bytes, IpAddr::from(c), 0).unwrap();
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
}
