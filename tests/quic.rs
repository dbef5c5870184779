//! QUIC end to end: proto's server in-process on port 0 and proto's client;
//! concurrent streams, datagrams, resumption and 0-RTT checked from the
//! server's side, and bad clients dropped without affecting others.

mod support;

use proto::client::StreamClient;
use proto::transport::certs::CertDir;
use proto::transport::quic::{self, ClientQuicOptions};
use proto::transport::tls::Trust;
use proto::transport::{ConnectInfo, Stream};
use std::time::{Duration, Instant};
use support::{count, wait_until, Options, TestServer, LIMIT};
use tokio::io::AsyncWriteExt;

async fn echo_once(server: &TestServer, opts: &ClientQuicOptions, line: &str) -> ConnectInfo {
    let (stream, mut info) = quic::connect(&server.quic_target(), opts, LIMIT)
        .await
        .unwrap();
    let mut client = StreamClient::new(stream, LIMIT);
    let reply = client.exchange_line(line.as_bytes()).await.unwrap();
    assert_eq!(reply, line.to_uppercase().as_bytes());
    client.get_ref().negotiated(&mut info);
    if let Stream::Quic(q) = client.finish_and_drain(LIMIT).await {
        q.close();
    }
    info
}

#[tokio::test]
async fn quic_echo_reports_what_was_negotiated() {
    let server = TestServer::start().await;
    let opts = ClientQuicOptions::new(&server.trust()).unwrap();
    let info = echo_once(&server, &opts, "hello quic").await;
    assert_eq!(info.version.as_deref(), Some("QUIC v1 (TLS 1.3)"));
    assert_eq!(info.alpn.as_deref(), Some("proto-echo"));
    assert_eq!(info.key_exchange_group.as_deref(), Some("X25519"));
    assert!(info
        .cipher_suite
        .as_deref()
        .unwrap_or("")
        .starts_with("TLS13_"));
    assert_eq!(info.resumed, Some(false));
    assert_eq!(info.early_data_accepted, Some(false));
    assert!(info.handshake_us.is_some());
    assert!(
        info.tcp_connect_us.is_none(),
        "QUIC has no separate transport handshake"
    );
    // The client's first datagram is padded to at least 1200 bytes.
    assert!(info.handshake_bytes_sent.unwrap() >= 1200);
    wait_until("the connection is counted", || {
        count(&server.stats.quic.completed) == 1
    })
    .await;
    let summary = server.stop().await;
    assert_eq!(summary.quic.completed, 1);
    assert_eq!(summary.messages, 1);
}

