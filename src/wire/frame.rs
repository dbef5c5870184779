//! The proto frame: a tiny big-endian binary message format (sans-IO).
//!
//! This module only turns bytes into [`Frame`]s and back. It never touches a
//! socket or a clock, so it can be tested with exact byte strings (see
//! `protocols/frame-vectors.txt`) and reused over TCP streams (through
//! [`super::FrameCodec`]) and UDP datagrams ([`decode_datagram`]) alike.
//!
//! The full specification lives in `protocols/frame.md`; the diagram is
//! repeated here so the code can be read against it:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  magic (0xF8) |  ver  |  type |        reserved (0x0000)      |  0..4
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          message id                           |  4..8
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        payload length                         |  8..12
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |  12..20
//! +                   timestamp (echoed unchanged)                +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 payload (payload length bytes)              ...  20..
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Every multi-byte integer is **big-endian** ("network byte order"): the
//! most significant byte comes first on the wire, whatever the CPU's own
//! order is (x86 and most ARM systems are little-endian).

use bytes::{Buf, BufMut, Bytes};
use std::fmt;
use std::ops::Range;

/// Byte offsets and sizes of each header field, in the style of smoltcp's
/// `mod field`. Reading the code against the diagram above should be a
/// matter of looking these up.
pub mod field {
    use std::ops::Range;
    /// 1 byte: always [`super::MAGIC`].
    pub const MAGIC: usize = 0;
    /// 1 byte: version in the high nibble, type in the low nibble.
    pub const VERSION_TYPE: usize = 1;
    /// 2 bytes: reserved, must be zero.
    pub const RESERVED: Range<usize> = 2..4;
    /// 4 bytes: message id, chosen by the client, echoed by the server.
    pub const ID: Range<usize> = 4..8;
    /// 4 bytes: number of payload bytes that follow the header.
    pub const LENGTH: Range<usize> = 8..12;
    /// 8 bytes: opaque to the server, echoed unchanged (clients put a send
    /// time in nanoseconds here to measure latency).
    pub const TIMESTAMP: Range<usize> = 12..20;
    /// The payload starts right after the header.
    pub const PAYLOAD: usize = 20;
}

/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// The first byte of every frame. 0xF8 can never appear in UTF-8 text
/// (bytes 0xF5..=0xFF are invalid there), so a server can tell a framed
/// client from a person typing into `nc` by looking at one byte.
pub const MAGIC: u8 = 0xF8;

/// The only version this code speaks.
pub const VERSION: u8 = 1;

/// The largest payload a frame may carry: 64 KiB.
pub const MAX_PAYLOAD: usize = 65536;

/// What a frame is for (the low nibble of byte 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameType {
    /// Client → server: please uppercase this payload.
    Request = 1,
    /// Server → client: the uppercased payload, same id and timestamp.
    Response = 2,
    /// Server → client: the request could not be served; the payload is a
    /// UTF-8 explanation. The server closes the connection after it.
    Error = 3,
}

impl FrameType {
    /// The 4-bit code of this type.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The type for a 4-bit code, if the code is one we know.
    pub fn from_code(code: u8) -> Option<FrameType> {
        match code {
            1 => Some(FrameType::Request),
            2 => Some(FrameType::Response),
            3 => Some(FrameType::Error),
            _ => None,
        }
    }

