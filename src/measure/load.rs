//! The load generator: many requests over C connections, every round trip
//! timed, results as a [`LoadReport`] (no printing here).
//!
//! # Two ways to send
//!
//! * **Closed loop** (default): each connection sends a request, waits for
//!   its reply, sends the next. It measures the best the pair can do, and
//!   it is what `echo-rtt` (the C reference client) does.
//! * **Open loop** (`rate`): the send times are fixed in advance by a
//!   [`Schedule`] (R requests per second over all connections). At most one
//!   request is in flight per connection, as in wrk2: when a reply is late,
//!   the next request goes out late too, and its latency is counted from
//!   when it *should* have gone out (coordinated-omission correction, see
//!   [`super::histogram`]). Both views are kept in the report.
//!
//! # Messages
//!
//! Text mode sends `size` lowercase letters and `\n` (UDP: the same bytes
//! as one datagram) and expects exactly their uppercase back. The first
//! letters (up to 7) spell the request number in base 26 (`a` = 0), so a
//! UDP reply can be matched to its request even after losses: a reply whose
//! number is not the one in flight is *late* if its request was counted as
//! lost and this is its first reply, and a *duplicate* otherwise (UDP has no
//! duplicate protection: the network may deliver a datagram twice). Framed mode sends one request frame per message; the
//! frame id and timestamp (the intended send time) must come back unchanged.
//!
//! The hot path allocates nothing per message: requests are built in a
//! reused buffer and replies read into another.
//!
//! # Transports
//!
//! [`run_streams`] works over any `AsyncRead + AsyncWrite` stream a connect
//! function returns (TCP today; TLS and a QUIC stream plug in the same way),
//! [`run_datagrams`] over connected UDP sockets.

use super::histogram::{Latencies, Recorder, Schedule, Timing, Unit};
use crate::client::monotonic_nanos;
use crate::wire::{frame, Frame, FrameType, HEADER_LEN};
use bytes::Bytes;
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest message a load run sends. Larger would risk both ends
/// blocking in `write` with full socket buffers (the client writes a whole
/// request before it reads), and no proto server accepts more anyway.
pub const MAX_SIZE: usize = 1 << 20;

/// How many letters of a text message carry the request number.
const ID_LETTERS: usize = 7;

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// After this many measured requests in total (split over connections).
    Count(u64),
    /// After this long of measurement (after the warm-up).
    Duration(Duration),
}

/// Everything that shapes a run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub connections: usize,
    /// Payload bytes per message (text: letters before the `\n`).
    pub size: usize,
    pub framed: bool,
    pub stop: Stop,
    /// Requests during this first stretch are sent but not recorded.
    pub warmup: Duration,
    /// Open loop at this many requests per second over all connections;
    /// `None` is a closed loop.
    pub rate: Option<f64>,
    /// Streams: longest wait for a reply before the connection counts as
    /// failed. Datagrams: a reply later than this counts as lost.
    pub timeout: Duration,
    pub unit: Unit,
}

impl LoadConfig {
    /// Checks the combination of options, with errors that say what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(format!(
                "--size must be between 1 byte and {} (got {})",
                MAX_SIZE, self.size
            ));
        }
        if self.framed && self.size > crate::wire::MAX_PAYLOAD {
            return Err(format!(
                "a frame carries at most {} payload bytes (--size {})",
                crate::wire::MAX_PAYLOAD,
                self.size
            ));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err("--rate must be a positive number of requests per second".into());
            }
        }
        match self.stop {
            Stop::Count(0) => Err("--count must be at least 1".into()),
            Stop::Duration(d) if d.is_zero() => Err("--duration must be more than 0".into()),
            _ => Ok(()),
        }
    }

    /// Bytes one message takes in one direction (what MB/s counts): the
    /// letters and `\n` of a text line, or header and payload of a frame.
    pub fn message_bytes(&self) -> usize {
        if self.framed {
            HEADER_LEN + self.size
        } else {
            self.size + 1
        }
    }
}

