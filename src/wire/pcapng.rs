//! Capture files: pcapng written with a Decryption Secrets Block, and any
//! pcap or pcapng read back (via the `pcap-file` crate).
//!
//! pcapng (draft-ietf-opsawg-pcapng) is a sequence of blocks, each framed
//! by its type and total length (repeated at the end, so a reader can walk
//! backwards), padded to 32 bits:
//!
//! ```text
//!  0                   1                   2                   3
//! +---------------------------------------------------------------+
//! |                          Block Type                           |
//! |                      Block Total Length                       |
//! /                          Block Body                           /
//! |                      Block Total Length                       |
//! +---------------------------------------------------------------+
//!
//! 0x0A0D0D0A Section Header: byte-order magic 0x1A2B3C4D, version 1.0
//! 0x00000001 Interface Description: link type (101 = raw IP), snaplen,
//!            option if_tsresol = 9 (timestamps in nanoseconds)
//! 0x0000000A Decryption Secrets: type 0x544c534b ("TLSK") + an NSS key log
//! 0x00000006 Enhanced Packet: interface, 64-bit timestamp, lengths, data,
//!            options (epb_flags: direction; opt_comment: what the link did)
//! ```
//!
//! Because the key log travels inside the file, Wireshark and tshark open
//! the capture decrypted, with no key-log setting.

use super::keylog::KeyLog;
use std::io::{self, Write};

const SECTION_HEADER: u32 = 0x0A0D_0D0A;
const INTERFACE_DESCRIPTION: u32 = 0x0000_0001;
const ENHANCED_PACKET: u32 = 0x0000_0006;
const DECRYPTION_SECRETS: u32 = 0x0000_000A;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const TLS_KEY_LOG: u32 = 0x544c_534b;
pub const LINKTYPE_RAW: u16 = 101;

/// Which way a packet went, as seen from the capturing host (the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Writes a pcapng file of raw IP packets (little-endian, like most files).
pub struct PcapNgWriter<W: Write> {
    out: W,
}

fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// One option: code (2), length (2), value padded to 32 bits.
fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(padded(out.len()), 0);
}

impl<W: Write> PcapNgWriter<W> {
    /// Writes the section header and one raw-IP interface with nanosecond timestamps.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut shb = Vec::new();
        shb.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
        option(&mut shb, 4, b"proto trace"); // shb_userappl
        option(&mut shb, 0, &[]);
        write_block(&mut out, SECTION_HEADER, &shb)?;
        let mut idb = Vec::new();
        idb.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&65535u32.to_le_bytes());
        option(&mut idb, 2, b"lab link"); // if_name
        option(&mut idb, 9, &[9]); // if_tsresol: 10^-9 s
        option(&mut idb, 0, &[]);
        write_block(&mut out, INTERFACE_DESCRIPTION, &idb)?;
        Ok(PcapNgWriter { out })
    }

    /// Embeds a key log: every reader of the file can decrypt what follows.
    pub fn write_secrets(&mut self, keylog: &KeyLog) -> io::Result<()> {
        let text = keylog.to_text();
        let mut dsb = Vec::new();
        dsb.extend_from_slice(&TLS_KEY_LOG.to_le_bytes());
        dsb.extend_from_slice(&(text.len() as u32).to_le_bytes());
        dsb.extend_from_slice(text.as_bytes());
        dsb.resize(padded(dsb.len()), 0);
        write_block(&mut self.out, DECRYPTION_SECRETS, &dsb)
    }

    /// One packet at `ts_nanos` since the Unix epoch.
    pub fn write_packet(
        &mut self,
        ts_nanos: u128,
        packet: &[u8],
        direction: Option<Direction>,
        comment: Option<&str>,
    ) -> io::Result<()> {
        let ts = ts_nanos as u64;
        let mut epb = Vec::new();
        epb.extend_from_slice(&0u32.to_le_bytes()); // interface 0
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        epb.extend_from_slice(packet);
        epb.resize(padded(epb.len()), 0);
        if let Some(d) = direction {
            // epb_flags bits 0-1: 01 inbound, 10 outbound.
            let flags: u32 = match d {
                Direction::Inbound => 1,
                Direction::Outbound => 2,
            };
            option(&mut epb, 2, &flags.to_le_bytes());
        }
        if let Some(c) = comment {
            option(&mut epb, 1, c.as_bytes()); // opt_comment
        }
        if direction.is_some() || comment.is_some() {
            option(&mut epb, 0, &[]);
        }
        write_block(&mut self.out, ENHANCED_PACKET, &epb)
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

fn write_block<W: Write>(out: &mut W, kind: u32, body: &[u8]) -> io::Result<()> {
    let total = (12 + body.len()) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_le_bytes())
}

