//! The command line itself: help texts, `proto codec`, `proto endian`.

mod support;

use std::process::Command;
use support::{run_with_input, PROTO};

fn proto(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(PROTO).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_subcommand_help_says_what_it_demonstrates() {
    let (ok, top, _) = proto(&["--help"]);
    assert!(ok);
    for sub in [
        "serve", "client", "codec", "endian", "compare", "lab", "bench", "transfer", "trace",
    ] {
        assert!(top.contains(sub), "top-level help lists {sub}");
        let (ok, help, _) = proto(&[sub, "--help"]);
        assert!(ok, "{sub} --help");
        assert!(help.len() > 200, "{sub} --help is substantial");
    }
    // Each long help names the protocol idea it demonstrates.
    for (sub, idea) in [
        ("endian", "network byte order"),
        ("compare", "3-way handshake"),
        ("lab", "round trip"),
        ("serve", "request/response"),
        ("bench", "latency"),
        ("transfer", "bandwidth-delay product"),
        ("trace", "ladder diagram"),
    ] {
        let (_, help, _) = proto(&[sub, "--help"]);
        assert!(help.contains(idea), "{sub} --help mentions {idea:?}");
    }
}

#[test]
fn codec_encode_then_decode_round_trips_through_hex() {
    let (ok, out, _) = proto(&[
        "codec",
        "encode",
        "--id",
        "42",
        "--timestamp",
        "1000000000",
        "hello",
    ]);
    assert!(ok);
    let hex = out.lines().last().unwrap();
    assert_eq!(hex, "F81100000000002A00000005000000003B9ACA0068656C6C6F");
    let (status, decoded, _) = run_with_input(
        Command::new(PROTO).args(["codec", "decode", "--json"]),
        hex.as_bytes(),
    );
    assert!(status.success());
    let v: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(v["id"], 42);
    assert_eq!(v["payload"], "hello");
}

#[test]
fn codec_decode_reports_the_precise_error() {
    let (ok, _, err) = proto(&[
        "codec",
        "decode",
        "F8 11 0000 0000002A 00011170 000000003B9ACA00",
    ]);
    assert!(!ok);
    assert!(
        err.contains("payload length 70000 exceeds the maximum 65536 (bytes 8..12)"),
        "{err}"
    );
    let (ok, _, err) = proto(&["codec", "decode", "F8 1"]);
    assert!(!ok);
    assert!(err.contains("odd number of hex digits"), "{err}");
}

#[test]
fn endian_shows_both_byte_orders() {
    let (ok, out, _) = proto(&["endian", "--json", "0xDEADBEEF"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["big_endian"], serde_json::json!([0xDE, 0xAD, 0xBE, 0xEF]));
    assert_eq!(
        v["little_endian"],
        serde_json::json!([0xEF, 0xBE, 0xAD, 0xDE])
    );
    let (ok, out, _) = proto(&["endian", "--bits", "16", "--", "-2"]);
    assert!(ok, "{out}");
    assert!(out.contains("FF") && out.contains("FE"), "{out}");
    let (ok, _, err) = proto(&["endian", "--bits", "8", "300"]);
    assert!(!ok);
    assert!(err.contains("does not fit"), "{err}");
}

/// Runs proto with stdout a pipe whose reading end is already closed, as
/// `proto … | head` leaves it once `head` has its lines.
fn into_closed_pipe(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(PROTO)
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_any_subcommand_quietly() {
    let server = support::Server::start(&["tcp", "--port", "0", "--quiet"], 1);
    let tcp = server.addr("tcp").to_string();
    for args in [
        vec!["codec", "encode", "hello"],
        vec!["endian", "8081"],
        vec!["client", "tcp", &tcp, "-m", "hello"],
        vec!["client", "tcp", &tcp, "--count", "100", "--json"],
        vec!["client", "tcp", &tcp, "--count", "100"],
        vec!["bench", "--count", "10", "--protocols", "tcp", "--json"],
    ] {
        let out = into_closed_pipe(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("panicked") && !stderr.contains("error"),
            "proto {args:?} into a closed pipe: {:?}\n{stderr}",
            out.status
        );
    }
}
