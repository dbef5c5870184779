//! One load connection, sans I/O: what to send when, where a reply ends,
//! what the reply means, and what gets recorded.
//!
//! A [`LoadConnection`] never touches a socket or a clock. A loop (the
//! blocking one in [`super::blocking`] or the async one in [`super::task`])
//! asks it whose [`Turn`] it is, writes the bytes of [`LoadConnection::request`],
//! reads into the buffer it is given, and reports what happened with a
//! timestamp:
//!
//! ```text
//!   loop ──turn(now)──────────▶ Now | At(t) | Stop       (schedule, quota, end)
//!        ──request()──────────▶ bytes to write          (request i, intended time)
//!        ──sent(now)
//!   stream:    reply_space() / reply_bytes(n) ▶ More | Complete | Failed   (framing)
//!              reply_received(now) ▶ go on?              (check, record)
//!   datagrams: datagram_space() / datagram_received(n, now) ▶ Answer | Stray
//!              still_waiting(now) ▶ time left, or lost   (loss, late, duplicate)
//! ```
//!
//! A [`Timeline`] fixes the run's clock (start, end of warm-up, end) and
//! gives each connection its [`Pacing`]; at the end it adds every
//! connection's [`Tally`] into the [`LoadReport`].
//!
//! The hot path allocates nothing per message: requests are built in place
//! in a reused buffer and replies read into another.

use super::{ConnectionFailure, Failure, LoadConfig, LoadProgress, LoadReport, Stop};
use crate::measure::histogram::{Recorder, Schedule, Timing};
use crate::wire::{frame, Frame, FrameType, HEADER_LEN};
use bytes::Bytes;
use std::collections::HashSet;
use std::io::ErrorKind;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// How many letters of a text message carry the request number.
const ID_LETTERS: usize = 7;

/// Measured requests counted locally before they are added to the shared
/// progress counter (so that connections do not fight over it).
const PROGRESS_BATCH: u64 = 64;

/// The most lost requests remembered per connection to tell a late reply
/// from a duplicate (beyond it, a late reply counts as a duplicate).
const MAX_UNANSWERED: usize = 1 << 20;

/// The shared timeline of one run, decided when the clock starts.
#[derive(Debug, Clone)]
pub struct Timeline {
    config: LoadConfig,
    /// Time zero of the run (all connections open).
    start_ns: u64,
    /// End of the warm-up: requests intended from here on are measured.
    measure_from_ns: u64,
}

impl Timeline {
    /// Starts the run's clock at `now_ns` and tells `progress` so.
    pub fn start(config: &LoadConfig, now_ns: u64, progress: &LoadProgress) -> Timeline {
        progress.started_at.store(now_ns.max(1), Relaxed);
        Timeline {
            config: config.clone(),
            start_ns: now_ns,
            measure_from_ns: now_ns + config.warmup.as_nanos() as u64,
        }
    }