/// One packet read from a capture, reduced to its IP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedPacket {
    /// Nanoseconds since the Unix epoch.
    pub ts_nanos: u128,
    /// The IP packet (link-layer header removed), or the raw frame when the
    /// link type is unknown.
    pub data: Vec<u8>,
    /// The frame's link type was understood and `data` is IP.
    pub is_ip: bool,
    pub comment: Option<String>,
}

/// Everything proto takes from a capture file.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    pub packets: Vec<CapturedPacket>,
    /// Secrets from Decryption Secrets Blocks.
    pub keylog: KeyLog,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("not a pcap or pcapng file (it starts with {0:02x?})")]
    UnknownFormat(Vec<u8>),
    #[error("reading the capture: {0}")]
    Parse(String),
}

/// Reads a pcap or pcapng file from memory.
pub fn read(bytes: &[u8]) -> Result<Capture, CaptureError> {
    let magic = bytes.get(..4).unwrap_or_default();
    if magic == SECTION_HEADER.to_le_bytes() {
        read_pcapng(bytes)
    } else if matches!(
        magic,
        [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xc3, 0xd4]
            | [0x4d, 0x3c, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
    ) {
        read_pcap(bytes)
    } else {
        Err(CaptureError::UnknownFormat(magic.to_vec()))
    }
}

fn read_pcap(bytes: &[u8]) -> Result<Capture, CaptureError> {
    let mut reader =
        pcap_file::pcap::PcapReader::new(bytes).map_err(|e| CaptureError::Parse(e.to_string()))?;
    let linktype = u32::from(reader.header().datalink);
    let mut capture = Capture::default();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.map_err(|e| CaptureError::Parse(e.to_string()))?;
        let (data, is_ip) = strip_link(linktype, &packet.data);
        capture.packets.push(CapturedPacket {
            ts_nanos: packet.timestamp.as_nanos(),
            data,
            is_ip,
            comment: None,
        });
    }
    Ok(capture)
}

fn read_pcapng(bytes: &[u8]) -> Result<Capture, CaptureError> {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    use pcap_file::pcapng::Block;
    let mut reader = pcap_file::pcapng::PcapNgReader::new(bytes)
        .map_err(|e| CaptureError::Parse(e.to_string()))?;
    let mut capture = Capture::default();
    // Per interface: link type and timestamp units per second.
    let mut interfaces: Vec<(u32, u128)> = Vec::new();
    while let Some(block) = reader.next_block() {
        let block = block.map_err(|e| CaptureError::Parse(e.to_string()))?;
        match block {
            Block::InterfaceDescription(idb) => {
                let mut per_second = 1_000_000u128; // the default: microseconds
                for opt in &idb.options {
                    if let InterfaceDescriptionOption::IfTsResol(r) = opt {
                        per_second = if r & 0x80 == 0 {
                            10u128.pow(u32::from(*r))
                        } else {
                            1u128 << (r & 0x7f)
                        };
                    }
                }
                interfaces.push((u32::from(idb.linktype), per_second));
            }
            Block::EnhancedPacket(epb) => {
                let (linktype, per_second) = interfaces
                    .get(epb.interface_id as usize)
                    .copied()
                    .unwrap_or((u32::from(LINKTYPE_RAW), 1_000_000));
                // pcap-file hands the raw 64-bit count over as "nanoseconds".
                let units = epb.timestamp.as_nanos();
                let ts_nanos = units.saturating_mul(1_000_000_000) / per_second.max(1);
                let (data, is_ip) = strip_link(linktype, &epb.data);
                let comment = epb.options.iter().find_map(|o| match o {
                    EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                    _ => None,
                });
                capture.packets.push(CapturedPacket {
                    ts_nanos,
                    data,
                    is_ip,
                    comment,
                });
            }
            Block::SimplePacket(spb) => {
                let linktype = interfaces.first().map_or(u32::from(LINKTYPE_RAW), |i| i.0);
                let (data, is_ip) = strip_link(linktype, &spb.data);
                capture.packets.push(CapturedPacket {
                    ts_nanos: 0,
                    data,
                    is_ip,
                    comment: None,
                });
            }
            Block::Unknown(u) if u.type_ == DECRYPTION_SECRETS => {
                read_secrets(&u.value, &mut capture.keylog);
            }
            _ => {}
        }
    }
    Ok(capture)
}