    /// Parses the names used by `proto codec encode --type`.
    pub fn from_name(name: &str) -> Option<FrameType> {
        match name.to_ascii_lowercase().as_str() {
            "request" | "req" => Some(FrameType::Request),
            "response" | "resp" => Some(FrameType::Response),
            "error" | "err" => Some(FrameType::Error),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FrameType::Request => "request",
            FrameType::Response => "response",
            FrameType::Error => "error",
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Packs a version and a type into one byte: version in the high nibble,
/// type in the low nibble.
///
/// ```text
///   version = 1 = 0b0001, type = 2 = 0b0010
///   (version << 4) | (type & 0x0F) = 0b0001_0010 = 0x12
/// ```
pub fn pack_version_type(version: u8, frame_type: u8) -> u8 {
    ((version & 0x0F) << 4) | (frame_type & 0x0F)
}

/// Splits byte 1 back into (version, type): `byte >> 4` and `byte & 0x0F`.
pub fn unpack_version_type(byte: u8) -> (u8, u8) {
    (byte >> 4, byte & 0x0F)
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub frame_type: FrameType,
    pub id: u32,
    pub timestamp: u64,
    pub payload: Bytes,
}

impl Frame {
    pub fn request(id: u32, timestamp: u64, payload: impl Into<Bytes>) -> Frame {
        Frame {
            frame_type: FrameType::Request,
            id,
            timestamp,
            payload: payload.into(),
        }
    }

    /// The server's answer to `self`: same id and timestamp, new payload.
    pub fn response_to(&self, payload: impl Into<Bytes>) -> Frame {
        Frame {
            frame_type: FrameType::Response,
            id: self.id,
            timestamp: self.timestamp,
            payload: payload.into(),
        }
    }

    /// An error frame explaining why a request was refused.
    pub fn error(id: u32, timestamp: u64, message: &str) -> Frame {
        Frame {
            frame_type: FrameType::Error,
            id,
            timestamp,
            payload: Bytes::copy_from_slice(message.as_bytes()),
        }
    }

    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Appends the frame's bytes to `dst`.
    ///
    /// Fails only if the payload is larger than [`MAX_PAYLOAD`]: we never
    /// put on the wire something our own decoder would reject.
    pub fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), FrameError> {
        if self.payload.len() > MAX_PAYLOAD {
            return Err(FrameError::PayloadTooLarge {
                length: self.payload.len() as u64,
            });
        }
        dst.put_u8(MAGIC);
        dst.put_u8(pack_version_type(VERSION, self.frame_type.code()));
        dst.put_u16(0); // reserved
        dst.put_u32(self.id); // put_u32 writes big-endian
        dst.put_u32(self.payload.len() as u32);
        dst.put_u64(self.timestamp);
        dst.put_slice(&self.payload);
        Ok(())
    }

    /// The frame as a fresh byte vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// Why some bytes are not a valid frame. Each variant names the bytes at
/// fault so an error message can point at them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic byte 0x{found:02X}, expected 0x{MAGIC:02X} (byte 0)")]
    BadMagic { found: u8 },
    #[error("unsupported version {found}, this implementation speaks version {VERSION} (byte 1, high nibble)")]
    UnsupportedVersion { found: u8 },
    #[error("unknown frame type {found}, expected 1 (request), 2 (response) or 3 (error) (byte 1, low nibble)")]
    UnknownType { found: u8 },
    #[error("reserved field is 0x{found:04X}, must be 0x0000 (bytes 2..4)")]
    ReservedNotZero { found: u16 },
    #[error("payload length {length} exceeds the maximum {MAX_PAYLOAD} (bytes 8..12)")]
    PayloadTooLarge { length: u64 },
    #[error("truncated frame: {needed} bytes needed, only {available} present")]
    Truncated { needed: usize, available: usize },
    #[error("{extra} unexpected bytes after the end of the frame (bytes {end}..{})", end + extra)]
    TrailingBytes { end: usize, extra: usize },
}

impl FrameError {
    /// The short, stable name used in `protocols/frame-vectors.txt`.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::BadMagic { .. } => "bad-magic",
            FrameError::UnsupportedVersion { .. } => "unsupported-version",
            FrameError::UnknownType { .. } => "unknown-type",
            FrameError::ReservedNotZero { .. } => "reserved-not-zero",
            FrameError::PayloadTooLarge { .. } => "payload-too-large",
            FrameError::Truncated { .. } => "truncated",
            FrameError::TrailingBytes { .. } => "trailing-bytes",
        }
    }

    /// Which bytes of the input the error is about.
    pub fn byte_range(&self) -> Range<usize> {
        match self {
            FrameError::BadMagic { .. } => 0..1,
            FrameError::UnsupportedVersion { .. } | FrameError::UnknownType { .. } => 1..2,
            FrameError::ReservedNotZero { .. } => field::RESERVED,
            FrameError::PayloadTooLarge { .. } => field::LENGTH,
            FrameError::Truncated { available, needed } => *available..*needed,
            FrameError::TrailingBytes { end, extra } => *end..*end + *extra,
        }
    }
}

/// A validated header: everything but the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub frame_type: FrameType,
    pub id: u32,
    pub payload_len: usize,
    pub timestamp: u64,
}

/// Checks as much of a header as `src` holds, field by field, in wire order.
///
/// This is what lets a stream decoder reject garbage after its first byte,
/// instead of waiting for 20 bytes that may never come. Returns `Ok(None)`
/// when the header is valid so far but incomplete.
pub fn check_header(src: &[u8]) -> Result<Option<Header>, FrameError> {
    if let Some(&magic) = src.first() {
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
    }
    if let Some(&vt) = src.get(field::VERSION_TYPE) {
        let (version, code) = unpack_version_type(vt);
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion { found: version });
        }
        if FrameType::from_code(code).is_none() {
            return Err(FrameError::UnknownType { found: code });
        }
    }
    if src.len() >= field::RESERVED.end {
        let reserved = (&src[field::RESERVED]).get_u16();
        if reserved != 0 {
            return Err(FrameError::ReservedNotZero { found: reserved });
        }
    }
    if src.len() >= field::LENGTH.end {
        let length = (&src[field::LENGTH]).get_u32();
        if length as usize > MAX_PAYLOAD {
            return Err(FrameError::PayloadTooLarge {
                length: length.into(),
            });
        }
    }
    if src.len() < HEADER_LEN {
        return Ok(None);
    }
    let (_, code) = unpack_version_type(src[field::VERSION_TYPE]);
    // Checked above: the code is known.
    let frame_type = FrameType::from_code(code).ok_or(FrameError::UnknownType { found: code })?;
    Ok(Some(Header {
        frame_type,
        id: (&src[field::ID]).get_u32(),
        payload_len: (&src[field::LENGTH]).get_u32() as usize,
        timestamp: (&src[field::TIMESTAMP]).get_u64(),
    }))
}

