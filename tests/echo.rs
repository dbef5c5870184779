//! The TCP and UDP uppercase echo, end to end: the real binary on an
//! ephemeral port, driven by our client, by raw sockets and by `nc`.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{nc, run_with_input, Server, PROTO};

fn tcp_server(extra: &[&str]) -> Server {
    let mut args = vec!["tcp", "--port", "0"];
    args.extend_from_slice(extra);
    Server::start(&args, 1)
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr("tcp")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until the server closes the connection.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn nc_gets_hello_back_as_hello_uppercased() {
    let server = tcp_server(&[]);
    let Some(mut nc) = nc("nc_gets_hello_back_as_hello_uppercased") else {
        return;
    };
    let port = server.addr("tcp").port().to_string();
    // -N: send FIN when stdin ends, as a person pressing Ctrl-D would.
    let (status, out, err) = run_with_input(nc.args(["-N", "127.0.0.1", &port]), b"hello\n");
    assert!(status.success(), "nc failed: {err}");
    assert_eq!(out, b"HELLO\n");
}

#[test]
fn nc_udp_gets_an_uppercased_datagram() {
    let server = Server::start(&["udp", "--port", "0"], 1);
    let Some(mut nc) = nc("nc_udp_gets_an_uppercased_datagram") else {
        return;
    };
    let port = server.addr("udp").port().to_string();
    let (_, out, err) = run_with_input(nc.args(["-u", "-w", "1", "127.0.0.1", &port]), b"hello\n");
    assert_eq!(out, b"HELLO\n", "nc -u: {err}");
}

#[test]
fn by_default_the_server_answers_on_both_loopbacks() {
    // `localhost` is ::1 first on many systems, and a UDP client does not
    // fall back to 127.0.0.1: nc -u localhost must still get its answer.
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED by_default_the_server_answers_on_both_loopbacks: no IPv6 loopback here");
        return;
    }
    let server = Server::start(&support::ALL_ON_FREE_PORTS, 5);
    for service in ["tcp", "udp", "tls", "quic", "sctp"] {
        let v6 = server.wait_stdout(
            &format!("{service} listening on [::1]:"),
            Duration::from_secs(10),
        );
        let port = server.addr(service).port();
        assert!(
            v6.ends_with(&format!("]:{port}")),
            "{service}: same port on ::1: {v6}"
        );
    }
    let udp_port = server.addr("udp").port();
    let tcp_port = server.addr("tcp").port();
    let Some(mut nc) = nc("by_default_the_server_answers_on_both_loopbacks") else {
        return;
    };
    let port = udp_port.to_string();
    let (_, out, err) = run_with_input(nc.args(["-6", "-u", "-w", "1", "::1", &port]), b"hello\n");
    assert_eq!(out, b"HELLO\n", "nc -6 -u ::1: {err}");
    let mut s = std::net::TcpStream::connect(("::1", tcp_port)).unwrap();
    s.write_all(b"six\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut s), b"SIX\n");
    server.terminate();
}

#[test]
fn an_explicit_host_is_the_only_address() {
    let server = Server::start(&["udp", "--port", "0", "--host", "127.0.0.1"], 1);
    let port = server.addr("udp").port();
    let probe = std::net::UdpSocket::bind("[::1]:0");
    if let Ok(probe) = probe {
        // Nothing listens on ::1 at that port: the datagram is refused.
        probe.connect(("::1", port)).unwrap();
        probe
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        probe.send(b"x\n").unwrap();
        let mut buf = [0u8; 16];
        assert!(
            probe.recv(&mut buf).is_err(),
            "nothing should answer on ::1"
        );
    }
}

#[test]
fn lines_are_uppercased_by_unicode_rules_and_bytes_pass_through() {
    let server = tcp_server(&[]);
    let mut s = connect(&server);
    s.write_all("grüße\nab\u{0}c\n".as_bytes()).unwrap();
    s.write_all(b"not utf-8 \xFF\xFE here\n").unwrap();
    s.write_all(b"last line without newline").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let reply = read_to_close(&mut s);
    let mut expected = "GRÜSSE\nAB\u{0}C\n".as_bytes().to_vec();
    expected.extend_from_slice(b"NOT UTF-8 \xFF\xFE HERE\nLAST LINE WITHOUT NEWLINE\n");
    assert_eq!(reply, expected);
}

#[test]
fn pipelined_lines_are_answered_in_order() {
    let server = tcp_server(&[]);
    let mut s = connect(&server);
    let mut request = String::new();
    let mut expected = String::new();
    for i in 0..5000 {
        request.push_str(&format!("line {i}\n"));
        expected.push_str(&format!("LINE {i}\n"));
    }
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        writer.write_all(request.as_bytes()).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let reply = read_to_close(&mut s);
    sender.join().unwrap();
    assert_eq!(String::from_utf8(reply).unwrap(), expected);
}

#[test]
fn client_messages_succeed_over_tcp_and_udp_lines_and_frames() {
    let tcp = tcp_server(&[]);
    let udp = Server::start(&["udp", "--port", "0"], 1);
    for (transport, addr) in [("tcp", tcp.addr("tcp")), ("udp", udp.addr("udp"))] {
        for framed in [false, true] {
            let mut cmd = Command::new(PROTO);
            cmd.args([
                "client",
                transport,
                &addr.to_string(),
                "-m",
                "hello",
                "-m",
                "grüße",
            ]);
            if framed {
                cmd.arg("--framed");
            }
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{transport} framed={framed}: {stderr}"
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "HELLO\nGRÜSSE\n",
                "{transport} framed={framed}"
            );
        }
    }
}

