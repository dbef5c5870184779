//! The load generator's fast path for plain TCP and UDP: one OS thread per
//! connection with blocking sockets, as the C reference client does.
//!
//! Why a second driver? An async runtime waits for a reply with two system
//! calls (`epoll_wait`, then `recv`), a blocked thread with one (`recv`
//! returns when the reply is there). On loopback a round trip is ~16 µs
//! and a system call ~1 µs, so the async client would measure itself as
//! much as the server. TLS and QUIC streams only exist as async streams,
//! so they use [`super::load::run_streams`]; everything else (the message
//! format, the schedule, warm-up, counting, the report) is shared.

use super::histogram::Timing;
use super::load::{
    udp_error, Connection, LoadConfig, LoadProgress, LoadReport, Messages, Outcome, Plan,
    ProgressBatch, Slot,
};
use crate::client::monotonic_nanos;
use crate::wire::{frame, HEADER_LEN};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

/// Runs the load over `config.connections` blocking TCP connections to
/// `addr` (all opened before the clock starts). Call from a thread that may
/// block (e.g. inside `tokio::task::spawn_blocking`).
pub fn run_tcp(
    config: &LoadConfig,
    addr: SocketAddr,
    connect_timeout: Duration,
    progress: Arc<LoadProgress>,
) -> anyhow::Result<LoadReport> {
    config.validate().map_err(anyhow::Error::msg)?;
    let mut streams = Vec::with_capacity(config.connections);
    for i in 0..config.connections {
        let stream = TcpStream::connect_timeout(&addr, connect_timeout).map_err(|e| {
            anyhow::anyhow!(
                "opening connection {} of {}: {}",
                i + 1,
                config.connections,
                explain(&e, "tcp", addr)
            )
        })?;
        // Each message leaves at once instead of waiting for Nagle.
        stream.set_nodelay(true)?;
        // A reply later than this fails the connection instead of hanging it.
        stream.set_read_timeout(Some(config.timeout))?;
        stream.set_write_timeout(Some(config.timeout))?;
        streams.push(stream);
    }
    Ok(run_threads(config, &progress, streams, tcp_connection))
}

/// Runs the load over `config.connections` blocking UDP sockets connected to
/// `addr`. A reply not back within `config.timeout` counts as lost.
pub fn run_udp(
    config: &LoadConfig,
    addr: SocketAddr,
    progress: Arc<LoadProgress>,
) -> anyhow::Result<LoadReport> {
    config.validate().map_err(anyhow::Error::msg)?;
    if config.size + 1 > crate::server::udp::MAX_DATAGRAM {
        anyhow::bail!(
            "a UDP datagram carries at most {} bytes: use --size {} or less",
            crate::server::udp::MAX_DATAGRAM,
            crate::server::udp::MAX_DATAGRAM - HEADER_LEN
        );
    }
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let mut sockets = Vec::with_capacity(config.connections);
    for _ in 0..config.connections {
        let socket = UdpSocket::bind(local)?;
        socket.connect(addr)?;
        socket.set_read_timeout(Some(config.timeout))?;
        sockets.push(socket);
    }
    Ok(run_threads(config, &progress, sockets, udp_connection))
}

/// Starts one thread per socket, and only then the clock: every thread
/// (and its histograms) is ready when the first request is due.
fn run_threads<T: Send>(
    config: &LoadConfig,
    progress: &Arc<LoadProgress>,
    sockets: Vec<T>,
    drive: fn(T, Connection, Outcome) -> Outcome,
) -> LoadReport {
    std::thread::scope(|scope| {
        let mut starts = Vec::with_capacity(sockets.len());
        let mut handles = Vec::with_capacity(sockets.len());
        for socket in sockets {
            let (start, wait) = std::sync::mpsc::sync_channel::<Connection>(1);
            let out = Outcome::new(config.unit, config.rate.is_some());
            starts.push(start);
            handles.push(scope.spawn(move || match wait.recv() {
                Ok(conn) => Ok(drive(socket, conn, out)),
                Err(_) => Err("the run was abandoned before it started".to_string()),
            }));
        }
        let plan = Plan::start(config, progress);
        for (i, start) in starts.into_iter().enumerate() {
            let _ = start.send(plan.connection(i));
        }
        let outcomes = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a connection thread panicked".to_string()))
            })
            .collect();
        plan.finish(outcomes)
    })
}