    /// Connection `index`'s share of the run.
    pub fn pacing(&self, index: usize) -> Pacing {
        let c = &self.config;
        let n = c.connections.max(1) as u64;
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
            let overall = Schedule::per_second(self.start_ns, rate);
            Schedule::per_second(overall.intended(index as u64), rate / n as f64)
        });
        Pacing {
            measure_from_ns: self.measure_from_ns,
            end_ns,
            quota,
            schedule,
            // Open loop, duration run: give up on the backlog this long after the end.
            give_up_ns: match (schedule, end_ns) {
                (Some(_), Some(end)) => Some(end + c.timeout.as_nanos() as u64),
                _ => None,
            },
        }
    }

    /// Adds up what every connection measured; `now_ns` is the end of the run.
    pub fn report(
        &self,
        tallies: Vec<Result<Tally, ConnectionFailure>>,
        now_ns: u64,
    ) -> LoadReport {
        let c = &self.config;
        let mut all = Tally::new(c);
        let mut errors: Vec<ConnectionFailure> = Vec::new();
        let mut failed = 0;
        for t in tallies {
            let t = match t {
                Ok(t) => t,
                Err(crashed) => {
                    failed += 1;
                    errors.push(crashed);
                    continue;
                }
            };
            all.recorder.merge(&t.recorder);
            all.requests += t.requests;
            all.warmup += t.warmup;
            all.mismatches += t.mismatches;
            all.lost += t.lost;
            all.late += t.late;
            all.duplicates += t.duplicates;
            all.unsent += t.unsent;
            all.last_reply_ns = all.last_reply_ns.max(t.last_reply_ns);
            if let Some(e) = t.failure {
                failed += 1;
                if errors.len() < 5 && !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
        let since_measuring = |t: u64| Duration::from_nanos(t.saturating_sub(self.measure_from_ns));
        let elapsed = match c.stop {
            // A duration run measures for its duration, even if the last
            // replies came a little earlier.
            Stop::Duration(d) => {
                since_measuring(all.last_reply_ns).max(d.min(since_measuring(now_ns)))
            }
            Stop::Count(_) => since_measuring(all.last_reply_ns),
        };
        LoadReport {
            config: c.clone(),
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

/// One connection's share of the run's timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    measure_from_ns: u64,
    /// Duration runs: no request is started at or after this time.
    end_ns: Option<u64>,
    /// Count runs: measured requests this connection must complete.
    quota: Option<u64>,
    /// Open loop: when each request is due.
    schedule: Option<Schedule>,
    /// Open loop, duration run: past this, the backlog is abandoned.
    give_up_ns: Option<u64>,
}

impl Pacing {
    /// A connection that has not been started (or is finished): no turns.
    const IDLE: Pacing = Pacing {
        measure_from_ns: 0,
        end_ns: None,
        quota: Some(0),
        schedule: None,
        give_up_ns: None,
    };

    /// Open loop, duration run: scheduled requests from `i` on that were
    /// never sent because the run ended.
    fn unsent_from(&self, i: u64) -> u64 {
        match (self.schedule, self.end_ns) {
            (Some(s), Some(end)) => {
                let total = ((end.saturating_sub(s.start_ns)) as f64 / s.interval_ns).ceil() as u64;
                total.saturating_sub(i)
            }
            _ => 0,
        }
    }
}

/// What a connection should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The run is over for this connection.
    Stop,
    /// Closed loop: send now.
    Now,
    /// Open loop: send at this time (ns), even if that is in the past.
    At(u64),
}

/// How replies arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// A byte stream (TCP, TLS, a QUIC stream): replies must be framed, and
    /// a missing reply fails the connection.
    Stream,
    /// UDP: one reply per datagram, which may be lost, late or duplicated.
    Datagrams,
}

/// Where a stream reply stands after more bytes arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Not complete yet: read more into [`LoadConnection::reply_space`].
    More,
    /// Complete: call [`LoadConnection::reply_received`].
    Complete,
    /// The connection failed (recorded); stop.
    Failed,
}

/// What a datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    /// The reply to the request in flight (right or wrong): send the next.
    Answer,
    /// Something else (late, duplicate, garbage; counted): keep waiting.
    Stray,
}

/// The request in flight.
#[derive(Debug, Clone, Copy, Default)]
struct InFlight {
    id: u64,
    /// When it was due (open loop), or the time of the turn (closed loop).
    intended: u64,
    sent: u64,
    measured: bool,
}

/// What one connection counted.
#[derive(Debug, Clone)]
pub struct Tally {
    pub recorder: Recorder,
    pub requests: u64,
    pub warmup: u64,
    pub mismatches: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicates: u64,
    /// UDP: requests counted lost whose reply has not turned up (yet).
    unanswered: HashSet<u64>,
    pub unsent: u64,
    pub last_reply_ns: u64,
    pub failure: Option<ConnectionFailure>,
}

impl Tally {
    /// Histograms are allocated (and their pages touched) here, before
    /// the clock starts.
    fn new(config: &LoadConfig) -> Tally {
        Tally {
            recorder: if config.rate.is_some() {
                Recorder::new(config.unit)
            } else {
                Recorder::closed_loop(config.unit)
            },
            requests: 0,
            warmup: 0,
            mismatches: 0,
            lost: 0,
            late: 0,
            duplicates: 0,
            unanswered: HashSet::new(),
            unsent: 0,
            last_reply_ns: 0,
            failure: None,
        }
    }
}

/// One load connection's state machine (see the module docs).
pub struct LoadConnection {
    index: usize,
    carrier: Carrier,
    framed: bool,
    open_loop: bool,
    timeout: Duration,
    pacing: Pacing,
    messages: Messages,
    tally: Tally,
    progress: Arc<LoadProgress>,
    unflushed: u64,
    next_id: u64,
    in_flight: InFlight,
    /// Where replies are read into.
    reply: Vec<u8>,
    /// Streams: bytes of the reply so far, and how many are known to hold
    /// no `\n` (text) so that a reply in pieces is searched only once.
    filled: usize,
    scanned: usize,
    /// Streams: the length of the reply once complete.
    reply_len: usize,
}

