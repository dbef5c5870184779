//! Load mode and `proto bench`: the built binary against in-process servers
//! on port 0, and the load generator's library API against test servers
//! that misbehave on purpose (a stall, a lossy path).

mod support;

use proto::measure::histogram::Unit;
use proto::measure::load::{self, blocking, task, LoadConfig, LoadProgress, Stop};
use proto::server::{self, bind_tcp, bind_udp, Listeners, ServerConfig};
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;
use support::lab_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const PROTO: &str = env!("CARGO_BIN_EXE_proto");

/// proto's TCP and UDP echo servers on 127.0.0.1:0, on their own runtime
/// thread, until the returned token is cancelled.
fn echo_servers() -> (SocketAddr, SocketAddr, CancellationToken) {
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners = Listeners {
        tcp: Some(bind_tcp(localhost).unwrap()),
        udp: Some(bind_udp(localhost).unwrap()),
        ..Listeners::default()
    };
    let tcp = listeners.tcp.as_ref().unwrap().local_addr().unwrap();
    let udp = listeners.udp.as_ref().unwrap().local_addr().unwrap();
    let token = CancellationToken::new();
    let stop = token.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(server::run(
            listeners,
            ServerConfig::quiet_default().unwrap(),
            stop,
        ))
        .unwrap();
    });
    (tcp, udp, token)
}

