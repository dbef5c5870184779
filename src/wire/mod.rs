//! Wire formats, sans-IO: bytes in, values out, and back. No sockets here.
//!
//! * [`frame`]: the proto frame (`protocols/frame.md`), a 20-byte
//!   big-endian header and a payload.
//! * [`codec`]: the same frame as a `tokio_util` codec for byte streams.
//! * [`hex`]: hex text for humans and test vectors.
//! * [`limits`]: protocol limits and the default ports.
//! * [`sctp`]: SCTP packets (RFC 9260): common header, chunks, CRC32c.
//! * [`tcpip`]: IP, TCP and UDP headers (via `etherparse`).
//! * [`tls`]: TLS records, handshake messages and record protection.
//! * [`quic`]: QUIC packets, header protection, packet protection, frames.
//! * [`keylog`]: the NSS key log format (connection secrets).
//! * [`pcapng`]: capture files, with the secrets inside.
//! * [`dissect`]: all of the above applied to one conversation.

pub mod codec;
pub mod dissect;
pub mod frame;
pub mod hex;
pub mod keylog;
pub mod limits;
pub mod pcapng;
pub mod quic;
pub mod sctp;
pub mod tcpip;
pub mod tls;

pub use codec::{FrameCodec, FrameCodecError};
pub use frame::{Frame, FrameError, FrameType, HEADER_LEN, MAGIC, MAX_PAYLOAD};

#[cfg(test)]
mod vectors {
    //! Runs every vector in `protocols/frame-vectors.txt` against the code,
    //! so the written spec and the implementation cannot drift apart.
    use super::frame::{decode_datagram, decode_prefix};
    use super::*;
    use std::collections::HashMap;

    const VECTORS: &str = include_str!("../../protocols/frame-vectors.txt");

    struct Vector {
        valid: bool,
        name: String,
        fields: HashMap<String, String>,
    }

    fn parse_vectors() -> Vec<Vector> {
        let mut out = Vec::new();
        for block in VECTORS.split("\n\n") {
            let mut lines = block
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'));
            let Some(head) = lines.next() else { continue };
            let (kind, name) = head.split_once(' ').expect("block header: [kind] name");
            let fields = lines
                .map(|l| {
                    let (k, v) = l.split_once('=').expect("key = value");
                    (k.trim().to_string(), v.trim().to_string())
                })
                .collect();
            out.push(Vector {
                valid: kind == "[valid]",
                name: name.to_string(),
                fields,
            });
        }
        out
    }

    fn payload_of(v: &Vector) -> Vec<u8> {
        if let Some(text) = v.fields.get("payload") {
            text.trim_matches('"').as_bytes().to_vec()
        } else {
            hex::parse(&v.fields["payload-hex"]).unwrap()
        }
    }

    #[test]
    fn the_vectors_file_has_both_kinds() {
        let vectors = parse_vectors();
        assert!(vectors.iter().filter(|v| v.valid).count() >= 5);
        assert!(vectors.iter().filter(|v| !v.valid).count() >= 8);
    }

    #[test]
    fn valid_vectors_decode_to_their_fields_and_encode_back() {
        for v in parse_vectors().into_iter().filter(|v| v.valid) {
            let bytes = hex::parse(&v.fields["hex"]).unwrap();
            let frame = decode_datagram(&bytes).unwrap_or_else(|e| panic!("{}: {e}", v.name));
            assert_eq!(frame.frame_type.name(), v.fields["type"], "{}", v.name);
            assert_eq!(frame.id.to_string(), v.fields["id"], "{}", v.name);
            assert_eq!(
                frame.timestamp.to_string(),
                v.fields["timestamp"],
                "{}",
                v.name
            );
            assert_eq!(frame.payload.as_ref(), payload_of(&v), "{}", v.name);
            assert_eq!(frame.to_bytes().unwrap(), bytes, "{}: re-encoding", v.name);
        }
    }

    #[test]
    fn invalid_vectors_fail_with_the_specified_error() {
        for v in parse_vectors().into_iter().filter(|v| !v.valid) {
            let bytes = hex::parse(&v.fields["hex"]).unwrap();
            let err = decode_datagram(&bytes).expect_err(&v.name);
            assert_eq!(err.kind(), v.fields["error"], "{}", v.name);
            assert_eq!(err.to_string(), v.fields["message"], "{}", v.name);
            let stream = decode_prefix(&bytes);
            match v.fields["stream"].as_str() {
                "error" => assert_eq!(stream, Err(err), "{}", v.name),
                "incomplete" => assert_eq!(stream, Ok(None), "{}", v.name),
                "frame" => assert!(matches!(stream, Ok(Some(_))), "{}", v.name),
                other => panic!("{}: unknown stream outcome {other}", v.name),
            }
        }
    }
}
