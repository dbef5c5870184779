//! SCTP packets (RFC 9260), sans-IO: the common header, the chunks, and the
//! few chunk bodies proto needs to look inside (INIT/INIT-ACK, DATA, SACK).
//!
//! proto runs SCTP in userspace, encapsulated in UDP (RFC 6951, UDP port
//! [`UDP_ENCAPS_PORT`] = 9899), as WebRTC data channels and usrsctp do: the
//! UDP payload *is* the SCTP packet below, byte for byte. Nothing here
//! touches a socket or a clock; `proto trace` can reuse it to name chunks.
//!
//! # The common header (RFC 9260 §3.1)
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Source Port Number        |     Destination Port Number   |  0..4
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Verification Tag                         |  4..8
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           Checksum                            |  8..12
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Chunk #1 … Chunk #n                      ...  12..
//! ```
//!
//! * The **verification tag** is the receiver's own random tag, learnt in
//!   the handshake: a packet with the wrong tag is dropped, so a blind
//!   attacker cannot inject into an association. Only a packet carrying an
//!   INIT uses tag 0 (the sender knows no tag yet).
//! * The **checksum** is CRC32c (Castagnoli) over the whole packet with the
//!   checksum field set to zero. It is the one SCTP field that is *not*
//!   big-endian: RFC 9260 Appendix A stores the CRC's bytes least
//!   significant first ("little-endian") at bytes 8..12.
//!
//! # A chunk (RFC 9260 §3.2)
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Chunk Type  | Chunk  Flags  |        Chunk Length           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! \                          Chunk Value                          \
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The length counts the 4 header bytes and the value, not the padding
//! that follows to the next multiple of 4. Several chunks may share one
//! packet ("bundling"): that is how DATA can ride with COOKIE-ECHO.

use std::fmt;

/// UDP port for SCTP encapsulation (RFC 6951 §5.1, IANA "sctp-tunneling").
pub const UDP_ENCAPS_PORT: u16 = 9899;
/// The SCTP port of the echo service inside the UDP encapsulation (the
/// classic echo port, RFC 862; usrsctp's `echo_server` listens there too).
pub const ECHO_SCTP_PORT: u16 = 7;
/// Size of the common header.
pub const COMMON_HEADER_LEN: usize = 12;
/// Size of a chunk header (type, flags, length).
pub const CHUNK_HEADER_LEN: usize = 4;

/// Byte ranges of the common header, as in the diagram above.
pub mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const VERIFICATION_TAG: Range<usize> = 4..8;
    /// CRC32c, stored least significant byte first.
    pub const CHECKSUM: Range<usize> = 8..12;
}

/// A chunk type (an open newtype: unknown types are representable, since
/// RFC 9260 §3.2 tells a receiver what to do with them by their top bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkType(pub u8);

impl ChunkType {
    pub const DATA: ChunkType = ChunkType(0);
    pub const INIT: ChunkType = ChunkType(1);
    pub const INIT_ACK: ChunkType = ChunkType(2);
    pub const SACK: ChunkType = ChunkType(3);
    pub const HEARTBEAT: ChunkType = ChunkType(4);
    pub const HEARTBEAT_ACK: ChunkType = ChunkType(5);
    pub const ABORT: ChunkType = ChunkType(6);
    pub const SHUTDOWN: ChunkType = ChunkType(7);
    pub const SHUTDOWN_ACK: ChunkType = ChunkType(8);
    pub const ERROR: ChunkType = ChunkType(9);
    pub const COOKIE_ECHO: ChunkType = ChunkType(10);
    pub const COOKIE_ACK: ChunkType = ChunkType(11);
    pub const SHUTDOWN_COMPLETE: ChunkType = ChunkType(14);
    /// RFC 4895: authenticated chunks.
    pub const AUTH: ChunkType = ChunkType(15);
    /// RFC 8260: interleaved data.
    pub const I_DATA: ChunkType = ChunkType(64);
    /// RFC 5061: dynamic address reconfiguration.
    pub const ASCONF_ACK: ChunkType = ChunkType(0x80);
    /// RFC 6525: stream reset.
    pub const RE_CONFIG: ChunkType = ChunkType(130);
    /// RFC 4820: padding (path MTU probes).
    pub const PAD: ChunkType = ChunkType(132);
    /// RFC 3758: partial reliability.
    pub const FORWARD_TSN: ChunkType = ChunkType(192);
    pub const ASCONF: ChunkType = ChunkType(0xC1);
    pub const I_FORWARD_TSN: ChunkType = ChunkType(194);