fn proto(args: &[&str]) -> Output {
    Command::new(PROTO).args(args).output().unwrap()
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "proto failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn tcp_count_reports_every_request_as_json() {
    let (tcp, _, stop) = echo_servers();
    let out = proto(&[
        "client",
        "tcp",
        &tcp.to_string(),
        "--count",
        "500",
        "-c",
        "2",
        "--json",
    ]);
    let j = json_of(&out);
    assert_eq!(j["mode"], "closed");
    assert_eq!(j["requests"], 500);
    assert_eq!(j["latency_us"]["count"], 500);
    assert_eq!(j["mismatches"], 0);
    assert_eq!(j["message_bytes"], 65);
    let p50 = j["latency_us"]["p50_us"].as_f64().unwrap();
    let p99 = j["latency_us"]["p99_us"].as_f64().unwrap();
    let max = j["latency_us"]["max_us"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{j}");
    assert!(j["requests_per_s"].as_f64().unwrap() > 0.0);
    let last = j["percentiles"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["quantile"], 1.0);
    assert_eq!(last["total_count"], 500);
    stop.cancel();
}

#[test]
fn framed_udp_and_warmup() {
    let (_, udp, stop) = echo_servers();
    let out = proto(&[
        "client",
        "udp",
        &udp.to_string(),
        "--framed",
        "--count",
        "300",
        "--warmup",
        "100ms",
        "--size",
        "100",
        "--json",
    ]);
    let j = json_of(&out);
    assert_eq!(j["requests"], 300);
    assert!(j["warmup_requests"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["latency_us"]["count"], 300);
    assert_eq!(j["lost"], 0);
    assert_eq!(j["message_bytes"], 120);
    stop.cancel();
}

#[test]
fn hgrm_file_is_the_percentile_distribution_format() {
    let (tcp, _, stop) = echo_servers();
    let dir = std::env::temp_dir().join(format!("proto-hgrm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hgrm = dir.join("lat.hgrm");
    let svg = dir.join("lat.svg");
    let out = proto(&[
        "client",
        "tcp",
        &tcp.to_string(),
        "--duration",
        "500ms",
        "--rate",
        "2000/s",
        "--hgrm",
        hgrm.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("corrected") && text.contains("uncorrected"),
        "{text}"
    );
    assert!(text.contains("latency histogram"), "{text}");

    let hgrm = std::fs::read_to_string(&hgrm).unwrap();
    let mut lines = hgrm.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    );
    let rows: Vec<Vec<f64>> = lines
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    let last = rows.last().unwrap();
    assert_eq!(last[1], 1.0);
    // 2000/s for 0.5 s: about 1000 requests (the schedule decides, not the server).
    assert!((900.0..=1001.0).contains(&last[2]), "{last:?}");
    assert!(rows
        .windows(2)
        .all(|w| w[0][0] <= w[1][0] && w[0][1] <= w[1][1]));
    assert!(hgrm.contains("#[Mean    ="));

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches("<path d=\"M").count(),
        2,
        "corrected and uncorrected"
    );
    assert!(svg.contains(">99%<") && svg.contains(">90%<"));
    // For a slide: the conditions under the title, readable text.
    assert!(svg.contains("loopback (no emulated link)"), "{svg}");
    assert!(svg.contains("2000 requests/s"), "{svg}");
    assert!(svg.contains(r#"font-size="20""#));
    let _ = std::fs::remove_dir_all(&dir);
    stop.cancel();
}

#[test]
fn a_missing_server_is_explained() {
    // Bind then drop: a port where nobody listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = proto(&[
        "client",
        "tcp",
        &format!("127.0.0.1:{port}"),
        "--count",
        "10",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connection refused"), "{err}");

    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = proto(&[
        "client",
        "udp",
        &format!("127.0.0.1:{port}"),
        "--count",
        "10",
    ]);
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("proto serve udp"), "{all}");
}

/// TLS connections and QUIC streams through the same load generator: the
/// real binary against `proto serve all`, every reply checked.
#[test]
fn tls_and_quic_load_with_several_streams() {
    let certs = std::env::temp_dir().join(format!("proto-load-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&certs);
    let certs = certs.to_str().unwrap().to_string();
    let mut server = Command::new(env!("CARGO_BIN_EXE_proto"))
        .arg("serve")
        .args(support::ALL_ON_FREE_PORTS)
        .args(["-q", "--cert-dir", &certs])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut addrs = std::collections::HashMap::new();
    let mut lines = std::io::BufRead::lines(stdout);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("proto serve: ") {
            if let Some((service, addr)) = rest.split_once(" listening on ") {
                addrs.insert(service.to_string(), addr.trim().to_string());
            }
        }
        if addrs.contains_key("tls") && addrs.contains_key("quic") {
            break;
        }
    }
    // Keep reading: a server whose stdout is closed fails at its next line.
    std::thread::spawn(move || lines.for_each(drop));
    let ca = format!("{certs}/ca.pem");
    let tls = json_of(&proto(&[
        "client",
        "tls",
        &addrs["tls"],
        "--ca",
        &ca,
        "--count",
        "300",
        "-c",
        "2",
        "--json",
    ]));
    assert_eq!(tls["requests"], 300, "{tls}");
    assert_eq!(tls["errors"].as_array().map(Vec::len), Some(0), "{tls}");
    let quic = json_of(&proto(&[
        "client",
        "quic",
        &addrs["quic"],
        "--ca",
        &ca,
        "--count",
        "400",
        "-c",
        "2",
        "--streams",
        "4",
        "--json",
    ]));
    assert_eq!(quic["requests"], 400, "{quic}");
    // 2 connections of 4 streams each: 8 requests in flight, on 2 connections.
    assert_eq!(quic["connections"], 2, "{quic}");
    assert_eq!(quic["streams_per_connection"], 4, "{quic}");
    assert_eq!(
        (&quic["lane"], &quic["lanes"]),
        (&"stream".into(), &8.into()),
        "{quic}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn options_that_cannot_work_are_refused() {
    let out = proto(&["client", "tcp", "--count", "10", "--streams", "4"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--streams is for QUIC"));
    let out = proto(&["client", "tcp", "--count", "10", "--duration", "1s"]);
    assert!(!out.status.success(), "count and duration conflict");
    let out = proto(&["client", "tcp", "--count", "10", "--size", "0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
}

#[test]
fn bench_prints_one_row_per_transport() {
    let out = proto(&["bench", "--duration", "300ms", "--warmup", "0s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["tcp", "udp", "requests/s", "1.00×"] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    // Latencies carry their unit, the one their size needs (µs, ms or s).
    assert!(
        text.contains("p50") && (text.contains(" µs") || text.contains(" ms")),
        "latencies with a unit:\n{text}"
    );
    let out = proto(&["bench", "--protocols", "tcp", "--count", "200", "--json"]);
    let j = json_of(&out);
    assert_eq!(j.as_array().unwrap().len(), 1);
    assert_eq!(j[0]["transport"], "tcp");
    assert_eq!(j[0]["requests"], 200);
    assert_eq!(
        j[0]["placement"], "one-cpu",
        "the default placement, said in the JSON"
    );
}

#[test]
fn bench_says_how_client_and_servers_were_placed() {
    let out = proto(&["bench", "--protocols", "tcp,tls", "--count", "200"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Placement: client and servers pinned to CPU"),
        "{text}"
    );
    let out = proto(&[
        "bench",
        "--protocols",
        "tcp",
        "--count",
        "200",
        "--placement",
        "unpinned",
        "--json",
    ]);
    assert_eq!(json_of(&out)[0]["placement"], "unpinned");
    // Across the lab the forwarder's threads take part: pinning is refused, not ignored.
    let out = proto(&["bench", "--rtt", "10ms", "--placement", "one-cpu"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--placement is for the loopback bench"));
}

fn config(stop: Stop, rate: Option<f64>, timeout: Duration) -> LoadConfig {
    LoadConfig {
        connections: 1,
        size: 16,
        framed: false,
        stop,
        warmup: Duration::ZERO,
        rate,
        timeout,
        unit: Unit::Nanos,
    }
}

/// A line echo server that answers at once, except for request number
/// `stall_at` (0-based), which it holds for `stall` first.
async fn stalling_server(stall_at: u64, stall: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut seen = 0u64;
        loop {
            let n = match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if seen == stall_at {
                    tokio::time::sleep(stall).await;
                }
                seen += 1;
                if s.write_all(&line.to_ascii_uppercase()).await.is_err() {
                    return;
                }
            }
        }
    });
    addr
}

/// The server stalls once for 200 ms while the client should be sending
/// 1000 requests per second. Counted from the intended send times, the
/// ~200 requests that should have gone out during the stall all waited:
/// the tail shows it. Counted from the actual send times (what a naive
/// closed-loop tool reports), only one request was slow and p99 is fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinated_omission_correction_shows_a_stall() {
    let stall = Duration::from_millis(200);
    let addr = stalling_server(300, stall).await;
    let cfg = config(Stop::Count(1000), Some(1000.0), Duration::from_secs(5));
    let connect = |_| async move {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    };
    let report = task::run_streams(&cfg, connect, Arc::new(LoadProgress::default()))
        .await
        .unwrap();
    check_stall_is_in_the_corrected_tail_only(&report);
}

/// The blocking loop's TCP run (what `proto client tcp` uses), from a test
/// runtime.
async fn blocking_tcp(cfg: &LoadConfig, addr: SocketAddr) -> load::LoadReport {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || {
        let progress = Arc::new(LoadProgress::default());
        blocking::run_tcp(&cfg, addr, Duration::from_secs(5), progress).unwrap()
    })
    .await
    .unwrap()
}

/// The same through the blocking driver that `proto client tcp` uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinated_omission_correction_shows_a_stall_blocking_driver() {
    let addr = stalling_server(300, Duration::from_millis(200)).await;
    let cfg = config(Stop::Count(1000), Some(1000.0), Duration::from_secs(5));
    let report = blocking_tcp(&cfg, addr).await;
    check_stall_is_in_the_corrected_tail_only(&report);
}

fn check_stall_is_in_the_corrected_tail_only(report: &load::LoadReport) {
    assert_eq!(report.latency.count(), 1000);
    assert_eq!(report.mismatches, 0);
    let corrected = report.latency.summary();
    let uncorrected = report.uncorrected.summary();
    let ms = |us: f64| us / 1000.0;
    assert!(
        corrected.p99_us > 100_000.0,
        "corrected p99 {} ms should show the 200 ms stall",
        ms(corrected.p99_us)
    );
    assert!(
        corrected.p90_us > 20_000.0,
        "~20 % of requests waited: corrected p90 {} ms",
        ms(corrected.p90_us)
    );
    assert!(
        uncorrected.p99_us < 50_000.0,
        "uncorrected p99 {} ms should hide the stall",
        ms(uncorrected.p99_us)
    );
    // Both see the one request that was actually stalled.
    assert!(uncorrected.max_us >= 199_000.0, "{}", uncorrected.max_us);
    assert!(corrected.max_us >= 199_000.0, "{}", corrected.max_us);
}

/// Without correction (closed loop) the same stall is one slow request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_sees_the_stall_once() {
    let addr = stalling_server(100, Duration::from_millis(200)).await;
    let cfg = config(Stop::Count(500), None, Duration::from_secs(5));
    let connect = |_| async move { Ok(tokio::net::TcpStream::connect(addr).await?) };
    let report = task::run_streams(&cfg, connect, Arc::new(LoadProgress::default()))
        .await
        .unwrap();
    let s = report.latency.summary();
    assert_eq!(s.count, 500);
    assert!(s.p99_us < 50_000.0, "p99 {}", s.p99_us);
    assert!(s.max_us >= 199_000.0, "max {}", s.max_us);
}

/// A lossy path with a fixed pattern (the seed): the server drops every
/// 4th datagram it receives. Each loss costs one timeout and is counted;
/// nothing hangs, and no lost request lands in the histogram.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_losses_are_counted_not_waited_for() {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let mut n = 0u64;
        loop {
            let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            n += 1;
            if n.is_multiple_of(4) {
                continue; // lost on the way
            }
            let reply = buf[..len].to_ascii_uppercase();
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    let cfg = config(Stop::Count(200), None, Duration::from_millis(30));
    let connect = |_| async move {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        s.connect(addr).await?;
        Ok(s)
    };
    let report = task::run_datagrams(&cfg, connect, Arc::new(LoadProgress::default()))
        .await
        .unwrap();
    assert_eq!(report.requests, 200);
    assert_eq!(report.lost, 50);
    assert_eq!(report.latency.count(), 150);
    assert_eq!(report.late, 0);
    assert_eq!(report.mismatches, 0);
    assert!((report.loss_ratio() - 0.25).abs() < 1e-9);
}

/// The blocking UDP driver (what `proto client udp` uses) against the
/// same lossy path: every 4th datagram is dropped.
#[test]
fn udp_losses_are_counted_by_the_blocking_driver() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut n = 0u64;
        while let Ok((len, peer)) = socket.recv_from(&mut buf) {
            n += 1;
            if !n.is_multiple_of(4) {
                let _ = socket.send_to(&buf[..len].to_ascii_uppercase(), peer);
            }
        }
    });
    let cfg = config(Stop::Count(200), None, Duration::from_millis(30));
    let report = blocking::run_udp(&cfg, addr, Arc::new(LoadProgress::default())).unwrap();
    assert_eq!(report.requests, 200);
    assert_eq!(report.lost, 50);
    assert_eq!(report.latency.count(), 150);
    assert_eq!((report.late, report.mismatches), (0, 0));
}

/// A UDP echo server that holds its 5th reply for 120 ms.
async fn one_late_reply_server() -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let mut n = 0u64;
        loop {
            let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            n += 1;
            if n == 5 {
                // Far past the client's 50 ms: this reply will be late.
                tokio::time::sleep(Duration::from_millis(120)).await;
            }
            let _ = socket.send_to(&buf[..len].to_ascii_uppercase(), peer).await;
        }
    });
    addr
}

/// Replies that come back after their request was declared lost are
/// counted as late, and do not confuse the following requests: the same
/// through the async loop and the blocking one (one core decides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_udp_replies_are_told_apart() {
    let cfg = config(Stop::Count(20), None, Duration::from_millis(50));
    let addr = one_late_reply_server().await;
    let connect = |_| async move {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        s.connect(addr).await?;
        Ok(s)
    };
    let by_task = task::run_datagrams(&cfg, connect, Arc::new(LoadProgress::default()))
        .await
        .unwrap();
    let addr = one_late_reply_server().await;
    let cfg2 = cfg.clone();
    let by_thread = tokio::task::spawn_blocking(move || {
        blocking::run_udp(&cfg2, addr, Arc::new(LoadProgress::default())).unwrap()
    })
    .await
    .unwrap();
    for report in [by_task, by_thread] {
        // The server is single-threaded: while it sleeps, request 6 waits in
        // its queue too, so it may be lost as well.
        assert!((1..=2).contains(&report.lost), "lost {}", report.lost);
        assert_eq!(report.late, report.lost, "every lost reply turned up late");
        assert_eq!((report.mismatches, report.duplicates), (0, 0));
        assert_eq!(report.latency.count(), 20 - report.lost);
    }
}

/// A stream that, like a TLS stream whose socket is busy, keeps what is
/// written until it is flushed.
struct HoldsUntilFlush {
    inner: tokio::net::TcpStream,
    held: Vec<u8>,
}

impl tokio::io::AsyncRead for HoldsUntilFlush {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for HoldsUntilFlush {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.held.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        while !this.held.is_empty() {
            let n =
                std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_write(cx, &this.held))?;
            this.held.drain(..n);
        }
        std::pin::Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The async loop flushes every request: over a stream that holds bytes
/// until flushed (as a TLS stream does when its socket is busy, which made
/// TLS runs stall every 64th request), every request still gets its reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_flushed_through_buffering_streams() {
    let (tcp, _, stop) = echo_servers();
    let cfg = config(Stop::Count(100), None, Duration::from_secs(2));
    let connect = |_| async move {
        let inner = tokio::net::TcpStream::connect(tcp).await?;
        Ok(HoldsUntilFlush {
            inner,
            held: Vec::new(),
        })
    };
    let report = task::run_streams(&cfg, connect, Arc::new(LoadProgress::default()))
        .await
        .unwrap();
    assert_eq!(
        (report.requests, report.failed_connections),
        (100, 0),
        "{:?}",
        report.errors
    );
    stop.cancel();
}

/// A server that accepts and reads but never answers: both loops give up
/// after the timeout with the same typed failure (no CLI wording).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_loops_report_a_silent_server_the_same_way() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    let timeout = Duration::from_millis(200);
    let cfg = config(Stop::Count(5), None, timeout);
    let connect = |_| async move { Ok(tokio::net::TcpStream::connect(addr).await?) };
    let by_task = task::run_streams(&cfg, connect, Arc::new(LoadProgress::default()))
        .await
        .unwrap();
    let by_thread = blocking_tcp(&cfg, addr).await;
    for report in [by_task, by_thread] {
        assert_eq!((report.requests, report.failed_connections), (0, 1));
        assert_eq!(report.errors[0].failure, load::Failure::NoReply(timeout));
        assert_eq!(
            report.errors[0].to_string(),
            "connection 1: no reply within 200ms"
        );
    }
}

