//! One connection's echo session over any byte stream (TCP, TLS, a QUIC
//! stream), whatever the transport underneath.
//!
//! The first byte decides the dialect: [`MAGIC`] (0xF8, which can never
//! start UTF-8 text) means a framed client, anything else a person or a
//! script sending text lines (`nc`). Both share one port.
//!
//! The loop is "read what is there, answer every complete message in it,
//! write all the answers in one go": pipelined requests cost one write, and
//! a slow reader only ever slows down its own connection.

use super::{ServerContext, ServerStats};
use crate::echo::uppercase_into;
use crate::wire::{Frame, FrameCodec, FrameCodecError, FrameError, FrameType, MAGIC, MAX_PAYLOAD};
use bytes::{Buf, BytesMut};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

/// How a session ended, for the connection's log line.
#[derive(Debug, Default, Clone)]
pub struct SessionReport {
    pub mode: Option<Mode>,
    pub messages: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Why the connection ended, when it was not a normal close.
    pub ending: Option<String>,
}

impl SessionReport {
    /// "3 lines in, 18 bytes in, 18 bytes out (idle for 5m)", for log lines.
    pub fn describe(&self) -> String {
        format!(
            "{} {} in, {} bytes in, {} bytes out{}",
            self.messages,
            match self.mode {
                Some(Mode::Framed) => "frames",
                _ => "lines",
            },
            self.bytes_in,
            self.bytes_out,
            self.ending
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Lines,
    Framed,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Lines => "lines",
            Mode::Framed => "framed",
        }
    }
}

/// What the dialect decoder wants after a batch of input.
pub(crate) enum Next {
    /// Keep reading.
    Continue,
    /// Write what was produced, then close with this reason.
    Close(String),
    /// Write what was produced (the error), then close: the message in
    /// hand missed its deadline (the reason is in the report already).
    TooSlow,
}

/// Turns complete messages from `input` into replies in `output`. One per
/// dialect; both are sans-IO.
pub(crate) trait Dialect {
    fn answer(&mut self, input: &mut BytesMut, output: &mut Vec<u8>, messages: &mut u64) -> Next;

    /// At the peer's half-close, after every complete message has been
    /// answered: deal with the incomplete rest of `input`, if any.
    fn answer_remainder(
        &mut self,
        input: &mut BytesMut,
        output: &mut Vec<u8>,
        messages: &mut u64,
    ) -> Next;

    /// Tells the peer why the server closes the connection now (the
    /// dialect's error line or frame).
    fn refuse(&self, output: &mut Vec<u8>, why: &str);

    /// The peer half-closed: answer everything left in `input`.
    fn answer_last(
        &mut self,
        input: &mut BytesMut,
        output: &mut Vec<u8>,
        messages: &mut u64,
    ) -> Next {
        match self.answer(input, output, messages) {
            Next::Continue => self.answer_remainder(input, output, messages),
            close => close,
        }
    }
}

/// `\n`-terminated text lines; a line over the limit closes the connection.
///
/// Lines are found with `memchr` (a vectorised byte search) and answered
/// straight from the input buffer: no allocation per line, and a long line
/// that arrives in pieces is searched only once.
struct Lines {
    max_line: usize,
    /// Bytes at the start of `input` already known to hold no `\n`.
    scanned: usize,
}

impl Lines {
    fn new(max_line: usize) -> Lines {
        Lines {
            max_line,
            scanned: 0,
        }
    }

    fn too_long(&self, output: &mut Vec<u8>) -> Next {
        output.extend_from_slice(
            format!("ERROR line too long (limit {} bytes)\n", self.max_line).as_bytes(),
        );
        Next::Close(format!("line longer than {} bytes", self.max_line))
    }

    fn answer_line(line: &[u8], output: &mut Vec<u8>, messages: &mut u64) {
        uppercase_into(line, output);
        output.push(b'\n');
        *messages += 1;
    }
}