impl LoadConnection {
    /// Connection `index` of a run, with everything allocated; it has no
    /// turns until [`begin`](Self::begin).
    pub fn new(
        config: &LoadConfig,
        index: usize,
        carrier: Carrier,
        progress: Arc<LoadProgress>,
    ) -> LoadConnection {
        let messages = Messages::new(config.size, config.framed);
        let reply = match carrier {
            Carrier::Stream => vec![0; messages.reply_len()],
            // Room for any datagram, so that an oversized reply is seen whole.
            Carrier::Datagrams => vec![0; crate::wire::limits::MAX_UDP_PAYLOAD + 1],
        };
        LoadConnection {
            index,
            carrier,
            framed: config.framed,
            open_loop: config.rate.is_some(),
            timeout: config.timeout,
            pacing: Pacing::IDLE,
            messages,
            tally: Tally::new(config),
            progress,
            unflushed: 0,
            next_id: 0,
            in_flight: InFlight::default(),
            reply,
            filled: 0,
            scanned: 0,
            reply_len: 0,
        }
    }

    /// The clock has started: this connection's share of the run.
    pub fn begin(&mut self, pacing: Pacing) {
        self.pacing = pacing;
    }

    /// How long a loop waits for a reply (streams) or before a request
    /// counts as lost (datagrams).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whose turn it is at `now_ns`: send now, at a scheduled time, or stop.
    pub fn turn(&mut self, now_ns: u64) -> Turn {
        let p = self.pacing;
        if p.give_up_ns.is_some_and(|g| now_ns > g) {
            self.tally.unsent += p.unsent_from(self.next_id);
            self.pacing = Pacing::IDLE;
            return Turn::Stop;
        }
        if p.quota.is_some_and(|q| self.tally.requests >= q) {
            return Turn::Stop;
        }
        let (turn, intended) = match p.schedule {
            Some(s) => {
                let t = s.intended(self.next_id);
                (Turn::At(t), t)
            }
            None => (Turn::Now, now_ns),
        };
        if p.end_ns.is_some_and(|end| intended >= end) {
            return Turn::Stop;
        }
        self.in_flight.intended = intended;
        turn
    }

    /// The next request's bytes (after a [`Turn`] that was not `Stop`).
    pub fn request(&mut self) -> &[u8] {
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight.id = id;
        self.in_flight.measured = self.in_flight.intended >= self.pacing.measure_from_ns;
        self.filled = 0;
        self.scanned = 0;
        self.messages.build(id, self.in_flight.intended)
    }

    /// The request went out at `now_ns`.
    pub fn sent(&mut self, now_ns: u64) {
        self.in_flight.sent = now_ns;
        if self.carrier == Carrier::Datagrams {
            // A datagram request counts when it is sent: its reply may never come.
            self.count_request();
        }
    }

    fn count_request(&mut self) {
        if self.in_flight.measured {
            self.tally.requests += 1;
            self.unflushed += 1;
            if self.unflushed == PROGRESS_BATCH {
                self.flush_progress();
            }
        } else {
            self.tally.warmup += 1;
        }
    }

    fn flush_progress(&mut self) {
        self.progress.completed.fetch_add(self.unflushed, Relaxed);
        self.unflushed = 0;
    }

    /// Records the round trip of the request in flight, answered at `now_ns`.
    fn record(&mut self, now_ns: u64) {
        let f = self.in_flight;
        self.tally.last_reply_ns = now_ns;
        self.tally.recorder.record(Timing {
            // Closed loop: the send is the intended time.
            intended: if self.open_loop { f.intended } else { f.sent },
            sent: f.sent,
            received: now_ns,
        });
    }

    // ---- streams ----

    /// Where the next bytes of the reply go.
    pub fn reply_space(&mut self) -> &mut [u8] {
        &mut self.reply[self.filled..]
    }

    /// `n` more bytes of the reply arrived in [`reply_space`](Self::reply_space)
    /// (`0`: the server closed the stream).
    pub fn reply_bytes(&mut self, n: usize) -> Read {
        if n == 0 {
            let failure = if self.filled == 0 {
                Failure::Closed
            } else {
                let seen = &self.reply[..self.filled.min(80)];
                Failure::ClosedMidReply(String::from_utf8_lossy(seen).into_owned())
            };
            self.fail(failure);
            return Read::Failed;
        }
        self.filled += n;
        match self.reply_framing() {
            Ok(Some(len)) => {
                self.reply_len = len;
                Read::Complete
            }
            Ok(None) => Read::More,
            Err(failure) => {
                self.fail(failure);
                Read::Failed
            }
        }
    }