/// The plain TCP server (a thread per connection since the load work):
/// pipelined lines, a last line without newline at half-close, an over-long
/// line, the idle timeout and shutdown all behave as in the async session.
#[test]
fn plain_tcp_server_keeps_its_behaviour() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{Shutdown, TcpStream};
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners = Listeners {
        tcp: Some(bind_tcp(localhost).unwrap()),
        ..Listeners::default()
    };
    let addr = listeners.tcp.as_ref().unwrap().local_addr().unwrap();
    let config = ServerConfig {
        max_line: 16,
        idle_timeout: Duration::from_millis(300),
        grace: Duration::from_millis(500),
        ..ServerConfig::quiet_default().unwrap()
    };
    let token = CancellationToken::new();
    let stop = token.clone();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(server::run(listeners, config, stop))
    });

    // Pipelined lines, then a last line without '\n' before the half-close.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"one\ntwo\nlast").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "ONE\nTWO\nLAST\n");

    // A line over the limit gets an error line, then the connection closes.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&[b'a'; 40]).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "ERROR line too long (limit 16 bytes)\n");

    // An idle connection is closed after the idle timeout.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), 0, "closed by the server");
    assert!(started.elapsed() >= Duration::from_millis(250));

    // Shutdown: an open idle connection is closed and run() returns.
    let s = TcpStream::connect(addr).unwrap();
    let mut lines = BufReader::new(s.try_clone().unwrap());
    (&s).write_all(b"hi\n").unwrap();
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "HI\n");
    token.cancel();
    let summary = server.join().unwrap().unwrap();
    assert_eq!(summary.connections, 4);
    assert_eq!(summary.messages, 4);
    line.clear();
    assert_eq!(lines.read_line(&mut line).unwrap(), 0, "closed at shutdown");
}