    /// The name Wireshark and the RFCs use.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "DATA",
            1 => "INIT",
            2 => "INIT_ACK",
            3 => "SACK",
            4 => "HEARTBEAT",
            5 => "HEARTBEAT_ACK",
            6 => "ABORT",
            7 => "SHUTDOWN",
            8 => "SHUTDOWN_ACK",
            9 => "ERROR",
            10 => "COOKIE_ECHO",
            11 => "COOKIE_ACK",
            12 => "ECNE",
            13 => "CWR",
            14 => "SHUTDOWN_COMPLETE",
            15 => "AUTH",
            64 => "I_DATA",
            0x80 => "ASCONF_ACK",
            130 => "RE_CONFIG",
            132 => "PAD",
            192 => "FORWARD_TSN",
            0xC1 => "ASCONF",
            194 => "I_FORWARD_TSN",
            _ => "UNKNOWN",
        }
    }
}

impl fmt::Display for ChunkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            "UNKNOWN" => write!(f, "UNKNOWN({})", self.0),
            name => f.write_str(name),
        }
    }
}

/// Parameter types of INIT / INIT-ACK (RFC 9260 §3.3.2, and extensions).
pub mod param {
    pub const IPV4_ADDRESS: u16 = 5;
    pub const IPV6_ADDRESS: u16 = 6;
    /// Only in INIT-ACK: the opaque cookie the client must echo back.
    pub const STATE_COOKIE: u16 = 7;
    pub const UNRECOGNIZED: u16 = 8;
    pub const COOKIE_PRESERVATIVE: u16 = 9;
    pub const HOST_NAME: u16 = 11;
    pub const SUPPORTED_ADDRESS_TYPES: u16 = 12;
    pub const ECN_CAPABLE: u16 = 0x8000;
    pub const RANDOM: u16 = 0x8002;
    pub const CHUNK_LIST: u16 = 0x8003;
    pub const HMAC_ALGORITHMS: u16 = 0x8004;
    pub const SUPPORTED_EXTENSIONS: u16 = 0x8008;
    pub const FORWARD_TSN_SUPPORTED: u16 = 0xC000;
    pub const ADAPTATION_LAYER: u16 = 0xC006;

    /// A short name for a parameter type.
    pub fn name(kind: u16) -> &'static str {
        match kind {
            IPV4_ADDRESS => "IPv4 address",
            IPV6_ADDRESS => "IPv6 address",
            STATE_COOKIE => "State Cookie",
            UNRECOGNIZED => "Unrecognized Parameter",
            COOKIE_PRESERVATIVE => "Cookie Preservative",
            HOST_NAME => "Host Name",
            SUPPORTED_ADDRESS_TYPES => "Supported Address Types",
            ECN_CAPABLE => "ECN capable",
            RANDOM => "Random (AUTH)",
            CHUNK_LIST => "Chunk List (AUTH)",
            HMAC_ALGORITHMS => "HMAC algorithms (AUTH)",
            SUPPORTED_EXTENSIONS => "Supported Extensions",
            FORWARD_TSN_SUPPORTED => "Forward-TSN supported",
            ADAPTATION_LAYER => "Adaptation Layer Indication",
            _ => "unknown parameter",
        }
    }
}

/// Error causes (RFC 9260 §3.3.10) proto sends or looks for.
pub mod cause {
    /// "Stale Cookie Error": the cookie was valid but too old.
    pub const STALE_COOKIE: u16 = 3;
    /// "User Initiated Abort".
    pub const USER_INITIATED_ABORT: u16 = 12;
    /// "Protocol Violation".
    pub const PROTOCOL_VIOLATION: u16 = 13;
}

