//! `proto compare` end to end: every variant against theory across the
//! emulated link, the JSON and CSV outputs, loopback, and
//! `--to` against a server started separately.

mod support;

use std::process::Command;
use support::{lab_or_skip, Server, PROTO};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("proto-compare-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "proto compare failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"))
}

#[test]
fn every_variant_matches_theory_across_a_60ms_link() {
    if !lab_or_skip("every_variant_matches_theory_across_a_60ms_link") {
        return;
    }
    let certs = temp_dir("lab");
    let out = Command::new(PROTO)
        .args(["compare", "--rtt", "60ms", "--runs", "3", "--json"])
        .env("PROTO_CERT_DIR", &certs)
        .output()
        .unwrap();
    let report = json_of(&out);
    assert_eq!(report["environment"], "lab");
    let variants = report["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 12, "all twelve variants by default");
    for v in variants {
        let id = v["protocol"].as_str().unwrap();
        let theory = v["theory_rtts"].as_f64().unwrap();
        let measured = v["handshake_rtts"]
            .as_f64()
            .unwrap_or_else(|| panic!("{id} not measured: {}", v["note"]));
        assert!(
            (measured - theory).abs() <= 0.1,
            "{id}: measured {measured:.3} RTT, theory {theory} (note: {})",
            v["note"]
        );
        // The RTT is measured on each connection, and the link's is 60 ms.
        let rtt = v["rtt_ms"].as_f64().unwrap();
        assert!((59.0..66.0).contains(&rtt), "{id}: connection RTT {rtt} ms");
        for sample in v["samples"].as_array().unwrap() {
            if id.ends_with("-resumed") || id.contains("0rtt") {
                assert_eq!(sample["resumed"], true, "{id}: every run resumed");
                assert_eq!(sample["certificate_received"], false, "{id}: {sample}");
            }
            if ["tls1.2", "tls1.3", "quic"].contains(&id) {
                // Plain rows are full handshakes: the server sends its certificate.
                assert_eq!(sample["resumed"], false, "{id}: a full handshake");
                assert_eq!(sample["certificate_received"], true, "{id}: {sample}");
            }
            if id.contains("0rtt") {
                assert_eq!(
                    sample["early_data_accepted"], true,
                    "{id}: the server accepted early data"
                );
            }
        }
    }
    let link = &report["link"];
    assert!(
        link["client_to_server"]["delivered_packets"]
            .as_u64()
            .unwrap_or(0)
            > 100,
        "{link}"
    );
}

/// No number in `json` carries more than 12 significant digits (binary
/// float noise such as `454.57599999999996` has 17).
fn v_has_no_float_noise(json: &[u8]) -> bool {
    let text = String::from_utf8_lossy(json);
    let noisy: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|t| {
            let significant = t.trim_start_matches(['0', '.']).replace('.', "");
            t.contains('.') && significant.len() > 12
        })
        .collect();
    assert!(noisy.is_empty(), "float noise in JSON: {noisy:?}");
    true
}

/// Claim check for a lossy link: a handshake that lost a packet waits for
/// a retransmission timer, and the report must say so instead of "matches".
#[test]
fn losses_inflate_handshakes_and_the_report_names_the_timer() {
    if !lab_or_skip("losses_inflate_handshakes_and_the_report_names_the_timer") {
        return;
    }
    let certs = temp_dir("loss");
    let out = Command::new(PROTO)
        .args([
            "compare",
            "--rtt",
            "20ms",
            "--loss",
            "10%",
            "--seed",
            "3",
            "--protocols",
            "tls1.3,quic",
            "--runs",
            "12",
            "--json",
        ])
        .env("PROTO_CERT_DIR", &certs)
        .output()
        .unwrap();
    let report = json_of(&out);
    v_has_no_float_noise(&out.stdout);
    let mut inflated_total = 0;
    for v in report["variants"].as_array().unwrap() {
        let id = v["protocol"].as_str().unwrap();
        let theory = v["theory_rtts"].as_f64().unwrap();
        // Inflated runs are exactly the samples ≥ 1 RTT beyond theory.
        let slow = v["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                let (first, rtt) = (
                    s["first_reply_ms"].as_f64().unwrap(),
                    s["rtt_ms"].as_f64().unwrap(),
                );
                (first - rtt) / rtt - theory >= 1.0
            })
            .count();
        let groups = v["inflated"].as_array().unwrap();
        let counted: u64 = groups.iter().map(|g| g["runs"].as_u64().unwrap()).sum();
        assert_eq!(counted as usize, slow, "{id}: {v}");
        for g in groups {
            let timer = g["timer"].as_str().unwrap();
            if g["retransmission"] == true {
                let own = if id == "quic" { "QUIC's" } else { "TCP's" };
                assert!(timer.starts_with(own), "{id}: {timer}");
            }
        }
        // The spread is reported beside the median.
        assert!(v["handshake_rtts_p90"].as_f64().unwrap() >= v["handshake_rtts"].as_f64().unwrap());
        inflated_total += slow;
    }
    assert!(
        inflated_total > 0,
        "at 10 % loss over 24 handshakes some must wait for a timer: {report}"
    );
    let lost: u64 = ["client_to_server", "server_to_client"]
        .iter()
        .map(|d| report["link"][d]["dropped_loss"].as_u64().unwrap())
        .sum();
    assert!(lost > 0, "{report}");
}

