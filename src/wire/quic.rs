//! QUIC v1 packets (RFC 9000, RFC 9001) as they cross the wire: the
//! packets of a datagram, their protection, and the frames inside.
//!
//! # Packets
//!
//! One UDP datagram may carry several QUIC packets back to back
//! ("coalesced"): an Initial, a Handshake and a 1-RTT packet in one
//! datagram is how a server answers the first flight. Long headers
//! (handshake) say how long they are; a short header (1-RTT) runs to the
//! end of the datagram.
//!
//! ```text
//! Long header (Initial, 0-RTT, Handshake, Retry)
//! +-+-+-+-+-+-+-+-+
//! |1|1|T T|R R|P P|   T = type: 0 Initial · 1 0-RTT · 2 Handshake · 3 Retry
//! +-+-+-+-+-+-+-+-+   P = packet number length − 1 (protected)
//! | Version (32)                                   |
//! | DCID Len (8) | Destination Connection ID (0..160) |
//! | SCID Len (8) | Source Connection ID (0..160)      |
//! | [Initial only: Token Length (i) | Token]          |
//! | Length (i) = packet number + payload              |
//! | Packet Number (8..32, protected) | Payload ...    |
//!
//! Short header (1-RTT)
//! +-+-+-+-+-+-+-+-+
//! |0|1|S|R R|K|P P|   K = key phase (protected)
//! | Destination Connection ID (length known to the receiver) |
//! | Packet Number (8..32, protected) | Payload ...           |
//! ```
//!
//! (i) is a variable-length integer: the top two bits of the first byte
//! say whether it takes 1, 2, 4 or 8 bytes.
//!
//! # Protection (RFC 9001 §5)
//!
//! Every packet is encrypted with an AEAD (nonce = IV XOR packet number,
//! additional data = the header). Then **header protection** hides the
//! packet number and the low bits of the first byte: a 5-byte mask is
//! computed from a 16-byte sample of the ciphertext, starting 4 bytes after
//! the packet number field. To read a packet: unmask, read the packet
//! number, then decrypt.
//!
//! Initial packets use keys anyone can derive from the client's first
//! Destination Connection ID (they protect against tampering, not
//! eavesdroppers); Handshake, 0-RTT and 1-RTT keys come from the TLS 1.3
//! secrets with the labels "quic key", "quic iv" and "quic hp".

use super::tls::{hkdf_expand_label, hkdf_extract, Hash, PacketKey, Suite};
use ring::aead::quic::{HeaderProtectionKey, AES_128, AES_256, CHACHA20};

/// RFC 9001 §5.2: the salt of QUIC v1's Initial secrets.
pub const INITIAL_SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
pub const VERSION_1: u32 = 1;

/// Reads a variable-length integer (RFC 9000 §16) at `*at`, advancing it.
pub fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let first = *bytes.get(*at)?;
    let len = 1usize << (first >> 6);
    let raw = bytes.get(*at..*at + len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &raw[1..] {
        v = (v << 8) | u64::from(*b);
    }
    *at += len;
    Some(v)
}

/// The packet-number space a packet belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    Initial,
    Handshake,
    /// 0-RTT and 1-RTT share the application space.
    Application,
}

/// The kinds of QUIC packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketType {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
    OneRtt,
    VersionNegotiation,
}

impl PacketType {
    pub fn name(self) -> &'static str {
        match self {
            PacketType::Initial => "Initial",
            PacketType::ZeroRtt => "0-RTT",
            PacketType::Handshake => "Handshake",
            PacketType::Retry => "Retry",
            PacketType::OneRtt => "1-RTT",
            PacketType::VersionNegotiation => "VersionNegotiation",
        }
    }

    pub fn space(self) -> Option<Space> {
        match self {
            PacketType::Initial => Some(Space::Initial),
            PacketType::Handshake => Some(Space::Handshake),
            PacketType::ZeroRtt | PacketType::OneRtt => Some(Space::Application),
            _ => None,
        }
    }
}

