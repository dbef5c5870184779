//! [`FrameCodec`]: the frame format as a `tokio_util` codec, for streams.
//!
//! A TCP (or TLS, or QUIC stream) connection is a byte stream: one `read`
//! may return half a frame or three and a half. The codec owns that
//! problem; `frame.rs` only ever sees byte slices.

use super::frame::{self, Frame, FrameError, HEADER_LEN};
use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Errors of a framed stream: the bytes were bad, or the I/O failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameCodecError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameCodecError> {
        match frame::decode_prefix(src)? {
            Some((frame, used)) => {
                src.advance(used);
                Ok(Some(frame))
            }
            None => {
                // Reserve room for the rest of this frame so the next read
                // does not need to grow the buffer piecemeal.
                if let Ok(Some(header)) = frame::check_header(src) {
                    src.reserve(HEADER_LEN + header.payload_len - src.len());
                }
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameCodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            // The peer closed in the middle of a frame.
            None => Err(frame::decode_datagram(src)
                .err()
                .unwrap_or(FrameError::Truncated {
                    needed: HEADER_LEN,
                    available: src.len(),
                })
                .into()),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameCodecError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), FrameCodecError> {
        dst.reserve(item.encoded_len());
        item.encode(dst)?;
        Ok(())
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = FrameCodecError;

    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), FrameCodecError> {
        dst.reserve(item.encoded_len());
        item.encode(dst)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_stream_into_frames_whatever_the_read_sizes() {
        let frames: Vec<Frame> = (0..5)
            .map(|i| Frame::request(i, u64::from(i) * 7, vec![b'a' + i as u8; i as usize * 3]))
            .collect();
        let mut wire = Vec::new();
        for f in &frames {
            f.encode(&mut wire).unwrap();
        }
        for chunk in 1..wire.len() {
            let mut codec = FrameCodec;
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    out.push(f);
                }
            }
            assert_eq!(out, frames, "chunk size {chunk}");
        }
    }

    #[test]
    fn eof_mid_frame_is_an_error() {
        let mut buf = BytesMut::from(&Frame::request(1, 2, &b"abc"[..]).to_bytes().unwrap()[..22]);
        let err = FrameCodec.decode_eof(&mut buf).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