#[test]
fn loopback_json_has_one_object_per_variant() {
    let certs = temp_dir("json");
    let out = Command::new(PROTO)
        .args([
            "compare",
            "--loopback",
            "--protocols",
            "tcp,tls1.3,quic,udp",
            "--runs",
            "2",
            "--json",
        ])
        .env("PROTO_CERT_DIR", &certs)
        .output()
        .unwrap();
    let report = json_of(&out);
    assert_eq!(report["environment"], "loopback");
    assert_eq!(report["runs"], 2);
    let ids: Vec<&str> = report["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["protocol"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tcp", "tls1.3", "quic", "udp"]);
    for v in report["variants"].as_array().unwrap() {
        for key in [
            "protocol",
            "theory_rtts",
            "handshake_rtts",
            "handshake_rtts_min",
            "handshake_rtts_max",
            "rtt_ms",
            "first_reply_ms",
            "handshake_rtts_p90",
            "inflated",
            "matches_theory",
            "samples",
        ] {
            assert!(v.get(key).is_some(), "{}: missing {key}", v["protocol"]);
        }
        assert!(
            v["handshake_rtts"].is_number(),
            "{} measured",
            v["protocol"]
        );
        assert_eq!(v["samples"].as_array().unwrap().len(), 2);
    }
    let tls = &report["variants"][1];
    assert!(tls["crypto_handshake_ms"].as_f64().unwrap() > 0.0);
    assert!(v_has_no_float_noise(&out.stdout));
    assert!(
        tls["handshake_bytes_received"].as_u64().unwrap() > 500,
        "certificate bytes"
    );
}

#[test]
fn csv_has_a_header_and_a_row_per_variant() {
    let certs = temp_dir("csv");
    let out = Command::new(PROTO)
        .args([
            "compare",
            "--loopback",
            "--protocols",
            "tcp,udp",
            "--runs",
            "1",
            "--csv",
        ])
        .env("PROTO_CERT_DIR", &certs)
        .output()
        .unwrap();
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("protocol,theory_rtts,handshake_rtts,"));
    assert_eq!(lines.len(), 3);
    assert!(lines[1].starts_with("tcp,1,"));
    assert!(lines[2].starts_with("udp,0,"));
}

// Without the lab, compare says so and measures on loopback: see
// tests/rootless.rs, which controls /dev/net/tun's mode for it.

#[test]
fn to_measures_a_server_started_separately() {
    let certs = temp_dir("remote");
    let certs_arg = certs.to_str().unwrap();
    // Find a port free for both TCP and UDP, for `serve all`'s plain services.
    let (plain, secure) = loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let tcp2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port2 = tcp2.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port2)).is_ok() {
            break (port, port2);
        }
    };
    let server = Server::start(
        &[
            "all",
            "--port",
            &plain.to_string(),
            "--secure-port",
            &secure.to_string(),
            "--sctp-port",
            "0",
            "--cert-dir",
            certs_arg,
            "-q",
        ],
        4,
    );
    let out = Command::new(PROTO)
        .args([
            "compare",
            "--to",
            "127.0.0.1",
            "--plain-port",
            &plain.to_string(),
            "--secure-port",
            &secure.to_string(),
            "--ca",
            &format!("{certs_arg}/ca.pem"),
            "--protocols",
            "tcp,tls1.2,tls1.3-0rtt,quic-0rtt,udp",
            "--runs",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    let report = json_of(&out);
    assert_eq!(report["environment"], "remote");
    for v in report["variants"].as_array().unwrap() {
        assert!(
            v["handshake_rtts"].is_number(),
            "{} measured: {}",
            v["protocol"],
            v["note"]
        );
    }
    let zero_rtt = &report["variants"][2];
    assert_eq!(
        zero_rtt["samples"][0]["early_data_accepted"], true,
        "{zero_rtt}"
    );
    drop(server);
}

#[test]
fn unknown_protocol_is_a_clear_error() {
    let out = Command::new(PROTO)
        .args(["compare", "--protocols", "tcp,dccp"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dccp") && err.contains("possible values"),
        "{err}"
    );
}
