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

/// Every command with examples in its help.
const WITH_EXAMPLES: [&str; 11] = [
    "serve",
    "client",
    "codec encode",
    "codec decode",
    "endian",
    "compare",
    "lab",
    "bench",
    "transfer",
    "trace",
    "hol",
];

/// `proto SUB --help` with the terminal `columns` wide.
fn help_at_width(sub: &str, columns: u32) -> String {
    let out = Command::new(PROTO)
        .args(sub.split(' '))
        .arg("--help")
        .env("COLUMNS", columns.to_string())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text after the options: examples and notes.
fn after_options(help: &str) -> &str {
    help.find("\nExamples:").map_or("", |at| &help[at..])
}

#[test]
fn help_examples_and_notes_fit_an_80_column_terminal_unwrapped() {
    // clap re-wraps any line wider than the terminal; a wrapped example
    // breaks inside its quotes and cannot be pasted.
    for sub in WITH_EXAMPLES {
        let narrow = help_at_width(sub, 80);
        let wide = help_at_width(sub, 100);
        assert!(
            !after_options(&narrow).is_empty(),
            "{sub} --help has examples"
        );
        assert_eq!(
            after_options(&narrow),
            after_options(&wide),
            "{sub} --help: lines after the options re-wrap at 80 columns"
        );
        for line in after_options(&narrow).lines() {
            assert!(line.chars().count() <= 80, "{sub}: {line:?}");
            if line.trim_start().starts_with("proto ") {
                let command = line.trim().split("  ").next().unwrap_or_default();
                assert_eq!(
                    command.matches('\'').count() % 2,
                    0,
                    "{sub}: quotes: {line:?}"
                );
            }
        }
    }
}

#[test]
fn the_examples_of_endian_and_codec_run_as_written() {
    for sub in ["endian", "codec encode", "codec decode"] {
        let help = help_at_width(sub, 80);
        for line in after_options(&help).lines() {
            let Some(example) = line.trim_start().strip_prefix("proto ") else {
                continue;
            };
            // Up to the first run of spaces: what follows explains it.
            let command = example.split("  ").next().unwrap().trim();
            let status = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "{PROTO} {}",
                    command.replace("| proto", &format!("| {PROTO}"))
                ))
                .output()
                .unwrap();
            assert!(
                status.status.success(),
                "`proto {command}` from {sub} --help: {}",
                String::from_utf8_lossy(&status.stderr)
            );
        }
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

#[test]
fn a_certificate_directory_error_names_what_works_for_that_command() {
    // bench has no --cert-dir: the way out must work for it.
    let out = Command::new(PROTO)
        .args(["bench", "--protocols", "tls", "--count", "1"])
        .env("PROTO_CERT_DIR", "/proc/no-such-dir/certs")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot create the certificate directory"),
        "{err}"
    );
    assert!(err.contains("set PROTO_CERT_DIR=DIR (any command"), "{err}");
}

/// `--link NAME` is accepted by every command that builds the lab, with
/// each preset and its source listed in `--help`; an unknown name lists
/// the known ones.
#[test]
fn every_lab_command_takes_every_link_preset() {
    use clap::Parser;
    for sub in [
        &["lab"][..],
        &["compare"],
        &["hol"],
        &["bench"],
        &["transfer", "tcp"],
        &["trace", "tcp"],
    ] {
        for preset in &proto::lab::presets::PRESETS {
            let mut args = vec!["proto"];
            args.extend_from_slice(sub);
            args.extend(["--link", preset.name]);
            let parsed = proto::cli::Cli::try_parse_from(&args);
            assert!(
                parsed.is_ok(),
                "proto {sub:?} --link {}: {:?}",
                preset.name,
                parsed.err()
            );
        }
    }
    let (ok, help, _) = proto(&["compare", "--help"]);
    assert!(ok);
    for preset in &proto::lab::presets::PRESETS {
        assert!(
            help.contains(preset.name),
            "compare --help lists {}",
            preset.name
        );
    }
    assert!(
        help.contains("WebPageTest") && help.contains("RFC 2488"),
        "sources in --help"
    );
    let (ok, _, err) = proto(&["lab", "--link", "moon", "--", "true"]);
    assert!(!ok);
    assert!(
        err.contains("australia") && err.contains("satellite-geo"),
        "{err}"
    );
}