#[test]
fn client_json_reports_each_exchange() {
    let server = tcp_server(&[]);
    let out = Command::new(PROTO)
        .args([
            "client",
            "tcp",
            &server.addr("tcp").to_string(),
            "-m",
            "abc",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["ok"], true);
    assert_eq!(v["exchanges"][0]["reply"], "ABC");
    assert!(v["connection"]["tcp_connect_us"].as_f64().unwrap() > 0.0);
}

#[test]
fn interactive_client_works_like_nc() {
    let server = tcp_server(&[]);
    let (status, out, err) = run_with_input(
        Command::new(PROTO).args(["client", "tcp", &server.addr("tcp").to_string()]),
        b"one\ntwo\n",
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, b"ONE\nTWO\n");
}

#[test]
fn refused_connection_says_what_to_do() {
    // Bind and drop to find a port where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(PROTO)
        .args(["client", "tcp", &format!("127.0.0.1:{port}"), "-m", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "connection refused: is 'proto serve tcp' running on 127.0.0.1:{port}?"
        )),
        "{err}"
    );
}

#[test]
fn udp_client_without_server_fails_clearly_instead_of_hanging() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let out = Command::new(PROTO)
        .args([
            "client",
            "udp",
            &format!("127.0.0.1:{port}"),
            "-m",
            "x",
            "--timeout",
            "500ms",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proto serve udp"), "{err}");
}

#[test]
fn too_long_line_gets_an_error_and_the_connection_closes() {
    let server = tcp_server(&["--max-line", "1K"]);
    let mut s = connect(&server);
    s.write_all(b"short\n").unwrap();
    let _ = s.write_all(&[b'x'; 5000]);
    let reply = read_to_close(&mut s);
    assert_eq!(reply, b"SHORT\nERROR line too long (limit 1024 bytes)\n");
}

#[test]
fn the_default_line_limit_is_64_kib() {
    let server = tcp_server(&[]);
    let mut s = connect(&server);
    let mut ok = vec![b'a'; 65536];
    ok.push(b'\n');
    s.write_all(&ok).unwrap();
    let mut reply = vec![0u8; 65537];
    s.read_exact(&mut reply).unwrap();
    assert!(reply[..65536].iter().all(|&b| b == b'A'));
    let _ = s.write_all(&vec![b'b'; 70000]);
    let rest = read_to_close(&mut s);
    assert_eq!(rest, b"ERROR line too long (limit 65536 bytes)\n");
}

#[test]
fn malformed_frame_gets_an_error_frame_then_close() {
    let server = tcp_server(&[]);
    let mut s = connect(&server);
    // A valid request, then a frame claiming a 70000-byte payload.
    let good = proto::wire::Frame::request(7, 99, &b"ok"[..])
        .to_bytes()
        .unwrap();
    s.write_all(&good).unwrap();
    let bad = proto::wire::hex::parse("F8 11 0000 00000008 00011170 0000000000000000").unwrap();
    s.write_all(&bad).unwrap();
    let reply = read_to_close(&mut s);
    let (first, used) = proto::wire::frame::decode_prefix(&reply).unwrap().unwrap();
    assert_eq!(
        first,
        proto::wire::Frame::request(7, 99, &b"ok"[..]).response_to(&b"OK"[..])
    );
    let error = proto::wire::frame::decode_datagram(&reply[used..]).unwrap();
    assert_eq!(error.frame_type, proto::wire::FrameType::Error);
    assert_eq!(
        String::from_utf8_lossy(&error.payload),
        "payload length 70000 exceeds the maximum 65536 (bytes 8..12)"
    );
}

#[test]
fn garbage_resets_and_stalled_clients_do_not_disturb_others() {
    let server = tcp_server(&[]);
    // A client that sends half a line and stalls.
    let mut stalled = connect(&server);
    stalled.write_all(b"half a li").unwrap();
    // A framed client that stalls mid-header.
    let mut stalled_frame = connect(&server);
    stalled_frame.write_all(&[0xF8, 0x11, 0x00]).unwrap();
    // Binary garbage, then a reset (SO_LINGER 0 makes close send RST).
    for _ in 0..20 {
        let s = connect(&server);
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let _ = (&s).write_all(&garbage);
        set_linger_zero(&s);
        drop(s);
    }
    // Connect-and-vanish clients.
    for _ in 0..20 {
        drop(connect(&server));
    }
    // Everyone else is still served, promptly.
    let started = Instant::now();
    let mut s = connect(&server);
    s.write_all(b"still here\n").unwrap();
    let mut reply = [0u8; 11];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"STILL HERE\n");
    assert!(started.elapsed() < Duration::from_secs(2));
    // And the stalled client can still finish its line.
    stalled.write_all(b"ne\n").unwrap();
    let mut reply = [0u8; 12];
    stalled.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"HALF A LINE\n");
    drop(stalled_frame);
}

