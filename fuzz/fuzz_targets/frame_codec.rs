//! The streaming frame codec (tokio_util Decoder) fed a byte stream in
//! arbitrary pieces, as TCP delivers it: never panics, never loops, and the
//! frames it yields do not depend on how the stream was cut.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proto::wire::FrameCodec;
use tokio_util::codec::Decoder;

/// Every frame in `pieces` fed one after another, and whether it ended in
/// an error.
fn decode_all(pieces: &[&[u8]]) -> (Vec<proto::wire::Frame>, bool) {
    let mut codec = FrameCodec;
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    // The first byte says where to cut the rest into two pieces.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let cut = (cut as usize * stream.len()) / 255;
    let (a, b) = stream.split_at(cut.min(stream.len()));
    let whole = decode_all(&[stream]);
    let pieces = decode_all(&[a, b]);
    assert_eq!(whole, pieces, "the cut changed what was decoded");
});
