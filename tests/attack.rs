//! The attack suite: each row of issue 13's table, re-run on loopback
//! against a real `proto serve` process, printing the figures and checking
//! that the row now "holds".
//!
//! By default every attack is scaled down to run in seconds (CI runs it as
//! part of `cargo test`). `PROTO_ATTACK=full` runs them at the issue's
//! scale (16 400 connections, 5 000 idle, 2 000 slowloris, 5 000 Initials
//! a second); print the figures with
//!
//! ```text
//! PROTO_ATTACK=full cargo test --release --test attack -- --nocapture --test-threads 1
//! ```

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One attack at a time: each measures a server, and the others' load
/// would blur the figures.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn full() -> bool {
    std::env::var("PROTO_ATTACK").as_deref() == Ok("full")
}

/// `small` by default, `large` with PROTO_ATTACK=full.
fn scale(small: usize, large: usize) -> usize {
    if full() {
        large
    } else {
        small
    }
}

/// A figure for the README's table, on stderr (seen with --nocapture).
fn figure(row: &str, text: String) {
    let _ = writeln!(std::io::stderr(), "ATTACK {row}: {text}");
}

/// Raises this process's open-files limit to its hard limit (the servers
/// started from here inherit it), and returns it.
fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// A `proto serve` process, stopped (SIGKILL) when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    cert_dir: std::path::PathBuf,
}

impl Server {
    /// `sh -c "PREFIX proto serve SERVICE --port 0 --quiet ARGS"`; waits for
    /// its "listening on" line.
    fn start(prefix: &str, service: &str, args: &[&str]) -> Server {
        let cert_dir = support::temp_dir("attack-certs");
        let script = format!(
            "{prefix} '{}' serve {service} --port 0 --quiet --cert-dir '{}' {}",
            env!("CARGO_BIN_EXE_proto"),
            cert_dir.display(),
            args.join(" ")
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("proto serve printed its address")
                .unwrap();
            if let Some((_, addr)) = line.split_once("listening on ") {
                break addr.trim().parse().unwrap();
            }
        };
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            cert_dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time used so far (user + system), from /proc/PID/stat.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name (which may hold spaces) in parens.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<u64> = rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect();
        // utime and stime are fields 14 and 15 (1-based): 11 and 12 after ')'.
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Duration::from_secs_f64((fields[11] + fields[12]) as f64 / ticks)
    }

    /// Resident memory now, in bytes.
    fn rss(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:") * 1024
    }

    fn threads(&self) -> u64 {
        proc_status_kib(self.pid(), "Threads:")
    }

    /// Still running (not aborted)?
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.cert_dir);
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Sends `line`, reads the reply line.
fn exchange(stream: &mut TcpStream, line: &str) -> std::io::Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte)? == 1 && byte[0] != b'\n' {
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// What the server says to a new connection before closing it, if it does
/// so within `wait`; `None` if it keeps the connection open (served).
fn refusal(addr: SocketAddr, wait: Duration) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    let mut text = Vec::new();
    match s.read_to_end(&mut text) {
        Ok(_) => Some(String::from_utf8_lossy(&text).into_owned()),
        Err(_) if text.is_empty() => None,
        Err(_) => Some(String::from_utf8_lossy(&text).into_owned()),
    }
}