fn explain(e: &std::io::Error, service: &str, addr: SocketAddr) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => {
            format!("connection refused: is 'proto serve {service}' running on {addr}?")
        }
        ErrorKind::TimedOut | ErrorKind::WouldBlock => format!(
            "no answer from {addr}: is the host reachable and the port open? (--timeout waits longer)"
        ),
        _ => format!("cannot connect to {addr}: {e}"),
    }
}

/// Waits for request `i`'s turn; `None` when the run is over.
fn next(conn: &Connection, i: u64, done: u64, timer: &mut ThreadTimer) -> Option<(u64, bool)> {
    let intended = match conn.slot(i, done) {
        Slot::Stop => return None,
        Slot::At(t) => {
            timer.sleep_until(t);
            t
        }
        Slot::Now(t) => t,
    };
    Some((intended, intended >= conn.measure_from_ns))
}

/// Reads one whole reply into `buf` (see `load::read_reply`, its async twin).
fn read_reply(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    framed: bool,
    expected_len: usize,
) -> Result<usize, String> {
    let mut filled = 0;
    let mut scanned = 0;
    loop {
        let want = if framed {
            match frame::check_header(&buf[..filled]) {
                Ok(Some(h)) => HEADER_LEN + h.payload_len,
                Ok(None) => HEADER_LEN,
                Err(e) => return Err(format!("the server sent a malformed frame: {e}")),
            }
        } else {
            match memchr::memchr(b'\n', &buf[scanned..filled]) {
                Some(pos) => return Ok(scanned + pos + 1),
                None => {
                    scanned = filled;
                    expected_len
                }
            }
        };
        if filled >= want {
            return Ok(want);
        }
        if buf.len() < want {
            buf.resize(want, 0);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Err("the server closed the connection".into()),
            Ok(0) => {
                return Err(format!(
                    "the server closed the connection after a partial reply {:?}",
                    String::from_utf8_lossy(&buf[..filled.min(80)])
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err("no reply within the timeout (--timeout waits longer)".into())
            }
            Err(e) => return Err(format!("receiving: {e}")),
        }
    }
}

fn tcp_connection(mut stream: TcpStream, conn: Connection, mut out: Outcome) -> Outcome {
    let config = conn.config.clone();
    let mut messages = Messages::new(config.size, config.framed);
    let reply_len = messages.reply_len();
    let mut buf = vec![0u8; reply_len];
    let mut timer = ThreadTimer::new();
    let mut progress = ProgressBatch {
        progress: &conn.progress,
        pending: 0,
    };
    let open_loop = conn.schedule.is_some();
    let mut i: u64 = 0;
    loop {
        if conn.past_hard_end(monotonic_nanos()) {
            out.unsent += conn.unsent_from(i);
            break;
        }
        let Some((intended, measured)) = next(&conn, i, out.requests, &mut timer) else {
            break;
        };
        let request = messages.build(i, intended);
        // Closed loop: `intended` was read just now, it is the send time.
        let sent = if open_loop {
            monotonic_nanos()
        } else {
            intended
        };
        if let Err(e) = stream.write_all(request) {
            out.error = Some(format!("connection {}: sending: {e}", conn.index + 1));
            break;
        }
        let got = match read_reply(&mut stream, &mut buf, config.framed, reply_len) {
            Ok(n) => n,
            Err(e) => {
                out.error = Some(format!("connection {}: {e}", conn.index + 1));
                break;
            }
        };
        let received = monotonic_nanos();
        let checked = messages.check(&buf[..got], i, intended);
        i += 1;
        if measured {
            out.requests += 1;
            out.last_reply_ns = received;
            progress.tick();
            out.recorder.record(Timing {
                intended,
                sent,
                received,
            });
        } else {
            out.warmup += 1;
        }
        if let Err(e) = checked {
            out.mismatches += 1;
            if config.framed {
                out.error = Some(format!(
                    "connection {}: the server sent {e}",
                    conn.index + 1
                ));
                break;
            }
        }
    }
    progress.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
    out
}

fn udp_connection(socket: UdpSocket, conn: Connection, mut out: Outcome) -> Outcome {
    let config = conn.config.clone();
    let mut messages = Messages::new(config.size, config.framed);
    let mut buf = vec![0u8; crate::server::udp::MAX_DATAGRAM + 1];
    let mut timer = ThreadTimer::new();
    let mut progress = ProgressBatch {
        progress: &conn.progress,
        pending: 0,
    };
    let open_loop = conn.schedule.is_some();
    let lost_after = config.timeout.as_nanos() as u64;
    let mut i: u64 = 0;
    'requests: loop {
        if conn.past_hard_end(monotonic_nanos()) {
            out.unsent += conn.unsent_from(i);
            break;
        }
        let Some((intended, measured)) = next(&conn, i, out.requests, &mut timer) else {
            break;
        };
        let id = i;
        i += 1;
        let request = messages.build(id, intended);
        let sent = if open_loop {
            monotonic_nanos()
        } else {
            intended
        };
        if let Err(e) = socket.send(request) {
            out.error = Some(udp_error(&conn, socket.peer_addr().ok(), e));
            break;
        }
        if measured {
            out.requests += 1;
            progress.tick();
        } else {
            out.warmup += 1;
        }
        let expected_id = if config.framed {
            id & u64::from(u32::MAX)
        } else {
            id % messages.id_modulus()
        };
        let mut shortened = false;
        loop {
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    // UDP does not retransmit: the request or its reply is gone.
                    if measured {
                        out.lost += 1;
                    }
                    out.unanswered.insert(expected_id);
                    break;
                }
                Err(e) => {
                    out.error = Some(udp_error(&conn, socket.peer_addr().ok(), e));
                    break 'requests;
                }
            };
            let received = monotonic_nanos();
            let reply = &buf[..n];
            match messages.reply_id(reply) {
                Some(rid) if rid == expected_id => {
                    if messages.check(reply, id, intended).is_err() {
                        out.mismatches += 1;
                    }
                    if measured {
                        out.last_reply_ns = received;
                        out.recorder.record(Timing {
                            intended,
                            sent,
                            received,
                        });
                    }
                    break;
                }
                // Not for the request in flight: late or a duplicate.
                Some(rid) => out.classify_stray(rid),
                None => out.mismatches += 1,
            }
            // Wait only for what is left of this request's timeout.
            let left = (sent + lost_after).saturating_sub(monotonic_nanos());
            if left == 0 {
                if measured {
                    out.lost += 1;
                }
                out.unanswered.insert(expected_id);
                break;
            }
            let _ = socket.set_read_timeout(Some(Duration::from_nanos(left)));
            shortened = true;
        }
        if shortened {
            let _ = socket.set_read_timeout(Some(config.timeout));
        }
    }
    progress.flush();
    out
}