/// Live counters for a progress bar, updated while the run goes on.
#[derive(Debug, Default)]
pub struct LoadProgress {
    /// Measured requests completed so far (replies, losses and failures).
    pub completed: AtomicU64,
    /// Set once every connection is open and the clock has started (ns on
    /// [`monotonic_nanos`]'s clock; 0 before).
    pub started_at: AtomicU64,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub connections: usize,
    pub size: usize,
    pub framed: bool,
    pub stop: Stop,
    pub warmup: Duration,
    pub rate: Option<f64>,
    /// Bytes per message, one way (see [`LoadConfig::message_bytes`]).
    pub message_bytes: usize,
    /// Latency per request; in an open loop, counted from the intended
    /// send time (coordinated-omission corrected).
    pub latency: Latencies,
    /// Open loop only: the same requests counted from their actual send
    /// time, which hides stalls. Equal to `latency` in a closed loop.
    pub uncorrected: Latencies,
    /// Requests answered correctly or not, in the measured part.
    pub requests: u64,
    /// Requests sent during the warm-up (not in the histograms).
    pub warmup_requests: u64,
    /// Replies that were not the uppercase of their request.
    pub mismatches: u64,
    /// UDP: requests whose reply did not come back within the timeout.
    pub lost: u64,
    /// UDP: replies that came back after their request was counted lost.
    pub late: u64,
    /// UDP: extra copies of replies already received (the network, or the
    /// server receiving a duplicated request, delivered one twice).
    pub duplicates: u64,
    /// Open loop: scheduled requests never sent because the run ended
    /// while the client was still behind schedule.
    pub unsent: u64,
    /// Connections that failed (and stopped) during the run.
    pub failed_connections: u64,
    /// The first distinct error messages, for the report.
    pub errors: Vec<String>,
    /// From the end of the warm-up to the last measured reply.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Measured replies (correct or not) per second.
    pub fn requests_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.latency.count() as f64 / secs
        } else {
            0.0
        }
    }

    /// Megabytes (10⁶ bytes) per second in one direction, like iperf3 and
    /// `echo-rtt`: replies per second × bytes per message.
    pub fn megabytes_per_sec(&self) -> f64 {
        self.requests_per_sec() * self.message_bytes as f64 / 1e6
    }

    /// Lost requests as a fraction of those that were measured.
    pub fn loss_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.lost as f64 / self.requests as f64
        }
    }
}

/// Runs the load over `config.connections` streams, each opened by
/// `connect(i)` before the clock starts. The streams may be anything
/// that reads and writes: `TcpStream`, a TLS stream, a QUIC stream joined
/// with `tokio::io::join`.
pub async fn run_streams<S, F, Fut>(
    config: &LoadConfig,
    connect: F,
    progress: Arc<LoadProgress>,
) -> anyhow::Result<LoadReport>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<S>>,
{
    config.validate().map_err(anyhow::Error::msg)?;
    let mut streams = Vec::with_capacity(config.connections);
    for i in 0..config.connections {
        let s = connect(i).await.map_err(|e| {
            e.context(format!(
                "opening connection {} of {}",
                i + 1,
                config.connections
            ))
        })?;
        streams.push(s);
    }
    // Histograms are allocated (and their pages touched) before the clock starts.
    let outcomes: Vec<Outcome> = (0..streams.len())
        .map(|_| Outcome::new(config.unit, config.rate.is_some()))
        .collect();
    let plan = Plan::start(config, &progress);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (stream, out)) in streams.into_iter().zip(outcomes).enumerate() {
        let conn = plan.connection(i);
        tasks.spawn(async move { stream_connection(stream, conn, out).await });
    }
    plan.collect(tasks).await
}

/// Runs the load over `config.connections` UDP sockets, each connected to
/// the server by `connect(i)`. Replies that do not come back within
/// `config.timeout` are counted as lost; the run goes on.
pub async fn run_datagrams<F, Fut>(
    config: &LoadConfig,
    connect: F,
    progress: Arc<LoadProgress>,
) -> anyhow::Result<LoadReport>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<tokio::net::UdpSocket>>,
{
    config.validate().map_err(anyhow::Error::msg)?;
    if config.size + 1 > crate::server::udp::MAX_DATAGRAM {
        anyhow::bail!(
            "a UDP datagram carries at most {} bytes: use --size {} or less",
            crate::server::udp::MAX_DATAGRAM,
            crate::server::udp::MAX_DATAGRAM - HEADER_LEN
        );
    }
    let mut sockets = Vec::with_capacity(config.connections);
    for i in 0..config.connections {
        sockets.push(connect(i).await?);
    }
    let outcomes: Vec<Outcome> = (0..sockets.len())
        .map(|_| Outcome::new(config.unit, config.rate.is_some()))
        .collect();
    let plan = Plan::start(config, &progress);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (socket, out)) in sockets.into_iter().zip(outcomes).enumerate() {
        let conn = plan.connection(i);
        tasks.spawn(async move { datagram_connection(socket, conn, out).await });
    }
    plan.collect(tasks).await
}