/// Runs 400 closed-loop UDP requests across an emulated link (1 ms each
/// way, fixed seed) and returns the client's report and the link's
/// counters; `None` (after a skip message) where the lab cannot run.
async fn udp_across_the_lab(
    test: &str,
    link: proto::lab::LinkConfig,
) -> Option<(proto::measure::load::LoadReport, proto::lab::LinkCounters)> {
    use proto::cmd::load::{run_load, Security};
    use proto::lab::servers::LabServers;
    use proto::lab::LabConfig;
    use proto::transport::{certs::CertDir, tls::Trust, Target, Transport};
    if !support::lab_or_skip(test) {
        return None;
    }
    let mut lab = LabConfig::symmetric(link);
    lab.seed = 7;
    let certs =
        CertDir::new(std::env::temp_dir().join(format!("proto-load-lab-{}", std::process::id())));
    let servers = LabServers::start_with_certs(lab, &certs).await.unwrap();
    let udp = servers.addresses.get(Transport::Udp).unwrap();
    let config = LoadConfig {
        connections: 1,
        size: 64,
        framed: false,
        stop: Stop::Count(400),
        warmup: Duration::ZERO,
        rate: None,
        timeout: Duration::from_millis(150),
        unit: Unit::Nanos,
    };
    let report = servers
        .on_client(move || async move {
            let target = Target {
                host: udp.ip().to_string(),
                port: udp.port(),
            };
            let security = Security {
                trust: Trust::Insecure,
                server_name: None,
                tls_version: None,
            };
            let progress = Arc::new(LoadProgress::default());
            run_load(
                Transport::Udp,
                &target,
                &config,
                &security,
                1,
                Duration::from_secs(5),
                progress,
            )
            .await
        })
        .await
        .unwrap()
        .unwrap();
    let (_, counters) = servers.stop().await.unwrap();
    Some((report, counters))
}

