//! Integration tests for `proto lab` (the emulated link).
//!
//! They need root (network namespaces, TUN devices). Without it each test
//! prints a skip message and passes, unless `PROTO_LAB_REQUIRED=1` is set
//! (as in CI), in which case skipping is a failure.
//!
//! Tests that build a lab run one at a time (a global lock): timing asserts
//! on a 2-core machine should not compete with a bulk-transfer test.
//! Timing upper bounds get up to 3 attempts (see `with_attempts`): other
//! programs hogging the CPUs can delay packets by milliseconds, which says
//! nothing about the emulator; a real timing bug fails every attempt.

mod support;

use proto::lab::{pcap, Lab, LabConfig, LinkConfig, LossModel};
use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static LAB_LOCK: Mutex<()> = Mutex::new(());

/// Some(guard) when the lab can run here (see `support::lab_or_skip`); the
/// guard makes the lab tests of this file run one at a time.
fn lab_or_skip(test: &str) -> Option<MutexGuard<'static, ()>> {
    if !support::lab_or_skip(test) {
        return None;
    }
    Some(LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Raise the calling thread to the highest nice priority (we are root when
/// these tests run), so that a busy machine delays our *measurements* less:
/// the tests time the link, not the scheduler.
fn urgent() {
    // SAFETY: setpriority on the calling thread's own id.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -20);
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn symmetric_rtt(rtt: Duration) -> LabConfig {
    LabConfig::symmetric(LinkConfig {
        delay: rtt / 2,
        ..Default::default()
    })
}

/// Timing upper bounds can be broken by a busy machine (another program
/// holding both CPUs), never by luck in the other direction. So a timing
/// check gets up to 3 attempts: a real regression fails all of them.
/// Lower bounds ("never faster than the RTT") are asserted directly.
fn with_attempts(test: &str, mut attempt: impl FnMut() -> Result<(), String>) {
    let mut failures = Vec::new();
    for _ in 0..3 {
        match attempt() {
            Ok(()) => return,
            Err(e) => {
                eprintln!("{test}: attempt failed: {e}");
                failures.push(e);
            }
        }
    }
    panic!("{test}: all attempts failed: {failures:#?}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
fn tcp_connect_takes_one_rtt() {
    let Some(_guard) = lab_or_skip("tcp_connect_takes_one_rtt") else {
        return;
    };
    let lab = Lab::start(symmetric_rtt(ms(60))).unwrap();
    let ip = lab.server_ip();
    let listener = lab.in_server(|| TcpListener::bind((ip, 0))).unwrap();
    let addr = listener.local_addr().unwrap();
    // No accept() needed: the kernel completes the handshake on its own
    // and queues the connection in the listen backlog.
    with_attempts("tcp_connect_takes_one_rtt", || {
        let mut times = Vec::new();
        for _ in 0..7 {
            let (elapsed, _stream) = lab.in_client(|| {
                urgent();
                let t = Instant::now();
                let s = TcpStream::connect(addr).unwrap();
                (t.elapsed(), s)
            });
            times.push(elapsed.as_secs_f64() * 1e3);
        }
        eprintln!("connect times at 60 ms RTT: {times:.3?}");
        // SYN (30 ms) + SYN-ACK (30 ms): never less than the RTT...
        assert!(times.iter().all(|&t| t >= 59.9), "{times:?}");
        // ...and only timer/scheduling noise above it.
        let m = median(times);
        if m < 62.0 {
            Ok(())
        } else {
            Err(format!("median connect {m} ms for a 60 ms RTT"))
        }
    });
    drop(listener);
}

#[test]
fn asymmetric_delays_add_up_to_the_rtt() {
    let Some(_guard) = lab_or_skip("asymmetric_delays_add_up_to_the_rtt") else {
        return;
    };
    urgent();
    let cfg = LabConfig {
        client_to_server: LinkConfig {
            delay: ms(10),
            ..Default::default()
        },
        server_to_client: LinkConfig {
            delay: ms(40),
            ..Default::default()
        },
        ..Default::default()
    };
    let lab = Lab::start(cfg).unwrap();
    let ip = lab.server_ip();
    let server = lab.in_server(|| UdpSocket::bind((ip, 0))).unwrap();
    let to = server.local_addr().unwrap();
    let client = lab.in_client(|| UdpSocket::bind("0.0.0.0:0")).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 16];
    with_attempts("asymmetric_delays_add_up_to_the_rtt", || {
        let (mut ups, mut rtts) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            let t = Instant::now();
            client.send_to(b"x", to).unwrap();
            let (_, from) = server.recv_from(&mut buf).unwrap();
            ups.push(t.elapsed().as_secs_f64() * 1e3);
            server.send_to(b"y", from).unwrap();
            client.recv_from(&mut buf).unwrap();
            rtts.push(t.elapsed().as_secs_f64() * 1e3);
        }
        eprintln!("one-way up {ups:.3?}, RTT {rtts:.3?}");
        assert!(ups.iter().all(|&u| u >= 9.9), "up one-way {ups:?}");
        assert!(rtts.iter().all(|&r| r >= 49.9), "RTT {rtts:?}");
        let (up, rtt) = (median(ups), median(rtts));
        if up < 12.0 && rtt < 52.0 {
            Ok(())
        } else {
            Err(format!(
                "up one-way {up} ms for 10 ms, RTT {rtt} ms for 10 + 40 ms"
            ))
        }
    });
}

/// What a receiver saw of a numbered UDP stream.
#[derive(Debug, Default)]
struct Received {
    unique: BTreeSet<u32>,
    duplicates: u64,
    late: u64,
    order: Vec<u32>,
}

fn receive_numbered(sock: &UdpSocket, quiet: Duration) -> Received {
    sock.set_read_timeout(Some(quiet)).unwrap();
    let mut r = Received::default();
    let mut max: Option<u32> = None;
    let mut buf = [0u8; 64];
    while let Ok(n) = sock.recv(&mut buf) {
        assert_eq!(n, 8);
        let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        r.order.push(seq);
        if !r.unique.insert(seq) {
            r.duplicates += 1;
        } else if max.is_some_and(|m| seq < m) {
            r.late += 1;
        }
        max = Some(max.map_or(seq, |m| m.max(seq)));
    }
    r
}

/// Room for every datagram even if the receiving thread is descheduled for
/// a while on a busy machine (SO_RCVBUFFORCE: root may exceed rmem_max).
fn big_receive_buffer(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 16 << 20;
    // SAFETY: valid socket fd and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn numbered_udp_run(seed: u64, n: u32) -> (Received, proto::lab::LinkCounters) {
    let link = LinkConfig {
        delay: ms(2),
        loss: LossModel::Random { p: 0.10 },
        duplicate: 0.05,
        reorder: 0.05,
        reorder_delay: ms(5),
        ..Default::default()
    };
    let lab = Lab::start(LabConfig {
        seed,
        ..LabConfig::symmetric(link)
    })
    .unwrap();
    let ip = lab.server_ip();
    let server = lab.in_server(|| UdpSocket::bind((ip, 0))).unwrap();
    let to = server.local_addr().unwrap();
    let client = lab.in_client(|| UdpSocket::bind("0.0.0.0:0")).unwrap();
    big_receive_buffer(&server);
    let receiver = std::thread::spawn(move || {
        urgent();
        receive_numbered(&server, ms(1000))
    });
    urgent();
    // Paced (about one datagram every 100 µs) so that no socket buffer or
    // device queue drops anything: every loss must be the link's.
    let start = Instant::now();
    for seq in 0..n {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&seq.to_be_bytes());
        client.send_to(&msg, to).unwrap();
        let due = start + Duration::from_micros(100 * seq as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let received = receiver.join().unwrap();
    (received, lab.shutdown())
}

#[test]
fn udp_loss_duplication_and_reordering_match_the_counters_exactly() {
    let Some(_guard) =
        lab_or_skip("udp_loss_duplication_and_reordering_match_the_counters_exactly")
    else {
        return;
    };
    let n = 3000;
    let (r, c) = numbered_udp_run(42, n);
    let up = c.client_to_server;
    eprintln!(
        "received {} unique, {} dups, {} late; counters {up:?}",
        r.unique.len(),
        r.duplicates,
        r.late
    );
    assert_eq!(up.packets, n as u64, "only our datagrams crossed the link");
    assert_eq!(
        up.dropped_loss,
        n as u64 - r.unique.len() as u64,
        "lost = sent - received"
    );
    assert_eq!(up.duplicated, r.duplicates);
    assert_eq!(up.reordered, r.late);
    assert_eq!(up.delivered_packets, r.order.len() as u64);
    assert_eq!(up.dropped_queue + up.in_flight + up.write_errors, 0);
    // The rates are roughly the configured ones...
    assert!((200..400).contains(&up.dropped_loss), "{up:?}");
    assert!((80..220).contains(&up.duplicated), "{up:?}");
    assert!(up.reordered > 50, "{up:?}");

    // ...and the same seed loses and duplicates the same datagrams.
    let (r2, c2) = numbered_udp_run(42, n);
    assert_eq!(r.unique, r2.unique);
    assert_eq!(
        c.client_to_server.duplicated,
        c2.client_to_server.duplicated
    );
    let (r3, _) = numbered_udp_run(43, n);
    assert_ne!(r.unique, r3.unique, "another seed loses other datagrams");
}

#[test]
fn rate_limit_and_drop_tail_queue() {
    let Some(_guard) = lab_or_skip("rate_limit_and_drop_tail_queue") else {
        return;
    };
    with_attempts("rate_limit_and_drop_tail_queue", rate_attempt);
}

fn rate_attempt() -> Result<(), String> {
    let rate = 20_000_000u64; // 20 Mbit/s
                              // 200 packets = 82 ms of buffer at 20 Mbit/s: the queue stays busy even
                              // if a loaded machine pauses our sender for a while.
    let queue = 200;
    let cfg = LabConfig {
        client_to_server: LinkConfig {
            delay: ms(5),
            rate_bps: Some(rate),
            queue_packets: queue,
            ..Default::default()
        },
        ..Default::default()
    };
    let lab = Lab::start(cfg).unwrap();
    let ip = lab.server_ip();
    let server = lab.in_server(|| UdpSocket::bind((ip, 0))).unwrap();
    let to = server.local_addr().unwrap();
    let client = lab.in_client(|| UdpSocket::bind("0.0.0.0:0")).unwrap();
    big_receive_buffer(&server);
    const PAYLOAD: usize = 1000;
    const IP_SIZE: u64 = PAYLOAD as u64 + 28; // + IPv4 (20) and UDP (8) headers
    urgent();
    let receiver = std::thread::spawn(move || {
        urgent();
        server.set_read_timeout(Some(ms(2000))).unwrap();
        let mut buf = [0u8; 2048];
        let (mut first, mut last, mut count) = (None, None, 0u64);
        while server.recv(&mut buf).is_ok() {
            let now = Instant::now();
            first.get_or_insert(now);
            last = Some(now);
            count += 1;
        }
        (first, last, count)
    });
    // Offer 40 Mbit/s for 2 s: the bottleneck must hold 20 and drop the rest.
    let offered = 40_000_000f64;
    let per_packet = Duration::from_secs_f64(IP_SIZE as f64 * 8.0 / offered);
    let start = Instant::now();
    let mut sent = 0u32;
    while start.elapsed() < Duration::from_secs(2) {
        client.send_to(&[0u8; PAYLOAD], to).unwrap();
        sent += 1;
        if let Some(wait) = (start + per_packet * sent).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let (first, last, count) = receiver.join().unwrap();
    let c = lab.shutdown().client_to_server;
    let (first, last) = (first.unwrap(), last.unwrap());
    // n packets arrive over (n - 1) transmission times.
    let measured = (count - 1) as f64 * IP_SIZE as f64 * 8.0 / (last - first).as_secs_f64();
    eprintln!("rate {measured:.0} bit/s for {rate}; {c:?}");
    // Exact bookkeeping: everything that entered the link was delivered or
    // dropped by the full queue, and the queue filled up.
    assert!(c.dropped_queue > 0, "an overloaded drop-tail queue drops");
    assert_eq!(c.packets, c.delivered_packets + c.dropped_queue);
    assert_eq!(c.queue_peak, queue as u64);
    // A starved sender may have its datagrams dropped by its own kernel
    // before they reach the link; on a quiet machine none are.
    if c.packets != sent as u64 {
        return Err(format!("{sent} sent, {} reached the link", c.packets));
    }
    // Likewise a starved receiver may miss some.
    if c.delivered_packets != count {
        return Err(format!(
            "{} delivered, {count} received",
            c.delivered_packets
        ));
    }
    if (measured / rate as f64 - 1.0).abs() < 0.03 {
        Ok(())
    } else {
        Err(format!("measured {measured:.0} bit/s for {rate}"))
    }
}

#[test]
fn pcap_parses_back_and_shows_the_handshake_rtt() {
    let Some(_guard) = lab_or_skip("pcap_parses_back_and_shows_the_handshake_rtt") else {
        return;
    };
    with_attempts("pcap_parses_back_and_shows_the_handshake_rtt", pcap_attempt);
}

fn pcap_attempt() -> Result<(), String> {
    let path = std::env::temp_dir().join(format!("proto-lab-test-{}.pcap", std::process::id()));
    let cfg = LabConfig {
        pcap: Some(path.clone()),
        ..symmetric_rtt(ms(60))
    };
    let lab = Lab::start(cfg).unwrap();
    let ip = lab.server_ip();
    let listener = lab.in_server(|| TcpListener::bind((ip, 0))).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        urgent();
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf.to_ascii_uppercase()).unwrap();
    });
    lab.in_client(|| {
        urgent();
        let mut s = TcpStream::connect((ip, port)).unwrap();
        s.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HELLO");
    });
    server.join().unwrap();
    let c = lab.shutdown();

    let bytes = std::fs::read(&path).unwrap();
    let cap = pcap::parse(&bytes).unwrap();
    assert_eq!(cap.linktype, pcap::LINKTYPE_RAW);
    // Captured as the client sees it: all it sent, all it received.
    let expected = c.client_to_server.packets + c.server_to_client.delivered_packets;
    assert_eq!(cap.records.len() as u64, expected);
    let tcp_flags = |p: &[u8]| {
        assert_eq!(p[0] >> 4, 4, "IPv4");
        assert_eq!(p[9], 6, "TCP");
        let ihl = (p[0] & 0x0f) as usize * 4;
        (
            u16::from_be_bytes([p[ihl], p[ihl + 1]]),
            u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]),
            p[ihl + 13],
        )
    };
    let (_, dst, flags) = tcp_flags(&cap.records[0].data);
    assert_eq!((dst, flags & 0x12), (port, 0x02), "first packet is the SYN");
    let (src, _, flags) = tcp_flags(&cap.records[1].data);
    assert_eq!(
        (src, flags & 0x12),
        (port, 0x12),
        "second packet is the SYN-ACK"
    );
    let rtt = (cap.records[1].ts_nanos - cap.records[0].ts_nanos) as f64 / 1e6;
    eprintln!("SYN → SYN-ACK in the capture: {rtt:.3} ms");
    assert!(rtt >= 59.9, "SYN → SYN-ACK {rtt} ms");
    assert!(cap
        .records
        .windows(2)
        .all(|w| w[0].ts_nanos <= w[1].ts_nanos));

    // tcpdump reads it too (skipped with a message where it is missing).
    if let Some(mut tcpdump) =
        support::outside_program("pcap read by tcpdump", "tcpdump", "tcpdump")
    {
        let out = tcpdump.arg("-nn").arg("-r").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "tcpdump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Flags [S]"), "{text}");
        assert_eq!(text.lines().count() as u64, expected);
    }
    let _ = std::fs::remove_file(&path);
    if rtt < 62.0 {
        Ok(())
    } else {
        Err(format!(
            "SYN → SYN-ACK {rtt} ms in the capture for a 60 ms RTT"
        ))
    }
}

