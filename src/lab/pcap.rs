//! A minimal pcap writer (and reader, for tests) for the packets on the link.
//!
//! The classic pcap format that tcpdump and Wireshark open is a 24-byte file
//! header followed by one 16-byte record header per packet. All fields are
//! in the writer's byte order; the magic number tells the reader which
//! order that was (we write little-endian, like most pcap files).
//!
//! ```text
//! file header (24 bytes)
//!  0      4          6          8            12          16          20
//! +------+----------+----------+------------+-----------+-----------+----------+
//! |magic |ver major=2|ver minor=4| thiszone=0 | sigfigs=0 |  snaplen  | linktype |
//! +------+----------+----------+------------+-----------+-----------+----------+
//! magic 0xa1b23c4d = timestamps in nanoseconds (0xa1b2c3d4 would be µs)
//! linktype 101 = LINKTYPE_RAW: each packet starts directly with its IP header
//!
//! record header (16 bytes), then incl_len bytes of packet
//! +-----------+-----------+-----------+-----------+
//! |  ts_sec   |  ts_nsec  | incl_len  | orig_len  |
//! +-----------+-----------+-----------+-----------+
//! ```

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
pub const LINKTYPE_RAW: u32 = 101;

/// Writes pcap records to any `Write` (a BufWriter<File> in practice).
pub struct PcapWriter<W: Write> {
    out: W,
    snaplen: u32,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W, snaplen: u32) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_NANOS.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes()); // thiszone: timestamps are UTC
        h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        h.extend_from_slice(&snaplen.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out, snaplen })
    }

    /// Append one packet stamped with `ts` (wall-clock time).
    pub fn write_packet(&mut self, ts: SystemTime, packet: &[u8]) -> io::Result<()> {
        let since = ts.duration_since(UNIX_EPOCH).unwrap_or_default();
        let incl = packet.len().min(self.snaplen as usize);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&(since.as_secs() as u32).to_le_bytes());
        h[4..8].copy_from_slice(&since.subsec_nanos().to_le_bytes());
        h[8..12].copy_from_slice(&(incl as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(packet.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(&packet[..incl])
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One record read back from a pcap file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Nanoseconds since the Unix epoch.
    pub ts_nanos: u128,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Parsed pcap file: the link type and its records.
#[derive(Clone, Debug)]
pub struct Capture {
    pub linktype: u32,
    pub records: Vec<Record>,
}

/// Parse a pcap file (either byte order, µs or ns timestamps).
pub fn parse(bytes: &[u8]) -> Result<Capture, String> {
    let header = bytes
        .get(..24)
        .ok_or("file shorter than the 24-byte pcap header")?;
    let magic_le = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let (little, nanos) = match magic_le {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        m => return Err(format!("not a pcap file (magic {m:#010x})")),
    };
    let u32_at = |b: &[u8], i: usize| {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let linktype = u32_at(header, 20);
    let mut records = Vec::new();
    let mut pos = 24;
    while pos < bytes.len() {
        let h = bytes.get(pos..pos + 16).ok_or("truncated record header")?;
        let (sec, frac, incl, orig) = (u32_at(h, 0), u32_at(h, 4), u32_at(h, 8), u32_at(h, 12));
        pos += 16;
        let data = bytes
            .get(pos..pos + incl as usize)
            .ok_or("truncated packet data")?;
        pos += incl as usize;
        let frac_nanos = if nanos {
            frac as u128
        } else {
            frac as u128 * 1000
        };
        records.push(Record {
            ts_nanos: sec as u128 * 1_000_000_000 + frac_nanos,
            orig_len: orig,
            data: data.to_vec(),
        });
    }
    Ok(Capture { linktype, records })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn writes_exact_header_and_record_bytes() {
        let mut w = PcapWriter::new(Vec::new(), 65535).unwrap();
        let ts = UNIX_EPOCH + Duration::new(0x0102_0304, 5);
        w.write_packet(ts, &[0x45, 0, 0, 20]).unwrap();
        let bytes = w.out;
        assert_eq!(
            bytes,
            [
                0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101,
                0, 0, 0, // header
                4, 3, 2, 1, 5, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, // record header
                0x45, 0, 0, 20, // packet
            ]
        );
        let cap = parse(&bytes).unwrap();
        assert_eq!(cap.linktype, LINKTYPE_RAW);
        assert_eq!(cap.records.len(), 1);
        assert_eq!(cap.records[0].ts_nanos, 0x0102_0304u128 * 1_000_000_000 + 5);
    }

    #[test]
    fn snaplen_truncates_but_keeps_original_length() {
        let mut w = PcapWriter::new(Vec::new(), 2).unwrap();
        w.write_packet(UNIX_EPOCH, &[1, 2, 3]).unwrap();
        let cap = parse(&w.out).unwrap();
        assert_eq!(cap.records[0].data, vec![1, 2]);
        assert_eq!(cap.records[0].orig_len, 3);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"hello").is_err());
        assert!(parse(&[0u8; 24]).is_err());
    }
}