    /// Where the reply in `reply[..filled]` ends, if it is complete; makes
    /// room for the rest otherwise. Text: the expected length, or a shorter
    /// line (an error message) at its `\n`. Framed: one whole frame.
    fn reply_framing(&mut self) -> Result<Option<usize>, Failure> {
        let want = if self.framed {
            match frame::check_header(&self.reply[..self.filled]) {
                Ok(Some(h)) => HEADER_LEN + h.payload_len,
                Ok(None) => HEADER_LEN,
                Err(e) => return Err(Failure::WrongReply(format!("a malformed frame: {e}"))),
            }
        } else {
            match memchr::memchr(b'\n', &self.reply[self.scanned..self.filled]) {
                Some(pos) => return Ok(Some(self.scanned + pos + 1)),
                None => {
                    self.scanned = self.filled;
                    self.messages.reply_len()
                }
            }
        };
        if self.filled >= want {
            return Ok(Some(want));
        }
        if self.reply.len() < want {
            self.reply.resize(want, 0);
        }
        Ok(None)
    }

    /// The stream reply is complete, at `now_ns`: checks and records it.
    /// `false` when the connection cannot go on (a wrong frame).
    pub fn reply_received(&mut self, now_ns: u64) -> bool {
        let f = self.in_flight;
        let checked = self
            .messages
            .check(&self.reply[..self.reply_len], f.id, f.intended);
        self.count_request();
        if f.measured {
            self.record(now_ns);
        }
        if let Err(e) = checked {
            self.tally.mismatches += 1;
            if self.framed {
                // After a bad frame the stream cannot be trusted.
                self.fail(Failure::WrongReply(e));
                return false;
            }
        }
        true
    }

    // ---- datagrams ----

    /// Where the next datagram goes (room for any datagram).
    pub fn datagram_space(&mut self) -> &mut [u8] {
        &mut self.reply[..]
    }

    /// A datagram of `n` bytes arrived in [`datagram_space`](Self::datagram_space)
    /// at `now_ns`. A reply whose number is not the one in flight is *late*
    /// if its request was counted lost and this is its first reply, and a
    /// *duplicate* otherwise (UDP has no duplicate protection: the network
    /// may deliver a datagram twice).
    pub fn datagram_received(&mut self, n: usize, now_ns: u64) -> Datagram {
        let f = self.in_flight;
        let reply = &self.reply[..n.min(self.reply.len())];
        match self.messages.reply_id(reply) {
            Some(id) if id == self.messages.wire_id(f.id) => {
                if self.messages.check(reply, f.id, f.intended).is_err() {
                    self.tally.mismatches += 1;
                }
                if f.measured {
                    self.record(now_ns);
                }
                Datagram::Answer
            }
            Some(id) => {
                if self.tally.unanswered.remove(&id) {
                    self.tally.late += 1;
                } else {
                    self.tally.duplicates += 1;
                }
                Datagram::Stray
            }
            None => {
                self.tally.mismatches += 1;
                Datagram::Stray
            }
        }
    }

    /// How much longer to wait for the reply in flight at `now_ns`; `None`
    /// when its time is up (it is then counted lost).
    pub fn still_waiting(&mut self, now_ns: u64) -> Option<Duration> {
        let deadline = self.in_flight.sent + self.timeout.as_nanos() as u64;
        let left = deadline.saturating_sub(now_ns);
        if left == 0 {
            self.lost();
            None
        } else {
            Some(Duration::from_nanos(left))
        }
    }

    /// No reply in time: UDP does not retransmit, the request or its reply
    /// is gone.
    pub fn lost(&mut self) {
        if self.in_flight.measured {
            self.tally.lost += 1;
        }
        if self.tally.unanswered.len() < MAX_UNANSWERED {
            let id = self.messages.wire_id(self.in_flight.id);
            self.tally.unanswered.insert(id);
        }
    }

    // ---- failures ----

    /// Sending failed; the connection stops.
    pub fn send_failed(&mut self, e: std::io::Error) {
        let failure = self.io_failure(e, Failure::Send);
        self.fail(failure);
    }