/// A packet's header as far as it can be read without keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub packet_type: PacketType,
    pub version: u32,
    pub dcid: Vec<u8>,
    pub scid: Vec<u8>,
    /// Where this packet starts within the datagram.
    pub start: usize,
    /// Where the (protected) packet number starts.
    pub pn_offset: usize,
    /// End of this packet within the datagram.
    pub end: usize,
}

/// Splits a datagram into its packets' headers. A short header needs the
/// length of the connection ID its receiver chose (`short_dcid_len`).
pub fn split_datagram(datagram: &[u8], short_dcid_len: usize) -> Vec<Header> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < datagram.len() {
        match parse_header(&datagram[start..], short_dcid_len) {
            Some(mut h) => {
                h.start = start;
                h.pn_offset += start;
                h.end += start;
                start = h.end;
                let stop = matches!(
                    h.packet_type,
                    PacketType::OneRtt | PacketType::Retry | PacketType::VersionNegotiation
                );
                out.push(h);
                if stop {
                    break;
                }
            }
            None => break,
        }
    }
    out
}

fn parse_header(p: &[u8], short_dcid_len: usize) -> Option<Header> {
    let first = *p.first()?;
    if first & 0x80 == 0 {
        // Short header. (The "fixed" bit 0x40 may be greased to 0 when the
        // peer allows it, RFC 9287, so it is not checked.)
        let dcid = p.get(1..1 + short_dcid_len)?.to_vec();
        return Some(Header {
            packet_type: PacketType::OneRtt,
            version: VERSION_1,
            dcid,
            scid: Vec::new(),
            start: 0,
            pn_offset: 1 + short_dcid_len,
            end: p.len(),
        });
    }
    let version = u32::from_be_bytes(p.get(1..5)?.try_into().ok()?);
    let mut at = 5;
    let dcid_len = *p.get(at)? as usize;
    let dcid = p.get(at + 1..at + 1 + dcid_len)?.to_vec();
    at += 1 + dcid_len;
    let scid_len = *p.get(at)? as usize;
    let scid = p.get(at + 1..at + 1 + scid_len)?.to_vec();
    at += 1 + scid_len;
    if version == 0 {
        return Some(Header {
            packet_type: PacketType::VersionNegotiation,
            version,
            dcid,
            scid,
            start: 0,
            pn_offset: at,
            end: p.len(),
        });
    }
    let packet_type = match (first >> 4) & 0x03 {
        0 => PacketType::Initial,
        1 => PacketType::ZeroRtt,
        2 => PacketType::Handshake,
        _ => PacketType::Retry,
    };
    if packet_type == PacketType::Retry {
        return Some(Header {
            packet_type,
            version,
            dcid,
            scid,
            start: 0,
            pn_offset: at,
            end: p.len(),
        });
    }
    if packet_type == PacketType::Initial {
        let token_len = read_varint(p, &mut at)? as usize;
        at = at.checked_add(token_len)?;
    }
    let length = read_varint(p, &mut at)? as usize;
    let end = at.checked_add(length)?;
    if end > p.len() {
        return None;
    }
    Some(Header {
        packet_type,
        version,
        dcid,
        scid,
        start: 0,
        pn_offset: at,
        end,
    })
}

/// One direction's keys for one packet-number space: header protection
/// plus the AEAD.
pub struct Keys {
    hp: HeaderProtectionKey,
    packet: PacketKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "quic::Keys({:?})", self.packet)
    }
}

impl Keys {
    /// Keys from a TLS secret (RFC 9001 §5.1).
    pub fn from_secret(suite: Suite, secret: &[u8]) -> Option<Keys> {
        let key = hkdf_expand_label(suite.hash, secret, b"quic key", suite.key_len());
        let iv = hkdf_expand_label(suite.hash, secret, b"quic iv", 12);
        let hp = hkdf_expand_label(suite.hash, secret, b"quic hp", suite.key_len());
        let hp_alg = match suite.id {
            0x1301 => &AES_128,
            0x1302 => &AES_256,
            0x1303 => &CHACHA20,
            _ => return None,
        };
        Some(Keys {
            hp: HeaderProtectionKey::new(hp_alg, &hp).ok()?,
            packet: PacketKey::new(suite, &key, &iv)?,
        })
    }

