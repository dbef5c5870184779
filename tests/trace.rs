//! `proto trace` end to end across the lab: for every `proto compare`
//! variant, the ladder's packets against an independent dissector
//! (tshark, reading the secrets from the pcapng file itself), the
//! handshake cost against `proto compare`, the retransmission timers after
//! a dropped SYN or QUIC Initial, `--read` of a capture, and the SVG.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{lab_or_skip, PROTO};

const VARIANTS: [&str; 12] = [
    "tcp",
    "tls1.2",
    "tls1.2-resumed",
    "tls1.3",
    "tls1.3-resumed",
    "tls1.3-0rtt",
    "tls1.3-0rtt-tfo",
    "quic",
    "quic-resumed",
    "quic-0rtt",
    "udp",
    "sctp",
];

/// One lab at a time: three labs timing packets at once on a small
/// machine would disturb each other's clocks.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB.lock().unwrap_or_else(|e| e.into_inner())
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("proto-trace-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `proto trace ARGS --json` and returns the JSON.
fn trace(certs: &Path, args: &[&str]) -> Value {
    support::proto_json("trace", args, certs)
}

fn packets(v: &Value) -> &Vec<Value> {
    v["ladders"][0]["packets"]
        .as_array()
        .expect("a ladder with packets")
}

/// TCP flag names → the bits tshark prints in `tcp.flags`.
fn flag_bits(names: &str) -> u32 {
    names
        .split(',')
        .map(|n| match n {
            "FIN" => 0x01,
            "SYN" => 0x02,
            "RST" => 0x04,
            "PSH" => 0x08,
            "ACK" => 0x10,
            "URG" => 0x20,
            "ECE" => 0x40,
            "CWR" => 0x80,
            _ => 0,
        })
        .sum()
}

/// A JSON array of numbers, e.g. a packet's `tls_handshake`.
fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn numbers(field: &str) -> Vec<u64> {
    field
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = s.trim();
            match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).unwrap(),
                None => s.parse().unwrap(),
            }
        })
        .collect()
}

/// tshark's view of one frame: ip.src, tcp.flags, handshake types, QUIC
/// frame types, SCTP chunk types.
type Dissected = (String, Option<u32>, Vec<u64>, Vec<u64>, Vec<u64>);

fn tshark(pcap: &Path) -> Vec<Dissected> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap)
        .args([
            // SCTP over UDP (RFC 6951) on its registered port.
            "-d",
            "udp.port==9899,sctp",
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-e",
            "ip.src",
            "-e",
            "tcp.flags",
            "-e",
            "tls.handshake.type",
            "-e",
            "quic.frame_type",
            "-e",
            "sctp.chunk_type",
        ])
        .output()
        .expect("tshark is not installed: apt-get install tshark (.ci/run does this)");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("");
            let flags = numbers(get(1)).first().map(|&b| b as u32);
            (
                get(0).to_string(),
                flags,
                numbers(get(2)),
                numbers(get(3)),
                numbers(get(4)),
            )
        })
        .collect()
}

