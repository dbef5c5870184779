//! Head-of-line blocking: does one lost packet stall only its own stream?
//!
//! Several logical streams each send a small request at a fixed pace (open
//! loop), staggered so that each packet carries one stream's data:
//!
//! * **TCP**: all streams share one connection, as HTTP/2 does. TCP delivers
//!   one ordered byte stream: when a segment is lost, every byte behind it
//!   waits in the receiver's buffer until the retransmission arrives, so
//!   the requests of *all* streams sent meanwhile are delayed too.
//! * **QUIC**: one connection, one QUIC stream per logical stream. QUIC
//!   orders bytes per stream only: a lost packet delays its own stream's
//!   data, and the other streams' packets are delivered at once.
//! * **SCTP**: one association, one SCTP stream per logical stream. The
//!   TSN orders the association (for acknowledgement), but delivery is
//!   ordered per stream (the SSN), so like QUIC a loss stalls only its own
//!   stream — a property SCTP had in 2000, long before QUIC.
//!
//! Every request carries its intended send time in the frame's timestamp,
//! which the server echoes, so a reply's latency is counted from when the
//! request *should* have left, whatever happened in between.

use crate::transport::{quic, tls, Stream, Target};
use crate::units::monotonic_nanos;
use crate::wire::{Frame, FrameCodec, FrameCodecError, FrameType};
use bytes::BytesMut;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct HolConfig {
    /// Logical streams.
    pub streams: usize,
    /// Each stream sends one request this often.
    pub interval: Duration,
    /// How long the streams send.
    pub duration: Duration,
    /// Give up on replies this long after the last request.
    pub drain: Duration,
}

/// One reply: which stream, when its request was due (from the start of
/// the schedule), and how long after that the reply came.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub stream: usize,
    pub sent_at: Duration,
    pub latency: Duration,
}

impl Reply {
    /// When the reply arrived, from the start of the schedule.
    pub fn arrived_at(&self) -> Duration {
        self.sent_at + self.latency
    }
}

/// The request schedule: stream `k`'s `n`-th request is due at
/// `n·interval + k·interval/streams` after the start. Its frame id is
/// `n·streams + k`, so replies tell which stream they belong to.
fn due(config: &HolConfig, n: u64, k: usize) -> Duration {
    config.interval * n as u32 + config.interval * k as u32 / config.streams as u32
}

/// Sends the requests of `streams` on one byte stream, on schedule, and
/// records every reply by the intended send time it carries.
async fn drive<S>(
    io: S,
    streams: Vec<usize>,
    config: HolConfig,
    start_ns: u64,
) -> anyhow::Result<Vec<Reply>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let rounds = (config.duration.as_nanos() / config.interval.as_nanos().max(1)) as u64;
    let expected = rounds as usize * streams.len();
    let total_streams = config.streams as u64;
    let send = async {
        let start =
            tokio::time::Instant::now() - Duration::from_nanos(monotonic_nanos() - start_ns);
        let mut buf = Vec::with_capacity(64);
        for n in 0..rounds {
            for &k in &streams {
                let at = due(&config, n, k);
                tokio::time::sleep_until(start + at).await;
                let id = (n * total_streams + k as u64) as u32;
                buf.clear();
                Frame::request(id, start_ns + at.as_nanos() as u64, &b"hol probe"[..])
                    .encode(&mut buf)?;
                writer.write_all(&buf).await?;
                writer.flush().await?;
            }
        }
        anyhow::Ok(())
    };
    let receive = async {
        let mut input = BytesMut::with_capacity(4096);
        let mut replies = Vec::with_capacity(expected);
        while replies.len() < expected {
            match FrameCodec.decode(&mut input) {
                Ok(Some(frame)) if frame.frame_type == FrameType::Response => {
                    let latency =
                        Duration::from_nanos(monotonic_nanos().saturating_sub(frame.timestamp));
                    let stream = (u64::from(frame.id) % total_streams) as usize;
                    let sent_at = Duration::from_nanos(frame.timestamp.saturating_sub(start_ns));
                    replies.push(Reply {
                        stream,
                        sent_at,
                        latency,
                    });
                    continue;
                }
                Ok(Some(frame)) => anyhow::bail!(
                    "the server answered with a {} frame: {}",
                    frame.frame_type,
                    String::from_utf8_lossy(&frame.payload)
                ),
                Ok(None) => {}
                Err(FrameCodecError::Frame(e)) => anyhow::bail!("malformed reply: {e}"),
                Err(FrameCodecError::Io(e)) => return Err(e.into()),
            }
            if reader.read_buf(&mut input).await? == 0 {
                anyhow::bail!("the server closed the connection");
            }
        }
        anyhow::Ok(replies)
    };
    tokio::pin!(receive);
    let replies = tokio::select! {
        sent = send => {
            sent?;
            match tokio::time::timeout(config.drain, &mut receive).await {
                Ok(replies) => replies?,
                Err(_) => anyhow::bail!("replies still missing {:?} after the last request", config.drain),
            }
        }
        early = &mut receive => early?,
    };
    let _ = writer.shutdown().await;
    Ok(replies)
}