    /// The Initial keys of both directions (client's, server's), from the
    /// Destination Connection ID of the client's first Initial.
    pub fn initial(client_dcid: &[u8]) -> Option<(Keys, Keys)> {
        let suite = super::tls::suite(0x1301)?;
        let initial = hkdf_extract(Hash::Sha256, &INITIAL_SALT_V1, client_dcid);
        let client = hkdf_expand_label(Hash::Sha256, &initial, b"client in", 32);
        let server = hkdf_expand_label(Hash::Sha256, &initial, b"server in", 32);
        Some((
            Keys::from_secret(suite, &client)?,
            Keys::from_secret(suite, &server)?,
        ))
    }
}

/// A decrypted packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub packet_number: u64,
    pub payload: Vec<u8>,
}

/// Removes header protection and decrypts one packet of `datagram`.
/// `largest` is the largest packet number seen so far in this space and
/// direction (to expand the truncated packet number).
pub fn open(datagram: &[u8], header: &Header, keys: &Keys, largest: Option<u64>) -> Option<Opened> {
    let packet = datagram.get(..header.end)?;
    let sample_at = header.pn_offset + 4;
    let sample = packet.get(sample_at..sample_at + 16)?;
    let mask = keys.hp.new_mask(sample).ok()?;
    // The header alone (coalesced packets before it are not part of it).
    let pn_at = header.pn_offset.checked_sub(header.start)?;
    let mut head = packet.get(header.start..header.pn_offset + 4)?.to_vec();
    let long = head[0] & 0x80 != 0;
    head[0] ^= mask[0] & if long { 0x0f } else { 0x1f };
    let pn_len = (head[0] & 0x03) as usize + 1;
    let mut truncated = 0u64;
    for i in 0..pn_len {
        head[pn_at + i] ^= mask[1 + i];
        truncated = (truncated << 8) | u64::from(head[pn_at + i]);
    }
    head.truncate(pn_at + pn_len);
    let packet_number = decode_packet_number(largest, truncated, pn_len * 8);
    let ciphertext = datagram.get(header.pn_offset + pn_len..header.end)?;
    let payload = keys
        .packet
        .open(keys.packet.nonce(packet_number), &head, ciphertext)?;
    Some(Opened {
        packet_number,
        payload,
    })
}

/// RFC 9000 Appendix A.3: the full packet number closest to `largest + 1`.
pub fn decode_packet_number(largest: Option<u64>, truncated: u64, bits: usize) -> u64 {
    let expected = largest.map_or(0, |l| l + 1);
    let win = 1u64 << bits;
    let hwin = win / 2;
    let mask = win - 1;
    let candidate = (expected & !mask) | truncated;
    if candidate + hwin <= expected && candidate < (1u64 << 62) - win {
        candidate + win
    } else if candidate > expected + hwin && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}

