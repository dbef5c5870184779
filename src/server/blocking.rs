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
//! Waiting costs nothing: a thread blocks in `recv` with a timeout as
//! long as the idle timeout (or, with part of a message in hand, until the
//! message's deadline, see [`MessageClock`]), so 5 000 idle connections
//! use no CPU at all. Nothing polls a flag: at shutdown the accept loop
//! wakes the idle threads itself with `shutdown(SHUT_RD)` on their sockets
//! (the blocked `recv` returns what has already arrived, then 0); a thread
//! with a partial message may finish it until the grace period is over,
//! and then every socket is shut down (`SHUT_RDWR`), which also frees a
//! thread blocked writing to a peer that does not read.
//!
//! Threads are a bounded resource: each costs a stack and ~4 memory
//! mappings, and creating one past `vm.max_map_count` aborts the whole
//! process inside the new thread (not a `spawn` error anyone could
//! handle). The server's connection limit (see [`super::limits`]) keeps
//! the count below that; a `spawn` that fails anyway (EAGAIN) refuses that
//! one client with `ERROR server busy` and pauses accepting.

use super::limits::Refusal;
use super::session::{answer_in_time, goes_on, message_too_slow, MessageClock, SessionReport};
use super::{AcceptBackoff, ServerContext};
use bytes::BytesMut;
use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// One connection thread's socket, shared with the accept loop so that the
/// loop can wake the thread.
#[derive(Debug)]
struct Live {
    stream: TcpStream,
    /// The thread waits (or is about to wait) for a new message, with
    /// nothing in hand: shutdown may interrupt it.
    idle: AtomicBool,
}

/// The live connections of one accept loop.
#[derive(Debug, Default)]
struct Registry {
    /// Shutdown has begun: threads stop waiting for new messages.
    stopping: AtomicBool,
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Weak<Live>>>,
}

impl Registry {
    fn add(&self, live: &Arc<Live>) -> u64 {
        let id = self.next_id.fetch_add(1, Relaxed);
        self.lock().insert(id, Arc::downgrade(live));
        id
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Live>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shutdown begins: idle threads are woken (their `recv` returns what
    /// has arrived, then 0). `stopping` is set first, and each thread marks
    /// itself idle before it looks at `stopping` (both SeqCst): either the
    /// thread sees `stopping`, or this sees the thread idle.
    fn wake_idle(&self) {
        self.stopping.store(true, SeqCst);
        for live in self.lock().values().filter_map(Weak::upgrade) {
            if live.idle.load(SeqCst) {
                let _ = live.stream.shutdown(Shutdown::Read);
            }
        }
    }

    /// Cuts every connection (the grace period is over, or the server is gone).
    fn cut_all(&self) {
        self.stopping.store(true, SeqCst);
        for live in self.lock().values().filter_map(Weak::upgrade) {
            let _ = live.stream.shutdown(Shutdown::Both);
        }
    }
}

/// Cuts the connections when the accept loop ends in any way, including
/// being dropped with its runtime (nobody is left to wait for them).
struct CutOnDrop(Arc<Registry>);

impl Drop for CutOnDrop {
    fn drop(&mut self) {
        self.0.cut_all();
    }
}

/// Accepts plain TCP connections until shutdown; one thread per connection.
pub async fn accept_loop(
    listener: tokio::net::TcpListener,
    ctx: Arc<ServerContext>,
) -> anyhow::Result<()> {
    // One waiter task per connection thread, so that shutdown can wait for
    // them (up to the grace period) like for async sessions.
    let mut connections = JoinSet::new();
    let registry = Arc::new(Registry::default());
    let cut_on_drop = CutOnDrop(registry.clone());
    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        backoff.failed(&ctx, "tcp", &e).await;
                        continue;
                    }
                };
                backoff.succeeded();
                let std = match tcp.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        ctx.log(format_args!("tcp {peer}: cannot take over the socket: {e}"));
                        continue;
                    }
                };
                let permit = match ctx.admit("tcp", peer) {
                    Ok(permit) => permit,
                    Err(refusal) => {
                        super::limits::refuse_plain(&std, &refusal);
                        continue;
                    }
                };
                // Small messages should leave at once, not wait for Nagle.
                let _ = std.set_nodelay(true);
                let live = Arc::new(Live { stream: std, idle: AtomicBool::new(false) });
                let id = registry.add(&live);
                let (done, finished) = tokio::sync::oneshot::channel::<()>();
                let thread_ctx = ctx.clone();
                let thread_live = live.clone();
                let thread_registry = registry.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("tcp {peer}"))
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        serve_connection(&thread_live, peer, &thread_ctx, &thread_registry);
                        thread_registry.remove(id);
                        drop(permit);
                        let _ = done.send(());
                    });
                match spawned {
                    Ok(_) => {
                        ctx.stats.connections.fetch_add(1, Relaxed);
                        connections.spawn(async move {
                            let _ = finished.await;
                        });
                    }
                    Err(e) => {
                        // The closure (and the permit in it) is gone.
                        registry.remove(id);
                        let refusal = Refusal::Exhausted(format!("no thread for the connection ({e})"));
                        super::limits::refuse_plain(&live.stream, &refusal);
                        ctx.stats.refused.fetch_add(1, Relaxed);
                        backoff.failed(&ctx, "tcp", &e).await;
                    }
                }
            }
            // Reap finished connections so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener); // stop accepting: new clients now get "connection refused"
    registry.wake_idle();
    super::finish_connections(connections, ctx.config.grace).await;
    drop(cut_on_drop); // the grace period is over: cut the rest
    Ok(())
}