/// A Decryption Secrets Block body: secrets type (4), length (4), data.
fn read_secrets(body: &[u8], keylog: &mut KeyLog) {
    // The block may come in either byte order; "TLSK" is the same either way round.
    let Some(kind) = body.get(..4) else { return };
    let little = kind == TLS_KEY_LOG.to_le_bytes();
    if !little && kind != TLS_KEY_LOG.to_be_bytes() {
        return;
    }
    let Some(len) = body.get(4..8) else { return };
    let len = if little {
        u32::from_le_bytes([len[0], len[1], len[2], len[3]])
    } else {
        u32::from_be_bytes([len[0], len[1], len[2], len[3]])
    } as usize;
    if let Some(text) = body.get(8..8 + len) {
        keylog.extend(&KeyLog::parse(&String::from_utf8_lossy(text)));
    }
}

/// Removes the link-layer header of the link types tcpdump writes.
fn strip_link(linktype: u32, frame: &[u8]) -> (Vec<u8>, bool) {
    let ip_at = match linktype {
        101 | 228 | 229 | 12 | 14 => Some(0), // raw IP (101; 12/14 on some systems), IPv4, IPv6
        0 | 108 => Some(4),                   // BSD loopback: 4-byte family
        1 => {
            // Ethernet: 6 dst + 6 src + EtherType, maybe one 802.1Q tag.
            match frame.get(12..14) {
                Some([0x81, 0x00]) => Some(18),
                Some(_) => Some(14),
                None => None,
            }
        }
        113 => Some(16), // Linux "cooked" capture (tcpdump -i any), v1
        276 => Some(20), // Linux cooked v2
        _ => None,
    };
    match ip_at.and_then(|at| frame.get(at..)) {
        Some(ip) if matches!(ip.first().map(|b| b >> 4), Some(4 | 6)) => (ip.to_vec(), true),
        _ => (frame.to_vec(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_reads_back_with_secrets_and_comments() {
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        let mut log = KeyLog::default();
        log.push("CLIENT_RANDOM", &[1, 2], &[3, 4, 5]);
        w.write_secrets(&log).unwrap();
        let packet = [
            0x45u8, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        w.write_packet(
            1_700_000_000_123_456_789,
            &packet,
            Some(Direction::Outbound),
            Some("dropped by the link"),
        )
        .unwrap();
        w.write_packet(1_700_000_000_200_000_000, &packet, None, None)
            .unwrap();
        let bytes = w.into_inner();
        assert_eq!(bytes.len() % 4, 0);
        let capture = read(&bytes).unwrap();
        assert_eq!(capture.keylog, log);
        assert_eq!(capture.packets.len(), 2);
        assert_eq!(capture.packets[0].ts_nanos, 1_700_000_000_123_456_789);
        assert_eq!(capture.packets[0].data, packet);
        assert!(capture.packets[0].is_ip);
        assert_eq!(
            capture.packets[0].comment.as_deref(),
            Some("dropped by the link")
        );
        assert_eq!(capture.packets[1].comment, None);
    }

    #[test]
    fn link_headers_come_off() {
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00, 0x45, 1, 2]);
        assert_eq!(strip_link(1, &eth), (vec![0x45, 1, 2], true));
        assert_eq!(strip_link(999, &[1, 2]), (vec![1, 2], false));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            read(b"hello"),
            Err(CaptureError::UnknownFormat(_))
        ));
    }
}