/// The shared timeline of one run, decided when the clock starts.
pub(crate) struct Plan {
    config: Arc<LoadConfig>,
    progress: Arc<LoadProgress>,
    /// Time zero of the run (all connections open).
    start_ns: u64,
    /// End of the warm-up: requests intended from here on are measured.
    measure_from_ns: u64,
}

/// What one connection task needs to know.
pub(crate) struct Connection {
    pub(crate) index: usize,
    pub(crate) config: Arc<LoadConfig>,
    pub(crate) progress: Arc<LoadProgress>,
    pub(crate) measure_from_ns: u64,
    /// Duration runs: no request is started at or after this time.
    pub(crate) end_ns: Option<u64>,
    /// Count runs: measured requests this connection must complete.
    pub(crate) quota: Option<u64>,
    pub(crate) schedule: Option<Schedule>,
}

/// What one connection task measured.
pub(crate) struct Outcome {
    pub(crate) recorder: Recorder,
    pub(crate) requests: u64,
    pub(crate) warmup: u64,
    pub(crate) mismatches: u64,
    pub(crate) lost: u64,
    pub(crate) late: u64,
    pub(crate) duplicates: u64,
    /// UDP: requests counted lost whose reply has not turned up (yet).
    pub(crate) unanswered: std::collections::HashSet<u64>,
    pub(crate) unsent: u64,
    pub(crate) last_reply_ns: u64,
    pub(crate) error: Option<String>,
}

impl Outcome {
    /// A UDP reply that is not for the request in flight: the first reply
    /// to a request already counted lost is *late*; anything else is a copy
    /// of a reply already seen, a *duplicate*.
    pub(crate) fn classify_stray(&mut self, reply_id: u64) {
        if self.unanswered.remove(&reply_id) {
            self.late += 1;
        } else {
            self.duplicates += 1;
        }
    }

    pub(crate) fn new(unit: Unit, open_loop: bool) -> Outcome {
        Outcome {
            recorder: if open_loop {
                Recorder::new(unit)
            } else {
                Recorder::closed_loop(unit)
            },
            requests: 0,
            warmup: 0,
            mismatches: 0,
            lost: 0,
            late: 0,
            duplicates: 0,
            unanswered: Default::default(),
            unsent: 0,
            last_reply_ns: 0,
            error: None,
        }
    }
}

impl Plan {
    pub(crate) fn start(config: &LoadConfig, progress: &Arc<LoadProgress>) -> Plan {
        let start_ns = monotonic_nanos();
        progress.started_at.store(start_ns.max(1), Relaxed);
        Plan {
            config: Arc::new(config.clone()),
            progress: progress.clone(),
            start_ns,
            measure_from_ns: start_ns + config.warmup.as_nanos() as u64,
        }
    }

    pub(crate) fn connection(&self, index: usize) -> Connection {
        let c = &self.config;
        let n = c.connections as u64;
        let quota = match c.stop {
            // Split N as evenly as possible: the first N mod C get one more.
            Stop::Count(total) => Some(total / n + u64::from((index as u64) < total % n)),
            Stop::Duration(_) => None,
        };
        let end_ns = match c.stop {
            Stop::Duration(d) => Some(self.measure_from_ns + d.as_nanos() as u64),
            Stop::Count(_) => None,
        };
        // Open loop: each connection takes every C-th slot of the overall
        // schedule, so that the requests of all connections interleave evenly.
        let schedule = c.rate.map(|rate| {
            let per_conn = rate / n as f64;
            let overall = Schedule::per_second(self.start_ns, rate);
            Schedule::per_second(overall.intended(index as u64), per_conn)
        });
        Connection {
            index,
            config: c.clone(),
            progress: self.progress.clone(),
            measure_from_ns: self.measure_from_ns,
            end_ns,
            quota,
            schedule,
        }
    }

