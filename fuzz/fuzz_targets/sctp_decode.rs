//! The SCTP packet decoder (src/wire/sctp.rs) on untrusted bytes: the
//! common header, every chunk, INIT/INIT-ACK parameters, DATA and SACK.
//! Errors are fine; panics (slicing past the end) are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::wire::sctp::{ChunkType, Data, Init, Packet, Sack};

fuzz_target!(|data: &[u8]| {
    let _ = Packet::parse(data);
    let Ok(packet) = Packet::parse_unchecked(data) else {
        return;
    };
    for chunk in &packet.chunks {
        if chunk.kind == ChunkType::INIT || chunk.kind == ChunkType::INIT_ACK {
            if let Ok(init) = Init::parse(chunk) {
                let _ = init.addresses();
            }
        } else if chunk.kind == ChunkType::DATA {
            let _ = Data::parse(chunk);
        } else if chunk.kind == ChunkType::SACK {
            let _ = Sack::parse(chunk);
        }
    }
});