/// Why bytes are not an SCTP packet; each names the bytes at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SctpError {
    #[error("{len} bytes is shorter than SCTP's 12-byte common header")]
    TooShort { len: usize },
    #[error("checksum mismatch: bytes 8..12 say 0x{stored:08X}, CRC32c of the packet is 0x{computed:08X}")]
    BadChecksum { stored: u32, computed: u32 },
    #[error(
        "chunk at byte {offset} is cut off: {available} bytes left, fewer than a chunk header"
    )]
    TruncatedChunkHeader { offset: usize, available: usize },
    #[error("chunk at byte {offset} has length {length}, less than its own 4-byte header")]
    ChunkLengthTooSmall { offset: usize, length: u16 },
    #[error("chunk at byte {offset} claims {length} bytes, only {available} present")]
    ChunkTooLong {
        offset: usize,
        length: u16,
        available: usize,
    },
    #[error("the packet has no chunk")]
    NoChunks,
    #[error("{kind} chunk value is {len} bytes, shorter than its {needed}-byte fixed part")]
    ChunkBodyTooShort {
        kind: ChunkType,
        len: usize,
        needed: usize,
    },
    #[error("parameter at byte {offset} of the {kind} value has a bad length {length}")]
    BadParameter {
        kind: ChunkType,
        offset: usize,
        length: u16,
    },
}

/// CRC32c (Castagnoli, the iSCSI polynomial), as SCTP uses it.
pub fn crc32c(bytes: &[u8]) -> u32 {
    const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    CASTAGNOLI.checksum(bytes)
}

/// The checksum a packet should carry: CRC32c with bytes 8..12 taken as zero.
pub fn packet_checksum(packet: &[u8]) -> u32 {
    const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let mut digest = CASTAGNOLI.digest();
    digest.update(&packet[..field::CHECKSUM.start]);
    digest.update(&[0u8; 4]);
    digest.update(&packet[field::CHECKSUM.end..]);
    digest.finalize()
}

/// Writes the right checksum into bytes 8..12 (little-endian, see above).
pub fn fill_checksum(packet: &mut [u8]) {
    let crc = packet_checksum(packet);
    packet[field::CHECKSUM].copy_from_slice(&crc.to_le_bytes());
}

/// The common header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeader {
    pub src_port: u16,
    pub dst_port: u16,
    pub verification_tag: u32,
    /// As stored (the CRC32c value, read little-endian).
    pub checksum: u32,
}

/// One chunk, borrowed from the packet: its value excludes the 4-byte
/// header and the padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub kind: ChunkType,
    pub flags: u8,
    pub value: &'a [u8],
    /// Where the chunk starts in the packet (for error messages and dumps).
    pub offset: usize,
}

/// A parsed packet: the common header and its chunks, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: CommonHeader,
    pub chunks: Vec<Chunk<'a>>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Rounds up to the next multiple of 4 (chunks and parameters are padded).
pub fn padded(len: usize) -> usize {
    (len + 3) & !3
}

impl<'a> Packet<'a> {
    /// Parses and checks a packet from the network: length, checksum, and
    /// that every chunk fits. Never panics, whatever the bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Packet<'a>, SctpError> {
        let packet = Packet::parse_unchecked(bytes)?;
        let computed = packet_checksum(bytes);
        if computed != packet.header.checksum {
            return Err(SctpError::BadChecksum {
                stored: packet.header.checksum,
                computed,
            });
        }
        Ok(packet)
    }

    /// Like [`Packet::parse`] without verifying the checksum (for a trace
    /// that wants to show a packet with a bad checksum anyway).
    pub fn parse_unchecked(bytes: &'a [u8]) -> Result<Packet<'a>, SctpError> {
        if bytes.len() < COMMON_HEADER_LEN {
            return Err(SctpError::TooShort { len: bytes.len() });
        }
        let header = CommonHeader {
            src_port: be16(bytes, field::SRC_PORT.start),
            dst_port: be16(bytes, field::DST_PORT.start),
            verification_tag: be32(bytes, field::VERIFICATION_TAG.start),
            checksum: u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        };
        let mut chunks = Vec::new();
        let mut offset = COMMON_HEADER_LEN;
        while offset < bytes.len() {
            let available = bytes.len() - offset;
            if available < CHUNK_HEADER_LEN {
                return Err(SctpError::TruncatedChunkHeader { offset, available });
            }
            let length = be16(bytes, offset + 2);
            if (length as usize) < CHUNK_HEADER_LEN {
                return Err(SctpError::ChunkLengthTooSmall { offset, length });
            }
            if length as usize > available {
                return Err(SctpError::ChunkTooLong {
                    offset,
                    length,
                    available,
                });
            }
            chunks.push(Chunk {
                kind: ChunkType(bytes[offset]),
                flags: bytes[offset + 1],
                value: &bytes[offset + CHUNK_HEADER_LEN..offset + length as usize],
                offset,
            });
            // The last chunk's padding may be missing (RFC 9260 §3.2 lets a
            // receiver accept that); elsewhere padding is skipped.
            offset = (offset + padded(length as usize)).min(bytes.len());
        }
        if chunks.is_empty() {
            return Err(SctpError::NoChunks);
        }
        Ok(Packet { header, chunks })
    }

    /// The first chunk (a parsed packet always has one).
    pub fn first(&self) -> &Chunk<'a> {
        &self.chunks[0]
    }

    /// The first chunk of this type, if any.
    pub fn find(&self, kind: ChunkType) -> Option<&Chunk<'a>> {
        self.chunks.iter().find(|c| c.kind == kind)
    }
}

