//! TLS over TCP, end to end: proto's server in-process on port 0, talked to
//! by proto's client and by the real `openssl s_client`; resumption and
//! 0-RTT checked from the server's side; bad clients refused.

mod support;

use proto::client::StreamClient;
use proto::transport::certs::CertDir;
use proto::transport::tls::{self, ClientTlsOptions, TlsVersion, Trust};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{count, wait_until, Options, TestServer, LIMIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn echo_once(
    server: &TestServer,
    opts: &ClientTlsOptions,
    line: &str,
) -> proto::transport::ConnectInfo {
    let (stream, mut info) = tls::connect(&server.tls_target(), opts, LIMIT)
        .await
        .unwrap();
    let mut client = StreamClient::new(stream, LIMIT);
    let reply = client.exchange_line(line.as_bytes()).await.unwrap();
    assert_eq!(reply, line.to_uppercase().as_bytes());
    client.get_ref().negotiated(&mut info);
    // Read until the server closes too, so its session is over.
    let mut stream = client.finish().await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut rest)).await;
    info
}

async fn our_client(version: TlsVersion) {
    let server = TestServer::start().await;
    let opts = ClientTlsOptions::new(&server.trust(), Some(version)).unwrap();
    let info = echo_once(&server, &opts, "hello tls").await;
    assert_eq!(info.version.as_deref(), Some(version.name()));
    assert_eq!(info.alpn.as_deref(), Some("proto-echo"));
    assert_eq!(info.key_exchange_group.as_deref(), Some("X25519"));
    assert!(info.cipher_suite.is_some());
    assert_eq!(info.resumed, Some(false));
    assert_eq!(info.early_data_accepted, Some(false));
    assert_eq!(info.verified, Some(true));
    assert!(info.tcp_connect_us.is_some() && info.handshake_us.is_some());
    // A ClientHello is a few hundred bytes; the certificate makes the
    // server's side larger.
    let sent = info.handshake_bytes_sent.unwrap();
    let received = info.handshake_bytes_received.unwrap();
    assert!(
        sent > 100 && received > sent,
        "{sent} sent, {received} received"
    );
    let summary = server.stop().await;
    assert_eq!(summary.tls.completed, 1);
    assert_eq!(summary.messages, 1);
}

#[tokio::test]
async fn tls13_echo_with_our_client() {
    our_client(TlsVersion::V1_3).await;
}

#[tokio::test]
async fn tls12_echo_with_our_client() {
    our_client(TlsVersion::V1_2).await;
}