    /// Receiving failed (a socket timeout counts as no reply); the
    /// connection stops.
    pub fn receive_failed(&mut self, e: std::io::Error) {
        let failure = self.io_failure(e, Failure::Receive);
        self.fail(failure);
    }

    /// No reply within the timeout; the connection stops.
    pub fn timed_out(&mut self) {
        self.fail(Failure::NoReply(self.timeout));
    }

    fn io_failure(&self, e: std::io::Error, other: fn(String) -> Failure) -> Failure {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::NoReply(self.timeout),
            ErrorKind::ConnectionRefused if self.carrier == Carrier::Datagrams => Failure::Refused,
            _ => other(e.to_string()),
        }
    }

    /// Why the connection stopped, if it failed.
    pub fn failed(&self) -> Option<&ConnectionFailure> {
        self.tally.failure.as_ref()
    }

    fn fail(&mut self, failure: Failure) {
        if self.tally.failure.is_none() {
            self.tally.failure = Some(ConnectionFailure {
                connection: self.index,
                datagrams: self.carrier == Carrier::Datagrams,
                failure,
            });
        }
    }

    /// The connection is done: what it counted.
    pub fn finish(mut self) -> Tally {
        self.flush_progress();
        self.tally
    }
}

/// Builds requests in a reused buffer and checks replies without
/// allocating.
struct Messages {
    framed: bool,
    size: usize,
    /// The uppercase of the request text (with `\n`) or of the frame payload.
    expected: Vec<u8>,
    /// Framed payload as `Bytes`, cloned (not copied) into each frame.
    payload: Bytes,
    /// The request being sent. Text: the letters and `\n`, of which only
    /// the first `id_letters` change from one request to the next.
    request: Vec<u8>,
    id_letters: usize,
}

impl Messages {
    fn new(size: usize, framed: bool) -> Messages {
        let mut text: Vec<u8> = (0..size).map(|j| b'a' + (j % 26) as u8).collect();
        let payload = Bytes::copy_from_slice(&text);
        if !framed {
            text.push(b'\n');
        }
        Messages {
            framed,
            size,
            expected: text.to_ascii_uppercase(),
            payload,
            request: if framed {
                Vec::with_capacity(size + HEADER_LEN)
            } else {
                text
            },
            id_letters: if framed { 0 } else { size.min(ID_LETTERS) },
        }
    }

    /// Bytes of a correct reply.
    fn reply_len(&self) -> usize {
        if self.framed {
            HEADER_LEN + self.size
        } else {
            self.size + 1
        }
    }

    /// Writes request number `id` (intended at `intended_ns`) into the buffer.
    fn build(&mut self, id: u64, intended_ns: u64) -> &[u8] {
        if self.framed {
            self.request.clear();
            let frame = Frame::request(id as u32, intended_ns, self.payload.clone());
            // The payload is at most MAX_PAYLOAD (checked by validate()).
            let _ = frame.encode(&mut self.request);
        } else {
            let mut n = id;
            for slot in self.request[..self.id_letters].iter_mut().rev() {
                *slot = b'a' + (n % 26) as u8;
                n /= 26;
            }
        }
        &self.request
    }

    /// The number request `id` carries on the wire: a frame's 32-bit id, or
    /// the text's letters (modulo 26^letters).
    fn wire_id(&self, id: u64) -> u64 {
        if self.framed {
            id & u64::from(u32::MAX)
        } else {
            id % 26u64.pow(self.id_letters as u32)
        }
    }

    /// The request number a text reply carries, if its letters are
    /// uppercase letters.
    fn text_reply_id(&self, reply: &[u8]) -> Option<u64> {
        let letters = reply.get(..self.id_letters)?;
        letters.iter().try_fold(0u64, |n, &c| {
            c.is_ascii_uppercase().then(|| n * 26 + u64::from(c - b'A'))
        })
    }