/// Decodes one frame from the start of `src`, stream style.
///
/// * `Ok(Some((frame, used)))`: a whole frame; `used` bytes were consumed.
/// * `Ok(None)`: the bytes so far are a valid *beginning* of a frame; read
///   more. On a stream, an incomplete frame is normal, not an error.
/// * `Err(_)`: these bytes can never become a valid frame.
pub fn decode_prefix(src: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(header) = check_header(src)? else {
        return Ok(None);
    };
    let total = HEADER_LEN + header.payload_len;
    if src.len() < total {
        return Ok(None);
    }
    let frame = Frame {
        frame_type: header.frame_type,
        id: header.id,
        timestamp: header.timestamp,
        payload: Bytes::copy_from_slice(&src[HEADER_LEN..total]),
    };
    Ok(Some((frame, total)))
}

/// Decodes a datagram that must hold exactly one frame (UDP: one datagram,
/// one message). Missing bytes and extra bytes are both errors here, since
/// no more bytes will ever arrive for this message.
pub fn decode_datagram(datagram: &[u8]) -> Result<Frame, FrameError> {
    match decode_prefix(datagram)? {
        Some((frame, used)) if used == datagram.len() => Ok(frame),
        Some((_, used)) => Err(FrameError::TrailingBytes {
            end: used,
            extra: datagram.len() - used,
        }),
        None => {
            let needed = match check_header(datagram)? {
                Some(header) => HEADER_LEN + header.payload_len,
                None => HEADER_LEN,
            };
            Err(FrameError::Truncated {
                needed,
                available: datagram.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The example from `protocols/frame.md`, byte for byte.
    const REQUEST_BYTES: [u8; 25] = [
        0xF8, 0x11, 0x00, 0x00, // magic, version 1 / type 1, reserved
        0x00, 0x00, 0x00, 0x2A, // id 42
        0x00, 0x00, 0x00, 0x05, // payload length 5
        0x00, 0x00, 0x00, 0x00, 0x3B, 0x9A, 0xCA, 0x00, // timestamp 1e9
        b'h', b'e', b'l', b'l', b'o',
    ];

    #[test]
    fn encodes_the_spec_example() {
        let frame = Frame::request(42, 1_000_000_000, &b"hello"[..]);
        assert_eq!(frame.to_bytes().unwrap(), REQUEST_BYTES);
    }

    #[test]
    fn decodes_the_spec_example() {
        let frame = decode_datagram(&REQUEST_BYTES).unwrap();
        assert_eq!(frame, Frame::request(42, 1_000_000_000, &b"hello"[..]));
    }

    #[test]
    fn nibbles_pack_and_unpack() {
        assert_eq!(pack_version_type(1, 2), 0x12);
        assert_eq!(unpack_version_type(0x12), (1, 2));
        assert_eq!(unpack_version_type(0xF3), (15, 3));
    }

    #[test]
    fn incomplete_is_not_an_error_on_a_stream() {
        for n in 0..REQUEST_BYTES.len() {
            assert_eq!(decode_prefix(&REQUEST_BYTES[..n]), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn garbage_is_rejected_at_the_first_byte() {
        assert_eq!(
            decode_prefix(b"h"),
            Err(FrameError::BadMagic { found: b'h' })
        );
    }

    #[test]
    fn oversized_length_is_rejected_before_the_payload_arrives() {
        let mut bytes = REQUEST_BYTES[..12].to_vec();
        bytes[8..12].copy_from_slice(&70000u32.to_be_bytes());
        let err = decode_prefix(&bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "payload length 70000 exceeds the maximum 65536 (bytes 8..12)"
        );
    }

    #[test]
    fn encoder_refuses_what_the_decoder_would_refuse() {
        let frame = Frame::request(1, 0, vec![0u8; MAX_PAYLOAD + 1]);
        assert!(matches!(
            frame.to_bytes(),
            Err(FrameError::PayloadTooLarge { .. })
        ));
        let frame = Frame::request(1, 0, vec![0u8; MAX_PAYLOAD]);
        assert_eq!(frame.to_bytes().unwrap().len(), HEADER_LEN + MAX_PAYLOAD);
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        (
            prop_oneof![
                Just(FrameType::Request),
                Just(FrameType::Response),
                Just(FrameType::Error)
            ],
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..2048),
        )
            .prop_map(|(frame_type, id, timestamp, payload)| Frame {
                frame_type,
                id,
                timestamp,
                payload: payload.into(),
            })
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(frame in any_frame()) {
            let bytes = frame.to_bytes().unwrap();
            prop_assert_eq!(decode_datagram(&bytes).unwrap(), frame.clone());
            prop_assert_eq!(decode_prefix(&bytes).unwrap(), Some((frame, bytes.len())));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_prefix(&bytes);
            let _ = decode_datagram(&bytes);
        }

        #[test]
        fn arbitrary_headers_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Make the early checks pass so the later ones are exercised too.
            if let Some(b) = bytes.get_mut(0) { *b = MAGIC; }
            if let Some(b) = bytes.get_mut(1) { *b = 0x10 | (*b % 4); }
            let _ = decode_prefix(&bytes);
            let _ = decode_datagram(&bytes);
        }
    }
}
