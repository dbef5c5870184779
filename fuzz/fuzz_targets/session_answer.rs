//! The echo session's answer step (dialect choice, lines with their length
//! limit, frames, the half-close) on untrusted input in arbitrary pieces:
//! never panics, and what the server writes (and whether it closes) does
//! not depend on how TCP cut the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::server::session::answer_chunks;

fuzz_target!(|data: &[u8]| {
    // Byte 0: the line limit (small, so that it is reached); byte 1: where
    // to cut; bit 0 of byte 1: whether the peer half-closes at the end.
    let [limit, cut, stream @ ..] = data else {
        return;
    };
    let max_line = 1 + *limit as usize;
    let eof = cut & 1 == 1;
    let at = (*cut as usize * stream.len()) / 255;
    let (a, b) = stream.split_at(at.min(stream.len()));
    let whole = answer_chunks(&[stream], eof, max_line);
    let pieces = answer_chunks(&[a, b], eof, max_line);
    assert_eq!(whole, pieces, "the cut changed the answers");
});