/// One frame, decoded far enough to name it and show its key fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Padding {
        count: usize,
    },
    Ping,
    Ack {
        largest: u64,
        delay: u64,
        ranges: Vec<(u64, u64)>,
        ecn: bool,
    },
    ResetStream {
        id: u64,
        error: u64,
    },
    StopSending {
        id: u64,
        error: u64,
    },
    Crypto {
        offset: u64,
        data: Vec<u8>,
    },
    NewToken {
        len: usize,
    },
    /// `kind` is the type byte 0x08..=0x0f: its low bits say whether an
    /// offset (0x04) and a length (0x02) are present, and FIN (0x01).
    Stream {
        kind: u64,
        id: u64,
        offset: u64,
        fin: bool,
        data: Vec<u8>,
    },
    MaxData(u64),
    MaxStreamData {
        id: u64,
        max: u64,
    },
    MaxStreams {
        bidi: bool,
        max: u64,
    },
    DataBlocked(u64),
    StreamDataBlocked {
        id: u64,
    },
    StreamsBlocked {
        bidi: bool,
    },
    NewConnectionId {
        seq: u64,
        retire_prior_to: u64,
    },
    RetireConnectionId {
        seq: u64,
    },
    PathChallenge,
    PathResponse,
    ConnectionClose {
        error: u64,
        application: bool,
        reason: String,
    },
    HandshakeDone,
    /// `kind` 0x30 runs to the end of the packet, 0x31 has a length.
    Datagram {
        kind: u64,
        data: Vec<u8>,
    },
    /// A frame type proto does not know: the rest of the packet is skipped.
    Unknown(u64),
}

impl Frame {
    /// The frame type number (as tshark's `quic.frame_type` shows it).
    pub fn type_code(&self) -> u64 {
        match self {
            Frame::Padding { .. } => 0x00,
            Frame::Ping => 0x01,
            Frame::Ack { ecn, .. } => 0x02 + u64::from(*ecn),
            Frame::ResetStream { .. } => 0x04,
            Frame::StopSending { .. } => 0x05,
            Frame::Crypto { .. } => 0x06,
            Frame::NewToken { .. } => 0x07,
            Frame::Stream { kind, .. } => *kind,
            Frame::MaxData(_) => 0x10,
            Frame::MaxStreamData { .. } => 0x11,
            Frame::MaxStreams { bidi, .. } => 0x12 + u64::from(!*bidi),
            Frame::DataBlocked(_) => 0x14,
            Frame::StreamDataBlocked { .. } => 0x15,
            Frame::StreamsBlocked { bidi } => 0x16 + u64::from(!*bidi),
            Frame::NewConnectionId { .. } => 0x18,
            Frame::RetireConnectionId { .. } => 0x19,
            Frame::PathChallenge => 0x1a,
            Frame::PathResponse => 0x1b,
            Frame::ConnectionClose { application, .. } => 0x1c + u64::from(*application),
            Frame::HandshakeDone => 0x1e,
            Frame::Datagram { kind, .. } => *kind,
            Frame::Unknown(t) => *t,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Frame::Padding { .. } => "PADDING",
            Frame::Ping => "PING",
            Frame::Ack { .. } => "ACK",
            Frame::ResetStream { .. } => "RESET_STREAM",
            Frame::StopSending { .. } => "STOP_SENDING",
            Frame::Crypto { .. } => "CRYPTO",
            Frame::NewToken { .. } => "NEW_TOKEN",
            Frame::Stream { .. } => "STREAM",
            Frame::MaxData(_) => "MAX_DATA",
            Frame::MaxStreamData { .. } => "MAX_STREAM_DATA",
            Frame::MaxStreams { .. } => "MAX_STREAMS",
            Frame::DataBlocked(_) => "DATA_BLOCKED",
            Frame::StreamDataBlocked { .. } => "STREAM_DATA_BLOCKED",
            Frame::StreamsBlocked { .. } => "STREAMS_BLOCKED",
            Frame::NewConnectionId { .. } => "NEW_CONNECTION_ID",
            Frame::RetireConnectionId { .. } => "RETIRE_CONNECTION_ID",
            Frame::PathChallenge => "PATH_CHALLENGE",
            Frame::PathResponse => "PATH_RESPONSE",
            Frame::ConnectionClose { .. } => "CONNECTION_CLOSE",
            Frame::HandshakeDone => "HANDSHAKE_DONE",
            Frame::Datagram { .. } => "DATAGRAM",
            Frame::Unknown(_) => "unknown frame",
        }
    }
}