impl Dialect for Lines {
    fn answer(&mut self, input: &mut BytesMut, output: &mut Vec<u8>, messages: &mut u64) -> Next {
        let mut start = 0; // first byte of the line being looked at
        let next = loop {
            let rest = &input[start..];
            // A line may be max_line bytes plus its '\n': look no further.
            let window = rest.len().min(self.max_line.saturating_add(1));
            match memchr::memchr(b'\n', &rest[self.scanned.min(window)..window]) {
                Some(pos) => {
                    let end = self.scanned.min(window) + pos;
                    Self::answer_line(&rest[..end], output, messages);
                    start += end + 1;
                    self.scanned = 0;
                }
                None if rest.len() > self.max_line => break self.too_long(output),
                None => {
                    self.scanned = rest.len();
                    break Next::Continue;
                }
            }
        };
        input.advance(start);
        next
    }

    fn answer_remainder(
        &mut self,
        input: &mut BytesMut,
        output: &mut Vec<u8>,
        messages: &mut u64,
    ) -> Next {
        // A last line without '\n' before the half-close is still a line
        // (answer() has already refused it if it is too long).
        if !input.is_empty() {
            Self::answer_line(input, output, messages);
            input.clear();
            self.scanned = 0;
        }
        Next::Continue
    }

    fn refuse(&self, output: &mut Vec<u8>, why: &str) {
        output.extend_from_slice(format!("ERROR {why}\n").as_bytes());
    }
}

/// proto frames (`protocols/frame.md`); a malformed frame gets an error
/// frame, then the connection is closed (after garbage, the stream's frame
/// boundaries can no longer be trusted).
struct Framed;

impl Framed {
    fn refuse(output: &mut Vec<u8>, id: u32, timestamp: u64, why: &str) -> Next {
        // An error frame's payload is short text: encoding cannot fail.
        let _ = Frame::error(id, timestamp, why).encode(output);
        Next::Close(why.to_string())
    }
}

/// The reply to one request frame: the response, or an error frame if the
/// request is not something a server answers.
pub fn answer_frame(request: &Frame, output: &mut Vec<u8>) -> Result<(), String> {
    if request.frame_type != FrameType::Request {
        let why = format!(
            "expected a request frame, got a {} frame",
            request.frame_type
        );
        let _ = Frame::error(request.id, request.timestamp, &why).encode(output);
        return Err(why);
    }
    let mut upper = Vec::with_capacity(request.payload.len());
    uppercase_into(&request.payload, &mut upper);
    if upper.len() > MAX_PAYLOAD {
        // Unicode uppercasing can grow text (ß → SS); never send a frame
        // our own decoder would refuse.
        let why = format!(
            "the uppercased payload is {} bytes, over the maximum {MAX_PAYLOAD}",
            upper.len()
        );
        let _ = Frame::error(request.id, request.timestamp, &why).encode(output);
        return Err(why);
    }
    let _ = request.response_to(upper).encode(output);
    Ok(())
}

impl Dialect for Framed {
    fn answer(&mut self, input: &mut BytesMut, output: &mut Vec<u8>, messages: &mut u64) -> Next {
        loop {
            match FrameCodec.decode(input) {
                Ok(Some(request)) => {
                    *messages += 1;
                    if let Err(why) = answer_frame(&request, output) {
                        return Next::Close(why);
                    }
                }
                Ok(None) => return Next::Continue,
                Err(FrameCodecError::Frame(e)) => {
                    return Self::refuse(output, 0, 0, &e.to_string())
                }
                Err(FrameCodecError::Io(e)) => return Next::Close(e.to_string()),
            }
        }
    }

    fn answer_remainder(
        &mut self,
        input: &mut BytesMut,
        output: &mut Vec<u8>,
        _messages: &mut u64,
    ) -> Next {
        if input.is_empty() {
            return Next::Continue;
        }
        let err =
            crate::wire::frame::decode_datagram(input)
                .err()
                .unwrap_or(FrameError::Truncated {
                    needed: 0,
                    available: input.len(),
                });
        Self::refuse(output, 0, 0, &err.to_string())
    }

