//! Byte-level views: an annotated frame dump and the endianness table.

use crate::wire::frame::{self, field, Frame, FrameError, HEADER_LEN};
use crate::wire::hex;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

/// One row of an annotated dump: which bytes, and what they mean.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FieldRow {
    pub offset: String,
    pub field: &'static str,
    pub hex: String,
    pub meaning: String,
}

/// Explains every field of an encoded (valid) frame.
pub fn annotate(bytes: &[u8], frame: &Frame) -> Vec<FieldRow> {
    let vt = bytes[field::VERSION_TYPE];
    let (version, code) = frame::unpack_version_type(vt);
    let end = HEADER_LEN + frame.payload.len();
    let payload_meaning = match std::str::from_utf8(&frame.payload) {
        Ok(text) => format!("{text:?} ({} bytes)", frame.payload.len()),
        Err(_) => format!("{} bytes of binary data", frame.payload.len()),
    };
    let row = |range: std::ops::Range<usize>, field, meaning| FieldRow {
        offset: if range.len() == 1 {
            range.start.to_string()
        } else {
            format!("{}..{}", range.start, range.end)
        },
        field,
        hex: hex::spaced(&bytes[range]),
        meaning,
    };
    vec![
        row(
            0..1,
            "magic",
            format!("0x{:02X}: a proto frame, not a text line", frame::MAGIC),
        ),
        row(
            1..2,
            "version | type",
            format!(
                "0x{vt:02X} >> 4 = version {version}; 0x{vt:02X} & 0x0F = type {code} ({})",
                frame.frame_type
            ),
        ),
        row(field::RESERVED, "reserved", "must be zero".to_string()),
        row(
            field::ID,
            "message id",
            format!("{} (u32, big-endian)", frame.id),
        ),
        row(
            field::LENGTH,
            "payload length",
            format!("{} bytes (u32, big-endian)", frame.payload.len()),
        ),
        row(
            field::TIMESTAMP,
            "timestamp",
            format!("{} (u64, big-endian; echoed unchanged)", frame.timestamp),
        ),
        row(HEADER_LEN..end, "payload", payload_meaning),
    ]
}

/// The annotated dump as a table.
pub fn render_dump(rows: &[FieldRow]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec!["bytes", "field", "hex", "meaning"]);
    for r in rows {
        let hex = if r.hex.len() > 48 {
            format!("{} …", &r.hex[..47])
        } else {
            r.hex.clone()
        };
        table.add_row(vec![
            r.offset.as_str(),
            r.field,
            hex.as_str(),
            r.meaning.as_str(),
        ]);
    }
    table.to_string()
}

/// A decode error with the offending bytes pointed at.
pub fn render_error(bytes: &[u8], err: &FrameError) -> String {
    let range = err.byte_range();
    let shown = &bytes[..bytes.len().min(40)];
    let mut marks = String::new();
    for i in 0..shown.len() {
        if i > 0 {
            marks.push(' ');
        }
        marks.push_str(if range.contains(&i) { "^^" } else { "  " });
    }
    let mut out = format!("invalid frame: {err}\n  {}\n", hex::spaced(shown));
    if range.start < shown.len() {
        out.push_str(&format!("  {}\n", marks.trim_end()));
    }
    out
}

/// The bytes of `value` in both orders, as `proto endian` prints them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndianView {
    pub value: String,
    pub bits: u32,
    pub hex: String,
    pub big_endian: Vec<u8>,
    pub little_endian: Vec<u8>,
    pub this_machine: &'static str,
}

pub fn endian_view(value: u64, signed_text: Option<String>, bits: u32) -> EndianView {
    let bytes = (bits / 8) as usize;
    let be_full = value.to_be_bytes();
    let big_endian = be_full[8 - bytes..].to_vec();
    let mut little_endian = big_endian.clone();
    little_endian.reverse();
    EndianView {
        value: signed_text.unwrap_or_else(|| value.to_string()),
        bits,
        hex: format!("0x{:0width$X}", value & mask(bits), width = bytes * 2),
        big_endian,
        little_endian,
        this_machine: if cfg!(target_endian = "little") {
            "little-endian"
        } else {
            "big-endian"
        },
    }
}

fn mask(bits: u32) -> u64 {
    if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

pub fn render_endian(v: &EndianView) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec!["byte order".to_string(), "used by".to_string()];
    header.extend((0..v.big_endian.len()).map(|i| format!("+{i}")));
    table.set_header(header);
    let row = |name: &str, who: &str, bytes: &[u8]| {
        let mut r = vec![name.to_string(), who.to_string()];
        r.extend(bytes.iter().map(|b| format!("{b:02X}")));
        r
    };
    table.add_row(row(
        "big-endian",
        "networks (TCP/IP headers, proto frames)",
        &v.big_endian,
    ));
    table.add_row(row(
        "little-endian",
        "x86, most ARM: memory",
        &v.little_endian,
    ));
    format!(
        "{} = {} as a {}-bit integer\n{table}\nBig-endian puts the most significant byte first (\"network byte order\"); \
         little-endian the least significant. This machine is {}.\n\
         In Rust: {}u{}.to_be_bytes() / .to_le_bytes(); in C: {}.\n",
        v.value,
        v.hex,
        v.bits,
        v.this_machine,
        v.hex,
        v.bits,
        match v.bits {
            16 => "htons() / ntohs()",
            32 => "htonl() / ntohl()",
            64 => "htobe64() / be64toh()",
            _ => "a single byte has no order",
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endian_orders_are_reversed() {
        let v = endian_view(0xDEADBEEF, None, 32);
        assert_eq!(v.big_endian, vec![0xDE, 0xAD, 0xBE, 0xEF]);
        assert_eq!(v.little_endian, vec![0xEF, 0xBE, 0xAD, 0xDE]);
        assert_eq!(v.hex, "0xDEADBEEF");
    }

    #[test]
    fn dump_names_every_field() {
        let frame = Frame::request(42, 7, &b"hi"[..]);
        let bytes = frame.to_bytes().unwrap();
        let rows = annotate(&bytes, &frame);
        assert_eq!(rows[3].hex, "00 00 00 2A");
        assert_eq!(rows[4].offset, "8..12");
        assert!(render_dump(&rows).contains("message id"));
    }

    #[test]
    fn errors_point_at_the_bytes() {
        let bytes = [0xF8, 0x17];
        let err = frame::decode_datagram(&bytes).unwrap_err();
        let text = render_error(&bytes, &err);
        assert!(text.contains("unknown frame type 7"));
        assert!(text.contains("   ^^"), "{text}");
    }
}