/// Parses every frame of a decrypted payload (RFC 9000 §19).
pub fn parse_frames(payload: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        match parse_frame(payload, &mut at) {
            Some(Frame::Padding { count }) => match out.last_mut() {
                Some(Frame::Padding { count: c }) => *c += count,
                _ => out.push(Frame::Padding { count }),
            },
            Some(f @ Frame::Unknown(_)) => {
                out.push(f);
                break;
            }
            Some(f) => out.push(f),
            None => {
                out.push(Frame::Unknown(u64::from(
                    payload[at.min(payload.len() - 1)],
                )));
                break;
            }
        }
    }
    out
}

fn parse_frame(p: &[u8], at: &mut usize) -> Option<Frame> {
    let start = *at;
    let kind = read_varint(p, at)?;
    let mut v = || read_varint(p, at);
    let frame = match kind {
        0x00 => {
            let mut count = 1;
            while p.get(*at) == Some(&0) {
                *at += 1;
                count += 1;
            }
            Frame::Padding { count }
        }
        0x01 => Frame::Ping,
        0x02 | 0x03 => {
            let largest = v()?;
            let delay = v()?;
            let range_count = v()?;
            let first = v()?;
            let mut ranges = vec![(largest.saturating_sub(first), largest)];
            let mut smallest = largest.saturating_sub(first);
            for _ in 0..range_count.min(256) {
                let gap = read_varint(p, at)?;
                let len = read_varint(p, at)?;
                let high = smallest.checked_sub(gap + 2)?;
                ranges.push((high.saturating_sub(len), high));
                smallest = high.saturating_sub(len);
            }
            if kind == 0x03 {
                for _ in 0..3 {
                    read_varint(p, at)?;
                }
            }
            Frame::Ack {
                largest,
                delay,
                ranges,
                ecn: kind == 0x03,
            }
        }
        0x04 => {
            let id = v()?;
            let error = v()?;
            v()?;
            Frame::ResetStream { id, error }
        }
        0x05 => {
            let id = v()?;
            let error = v()?;
            Frame::StopSending { id, error }
        }
        0x06 => {
            let offset = v()?;
            let len = v()? as usize;
            let data = p.get(*at..at.checked_add(len)?)?.to_vec();
            *at += len;
            Frame::Crypto { offset, data }
        }
        0x07 => {
            let len = v()? as usize;
            p.get(*at..at.checked_add(len)?)?;
            *at += len;
            Frame::NewToken { len }
        }
        0x08..=0x0f => {
            let id = v()?;
            let offset = if kind & 0x04 != 0 { v()? } else { 0 };
            let len = if kind & 0x02 != 0 {
                v()? as usize
            } else {
                p.len().checked_sub(*at)?
            };
            let data = p.get(*at..at.checked_add(len)?)?.to_vec();
            *at += len;
            Frame::Stream {
                kind,
                id,
                offset,
                fin: kind & 0x01 != 0,
                data,
            }
        }
        0x10 => Frame::MaxData(v()?),
        0x11 => {
            let id = v()?;
            let max = v()?;
            Frame::MaxStreamData { id, max }
        }
        0x12 | 0x13 => Frame::MaxStreams {
            bidi: kind == 0x12,
            max: v()?,
        },
        0x14 => Frame::DataBlocked(v()?),
        0x15 => {
            let id = v()?;
            v()?;
            Frame::StreamDataBlocked { id }
        }
        0x16 | 0x17 => {
            v()?;
            Frame::StreamsBlocked { bidi: kind == 0x16 }
        }
        0x18 => {
            let seq = v()?;
            let retire_prior_to = v()?;
            let len = *p.get(*at)? as usize;
            p.get(*at + 1..*at + 1 + len + 16)?;
            *at += 1 + len + 16;
            Frame::NewConnectionId {
                seq,
                retire_prior_to,
            }
        }
        0x19 => Frame::RetireConnectionId { seq: v()? },
        0x1a | 0x1b => {
            p.get(*at..*at + 8)?;
            *at += 8;
            if kind == 0x1a {
                Frame::PathChallenge
            } else {
                Frame::PathResponse
            }
        }
        0x1c | 0x1d => {
            let error = v()?;
            if kind == 0x1c {
                v()?; // the frame type that caused it
            }
            let len = read_varint(p, at)? as usize;
            let reason = p.get(*at..at.checked_add(len)?)?;
            *at += len;
            Frame::ConnectionClose {
                error,
                application: kind == 0x1d,
                reason: String::from_utf8_lossy(reason).into_owned(),
            }
        }
        0x1e => Frame::HandshakeDone,
        0x30 | 0x31 => {
            let len = if kind == 0x31 {
                v()? as usize
            } else {
                p.len().checked_sub(*at)?
            };
            let data = p.get(*at..at.checked_add(len)?)?.to_vec();
            *at += len;
            Frame::Datagram { kind, data }
        }
        other => {
            *at = p.len();
            let _ = start;
            Frame::Unknown(other)
        }
    };
    Some(frame)
}

