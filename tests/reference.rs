//! The C reference of `benches/compare-ref.sh` is part of the repository:
//! it builds with `cc` from a clone, its client checks proto's server, and
//! proto's client checks its server — the pieces the comparison needs.

mod support;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{outside_program, Server, PROTO};

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference");

/// Builds `benches/reference/NAME.c` with `cc`, as compare-ref.sh does.
fn build(test: &str, name: &str, out: &Path) -> Option<PathBuf> {
    let mut cc = outside_program(test, "cc", "build-essential")?;
    let binary = out.join(name);
    let status = cc
        .args(["-O2", "-pthread", "-o"])
        .arg(&binary)
        .arg(Path::new(REFERENCE).join(format!("{name}.c")))
        .status()
        .unwrap();
    assert!(status.success(), "cc failed to build {name}.c");
    Some(binary)
}

/// A TCP port nobody listens on right now (for echo-ref, which takes one).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn the_c_reference_builds_and_talks_to_proto_both_ways() {
    let test = "the_c_reference_builds_and_talks_to_proto_both_ways";
    let dir = std::env::temp_dir().join(format!("proto-reference-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (Some(echo_rtt), Some(echo_ref)) =
        (build(test, "echo-rtt", &dir), build(test, "echo-ref", &dir))
    else {
        return;
    };

    // The C client against proto's server: every reply checked, as JSON.
    let server = Server::start(&["tcp", "--port", "0", "--quiet"], 1);
    let port = server.addr("tcp").port().to_string();
    let out = Command::new(&echo_rtt)
        .args(["-p", &port, "-n", "200", "-s", "64", "-w", "10"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "echo-rtt against proto: {line}");
    let report: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(report["msgs"], 200, "{report}");
    assert_eq!(report["mismatches"], 0, "{report}");

    // proto's client against the C server.
    let port = free_port();
    let mut reference = Command::new(&echo_ref)
        .args(["-p", &port.to_string()])
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "echo-ref never listened"
        );
        std::thread::yield_now();
    }
    let out = Command::new(PROTO)
        .args(["client", "tcp", &format!("127.0.0.1:{port}")])
        .args(["--count", "200", "--size", "64", "--json"])
        .output()
        .unwrap();
    let _ = reference.kill();
    let _ = reference.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "proto client against echo-ref: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["requests"], 200, "{report}");
    assert_eq!(report["mismatches"], 0, "{report}");
}

#[test]
fn compare_ref_needs_nothing_outside_the_repository() {
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/compare-ref.sh"
    ))
    .unwrap();
    assert!(
        script.contains("benches/reference") && !script.contains("../"),
        "compare-ref.sh must build the C reference from benches/reference"
    );
    for source in ["echo-ref.c", "echo-rtt.c"] {
        assert!(
            Path::new(REFERENCE).join(source).is_file(),
            "{source} is missing"
        );
    }
}
