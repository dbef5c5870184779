//! Bounded resources and slow clients, in-process on port 0: the
//! connection limit refuses clearly (a text line, a TLS alert, QUIC's
//! CONNECTION_REFUSED) and the server keeps serving; the per-address limit;
//! a client that drips bytes is closed by its message deadline even though
//! it is never idle.

mod support;

use proto::client::StreamClient;
use proto::transport::quic::{self, ClientQuicOptions};
use proto::transport::tls::{self, ClientTlsOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{count, wait_until, Options, TestServer, LIMIT};

/// Sends `line` and reads one line back (blocking, with a time limit).
fn exchange(stream: &mut BufReader<TcpStream>, line: &str) -> String {
    stream.get_mut().set_read_timeout(Some(LIMIT)).unwrap();
    stream
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let mut reply = String::new();
    stream.read_line(&mut reply).unwrap();
    reply
}

/// Everything the server says until it closes, and how long that took.
fn read_to_close(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    (
        String::from_utf8_lossy(&all).into_owned(),
        started.elapsed(),
    )
}

fn open_tcp(server: &TestServer) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(server.tcp).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_refuses_clearly_and_the_server_keeps_serving() {
    let server = TestServer::start_with(Options {
        configure: |c| c.max_connections = Some(3),
        ..Options::default()
    })
    .await;
    let tcp = server.tcp;
    let (held, over) = tokio::task::spawn_blocking(move || {
        let server_tcp = |_| BufReader::new(TcpStream::connect(tcp).unwrap());
        let mut held: Vec<_> = (0..3).map(server_tcp).collect();
        for (i, c) in held.iter_mut().enumerate() {
            assert_eq!(exchange(c, &format!("hi {i}")), format!("HI {i}\n"));
        }
        // The fourth gets an answer at once, not silence.
        let mut fourth = TcpStream::connect(tcp).unwrap();
        let over = read_to_close(&mut fourth);
        (held, over)
    })
    .await
    .unwrap();
    let (text, took) = over;
    assert!(
        text.starts_with("ERROR server busy: 3 connections open"),
        "{text:?}"
    );
    assert!(took < Duration::from_secs(2), "refused after {took:?}");

    // TLS over the limit: a fatal alert before any handshake.
    let opts = ClientTlsOptions::new(&server.trust(), None).unwrap();
    let Err(err) = tls::connect(&server.tls_target(), &opts, LIMIT).await else {
        panic!("a TLS connection over the limit was accepted");
    };
    assert!(
        format!("{err:#}").contains("InternalError"),
        "TLS refusal: {err:#}"
    );
    // QUIC over the limit: CONNECTION_REFUSED.
    let quic_opts = ClientQuicOptions::new(&server.trust()).unwrap();
    let Err(err) = quic::connect(&server.quic_target(), &quic_opts, LIMIT).await else {
        panic!("a QUIC connection over the limit was accepted");
    };
    assert!(
        format!("{err:#}").to_lowercase().contains("refused"),
        "QUIC refusal: {err:#}"
    );
    assert!(count(&server.stats.refused) >= 3);

    // A slot frees when a connection ends; the server serves again.
    drop(held);
    let mut again = None;
    let started = Instant::now();
    while again.is_none() {
        assert!(started.elapsed() < LIMIT, "no slot came free");
        let (stream, _) = tls::connect(&server.tls_target(), &opts, LIMIT)
            .await
            .map_or((None, ()), |(s, _)| (Some(s), ()));
        again = stream;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = StreamClient::new(again.unwrap(), LIMIT);
    let reply = client.exchange_line(b"back").await.unwrap();
    assert_eq!(reply, b"BACK");
    drop(client);
    let summary = server.stop().await;
    assert_eq!(summary.max_connections, 3);
    assert!(summary.refused >= 3, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_slot() {
    let server = TestServer::start_with(Options {
        configure: |c| c.max_per_address = 2,
        ..Options::default()
    })
    .await;
    let tcp = server.tcp;
    let text = tokio::task::spawn_blocking(move || {
        let mut a = BufReader::new(TcpStream::connect(tcp).unwrap());
        let mut b = BufReader::new(TcpStream::connect(tcp).unwrap());
        assert_eq!(exchange(&mut a, "a"), "A\n");
        assert_eq!(exchange(&mut b, "b"), "B\n");
        let mut c = TcpStream::connect(tcp).unwrap();
        read_to_close(&mut c).0
    })
    .await
    .unwrap();
    assert!(
        text.starts_with("ERROR server busy: 2 connections open from your address 127.0.0.1"),
        "{text:?}"
    );
    server.stop().await;
}

/// A "slowloris" client: one byte every 200 ms, never a whole line. It is
/// never idle for the idle timeout, but its message misses its deadline.
fn drip_until_closed(addr: std::net::SocketAddr, first: &[u8]) -> (Vec<u8>, Duration) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(first).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut heard = Vec::new();
    loop {
        assert!(started.elapsed() < LIMIT, "the drip was never cut");
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => heard.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break, // reset after the close
        }
        if stream.write_all(b"a").is_err() {
            break;
        }
    }
    (heard, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drip_is_closed_by_its_message_deadline() {
    let server = TestServer::start_with(Options {
        idle_timeout: Duration::from_secs(60),
        configure: |c| c.message_timeout = Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let tcp = server.tcp;
    // Plain TCP (the blocking session) ...
    let (heard, took) = tokio::task::spawn_blocking(move || drip_until_closed(tcp, b"x"))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&heard);
    assert!(
        text.starts_with("ERROR message not complete within 1s"),
        "{text:?}"
    );
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    // ... and a client that completes lines at a normal pace is untouched.
    let normal = tokio::task::spawn_blocking(move || {
        let mut s = BufReader::new(TcpStream::connect(tcp).unwrap());
        (0..3)
            .map(|i| {
                std::thread::sleep(Duration::from_millis(500));
                exchange(&mut s, &format!("line {i}"))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(normal, ["LINE 0\n", "LINE 1\n", "LINE 2\n"]);

    // The async session (TLS) has the same deadline.
    let opts = ClientTlsOptions::new(&server.trust(), None).unwrap();
    let (stream, _) = tls::connect(&server.tls_target(), &opts, LIMIT)
        .await
        .unwrap();
    let mut stream = stream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let mut heard = Vec::new();
    loop {
        assert!(started.elapsed() < LIMIT, "the TLS drip was never cut");
        if stream.write_all(b"a").await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => heard.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&heard);
    assert!(text.starts_with("ERROR message not complete"), "{text:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    wait_until("both drips counted", || {
        count(&server.stats.message_timeouts) == 2
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framed_drip_gets_an_error_frame() {
    let server = TestServer::start_with(Options {
        configure: |c| c.message_timeout = Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let tcp = server.tcp;
    // A whole header announcing 1 000 bytes of payload, then a drip of it.
    let mut frame = Vec::new();
    proto::wire::Frame::request(1, 2, vec![b'a'; 1000])
        .encode(&mut frame)
        .unwrap();
    frame.truncate(40);
    let (heard, took) = tokio::task::spawn_blocking(move || drip_until_closed(tcp, &frame))
        .await
        .unwrap();
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    let frame = proto::wire::frame::decode_datagram(&heard).expect("an error frame");
    assert_eq!(frame.frame_type, proto::wire::FrameType::Error);
    assert!(String::from_utf8_lossy(&frame.payload).contains("message not complete"));
    server.stop().await;
}

#[test]
fn idle_connections_are_woken_at_shutdown_without_polling() {
    // Shutdown must still reach threads blocked in recv (no 100 ms poll any
    // more): an idle connection ends promptly, a FIN follows.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    let mut idle: Vec<_> = (0..20).map(|_| open_tcp(&server)).collect();
    for c in &mut idle {
        assert_eq!(exchange(c, "x"), "X\n");
    }
    let started = Instant::now();
    let summary = runtime.block_on(server.stop());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    for c in &mut idle {
        let (rest, _) = read_to_close(c.get_mut());
        assert_eq!(rest, "");
    }
    assert_eq!(summary.connections, 20);
}

fn proto(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_proto"))
        .args(args)
        .env("PROTO_CERT_DIR", support::temp_dir("no-certs"))
        .output()
        .unwrap()
}

#[test]
fn insecure_warns_in_every_mode_including_load() {
    // Nothing listens on port 1: the runs fail, but only after the trust
    // decision, which must have warned.
    for args in [
        &["client", "tls", "127.0.0.1:1", "--insecure", "-m", "x"][..],
        &["client", "tls", "127.0.0.1:1", "--insecure", "--count", "5"][..],
        &[
            "client",
            "quic",
            "127.0.0.1:1",
            "--insecure",
            "--duration",
            "1s",
        ][..],
    ] {
        let out = proto(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("WARNING: --insecure"), "{args:?}: {stderr}");
    }
}

#[test]
fn endian_overflow_is_an_error_not_a_panic() {
    let out = proto(&["endian", "--", "--170141183460469231731687303715884105728"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a number"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Runs `proto serve tls --port 0 --cert-dir DIR` through `sh -c 'PREFIX proto …'`
/// until it says it listens (then stops it) or exits; returns whether it
/// listened, and everything it printed.
fn serve_tls_once(prefix: &str, cert_dir: &std::path::Path) -> (bool, String) {
    use std::process::{Command, Stdio};
    let script = format!(
        "{prefix} '{}' serve tls --port 0 --quiet --cert-dir '{}' 2>&1",
        env!("CARGO_BIN_EXE_proto"),
        cert_dir.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            if line.contains("listening on") {
                let _ = tx.send((true, all.clone()));
            }
        }
        let _ = tx.send((false, all));
    });
    let outcome = rx.recv_timeout(LIMIT).expect("proto serve said something");
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn certificates_under_umask_000_are_private() {
    let base = support::temp_dir("umask");
    let dir = base.join("a/b/certs");
    let (listened, output) = serve_tls_once("umask 000; exec", &dir);
    assert!(listened, "{output}");
    for created in [&base.join("a"), &base.join("a/b"), &dir] {
        assert_eq!(mode(created), 0o700, "{}", created.display());
    }
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir.join("server.key")), 0o600);
    assert_eq!(mode(&dir.join(".lock")), 0o600);
    for cert in ["ca.pem", "server.pem"] {
        assert_eq!(mode(&dir.join(cert)) & 0o022, 0, "{cert}");
    }
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    // Opened up by someone: refused, with the reason.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (listened, output) = serve_tls_once("exec", &dir);
    assert!(!listened);
    assert!(output.contains("writable by other users"), "{output}");
    let _ = std::fs::remove_dir_all(&base);
}

/// Whether this test runs as root (needed to act as another user); a
/// skip message otherwise, a failure with PROTO_LAB_REQUIRED=1 (CI).
fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("PROTO_LAB_REQUIRED").as_deref() != Ok("1"),
        "{test}: PROTO_LAB_REQUIRED=1 but not running as root"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs root");
    false
}

#[cfg(unix)]
#[test]
fn a_read_only_directory_with_valid_certificates_is_used_as_is() {
    if !root_or_skip("a_read_only_directory_with_valid_certificates_is_used_as_is") {
        return;
    }
    let dir = support::temp_dir("readonly");
    let (listened, output) = serve_tls_once("exec", &dir);
    assert!(listened, "{output}");
    std::fs::remove_file(dir.join(".lock")).unwrap();
    // Hand the directory to "nobody", read-only: it cannot create a lock
    // file (or anything else) there.
    let nobody = "65534";
    let chown = std::process::Command::new("chown")
        .args([
            "-R",
            &format!("{nobody}:{nobody}"),
            &dir.display().to_string(),
        ])
        .status()
        .unwrap();
    assert!(chown.success());
    let chmod = std::process::Command::new("chmod")
        .args(["-R", "u-w", &dir.display().to_string()])
        .status()
        .unwrap();
    assert!(chmod.success());
    let as_nobody = format!("exec setpriv --reuid={nobody} --regid={nobody} --clear-groups");
    let (listened, output) = serve_tls_once(&as_nobody, &dir);
    assert!(listened, "{output}");
    assert!(!dir.join(".lock").exists());
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+w", &dir.display().to_string()])
        .status();
    let _ = std::fs::remove_dir_all(&dir);
}