/// Reassembles one CRYPTO stream (per space and direction) from frames
/// that may arrive out of order or twice.
#[derive(Debug, Default)]
pub struct CryptoStream {
    next: u64,
    pending: std::collections::BTreeMap<u64, Vec<u8>>,
}

/// Largest gap of CRYPTO data kept waiting.
const MAX_CRYPTO_PENDING: usize = 1 << 20;

impl CryptoStream {
    /// Adds a frame's data; returns the bytes now contiguous.
    pub fn push(&mut self, offset: u64, data: &[u8]) -> Vec<u8> {
        let held: usize = self.pending.values().map(Vec::len).sum();
        if held + data.len() <= MAX_CRYPTO_PENDING {
            self.pending.insert(offset, data.to_vec());
        }
        let mut out = Vec::new();
        while let Some((&off, _)) = self.pending.iter().next() {
            if off > self.next {
                break;
            }
            let Some(data) = self.pending.remove(&off) else {
                break;
            };
            let end = off + data.len() as u64;
            if end > self.next {
                out.extend_from_slice(&data[(self.next - off) as usize..]);
                self.next = end;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex::parse as hex;

    #[test]
    fn varints_of_every_length() {
        // RFC 9000 §A.1 examples.
        for (bytes, value) in [
            ("c2197c5eff14e88c", 151_288_809_941_952_652u64),
            ("9d7f3e7d", 494_878_333),
            ("7bbd", 15_293),
            ("25", 37),
        ] {
            let b = hex(bytes).unwrap();
            let mut at = 0;
            assert_eq!(read_varint(&b, &mut at), Some(value));
            assert_eq!(at, b.len());
        }
        assert_eq!(read_varint(&[0x40], &mut 0), None);
    }

    #[test]
    fn packet_numbers_expand_around_the_largest() {
        // RFC 9000 §A.3 example.
        assert_eq!(
            decode_packet_number(Some(0xa82f30ea), 0x9b32, 16),
            0xa82f9b32
        );
        assert_eq!(decode_packet_number(None, 0, 8), 0);
    }

    /// RFC 9001 Appendix A.1/A.2: the client's Initial keys from DCID
    /// 8394c8f03e515708, and the header-protection mask of its first packet.
    #[test]
    fn rfc9001_client_initial_keys() {
        let dcid = hex("8394c8f03e515708").unwrap();
        let initial = hkdf_extract(Hash::Sha256, &INITIAL_SALT_V1, &dcid);
        let client = hkdf_expand_label(Hash::Sha256, &initial, b"client in", 32);
        assert_eq!(
            hkdf_expand_label(Hash::Sha256, &client, b"quic key", 16),
            hex("1f369613dd76d5467730efcbe3b1a22d").unwrap()
        );
        assert_eq!(
            hkdf_expand_label(Hash::Sha256, &client, b"quic iv", 12),
            hex("fa044b2f42a3fd3b46fb255c").unwrap()
        );
        assert_eq!(
            hkdf_expand_label(Hash::Sha256, &client, b"quic hp", 16),
            hex("9f50449e04a0e810283a1e9933adedd2").unwrap()
        );
        let (keys, _) = Keys::initial(&dcid).unwrap();
        let mask = keys
            .hp
            .new_mask(&hex("d1b1c98dd7689fb8ec11d242b123dc9b").unwrap())
            .unwrap();
        assert_eq!(mask.to_vec(), hex("437b9aec36").unwrap());
    }

    /// Seal a packet the way a sender does, then read it back with [`open`].
    #[test]
    fn a_protected_initial_opens() {
        let dcid = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let (client, _) = Keys::initial(&dcid).unwrap();
        let pn: u64 = 7;
        let mut payload = vec![0x06, 0x00, 0x02, 0x01, 0x02]; // CRYPTO off 0 len 2
        payload.resize(60, 0); // PADDING
        let length = 1 + payload.len() + 16; // pn + payload + tag
        let mut header = vec![0xc0, 0, 0, 0, 1, 8];
        header.extend_from_slice(&dcid);
        header.push(0); // empty SCID
        header.push(0); // no token
        header.extend_from_slice(&[0x40 | (length >> 8) as u8, length as u8]);
        let pn_offset = header.len();
        header.push(pn as u8);
        let key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &{
                let initial = hkdf_extract(Hash::Sha256, &INITIAL_SALT_V1, &dcid);
                let secret = hkdf_expand_label(Hash::Sha256, &initial, b"client in", 32);
                hkdf_expand_label(Hash::Sha256, &secret, b"quic key", 16)
            })
            .unwrap(),
        );
        let mut body = payload.clone();
        key.seal_in_place_append_tag(
            ring::aead::Nonce::assume_unique_for_key(client.packet.nonce(pn)),
            ring::aead::Aad::from(&header),
            &mut body,
        )
        .unwrap();
        let mut packet = header.clone();
        packet.extend_from_slice(&body);
        let mask = client
            .hp
            .new_mask(&packet[pn_offset + 4..pn_offset + 20])
            .unwrap();
        packet[0] ^= mask[0] & 0x0f;
        packet[pn_offset] ^= mask[1];
        let headers = split_datagram(&packet, 0);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].packet_type, PacketType::Initial);
        let opened = open(&packet, &headers[0], &client, None).unwrap();
        assert_eq!(opened.packet_number, pn);
        assert_eq!(opened.payload, payload);
        let frames = parse_frames(&opened.payload);
        assert_eq!(
            frames[0],
            Frame::Crypto {
                offset: 0,
                data: vec![1, 2]
            }
        );
        // The other direction's keys do not open it.
        let (_, server) = Keys::initial(&dcid).unwrap();
        assert!(open(&packet, &headers[0], &server, None).is_none());
    }

    #[test]
    fn frames_by_name() {
        // ACK 5 (range 3..=5), STREAM id 0 off 0 len 2 "hi" with FIN, HANDSHAKE_DONE.
        let payload = [0x02, 5, 0, 0, 2, 0x0b, 0, 2, b'h', b'i', 0x1e, 0, 0];
        let frames = parse_frames(&payload);
        let names: Vec<&str> = frames.iter().map(Frame::name).collect();
        assert_eq!(names, ["ACK", "STREAM", "HANDSHAKE_DONE", "PADDING"]);
        assert_eq!(
            frames[1],
            Frame::Stream {
                kind: 0x0b,
                id: 0,
                offset: 0,
                fin: true,
                data: b"hi".to_vec()
            }
        );
        assert!(matches!(&frames[0], Frame::Ack { ranges, .. } if ranges == &vec![(3, 5)]));
    }

    #[test]
    fn crypto_stream_reorders() {
        let mut s = CryptoStream::default();
        assert!(s.push(3, b"def").is_empty());
        assert_eq!(s.push(0, b"abc"), b"abcdef");
        assert!(s.push(0, b"abc").is_empty());
    }
}