/// Runs `openssl s_client` against the server, verifying the chain against
/// the generated CA and the host name, and returns the echo line and
/// everything openssl printed.
fn openssl_echo(server: &TestServer, version_flag: &str) -> (String, String) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", server.tls.port()),
            "-servername",
            "localhost",
            version_flag,
            "-CAfile",
        ])
        .arg(server.certs.ca_cert())
        .args([
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
            "-brief",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed (/usr/bin/openssl)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello openssl\n").unwrap();
    stdin.flush().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut reply = String::new();
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("OPENSSL") => {
                reply = line;
                break;
            }
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    // s_client keeps the connection open after stdin ends: stop it.
    drop(stdin);
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    (reply, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn openssl_s_client_tls13_gets_an_echo() {
    if support::outside_program("openssl_s_client_tls13_gets_an_echo", "openssl", "openssl")
        .is_none()
    {
        return;
    }
    let server = TestServer::start().await;
    let (reply, log) = tokio::task::block_in_place(|| openssl_echo(&server, "-tls1_3"));
    assert_eq!(reply, "HELLO OPENSSL", "openssl said: {log}");
    assert!(log.contains("TLSv1.3"), "openssl said: {log}");
    assert!(log.contains("Verification: OK"), "openssl said: {log}");
    let summary = server.stop().await;
    assert_eq!(summary.tls.completed, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn openssl_s_client_tls12_gets_an_echo() {
    if support::outside_program("openssl_s_client_tls12_gets_an_echo", "openssl", "openssl")
        .is_none()
    {
        return;
    }
    let server = TestServer::start().await;
    let (reply, log) = tokio::task::block_in_place(|| openssl_echo(&server, "-tls1_2"));
    assert_eq!(reply, "HELLO OPENSSL", "openssl said: {log}");
    assert!(log.contains("TLSv1.2"), "openssl said: {log}");
    assert!(log.contains("Verification: OK"), "openssl said: {log}");
    let summary = server.stop().await;
    assert_eq!(summary.tls.completed, 1);
}

async fn resumption(version: Option<TlsVersion>) {
    let server = TestServer::start().await;
    let opts = ClientTlsOptions::new(&server.trust(), version).unwrap();
    let first = proto::client::resume::fetch_tls_ticket(&server.tls_target(), &opts, LIMIT)
        .await
        .unwrap();
    assert_eq!(first.resumed, Some(false));
    assert_eq!(first.certificate_received, Some(true));
    let info = echo_once(&server, &opts, "again").await;
    assert_eq!(info.resumed, Some(true), "{info:?}");
    assert_eq!(info.certificate_received, Some(false), "{info:?}");
    let summary = server.stop().await;
    assert_eq!(summary.tls.completed, 2);
    assert_eq!(summary.tls.resumed, 1, "the server resumed one handshake");
    assert_eq!(summary.tls.early_data_accepted, 0);
}

#[tokio::test]
async fn tls13_resumption_is_accepted_by_the_server() {
    resumption(Some(TlsVersion::V1_3)).await;
}

#[tokio::test]
async fn tls12_resumption_is_accepted_by_the_server() {
    resumption(Some(TlsVersion::V1_2)).await;
}

#[tokio::test]
async fn tls13_zero_rtt_is_accepted_by_the_server() {
    let server = TestServer::start().await;
    let mut opts = ClientTlsOptions::new(&server.trust(), None).unwrap();
    proto::client::resume::fetch_tls_ticket(&server.tls_target(), &opts, LIMIT)
        .await
        .unwrap();
    opts.early_data = true;
    let info = echo_once(&server, &opts, "early bird").await;
    assert_eq!(info.early_data_offered, Some(true));
    assert_eq!(info.early_data_accepted, Some(true), "{info:?}");
    assert_eq!(info.resumed, Some(true));
    let summary = server.stop().await;
    assert_eq!(
        summary.tls.early_data_accepted, 1,
        "accepted on the server's side"
    );
    assert_eq!(summary.tls.resumed, 1);
    assert_eq!(summary.messages, 2);
}

#[tokio::test]
async fn zero_rtt_without_a_ticket_falls_back_to_a_full_handshake() {
    let server = TestServer::start().await;
    let mut opts = ClientTlsOptions::new(&server.trust(), None).unwrap();
    opts.early_data = true;
    let info = echo_once(&server, &opts, "no ticket").await;
    assert_eq!(info.early_data_offered, Some(false));
    assert_eq!(info.resumed, Some(false));
    let summary = server.stop().await;
    assert_eq!(summary.tls.early_data_accepted, 0);
}

#[tokio::test]
async fn a_wrong_ca_fails_with_a_clear_error() {
    let server = TestServer::start().await;
    let other = CertDir::new(support::temp_dir("other-ca"));
    other.load_or_create(&[]).unwrap();
    let trust = Trust::ca_file(&other.ca_cert()).unwrap();
    let opts = ClientTlsOptions::new(&trust, None).unwrap();
    let err = tls::connect(&server.tls_target(), &opts, LIMIT)
        .await
        .expect_err("verification must fail");
    let text = format!("{err:#}");
    assert!(text.contains("not signed by the CA we trust"), "{text}");
    assert!(text.contains("--ca"), "{text}");
    let _ = std::fs::remove_dir_all(&other.dir);
    let summary = server.stop().await;
    assert_eq!(summary.tls.completed, 0);
    assert_eq!(summary.tls.failed, 1);
}

#[tokio::test]
async fn a_name_the_certificate_lacks_fails_and_server_name_fixes_it() {
    let server = TestServer::start().await;
    let mut opts = ClientTlsOptions::new(&server.trust(), None).unwrap();
    opts.server_name = Some("example.org".into());
    let err = tls::connect(&server.tls_target(), &opts, LIMIT)
        .await
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("not valid for 'example.org'"),
        "{err:#}"
    );
    opts.server_name = Some("localhost".into());
    let info = echo_once(&server, &opts, "by name").await;
    assert_eq!(info.server_name.as_deref(), Some("localhost"));
    server.stop().await;
}

#[tokio::test]
async fn insecure_skips_verification_and_says_so() {
    let server = TestServer::start().await;
    let opts = ClientTlsOptions::new(&Trust::Insecure, None).unwrap();
    let info = echo_once(&server, &opts, "unverified").await;
    assert_eq!(info.verified, Some(false));
    server.stop().await;
}

#[tokio::test]
async fn plain_text_to_the_tls_port_is_refused_and_others_are_unaffected() {
    let server = TestServer::start().await;
    let mut raw = tokio::net::TcpStream::connect(server.tls).await.unwrap();
    raw.write_all(b"hello, is this TLS?\n").await.unwrap();
    // The server answers with a TLS alert record (content type 21) and closes.
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, raw.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .ok();
    assert_eq!(answer.first(), Some(&21), "an alert record, got {answer:?}");
    let opts = ClientTlsOptions::new(&server.trust(), None).unwrap();
    echo_once(&server, &opts, "still fine").await;
    let summary = server.stop().await;
    assert_eq!(summary.tls.failed, 1);
    assert_eq!(summary.tls.completed, 1);
}

#[tokio::test]
async fn a_stalled_handshake_times_out_without_blocking_others() {
    let server = TestServer::start_with(Options {
        handshake_timeout: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    // Half a ClientHello record header, then silence.
    let mut staller = tokio::net::TcpStream::connect(server.tls).await.unwrap();
    staller.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let started = Instant::now();
    // Another client is served meanwhile.
    let opts = ClientTlsOptions::new(&server.trust(), None).unwrap();
    echo_once(&server, &opts, "not blocked").await;
    let mut rest = Vec::new();
    tokio::time::timeout(LIMIT, staller.read_to_end(&mut rest))
        .await
        .expect("the server drops the staller")
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(400));
    wait_until("the timeout is counted", || {
        count(&server.stats.tls.failed) == 1
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_offering_only_a_wrong_alpn_is_refused() {
    let server = TestServer::start().await;
    let mut config = tls::client_config(&server.trust(), None, false).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let opts = ClientTlsOptions {
        config: Arc::new(config),
        server_name: None,
        early_data: false,
        insecure: false,
    };
    let err = tls::connect(&server.tls_target(), &opts, LIMIT)
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("ALPN"), "{err:#}");
    let summary = server.stop().await;
    assert_eq!(summary.tls.failed, 1);
}

#[tokio::test]
async fn a_client_that_vanishes_mid_line_is_dropped_with_a_reason() {
    let server = TestServer::start().await;
    let opts = ClientTlsOptions::new(&server.trust(), None).unwrap();
    let (stream, _) = tls::connect(&server.tls_target(), &opts, LIMIT)
        .await
        .unwrap();
    let mut stream = stream;
    stream.write_all(b"half a li").await.unwrap();
    stream.flush().await.unwrap();
    // Gone without close_notify: drop the TCP connection under TLS.
    drop(stream);
    wait_until("the server notices", || {
        count(&server.stats.abnormal_closes) == 1
    })
    .await;
    echo_once(&server, &opts, "others fine").await;
    let summary = server.stop().await;
    assert_eq!(summary.abnormal_closes, 1);
}

#[test]
fn the_binary_serves_tls_and_its_client_reports_json() {
    let dir = support::temp_dir("bin-certs");
    let bin = env!("CARGO_BIN_EXE_proto");
    let mut server = Command::new(bin)
        .args(["serve", "tls", "--port", "0", "--cert-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let mut addr = None;
    let mut banner = String::new();
    for line in lines.by_ref().map_while(Result::ok) {
        banner.push_str(&line);
        banner.push('\n');
        if let Some(rest) = line.strip_prefix("proto serve: tls listening on ") {
            addr = Some(rest.trim().to_string());
            break;
        }
    }
    let addr = addr.expect("a listening line");
    assert!(banner.contains("SHA-256"), "{banner}");
    assert!(banner.contains("ca.pem"), "{banner}");
    let output = Command::new(bin)
        .args([
            "client",
            "tls",
            &addr,
            "--json",
            "-m",
            "json please",
            "--ca",
        ])
        .arg(dir.join("ca.pem"))
        .output()
        .unwrap();
    // A resumed connection sends no certificate: the text must not claim one.
    let resumed = Command::new(bin)
        .args(["client", "tls", &addr, "--resume", "-m", "again", "--ca"])
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
    let said = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{said}");
    assert!(
        said.matches("certificate received and verified").count() == 1
            && said.contains("resumed with a pre-shared key (ticket): no certificate sent"),
        "the ticket connection verified a certificate, the resumed one got none: {said}"
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["exchanges"][0]["reply"], "JSON PLEASE");
    assert_eq!(report["connection"]["certificate_received"], true);
    let c = &report["connection"];
    assert_eq!(c["version"], "TLS 1.3");
    assert_eq!(c["alpn"], "proto-echo");
    assert_eq!(c["resumed"], false);
    assert!(c["handshake_us"].as_f64().unwrap() > 0.0);
    assert!(c["handshake_bytes_received"].as_u64().unwrap() > 0);
}

#[test]
fn insecure_is_announced_on_every_run() {
    let bin = env!("CARGO_BIN_EXE_proto");
    // No server needed: the warning comes before connecting.
    let output = Command::new(bin)
        .args([
            "client",
            "tls",
            "127.0.0.1:1",
            "--insecure",
            "-m",
            "x",
            "--timeout",
            "1s",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WARNING: --insecure"), "{stderr}");
    assert!(!output.status.success());
}

/// Time from starting to connect to the first echo reply, through `relay`.
async fn first_reply(
    relay: std::net::SocketAddr,
    opts: &ClientTlsOptions,
) -> (Duration, proto::transport::ConnectInfo) {
    let target = proto::transport::Target {
        host: "127.0.0.1".into(),
        port: relay.port(),
    };
    let started = Instant::now();
    let (stream, mut info) = tls::connect(&target, opts, LIMIT).await.unwrap();
    let mut client = StreamClient::new(stream, LIMIT);
    client.exchange_line(b"timed").await.unwrap();
    let took = started.elapsed();
    client.get_ref().negotiated(&mut info);
    let mut stream = client.finish().await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut rest)).await;
    (took, info)
}

/// Claim C3/C4 in miniature: through a relay adding 100 ms of round trip
/// (the TCP handshake to the relay stays local), a full TLS 1.3 handshake
/// plus one echo costs 2 round trips, and 0-RTT with the server answering
/// the early data in its first flight costs 1.
#[tokio::test(flavor = "multi_thread")]
async fn zero_rtt_saves_the_handshake_round_trip() {
    let server = TestServer::start().await;
    let rtt = Duration::from_millis(100);
    let relay = support::delaying_tcp_relay(server.tls, rtt / 2).await;
    let mut opts = ClientTlsOptions::new(&server.trust(), Some(TlsVersion::V1_3)).unwrap();
    opts.server_name = Some("localhost".into());
    let (full, info) = first_reply(relay, &opts).await;
    assert_eq!(info.resumed, Some(false));
    opts.early_data = true;
    let (zero, info) = first_reply(relay, &opts).await;
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
async fn early_data_a_server_rejects_is_resent_after_the_handshake() {
    let first = TestServer::start().await;
    // A second server with the same certificate but none of the first's
    // sessions: it cannot resume, so it must reject the early data.
    let second = TestServer::start_with(Options {
        cert_dir: Some(first.certs.clone()),
        ..Options::default()
    })
    .await;
    let mut opts = ClientTlsOptions::new(&first.trust(), None).unwrap();
    opts.server_name = Some("localhost".into());
    proto::client::resume::fetch_tls_ticket(&first.tls_target(), &opts, LIMIT)
        .await
        .unwrap();
    opts.early_data = true;
    let info = echo_once(&second, &opts, "rejected but answered").await;
    assert_eq!(info.early_data_offered, Some(true));
    assert_eq!(info.early_data_accepted, Some(false));
    assert_eq!(info.resumed, Some(false));
    let summary = second.stop().await;
    assert_eq!(summary.tls.early_data_accepted, 0);
    assert_eq!(
        summary.messages, 1,
        "the line arrived once, after the handshake"
    );
    first.stop().await;
}

/// The "done when": `proto serve all` in one process; `proto client
/// tls`, `proto client quic` and `proto client quic --0rtt` each get their
/// echo and say what they negotiated; one summary at the end counts them.
#[test]
fn serve_all_answers_tls_quic_and_quic_0rtt_clients() {
    let dir = support::temp_dir("all-certs");
    let bin = env!("CARGO_BIN_EXE_proto");
    let mut server = Command::new(bin)
        .arg("serve")
        .args(support::ALL_ON_FREE_PORTS)
        .arg("--cert-dir")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let mut addrs = std::collections::HashMap::new();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some((service, addr)) = line
            .strip_prefix("proto serve: ")
            .and_then(|rest| rest.split_once(" listening on "))
        {
            addrs.insert(service.to_string(), addr.trim().to_string());
            if addrs.len() == 4 {
                break;
            }
        }
    }
    assert_eq!(addrs.len(), 4, "tcp, udp, tls and quic: {addrs:?}");
    let ca = dir.join("ca.pem");
    let client = |args: &[&str]| {
        let output = Command::new(bin)
            .arg("client")
            .args(args)
            .arg("--ca")
            .arg(&ca)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{args:?}: {stderr}");
        (stdout, stderr)
    };
    let (out, err) = client(&["tls", &addrs["tls"], "-m", "over tls"]);
    assert_eq!(out, "OVER TLS\n");
    assert!(err.contains("negotiated TLS 1.3"), "{err}");
    let (out, err) = client(&["quic", &addrs["quic"], "-m", "over quic"]);
    assert_eq!(out, "OVER QUIC\n");
    assert!(err.contains("negotiated QUIC v1"), "{err}");
    let (out, err) = client(&["quic", &addrs["quic"], "--0rtt", "-m", "early"]);
    assert_eq!(out, "EARLY\n");
    assert!(err.contains("0-RTT early data: sent and accepted"), "{err}");
    // The ticket connection checked a certificate; the 0-RTT one got none.
    assert!(
        err.contains("certificate received and verified")
            && err.contains("resumed with a pre-shared key (ticket): no certificate sent"),
        "{err}"
    );
    // Ctrl-C: the server prints one summary for all four services.
    // SAFETY: signalling the child we started, by its pid.
    unsafe {
        libc::kill(server.id() as libc::pid_t, libc::SIGINT);
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let summaries: Vec<&String> = rest.iter().filter(|l| l.contains("served")).collect();
    assert_eq!(summaries.len(), 1, "{rest:?}");
    assert!(
        summaries[0].contains(
            "; 1 TLS handshake (0 resumed, 0 with early data accepted, 0 failed); \
             3 QUIC handshakes (1 resumed, 1 with early data accepted, 0 failed)"
        ),
        "{}",
        summaries[0]
    );
}
