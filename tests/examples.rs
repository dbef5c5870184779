//! Every program in `examples/` runs and shows what it says it shows.
//! `cargo test` builds the examples before running tests; their binaries sit
//! in `target/<profile>/examples/`, beside this test's `deps/` directory.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::lab_or_skip;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} missing: `cargo test` builds examples; run `cargo build --examples`",
        path.display()
    );
    path
}

fn run(name: &str) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(example(name))
        .stdin(Stdio::null())
        .output()
        .expect("start the example");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        status.success(),
        "{name} failed ({status}):\n{stdout}\n{}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

#[test]
fn decode_frame_shows_big_endian_and_refuses_garbage() {
    let out = run("decode_frame");
    assert!(out.contains("25 bytes on the wire"), "{out}");
    assert!(out.contains("big-endian: [00, 00, 00, 07]"), "{out}");
    assert!(out.contains("incomplete, wait for more"), "{out}");
    assert!(out.contains("payload \"hello\""), "{out}");
    assert!(out.contains("refused: bad magic byte"), "{out}");
}

#[test]
fn tls_resumption_is_accepted_with_early_data() {
    let out = run("tls_resumption");
    assert!(out.contains("full handshake: TLS 1.3"), "{out}");
    assert!(
        out.contains("resumed with 0-RTT: TLS 1.3")
            && out.contains("resumed: yes, early data offered: yes, accepted: yes"),
        "{out}"
    );
    assert!(out.contains("SENT BEFORE THE HANDSHAKE FINISHED"), "{out}");
    assert!(
        out.contains("1 resumed, 1 with early data accepted"),
        "{out}"
    );
}

#[test]
fn quic_streams_share_one_connection() {
    let out = run("quic_streams");
    for line in [
        "STREAM ONE SAYS HI",
        "STREAM TWO SAYS HI",
        "STREAM THREE SAYS HI",
    ] {
        assert!(out.contains(line), "{out}");
    }
    assert!(out.contains("one handshake"), "{out}");
}

#[test]
fn echo_server_answers_nc_style_lines() {
    use std::io::{BufRead, BufReader, Write};
    let mut server = Command::new(example("echo_server"))
        .args(["--once", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start echo_server");
    let mut stdout = BufReader::new(server.stdout.take().expect("stdout"));
    let mut banner = String::new();
    stdout.read_line(&mut banner).expect("banner");
    let address = banner
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no address in {banner:?}"));
    let mut socket = std::net::TcpStream::connect(address).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    socket
        .write_all(b"hello\ngr\xc3\xbc\xc3\x9fe\n")
        .expect("write");
    socket
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut replies = String::new();
    let mut reader = BufReader::new(socket);
    while reader.read_line(&mut replies).expect("read") > 0 {}
    assert_eq!(replies, "HELLO\nGRÜSSE\n");
    assert!(server.wait().expect("wait").success());
}

#[test]
fn handshake_rtts_match_theory_across_the_lab() {
    if !lab_or_skip("handshake_rtts_match_theory_across_the_lab") {
        return;
    }
    let out = run("handshake_rtts");
    for (variant, theory) in [("tcp", 1.0), ("tls1.3", 2.0), ("quic", 1.0)] {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(variant))
            .unwrap_or_else(|| panic!("no {variant} row:\n{out}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        let measured: f64 = fields[fields.len() - 2].parse().expect("RTT count");
        assert!(
            (measured - theory).abs() <= 0.25,
            "{variant}: {measured} RTTs, theory {theory}:\n{out}"
        );
    }
}
