//! Handshake cost in round trips, measured per connection.
//!
//! For every connection we record
//!
//! * `t0`: just before connecting,
//! * `t1`: when the first echo reply has arrived,
//! * `rtt`: the median of a few more echo round trips on the *same*,
//!   now established connection.
//!
//! Then `handshake_rtts = (t1 − t0 − rtt) / rtt`: the time to the first
//! reply, minus the one round trip the echo itself needs, in units of this
//! connection's own round-trip time. The RTT is never taken from the
//! configured link delay, so the same code measures a real network.
//!
//! What theory predicts (and what the lecture claims, see CLAIMS.md):
//!
//! ```text
//!  tcp            1   SYN → SYN-ACK → (ACK + data)
//!  tls1.2         3   TCP 1 + ClientHello → ServerHello…Done → Finished → Finished
//!  tls1.2-resumed 2   TCP 1 + abbreviated handshake (session ticket): 1
//!  tls1.3         2   TCP 1 + ClientHello+KeyShare → ServerHello+KeyShare…Finished: 1
//!  tls1.3-resumed 2   resumption saves the certificate, not the round trip
//!  tls1.3-0rtt    1   only TCP's: the request rides with the ClientHello
//!  tls1.3-0rtt-tfo 0  TCP Fast Open puts even that in the SYN
//!  quic           1   transport and crypto handshakes in one round trip
//!  quic-0rtt      0   the request rides with the first packet
//!  udp            0   no handshake at all
//!  sctp           1   INIT → INIT-ACK (cookie) → COOKIE-ECHO + data → COOKIE-ACK + reply:
//!                     four chunks, but the data rides with the COOKIE-ECHO
//! ```

use crate::client::StreamClient;
use crate::transport::{quic, tls, Stream, Target};
use anyhow::Context;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One protocol variant of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Variant {
    #[serde(rename = "tcp")]
    Tcp,
    #[serde(rename = "tls1.2")]
    Tls12,
    #[serde(rename = "tls1.2-resumed")]
    Tls12Resumed,
    #[serde(rename = "tls1.3")]
    Tls13,
    #[serde(rename = "tls1.3-resumed")]
    Tls13Resumed,
    #[serde(rename = "tls1.3-0rtt")]
    Tls13ZeroRtt,
    #[serde(rename = "tls1.3-0rtt-tfo")]
    Tls13ZeroRttTfo,
    #[serde(rename = "quic")]
    Quic,
    #[serde(rename = "quic-0rtt")]
    QuicZeroRtt,
    #[serde(rename = "udp")]
    Udp,
    #[serde(rename = "sctp")]
    Sctp,
}

impl Variant {
    pub const ALL: [Variant; 11] = [
        Variant::Tcp,
        Variant::Tls12,
        Variant::Tls12Resumed,
        Variant::Tls13,
        Variant::Tls13Resumed,
        Variant::Tls13ZeroRtt,
        Variant::Tls13ZeroRttTfo,
        Variant::Quic,
        Variant::QuicZeroRtt,
        Variant::Udp,
        Variant::Sctp,
    ];