    fn refuse(&self, output: &mut Vec<u8>, why: &str) {
        let _ = Frame::error(0, 0, why).encode(output);
    }
}

/// The dialect of a connection, from its first byte: the frame magic, or text.
pub(crate) fn choose_dialect(
    input: &[u8],
    ctx: &ServerContext,
    report: &mut SessionReport,
) -> Box<dyn Dialect + Send> {
    if input.first() == Some(&MAGIC) {
        report.mode = Some(Mode::Framed);
        Box::new(Framed)
    } else {
        report.mode = Some(Mode::Lines);
        Box::new(Lines::new(ctx.config.max_line))
    }
}

/// Answers what `input` holds (everything, when the peer has half-closed),
/// choosing the dialect from the first byte the first time, and publishes
/// the message count. Shared by the async and the blocking session loops.
pub(crate) fn answer_input(
    dialect: &mut Option<Box<dyn Dialect + Send>>,
    input: &mut BytesMut,
    output: &mut Vec<u8>,
    peer_done: bool,
    ctx: &ServerContext,
    report: &mut SessionReport,
) -> Next {
    let d = dialect.get_or_insert_with(|| choose_dialect(input, ctx, report));
    let before = report.messages;
    let next = if peer_done {
        d.answer_last(input, output, &mut report.messages)
    } else {
        d.answer(input, output, &mut report.messages)
    };
    if report.messages != before {
        ctx.stats
            .messages
            .fetch_add(report.messages - before, Relaxed);
    }
    next
}

/// The deadline of the message being received: the defence against
/// "slowloris", a client that sends a byte now and then so that it is
/// never idle, yet never finishes a message, and holds its connection (and
/// the server's thread, descriptor and buffer) for ever.
///
/// A message (a line or a frame) must arrive whole within
/// `message_timeout` of its first byte, plus one second for every
/// `min_rate` bytes received (as Apache's mod_reqtimeout does): a large
/// message on a slow but honest link keeps going, a drip does not. The idle
/// timeout is separate: it closes connections with nothing in hand.
#[derive(Debug, Clone)]
pub(crate) struct MessageClock {
    timeout: Duration,
    min_rate: u64,
    /// When the first byte of the incomplete message arrived.
    started: Option<std::time::Instant>,
    /// Bytes of the incomplete message received so far.
    bytes: u64,
}

impl MessageClock {
    pub(crate) fn new(config: &super::ServerConfig) -> MessageClock {
        MessageClock {
            timeout: config.message_timeout,
            min_rate: config.min_rate.max(1),
            started: None,
            bytes: 0,
        }
    }

    /// After a batch was answered: `received` bytes had arrived at `now`,
    /// `completed` says whether a message was finished, and `pending` bytes
    /// of an incomplete message are left in the input.
    pub(crate) fn update(
        &mut self,
        now: std::time::Instant,
        received: usize,
        completed: bool,
        pending: usize,
    ) {
        if pending == 0 {
            self.started = None;
        } else if completed || self.started.is_none() {
            // A new message began in this batch.
            self.started = Some(now);
            self.bytes = pending as u64;
        } else {
            self.bytes += received as u64;
        }
    }

    /// When the incomplete message must be complete; `None` with none in hand.
    pub(crate) fn deadline(&self) -> Option<std::time::Instant> {
        let allowance = Duration::from_millis(self.bytes.saturating_mul(1000) / self.min_rate);
        self.started?
            .checked_add(self.timeout.saturating_add(allowance))
    }

    /// Whether the message in hand is late at `now`.
    pub(crate) fn expired(&self, now: std::time::Instant) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }

    /// Why the connection is closed, for the client and the log.
    pub(crate) fn describe(&self) -> String {
        format!(
            "message not complete within {} of its first byte ({} bytes so far; allowed: --message-timeout plus 1s per {} bytes, --min-rate)",
            crate::units::format_duration(self.timeout),
            self.bytes,
            self.min_rate
        )
    }
}

