//! A binary protocol, byte by byte: decode a proto frame from raw bytes.
//!
//! Network protocols put the most significant byte first ("network byte
//! order", big-endian), whatever the CPU does. A proto frame is a 20-byte
//! header (magic, version and type packed in one byte, flags, payload
//! length, request id, timestamp; see `protocols/frame.md`) and a payload.
//! Decoding is *sans-IO*: bytes in, a value (or "not enough bytes yet") out.
//!
//! ```text
//! cargo run --example decode_frame
//! ```

use proto::wire::frame::decode_prefix;
use proto::wire::Frame;

fn main() -> anyhow::Result<()> {
    // Build a request the way a client would, and look at its bytes.
    let request = Frame::request(7, 1_000_000, &b"hello"[..]);
    let bytes = request.to_bytes()?;
    println!("{} bytes on the wire:", bytes.len());
    for (offset, chunk) in bytes.chunks(10).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        println!("  {:2}: {}", offset * 10, hex.join(" "));
    }

    // The id 7 is the four bytes 00 00 00 07: the big end comes first.
    println!(
        "request id 7 as u32, big-endian: {:02x?}",
        7u32.to_be_bytes()
    );
    println!(
        "the same on an x86 CPU's memory:  {:02x?}",
        7u32.to_le_bytes()
    );

    // A stream decoder must cope with partial input: with only 12 bytes the
    // header is incomplete, which is "wait for more", not an error.
    assert!(decode_prefix(&bytes[..12])?.is_none());
    println!("first 12 bytes: incomplete, wait for more");

    // With every byte, the frame comes back, and we learn how many bytes it used.
    let (frame, used) = decode_prefix(&bytes)?.ok_or_else(|| anyhow::anyhow!("incomplete"))?;
    println!(
        "decoded {used} bytes: {} id {} timestamp {} payload {:?}",
        frame.frame_type.name(),
        frame.id,
        frame.timestamp,
        String::from_utf8_lossy(&frame.payload)
    );

    // Garbage is refused with a reason, never a panic.
    let mut broken = bytes.clone();
    broken[0] = 0x00;
    match decode_prefix(&broken) {
        Err(e) => println!("a corrupted magic byte is refused: {e}"),
        Ok(_) => anyhow::bail!("a corrupted frame was accepted"),
    }
    Ok(())
}