#[test]
fn row_connection_cap_refuses_and_the_server_survives() {
    let _serial = one_at_a_time();
    raise_open_files();
    // Full: the default cap, derived from the limits, below the 16 368
    // threads that once aborted the process. Small: an explicit cap.
    let cap_arg = if full() { "" } else { "--max-connections 200" };
    let mut server = Server::start("exec", "tcp", &[cap_arg, "--max-per-address 100000"]);
    let attempts = scale(260, 16_400);
    let started = Instant::now();
    let mut held = Vec::new();
    let mut refused = 0;
    let mut first_refusal = None;
    for i in 0..attempts {
        let mut s = match TcpStream::connect(server.addr) {
            Ok(s) => s,
            Err(e) => panic!("connect {i} failed: {e}"),
        };
        match exchange(&mut s, "x") {
            Ok(reply) if reply == "X" => held.push(s),
            Ok(reply) => {
                refused += 1;
                first_refusal.get_or_insert(reply);
            }
            Err(e) => panic!("connection {i}: {e}"),
        }
    }
    let threads = server.threads();
    assert!(server.alive(), "the server died");
    // Room again after some leave; the server still serves.
    held.truncate(held.len() - 10);
    // The server frees their places when it sees them close: until then a
    // newcomer is still told "busy". Wait for that, not for a fixed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = TcpStream::connect(server.addr).unwrap();
        // A refused newcomer reads "ERROR server busy" or a reset.
        let outcome = exchange(&mut again, "again");
        if matches!(&outcome, Ok(reply) if reply == "AGAIN") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no room again within 10 s: {outcome:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let refusal = first_refusal.unwrap_or_default();
    figure(
        "cap",
        format!(
            "{attempts} connections in {:.1} s: {} served, {refused} refused ({refusal:?}); server threads {threads}, alive, serves again",
            started.elapsed().as_secs_f64(),
            held.len() + 10,
        ),
    );
    assert!(refused > 0, "the cap never applied");
    assert!(refusal.starts_with("ERROR server busy"), "{refusal}");
}

#[test]
fn row_idle_connections_cost_no_cpu() {
    let _serial = one_at_a_time();
    let limit = raise_open_files();
    let n = scale(1000, 5000).min(limit as usize / 2 - 100);
    let server = Server::start("exec", "tcp", &["--max-per-address 100000"]);
    let mut idle = Vec::new();
    for i in 0..n {
        let mut s = TcpStream::connect(server.addr).unwrap();
        assert_eq!(exchange(&mut s, &format!("{i}")).unwrap(), format!("{i}"));
        idle.push(s);
    }
    std::thread::sleep(Duration::from_millis(300)); // let the threads settle
    let before = server.cpu();
    let window = Duration::from_secs(3);
    std::thread::sleep(window);
    let used = server.cpu() - before;
    let share = used.as_secs_f64() / window.as_secs_f64() * 100.0;
    figure(
        "idle",
        format!(
            "{n} idle connections: {} ms of CPU in {} s ({share:.1} % of a core), RSS {} MB, {} threads",
            used.as_millis(),
            window.as_secs(),
            server.rss() >> 20,
            server.threads()
        ),
    );
    // Polling every 100 ms cost ~65 µs/s per thread (32 % of a core at 5 000).
    assert!(
        used <= Duration::from_millis(40),
        "{used:?} of CPU while idle"
    );
}

#[test]
fn row_over_the_open_files_limit_clients_hear_busy_at_once() {
    let _serial = one_at_a_time();
    // `ulimit -n 100`: the derived cap stays below it, so accept never
    // fails with EMFILE; the clients over the cap hear "busy" at once.
    let server = Server::start("ulimit -n 100; exec", "tcp", &[]);
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..150 {
        let started = Instant::now();
        match refusal(server.addr, Duration::from_millis(300)) {
            Some(text) => refused.push((text, started.elapsed())),
            None => held.push(TcpStream::connect(server.addr).unwrap()),
        }
    }
    let slowest = refused.iter().map(|(_, t)| *t).max().unwrap_or_default();
    figure(
        "emfile",
        format!(
            "ulimit -n 100, 150 clients: {} refused with {:?}, slowest answer {} ms",
            refused.len(),
            refused.first().map(|(t, _)| t.trim()).unwrap_or(""),
            slowest.as_millis()
        ),
    );
    assert!(!refused.is_empty());
    assert!(refused
        .iter()
        .all(|(t, _)| t.starts_with("ERROR server busy")));
    assert!(slowest < Duration::from_secs(1));
}

#[test]
fn row_slowloris_is_closed_by_the_message_deadline() {
    let _serial = one_at_a_time();
    raise_open_files();
    let n = scale(200, 2000);
    let (drip, deadline) = if full() {
        (Duration::from_secs(3), "10s")
    } else {
        (Duration::from_millis(300), "1s")
    };
    let server = Server::start(
        "exec",
        "tcp",
        &[
            "--idle-timeout 5s",
            "--message-timeout",
            deadline,
            "--max-per-address 100000",
        ],
    );
    let mut drips: Vec<Option<TcpStream>> = (0..n)
        .map(|_| {
            let s = TcpStream::connect(server.addr).unwrap();
            s.set_nonblocking(true).unwrap();
            Some(s)
        })
        .collect();
    let started = Instant::now();
    let limit = if full() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(6)
    };
    let mut closed = 0;
    while closed < n && started.elapsed() < limit {
        for slot in drips.iter_mut() {
            let Some(s) = slot else { continue };
            let mut buf = [0u8; 256];
            let gone = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            if gone || s.write(b"a").is_err() {
                *slot = None;
                closed += 1;
            }
        }
        std::thread::sleep(drip);
    }
    figure(
        "slowloris",
        format!(
            "{n} connections dripping 1 byte every {} ms, --idle-timeout 5s, --message-timeout {deadline}: {closed} of {n} closed after {:.1} s",
            drip.as_millis(),
            started.elapsed().as_secs_f64()
        ),
    );
    assert_eq!(closed, n);
}