/// All streams multiplexed on one TCP connection.
pub async fn over_tcp(addr: SocketAddr, config: HolConfig) -> anyhow::Result<Vec<Reply>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let start = monotonic_nanos();
    drive(tcp, (0..config.streams).collect(), config, start).await
}

/// One QUIC stream per logical stream, all on one QUIC connection.
pub async fn over_quic(
    addr: SocketAddr,
    trust: &tls::Trust,
    server_name: &str,
    config: HolConfig,
    limit: Duration,
) -> anyhow::Result<Vec<Reply>> {
    let mut opts = quic::ClientQuicOptions::new(trust)?;
    opts.server_name = Some(server_name.to_string());
    let target = Target {
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    let (first, _) = quic::connect(&target, &opts, limit).await?;
    let Stream::Quic(first) = first else {
        anyhow::bail!("quic::connect returned a non-QUIC stream");
    };
    let connection = first.connection.clone();
    let start = monotonic_nanos();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(drive(Stream::Quic(first), vec![0], config, start));
    for k in 1..config.streams {
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| anyhow::anyhow!("cannot open QUIC stream {k}: {e}"))?;
        tasks.spawn(drive(tokio::io::join(recv, send), vec![k], config, start));
    }
    let mut replies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        replies.extend(done??);
    }
    connection.close(0u32.into(), b"done");
    Ok(replies)
}

/// One SCTP stream per logical stream, all in one association.
pub async fn over_sctp(
    addr: SocketAddr,
    config: HolConfig,
    limit: Duration,
) -> anyhow::Result<Vec<Reply>> {
    use crate::transport::sctp;
    let target = Target {
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    let (association, _) = sctp::connect(&target, &sctp::SctpOptions::default(), limit).await?;
    // The handshake's first round trip is done; one message completes it
    // (the COOKIE-ECHO rides along), so the schedule starts on a live association.
    let mut first = association.stream(0, false);
    first.exchange(b"hol warm-up", limit).await?;
    let start = monotonic_nanos();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(drive(first, vec![0], config, start));
    for k in 1..config.streams {
        let stream = association.stream(k as u16, false);
        tasks.spawn(drive(stream, vec![k], config, start));
    }
    let mut replies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        replies.extend(done??);
    }
    association.close(limit).await;
    Ok(replies)
}

/// A transport's replies, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct HolSummary {
    pub transport: &'static str,
    pub requests: usize,
    /// The fastest reply: the path's round trip with nothing in the way.
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Replies slower than [`STALL_FACTOR`] × the fastest one.
    pub stalled: usize,
    /// How many distinct streams had at least one stalled reply, over the
    /// whole run (with enough losses, every stream's turn comes on QUIC too:
    /// see the per-event counts for what one loss does).
    pub streams_stalled: usize,
    /// Loss events seen by the receiver: groups of stalled replies released
    /// together (see [`loss_events`]).
    pub loss_events: usize,
    /// Per loss event, how many streams it stalled: the median and the
    /// largest. TCP: every stream that sent while the lost segment was
    /// missing; QUIC and SCTP: the stream whose packet was lost.
    pub streams_per_loss_median: Option<f64>,
    pub streams_per_loss_max: Option<usize>,
    /// `events_by_streams[k]`: loss events that stalled `k + 1` streams.
    pub events_by_streams: Vec<usize>,
    /// Packets the link dropped while this transport ran (both directions).
    pub packets_lost: u64,
    /// `stalled / packets_lost`: requests held up per lost packet. About 1
    /// when a loss stalls only its own stream; far more when it stalls all.
    pub stalled_per_loss: Option<f64>,
}

/// A reply counts as stalled when it took this many times the fastest one.
pub const STALL_FACTOR: f64 = 1.5;

/// Stalled replies that arrive within this much of each other, or of
/// [`RELEASE_FRACTION`] of the path's round trip if that is more, were
/// released by the same retransmission.
pub const RELEASE_WINDOW: Duration = Duration::from_millis(1);
pub const RELEASE_FRACTION: f64 = 0.05;

/// Groups stalled replies into loss events, as the receiver saw them: when
/// a lost packet's retransmission arrives, everything that waited for it
/// is delivered at once, so the replies it held up come back together.
/// Sorted by arrival, a gap of more than `window` between two stalled
/// replies starts a new event. Returns, per event, the distinct streams.
///
/// ```text
/// TCP, one loss:  s3 s4 s5 s6 s7 s0 s1 s2 s3 … all released together → 8 streams
/// QUIC, one loss: s3 (and s3's next request, queued behind it)        → 1 stream
/// ```
///
/// Two losses whose retransmissions arrive together count as one event.
pub fn loss_events(stalled: &[&Reply], window: Duration) -> Vec<Vec<usize>> {
    let mut by_arrival: Vec<&Reply> = stalled.to_vec();
    by_arrival.sort_by_key(|r| r.arrived_at());
    let mut events: Vec<Vec<usize>> = Vec::new();
    let mut last: Option<Duration> = None;
    for r in by_arrival {
        let arrived = r.arrived_at();
        match (last, events.last_mut()) {
            (Some(prev), Some(event)) if arrived.saturating_sub(prev) <= window => {
                if !event.contains(&r.stream) {
                    event.push(r.stream);
                }
            }
            _ => events.push(vec![r.stream]),
        }
        last = Some(arrived);
    }
    events
}

