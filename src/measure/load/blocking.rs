//! The blocking loop: one OS thread per connection with blocking sockets,
//! as the C reference client does. Only I/O lives here; every decision is
//! [`LoadConnection`]'s.
//!
//! Why threads? An async runtime waits for a reply with two system calls
//! (`epoll_wait`, then `recv`), a blocked thread with one (`recv` returns
//! when the reply is there). On loopback a round trip takes a few µs and a
//! system call about one, so an async client would measure itself as much
//! as the server. Plain TCP and UDP use this loop; TLS and QUIC streams only
//! exist as async streams and use [`super::task`].

use super::core::{Carrier, Datagram, LoadConnection, Read as ReplyRead, Tally, Timeline, Turn};
use super::timer::ThreadTimer;
use super::{
    BoxError, ConnectionFailure, Failure, LoadConfig, LoadError, LoadProgress, LoadReport,
};
use crate::units::monotonic_nanos;
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
) -> Result<LoadReport, LoadError> {
    config.validate()?;
    let streams = open_all(config, |_| {
        let stream = TcpStream::connect_timeout(&addr, connect_timeout)?;
        // Each message leaves at once instead of waiting for Nagle.
        stream.set_nodelay(true)?;
        // A reply later than this fails the connection instead of hanging it.
        stream.set_read_timeout(Some(config.timeout))?;
        stream.set_write_timeout(Some(config.timeout))?;
        Ok(stream)
    })?;
    Ok(run_threads(
        config,
        &progress,
        streams,
        Carrier::Stream,
        drive_stream,
    ))
}

/// Runs the load over `config.connections` blocking UDP sockets connected to
/// `addr`. A reply not back within `config.timeout` counts as lost.
pub fn run_udp(
    config: &LoadConfig,
    addr: SocketAddr,
    progress: Arc<LoadProgress>,
) -> Result<LoadReport, LoadError> {
    config.validate_datagrams()?;
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sockets = open_all(config, |_| {
        let socket = UdpSocket::bind(local)?;
        socket.connect(addr)?;
        socket.set_read_timeout(Some(config.timeout))?;
        Ok(socket)
    })?;
    Ok(run_threads(
        config,
        &progress,
        sockets,
        Carrier::Datagrams,
        drive_datagrams,
    ))
}

/// Opens every connection with `open(i)`, before the clock starts.
fn open_all<T>(
    config: &LoadConfig,
    open: impl Fn(usize) -> std::io::Result<T>,
) -> Result<Vec<T>, LoadError> {
    (0..config.connections)
        .map(|i| {
            open(i).map_err(|e| LoadError::Connect {
                connection: i,
                of: config.connections,
                source: BoxError::from(e),
            })
        })
        .collect()
}

/// Starts one thread per socket, and only then the clock: every thread
/// (and its histograms) is ready when the first request is due.
fn run_threads<T: Send>(
    config: &LoadConfig,
    progress: &Arc<LoadProgress>,
    sockets: Vec<T>,
    carrier: Carrier,
    drive: fn(T, LoadConnection) -> Tally,
) -> LoadReport {
    std::thread::scope(|scope| {
        let mut starts = Vec::with_capacity(sockets.len());
        let mut handles = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            let (start, wait) = std::sync::mpsc::sync_channel(1);
            let mut conn = LoadConnection::new(config, i, carrier, progress.clone());
            starts.push(start);
            handles.push(scope.spawn(move || {
                // The run was abandoned before it started if the sender is gone.
                if let Ok(pacing) = wait.recv() {
                    conn.begin(pacing);
                }
                drive(socket, conn)
            }));
        }
        let timeline = Timeline::start(config, monotonic_nanos(), progress);
        for (i, start) in starts.into_iter().enumerate() {
            let _ = start.send(timeline.pacing(i));
        }
        let tallies = handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                h.join().map_err(|_| ConnectionFailure {
                    connection: i,
                    datagrams: carrier == Carrier::Datagrams,
                    failure: Failure::Crashed("thread"),
                })
            })
            .collect();
        timeline.report(tallies, monotonic_nanos())
    })
}

/// Waits for the connection's turn; `false` when the run is over for it.
fn wait_for_turn(conn: &mut LoadConnection, timer: &mut ThreadTimer) -> bool {
    match conn.turn(monotonic_nanos()) {
        Turn::Stop => return false,
        Turn::Now => {}
        Turn::At(t) => timer.sleep_until(t),
    }
    true
}

/// Sends the next request with `send`; `false` when that failed (recorded).
fn send_request(
    conn: &mut LoadConnection,
    send: impl FnOnce(&[u8]) -> std::io::Result<()>,
) -> bool {
    let request = conn.request();
    let sent = monotonic_nanos();
    match send(request) {
        Ok(()) => conn.sent(sent),
        Err(e) => conn.send_failed(e),
    }
    conn.failed().is_none()
}

fn drive_stream(mut stream: TcpStream, mut conn: LoadConnection) -> Tally {
    let mut timer = ThreadTimer::new();
    while wait_for_turn(&mut conn, &mut timer) {
        if !send_request(&mut conn, |request| stream.write_all(request)) {
            break;
        }
        let answered = loop {
            let n = match stream.read(conn.reply_space()) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    conn.receive_failed(e);
                    break false;
                }
            };
            match conn.reply_bytes(n) {
                ReplyRead::More => {}
                ReplyRead::Complete => break conn.reply_received(monotonic_nanos()),
                ReplyRead::Failed => break false,
            }
        };
        if !answered {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    conn.finish()
}

fn drive_datagrams(socket: UdpSocket, mut conn: LoadConnection) -> Tally {
    let mut timer = ThreadTimer::new();
    let full_wait = conn.timeout();
    'requests: while wait_for_turn(&mut conn, &mut timer) {
        if !send_request(&mut conn, |request| socket.send(request).map(drop)) {
            break;
        }
        // The socket's read timeout is the whole wait; after a stray reply,
        // only what is left of it (and restored for the next request).
        let mut shortened = false;
        loop {
            match socket.recv(conn.datagram_space()) {
                Ok(n) => {
                    if conn.datagram_received(n, monotonic_nanos()) == Datagram::Answer {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    conn.lost();
                    break;
                }
                Err(e) => {
                    conn.receive_failed(e);
                    break 'requests;
                }
            }
            let Some(left) = conn.still_waiting(monotonic_nanos()) else {
                break;
            };
            let _ = socket.set_read_timeout(Some(left));
            shortened = true;
        }
        if shortened {
            let _ = socket.set_read_timeout(Some(full_wait));
        }
    }
    conn.finish()
}