/// UDP over a lossy emulated link with a fixed seed: every datagram the
/// link dropped, in either direction, is exactly one lost reply — no more
/// (nothing else was lost), no less (nothing hung or was miscounted).
#[tokio::test(flavor = "multi_thread")]
async fn udp_losses_match_the_lossy_links_drops_exactly() {
    let link = proto::lab::LinkConfig {
        delay: Duration::from_millis(1),
        loss: proto::lab::LossModel::Random { p: 0.05 },
        ..Default::default()
    };
    let Some((report, counters)) =
        udp_across_the_lab("udp_losses_match_the_lossy_links_drops_exactly", link).await
    else {
        return;
    };
    let dropped = counters.client_to_server.dropped_loss + counters.server_to_client.dropped_loss;
    assert!(
        dropped > 5,
        "5 % of ~800 datagrams should be lost, the link dropped {dropped}"
    );
    assert_eq!(
        report.lost, dropped,
        "lost replies vs datagrams the link dropped"
    );
    assert_eq!(report.requests, 400, "--count counts answered requests");
    assert_eq!((report.late, report.duplicates), (0, 0));
}

/// UDP has no duplicate protection: every copy the link made (of a request,
/// which the server then answers twice, or of a reply) reaches the client
/// as one extra reply, counted as a duplicate, not as a wrong reply.
#[tokio::test(flavor = "multi_thread")]
async fn udp_duplicates_match_the_links_copies() {
    let link = proto::lab::LinkConfig {
        delay: Duration::from_millis(1),
        duplicate: 0.05,
        ..Default::default()
    };
    let Some((report, counters)) =
        udp_across_the_lab("udp_duplicates_match_the_links_copies", link).await
    else {
        return;
    };
    let copies = counters.client_to_server.duplicated + counters.server_to_client.duplicated;
    assert!(
        copies > 5,
        "5 % of ~800 datagrams should be duplicated, the link made {copies}"
    );
    // Copies still in flight when the last reply arrived are not seen: at
    // most the last request's (one up, its two replies down).
    assert!(
        report.duplicates <= copies && report.duplicates + 3 >= copies,
        "client saw {} duplicates, the link made {copies}",
        report.duplicates
    );
    assert_eq!((report.lost, report.late, report.mismatches), (0, 0, 0));
    assert_eq!(report.requests, 400);
}