/// Ends a session whose message did not arrive in time: the dialect's
/// error goes into `output`, the reason into the report.
pub(crate) fn message_too_slow(
    dialect: &Option<Box<dyn Dialect + Send>>,
    clock: &MessageClock,
    output: &mut Vec<u8>,
    ctx: &ServerContext,
    report: &mut SessionReport,
) {
    let why = clock.describe();
    if let Some(d) = dialect {
        d.refuse(output, &why);
    }
    ctx.stats.message_timeouts.fetch_add(1, Relaxed);
    report.ending = Some(why);
}

/// [`answer_input`], then the message deadline: `received` bytes had just
/// arrived; a message in hand that is now late ends the session with the
/// dialect's error ([`Next::TooSlow`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn answer_in_time(
    dialect: &mut Option<Box<dyn Dialect + Send>>,
    input: &mut BytesMut,
    output: &mut Vec<u8>,
    peer_done: bool,
    received: usize,
    clock: &mut MessageClock,
    ctx: &ServerContext,
    report: &mut SessionReport,
) -> Next {
    let answered = report.messages;
    let next = answer_input(dialect, input, output, peer_done, ctx, report);
    if peer_done {
        return next;
    }
    let now = std::time::Instant::now();
    clock.update(now, received, report.messages != answered, input.len());
    if matches!(next, Next::Continue) && clock.expired(now) {
        message_too_slow(dialect, clock, output, ctx, report);
        return Next::TooSlow;
    }
    next
}

/// After the answers went out: whether the session goes on.
pub(crate) fn goes_on(
    next: Next,
    peer_done: bool,
    ctx: &ServerContext,
    report: &mut SessionReport,
) -> bool {
    match next {
        Next::Continue => !peer_done,
        Next::Close(reason) => {
            ctx.stats.protocol_errors.fetch_add(1, Relaxed);
            report.ending = Some(reason);
            false
        }
        Next::TooSlow => false,
    }
}

/// The answer step alone, without any socket: feeds `chunks` (as reads
/// might return them) to a fresh session with the default limits and
/// `max_line`, then the peer's half-close if `eof`; returns every byte the
/// server would write and why it would close, if it would. What the
/// fuzzer drives (`fuzz/fuzz_targets/session_answer.rs`).
pub fn answer_chunks(chunks: &[&[u8]], eof: bool, max_line: usize) -> (Vec<u8>, Option<String>) {
    let ctx = ServerContext {
        config: super::ServerConfig {
            max_line,
            quiet: true,
            ..super::ServerConfig::default()
        },
        stats: Default::default(),
        shutdown: Default::default(),
        limiter: std::sync::Arc::new(super::limits::ConnectionLimiter::new(1, 1)),
    };
    let mut report = SessionReport::default();
    let mut dialect = None;
    let mut input = BytesMut::new();
    let mut written = Vec::new();
    let mut output = Vec::new();
    let last = chunks.len();
    for (i, chunk) in chunks.iter().enumerate() {
        let peer_done = eof && i + 1 == last;
        if chunk.is_empty() && !peer_done {
            continue; // a read never returns nothing but at the end
        }
        input.extend_from_slice(chunk);
        let next = answer_input(
            &mut dialect,
            &mut input,
            &mut output,
            peer_done,
            &ctx,
            &mut report,
        );
        written.append(&mut output);
        if let Next::Close(reason) = next {
            return (written, Some(reason));
        }
    }
    (written, None)
}