    async fn collect(self, mut tasks: tokio::task::JoinSet<Outcome>) -> anyhow::Result<LoadReport> {
        let mut outcomes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            outcomes.push(joined.map_err(|e| format!("a connection task failed: {e}")));
        }
        Ok(self.finish(outcomes))
    }

    /// Adds up what every connection measured.
    pub(crate) fn finish(self, outcomes: Vec<Result<Outcome, String>>) -> LoadReport {
        let c = &self.config;
        let mut all = Outcome::new(c.unit, c.rate.is_some());
        let mut errors: Vec<String> = Vec::new();
        let mut failed = 0;
        let mut last_reply = 0;
        for o in outcomes {
            let o = match o {
                Ok(o) => o,
                Err(e) => {
                    failed += 1;
                    errors.push(e);
                    continue;
                }
            };
            all.recorder.merge(&o.recorder);
            all.requests += o.requests;
            all.warmup += o.warmup;
            all.mismatches += o.mismatches;
            all.lost += o.lost;
            all.late += o.late;
            all.duplicates += o.duplicates;
            all.unsent += o.unsent;
            last_reply = last_reply.max(o.last_reply_ns);
            if let Some(e) = o.error {
                failed += 1;
                if errors.len() < 5 && !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
        let elapsed = match c.stop {
            // A duration run measures for its duration, even if the last
            // replies came a little earlier.
            Stop::Duration(d) => {
                Duration::from_nanos(last_reply.saturating_sub(self.measure_from_ns)).max(d.min(
                    Duration::from_nanos(monotonic_nanos().saturating_sub(self.measure_from_ns)),
                ))
            }
            Stop::Count(_) => Duration::from_nanos(last_reply.saturating_sub(self.measure_from_ns)),
        };
        LoadReport {
            connections: c.connections,
            size: c.size,
            framed: c.framed,
            stop: c.stop,
            warmup: c.warmup,
            rate: c.rate,
            message_bytes: c.message_bytes(),
            uncorrected: all.recorder.uncorrected_or_corrected().clone(),
            latency: all.recorder.corrected,
            requests: all.requests,
            warmup_requests: all.warmup,
            mismatches: all.mismatches,
            lost: all.lost,
            late: all.late,
            duplicates: all.duplicates,
            unsent: all.unsent,
            failed_connections: failed,
            errors,
            elapsed,
        }
    }
}

/// The next request a connection should send, or why it should stop.
pub(crate) enum Next {
    Send { intended: u64, measured: bool },
    Stop,
}

/// When request `i` is due.
pub(crate) enum Slot {
    /// The run is over for this connection.
    Stop,
    /// Open loop: at this time (ns), even if that is in the past.
    At(u64),
    /// Closed loop: now.
    Now(u64),
}

impl Connection {
    /// When request `i` is due, `done` measured requests into the run.
    pub(crate) fn slot(&self, i: u64, done: u64) -> Slot {
        if let Some(quota) = self.quota {
            if done >= quota {
                return Slot::Stop;
            }
        }
        match self.schedule {
            Some(s) => {
                let t = s.intended(i);
                if self.end_ns.is_some_and(|end| t >= end) {
                    Slot::Stop
                } else {
                    Slot::At(t)
                }
            }
            None => {
                let now = monotonic_nanos();
                if self.end_ns.is_some_and(|end| now >= end) {
                    Slot::Stop
                } else {
                    Slot::Now(now)
                }
            }
        }
    }

    /// Decides request `i`: waits for its scheduled time (open loop), or
    /// says the run is over.
    async fn next(&self, i: u64, done: u64, timer: &mut PreciseTimer) -> Next {
        let intended = match self.slot(i, done) {
            Slot::Stop => return Next::Stop,
            Slot::At(t) => {
                timer.sleep_until(t).await;
                t
            }
            Slot::Now(t) => t,
        };
        Next::Send {
            intended,
            measured: intended >= self.measure_from_ns,
        }
    }

    /// Open loop, duration run: scheduled requests from `i` on that were
    /// never sent because the run ended.
    pub(crate) fn unsent_from(&self, i: u64) -> u64 {
        match (self.schedule, self.end_ns) {
            (Some(s), Some(end)) => {
                let total = ((end.saturating_sub(s.start_ns)) as f64 / s.interval_ns).ceil() as u64;
                total.saturating_sub(i)
            }
            _ => 0,
        }
    }

    /// Open loop, duration run: give up on the backlog this long after the end.
    pub(crate) fn past_hard_end(&self, now: u64) -> bool {
        match (self.schedule, self.end_ns) {
            (Some(_), Some(end)) => now > end + self.config.timeout.as_nanos() as u64,
            _ => false,
        }
    }
}

/// Batches progress updates so that connections do not fight over one
/// counter for every message.
pub(crate) struct ProgressBatch<'a> {
    pub(crate) progress: &'a LoadProgress,
    pub(crate) pending: u64,
}