    /// The id used on the command line and in JSON.
    pub fn id(self) -> &'static str {
        match self {
            Variant::Tcp => "tcp",
            Variant::Tls12 => "tls1.2",
            Variant::Tls12Resumed => "tls1.2-resumed",
            Variant::Tls13 => "tls1.3",
            Variant::Tls13Resumed => "tls1.3-resumed",
            Variant::Tls13ZeroRtt => "tls1.3-0rtt",
            Variant::Tls13ZeroRttTfo => "tls1.3-0rtt-tfo",
            Variant::Quic => "quic",
            Variant::QuicZeroRtt => "quic-0rtt",
            Variant::Udp => "udp",
            Variant::Sctp => "sctp",
        }
    }

    /// Round trips spent before data, as theory (and the lecture) says.
    pub fn theory_rtts(self) -> f64 {
        match self {
            Variant::Tcp => 1.0,
            Variant::Tls12 => 3.0,
            Variant::Tls12Resumed => 2.0,
            Variant::Tls13 => 2.0,
            Variant::Tls13Resumed => 2.0,
            Variant::Tls13ZeroRtt => 1.0,
            Variant::Tls13ZeroRttTfo => 0.0,
            Variant::Quic => 1.0,
            Variant::QuicZeroRtt => 0.0,
            Variant::Udp => 0.0,
            // Two round trips of chunks; the first message is bundled with
            // the COOKIE-ECHO, so data waits for only the first.
            Variant::Sctp => 1.0,
        }
    }

    /// The claim from CLAIMS.md this variant tests, in a few words.
    pub fn claim(self) -> &'static str {
        match self {
            Variant::Tcp => "C1: 3-way handshake, 1 RTT",
            Variant::Tls12 => "C2: TCP 1 + TLS 2 = 3 RTT",
            Variant::Tls12Resumed => "abbreviated TLS 1.2 handshake: 1 + 1",
            Variant::Tls13 => "C3: TCP 1 + TLS 1.3 1 = 2 RTT",
            Variant::Tls13Resumed => "resumption alone saves no round trip",
            Variant::Tls13ZeroRtt => "C4: early data, only TCP's 1 RTT",
            Variant::Tls13ZeroRttTfo => "beyond the lecture: TFO + 0-RTT = 0",
            Variant::Quic => "C5: QUIC 1 RTT",
            Variant::QuicZeroRtt => "C5: QUIC 0-RTT to known servers",
            Variant::Udp => "C7: connectionless, no handshake",
            Variant::Sctp => "C12: 4-way, data rides with COOKIE-ECHO",
        }
    }

    pub fn from_id(id: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.id() == id)
    }
}

/// One measured connection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// `t1 − t0`: from just before connecting to the first echo reply.
    #[serde(serialize_with = "as_ms")]
    pub first_reply: Duration,
    /// This connection's round-trip time (median of echoes after the first).
    #[serde(serialize_with = "as_ms")]
    pub rtt: Duration,
    /// TCP's handshake (connect() returning), when there is one.
    #[serde(serialize_with = "opt_as_ms")]
    pub tcp_connect: Option<Duration>,
    /// The TLS or QUIC handshake, when there is one.
    #[serde(serialize_with = "opt_as_ms")]
    pub crypto_handshake: Option<Duration>,
    pub handshake_bytes_sent: Option<u64>,
    pub handshake_bytes_received: Option<u64>,
    pub resumed: Option<bool>,
    pub early_data_accepted: Option<bool>,
}

impl Sample {
    /// Round trips spent before data: `(t1 − t0 − rtt) / rtt`.
    pub fn handshake_rtts(&self) -> f64 {
        handshake_rtts(self.first_reply, self.rtt)
    }
}

/// `(first_reply − rtt) / rtt`, the heart of the comparison.
pub fn handshake_rtts(first_reply: Duration, rtt: Duration) -> f64 {
    let rtt = rtt.as_secs_f64();
    if rtt <= 0.0 {
        return f64::NAN;
    }
    (first_reply.as_secs_f64() - rtt) / rtt
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

fn opt_as_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1e3)),
        None => s.serialize_none(),
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

pub fn median_duration(values: &[Duration]) -> Option<Duration> {
    let secs: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    median(&secs).map(Duration::from_secs_f64)
}

/// How close a measurement must be to theory to "match": a quarter of a
/// round trip. Real links add jitter and processing time; a whole missing
/// or extra round trip is 4× this.
pub const MATCH_TOLERANCE_RTTS: f64 = 0.25;

/// Everything measured for one variant.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    pub protocol: Variant,
    pub claim: &'static str,
    pub theory_rtts: f64,
    /// Median over the runs.
    pub handshake_rtts: Option<f64>,
    pub handshake_rtts_min: Option<f64>,
    pub handshake_rtts_max: Option<f64>,
    #[serde(serialize_with = "opt_as_ms")]
    pub rtt: Option<Duration>,
    #[serde(serialize_with = "opt_as_ms")]
    pub tcp_connect: Option<Duration>,
    #[serde(serialize_with = "opt_as_ms")]
    pub crypto_handshake: Option<Duration>,
    #[serde(serialize_with = "opt_as_ms")]
    pub first_reply: Option<Duration>,
    pub handshake_bytes_sent: Option<u64>,
    pub handshake_bytes_received: Option<u64>,
    pub matches_theory: Option<bool>,
    /// Why the measurement differs from theory, or why there is none.
    pub note: Option<String>,
    pub samples: Vec<Sample>,
}