/// Serves one connection until the peer closes, misbehaves, idles out, or
/// the server shuts down. Never panics on anything the peer sends.
///
/// This is the server's hot path: per round trip it costs one `read`, one
/// `write` and the runtime's wait for the socket, nothing else. The idle
/// timer and the shutdown signal are set up once per connection (not once
/// per read), and statistics are added up locally and published per batch.
pub async fn serve_stream<S>(mut stream: S, ctx: &ServerContext) -> SessionReport
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut report = SessionReport::default();
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = Vec::with_capacity(16 * 1024);
    let mut dialect: Option<Box<dyn Dialect + Send>> = None;
    let idle = ctx.config.idle_timeout;
    let mut peer_done = false;
    // One timer for the whole connection: when it fires, it checks when
    // the peer last sent something and either re-arms or ends the session.
    let mut last_input = tokio::time::Instant::now();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    let shutdown = ctx.shutdown.cancelled();
    tokio::pin!(shutdown);
    // The incomplete message's deadline: a timer armed only while part of
    // a message is in hand (never in a request/response exchange whose
    // requests arrive whole).
    let mut clock = MessageClock::new(&ctx.config);
    let message_timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(message_timer);
    let mut timer_set_for = None;

    loop {
        let mut received = 0;
        if !peer_done {
            let message_deadline = clock.deadline();
            if message_deadline != timer_set_for {
                if let Some(d) = message_deadline {
                    message_timer
                        .as_mut()
                        .reset(tokio::time::Instant::from_std(d));
                }
                timer_set_for = message_deadline;
            }
            if input.capacity() - input.len() < 4096 {
                input.reserve(16 * 1024);
            }
            // On shutdown, a connection with a partial message in hand may
            // finish it (until the server's grace period runs out); an idle
            // one stops now.
            let wait_for_shutdown = input.is_empty();
            let outcome = tokio::select! {
                biased;
                read = stream.read_buf(&mut input) => match read {
                    Ok(0) => ReadOutcome::Eof,
                    Ok(n) => {
                        last_input = tokio::time::Instant::now();
                        report.bytes_in += n as u64;
                        ctx.stats.bytes_in.fetch_add(n as u64, Relaxed);
                        ReadOutcome::Data(n)
                    }
                    Err(e) => ReadOutcome::Stop(Some(format!("read failed: {e}"))),
                },
                () = &mut idle_timer => {
                    let deadline = last_input + idle;
                    if tokio::time::Instant::now() < deadline {
                        idle_timer.as_mut().reset(deadline);
                        continue;
                    }
                    ReadOutcome::Stop(Some(format!("idle for {}", crate::units::format_duration(idle))))
                }
                () = &mut message_timer, if message_deadline.is_some() => ReadOutcome::TooSlow,
                () = &mut shutdown, if wait_for_shutdown => {
                    ReadOutcome::Stop(Some("server shutting down".into()))
                }
            };
            match outcome {
                ReadOutcome::Data(n) => received = n,
                ReadOutcome::Eof => peer_done = true,
                ReadOutcome::TooSlow => {
                    message_too_slow(&dialect, &clock, &mut output, ctx, &mut report);
                    let _ = write_all(&mut stream, &output, Duration::from_secs(1)).await;
                    break;
                }
                ReadOutcome::Stop(reason) => {
                    report.ending = reason;
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
            if let Err(e) = write_all(&mut stream, &output, idle).await {
                report.ending = Some(format!("write failed: {e}"));
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
    // Tell the peer we are done (TCP FIN, TLS close_notify, QUIC FIN);
    // ignore failures: the peer may already be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    report
}

enum ReadOutcome {
    /// This many bytes arrived.
    Data(usize),
    Eof,
    /// The message in hand missed its deadline ([`MessageClock`]).
    TooSlow,
    /// Stop serving; `Some(reason)` when it was not the peer's choice.
    Stop(Option<String>),
}

/// Writes all of `bytes`. The reply almost always fits into the socket
/// buffer at once, so that is tried first without setting up a timer; only
/// a peer that does not read makes us wait, and then at most `limit`.
async fn write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    use futures_util::FutureExt;
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]).now_or_never() {
            Some(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Some(Ok(n)) => written += n,
            Some(Err(e)) => return Err(e),
            None => break, // the socket buffer is full: wait below
        }
    }
    let rest = &bytes[written..];
    if rest.is_empty() {
        // TCP's flush does nothing; TLS's may have records to push out.
        if let Some(result) = stream.flush().now_or_never() {
            return result;
        }
    }
    // A peer that never reads would otherwise hold this task forever.
    match tokio::time::timeout(limit, async {
        stream.write_all(rest).await?;
        stream.flush().await
    })
    .await
    {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "peer stopped reading",
        )),
    }
}