impl ProgressBatch<'_> {
    pub(crate) fn tick(&mut self) {
        self.pending += 1;
        if self.pending == 64 {
            self.flush();
        }
    }
    pub(crate) fn flush(&mut self) {
        self.progress.completed.fetch_add(self.pending, Relaxed);
        self.pending = 0;
    }
}

/// Builds requests in a reused buffer and checks replies without
/// allocating.
pub(crate) struct Messages {
    framed: bool,
    size: usize,
    /// Text: the whole request (letters and `\n`); its first letters are
    /// rewritten for every request. Framed: the payload.
    template: Vec<u8>,
    /// The uppercase of `template`: the expected reply (text) or payload.
    expected: Vec<u8>,
    /// Framed payload as `Bytes`, cloned (not copied) into each frame.
    payload: Bytes,
    /// The request being sent.
    request: Vec<u8>,
    id_letters: usize,
}

impl Messages {
    pub(crate) fn new(size: usize, framed: bool) -> Messages {
        let mut template: Vec<u8> = (0..size).map(|j| b'a' + (j % 26) as u8).collect();
        if !framed {
            template.push(b'\n');
        }
        let expected = template.to_ascii_uppercase();
        Messages {
            framed,
            size,
            payload: Bytes::copy_from_slice(&template[..size]),
            request: Vec::with_capacity(template.len() + HEADER_LEN),
            template,
            expected,
            id_letters: if framed { 0 } else { size.min(ID_LETTERS) },
        }
    }

    /// Bytes of a correct reply.
    pub(crate) fn reply_len(&self) -> usize {
        if self.framed {
            HEADER_LEN + self.size
        } else {
            self.size + 1
        }
    }

    /// Writes request number `id` (intended at `intended_ns`) into the buffer.
    pub(crate) fn build(&mut self, id: u64, intended_ns: u64) -> &[u8] {
        self.request.clear();
        if self.framed {
            let frame = Frame::request(id as u32, intended_ns, self.payload.clone());
            // The payload is at most MAX_PAYLOAD (checked by validate()).
            let _ = frame.encode(&mut self.request);
        } else {
            self.request.extend_from_slice(&self.template);
            let mut n = id;
            for slot in self.request[..self.id_letters].iter_mut().rev() {
                *slot = b'a' + (n % 26) as u8;
                n /= 26;
            }
        }
        &self.request
    }

    /// The request number a text reply carries (modulo 26^letters), if its
    /// letters are uppercase letters.
    fn text_reply_id(&self, reply: &[u8]) -> Option<u64> {
        let letters = reply.get(..self.id_letters)?;
        letters.iter().try_fold(0u64, |n, &c| {
            c.is_ascii_uppercase().then(|| n * 26 + u64::from(c - b'A'))
        })
    }

    pub(crate) fn id_modulus(&self) -> u64 {
        26u64.pow(self.id_letters as u32)
    }

    /// Which request a reply answers, as far as can be told cheaply.
    pub(crate) fn reply_id(&self, reply: &[u8]) -> Option<u64> {
        if self.framed {
            frame::check_header(reply)
                .ok()
                .flatten()
                .map(|h| u64::from(h.id))
        } else {
            self.text_reply_id(reply)
        }
    }

    /// Is `reply` the right answer to request `id` intended at `intended_ns`?
    pub(crate) fn check(&self, reply: &[u8], id: u64, intended_ns: u64) -> Result<(), String> {
        if self.framed {
            let header = match frame::check_header(reply) {
                Ok(Some(h)) => h,
                Ok(None) => return Err("a truncated frame".into()),
                Err(e) => return Err(format!("a malformed frame: {e}")),
            };
            let payload = reply.get(HEADER_LEN..HEADER_LEN + header.payload_len);
            if header.frame_type == FrameType::Error {
                let text = String::from_utf8_lossy(payload.unwrap_or_default());
                return Err(format!("an error frame: {text}"));
            }
            if header.frame_type != FrameType::Response
                || header.id != id as u32
                || header.timestamp != intended_ns
            {
                return Err(format!(
                    "a {} frame with id {} and timestamp {} for request {} ({})",
                    header.frame_type, header.id, header.timestamp, id as u32, intended_ns
                ));
            }
            if payload != Some(&self.expected[..]) {
                return Err("a response frame whose payload is not the uppercase request".into());
            }
            Ok(())
        } else {
            let k = self.id_letters;
            let id_ok = self.text_reply_id(reply) == Some(id % self.id_modulus());
            if reply.len() == self.expected.len() && id_ok && reply[k..] == self.expected[k..] {
                Ok(())
            } else {
                Err(format!(
                    "{:?} instead of the uppercase request",
                    String::from_utf8_lossy(&reply[..reply.len().min(80)])
                ))
            }
        }
    }
}

