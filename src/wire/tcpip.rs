//! IP, TCP and UDP headers: what every packet on the lab's link starts with.
//!
//! The parsing itself is `etherparse`'s (a well-kept, zero-copy header
//! parser); this file turns its slices into the few facts a ladder shows.
//!
//! ```text
//! IPv4 header (RFC 791), 20 bytes without options
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |Type of Service|          Total Length         |
//! |         Identification        |Flags|      Fragment Offset    |
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! TCP header (RFC 9293), 20 bytes + options
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! |                        Sequence Number                        |
//! |                    Acknowledgment Number                      |
//! |  Data |       |C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//! |       |       |R|E|G|K|H|T|N|N|                               |
//! |           Checksum            |         Urgent Pointer        |
//! |                    Options                    |    Padding    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! UDP header (RFC 768), 8 bytes
//! |          Source Port          |       Destination Port        |
//! |            Length             |           Checksum            |
//! ```
//!
//! Sequence numbers start at a random value (the ISN) so that old
//! segments cannot be mistaken for new ones; ladders show them *relative*
//! to the ISN, as Wireshark does: the SYN is seq 0, the first data byte 1.

use etherparse::{NetSlice, SlicedPacket, TcpOptionElement, TransportSlice};
use std::net::{IpAddr, SocketAddr};

/// The TCP control bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    pub urg: bool,
    pub ece: bool,
    pub cwr: bool,
}

impl TcpFlags {
    /// "SYN", "SYN,ACK", "PSH,ACK", "FIN,ACK": Wireshark's order (lowest bit first).
    pub fn names(&self) -> String {
        let all = [
            (self.fin, "FIN"),
            (self.syn, "SYN"),
            (self.rst, "RST"),
            (self.psh, "PSH"),
            (self.ack, "ACK"),
            (self.urg, "URG"),
            (self.ece, "ECE"),
            (self.cwr, "CWR"),
        ];
        let set: Vec<&str> = all.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        set.join(",")
    }
}

/// A TCP option worth showing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpOption {
    Mss(u16),
    WindowScale(u8),
    SackPermitted,
    Sack(Vec<(u32, u32)>),
    Timestamps {
        value: u32,
        echo: u32,
    },
    /// TCP Fast Open (RFC 7413, option 34): an empty cookie asks for one.
    FastOpenCookie(Vec<u8>),
    Other(u8),
}

/// The parts of a TCP header a ladder shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpHeader {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    pub options: Vec<TcpOption>,
    pub header_len: usize,
}

/// What is inside the IP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp(TcpHeader),
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    /// A protocol proto does not decode (by its IP protocol number).
    Other {
        protocol: u8,
    },
}

/// One IP packet, its transport header and where the payload starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpPacket {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport,
    /// Byte range of the transport payload within the packet.
    pub payload: std::ops::Range<usize>,
}

impl IpPacket {
    pub fn src_addr(&self) -> Option<SocketAddr> {
        self.ports().map(|(s, _)| SocketAddr::new(self.src, s))
    }

    pub fn dst_addr(&self) -> Option<SocketAddr> {
        self.ports().map(|(_, d)| SocketAddr::new(self.dst, d))
    }

    fn ports(&self) -> Option<(u16, u16)> {
        match &self.transport {
            Transport::Tcp(t) => Some((t.src_port, t.dst_port)),
            Transport::Udp { src_port, dst_port } => Some((*src_port, *dst_port)),
            Transport::Other { .. } => None,
        }
    }

    /// The IP protocol number: 6 TCP, 17 UDP, ...
    pub fn protocol(&self) -> u8 {
        match &self.transport {
            Transport::Tcp(_) => 6,
            Transport::Udp { .. } => 17,
            Transport::Other { protocol } => *protocol,
        }
    }
}

/// Why a packet could not be read as IP.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a decodable IP packet: {0}")]
pub struct NotIp(pub String);

/// Parses an IPv4 or IPv6 packet (the lab's TUN devices carry raw IP).
pub fn parse(packet: &[u8]) -> Result<IpPacket, NotIp> {
    let sliced = SlicedPacket::from_ip(packet).map_err(|e| NotIp(e.to_string()))?;
    let (src, dst, protocol) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => (
            IpAddr::V4(v4.header().source_addr()),
            IpAddr::V4(v4.header().destination_addr()),
            v4.header().protocol().0,
        ),
        Some(NetSlice::Ipv6(v6)) => (
            IpAddr::V6(v6.header().source_addr()),
            IpAddr::V6(v6.header().destination_addr()),
            v6.payload().ip_number.0,
        ),
        _ => return Err(NotIp("no IP header".into())),
    };
    let offset = |inner: &[u8]| {
        let start = inner.as_ptr() as usize - packet.as_ptr() as usize;
        start..start + inner.len()
    };
    let (transport, payload) = match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let header = TcpHeader {
                src_port: tcp.source_port(),
                dst_port: tcp.destination_port(),
                seq: tcp.sequence_number(),
                ack: tcp.acknowledgment_number(),
                flags: TcpFlags {
                    syn: tcp.syn(),
                    ack: tcp.ack(),
                    fin: tcp.fin(),
                    rst: tcp.rst(),
                    psh: tcp.psh(),
                    urg: tcp.urg(),
                    ece: tcp.ece(),
                    cwr: tcp.cwr(),
                },
                window: tcp.window_size(),
                options: tcp_options(tcp.options()),
                header_len: tcp.data_offset() as usize * 4,
            };
            (Transport::Tcp(header), offset(tcp.payload()))
        }
        Some(TransportSlice::Udp(udp)) => (
            Transport::Udp {
                src_port: udp.source_port(),
                dst_port: udp.destination_port(),
            },
            offset(udp.payload()),
        ),
        _ => {
            let rest = sliced
                .net
                .as_ref()
                .and_then(|n| n.ip_payload_ref())
                .map(|p| offset(p.payload))
                .unwrap_or(packet.len()..packet.len());
            (Transport::Other { protocol }, rest)
        }
    };
    Ok(IpPacket {
        src,
        dst,
        transport,
        payload,
    })
}