    /// Which request a reply answers (its [`wire_id`](Self::wire_id)), as
    /// far as can be told cheaply.
    fn reply_id(&self, reply: &[u8]) -> Option<u64> {
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
    fn check(&self, reply: &[u8], id: u64, intended_ns: u64) -> Result<(), String> {
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
            let id_ok = self.text_reply_id(reply) == Some(self.wire_id(id));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::histogram::Unit;

    const MS: u64 = 1_000_000;

    /// Equal within HdrHistogram's 3 significant digits.
    fn about(us: f64, expected_us: f64) -> bool {
        (us - expected_us).abs() <= expected_us * 0.001
    }
    const START: u64 = 1_000 * MS;

    fn config() -> LoadConfig {
        LoadConfig {
            connections: 1,
            size: 10,
            framed: false,
            stop: Stop::Count(3),
            warmup: Duration::ZERO,
            rate: None,
            timeout: Duration::from_millis(50),
            unit: Unit::Nanos,
        }
    }

    /// A started run with one connection.
    fn started(config: &LoadConfig, carrier: Carrier) -> (Timeline, LoadConnection) {
        let progress = Arc::new(LoadProgress::default());
        let mut conn = LoadConnection::new(config, 0, carrier, progress.clone());
        let timeline = Timeline::start(config, START, &progress);
        conn.begin(timeline.pacing(0));
        (timeline, conn)
    }

    /// A started connection with request 0 sent at `START`.
    fn sent_one(config: &LoadConfig, carrier: Carrier) -> LoadConnection {
        let (_, mut conn) = started(config, carrier);
        conn.turn(START);
        conn.request();
        conn.sent(START);
        conn
    }

    /// A server's answer to `request`, in proto's echo semantics.
    fn answer(request: &[u8]) -> Vec<u8> {
        let mut reply = Vec::new();
        crate::server::udp::answer_datagram(request, &mut reply).unwrap();
        reply
    }

    /// Feeds `bytes` to a stream connection as reads of at most `chunk`.
    fn feed(conn: &mut LoadConnection, bytes: &[u8], chunk: usize) -> Read {
        let mut state = Read::More;
        for piece in bytes.chunks(chunk) {
            let space = conn.reply_space();
            space[..piece.len()].copy_from_slice(piece);
            state = conn.reply_bytes(piece.len());
        }
        state
    }

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
        assert_eq!(m.build(0, 0), b"aaaaaaahij\n", "rewritten in place");
    }

    #[test]
    fn tiny_text_requests_still_work() {
        let mut m = Messages::new(1, false);
        assert_eq!(m.build(3, 0), b"d\n");
        assert!(m.check(b"D\n", 29, 0).is_ok(), "ids wrap modulo 26");
    }

    #[test]
    fn framed_requests_round_trip_through_the_server_logic() {
        let mut m = Messages::new(5, true);
        let reply = answer(m.build(7, 99));
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
            stop: Stop::Count(10),
            ..config()
        };
        let t = Timeline::start(&config, START, &LoadProgress::default());
        let quotas: Vec<_> = (0..3).map(|i| t.pacing(i).quota.unwrap()).collect();
        assert_eq!(quotas, vec![4, 3, 3]);
    }

    #[test]
    fn open_loop_connections_interleave() {
        let config = LoadConfig {
            connections: 2,
            stop: Stop::Duration(Duration::from_secs(1)),
            rate: Some(1000.0),
            ..config()
        };
        let t = Timeline::start(&config, START, &LoadProgress::default());
        let a = t.pacing(0).schedule.unwrap();
        let b = t.pacing(1).schedule.unwrap();
        assert_eq!(b.intended(0) - a.intended(0), MS);
        assert_eq!(a.intended(1) - a.intended(0), 2 * MS);
        assert_eq!(t.pacing(0).unsent_from(0), 500);
    }

    #[test]
    fn a_closed_loop_stream_times_each_round_trip_from_its_send() {
        let (timeline, mut conn) = started(&config(), Carrier::Stream);
        let mut now = START;
        for _ in 0..3 {
            assert_eq!(conn.turn(now), Turn::Now);
            let reply = answer(conn.request());
            conn.sent(now + 1_000);
            // The reply arrives in pieces of 4 bytes.
            assert_eq!(feed(&mut conn, &reply, 4), Read::Complete);
            assert!(conn.reply_received(now + 21_000));
            now += MS;
        }
        assert_eq!(conn.turn(now), Turn::Stop, "the count is reached");
        let report = timeline.report(vec![Ok(conn.finish())], now);
        assert_eq!((report.requests, report.mismatches), (3, 0));
        let s = report.latency.summary();
        assert_eq!(s.count, 3);
        assert!(about(s.min_us, 20.0) && about(s.max_us, 20.0), "{s:?}");
        assert_eq!(report.elapsed, Duration::from_nanos(2 * MS + 21_000));
    }