// ---- the `proto lab` binary -------------------------------------------------

fn proto() -> Command {
    Command::new(env!("CARGO_BIN_EXE_proto"))
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(marker)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Every network namespace reachable from a process or an open fd, plus
/// namespaces pinned by a mount (what `ip netns add` does).
fn network_namespaces() -> (HashSet<String>, usize) {
    let mut set = HashSet::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
            if let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/net")) {
                set.insert(link.display().to_string());
            }
            if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                for fd in fds.filter_map(|e| e.ok()) {
                    if let Ok(link) = std::fs::read_link(fd.path()) {
                        let l = link.display().to_string();
                        if l.starts_with("net:[") {
                            set.insert(l);
                        }
                    }
                }
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" nsfs "))
        .count();
    (set, mounts)
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("proto did not exit within {limit:?}");
        }
        std::thread::sleep(ms(10));
    }
}

/// Waits (bounded) until no process carries `marker`, then asserts it.
fn assert_no_process_with(marker: &str) {
    let start = Instant::now();
    while !processes_with(marker).is_empty() && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(ms(10));
    }
    assert_eq!(
        processes_with(marker),
        Vec::<i32>::new(),
        "processes left behind"
    );
}

fn assert_no_new_namespaces(before: &(HashSet<String>, usize)) {
    let after = network_namespaces();
    let new: Vec<_> = after.0.difference(&before.0).collect();
    assert!(new.is_empty(), "network namespaces left behind: {new:?}");
    assert!(after.1 <= before.1, "nsfs mounts left behind");
}