/// A chunk to encode: type, flags and value (without header or padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedChunk {
    pub kind: ChunkType,
    pub flags: u8,
    pub value: Vec<u8>,
}

impl OwnedChunk {
    pub fn new(kind: ChunkType, flags: u8, value: Vec<u8>) -> OwnedChunk {
        OwnedChunk { kind, flags, value }
    }

    /// A copy of a borrowed chunk.
    pub fn from_chunk(chunk: &Chunk<'_>) -> OwnedChunk {
        OwnedChunk::new(chunk.kind, chunk.flags, chunk.value.to_vec())
    }

    /// Bytes on the wire, header and padding included.
    pub fn wire_len(&self) -> usize {
        padded(CHUNK_HEADER_LEN + self.value.len())
    }
}

/// Encodes a packet: common header, each chunk padded to 4 bytes, and the
/// CRC32c filled in. Chunk values over 65 531 bytes cannot be encoded
/// (the length field has 16 bits); callers never build such chunks.
pub fn encode(
    src_port: u16,
    dst_port: u16,
    verification_tag: u32,
    chunks: &[OwnedChunk],
) -> Vec<u8> {
    let total = COMMON_HEADER_LEN + chunks.iter().map(OwnedChunk::wire_len).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&src_port.to_be_bytes());
    out.extend_from_slice(&dst_port.to_be_bytes());
    out.extend_from_slice(&verification_tag.to_be_bytes());
    out.extend_from_slice(&[0u8; 4]);
    for chunk in chunks {
        let length = (CHUNK_HEADER_LEN + chunk.value.len()).min(u16::MAX as usize) as u16;
        out.push(chunk.kind.0);
        out.push(chunk.flags);
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&chunk.value);
        out.resize(padded(out.len()), 0);
    }
    fill_checksum(&mut out);
    out
}

/// A parameter (type-length-value) inside an INIT or INIT-ACK, or an
/// error cause inside ERROR / ABORT (same layout).
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |        Parameter Type         |       Parameter Length        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// \                       Parameter Value                         \
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub kind: u16,
    pub value: &'a [u8],
}

/// Splits TLVs (parameters or error causes); `kind` names the chunk in errors.
pub fn parse_params(kind: ChunkType, bytes: &[u8]) -> Result<Vec<Param<'_>>, SctpError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset + 4 <= bytes.len() {
        let length = be16(bytes, offset + 2);
        if (length as usize) < 4 || offset + length as usize > bytes.len() {
            return Err(SctpError::BadParameter {
                kind,
                offset,
                length,
            });
        }
        out.push(Param {
            kind: be16(bytes, offset),
            value: &bytes[offset + 4..offset + length as usize],
        });
        offset += padded(length as usize);
    }
    Ok(out)
}

/// Appends one TLV, padded to 4 bytes.
pub fn push_param(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((4 + value.len()).min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(padded(out.len()), 0);
}

/// INIT and INIT-ACK (RFC 9260 §3.3.2 and §3.3.3): the same fixed part.
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Type = 1/2  |  Chunk Flags  |      Chunk Length             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         Initiate Tag                          |  value 0..4
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           Advertised Receiver Window Credit (a_rwnd)          |  value 4..8
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Number of Outbound Streams   |   Number of Inbound Streams   |  value 8..12
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                          Initial TSN                          |  value 12..16
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// \              Optional/Variable-Length Parameters              \
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// The **Initiate Tag** is the tag the sender wants to see in every packet
/// it receives from now on; the INIT-ACK also carries the State Cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init<'a> {
    pub initiate_tag: u32,
    pub a_rwnd: u32,
    pub outbound_streams: u16,
    pub inbound_streams: u16,
    pub initial_tsn: u32,
    pub params: Vec<Param<'a>>,
}

/// Size of the fixed part of an INIT value.
pub const INIT_FIXED_LEN: usize = 16;