impl ServerStats {
    pub(crate) fn record_session(&self, report: &SessionReport) {
        if report.ending.is_some() {
            self.abnormal_closes.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_lines(input: &[u8], eof: bool) -> (Vec<u8>, u64, bool) {
        let mut d = Lines::new(16);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        let mut n = 0;
        let next = if eof {
            d.answer_last(&mut buf, &mut out, &mut n)
        } else {
            d.answer(&mut buf, &mut out, &mut n)
        };
        (out, n, matches!(next, Next::Close(_)))
    }

    #[test]
    fn lines_are_answered_in_order_and_partial_lines_wait() {
        let (out, n, closed) = run_lines(b"one\ntwo\nthr", false);
        assert_eq!(out, b"ONE\nTWO\n");
        assert_eq!((n, closed), (2, false));
    }

    #[test]
    fn last_line_without_newline_is_answered_at_eof() {
        let (out, n, _) = run_lines(b"one\nlast", true);
        assert_eq!(out, b"ONE\nLAST\n");
        assert_eq!(n, 2);
    }

    #[test]
    fn empty_lines_are_echoed_as_empty_lines() {
        let (out, n, _) = run_lines(b"\n\n", false);
        assert_eq!(out, b"\n\n");
        assert_eq!(n, 2);
    }

    #[test]
    fn too_long_line_gets_an_error_and_closes() {
        let (out, _, closed) = run_lines(&[b'a'; 40], false);
        assert_eq!(out, b"ERROR line too long (limit 16 bytes)\n");
        assert!(closed);
    }

    #[test]
    fn framed_request_gets_response_with_same_id_and_timestamp() {
        let mut buf = BytesMut::new();
        Frame::request(9, 1234, &b"abc"[..])
            .encode(&mut buf)
            .unwrap();
        let mut out = Vec::new();
        let mut n = 0;
        assert!(matches!(
            Framed.answer(&mut buf, &mut out, &mut n),
            Next::Continue
        ));
        let reply = crate::wire::frame::decode_datagram(&out).unwrap();
        assert_eq!(
            reply,
            Frame::request(9, 1234, &b"abc"[..]).response_to(&b"ABC"[..])
        );
    }

    #[test]
    fn malformed_frame_gets_an_error_frame_and_closes() {
        let mut buf = BytesMut::from(&[MAGIC, 0x17][..]);
        let mut out = Vec::new();
        let mut n = 0;
        assert!(matches!(
            Framed.answer(&mut buf, &mut out, &mut n),
            Next::Close(_)
        ));
        let reply = crate::wire::frame::decode_datagram(&out).unwrap();
        assert_eq!(reply.frame_type, FrameType::Error);
        assert!(String::from_utf8_lossy(&reply.payload).contains("unknown frame type 7"));
    }

    #[test]
    fn uppercase_growth_past_the_maximum_is_refused() {
        // U+0149 (2 bytes in UTF-8) uppercases to "ʼN" (3 bytes).
        let request = Frame::request(1, 2, "ŉ".repeat(MAX_PAYLOAD / 2).into_bytes());
        let mut out = Vec::new();
        assert!(answer_frame(&request, &mut out).is_err());
        let reply = crate::wire::frame::decode_datagram(&out).unwrap();
        assert_eq!(reply.frame_type, FrameType::Error);
    }
}