pub fn summarize(transport: &'static str, replies: &[Reply], packets_lost: u64) -> HolSummary {
    let mut ms: Vec<f64> = replies
        .iter()
        .map(|r| r.latency.as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| -> f64 {
        if ms.is_empty() {
            return f64::NAN;
        }
        let i = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1;
        ms[i]
    };
    let min = ms.first().copied().unwrap_or(f64::NAN);
    let stalled: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.latency.as_secs_f64() * 1e3 > STALL_FACTOR * min)
        .collect();
    let mut streams: Vec<usize> = stalled.iter().map(|r| r.stream).collect();
    streams.sort_unstable();
    streams.dedup();
    let fastest = replies.iter().map(|r| r.latency).min().unwrap_or_default();
    let window = RELEASE_WINDOW.max(fastest.mul_f64(RELEASE_FRACTION));
    let events = loss_events(&stalled, window);
    let sizes: Vec<f64> = events.iter().map(|e| e.len() as f64).collect();
    let largest = events.iter().map(Vec::len).max();
    let mut events_by_streams = vec![0; largest.unwrap_or(0)];
    for e in &events {
        events_by_streams[e.len() - 1] += 1;
    }
    HolSummary {
        transport,
        requests: replies.len(),
        min_ms: min,
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
        stalled: stalled.len(),
        streams_stalled: streams.len(),
        loss_events: events.len(),
        streams_per_loss_median: crate::measure::handshake::median(&sizes),
        streams_per_loss_max: largest,
        events_by_streams,
        packets_lost,
        stalled_per_loss: (packets_lost > 0).then(|| stalled.len() as f64 / packets_lost as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_staggers_the_streams() {
        let c = HolConfig {
            streams: 4,
            interval: Duration::from_millis(20),
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(1),
        };
        assert_eq!(due(&c, 0, 0), Duration::ZERO);
        assert_eq!(due(&c, 0, 1), Duration::from_millis(5));
        assert_eq!(due(&c, 2, 3), Duration::from_millis(55));
    }

    #[test]
    fn stalls_are_counted_against_the_fastest_reply() {
        let r = |stream, ms| Reply {
            stream,
            sent_at: Duration::ZERO,
            latency: Duration::from_millis(ms),
        };
        let replies = [r(0, 50), r(1, 51), r(2, 300), r(3, 260), r(3, 52)];
        let s = summarize("tcp", &replies, 1);
        assert_eq!((s.stalled, s.streams_stalled), (2, 2));
        assert_eq!(s.stalled_per_loss, Some(2.0));
        assert_eq!(s.max_ms, 300.0);
        assert_eq!(s.min_ms, 50.0);
    }

    /// 4 streams, one request each per 20 ms (staggered 5 ms), 50 ms RTT.
    fn schedule(stall: impl Fn(usize, u64) -> u64) -> Vec<Reply> {
        (0..40u64)
            .flat_map(|n| (0..4).map(move |k| (n, k)))
            .map(|(n, k)| Reply {
                stream: k,
                sent_at: Duration::from_millis(n * 20 + k as u64 * 5),
                latency: Duration::from_millis(50 + stall(k, n)),
            })
            .collect()
    }

    #[test]
    fn a_tcp_loss_stalls_every_stream_until_one_release() {
        // The segment of stream 1's request 10 (sent at 205 ms) is lost and
        // resent at 420 ms: everything sent meanwhile is delivered then.
        let replies = schedule(|k, n| {
            let sent = n * 20 + k as u64 * 5;
            if (205..420).contains(&sent) {
                420 - sent
            } else {
                0
            }
        });
        let s = summarize("tcp", &replies, 1);
        assert_eq!(s.loss_events, 1, "{s:?}");
        assert_eq!(s.streams_per_loss_median, Some(4.0));
        assert_eq!(s.events_by_streams, [0, 0, 0, 1]);
    }

    #[test]
    fn a_quic_loss_stalls_its_own_stream() {
        // Stream 2 loses two packets, far apart; stream 0 one. Each stream's
        // next request queues behind its lost one (released together).
        let replies = schedule(|k, n| match (k, n) {
            (2, 5) => 60,
            (2, 6) => 40,
            (2, 30) => 60,
            (0, 17) => 70,
            _ => 0,
        });
        let s = summarize("quic", &replies, 3);
        assert_eq!(s.loss_events, 3, "{s:?}");
        assert_eq!(s.streams_per_loss_median, Some(1.0));
        assert_eq!(s.streams_per_loss_max, Some(1));
        assert_eq!(s.events_by_streams, [3]);
        assert_eq!(s.streams_stalled, 2, "over the run, two streams had a loss");
    }
}