impl<'a> Init<'a> {
    pub fn parse(chunk: &Chunk<'a>) -> Result<Init<'a>, SctpError> {
        let v = chunk.fixed_part(INIT_FIXED_LEN)?;
        Ok(Init {
            initiate_tag: be32(v, 0),
            a_rwnd: be32(v, 4),
            outbound_streams: be16(v, 8),
            inbound_streams: be16(v, 10),
            initial_tsn: be32(v, 12),
            params: parse_params(chunk.kind, &v[INIT_FIXED_LEN..])?,
        })
    }

    /// The value of the first parameter of this type.
    pub fn param(&self, kind: u16) -> Option<&'a [u8]> {
        self.params.iter().find(|p| p.kind == kind).map(|p| p.value)
    }

    /// The fixed part followed by `params`, as a chunk value.
    pub fn encode_value(&self, params: &[Param<'_>]) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&self.initiate_tag.to_be_bytes());
        v.extend_from_slice(&self.a_rwnd.to_be_bytes());
        v.extend_from_slice(&self.outbound_streams.to_be_bytes());
        v.extend_from_slice(&self.inbound_streams.to_be_bytes());
        v.extend_from_slice(&self.initial_tsn.to_be_bytes());
        for p in params {
            push_param(&mut v, p.kind, p.value);
        }
        v
    }

    /// The addresses the sender listed (multi-homing: RFC 9260 §5.1.2).
    pub fn addresses(&self) -> Vec<std::net::IpAddr> {
        self.params
            .iter()
            .filter_map(|p| match (p.kind, p.value.len()) {
                (param::IPV4_ADDRESS, 4) => {
                    let b: [u8; 4] = p.value.try_into().ok()?;
                    Some(std::net::IpAddr::from(b))
                }
                (param::IPV6_ADDRESS, 16) => {
                    let b: [u8; 16] = p.value.try_into().ok()?;
                    Some(std::net::IpAddr::from(b))
                }
                _ => None,
            })
            .collect()
    }
}

/// DATA (RFC 9260 §3.3.1): one fragment of one user message.
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Type = 0    |  Res  |I|U|B|E|           Length              |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                              TSN                              |  value 0..4
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |      Stream Identifier S      |   Stream Sequence Number n    |  value 4..8
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                  Payload Protocol Identifier                  |  value 8..12
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// \                 User Data (seq n of Stream S)                 \
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// B and E mark the first and last fragment of a message: that is how SCTP
/// keeps message boundaries. U (unordered) lets the receiver deliver the
/// message at once, ignoring the stream sequence number. The TSN orders
/// the whole association (for acknowledgement); the SSN orders one stream
/// (for delivery), which is why a loss stalls only its own stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    pub tsn: u32,
    pub stream_id: u16,
    pub ssn: u16,
    pub ppid: u32,
    pub unordered: bool,
    pub beginning: bool,
    pub ending: bool,
    pub user_data: &'a [u8],
}

impl<'a> Data<'a> {
    pub const FLAG_END: u8 = 0x01;
    pub const FLAG_BEGIN: u8 = 0x02;
    pub const FLAG_UNORDERED: u8 = 0x04;

    pub fn parse(chunk: &Chunk<'a>) -> Result<Data<'a>, SctpError> {
        let v = chunk.fixed_part(12)?;
        Ok(Data {
            tsn: be32(v, 0),
            stream_id: be16(v, 4),
            ssn: be16(v, 6),
            ppid: be32(v, 8),
            unordered: chunk.flags & Self::FLAG_UNORDERED != 0,
            beginning: chunk.flags & Self::FLAG_BEGIN != 0,
            ending: chunk.flags & Self::FLAG_END != 0,
            user_data: &v[12..],
        })
    }
}

/// SACK (RFC 9260 §3.3.4): the cumulative TSN acknowledged, the receive
/// window, and how many gap blocks (TSNs received beyond a hole) and
/// duplicates follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sack {
    pub cumulative_tsn_ack: u32,
    pub a_rwnd: u32,
    pub gap_blocks: u16,
    pub duplicate_tsns: u16,
}

impl Sack {
    pub fn parse(chunk: &Chunk<'_>) -> Result<Sack, SctpError> {
        let v = chunk.fixed_part(12)?;
        Ok(Sack {
            cumulative_tsn_ack: be32(v, 0),
            a_rwnd: be32(v, 4),
            gap_blocks: be16(v, 8),
            duplicate_tsns: be16(v, 10),
        })
    }
}