/// Sleeps a thread until a time on [`monotonic_nanos`]'s clock, to the
/// microsecond: the kernel's timer slack is set to 1 µs for this thread
/// (it is 50 µs by default, so sleeps would end up to 50 µs late), the
/// usual wake-up delay is learnt and the wake-up asked for that much early,
/// and the last few µs are spent yielding the CPU in a loop.
struct ThreadTimer {
    lead_ns: u64,
}

impl ThreadTimer {
    fn new() -> ThreadTimer {
        #[cfg(target_os = "linux")]
        // SAFETY: PR_SET_TIMERSLACK takes an integer and touches only the
        // calling thread's scheduling parameters.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
        }
        ThreadTimer { lead_ns: 10_000 }
    }

    fn sleep_until(&mut self, deadline_ns: u64) {
        const MAX_LEAD_NS: u64 = 50_000;
        let now = monotonic_nanos();
        if deadline_ns <= now {
            return;
        }
        let wake_at = deadline_ns.saturating_sub(self.lead_ns);
        if wake_at > now + 2_000 {
            std::thread::sleep(Duration::from_nanos(wake_at - now));
            let late = monotonic_nanos().saturating_sub(wake_at);
            let target = (late + late / 2).min(MAX_LEAD_NS);
            self.lead_ns = (self.lead_ns * 7 + target) / 8;
        }
        // Yielding (not just spinning) lets a server pinned to the same
        // CPU run meanwhile.
        while monotonic_nanos() < deadline_ns {
            std::thread::yield_now();
        }
    }
}