#[test]
fn binary_propagates_the_exit_code_and_leaves_nothing_behind() {
    let Some(_guard) = lab_or_skip("binary_propagates_the_exit_code_and_leaves_nothing_behind")
    else {
        return;
    };
    let before = network_namespaces();
    let marker = "1000.123";
    // A background job that outlives the shell must be cleaned up too.
    let out = proto()
        .args(["lab", "--rtt", "60ms", "--", "sh", "-c"])
        .arg(format!(
            "test -n \"$PROTO_LAB_SERVER\" || exit 99; sleep {marker} & exit 7"
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(stderr.contains("link counters"), "{stderr}");
    assert_no_process_with(marker);
    assert_no_new_namespaces(&before);
}

#[test]
fn binary_runs_the_default_echo_server_and_prints_json() {
    let Some(_guard) = lab_or_skip("binary_runs_the_default_echo_server_and_prints_json") else {
        return;
    };
    let out = proto()
        .args(["lab", "--rtt", "20ms", "--json", "--", "bash", "-c"])
        .arg("exec 3<>/dev/tcp/$PROTO_LAB_SERVER/8081; echo hello >&3; head -c 6 <&3")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("HELLO\n"), "{stdout}");
    let json = &stdout[stdout.find('{').unwrap()..];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert!(
        v["client_to_server"]["packets"].as_u64().unwrap() >= 3,
        "{v}"
    );
    assert!(
        v["server_to_client"]["delivered_bytes"].as_u64().unwrap() > 0,
        "{v}"
    );
    let fidelity = &v["fidelity"]["client_to_server"];
    assert!(fidelity["timed_packets"].as_u64().unwrap() >= 3, "{v}");
    assert_eq!(fidelity["configured_delay_ms"], 10.0, "{v}");
    assert!(fidelity["delay_p50_ms"].as_f64().unwrap() >= 10.0, "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("link fidelity"), "{stderr}");
}

/// Sends `n` numbered datagrams client→server, one per millisecond, and
/// returns the link's counters after it stopped.
fn paced_datagrams(lab: Lab, n: u32) -> proto::lab::LinkCounters {
    let ip = lab.server_ip();
    let server = lab.in_server(|| UdpSocket::bind((ip, 0))).unwrap();
    let to = server.local_addr().unwrap();
    let client = lab.in_client(|| UdpSocket::bind("0.0.0.0:0")).unwrap();
    big_receive_buffer(&server);
    let receiver = std::thread::spawn(move || receive_numbered(&server, ms(500)));
    let start = Instant::now();
    for seq in 0..n {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&seq.to_be_bytes());
        client.send_to(&msg, to).unwrap();
        let due = start + ms(seq as u64 + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    receiver.join().unwrap();
    lab.shutdown()
}

/// On a quiet link the fidelity report's realised one-way delay is the
/// configured one within the lab's accuracy target.
#[test]
fn fidelity_report_matches_a_quiet_link() {
    let Some(_guard) = lab_or_skip("fidelity_report_matches_a_quiet_link") else {
        return;
    };
    use proto::lab::fidelity::{assess_lab, ACCURACY_TARGET};
    let target = ACCURACY_TARGET.as_secs_f64() * 1e3;
    with_attempts("fidelity_report_matches_a_quiet_link", || {
        let config = symmetric_rtt(ms(20));
        let counters = paced_datagrams(Lab::start(config.clone()).unwrap(), 300);
        let f = assess_lab(&config, &counters);
        let up = &f.client_to_server;
        eprintln!("{}", proto::output::link::fidelity_report(&f));
        assert_eq!(up.timed_packets, 300);
        assert_eq!(up.forwarder_dropped, 0);
        let p50 = up.delay_p50_ms.unwrap();
        // Never early; late only by scheduling noise.
        assert!(p50 >= 10.0, "realised p50 {p50} ms for 10 ms");
        if p50 - 10.0 > target || up.error_p50_ms.unwrap() > target {
            return Err(format!("realised p50 {p50:.3} ms for a 10 ms delay"));
        }
        // (How many packets were late depends on the rest of the machine:
        // `fidelity_report_flags_a_busy_machine` checks that they are reported.)
        Ok(())
    });
}

/// With every CPU busy (several spinning threads per CPU, at the
/// forwarder's own priority), packets leave late and the report says so.
#[test]
fn fidelity_report_flags_a_busy_machine() {
    let Some(_guard) = lab_or_skip("fidelity_report_flags_a_busy_machine") else {
        return;
    };
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let config = symmetric_rtt(ms(20));
    let lab = Lab::start(config.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs: Vec<_> = (0..4 * cpus)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
        })
        .collect();
    let counters = paced_datagrams(lab, 500);
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    let f = proto::lab::fidelity::assess_lab(&config, &counters);
    let report = proto::output::link::fidelity_report(&f);
    eprintln!("{report}");
    assert!(!f.faithful, "{report}");
    assert!(f.client_to_server.late_packets > 0, "{report}");
    assert!(report.contains("NOT what was asked for"), "{report}");
    assert!(report.contains("too busy"), "{report}");
}

#[test]
fn binary_server_command_runs_in_the_server_namespace() {
    let Some(_guard) = lab_or_skip("binary_server_command_runs_in_the_server_namespace") else {
        return;
    };
    if support::nc("binary_server_command_runs_in_the_server_namespace").is_none() {
        return;
    }
    let marker = "1000.321";
    let out = proto()
        .args(["lab", "--delay", "5ms", "--server"])
        .arg(format!(
            "nc -l -p 9000 -s $PROTO_LAB_SERVER > /dev/null; sleep {marker}"
        ))
        .args([
            "--",
            "sh",
            "-c",
            "echo hi | nc -q 0 $PROTO_LAB_SERVER 9000 && echo sent",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sent"), "{stdout}");
    assert_no_process_with(marker);
}

fn signal_test(signal: i32, expected_code: i32) {
    let before = network_namespaces();
    let marker = format!("1000.{signal}45");
    let mut child = proto()
        .args(["lab", "--rtt", "10ms", "--", "sh", "-c"])
        .arg(format!("echo ready; sleep {marker}; echo not-reached"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    // Wait until the sleep is really running, then signal proto only.
    let start = Instant::now();
    while processes_with(&marker).is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(ms(5));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(expected_code));
    assert_no_process_with(&marker);
    assert_no_new_namespaces(&before);
}

#[test]
fn sigint_kills_the_command_and_tears_down() {
    let Some(_guard) = lab_or_skip("sigint_kills_the_command_and_tears_down") else {
        return;
    };
    signal_test(libc::SIGINT, 130);
}

#[test]
fn sigterm_kills_the_command_and_tears_down() {
    let Some(_guard) = lab_or_skip("sigterm_kills_the_command_and_tears_down") else {
        return;
    };
    signal_test(libc::SIGTERM, 143);
}

#[test]
fn a_panic_inside_proto_leaves_nothing_behind() {
    let Some(_guard) = lab_or_skip("a_panic_inside_proto_leaves_nothing_behind") else {
        return;
    };
    let before = network_namespaces();
    let marker = "1000.789";
    let mut child = proto()
        .args(["lab", "--rtt", "10ms", "--", "sleep", marker])
        .env("PROTO_LAB_TEST_PANIC", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(101), "{stderr}");
    assert!(stderr.contains("PROTO_LAB_TEST_PANIC"), "{stderr}");
    assert_no_process_with(marker);
    assert_no_new_namespaces(&before);
}

/// COMMAND is process 2 of its own PID namespace (process 1 is the lab's
/// init), and /proc inside agrees, so `ps` and `kill` work with lab numbers.
#[test]
fn command_runs_in_its_own_pid_namespace_with_its_own_proc() {
    let Some(_guard) = lab_or_skip("command_runs_in_its_own_pid_namespace_with_its_own_proc")
    else {
        return;
    };
    let out = proto()
        .args(["lab", "--rtt", "1ms", "--", "sh", "-c"])
        .arg("echo $$; cat /proc/1/comm; ls /proc | grep -c '^[0-9]'")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..2], ["2", "lab-init"], "{stdout}");
    // init, sh, ls and grep: not the machine's hundreds of processes.
    let visible: usize = lines[2].parse().unwrap();
    assert!(visible <= 5, "{visible} processes visible: {stdout}");
}

/// SIGKILL gives proto no chance to clean up, so the kernel must: COMMAND
/// runs as the child of process 1 of a PID namespace that dies with proto,
/// and every process in it (here a background job and a `setsid` daemon
/// that escaped the shell's session) dies with that process 1. With them go
/// the last users of the lab's network namespaces.
#[test]
fn sigkill_of_the_lab_leaves_no_process_and_no_namespace() {
    let Some(_guard) = lab_or_skip("sigkill_of_the_lab_leaves_no_process_and_no_namespace") else {
        return;
    };
    let before = network_namespaces();
    let marker = "1000.977";
    let mut child = proto()
        .args(["lab", "--rtt", "10ms", "--", "sh", "-c"])
        .arg(format!(
            "sleep {marker} & setsid sleep {marker} & echo ready; sleep {marker}"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let start = Instant::now();
    let sleepers = || -> Vec<i32> {
        processes_with(marker)
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c == "sleep\n")
            })
            .collect()
    };
    while sleepers().len() < 3 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(ms(5));
    }
    let sleepers = sleepers();
    if sleepers.len() != 3 {
        let _ = child.kill();
    }
    assert_eq!(sleepers.len(), 3, "three sleeps running: {sleepers:?}");
    let lab_namespaces: HashSet<String> = sleepers
        .iter()
        .filter_map(|pid| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok())
        .map(|l| l.display().to_string())
        .collect();
    assert_eq!(lab_namespaces.len(), 1, "{lab_namespaces:?}");
    assert!(lab_namespaces.is_disjoint(&before.0), "a new namespace");

    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_no_process_with(marker);
    // Nothing (process or open descriptor) refers to the lab's namespace.
    let start = Instant::now();
    while !network_namespaces().0.is_disjoint(&lab_namespaces)
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(ms(10));
    }
    assert!(
        network_namespaces().0.is_disjoint(&lab_namespaces),
        "the lab's network namespace survived: {lab_namespaces:?}"
    );
    assert_no_new_namespaces(&before);
}