/// Reads from `stream` into `buf` until one whole reply is there; returns
/// its length. Text: `expected_len` bytes (or fewer ending in `\n`, which
/// is then a wrong reply). Framed: one whole frame.
async fn read_reply<S: AsyncRead + Unpin>(
    stream: &mut S,
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
            // A reply is complete at the expected length; a shorter line
            // (an error message) is complete at its `\n`.
            match buf[scanned..filled].iter().position(|&b| b == b'\n') {
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
        match stream.read(&mut buf[filled..]).await {
            Ok(0) => {
                return Err(if filled == 0 {
                    "the server closed the connection".into()
                } else {
                    format!(
                        "the server closed the connection after a partial reply {:?}",
                        String::from_utf8_lossy(&buf[..filled.min(80)])
                    )
                })
            }
            Ok(n) => filled += n,
            Err(e) => return Err(format!("receiving: {e}")),
        }
    }
}

async fn stream_connection<S>(mut stream: S, conn: Connection, mut out: Outcome) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = conn.config.clone();
    let mut messages = Messages::new(config.size, config.framed);
    let reply_len = messages.reply_len();
    let mut buf = vec![0u8; reply_len];
    let mut timer = PreciseTimer::new();
    let mut progress = ProgressBatch {
        progress: &conn.progress,
        pending: 0,
    };
    let mut i: u64 = 0;
    loop {
        if conn.past_hard_end(monotonic_nanos()) {
            out.unsent += conn.unsent_from(i);
            break;
        }
        let (intended, measured) = match conn.next(i, out.requests, &mut timer).await {
            Next::Send { intended, measured } => (intended, measured),
            Next::Stop => break,
        };
        let request = messages.build(i, intended);
        let sent = monotonic_nanos();
        let exchange = async {
            stream
                .write_all(request)
                .await
                .map_err(|e| format!("sending: {e}"))?;
            read_reply(&mut stream, &mut buf, config.framed, reply_len).await
        };
        let got = match tokio::time::timeout(config.timeout, exchange).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                out.error = Some(format!("connection {}: {e}", conn.index + 1));
                break;
            }
            Err(_) => {
                out.error = Some(format!(
                    "connection {}: no reply within {} (--timeout waits longer)",
                    conn.index + 1,
                    crate::cli::format_duration(config.timeout)
                ));
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
                intended: if conn.schedule.is_some() {
                    intended
                } else {
                    sent
                },
                sent,
                received,
            });
        } else {
            out.warmup += 1;
        }
        if let Err(e) = checked {
            out.mismatches += 1;
            if config.framed {
                // After a bad frame the stream cannot be trusted.
                out.error = Some(format!(
                    "connection {}: the server sent {e}",
                    conn.index + 1
                ));
                break;
            }
        }
    }
    progress.flush();
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    out
}

async fn datagram_connection(
    socket: tokio::net::UdpSocket,
    conn: Connection,
    mut out: Outcome,
) -> Outcome {
    let config = conn.config.clone();
    let mut messages = Messages::new(config.size, config.framed);
    // Room for any datagram, so that an oversized reply is seen whole.
    let mut buf = vec![0u8; crate::server::udp::MAX_DATAGRAM + 1];
    let mut timer = PreciseTimer::new();
    let mut progress = ProgressBatch {
        progress: &conn.progress,
        pending: 0,
    };
    let lost_after = config.timeout;
    let mut i: u64 = 0;
    'requests: loop {
        if conn.past_hard_end(monotonic_nanos()) {
            out.unsent += conn.unsent_from(i);
            break;
        }
        let (intended, measured) = match conn.next(i, out.requests, &mut timer).await {
            Next::Send { intended, measured } => (intended, measured),
            Next::Stop => break,
        };
        let id = i;
        i += 1;
        let request = messages.build(id, intended);
        let sent = monotonic_nanos();
        if let Err(e) = socket.send(request).await {
            out.error = Some(explain_udp_error(&conn, &socket, e));
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
        let deadline = tokio::time::Instant::now() + lost_after;
        loop {
            let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    out.error = Some(explain_udp_error(&conn, &socket, e));
                    break 'requests;
                }
                Err(_) => {
                    // UDP does not retransmit: the request or its reply is gone.
                    if measured {
                        out.lost += 1;
                    }
                    out.unanswered.insert(expected_id);
                    continue 'requests;
                }
            };
            let received = monotonic_nanos();
            let reply = &buf[..n];
            match messages.reply_id(reply) {
                Some(rid) if rid == expected_id => {}
                Some(rid) => {
                    out.classify_stray(rid);
                    continue;
                }
                None => {
                    out.mismatches += 1;
                    continue;
                }
            }
            if messages.check(reply, id, intended).is_err() {
                out.mismatches += 1;
            }
            if measured {
                out.last_reply_ns = received;
                out.recorder.record(Timing {
                    intended: if conn.schedule.is_some() {
                        intended
                    } else {
                        sent
                    },
                    sent,
                    received,
                });
            }
            break;
        }
    }
    progress.flush();
    out
}