/// TCP options are kind (1 byte), length (1 byte, whole option), value;
/// kinds 0 (end) and 1 (no-op) are a single byte. etherparse reads the
/// standard ones; Fast Open (34) is read here.
fn tcp_options(raw: &[u8]) -> Vec<TcpOption> {
    let mut out = Vec::new();
    for element in etherparse::TcpOptionsIterator::from_slice(raw) {
        match element {
            Ok(TcpOptionElement::MaximumSegmentSize(mss)) => out.push(TcpOption::Mss(mss)),
            Ok(TcpOptionElement::WindowScale(s)) => out.push(TcpOption::WindowScale(s)),
            Ok(TcpOptionElement::SelectiveAcknowledgementPermitted) => {
                out.push(TcpOption::SackPermitted)
            }
            Ok(TcpOptionElement::SelectiveAcknowledgement(first, rest)) => {
                let mut blocks = vec![first];
                blocks.extend(rest.iter().flatten().copied());
                out.push(TcpOption::Sack(blocks));
            }
            Ok(TcpOptionElement::Timestamp(value, echo)) => {
                out.push(TcpOption::Timestamps { value, echo })
            }
            Ok(TcpOptionElement::Noop) => {}
            Err(_) => {
                // An option etherparse does not know stops its iterator:
                // walk the raw bytes for the ones we want from here on.
                out.extend(raw_unknown_options(raw));
                break;
            }
        }
    }
    out
}

fn raw_unknown_options(raw: &[u8]) -> Vec<TcpOption> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let kind = raw[i];
        match kind {
            0 => break,
            1 => i += 1,
            _ => {
                let Some(&len) = raw.get(i + 1) else { break };
                let len = len as usize;
                if len < 2 || i + len > raw.len() {
                    break;
                }
                match kind {
                    2..=5 | 8 => {} // etherparse's, already read
                    34 => out.push(TcpOption::FastOpenCookie(raw[i + 2..i + len].to_vec())),
                    other => out.push(TcpOption::Other(other)),
                }
                i += len;
            }
        }
    }
    out
}

/// `a − b` in sequence space (wraps at 2³²).
pub fn seq_diff(a: u32, b: u32) -> u32 {
    a.wrapping_sub(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN from 10.77.0.1:40000 to 10.77.0.2:8081 with MSS 1460, SACK
    /// permitted, window scale 7 and a Fast Open cookie request.
    fn syn() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2,
        ];
        let tcp = [
            0x9c, 0x40, 0x1f, 0x91, 0, 0, 0x10, 0, 0, 0, 0, 0, 0x80, 0x02, 0xfa, 0xf0, 0, 0, 0,
            0, // 32-byte header
            2, 4, 0x05, 0xb4, 4, 2, 3, 3, 7, 34, 2, 1,
        ];
        p.extend_from_slice(&tcp);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    #[test]
    fn reads_a_syn_with_options() {
        let packet = syn();
        let ip = parse(&packet).unwrap();
        assert_eq!(ip.src_addr().unwrap().to_string(), "10.77.0.1:40000");
        let Transport::Tcp(tcp) = ip.transport else {
            panic!("not TCP")
        };
        assert_eq!(tcp.flags.names(), "SYN");
        assert_eq!(tcp.seq, 0x1000);
        assert_eq!(tcp.header_len, 32);
        assert!(tcp.options.contains(&TcpOption::Mss(1460)));
        assert!(tcp.options.contains(&TcpOption::SackPermitted));
        assert!(tcp.options.contains(&TcpOption::WindowScale(7)));
        assert!(tcp.options.contains(&TcpOption::FastOpenCookie(vec![])));
        assert_eq!(ip.payload, packet.len()..packet.len());
    }

    #[test]
    fn garbage_is_not_ip() {
        assert!(parse(&[0x45, 0, 0]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn sequence_space_wraps() {
        assert_eq!(seq_diff(5, u32::MAX), 6);
    }
}