/// Runs even without root: bad settings are reported as such.
/// Every `--link` preset builds its link, carries an echo across it and
/// takes at least the preset's round trips for it (connect + echo = 2 RTT).
#[test]
fn every_link_preset_runs() {
    let Some(_guard) = lab_or_skip("every_link_preset_runs") else {
        return;
    };
    for preset in &proto::lab::presets::PRESETS {
        let started = Instant::now();
        let out = proto()
            .args(["lab", "--link", preset.name, "--json", "--", "bash", "-c"])
            .arg("exec 3<>/dev/tcp/$PROTO_LAB_SERVER/8081; echo hello >&3; head -c 6 <&3")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", preset.name);
        assert!(stdout.starts_with("HELLO\n"), "{}: {stdout}", preset.name);
        assert!(
            started.elapsed() >= 2 * preset.rtt,
            "{}: an echo took less than 2 RTT",
            preset.name
        );
        let up = stderr.lines().find(|l| l.contains("up   client")).unwrap();
        if let Some(rate) = preset.up_rate {
            assert!(up.contains("rate "), "{}: {up} (rate {rate})", preset.name);
        }
    }
}

#[test]
fn invalid_settings_are_rejected_before_anything_is_built() {
    let bad_link = LinkConfig {
        duplicate: 2.0,
        ..Default::default()
    };
    let err = Lab::start(LabConfig::symmetric(bad_link)).unwrap_err();
    assert!(matches!(err, proto::lab::LabError::Config { .. }), "{err}");
    let err = Lab::start(LabConfig {
        mtu: 10,
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("MTU"), "{err}");
}

/// A capture ends after the connection has: COMMAND's FIN, the server's
/// answering FIN and the last ACK are all in the file, because the lab lets
/// in-flight packets cross before it stops the link.
#[test]
fn the_capture_records_both_fins_of_the_last_connection() {
    let Some(_guard) = lab_or_skip("the_capture_records_both_fins_of_the_last_connection") else {
        return;
    };
    let path = std::env::temp_dir().join(format!("proto-lab-fin-{}.pcap", std::process::id()));
    let status = proto()
        .args(["lab", "--rtt", "80ms", "--pcap"])
        .arg(&path)
        .args([
            "--",
            env!("CARGO_BIN_EXE_proto"),
            "client",
            "tcp",
            "10.77.0.2",
            "-m",
            "hi",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let cap = pcap::parse(&bytes).unwrap();
    // (source port, TCP flags) of every TCP packet, in capture order.
    let tcp: Vec<(u16, u8)> = cap
        .records
        .iter()
        .filter(|r| r.data.len() > 20 && r.data[0] >> 4 == 4 && r.data[9] == 6)
        .map(|r| {
            let ihl = (r.data[0] & 0x0f) as usize * 4;
            (
                u16::from_be_bytes([r.data[ihl], r.data[ihl + 1]]),
                r.data[ihl + 13],
            )
        })
        .collect();
    const FIN: u8 = 0x01;
    let server_fin = tcp.iter().position(|&(src, f)| src == 8081 && f & FIN != 0);
    let client_fin = tcp.iter().position(|&(src, f)| src != 8081 && f & FIN != 0);
    assert!(
        client_fin.is_some(),
        "the client's FIN is captured: {tcp:?}"
    );
    let server_fin = server_fin.unwrap_or_else(|| panic!("the server's FIN is captured: {tcp:?}"));
    // And the client's answer to it (an ACK, or a RST from a closed socket).
    assert!(
        tcp[server_fin + 1..].iter().any(|&(src, _)| src != 8081),
        "the client's answer to the server's FIN is captured: {tcp:?}"
    );
}

/// The lab's shell says where it is: a banner, and a prompt starting with
/// `[proto lab]` (sh reads PS1 from the environment).
#[test]
fn the_lab_shell_shows_that_it_is_inside_the_lab() {
    let Some(_guard) = lab_or_skip("the_lab_shell_shows_that_it_is_inside_the_lab") else {
        return;
    };
    let out = support::run_with_input(
        proto()
            .args(["lab", "--delay", "1ms"])
            .env("SHELL", "/bin/sh"),
        b"echo \"prompt=$PS1\"; exit\n",
    );
    let (status, stdout, stderr) = out;
    assert!(status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&stdout).contains("prompt=[proto lab]"),
        "{}",
        String::from_utf8_lossy(&stdout)
    );
    assert!(stderr.contains("a shell on the client host"), "{stderr}");
}

/// With SSLKEYLOGFILE set, the client inside the lab logs each secret once;
/// the lab's in-process server does not log the same secrets again.
#[test]
fn the_lab_server_does_not_log_keys_twice() {
    let Some(_guard) = lab_or_skip("the_lab_server_does_not_log_keys_twice") else {
        return;
    };
    let keylog = std::env::temp_dir().join(format!("proto-lab-keys-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&keylog);
    let status = proto()
        .args(["lab", "--delay", "1ms", "--"])
        .args([
            env!("CARGO_BIN_EXE_proto"),
            "client",
            "tls",
            "10.77.0.2",
            "-m",
            "hi",
        ])
        .env("SSLKEYLOGFILE", &keylog)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let log = std::fs::read_to_string(&keylog).unwrap_or_default();
    let _ = std::fs::remove_file(&keylog);
    let secrets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TRAFFIC_SECRET_0"))
        .collect();
    assert_eq!(
        secrets.len(),
        2,
        "client and server traffic secret once each:\n{log}"
    );
}

#[test]
fn a_chart_drawn_in_the_lab_names_the_link_in_its_title() {
    let Some(_guard) = lab_or_skip("a_chart_drawn_in_the_lab_names_the_link_in_its_title") else {
        return;
    };
    let dir = support::temp_dir("lab-chart");
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("rtt.svg");
    let out = proto()
        .args(["lab", "--rtt", "20ms", "--loss", "1%", "--", "sh", "-c"])
        .arg(format!(
            "test \"$PROTO_LAB_LINK\" = 'each way: delay 10ms, loss 1%' || exit 9; \
             {} client tcp $PROTO_LAB_SERVER --count 30 --plot {} --plot-scale log",
            env!("CARGO_BIN_EXE_proto"),
            svg.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.contains("across proto lab (each way: delay 10ms, loss 1%)"),
        "{svg}"
    );
    assert!(
        svg.contains(">latency (log scale)<") && svg.contains(" ms<"),
        "{svg}"
    );
}