fn explain_udp_error(
    conn: &Connection,
    socket: &tokio::net::UdpSocket,
    e: std::io::Error,
) -> String {
    udp_error(conn, socket.peer_addr().ok(), e)
}

/// A UDP error as a sentence; "connection refused" means an ICMP
/// port-unreachable came back for one of our datagrams.
pub(crate) fn udp_error(
    conn: &Connection,
    peer: Option<std::net::SocketAddr>,
    e: std::io::Error,
) -> String {
    let peer = peer
        .map(|a| a.to_string())
        .unwrap_or_else(|| "the server".into());
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        format!(
            "socket {}: connection refused (ICMP port unreachable): is 'proto serve udp' running on {peer}?",
            conn.index + 1
        )
    } else {
        format!("socket {}: {e}", conn.index + 1)
    }
}

/// Sleeps until a time on [`monotonic_nanos`]'s clock, to the microsecond.
///
/// tokio's timers tick in whole milliseconds: fine for timeouts, useless
/// for sending 10 000 requests per second on time (they would leave in
/// bursts, 10 per tick, and the correction would charge the server for the
/// client's lateness). On Linux a `timerfd` wakes the task with the
/// kernel's high-resolution timers; elsewhere this falls back to tokio.
///
/// Even a precise timer wakes a thread some tens of µs late (the wake-up
/// itself). The timer therefore learns how late it wakes (a moving
/// average), asks to be woken that much early, and yields the CPU in a
/// loop for the last few µs.
struct PreciseTimer {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
    /// How early to ask for the wake-up, in ns (learnt).
    lead_ns: u64,
}

/// The most the timer asks to be woken early (and so the longest spin).
const MAX_LEAD_NS: u64 = 50_000;

impl PreciseTimer {
    fn new() -> PreciseTimer {
        PreciseTimer {
            #[cfg(target_os = "linux")]
            fd: timerfd::create(),
            lead_ns: 20_000,
        }
    }

    async fn sleep_until(&mut self, deadline_ns: u64) {
        let now = monotonic_nanos();
        if deadline_ns <= now {
            return;
        }
        let wake_at = deadline_ns.saturating_sub(self.lead_ns);
        if wake_at > now + 2_000 {
            let wait = wake_at - now;
            #[cfg(target_os = "linux")]
            let done = match &self.fd {
                Some(fd) => timerfd::sleep(fd, wait).await.is_ok(),
                None => false,
            };
            #[cfg(not(target_os = "linux"))]
            let done = false;
            if !done {
                tokio::time::sleep(Duration::from_nanos(wait)).await;
            }
            // Learn from this wake-up: aim to wake 1.5x the usual lateness early.
            let late = monotonic_nanos().saturating_sub(wake_at);
            let target = (late + late / 2).min(MAX_LEAD_NS);
            self.lead_ns = (self.lead_ns * 7 + target) / 8;
        }
        // The last stretch: spin (a few µs, bounded by MAX_LEAD_NS).
        // Yielding (not just spinning) lets a server pinned to the same
        // CPU run meanwhile.
        while monotonic_nanos() < deadline_ns {
            std::thread::yield_now();
        }
    }
}

#[cfg(target_os = "linux")]
mod timerfd {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use tokio::io::unix::AsyncFd;