impl VariantResult {
    /// Summarizes the runs of one variant.
    pub fn from_samples(
        variant: Variant,
        samples: Vec<Sample>,
        note: Option<String>,
    ) -> VariantResult {
        let rtts: Vec<f64> = samples.iter().map(Sample::handshake_rtts).collect();
        let finite = || rtts.iter().copied().filter(|x| x.is_finite());
        let handshake = median(&rtts);
        let pick = |f: fn(&Sample) -> Option<Duration>| {
            let v: Vec<Duration> = samples.iter().filter_map(f).collect();
            median_duration(&v)
        };
        let pick_u64 = |f: fn(&Sample) -> Option<u64>| {
            let v: Vec<f64> = samples.iter().filter_map(f).map(|x| x as f64).collect();
            median(&v).map(|x| x.round() as u64)
        };
        let matches = handshake.map(|h| (h - variant.theory_rtts()).abs() <= MATCH_TOLERANCE_RTTS);
        let note = note.or_else(|| explain_difference(variant, &samples, handshake, matches));
        VariantResult {
            protocol: variant,
            claim: variant.claim(),
            theory_rtts: variant.theory_rtts(),
            handshake_rtts: handshake,
            handshake_rtts_min: finite().reduce(f64::min),
            handshake_rtts_max: finite().reduce(f64::max),
            rtt: pick(|s| Some(s.rtt)),
            tcp_connect: pick(|s| s.tcp_connect),
            crypto_handshake: pick(|s| s.crypto_handshake),
            first_reply: pick(|s| Some(s.first_reply)),
            handshake_bytes_sent: pick_u64(|s| s.handshake_bytes_sent),
            handshake_bytes_received: pick_u64(|s| s.handshake_bytes_received),
            matches_theory: matches,
            note,
            samples,
        }
    }

    /// A variant that could not be measured here, and why.
    pub fn unavailable(variant: Variant, why: String) -> VariantResult {
        VariantResult::from_samples(variant, Vec::new(), Some(why))
    }
}

/// A one-line reason when a measurement differs from theory.
fn explain_difference(
    variant: Variant,
    samples: &[Sample],
    measured: Option<f64>,
    matches: Option<bool>,
) -> Option<String> {
    if matches != Some(false) {
        return None;
    }
    let measured = measured?;
    let rejected_early = samples.iter().any(|s| s.early_data_accepted == Some(false));
    let not_resumed = samples.iter().any(|s| s.resumed == Some(false));
    Some(match variant {
        Variant::Tls13ZeroRtt | Variant::Tls13ZeroRttTfo | Variant::QuicZeroRtt if rejected_early => {
            "the server rejected early data on some runs, so those fell back to a full handshake".into()
        }
        Variant::Tls12Resumed | Variant::Tls13Resumed if not_resumed => {
            "some runs were not resumed (no valid ticket), so they did a full handshake".into()
        }
        _ if measured > variant.theory_rtts() => format!(
            "{:.1} RTT more than theory: on loopback or a lossy link, CPU time and retransmissions add up",
            measured - variant.theory_rtts()
        ),
        _ => format!(
            "{:.1} RTT less than theory: is the RTT estimate inflated (e.g. delayed ACKs)?",
            variant.theory_rtts() - measured
        ),
    })
}

/// What [`measure_variants`] reports as it goes, for a progress display.
#[derive(Debug, Clone, Copy)]
pub enum RunEvent {
    /// The warm-up of this variant starts.
    VariantStarted(Variant),
    /// One measured connection finished.
    ConnectionDone,
    /// A variant ended early: its remaining connections will not run.
    VariantSkipped { connections: usize },
}