    #[test]
    fn a_short_text_line_is_a_wrong_reply_not_a_hang() {
        let mut conn = sent_one(&config(), Carrier::Stream);
        assert_eq!(feed(&mut conn, b"ERR", 8), Read::More);
        assert_eq!(feed(&mut conn, b"OR\n", 8), Read::Complete);
        assert!(
            conn.reply_received(START + 10),
            "text goes on after a wrong line"
        );
        let tally = conn.finish();
        assert_eq!((tally.requests, tally.mismatches), (1, 1));
    }

    #[test]
    fn a_stream_closed_mid_reply_is_explained() {
        let mut conn = sent_one(&config(), Carrier::Stream);
        assert_eq!(feed(&mut conn, b"AAAA", 8), Read::More);
        assert_eq!(conn.reply_bytes(0), Read::Failed);
        let failure = conn.finish().failure.unwrap();
        assert_eq!(failure.failure, Failure::ClosedMidReply("AAAA".into()));
        assert!(
            failure.to_string().starts_with("connection 1: "),
            "{failure}"
        );
    }

    #[test]
    fn a_wrong_frame_stops_a_framed_stream() {
        let config = LoadConfig {
            framed: true,
            ..config()
        };
        let (_, mut conn) = started(&config, Carrier::Stream);
        conn.turn(START);
        let request = conn.request().to_vec();
        conn.sent(START);
        // Framing needs the header first, then exactly the payload.
        let reply = answer(&request);
        assert_eq!(feed(&mut conn, &reply[..HEADER_LEN - 1], 64), Read::More);
        assert_eq!(
            feed(&mut conn, &reply[HEADER_LEN - 1..], 64),
            Read::Complete
        );
        assert!(conn.reply_received(START + 5));

        conn.turn(START + MS);
        conn.request();
        conn.sent(START + MS);
        let error = Frame::error(1, START + MS, "busy").to_bytes().unwrap();
        assert_eq!(feed(&mut conn, &error, 3), Read::Complete);
        assert!(
            !conn.reply_received(START + MS + 5),
            "the stream is not trusted"
        );
        let tally = conn.finish();
        assert_eq!(tally.mismatches, 1);
        assert!(
            matches!(tally.failure.unwrap().failure, Failure::WrongReply(e) if e.contains("busy"))
        );

        let (_, mut conn) = started(&config, Carrier::Stream);
        conn.turn(START);
        conn.request();
        assert_eq!(
            feed(&mut conn, &[0u8; HEADER_LEN], 64),
            Read::Failed,
            "garbage"
        );
    }

    #[test]
    fn an_open_loop_counts_from_the_intended_send_time() {
        let config = LoadConfig {
            rate: Some(1000.0),
            ..config()
        };
        let (timeline, mut conn) = started(&config, Carrier::Stream);
        // Request 0 is due at START; the client only gets to it 5 ms late.
        assert_eq!(conn.turn(START), Turn::At(START));
        let reply = answer(conn.request());
        conn.sent(START + 5 * MS);
        feed(&mut conn, &reply, 64);
        conn.reply_received(START + 5 * MS + 20_000);
        // Request 1 was due at START + 1 ms, whenever we ask.
        assert_eq!(conn.turn(START + 6 * MS), Turn::At(START + MS));
        let report = timeline.report(vec![Ok(conn.finish())], START + 6 * MS);
        let (corrected, uncorrected) = (report.latency.summary(), report.uncorrected.summary());
        assert!(about(corrected.max_us, 5_020.0), "{corrected:?}");
        assert!(about(uncorrected.max_us, 20.0), "{uncorrected:?}");
    }

    #[test]
    fn warm_up_requests_are_sent_but_not_recorded() {
        let config = LoadConfig {
            warmup: Duration::from_millis(10),
            stop: Stop::Count(1),
            ..config()
        };
        let (timeline, mut conn) = started(&config, Carrier::Stream);
        for now in [START, START + 5 * MS, START + 10 * MS] {
            assert_eq!(conn.turn(now), Turn::Now);
            let reply = answer(conn.request());
            conn.sent(now);
            feed(&mut conn, &reply, 64);
            conn.reply_received(now + 1_000);
        }
        assert_eq!(conn.turn(START + 11 * MS), Turn::Stop);
        let report = timeline.report(vec![Ok(conn.finish())], START + 11 * MS);
        assert_eq!((report.warmup_requests, report.requests), (2, 1));
        assert_eq!(report.latency.count(), 1);
    }