fn serve_connection(live: &Live, peer: SocketAddr, ctx: &ServerContext, registry: &Registry) {
    ctx.log(format_args!("tcp {peer}: connected"));
    let started = Instant::now();
    let report = serve_stream(live, ctx, registry);
    ctx.stats.record_session(&report);
    ctx.log(format_args!(
        "tcp {peer}: closed after {:.1} s, {}",
        started.elapsed().as_secs_f64(),
        report.describe()
    ));
}

/// The receive timeout currently set on a socket, changed only when the
/// wanted wait is shorter (the wait must not overshoot a deadline) or much
/// longer (it would wake early for nothing): in a request/response exchange
/// that is once, not once per `recv`.
struct ReceiveTimeout(Option<Duration>);

impl ReceiveTimeout {
    fn want(&mut self, stream: &TcpStream, wait: Duration) -> std::io::Result<()> {
        let wait = wait.max(Duration::from_millis(1));
        let change = match self.0 {
            Some(current) => wait < current || wait > current * 2,
            None => true,
        };
        if change {
            stream.set_read_timeout(Some(wait))?;
            self.0 = Some(wait);
        }
        Ok(())
    }
}

/// Serves one connection: the blocking twin of [`super::session::serve_stream`].
fn serve_stream(live: &Live, ctx: &ServerContext, registry: &Registry) -> SessionReport {
    let mut stream = &live.stream;
    let mut report = SessionReport::default();
    let idle = ctx.config.idle_timeout;
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(idle.max(Duration::from_millis(1)))));
    if let Err(e) = setup {
        report.ending = Some(format!("socket setup failed: {e}"));
        return report;
    }
    let mut timeout = ReceiveTimeout(None);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = Vec::with_capacity(16 * 1024);
    let mut dialect = None;
    let mut clock = MessageClock::new(&ctx.config);
    let mut last_input = Instant::now();
    let mut grace_until: Option<Instant> = None;
    let mut peer_done = false;

    loop {
        let mut received = 0;
        if !peer_done {
            let mut flags = 0;
            let partial = !input.is_empty();
            live.idle.store(!partial, SeqCst);
            let now = Instant::now();
            if registry.stopping.load(SeqCst) || ctx.shutdown.is_cancelled() {
                // An idle connection stops now (after taking what has
                // already arrived, e.g. the peer's FIN); one with a partial
                // message in hand may finish it within the grace period.
                let until = *grace_until.get_or_insert_with(|| now + ctx.config.grace);
                if now >= until {
                    report.ending = Some("server shutting down".into());
                    break;
                }
                if !partial {
                    flags = libc::MSG_DONTWAIT;
                }
            }
            // Wait until the idle timeout, or the message's deadline, or
            // the end of the grace period, whichever comes first.
            let mut wait = (last_input + idle).saturating_duration_since(now);
            for limit in [clock.deadline(), grace_until].into_iter().flatten() {
                wait = wait.min(limit.saturating_duration_since(now));
            }
            if let Err(e) = timeout.want(stream, wait) {
                report.ending = Some(format!("socket setup failed: {e}"));
                break;
            }
            match read_into(stream, &mut input, flags) {
                Ok(0) if registry.stopping.load(SeqCst) && input.is_empty() => {
                    report.ending = Some("server shutting down".into());
                    break;
                }
                Ok(0) => peer_done = true,
                Ok(n) => {
                    received = n;
                    last_input = Instant::now();
                    report.bytes_in += n as u64;
                    ctx.stats.bytes_in.fetch_add(n as u64, Relaxed);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if flags != 0 {
                        report.ending = Some("server shutting down".into());
                        break;
                    }
                    if clock.expired(Instant::now()) {
                        message_too_slow(&dialect, &clock, &mut output, ctx, &mut report);
                        let _ = stream.write_all(&output);
                        break;
                    }
                    if last_input.elapsed() >= idle {
                        report.ending =
                            Some(format!("idle for {}", crate::units::format_duration(idle)));
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
        let next = answer_in_time(
            &mut dialect,
            &mut input,
            &mut output,
            peer_done,
            received,
            &mut clock,
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
        if !goes_on(next, peer_done, ctx, &mut report) {
            break;
        }
    }
    // Tell the peer we are done (FIN); ignore failures: it may be gone.
    let _ = stream.shutdown(Shutdown::Write);
    report
}

/// One `recv` (with `flags`, e.g. `MSG_DONTWAIT`) into the free space at
/// the end of `input` (grown first if nearly full), without zeroing it.
fn read_into(
    stream: &TcpStream,
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