/// The reliable transports over the same bad link: TCP, TLS and QUIC
/// retransmit, reorder and deduplicate, so every request gets exactly its
/// own reply, once, in order — where UDP (above) shows the damage.
#[test]
fn reliable_transports_hide_loss_duplication_and_reordering() {
    if !lab_or_skip("reliable_transports_hide_loss_duplication_and_reordering") {
        return;
    }
    let certs = std::env::temp_dir().join(format!("proto-load-reliable-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_proto"))
        .args([
            "bench",
            "--protocols",
            "tcp,tls,quic",
            "--rtt",
            "2ms",
            "--loss",
            "3%",
            "--duplicate",
            "3%",
            "--reorder",
            "3%",
            "--seed",
            "11",
            "--count",
            "300",
            "--warmup",
            "0s",
            "--json",
        ])
        .env("PROTO_CERT_DIR", &certs)
        .output()
        .unwrap();
    let rows = json_of(&out);
    for row in rows.as_array().unwrap() {
        let t = &row["transport"];
        assert_eq!(row["requests"], 300, "{t}: {row}");
        assert_eq!(
            row["mismatches"], 0,
            "{t}: every reply was its request's, in order"
        );
        assert_eq!(
            (row["lost"].as_u64(), row["duplicates"].as_u64()),
            (Some(0), Some(0)),
            "{t}"
        );
        assert_eq!(
            row["errors"].as_array().map(Vec::len),
            Some(0),
            "{t}: {row}"
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dropped by loss"),
        "the link counters are shown: {stderr}"
    );
}