impl<'a> Chunk<'a> {
    /// The value, checked to hold at least the chunk type's fixed part.
    fn fixed_part(&self, needed: usize) -> Result<&'a [u8], SctpError> {
        if self.value.len() < needed {
            return Err(SctpError::ChunkBodyTooShort {
                kind: self.kind,
                len: self.value.len(),
                needed,
            });
        }
        Ok(self.value)
    }

    /// One line for a trace or a log: the name and the fields that matter.
    pub fn summary(&self) -> String {
        match self.kind {
            ChunkType::INIT | ChunkType::INIT_ACK => match Init::parse(self) {
                Ok(i) => {
                    let cookie = i
                        .param(param::STATE_COOKIE)
                        .map(|c| format!(", State Cookie {} bytes", c.len()))
                        .unwrap_or_default();
                    let addresses = i.addresses();
                    let addresses = if addresses.is_empty() {
                        String::new()
                    } else {
                        let list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
                        format!(", addresses {}", list.join(" "))
                    };
                    format!(
                        "{} initiate_tag=0x{:08x} a_rwnd={} streams out/in={}/{} initial_tsn={}{cookie}{addresses}",
                        self.kind,
                        i.initiate_tag,
                        i.a_rwnd,
                        i.outbound_streams,
                        i.inbound_streams,
                        i.initial_tsn
                    )
                }
                Err(e) => format!("{} (malformed: {e})", self.kind),
            },
            ChunkType::DATA => match Data::parse(self) {
                Ok(d) => format!(
                    "DATA tsn={} stream={} ssn={} ppid={} {}{}{}{} bytes",
                    d.tsn,
                    d.stream_id,
                    d.ssn,
                    d.ppid,
                    if d.unordered { "U " } else { "" },
                    if d.beginning { "B " } else { "" },
                    if d.ending { "E " } else { "" },
                    d.user_data.len()
                ),
                Err(e) => format!("DATA (malformed: {e})"),
            },
            ChunkType::SACK => match Sack::parse(self) {
                Ok(s) => format!(
                    "SACK cum_tsn_ack={} a_rwnd={} gaps={} dups={}",
                    s.cumulative_tsn_ack, s.a_rwnd, s.gap_blocks, s.duplicate_tsns
                ),
                Err(e) => format!("SACK (malformed: {e})"),
            },
            ChunkType::COOKIE_ECHO => format!("COOKIE_ECHO cookie {} bytes", self.value.len()),
            ChunkType::ABORT | ChunkType::ERROR => {
                let causes = parse_params(self.kind, self.value)
                    .map(|ps| {
                        ps.iter()
                            .map(|p| p.kind.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_else(|_| "malformed".into());
                format!("{} causes [{causes}]", self.kind)
            }
            kind => format!("{kind} {} bytes", self.value.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 3720 Appendix B.4 test vector: CRC32c of 32 zero bytes.
    #[test]
    fn crc32c_matches_the_iscsi_vector() {
        assert_eq!(crc32c(&[0u8; 32]), 0x8A9136AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8AB43);
        assert_eq!(crc32c(b"123456789"), 0xE3069283);
    }

    /// A COOKIE_ACK packet, byte by byte: ports 7 → 5000, tag 0x01020304.
    const COOKIE_ACK_PACKET: [u8; 16] = [
        0x00, 0x07, 0x13, 0x88, // ports 7, 5000 (big-endian)
        0x01, 0x02, 0x03, 0x04, // verification tag
        0, 0, 0, 0, // checksum, filled in below
        0x0B, 0x00, 0x00, 0x04, // COOKIE_ACK, no flags, length 4
    ];

    #[test]
    fn encode_writes_exact_bytes_with_little_endian_crc() {
        let bytes = encode(
            7,
            5000,
            0x01020304,
            &[OwnedChunk::new(ChunkType::COOKIE_ACK, 0, vec![])],
        );
        let mut expected = COOKIE_ACK_PACKET;
        let crc = packet_checksum(&expected);
        expected[8..12].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(bytes, expected);
        // The CRC's least significant byte comes first.
        assert_eq!(bytes[8], (crc & 0xFF) as u8);
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.header.src_port, 7);
        assert_eq!(p.header.dst_port, 5000);
        assert_eq!(p.header.verification_tag, 0x01020304);
        assert_eq!(p.chunks.len(), 1);
        assert_eq!(p.first().kind, ChunkType::COOKIE_ACK);
    }

    #[test]
    fn bad_checksum_is_refused_naming_both_values() {
        let mut bytes = encode(
            1,
            2,
            3,
            &[OwnedChunk::new(ChunkType::COOKIE_ACK, 0, vec![])],
        );
        bytes[8] ^= 1;
        assert!(matches!(
            Packet::parse(&bytes),
            Err(SctpError::BadChecksum { .. })
        ));
        assert!(Packet::parse_unchecked(&bytes).is_ok());
    }

    #[test]
    fn truncated_and_lying_chunks_are_errors() {
        assert_eq!(
            Packet::parse_unchecked(&[0; 5]),
            Err(SctpError::TooShort { len: 5 })
        );
        assert_eq!(Packet::parse_unchecked(&[0; 12]), Err(SctpError::NoChunks));
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&[0, 0, 0, 2]);
        assert!(matches!(
            Packet::parse_unchecked(&p),
            Err(SctpError::ChunkLengthTooSmall {
                offset: 12,
                length: 2
            })
        ));
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&[0, 0, 0, 40, 1, 2]);
        assert!(matches!(
            Packet::parse_unchecked(&p),
            Err(SctpError::ChunkTooLong { .. })
        ));
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&[11, 0, 0, 4, 1, 2]);
        assert!(matches!(
            Packet::parse_unchecked(&p),
            Err(SctpError::TruncatedChunkHeader {
                offset: 16,
                available: 2
            })
        ));
    }

    #[test]
    fn init_round_trips_with_params_and_padding() {
        let init = Init {
            initiate_tag: 0xDEADBEEF,
            a_rwnd: 131072,
            outbound_streams: 10,
            inbound_streams: 65535,
            initial_tsn: 42,
            params: vec![],
        };
        let cookie = [9u8; 5]; // odd length: padded to 8
        let value = init.encode_value(&[
            Param {
                kind: param::STATE_COOKIE,
                value: &cookie,
            },
            Param {
                kind: param::IPV4_ADDRESS,
                value: &[10, 0, 0, 1],
            },
        ]);
        let bytes = encode(7, 7, 0, &[OwnedChunk::new(ChunkType::INIT_ACK, 0, value)]);
        let packet = Packet::parse(&bytes).unwrap();
        let parsed = Init::parse(packet.first()).unwrap();
        assert_eq!(parsed.initiate_tag, 0xDEADBEEF);
        assert_eq!(parsed.inbound_streams, 65535);
        assert_eq!(parsed.param(param::STATE_COOKIE), Some(&cookie[..]));
        assert_eq!(
            parsed.addresses(),
            vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(packet.first().summary().contains("State Cookie 5 bytes"));
    }

    #[test]
    fn data_flags_and_fields() {
        let mut value = vec![0, 0, 0, 5, 0, 3, 0, 1, 0, 0, 0, 51];
        value.extend_from_slice(b"hi");
        let chunk = Chunk {
            kind: ChunkType::DATA,
            flags: 0x07,
            value: &value,
            offset: 12,
        };
        let d = Data::parse(&chunk).unwrap();
        assert_eq!((d.tsn, d.stream_id, d.ssn, d.ppid), (5, 3, 1, 51));
        assert!(d.unordered && d.beginning && d.ending);
        assert_eq!(d.user_data, b"hi");
        assert_eq!(
            chunk.summary(),
            "DATA tsn=5 stream=3 ssn=1 ppid=51 U B E 2 bytes"
        );
    }

    #[test]
    fn bundled_chunks_keep_their_order() {
        let bytes = encode(
            1,
            2,
            3,
            &[
                OwnedChunk::new(ChunkType::COOKIE_ECHO, 0, vec![1, 2, 3]),
                OwnedChunk::new(ChunkType::DATA, 3, vec![0; 13]),
            ],
        );
        let p = Packet::parse(&bytes).unwrap();
        let kinds: Vec<_> = p.chunks.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, vec![ChunkType::COOKIE_ECHO, ChunkType::DATA]);
        assert_eq!(p.chunks[0].value, &[1, 2, 3]);
        assert_eq!(p.chunks[1].offset, 20);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Packet::parse_unchecked(&bytes) {
                for c in &p.chunks {
                    let _ = c.summary();
                }
            }
        }
    }
}
