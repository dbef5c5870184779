//! Plain TCP sessions on a thread each, with a blocking socket.
//!
//! The echo itself is the same sans-IO code as every other session
//! ([`super::session`]'s dialects); only the waiting differs. A blocked
//! thread waits for the next request with one system call (`recv` returns
//! with the data), an async task with two (`epoll_wait`, then `recv`), and
//! on loopback, where a round trip costs ~16 µs, that difference is ~10 %
//! of the latency and more of the throughput. The C reference server works
//! this way too, so proto's TCP echo is measured like for like.
//!
//! TLS needs an async stream (tokio-rustls), so it keeps the async session.
//!
//! Shutdown without async: the socket's read timeout is at most
//! [`POLL`], so an idle connection notices the shutdown token within that
//! time; a connection with a partial message in hand may finish it until
//! the server's grace period has passed, as in the async session.

use super::session::{answer_input, Next, SessionReport};
use super::ServerContext;
use bytes::BytesMut;
use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How often a blocked connection looks at the shutdown token.
pub const POLL: Duration = Duration::from_millis(100);

/// Accepts plain TCP connections until shutdown; one thread per connection.
pub async fn accept_loop(
    listener: tokio::net::TcpListener,
    ctx: Arc<ServerContext>,
) -> anyhow::Result<()> {
    // One waiter task per connection thread, so that shutdown can wait for
    // them (up to the grace period) like for async sessions.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        ctx.log(format_args!("tcp: accept failed: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small messages should leave at once, not wait for Nagle.
                let _ = tcp.set_nodelay(true);
                let std = match tcp.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        ctx.log(format_args!("tcp {peer}: cannot take over the socket: {e}"));
                        continue;
                    }
                };
                ctx.stats.connections.fetch_add(1, Relaxed);
                let (done, finished) = tokio::sync::oneshot::channel::<()>();
                let thread_ctx = ctx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("tcp {peer}"))
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        // If the server's runtime goes away without a
                        // shutdown (a panic, an early return), the waiter
                        // task is dropped and the session stops too.
                        serve_connection(std, peer, &thread_ctx, &|| done.is_closed());
                        let _ = done.send(());
                    });
                match spawned {
                    Ok(_) => {
                        connections.spawn(async move {
                            let _ = finished.await;
                        });
                    }
                    Err(e) => {
                        ctx.stats.abnormal_closes.fetch_add(1, Relaxed);
                        ctx.log(format_args!("tcp {peer}: no thread for the connection: {e}"));
                    }
                }
            }
            // Reap finished connections so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener); // stop accepting: new clients now get "connection refused"
                    // Threads stop by themselves once the grace period is over (plus one
                    // POLL to notice it); wait that long at most.
    super::finish_connections(connections, ctx.config.grace + POLL).await;
    Ok(())
}

fn serve_connection(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    ctx: &ServerContext,
    abandoned: &dyn Fn() -> bool,
) {
    ctx.log(format_args!("tcp {peer}: connected"));
    let started = Instant::now();
    let report = serve_stream(stream, ctx, abandoned);
    ctx.stats.record_session(&report);
    ctx.log(format_args!(
        "tcp {peer}: closed after {:.1} s, {}",
        started.elapsed().as_secs_f64(),
        report.describe()
    ));
}

/// Serves one connection: the blocking twin of [`super::session::serve_stream`].
/// `abandoned` says whether anyone still waits for this session (checked
/// every [`POLL`] while idle); when not, it ends.
pub fn serve_stream(
    mut stream: std::net::TcpStream,
    ctx: &ServerContext,
    abandoned: &dyn Fn() -> bool,
) -> SessionReport {
    let mut report = SessionReport::default();
    let idle = ctx.config.idle_timeout;
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(POLL.min(idle).max(Duration::from_millis(1)))))
        .and_then(|()| stream.set_write_timeout(Some(idle)));
    if let Err(e) = setup {
        report.ending = Some(format!("socket setup failed: {e}"));
        return report;
    }
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = Vec::with_capacity(16 * 1024);
    let mut dialect = None;
    let mut last_input = Instant::now();
    let mut grace_until: Option<Instant> = None;
    let mut peer_done = false;

    loop {
        if !peer_done {
            let mut flags = 0;
            if ctx.shutdown.is_cancelled() {
                // An idle connection stops now (after taking what has
                // already arrived, e.g. the peer's FIN); one with a partial
                // message in hand may finish it within the grace period.
                let until = *grace_until.get_or_insert_with(|| Instant::now() + ctx.config.grace);
                if Instant::now() >= until {
                    report.ending = Some("server shutting down".into());
                    break;
                }
                if input.is_empty() {
                    flags = libc::MSG_DONTWAIT;
                }
            }
            match read_into(&stream, &mut input, flags) {
                Ok(0) => peer_done = true,
                Ok(n) => {
                    last_input = Instant::now();
                    report.bytes_in += n as u64;
                    ctx.stats.bytes_in.fetch_add(n as u64, Relaxed);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if flags != 0 {
                        report.ending = Some("server shutting down".into());
                        break;
                    }
                    if abandoned() {
                        report.ending = Some("server gone".into());
                        break;
                    }
                    if last_input.elapsed() >= idle {
                        report.ending =
                            Some(format!("idle for {}", crate::cli::format_duration(idle)));
                        break;
                    }
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    report.ending = Some(format!("read failed: {e}"));
                    break;
                }
            }
        }
        let next = answer_input(
            &mut dialect,
            &mut input,
            &mut output,
            peer_done,
            ctx,
            &mut report,
        );
        if !output.is_empty() {
            if let Err(e) = stream.write_all(&output) {
                report.ending = Some(match e.kind() {
                    ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                        "write failed: peer stopped reading".to_string()
                    }
                    _ => format!("write failed: {e}"),
                });
                break;
            }
            report.bytes_out += output.len() as u64;
            ctx.stats.bytes_out.fetch_add(output.len() as u64, Relaxed);
            output.clear();
        }
        if let Next::Close(reason) = next {
            ctx.stats.protocol_errors.fetch_add(1, Relaxed);
            report.ending = Some(reason);
            break;
        }
        if peer_done {
            break;
        }
    }
    // Tell the peer we are done (FIN); ignore failures: it may be gone.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    report
}

/// One `recv` (with `flags`, e.g. `MSG_DONTWAIT`) into the free space at
/// the end of `input` (grown first if nearly full), without zeroing it.
fn read_into(
    stream: &std::net::TcpStream,
    input: &mut BytesMut,
    flags: libc::c_int,
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    if input.capacity() - input.len() < 4096 {
        input.reserve(16 * 1024);
    }
    let spare = input.spare_capacity_mut();
    // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by
    // `input`; recv writes at most that many bytes into it and returns how
    // many, and exactly those are then marked initialised.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            spare.as_mut_ptr().cast(),
            spare.len(),
            flags,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
    unsafe { input.set_len(input.len() + n) };
    Ok(n)
}
