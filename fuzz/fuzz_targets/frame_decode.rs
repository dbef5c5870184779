//! One datagram through the frame decoder (what the UDP server and
//! `proto codec decode` do with untrusted bytes). Never panics; a frame it
//! accepts encodes back to the very same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::wire::frame::{check_header, decode_datagram, decode_prefix};

fuzz_target!(|data: &[u8]| {
    let _ = check_header(data);
    if let Ok(Some((frame, used))) = decode_prefix(data) {
        assert!(used <= data.len());
        assert_eq!(frame.encoded_len(), used);
    }
    if let Ok(frame) = decode_datagram(data) {
        let bytes = frame.to_bytes().expect("a decoded frame encodes");
        assert_eq!(bytes, data, "decode → encode is the identity");
    }
});