#[tokio::test]
async fn quic_echo_on_several_concurrent_streams() {
    let server = TestServer::start().await;
    let opts = ClientQuicOptions::new(&server.trust()).unwrap();
    let (stream, _) = quic::connect(&server.quic_target(), &opts, LIMIT)
        .await
        .unwrap();
    let Stream::Quic(first) = stream else {
        panic!("a QUIC stream")
    };
    let connection = first.connection.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let connection = connection.clone();
        tasks.spawn(async move {
            let (mut send, mut recv) = connection.open_bi().await.unwrap();
            // Each stream sends its lines in pieces, then finishes.
            for j in 0..3 {
                send.write_all(format!("stream {i} line {j}\n").as_bytes())
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
            send.finish().unwrap();
            let reply = recv.read_to_end(1 << 16).await.unwrap();
            let expected: String = (0..3).map(|j| format!("STREAM {i} LINE {j}\n")).collect();
            assert_eq!(String::from_utf8(reply).unwrap(), expected);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // The unused first stream is dropped with its connection.
    drop(first);
    connection.close(0u32.into(), b"done");
    wait_until("every session is over", || {
        count(&server.stats.messages) == 24
    })
    .await;
    let summary = server.stop().await;
    assert_eq!(summary.messages, 24);
    assert_eq!(summary.quic.completed, 1);
}

#[tokio::test]
async fn quic_datagrams_are_echoed_uppercased() {
    let server = TestServer::start().await;
    let opts = ClientQuicOptions::new(&server.trust()).unwrap();
    let (stream, _) = quic::connect(&server.quic_target(), &opts, LIMIT)
        .await
        .unwrap();
    let Stream::Quic(q) = stream else {
        panic!("a QUIC stream")
    };
    for text in ["one datagram", "another"] {
        let reply = quic::exchange_datagram(&q.connection, text.as_bytes(), LIMIT)
            .await
            .unwrap();
        assert_eq!(reply, text.to_uppercase().as_bytes());
    }
    q.close();
    let summary = server.stop().await;
    assert_eq!(summary.datagrams, 2);
}

#[tokio::test]
async fn quic_resumption_is_accepted_by_the_server() {
    let server = TestServer::start().await;
    let opts = ClientQuicOptions::new(&server.trust()).unwrap();
    let first = proto::client::resume::fetch_quic_ticket(&server.quic_target(), &opts, LIMIT)
        .await
        .unwrap();
    assert_eq!(first.resumed, Some(false));
    assert_eq!(first.certificate_received, Some(true), "{first:?}");
    let info = echo_once(&server, &opts, "resumed").await;
    assert_eq!(info.resumed, Some(true), "{info:?}");
    assert_eq!(info.certificate_received, Some(false), "{info:?}");
    wait_until("both handshakes are counted", || {
        count(&server.stats.quic.completed) == 2
    })
    .await;
    let summary = server.stop().await;
    assert_eq!(summary.quic.resumed, 1, "the server resumed one handshake");
    assert_eq!(summary.quic.early_data_accepted, 0);
}

#[tokio::test]
async fn quic_zero_rtt_is_accepted_by_the_server() {
    let server = TestServer::start().await;
    let mut opts = ClientQuicOptions::new(&server.trust()).unwrap();
    proto::client::resume::fetch_quic_ticket(&server.quic_target(), &opts, LIMIT)
        .await
        .unwrap();
    opts.zero_rtt = true;
    let info = echo_once(&server, &opts, "zero rtt").await;
    assert_eq!(info.early_data_offered, Some(true));
    assert_eq!(info.early_data_accepted, Some(true), "{info:?}");
    assert_eq!(info.resumed, Some(true));
    wait_until("both handshakes are counted", || {
        count(&server.stats.quic.completed) == 2
    })
    .await;
    let summary = server.stop().await;
    assert_eq!(
        summary.quic.early_data_accepted, 1,
        "accepted on the server's side"
    );
    assert_eq!(summary.quic.resumed, 1);
}

#[tokio::test]
async fn quic_with_a_wrong_ca_fails_with_a_clear_error() {
    let server = TestServer::start().await;
    let other = CertDir::new(support::temp_dir("other-ca"));
    other.load_or_create(&[]).unwrap();
    let opts = ClientQuicOptions::new(&Trust::ca_file(&other.ca_cert()).unwrap()).unwrap();
    let err = quic::connect(&server.quic_target(), &opts, LIMIT)
        .await
        .err()
        .unwrap();
    let text = format!("{err:#}");
    assert!(text.contains("not signed by the CA we trust"), "{text}");
    let _ = std::fs::remove_dir_all(&other.dir);
    wait_until("the failure is counted", || {
        count(&server.stats.quic.failed) == 1
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn quic_client_with_a_wrong_alpn_is_refused() {
    let server = TestServer::start().await;
    let mut tls = proto::transport::tls::client_config(&server.trust(), None, true).unwrap();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connecting = endpoint
        .connect_with(
            quinn::ClientConfig::new(std::sync::Arc::new(crypto)),
            server.quic,
            "localhost",
        )
        .unwrap();
    let err = tokio::time::timeout(LIMIT, connecting)
        .await
        .unwrap()
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("120")
            || err
                .to_string()
                .to_lowercase()
                .contains("application protocol"),
        "{err}"
    );
    wait_until("the refusal is counted", || {
        count(&server.stats.quic.failed) == 1
    })
    .await;
    // Others are unaffected.
    let opts = ClientQuicOptions::new(&server.trust()).unwrap();
    echo_once(&server, &opts, "fine").await;
    server.stop().await;
}

#[tokio::test]
async fn garbage_datagrams_are_dropped_and_others_are_unaffected() {
    let server = TestServer::start().await;
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut noise = vec![0xC3u8, 0, 0, 0, 1, 8];
    noise.extend((0..1194u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8));
    let garbage: [&[u8]; 7] = [
        b"0 is not QUIC\n",                    // fixed bit 0: named
        &[0xC0, 0, 0],                         // truncated long header: named
        &[0xC0, 0xff, 0, 0, 0x1d, 0],          // unknown version: named
        &[0xC0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5], // Initial under 1200 bytes: named
        b"hello\n",                            // looks like a short header: quinn drops it
        &noise, // looks like an Initial, fails decryption: quinn drops it
        &[],    // nothing at all
    ];
    for datagram in garbage {
        junk.send_to(datagram, server.quic).await.unwrap();
    }
    let opts = ClientQuicOptions::new(&server.trust()).unwrap();
    echo_once(&server, &opts, "after the garbage").await;
    wait_until("the good connection is counted", || {
        count(&server.stats.quic.completed) == 1
    })
    .await;
    wait_until("the named garbage is counted", || {
        count(&server.stats.invalid_datagrams) == 4
    })
    .await;
    let summary = server.stop().await;
    assert_eq!(summary.invalid_datagrams, 4);
    assert_eq!(summary.quic.failed, 0);
    assert_eq!(summary.quic.completed, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_quic_handshake_times_out() {
    let server = TestServer::start_with(Options {
        handshake_timeout: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    // A one-way relay: the client's first datagram (its Initial, with the
    // ClientHello) reaches the server; nothing else passes either way, so
    // the server waits for a client Finished that never comes.
    let relay = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let server_addr = server.quic;
    let relay_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let (n, _) = relay.recv_from(&mut buf).await.unwrap();
        relay.send_to(&buf[..n], server_addr).await.unwrap();
        loop {
            if relay.recv_from(&mut buf).await.is_err() {
                break;
            }
        }
    });
    let opts = ClientQuicOptions::new(&server.trust()).unwrap();
    let stalled = opts
        .endpoint
        .connect_with(opts.config.clone(), relay_addr, "localhost")
        .unwrap();
    let started = Instant::now();
    wait_until("the handshake timeout", || {
        count(&server.stats.quic.failed) == 1
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Others are unaffected.
    echo_once(&server, &opts, "unaffected").await;
    drop(stalled);
    relay_task.abort();
    server.stop().await;
}

#[test]
fn a_client_that_vanishes_mid_stream_is_dropped_with_a_reason() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(TestServer::start_with(Options {
        idle_timeout: Duration::from_millis(500),
        ..Options::default()
    }));
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let trust = server.trust();
    let target = server.quic_target();
    let server_stats = server.stats.clone();
    client_rt.block_on(async move {
        let opts = ClientQuicOptions::new(&trust).unwrap();
        let (mut stream, _) = quic::connect(&target, &opts, LIMIT).await.unwrap();
        stream.write_all(b"half a li").await.unwrap();
        stream.flush().await.unwrap();
        // Wait until the server has the partial line in hand.
        let stats = server_stats.clone();
        wait_until("the server reads the partial line", move || {
            count(&stats.bytes_in) >= 9
        })
        .await;
        // Vanish: no FIN, no CONNECTION_CLOSE.
        std::mem::forget(stream);
        std::mem::forget(opts);
    });
    client_rt.shutdown_background();
    runtime.block_on(async {
        wait_until("the server gives up on the silent client", || {
            count(&server.stats.abnormal_closes) >= 1
        })
        .await;
        let opts = ClientQuicOptions::new(&server.trust()).unwrap();
        echo_once(&server, &opts, "unaffected").await;
        server.stop().await;
    });
}

#[test]
fn the_binary_serves_quic_and_its_client_uses_0rtt() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = support::temp_dir("bin-certs");
    let bin = env!("CARGO_BIN_EXE_proto");
    let mut server = Command::new(bin)
        .args(["serve", "quic", "--port", "0", "--cert-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut addr = None;
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("proto serve: quic listening on ") {
            addr = Some(rest.trim().to_string());
            break;
        }
    }
    // Keep reading: the server prints more (its ::1 address, its summary),
    // and a server whose stdout is closed ends quietly, as `| head` wants.
    std::thread::spawn(move || lines.for_each(drop));
    let addr = addr.expect("a listening line");
    let output = Command::new(bin)
        .args([
            "client", "quic", &addr, "--0rtt", "--json", "-m", "early", "--ca",
        ])
        .arg(dir.join("ca.pem"))
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["exchanges"][0]["reply"], "EARLY");
    assert_eq!(report["connection"]["early_data_accepted"], true);
    assert_eq!(report["connection"]["resumed"], true);
    assert_eq!(report["ticket_connection"]["resumed"], false);
}

/// Claim C5 in miniature: through a relay adding 100 ms of round trip, a
/// full QUIC handshake plus one echo costs 2 round trips, and 0-RTT 1.
#[tokio::test(flavor = "multi_thread")]
async fn zero_rtt_saves_the_handshake_round_trip() {
    let server = TestServer::start().await;
    let rtt = Duration::from_millis(100);
    let relay = support::delaying_udp_relay(server.quic, rtt / 2).await;
    let target = proto::transport::Target {
        host: "127.0.0.1".into(),
        port: relay.port(),
    };
    let mut opts = ClientQuicOptions::new(&server.trust()).unwrap();
    opts.server_name = Some("localhost".into());
    let timed = |opts: ClientQuicOptions| {
        let target = target.clone();
        async move {
            let started = Instant::now();
            let (stream, mut info) = quic::connect(&target, &opts, LIMIT).await.unwrap();
            let mut client = StreamClient::new(stream, LIMIT);
            client.exchange_line(b"timed").await.unwrap();
            let took = started.elapsed();
            client.get_ref().negotiated(&mut info);
            if let Stream::Quic(q) = client.finish_and_drain(LIMIT).await {
                // Wait for the ticket(s) before closing.
                tokio::time::sleep(rtt).await;
                q.close();
            }
            (took, info)
        }
    };
    let (full, info) = timed(opts.clone()).await;
    assert_eq!(info.resumed, Some(false));
    opts.zero_rtt = true;
    let (zero, info) = timed(opts.clone()).await;
    assert_eq!(info.early_data_accepted, Some(true), "{info:?}");
    let in_rtts = |d: Duration| d.as_secs_f64() / rtt.as_secs_f64();
    eprintln!(
        "first reply at RTT {rtt:?}: full handshake {full:?} ({:.2} RTT), 0-RTT {zero:?} ({:.2} RTT)",
        in_rtts(full),
        in_rtts(zero)
    );
    assert!(
        (1.9..2.6).contains(&in_rtts(full)),
        "full handshake: {full:?}"
    );
    assert!((0.9..1.5).contains(&in_rtts(zero)), "0-RTT: {zero:?}");
    server.stop().await;
}

#[tokio::test]
async fn zero_rtt_a_server_rejects_is_reported_as_rejected() {
    let first = TestServer::start().await;
    let second = TestServer::start_with(Options {
        cert_dir: Some(first.certs.clone()),
        ..Options::default()
    })
    .await;
    let mut opts = ClientQuicOptions::new(&first.trust()).unwrap();
    opts.server_name = Some("localhost".into());
    proto::client::resume::fetch_quic_ticket(&first.quic_target(), &opts, LIMIT)
        .await
        .unwrap();
    opts.zero_rtt = true;
    let info = echo_once(&second, &opts, "rejected but answered").await;
    assert_eq!(info.early_data_offered, Some(true));
    assert_eq!(info.early_data_accepted, Some(false));
    wait_until("the handshake is counted", || {
        count(&second.stats.quic.completed) == 1
    })
    .await;
    let summary = second.stop().await;
    assert_eq!(summary.quic.early_data_accepted, 0);
    first.stop().await;
}

#[tokio::test]
async fn quic_checks_the_name_and_server_name_overrides_it() {
    let server = TestServer::start().await;
    let mut opts = ClientQuicOptions::new(&server.trust()).unwrap();
    opts.server_name = Some("wrong.example".into());
    let err = quic::connect(&server.quic_target(), &opts, LIMIT)
        .await
        .err()
        .unwrap();
    let text = format!("{err:#}");
    assert!(text.contains("--server-name"), "{text}");
    opts.server_name = Some("localhost".into());
    let info = echo_once(&server, &opts, "by name").await;
    assert_eq!(info.server_name.as_deref(), Some("localhost"));
    server.stop().await;
}

/// Interoperability with another QUIC v1 implementation (aioquic, Python):
/// plain QUIC v1 + ALPN, nothing quinn-only. Needs a Python with aioquic in
/// `PROTO_AIOQUIC_PYTHON` (`.ci/run` makes one); without it the test is
/// skipped with a message, unless `PROTO_INTEROP_REQUIRED=1` (CI) makes
/// that a failure.
#[tokio::test(flavor = "multi_thread")]
async fn aioquic_client_gets_echo_datagram_and_0rtt() {
    let Some(python) = std::env::var_os("PROTO_AIOQUIC_PYTHON").filter(|p| !p.is_empty()) else {
        assert!(
            std::env::var("PROTO_INTEROP_REQUIRED").as_deref() != Ok("1"),
            "PROTO_INTEROP_REQUIRED=1 but PROTO_AIOQUIC_PYTHON is not set"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED aioquic interop: set PROTO_AIOQUIC_PYTHON to a python with aioquic installed"
        );
        return;
    };
    let server = TestServer::start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/aioquic_client.py"
    );
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg("127.0.0.1")
        .arg(server.quic.port().to_string())
        .arg(server.certs.ca_cert())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("HELLO FROM AIOQUIC\\nSECOND LINE"),
        "{stdout}"
    );
    assert!(stdout.contains("DATAGRAM FROM AIOQUIC"), "{stdout}");
    assert!(
        stdout.contains("resumed True early_data_accepted True"),
        "{stdout}"
    );
    let summary = server.stop().await;
    assert_eq!(summary.quic.completed, 2);
    assert_eq!(summary.quic.early_data_accepted, 1);
}

/// A 0-RTT client has its echo as soon as the server's first flight
/// arrives, so it can send its Finished and its CONNECTION_CLOSE back to
/// back; through a link with delay both reach the server in one batch, and
/// quinn reports "connected" and "closed" together. That connection
/// succeeded: the server must count a completed handshake and a normal
/// close, not a failed handshake (the flaky "1 failed handshakes" of
/// `serve all`, made deterministic by the relay).
#[tokio::test(flavor = "multi_thread")]
async fn a_0rtt_client_closing_with_its_finished_is_not_a_failed_handshake() {
    let server = TestServer::start().await;
    let relay = support::delaying_udp_relay(server.quic, Duration::from_millis(5)).await;
    let via_relay = proto::transport::Target {
        host: "127.0.0.1".into(),
        port: relay.port(),
    };
    let mut opts = ClientQuicOptions::new(&server.trust()).unwrap();
    opts.server_name = Some("localhost".into());
    const ROUNDS: u64 = 5;
    for round in 0..ROUNDS {
        // Tickets are single-use: a fresh one for every 0-RTT connection.
        opts.zero_rtt = false;
        proto::client::resume::fetch_quic_ticket(&server.quic_target(), &opts, LIMIT)
            .await
            .unwrap();
        opts.zero_rtt = true;
        let (stream, info) = quic::connect(&via_relay, &opts, LIMIT).await.unwrap();
        let mut client = StreamClient::new(stream, LIMIT);
        let reply = client.exchange_line(b"early and gone").await.unwrap();
        assert_eq!(reply, b"EARLY AND GONE");
        assert_eq!(info.early_data_offered, Some(true), "round {round}");
        // FIN, then CONNECTION_CLOSE at once: no waiting for the server.
        if let Stream::Quic(q) = client.finish().await {
            q.close();
        }
        // The CONNECTION_CLOSE has left (and its draining period, three
        // probe timeouts, far longer than the relay's delay, has passed).
        tokio::time::timeout(LIMIT, opts.endpoint.wait_idle())
            .await
            .unwrap();
        wait_until("the server has judged both handshakes of the round", || {
            count(&server.stats.quic.completed) + count(&server.stats.quic.failed)
                == 2 * (round + 1)
        })
        .await;
    }
    let summary = server.stop().await;
    assert_eq!(summary.quic.failed, 0, "{summary:?}");
    assert_eq!(summary.abnormal_closes, 0, "{summary:?}");
    assert_eq!(summary.quic.early_data_accepted, ROUNDS, "{summary:?}");
}