/// Sets SO_LINGER {on, 0}: closing then sends RST instead of FIN.
fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

#[test]
fn idle_connections_time_out() {
    let server = tcp_server(&["--idle-timeout", "300ms"]);
    let mut s = connect(&server);
    let started = Instant::now();
    let reply = read_to_close(&mut s);
    let waited = started.elapsed();
    assert!(reply.is_empty());
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
}

#[test]
fn sigterm_lets_the_message_in_hand_finish_then_prints_a_summary() {
    let mut server = tcp_server(&[]);
    let mut s = connect(&server);
    s.write_all(b"first\n").unwrap();
    let mut reply = [0u8; 6];
    s.read_exact(&mut reply).unwrap();
    s.write_all(b"in ha").unwrap();
    // Make sure the server has read the partial line before the signal.
    wait_until_read_by_peer(&s);
    server.terminate();
    // New connections are refused once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(server.addr("tcp")).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.write_all(b"nd\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut s), b"IN HAND\n");
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    let summary = server.wait_stdout("served", Duration::from_secs(5));
    // (The probes above may have been accepted before the listener closed:
    // they count as connections, but sent no message.)
    assert!(summary.contains("served "), "{summary}");
    assert!(summary.contains("2 messages"), "{summary}");
}

#[test]
fn udp_server_survives_garbage_and_answers_bad_frames_with_error_frames() {
    let server = Server::start(&["udp", "--port", "0"], 1);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.connect(server.addr("udp")).unwrap();
    let mut buf = [0u8; 70000];
    socket.send(&[0xF8, 0x11, 0x00]).unwrap();
    let n = socket.recv(&mut buf).unwrap();
    let err = proto::wire::frame::decode_datagram(&buf[..n]).unwrap();
    assert_eq!(err.frame_type, proto::wire::FrameType::Error);
    assert!(String::from_utf8_lossy(&err.payload).contains("truncated"));
    socket.send(b"").unwrap();
    assert_eq!(socket.recv(&mut buf).unwrap(), 0);
    socket.send(b"still fine").unwrap();
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STILL FINE");
}

#[test]
fn a_thousand_concurrent_clients_are_served() {
    let server = tcp_server(&["--quiet"]);
    let addr = server.addr("tcp");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut clients = Vec::new();
        // Open them all first, so all are connected at once.
        for _ in 0..1000 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (i, mut c) in clients.into_iter().enumerate() {
            tasks.spawn(async move {
                let msg = format!("client {i}\n");
                c.write_all(msg.as_bytes()).await.unwrap();
                let mut reply = vec![0u8; msg.len()];
                c.read_exact(&mut reply).await.unwrap();
                assert_eq!(reply, msg.to_uppercase().into_bytes());
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(PROTO)
        .args(["serve", "tcp", "--port", &port])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use"), "{err}");
}

/// Waits until the server side of `s` has read everything we sent: its
/// receive queue in /proc/net/tcp (the `rx_queue` column) is empty.
fn wait_until_read_by_peer(s: &TcpStream) {
    let ours = s.local_addr().unwrap().port();
    let theirs = s.peer_addr().unwrap().port();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let drained = table.lines().skip(1).any(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let port =
                |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap_or(""), 16).ok();
            let rx_queue = cols[4]
                .split(':')
                .nth(1)
                .and_then(|q| u32::from_str_radix(q, 16).ok());
            port(cols[1]) == Some(theirs) && port(cols[2]) == Some(ours) && rx_queue == Some(0)
        });
        if drained {
            return;
        }
        assert!(Instant::now() < deadline, "the server never read our bytes");
        std::thread::yield_now();
    }
}