#[test]
fn row_listen_backlog_absorbs_a_burst() {
    let _serial = one_at_a_time();
    raise_open_files();
    let n = scale(500, 1000);
    let server = Server::start("exec", "tcp", &["--max-per-address 100000"]);
    let overflows_before = listen_overflows();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut held = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        held.push(TcpStream::connect(server.addr).unwrap());
        slowest = slowest.max(t.elapsed());
    }
    // Every connection is served (a reply proves it left the backlog).
    for s in held.iter_mut() {
        assert_eq!(exchange(s, "b").unwrap(), "B");
    }
    let overflows = listen_overflows().saturating_sub(overflows_before);
    figure(
        "backlog",
        format!(
            "{n} unpaced connects in {:.2} s: slowest connect {} ms, {overflows} listen-queue overflows (TcpExt ListenOverflows, whole machine)",
            started.elapsed().as_secs_f64(),
            slowest.as_millis()
        ),
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a SYN was dropped and retried"
    );
}

/// TcpExt ListenOverflows of this network namespace.
fn listen_overflows() -> u64 {
    proc_counter("/proc/net/netstat", "TcpExt:", "ListenOverflows")
}

/// Udp RcvbufErrors of this network namespace: datagrams the kernel
/// dropped because a socket's receive queue was full.
fn udp_receive_buffer_errors() -> u64 {
    proc_counter("/proc/net/snmp", "Udp:", "RcvbufErrors")
}

