//! The async loop: one tokio task per connection, over any stream a
//! connect function returns (a TLS stream, a QUIC stream joined with
//! `tokio::io::join`, TCP) or over connected UDP sockets. Only I/O lives
//! here; every decision is [`LoadConnection`]'s.

use super::core::{Carrier, Datagram, LoadConnection, Read, Tally, Timeline, Turn};
use super::timer::TaskTimer;
use super::{
    BoxError, ConnectionFailure, Failure, LoadConfig, LoadError, LoadProgress, LoadReport,
};
use crate::units::monotonic_nanos;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;

/// Runs the load over `config.connections` streams, each opened by
/// `connect(i)` before the clock starts (any error type converts into a
/// [`BoxError`] with `?`). A stream with no reply within
/// `config.timeout` fails (and stops); the others go on.
pub async fn run_streams<S, F, Fut>(
    config: &LoadConfig,
    connect: F,
    progress: Arc<LoadProgress>,
) -> Result<LoadReport, LoadError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<S, BoxError>>,
{
    config.validate()?;
    let streams = open_all(config, connect).await?;
    Ok(run_tasks(config, &progress, streams, Carrier::Stream, drive_stream).await)
}

/// Runs the load over `config.connections` UDP sockets, each connected to
/// the server by `connect(i)`. Replies that do not come back within
/// `config.timeout` are counted as lost; the run goes on.
pub async fn run_datagrams<F, Fut>(
    config: &LoadConfig,
    connect: F,
    progress: Arc<LoadProgress>,
) -> Result<LoadReport, LoadError>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<UdpSocket, BoxError>>,
{
    config.validate_datagrams()?;
    let sockets = open_all(config, connect).await?;
    Ok(run_tasks(
        config,
        &progress,
        sockets,
        Carrier::Datagrams,
        drive_datagrams,
    )
    .await)
}

/// Opens every connection with `connect(i)`, one after the other.
async fn open_all<T, F, Fut>(config: &LoadConfig, connect: F) -> Result<Vec<T>, LoadError>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, BoxError>>,
{
    let mut all = Vec::with_capacity(config.connections);
    for i in 0..config.connections {
        let opened = connect(i).await.map_err(|e| LoadError::Connect {
            connection: i,
            of: config.connections,
            source: e,
        })?;
        all.push(opened);
    }
    Ok(all)
}

/// Prepares every connection (histograms allocated), starts the clock, then
/// one task per connection.
async fn run_tasks<T, Fut>(
    config: &LoadConfig,
    progress: &Arc<LoadProgress>,
    sockets: Vec<T>,
    carrier: Carrier,
    drive: fn(T, LoadConnection) -> Fut,
) -> LoadReport
where
    T: Send + 'static,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let conns: Vec<LoadConnection> = (0..sockets.len())
        .map(|i| LoadConnection::new(config, i, carrier, progress.clone()))
        .collect();
    let timeline = Timeline::start(config, monotonic_nanos(), progress);
    // A JoinSet aborts the tasks if this future is dropped.
    let mut tasks = tokio::task::JoinSet::new();
    let mut index_of = std::collections::HashMap::new();
    for (i, (socket, mut conn)) in sockets.into_iter().zip(conns).enumerate() {
        conn.begin(timeline.pacing(i));
        index_of.insert(tasks.spawn(drive(socket, conn)).id(), i);
    }
    let mut tallies = Vec::with_capacity(index_of.len());
    while let Some(joined) = tasks.join_next().await {
        tallies.push(joined.map_err(|e| ConnectionFailure {
            connection: index_of.get(&e.id()).copied().unwrap_or_default(),
            datagrams: carrier == Carrier::Datagrams,
            failure: Failure::Crashed("task"),
        }));
    }
    timeline.report(tallies, monotonic_nanos())
}

/// Waits for the connection's turn; `false` when the run is over for it.
async fn wait_for_turn(conn: &mut LoadConnection, timer: &mut TaskTimer) -> bool {
    match conn.turn(monotonic_nanos()) {
        Turn::Stop => return false,
        Turn::Now => {}
        Turn::At(t) => timer.sleep_until(t).await,
    }
    true
}

/// One request and its reply over a stream; `false` when the connection
/// cannot go on (the failure is recorded).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    conn: &mut LoadConnection,
) -> bool {
    let request = conn.request();
    let sent = monotonic_nanos();
    // Flush too: a TLS stream may keep the encrypted record in its buffer
    // when the socket is not writable at once (e.g. when tokio's
    // cooperative budget runs out: 128 operations, every 64th request), and
    // then the request would never leave while we wait for its reply.
    let written = match stream.write_all(request).await {
        Ok(()) => stream.flush().await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        conn.send_failed(e);
        return false;
    }
    conn.sent(sent);
    loop {
        match stream.read(conn.reply_space()).await {
            Ok(n) => match conn.reply_bytes(n) {
                Read::More => {}
                Read::Complete => return conn.reply_received(monotonic_nanos()),
                Read::Failed => return false,
            },
            Err(e) => {
                conn.receive_failed(e);
                return false;
            }
        }
    }
}

async fn drive_stream<S>(mut stream: S, mut conn: LoadConnection) -> Tally
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut timer = TaskTimer::new();
    let timeout = conn.timeout();
    while wait_for_turn(&mut conn, &mut timer).await {
        match tokio::time::timeout(timeout, exchange(&mut stream, &mut conn)).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => {
                conn.timed_out();
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    conn.finish()
}

async fn drive_datagrams(socket: UdpSocket, mut conn: LoadConnection) -> Tally {
    let mut timer = TaskTimer::new();
    'requests: while wait_for_turn(&mut conn, &mut timer).await {
        let request = conn.request();
        let sent = monotonic_nanos();
        if let Err(e) = socket.send(request).await {
            conn.send_failed(e);
            break;
        }
        conn.sent(sent);
        while let Some(left) = conn.still_waiting(monotonic_nanos()) {
            match tokio::time::timeout(left, socket.recv(conn.datagram_space())).await {
                Ok(Ok(n)) => {
                    if conn.datagram_received(n, monotonic_nanos()) == Datagram::Answer {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    conn.receive_failed(e);
                    break 'requests;
                }
                // still_waiting() counts the loss on the next round.
                Err(_) => {}
            }
        }
    }
    conn.finish()
}