/// Measures each variant in turn ([`measure_variant`]), telling `on_event`
/// how far it got.
pub async fn measure_variants(
    variants: &[Variant],
    endpoints: &Endpoints,
    runs: usize,
    timeout: Duration,
    mut on_event: impl FnMut(RunEvent),
) -> Vec<VariantResult> {
    let mut results = Vec::with_capacity(variants.len());
    for &variant in variants {
        on_event(RunEvent::VariantStarted(variant));
        let mut done = 0;
        let result = measure_variant(variant, endpoints, runs, timeout, || {
            done += 1;
            on_event(RunEvent::ConnectionDone);
        })
        .await;
        if done < runs {
            on_event(RunEvent::VariantSkipped {
                connections: runs - done,
            });
        }
        results.push(result);
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn handshake_rtts_subtracts_the_echo_round_trip() {
        // TCP at 100 ms: connect (1 RTT) + echo (1 RTT) = 200 ms → 1 RTT of handshake.
        assert_eq!(handshake_rtts(ms(200), ms(100)), 1.0);
        // QUIC 0-RTT: the first reply takes one RTT → 0.
        assert_eq!(handshake_rtts(ms(100), ms(100)), 0.0);
        assert!(handshake_rtts(ms(1), Duration::ZERO).is_nan());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn summary_matches_theory_within_tolerance() {
        let sample = |first, rtt| Sample {
            first_reply: ms(first),
            rtt: ms(rtt),
            ..Sample::default()
        };
        let r = VariantResult::from_samples(
            Variant::Tls12,
            vec![sample(401, 100), sample(398, 100), sample(420, 100)],
            None,
        );
        assert!((r.handshake_rtts.unwrap() - 3.01).abs() < 1e-9);
        assert!((r.handshake_rtts_min.unwrap() - 2.98).abs() < 1e-9);
        assert_eq!(r.matches_theory, Some(true));
        assert!(r.note.is_none());
        let r = VariantResult::from_samples(Variant::Tcp, vec![sample(300, 100)], None);
        assert_eq!(r.matches_theory, Some(false));
        assert!(r.note.unwrap().contains("1.0 RTT more"));
    }

    #[test]
    fn ids_round_trip() {
        for v in Variant::ALL {
            assert_eq!(Variant::from_id(v.id()), Some(v));
        }
    }
}

/// Where the servers of a comparison listen, and how to trust them.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    pub tls: SocketAddr,
    pub quic: SocketAddr,
    /// SCTP over UDP (RFC 6951).
    pub sctp: SocketAddr,
    /// The name to verify the server certificate against.
    pub server_name: String,
    /// Which certificates to believe (proto's local CA by default).
    pub trust: tls::Trust,
}

impl Endpoints {
    /// The addresses of bound listeners, as the clients will dial them.
    pub fn from_addresses(
        addresses: &[(&'static str, std::net::SocketAddr)],
        server_name: &str,
    ) -> anyhow::Result<Endpoints> {
        let get = |name: &str| {
            addresses
                .iter()
                .find(|(s, _)| *s == name)
                .map(|(_, a)| *a)
                .with_context(|| format!("no {name} listener"))
        };
        Ok(Endpoints {
            tcp: get("tcp")?,
            udp: get("udp")?,
            tls: get("tls")?,
            quic: get("quic")?,
            sctp: get("sctp")?,
            server_name: server_name.to_string(),
            trust: tls::Trust::from_options(None, false)?,
        })
    }
}

/// Echoes sent after the first reply to measure the connection's RTT.
/// They also keep the connection open for a few round trips, long enough
/// for TLS 1.3 / QUIC session tickets to arrive for the next connection.
pub const RTT_PROBES: usize = 5;

/// The message every probe sends.
const PROBE: &[u8] = b"proto compare probe";

/// The connection's own RTT: the median of [`RTT_PROBES`] echo round trips
/// over the established connection.
pub async fn stream_rtt<S>(client: &mut StreamClient<S>) -> anyhow::Result<Duration>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut rtts = Vec::with_capacity(RTT_PROBES);
    for _ in 0..RTT_PROBES {
        let sent = Instant::now();
        client.exchange_line(PROBE).await?;
        rtts.push(sent.elapsed());
    }
    median_duration(&rtts).ok_or_else(|| anyhow::anyhow!("no RTT probe answered"))
}

/// Client state that must outlive one connection: the session store that
/// carries tickets from one connection to the next (resumption, 0-RTT),
/// and QUIC's endpoint.
pub enum ClientState {
    Plain,
    Tls(tls::ClientTlsOptions),
    Quic(Box<quic::ClientQuicOptions>),
}

impl ClientState {
    /// The state `variant` needs, fresh (no tickets yet).
    pub fn new(variant: Variant, endpoints: &Endpoints) -> anyhow::Result<ClientState> {
        let tls_opts = |version, resume: bool, early_data: bool| -> anyhow::Result<ClientState> {
            let mut opts = tls::ClientTlsOptions::new(&endpoints.trust, Some(version))?;
            if !resume {
                // A full handshake every time: forget sessions.
                let mut config = (*opts.config).clone();
                config.resumption = rustls::client::Resumption::disabled();
                opts.config = std::sync::Arc::new(config);
            }
            opts.early_data = early_data;
            opts.server_name = Some(endpoints.server_name.clone());
            Ok(ClientState::Tls(opts))
        };
        use tls::TlsVersion::{V1_2, V1_3};
        match variant {
            Variant::Tcp | Variant::Udp | Variant::Sctp => Ok(ClientState::Plain),
            Variant::Tls12 => tls_opts(V1_2, false, false),
            Variant::Tls12Resumed => tls_opts(V1_2, true, false),
            Variant::Tls13 => tls_opts(V1_3, false, false),
            Variant::Tls13Resumed => tls_opts(V1_3, true, false),
            Variant::Tls13ZeroRtt | Variant::Tls13ZeroRttTfo => tls_opts(V1_3, true, true),
            Variant::Quic | Variant::QuicZeroRtt => {
                let mut opts = quic::ClientQuicOptions::new(&endpoints.trust)?;
                opts.zero_rtt = variant == Variant::QuicZeroRtt;
                opts.server_name = Some(endpoints.server_name.clone());
                Ok(ClientState::Quic(Box::new(opts)))
            }
        }
    }
}

/// One TCP connection: connect, first echo, then the RTT probes.
pub async fn probe_tcp(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Sample> {
    let t0 = Instant::now();
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("TCP connect to {addr} timed out"))??;
    let tcp_connect = t0.elapsed();
    tcp.set_nodelay(true)?;
    let mut client = StreamClient::new(Stream::Tcp(tcp), timeout);
    client.exchange_line(PROBE).await?;
    let first_reply = t0.elapsed();
    let rtt = stream_rtt(&mut client).await?;
    client.finish().await;
    Ok(Sample {
        first_reply,
        rtt,
        tcp_connect: Some(tcp_connect),
        ..Sample::default()
    })
}

/// One UDP "connection": there is no handshake, the first datagram is data.
pub async fn probe_udp(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Sample> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(addr).await?;
    let mut client = crate::client::DatagramClient::new(socket, timeout);
    let t0 = Instant::now();
    client.exchange(PROBE).await?;
    let first_reply = t0.elapsed();
    let mut rtts = Vec::with_capacity(RTT_PROBES);
    for _ in 0..RTT_PROBES {
        let sent = Instant::now();
        client.exchange(PROBE).await?;
        rtts.push(sent.elapsed());
    }
    Ok(Sample {
        first_reply,
        rtt: median_duration(&rtts).unwrap_or_default(),
        ..Sample::default()
    })
}

/// One SCTP association: INIT, INIT-ACK, then the first message bundled
/// with the COOKIE-ECHO; the RTT probes follow on the same stream.
pub async fn probe_sctp(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Sample> {
    use crate::transport::sctp;
    let target = Target {
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    let t0 = Instant::now();
    let (association, info) =
        sctp::connect(&target, &sctp::SctpOptions::default(), timeout).await?;
    let mut stream = association.stream(0, false);
    stream.exchange(PROBE, timeout).await?;
    let first_reply = t0.elapsed();
    let mut rtts = Vec::with_capacity(RTT_PROBES);
    for _ in 0..RTT_PROBES {
        let sent = Instant::now();
        stream.exchange(PROBE, timeout).await?;
        rtts.push(sent.elapsed());
    }
    drop(stream);
    association.close(timeout).await;
    Ok(Sample {
        first_reply,
        rtt: median_duration(&rtts).unwrap_or_default(),
        handshake_bytes_sent: info.handshake_bytes_sent,
        handshake_bytes_received: info.handshake_bytes_received,
        ..Sample::default()
    })
}

/// One TLS or QUIC connection: handshake (maybe resumed, maybe with the
/// request as early data), first echo, then the RTT probes.
async fn probe_encrypted(
    state: &ClientState,
    addr: SocketAddr,
    timeout: Duration,
    tfo: bool,
) -> anyhow::Result<Sample> {
    let target = Target {
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    let t0 = Instant::now();
    let (stream, mut info) = match state {
        ClientState::Tls(opts) if tfo => tls::connect_fast_open(&target, opts, timeout).await?,
        ClientState::Tls(opts) => tls::connect(&target, opts, timeout).await?,
        ClientState::Quic(opts) => quic::connect(&target, opts, timeout).await?,
        ClientState::Plain => anyhow::bail!("not an encrypted transport"),
    };
    let mut client = StreamClient::new(stream, timeout);
    client.exchange_line(PROBE).await?;
    let first_reply = t0.elapsed();
    // After 0-RTT, only now is it known whether the server took the data.
    client.get_ref().negotiated(&mut info);
    let rtt = stream_rtt(&mut client).await?;
    let stream = client.finish_and_drain(timeout).await;
    if let Stream::Quic(q) = &stream {
        q.close();
    }
    let us = |x: Option<f64>| x.map(|us| Duration::from_secs_f64(us / 1e6));
    Ok(Sample {
        first_reply,
        rtt,
        tcp_connect: us(info.tcp_connect_us),
        crypto_handshake: us(info.handshake_us),
        handshake_bytes_sent: info.handshake_bytes_sent,
        handshake_bytes_received: info.handshake_bytes_received,
        resumed: info.resumed,
        early_data_accepted: info.early_data_accepted,
    })
}

/// Measures one connection of `variant`.
pub async fn probe(
    variant: Variant,
    state: &ClientState,
    endpoints: &Endpoints,
    timeout: Duration,
) -> anyhow::Result<Sample> {
    match variant {
        Variant::Tcp => probe_tcp(endpoints.tcp, timeout).await,
        Variant::Udp => probe_udp(endpoints.udp, timeout).await,
        Variant::Sctp => probe_sctp(endpoints.sctp, timeout).await,
        Variant::Quic | Variant::QuicZeroRtt => {
            probe_encrypted(state, endpoints.quic, timeout, false).await
        }
        Variant::Tls13ZeroRttTfo => probe_encrypted(state, endpoints.tls, timeout, true).await,
        _ => probe_encrypted(state, endpoints.tls, timeout, false).await,
    }
}

/// Runs a warm-up connection (excluded: it fills caches and fetches the
/// session ticket the resumed variants need) and then `runs` measured
/// connections of `variant`.
pub async fn measure_variant(
    variant: Variant,
    endpoints: &Endpoints,
    runs: usize,
    timeout: Duration,
    mut on_run: impl FnMut(),
) -> VariantResult {
    let state = match ClientState::new(variant, endpoints) {
        Ok(state) => state,
        Err(e) => return VariantResult::unavailable(variant, format!("{e:#}")),
    };
    if let Err(e) = probe(variant, &state, endpoints, timeout).await {
        return VariantResult::unavailable(variant, format!("warm-up failed: {e:#}"));
    }
    let mut samples = Vec::with_capacity(runs);
    let mut failures = Vec::new();
    for _ in 0..runs {
        match probe(variant, &state, endpoints, timeout).await {
            Ok(sample) => samples.push(sample),
            Err(e) => failures.push(format!("{e:#}")),
        }
        on_run();
    }
    let note = match failures.first() {
        Some(first) if samples.is_empty() => Some(format!("every run failed: {first}")),
        Some(first) => Some(format!("{} of {runs} runs failed: {first}", failures.len())),
        None => None,
    };
    VariantResult::from_samples(variant, samples, note)
}