    pub fn create() -> Option<AsyncFd<OwnedFd>> {
        // SAFETY: timerfd_create has no memory-safety preconditions; a
        // non-negative result is a fresh descriptor that we now own.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a valid descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an OwnedFd keeps its descriptor open, and returns the same
        // one from as_raw_fd, until it is dropped with the AsyncFd.
        unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
    }

    /// Arms the timer `wait_ns` from now and waits until it fires.
    pub async fn sleep(fd: &AsyncFd<OwnedFd>, wait_ns: u64) -> std::io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (wait_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (wait_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: the descriptor is a timerfd we own; `spec` is a valid
        // itimerspec and the old value is not requested (null).
        let rc = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        loop {
            let mut guard = fd.readable().await?;
            let read = guard.try_io(|inner| {
                let mut expirations = [0u8; 8];
                // SAFETY: reading 8 bytes into an 8-byte buffer.
                let n = unsafe {
                    libc::read(
                        inner.get_ref().as_raw_fd(),
                        expirations.as_mut_ptr().cast(),
                        expirations.len(),
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_requests_carry_their_number_and_check_their_reply() {
        let mut m = Messages::new(10, false);
        let req = m.build(27, 0).to_vec();
        assert_eq!(req, b"aaaaabbhij\n"); // 27 = "bb" in base 26
        let reply = req.to_ascii_uppercase();
        assert_eq!(m.reply_id(&reply), Some(27));
        assert!(m.check(&reply, 27, 0).is_ok());
        assert!(m.check(&reply, 28, 0).is_err());
        assert!(m.check(b"ERROR\n", 27, 0).is_err());
        assert!(m.check(&req, 27, 0).is_err(), "not uppercased");
    }

    #[test]
    fn tiny_text_requests_still_work() {
        let mut m = Messages::new(1, false);
        let req = m.build(3, 0).to_vec();
        assert_eq!(req, b"d\n");
        assert!(m.check(b"D\n", 29, 0).is_ok(), "ids wrap modulo 26");
    }

    #[test]
    fn framed_requests_round_trip_through_the_server_logic() {
        let mut m = Messages::new(5, true);
        let req = m.build(7, 99).to_vec();
        let mut reply = Vec::new();
        crate::server::udp::answer_datagram(&req, &mut reply).unwrap();
        assert_eq!(m.reply_id(&reply), Some(7));
        assert!(m.check(&reply, 7, 99).is_ok());
        assert!(m.check(&reply, 7, 98).is_err(), "timestamp must be echoed");
        let err = Frame::error(7, 99, "nope").to_bytes().unwrap();
        assert!(m.check(&err, 7, 99).unwrap_err().contains("nope"));
    }

    #[test]
    fn count_is_split_over_connections() {
        let config = LoadConfig {
            connections: 3,
            size: 8,
            framed: false,
            stop: Stop::Count(10),
            warmup: Duration::ZERO,
            rate: None,
            timeout: Duration::from_secs(1),
            unit: Unit::Nanos,
        };
        let plan = Plan::start(&config, &Arc::new(LoadProgress::default()));
        let quotas: Vec<_> = (0..3).map(|i| plan.connection(i).quota.unwrap()).collect();
        assert_eq!(quotas, vec![4, 3, 3]);
    }

    #[test]
    fn open_loop_connections_interleave() {
        let config = LoadConfig {
            connections: 2,
            size: 8,
            framed: false,
            stop: Stop::Duration(Duration::from_secs(1)),
            warmup: Duration::ZERO,
            rate: Some(1000.0),
            timeout: Duration::from_secs(1),
            unit: Unit::Nanos,
        };
        let plan = Plan::start(&config, &Arc::new(LoadProgress::default()));
        let a = plan.connection(0).schedule.unwrap();
        let b = plan.connection(1).schedule.unwrap();
        assert_eq!(b.intended(0) - a.intended(0), 1_000_000);
        assert_eq!(a.intended(1) - a.intended(0), 2_000_000);
        assert_eq!(plan.connection(0).unsent_from(0), 500);
    }

    #[test]
    fn validation_explains() {
        let mut config = LoadConfig {
            connections: 1,
            size: 0,
            framed: false,
            stop: Stop::Count(1),
            warmup: Duration::ZERO,
            rate: None,
            timeout: Duration::from_secs(1),
            unit: Unit::Nanos,
        };
        assert!(config.validate().unwrap_err().contains("--size"));
        config.size = 70_000;
        config.framed = true;
        assert!(config.validate().unwrap_err().contains("frame"));
    }
}