#[test]
fn every_variant_agrees_with_tshark_and_with_compare() {
    if !lab_or_skip("every_variant_agrees_with_tshark_and_with_compare") {
        return;
    }
    let _one = one_lab();
    let dir = temp_dir("variants");
    let certs = dir.join("certs");
    // proto compare's own figures, to check the ladder's handshake cost.
    let out = Command::new(PROTO)
        .args(["compare", "--rtt", "60ms", "--runs", "5", "--json"])
        .env("PROTO_CERT_DIR", &certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let compare: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut failures = Vec::new();
    for variant in VARIANTS {
        let pcap = dir.join(format!("{variant}.pcapng"));
        let t = trace(
            &certs,
            &[variant, "--rtt", "60ms", "--pcap", pcap.to_str().unwrap()],
        );
        let ours = packets(&t);
        let theirs = tshark(&pcap);
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{variant}: proto and tshark see different numbers of packets"
        );
        let mut saw_handshake = false;
        for (i, (p, (src, flags, hs, frames, chunks))) in ours.iter().zip(&theirs).enumerate() {
            let c2s = p["direction"] == "c2s";
            assert_eq!(src == "10.77.0.1", c2s, "{variant} packet {i}: direction");
            if let Some(f) = p["tcp_flags"].as_str() {
                assert_eq!(
                    Some(flag_bits(f)),
                    *flags,
                    "{variant} packet {i}: TCP flags"
                );
            }
            let our_hs = u64s(&p["tls_handshake"]);
            assert_eq!(&our_hs, hs, "{variant} packet {i}: TLS handshake types");
            saw_handshake |= !our_hs.is_empty();
            let our_frames = u64s(&p["quic_frames"]);
            assert_eq!(
                &our_frames, frames,
                "{variant} packet {i}: QUIC frame types"
            );
            let our_chunks = u64s(&p["sctp_chunks"]);
            assert_eq!(
                &our_chunks, chunks,
                "{variant} packet {i}: SCTP chunk types"
            );
        }
        if !["tcp", "udp", "sctp"].contains(&variant) {
            assert!(saw_handshake, "{variant}: no TLS handshake message decoded");
        }
        // The reply was decrypted: its text is on the ladder.
        let text = serde_json::to_string(ours).unwrap();
        assert!(
            text.contains("HELLO FROM PROTO TRACE"),
            "{variant}: the echo reply is not shown in clear"
        );
        // The handshake cost agrees with proto compare's. One connection
        // is one sample: a machine busy elsewhere can delay a packet by
        // milliseconds, so a variant that misses gets two more tries.
        let theirs = compare["variants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["protocol"] == variant)
            .and_then(|v| v["handshake_rtts"].as_f64());
        let mut ladder = t["ladders"][0]["handshake_rtts"].as_f64();
        let agrees =
            |l: Option<f64>| matches!((l, theirs), (Some(a), Some(b)) if (a - b).abs() <= 0.1);
        for _ in 0..2 {
            if agrees(ladder) {
                break;
            }
            let again = trace(&certs, &[variant, "--rtt", "60ms"]);
            ladder = again["ladders"][0]["handshake_rtts"].as_f64();
        }
        if !agrees(ladder) {
            failures.push(format!(
                "{variant}: ladder {ladder:?} vs compare {theirs:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "handshake RTTs differ: {failures:?}");
}

/// Time between the first two packets carrying `name` in direction `dir`.
fn gap_ms(t: &Value, dir: &str, pick: impl Fn(&Value) -> bool) -> f64 {
    let times: Vec<f64> = packets(t)
        .iter()
        .filter(|p| p["direction"] == dir && pick(p))
        .map(|p| p["time_ms"].as_f64().unwrap())
        .collect();
    assert!(times.len() >= 2, "no retransmission seen: {times:?}");
    times[1] - times[0]
}

#[test]
fn a_dropped_syn_and_a_dropped_initial_show_the_retransmission_timers() {
    if !lab_or_skip("a_dropped_syn_and_a_dropped_initial_show_the_retransmission_timers") {
        return;
    }
    let _one = one_lab();
    let dir = temp_dir("faults");
    let certs = dir.join("certs");
    // Linux: the initial retransmission timeout is 1 s (RFC 6298 §2.1, TCP_TIMEOUT_INIT).
    let t = trace(&certs, &["tcp", "--rtt", "60ms", "--drop", "c2s:SYN"]);
    let first = &packets(&t)[0];
    assert_eq!(first["fate"], "dropped");
    assert!(first["labels"][0].as_str().unwrap().starts_with("SYN"));
    let gap = gap_ms(&t, "c2s", |p| p["tcp_flags"] == "SYN");
    assert!(
        (900.0..=1100.0).contains(&gap),
        "SYN retransmitted after {gap} ms, not ~1000"
    );
    // quinn: initial RTT estimate 333 ms, so the first probe timeout is
    // 333 + 4 × 333/2 = 999 ms (RFC 9002 §6.2).
    let qlog = dir.join("qlog");
    let t = trace(
        &certs,
        &[
            "quic",
            "--rtt",
            "60ms",
            "--drop",
            "c2s:Initial",
            "--qlog",
            qlog.to_str().unwrap(),
        ],
    );
    // quinn's own record of the connection, as qvis reads it.
    let log = std::fs::read_to_string(qlog.join("quic-client.sqlog")).unwrap();
    assert!(log.contains("\"JSON-SEQ\"") && log.contains("transport:packet_sent"));
    assert_eq!(packets(&t)[0]["fate"], "dropped");
    let gap = gap_ms(&t, "c2s", |p| {
        p["quic_packets"].as_array().unwrap().first() == Some(&Value::from("Initial"))
            && p["labels"].to_string().contains("ClientHello")
    });
    assert!(
        (899.0..=1099.0).contains(&gap),
        "Initial resent after {gap} ms, not ~999"
    );
}

#[test]
fn reading_the_capture_back_draws_the_same_ladder_and_the_svg_renders() {
    if !lab_or_skip("reading_the_capture_back_draws_the_same_ladder_and_the_svg_renders") {
        return;
    }
    let _one = one_lab();
    let dir = temp_dir("read");
    let certs = dir.join("certs");
    let pcap = dir.join("t.pcapng");
    let svg = dir.join("t.svg");
    let live = trace(
        &certs,
        &[
            "tls1.3",
            "--rtt",
            "60ms",
            "--pcap",
            pcap.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
        ],
    );
    let read = trace(&certs, &["--read", pcap.to_str().unwrap()]);
    let labels = |v: &Value| -> Vec<Value> {
        packets(v)
            .iter()
            .map(|p| serde_json::json!([p["direction"], p["labels"]]))
            .collect()
    };
    assert_eq!(labels(&live), labels(&read));
    let png = dir.join("t.png");
    let out = Command::new("rsvg-convert")
        .arg(&svg)
        .arg("-o")
        .arg(&png)
        .output()
        .expect("rsvg-convert is not installed: apt-get install librsvg2-bin (.ci/run does this)");
    assert!(
        out.status.success(),
        "the SVG does not render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    // proto compare --ladder draws a ladder under its table.
    let out = Command::new(PROTO)
        .args([
            "compare",
            "--protocols",
            "tcp",
            "--runs",
            "1",
            "--rtt",
            "20ms",
            "--ladder",
        ])
        .env("PROTO_CERT_DIR", &certs)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("├─ SYN") && text.contains("TCP handshake done"),
        "{text}"
    );
}