/// A counter from a /proc/net table: a line of names, then a line of
/// values, both starting with `prefix`.
fn proc_counter(file: &str, prefix: &str, name: &str) -> u64 {
    let table = std::fs::read_to_string(file).unwrap_or_default();
    let mut lines = table.lines().filter(|l| l.starts_with(prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Valid QUIC Initial packets (a real ClientHello each, a fresh connection
/// ID each), made by quinn's sans-IO core without any socket: what a
/// flooder sends.
struct InitialMaker {
    endpoint: quinn_proto::Endpoint,
    config: quinn_proto::ClientConfig,
    made: usize,
}

impl InitialMaker {
    fn new() -> InitialMaker {
        // The client configuration proto uses (ALPN, transport parameters);
        // its endpoint needs a runtime only while it exists.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let _in_runtime = runtime.enter();
        let trust = proto::transport::tls::Trust::Insecure;
        let options = proto::transport::quic::ClientQuicOptions::new(&trust).unwrap();
        InitialMaker {
            endpoint: Self::endpoint(),
            config: options.config.clone(),
            made: 0,
        }
    }

    fn endpoint() -> quinn_proto::Endpoint {
        quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            None,
            false,
            None,
        )
    }

    /// The first datagram of a new connection to `server`.
    fn initial(&mut self, server: SocketAddr) -> Vec<u8> {
        self.made += 1;
        if self.made.is_multiple_of(1000) {
            self.endpoint = Self::endpoint(); // forget the old connections
        }
        let now = Instant::now();
        let (_, mut connection) = self
            .endpoint
            .connect(now, self.config.clone(), server, "localhost")
            .unwrap();
        let mut buf = Vec::new();
        let transmit = connection.poll_transmit(now, 1, &mut buf).unwrap();
        buf.truncate(transmit.size);
        buf
    }
}

/// Bytes received on `socket` within `window` (never answering).
fn receive_for(socket: &UdpSocket, window: Duration) -> (usize, usize) {
    let until = Instant::now() + window;
    let (mut bytes, mut datagrams) = (0, 0);
    let mut buf = [0u8; 65536];
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            bytes += n;
            datagrams += 1;
        }
    }
    (bytes, datagrams)
}

#[test]
fn row_quic_amplification_stays_within_three_times() {
    let _serial = one_at_a_time();
    let mut maker = InitialMaker::new();
    for retry in ["auto", "always"] {
        let server = Server::start("exec", "quic", &["--quic-retry", retry]);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(server.addr).unwrap();
        let initial = maker.initial(server.addr);
        socket.send(&initial).unwrap();
        // The server's probe timeouts fire within about 3 s.
        let (received, datagrams) = receive_for(&socket, Duration::from_secs(4));
        let factor = received as f64 / initial.len() as f64;
        figure(
            "amplification",
            format!(
                "--quic-retry {retry}: one {}-byte Initial from an address that never answers got {received} bytes in {datagrams} datagrams back: {factor:.2}x",
                initial.len()
            ),
        );
        assert!(received > 0, "no answer at all");
        assert!(factor <= 3.0, "{factor:.2}x amplification");
    }
}

#[test]
fn row_quic_initial_flood_keeps_memory_bounded_and_serves_real_clients() {
    let _serial = one_at_a_time();
    let rate = scale(2000, 5000);
    let ports = scale(200, 1000);
    let seconds = scale(3, 10) as u64;
    let server = Server::start("exec", "quic", &[]);
    let addr = server.addr;
    let rss_before = server.rss();
    let cpu_before = server.cpu();
    let drops_before = udp_receive_buffer_errors();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The flood, on its own thread: `rate` Initials a second from `ports`
    // source ports, none of which ever answers.
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut maker = InitialMaker::new();
            let sockets: Vec<UdpSocket> = (0..ports)
                .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
                .collect();
            let started = Instant::now();
            let mut sent = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let initial = maker.initial(addr);
                let _ = sockets[sent % ports].send_to(&initial, addr);
                sent += 1;
            }
            (sent, started.elapsed())
        })
    };
    // Meanwhile, real clients connect one after another.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _in_runtime = runtime.enter();
    let trust = proto::transport::tls::Trust::ca_file(
        &proto::transport::certs::CertDir::new(&server.cert_dir).ca_cert(),
    )
    .unwrap();
    let target = proto::transport::Target {
        host: "127.0.0.1".into(),
        port: addr.port(),
    };
    let mut handshakes = Vec::new();
    let mut failures = Vec::new();
    let mut peak_rss = rss_before;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        let options = proto::transport::quic::ClientQuicOptions::new(&trust).unwrap();
        let t = Instant::now();
        let result = runtime.block_on(proto::transport::quic::connect(
            &target,
            &options,
            Duration::from_secs(5),
        ));
        match result {
            Ok(_) => handshakes.push(t.elapsed()),
            Err(e) => failures.push(format!("{e:#}")),
        }
        peak_rss = peak_rss.max(server.rss());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, flooded) = flood.join().unwrap();
    peak_rss = peak_rss.max(server.rss());
    let server_cpu = (server.cpu() - cpu_before).as_secs_f64() / flooded.as_secs_f64() * 100.0;
    let kernel_drops = udp_receive_buffer_errors().saturating_sub(drops_before);
    let slowest = handshakes.iter().max().copied().unwrap_or_default();
    figure(
        "quic-flood",
        format!(
            "{sent} valid Initials in {:.1} s ({:.0}/s) from {ports} ports: RSS {} MB before, {} MB at peak, server CPU {server_cpu:.0} % of a core, {kernel_drops} datagrams dropped by the kernel (UDP RcvbufErrors); {} real handshakes, slowest {} ms, {} failed {:?}",
            flooded.as_secs_f64(),
            sent as f64 / flooded.as_secs_f64(),
            rss_before >> 20,
            peak_rss >> 20,
            handshakes.len(),
            slowest.as_millis(),
            failures.len(),
            failures.first()
        ),
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a handshake took {slowest:?}"
    );
    // Each half-open connection cost ~29 KB: 1.44 GB in the unbounded run.
    assert!(peak_rss < 120 << 20, "RSS reached {} MB", peak_rss >> 20);
}
