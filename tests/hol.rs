//! `proto hol` (claim C6): across a lossy link, a lost packet stalls every
//! stream on TCP (one ordered byte stream) but only its own on QUIC and on
//! SCTP (claim C12: multi-streaming).

mod support;

use std::process::Command;
use support::lab_or_skip;

#[test]
fn a_loss_stalls_all_streams_on_tcp_and_one_on_quic() {
    if !lab_or_skip("a_loss_stalls_all_streams_on_tcp_and_one_on_quic") {
        return;
    }
    let certs = std::env::temp_dir().join(format!("proto-hol-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_proto"))
        .args([
            "hol",
            "--duration",
            "5s",
            "--loss",
            "3%",
            "--seed",
            "5",
            "--json",
        ])
        .env("PROTO_CERT_DIR", &certs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |t: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["transport"] == t)
            .unwrap()
            .clone()
    };
    let (tcp, quic, sctp) = (row("tcp"), row("quic"), row("sctp"));
    for r in [&tcp, &quic, &sctp] {
        assert_eq!(
            r["requests"], 2000,
            "8 streams × 250 requests, all answered: {r}"
        );
        assert!(
            r["packets_lost"].as_u64().unwrap() > 10,
            "the link lost packets: {r}"
        );
    }
    // Per loss event, measured: TCP stalls (nearly) every stream, QUIC and
    // SCTP the one whose packet was lost.
    let per_event = |r: &serde_json::Value| r["streams_per_loss_median"].as_f64().unwrap();
    assert!(
        per_event(&tcp) >= 6.0,
        "TCP: a loss stalls the streams behind it: {tcp}"
    );
    // (Two losses released by one retransmission count as one event: a
    // median of up to 2 still means "its own stream", far from TCP's.)
    assert!(
        per_event(&quic) <= 2.0,
        "QUIC: a loss stalls its own stream: {quic}"
    );
    assert!(
        per_event(&sctp) <= 2.0,
        "SCTP: a loss stalls its own stream: {sctp}"
    );
    for r in [&tcp, &quic, &sctp] {
        assert!(r["loss_events"].as_u64().unwrap() > 5, "{r}");
    }
    // Requests held up per lost packet also depend on how fast each stack
    // recovers (on a loaded machine QUIC's recovery held up 4.9 requests
    // per loss against TCP's 8.0): only the order is asserted; the claim is
    // the per-event count above.
    let per_loss = |r: &serde_json::Value| r["stalled_per_loss"].as_f64().unwrap();
    assert!(
        per_loss(&tcp) > per_loss(&quic),
        "TCP should stall more requests per loss than QUIC: tcp {tcp}, quic {quic}"
    );
    // SCTP's requests per loss are not compared: its retransmission timer
    // (T3-rtx, about 1 s) holds the lost stream's next requests long enough
    // to come near TCP's count (3.8 against 7.4 in one run at these
    // settings) although only that one stream waits.
}

#[test]
fn without_the_lab_it_says_what_it_needs() {
    // Run as an unprivileged user where we are root; as is otherwise.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ]);
        c.arg(env!("CARGO_BIN_EXE_proto"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_proto"))
    };
    let out = cmd.args(["hol", "--duration", "1s"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proto hol needs the emulated link"), "{err}");
    assert!(err.contains("root") || err.contains("sudo"), "{err}");
}