    #[test]
    fn an_open_loop_behind_schedule_gives_up_and_counts_the_unsent() {
        let config = LoadConfig {
            rate: Some(1000.0),
            stop: Stop::Duration(Duration::from_millis(100)),
            ..config()
        };
        let (_, mut conn) = started(&config, Carrier::Stream);
        assert_eq!(conn.turn(START), Turn::At(START));
        conn.request();
        // The reply took until long after the end and the grace (50 ms).
        assert_eq!(conn.turn(START + 151 * MS + 1), Turn::Stop);
        assert_eq!(conn.turn(START + 151 * MS + 2), Turn::Stop);
        assert_eq!(
            conn.finish().unsent,
            99,
            "100 scheduled, 1 sent, counted once"
        );
    }

    #[test]
    fn udp_tells_lost_late_duplicate_and_garbage_apart() {
        let (timeline, mut conn) = started(&config(), Carrier::Datagrams);
        let deliver = |conn: &mut LoadConnection, bytes: &[u8], at: u64| {
            conn.datagram_space()[..bytes.len()].copy_from_slice(bytes);
            conn.datagram_received(bytes.len(), at)
        };
        // Request 0 is answered: once, then a copy turns up later.
        conn.turn(START);
        let reply0 = answer(conn.request());
        conn.sent(START);
        assert_eq!(
            deliver(&mut conn, &reply0, START + 10_000),
            Datagram::Answer
        );
        // Request 1: no reply within the timeout: lost.
        conn.turn(START + MS);
        let reply1 = answer(conn.request());
        conn.sent(START + MS);
        assert_eq!(
            conn.still_waiting(START + 2 * MS),
            Some(Duration::from_millis(49))
        );
        assert_eq!(conn.still_waiting(START + 51 * MS), None);
        // Request 2: first the late reply to 1, a copy of 0's, garbage, a
        // copy of 1's reply; then its own.
        conn.turn(START + 60 * MS);
        let reply2 = answer(conn.request());
        conn.sent(START + 60 * MS);
        for stray in [&reply1, &reply0, &b"???"[..], &reply1] {
            assert_eq!(deliver(&mut conn, stray, START + 61 * MS), Datagram::Stray);
        }
        assert_eq!(
            deliver(&mut conn, &reply2, START + 62 * MS),
            Datagram::Answer
        );
        assert_eq!(conn.turn(START + 63 * MS), Turn::Stop);
        let r = timeline.report(vec![Ok(conn.finish())], START + 63 * MS);
        assert_eq!((r.requests, r.lost, r.late, r.duplicates), (3, 1, 1, 2));
        assert_eq!((r.mismatches, r.latency.count()), (1, 2));
        assert!((r.loss_ratio() - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn udp_refusal_is_typed() {
        let mut conn = sent_one(&config(), Carrier::Datagrams);
        conn.send_failed(std::io::Error::from(ErrorKind::ConnectionRefused));
        let failure = conn.finish().failure.unwrap();
        assert_eq!(failure.failure, Failure::Refused);
        assert!(failure
            .to_string()
            .starts_with("socket 1: connection refused"));
    }

    #[test]
    fn a_socket_timeout_is_no_reply() {
        let (_, mut conn) = started(&config(), Carrier::Stream);
        conn.receive_failed(std::io::Error::from(ErrorKind::WouldBlock));
        conn.timed_out(); // only the first failure is kept
        let f = conn.finish().failure.unwrap();
        assert_eq!(f.failure, Failure::NoReply(Duration::from_millis(50)));
    }

    #[test]
    fn failed_and_crashed_connections_are_counted_once_each() {
        let config = LoadConfig {
            connections: 2,
            ..config()
        };
        let progress = Arc::new(LoadProgress::default());
        let timeline = Timeline::start(&config, START, &progress);
        let mut conn = LoadConnection::new(&config, 0, Carrier::Stream, progress);
        conn.begin(timeline.pacing(0));
        conn.timed_out();
        let crashed = ConnectionFailure {
            connection: 1,
            datagrams: false,
            failure: Failure::Crashed("thread"),
        };
        let r = timeline.report(vec![Ok(conn.finish()), Err(crashed)], START);
        assert_eq!(r.failed_connections, 2);
        assert_eq!(r.errors.len(), 2);
    }

    #[test]
    fn nothing_happens_before_begin() {
        let progress = Arc::new(LoadProgress::default());
        let mut conn = LoadConnection::new(&config(), 0, Carrier::Stream, progress);
        assert_eq!(conn.turn(START), Turn::Stop);
    }
}
