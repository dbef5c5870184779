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
//!  quic-resumed   1   a ticket replaces the certificate, not the round trip
//!  quic-0rtt      0   the request rides with the first packet
//!  udp            0   no handshake at all
//!  sctp           1   INIT → INIT-ACK (cookie) → COOKIE-ECHO + data → COOKIE-ACK + reply:
//!                     four chunks, but the data rides with the COOKIE-ECHO
//! ```

use crate::client::StreamClient;
use crate::transport::{quic, tls, Stream, Target, Transport};
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
    #[serde(rename = "quic-resumed")]
    QuicResumed,
    #[serde(rename = "quic-0rtt")]
    QuicZeroRtt,
    #[serde(rename = "udp")]
    Udp,
    #[serde(rename = "sctp")]
    Sctp,
}

impl Variant {
    pub const ALL: [Variant; 12] = [
        Variant::Tcp,
        Variant::Tls12,
        Variant::Tls12Resumed,
        Variant::Tls13,
        Variant::Tls13Resumed,
        Variant::Tls13ZeroRtt,
        Variant::Tls13ZeroRttTfo,
        Variant::Quic,
        Variant::QuicResumed,
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
            Variant::QuicResumed => "quic-resumed",
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
            Variant::QuicResumed => 1.0,
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
            Variant::QuicResumed => "resumption alone saves no round trip",
            Variant::QuicZeroRtt => "C5: QUIC 0-RTT to known servers",
            Variant::Udp => "C7: connectionless, no handshake",
            Variant::Sctp => "C12: 4-way, data rides with COOKIE-ECHO",
        }
    }

    /// Whether this variant's TLS/QUIC handshakes should resume a session
    /// (a ticket's pre-shared key, no certificate) or be full ones (the
    /// server sends its certificate); `None` without TLS.
    pub fn resumes(self) -> Option<bool> {
        match self {
            Variant::Tcp | Variant::Udp | Variant::Sctp => None,
            Variant::Tls12 | Variant::Tls13 | Variant::Quic => Some(false),
            Variant::Tls12Resumed
            | Variant::Tls13Resumed
            | Variant::Tls13ZeroRtt
            | Variant::Tls13ZeroRttTfo
            | Variant::QuicResumed
            | Variant::QuicZeroRtt => Some(true),
        }
    }

    pub fn from_id(id: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.id() == id)
    }
}

/// One measured connection. Times are in JSON as milliseconds (`_ms`),
/// rounded to the microsecond.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// `t1 − t0`: from just before connecting to the first echo reply.
    #[serde(rename = "first_reply_ms", serialize_with = "as_ms")]
    pub first_reply: Duration,
    /// This connection's round-trip time (median of echoes after the first).
    #[serde(rename = "rtt_ms", serialize_with = "as_ms")]
    pub rtt: Duration,
    /// TCP's handshake (connect() returning), when there is one.
    #[serde(rename = "tcp_connect_ms", serialize_with = "opt_as_ms")]
    pub tcp_connect: Option<Duration>,
    /// The TLS or QUIC handshake, when there is one.
    #[serde(rename = "crypto_handshake_ms", serialize_with = "opt_as_ms")]
    pub crypto_handshake: Option<Duration>,
    pub handshake_bytes_sent: Option<u64>,
    pub handshake_bytes_received: Option<u64>,
    pub resumed: Option<bool>,
    /// The server sent its certificate (a full handshake); `false` when a
    /// ticket's pre-shared key stood in for it.
    pub certificate_received: Option<bool>,
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

use crate::units::json::{duration_as_ms as as_ms, opt_duration_as_ms as opt_as_ms};

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

/// A run counts as *inflated* when its handshake took at least this many
/// round trips more than theory: four times the match tolerance, and the
/// least a lost flight costs (its retransmission waits for a timer or for
/// later packets' acknowledgements).
pub const INFLATED_RTTS: f64 = 1.0;

/// Runs whose handshakes took [`INFLATED_RTTS`] or more beyond theory,
/// grouped by the retransmission timer their extra time points to.
#[derive(Debug, Clone, Serialize)]
pub struct Inflation {
    pub runs: usize,
    /// Time beyond theory, the median of these runs.
    #[serde(rename = "excess_median_ms", serialize_with = "as_ms")]
    pub excess_median: Duration,
    #[serde(rename = "excess_max_ms", serialize_with = "as_ms")]
    pub excess_max: Duration,
    /// The timer whose value the extra time matches, in words.
    pub timer: &'static str,
    /// Whether that is a retransmission timer (`false`: the extra time is
    /// too short for one, so CPU time or queueing it is).
    pub retransmission: bool,
}

/// Names the timer behind `excess`, the time a run took beyond theory,
/// from the protocol and the size of the excess. Each value is the
/// protocol's own: TCP resends a lost SYN (or the server its SYN-ACK) after
/// its initial RTO of 1 s (RFC 6298 §2.1, doubling on each retry); later
/// segments wait for a tail-loss probe (~2 RTT) or the RTO (≥ 200 ms on
/// Linux). QUIC has no SYN: its probe timeout (RFC 9002 §6.2) starts from a
/// 333 ms initial RTT estimate, PTO = 333 ms + 4 × 333/2 ms ≈ 1 s until an
/// RTT has been measured, then ≈ RTT + 4 × RTT variation.
pub fn likely_timer(variant: Variant, excess: Duration) -> (&'static str, bool) {
    let secs = excess.as_secs_f64();
    if secs < 0.010 {
        return (
            "too short for any retransmission timer: CPU time or queueing",
            false,
        );
    }
    match variant {
        Variant::Udp => ("no timer: UDP resends nothing, so this was not a loss", false),
        Variant::Sctp => ("SCTP's retransmission timer (T1-init or T3-rtx)", true),
        Variant::Quic | Variant::QuicResumed | Variant::QuicZeroRtt if secs >= 0.9 => (
            "QUIC's first probe timeout (PTO ≈ 1 s: 3 × the 333 ms initial RTT estimate, before any RTT is measured)",
            true,
        ),
        Variant::Quic | Variant::QuicResumed | Variant::QuicZeroRtt => (
            "QUIC's probe timeout (PTO ≈ RTT + 4 × RTT variation)",
            true,
        ),
        _ if secs >= 2.8 => (
            "TCP's initial retransmission timeout, backed off (1 s, then 2 s, 4 s …: the SYN or SYN-ACK was lost again)",
            true,
        ),
        _ if secs >= 0.9 => (
            "TCP's initial retransmission timeout (a lost SYN or SYN-ACK is resent after 1 s)",
            true,
        ),
        _ if secs >= 0.15 => (
            "TCP's retransmission timeout (≥ 200 ms) or tail-loss probe for a lost handshake segment",
            true,
        ),
        _ => (
            "TCP's fast retransmit or tail-loss probe (about 2 RTT) for a lost segment",
            true,
        ),
    }
}

/// The inflated runs of `samples`, grouped by [`likely_timer`], largest
/// group first.
fn inflation(variant: Variant, samples: &[Sample]) -> Vec<Inflation> {
    let mut groups: Vec<(&'static str, bool, Vec<Duration>)> = Vec::new();
    for s in samples {
        let extra = s.handshake_rtts() - variant.theory_rtts();
        if extra.is_nan() || extra < INFLATED_RTTS {
            continue;
        }
        let excess = s.rtt.mul_f64(extra);
        let (timer, retransmission) = likely_timer(variant, excess);
        match groups.iter_mut().find(|g| g.0 == timer) {
            Some(g) => g.2.push(excess),
            None => groups.push((timer, retransmission, vec![excess])),
        }
    }
    let mut out: Vec<Inflation> = groups
        .into_iter()
        .map(|(timer, retransmission, excess)| Inflation {
            runs: excess.len(),
            excess_median: median_duration(&excess).unwrap_or_default(),
            excess_max: excess.iter().copied().max().unwrap_or_default(),
            timer,
            retransmission,
        })
        .collect();
    out.sort_by_key(|i| std::cmp::Reverse(i.runs));
    out
}

/// The `q` quantile (nearest rank) of the finite values.
fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Everything measured for one variant. Times are in JSON as milliseconds
/// (`_ms`), rounded to the microsecond.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    pub protocol: Variant,
    pub claim: &'static str,
    pub theory_rtts: f64,
    /// Median over the runs.
    pub handshake_rtts: Option<f64>,
    pub handshake_rtts_min: Option<f64>,
    /// 90th percentile (nearest rank): the spread a lossy link adds.
    pub handshake_rtts_p90: Option<f64>,
    pub handshake_rtts_max: Option<f64>,
    #[serde(rename = "rtt_ms", serialize_with = "opt_as_ms")]
    pub rtt: Option<Duration>,
    #[serde(rename = "tcp_connect_ms", serialize_with = "opt_as_ms")]
    pub tcp_connect: Option<Duration>,
    #[serde(rename = "crypto_handshake_ms", serialize_with = "opt_as_ms")]
    pub crypto_handshake: Option<Duration>,
    #[serde(rename = "first_reply_ms", serialize_with = "opt_as_ms")]
    pub first_reply: Option<Duration>,
    pub handshake_bytes_sent: Option<u64>,
    pub handshake_bytes_received: Option<u64>,
    /// Runs that resumed a session (no certificate sent); `None` without TLS.
    pub resumed_runs: Option<usize>,
    /// Whether the median matches theory (and every run had the handshake
    /// kind, full or resumed, this variant is about).
    pub matches_theory: Option<bool>,
    /// Runs that took [`INFLATED_RTTS`] or more beyond theory, by timer.
    pub inflated: Vec<Inflation>,
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
        let resumed_runs = variant
            .resumes()
            .map(|_| samples.iter().filter(|s| s.resumed == Some(true)).count());
        let wrong_kind = wrong_handshake_kind(variant, &samples);
        let matches = handshake.map(|h| {
            (h - variant.theory_rtts()).abs() <= MATCH_TOLERANCE_RTTS && wrong_kind.is_none()
        });
        let inflated = inflation(variant, &samples);
        let note = note
            .or(wrong_kind)
            .or_else(|| explain_difference(variant, &samples, handshake, matches, &inflated));
        VariantResult {
            protocol: variant,
            claim: variant.claim(),
            theory_rtts: variant.theory_rtts(),
            handshake_rtts: handshake,
            handshake_rtts_min: finite().reduce(f64::min),
            handshake_rtts_p90: quantile(&rtts, 0.9),
            handshake_rtts_max: finite().reduce(f64::max),
            rtt: pick(|s| Some(s.rtt)),
            tcp_connect: pick(|s| s.tcp_connect),
            crypto_handshake: pick(|s| s.crypto_handshake),
            first_reply: pick(|s| Some(s.first_reply)),
            handshake_bytes_sent: pick_u64(|s| s.handshake_bytes_sent),
            handshake_bytes_received: pick_u64(|s| s.handshake_bytes_received),
            resumed_runs,
            matches_theory: matches,
            inflated,
            note,
            samples,
        }
    }

    /// A variant that could not be measured here, and why.
    pub fn unavailable(variant: Variant, why: String) -> VariantResult {
        VariantResult::from_samples(variant, Vec::new(), Some(why))
    }

    /// Inflated runs whose extra time a retransmission timer explains.
    pub fn runs_inflated_by_retransmission(&self) -> usize {
        self.inflated
            .iter()
            .filter(|i| i.retransmission)
            .map(|i| i.runs)
            .sum()
    }
}

/// Runs that were not the handshake this variant measures — resumed where a
/// full handshake (certificate sent) is meant, or the other way round —
/// said in a sentence; `None` when every run was the right kind.
fn wrong_handshake_kind(variant: Variant, samples: &[Sample]) -> Option<String> {
    let resumes = variant.resumes()?;
    // A resumed run sends no certificate; a full one does. Either fact
    // contradicting the variant is enough.
    let wrong = samples
        .iter()
        .filter(|s| s.resumed == Some(!resumes) || s.certificate_received == Some(resumes))
        .count();
    (wrong > 0).then(|| {
        if resumes {
            format!(
                "{wrong} of {} runs were full handshakes (certificate sent), not resumed: no valid ticket",
                samples.len()
            )
        } else {
            format!(
                "{wrong} of {} runs resumed a session (no certificate sent), not the full handshake this row measures",
                samples.len()
            )
        }
    })
}

/// A one-line reason when a measurement differs from theory.
fn explain_difference(
    variant: Variant,
    samples: &[Sample],
    measured: Option<f64>,
    matches: Option<bool>,
    inflated: &[Inflation],
) -> Option<String> {
    if matches != Some(false) {
        return None;
    }
    let measured = measured?;
    let rejected_early = samples.iter().any(|s| s.early_data_accepted == Some(false));
    let inflated_runs: usize = inflated
        .iter()
        .filter(|i| i.retransmission)
        .map(|i| i.runs)
        .sum();
    Some(match variant {
        Variant::Tls13ZeroRtt | Variant::Tls13ZeroRttTfo | Variant::QuicZeroRtt if rejected_early => {
            "the server rejected early data on some runs, so those fell back to a full handshake".into()
        }
        _ if measured > variant.theory_rtts() && 2 * inflated_runs >= samples.len() => format!(
            "{:.1} RTT more than theory: {inflated_runs} of {} runs waited for a retransmission timer",
            measured - variant.theory_rtts(),
            samples.len()
        ),
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

    fn sample(first: u64, rtt: u64) -> Sample {
        Sample {
            first_reply: ms(first),
            rtt: ms(rtt),
            ..Sample::default()
        }
    }

    #[test]
    fn losses_show_in_the_spread_and_name_their_timer() {
        // TLS 1.3 at 100 ms: 20 runs at theory (2 RTT + the echo's 1), two
        // whose SYN was lost (+1 s), one whose ClientHello waited for an RTO.
        let mut runs: Vec<Sample> = (0..17).map(|_| sample(301, 100)).collect();
        runs.extend([sample(1302, 100), sample(1310, 100), sample(560, 100)]);
        let r = VariantResult::from_samples(Variant::Tls13, runs, None);
        assert_eq!(r.matches_theory, Some(true), "the median is theory's");
        assert!((r.handshake_rtts_max.unwrap() - 12.1).abs() < 1e-9);
        assert!(
            (r.handshake_rtts_p90.unwrap() - 4.6).abs() < 1e-9,
            "18th of 20"
        );
        assert_eq!(r.inflated.len(), 2, "{:?}", r.inflated);
        let syn = &r.inflated[0];
        assert_eq!(syn.runs, 2);
        assert!(syn.timer.contains("TCP's initial retransmission timeout"));
        assert!(syn.excess_max >= ms(1005) && syn.excess_median >= ms(1000));
        assert!(r.inflated[1].timer.contains("≥ 200 ms"));
        assert_eq!(r.runs_inflated_by_retransmission(), 3);
        // QUIC's extra second is its first PTO, not a SYN.
        let mut runs: Vec<Sample> = (0..9).map(|_| sample(201, 100)).collect();
        runs.push(sample(1199, 100));
        let r = VariantResult::from_samples(Variant::Quic, runs, None);
        assert_eq!(r.inflated[0].runs, 1);
        assert!(r.inflated[0].timer.contains("QUIC's first probe timeout"));
        // On loopback an RTT or two of CPU time is no retransmission.
        let us = |x| Duration::from_micros(x);
        let loopback = Sample {
            first_reply: us(400),
            rtt: us(50),
            ..Sample::default()
        };
        let r = VariantResult::from_samples(Variant::Tcp, vec![loopback], None);
        assert!(!r.inflated[0].retransmission);
        assert_eq!(r.runs_inflated_by_retransmission(), 0);
        // Nothing inflated without losses.
        let r = VariantResult::from_samples(Variant::Tcp, vec![sample(200, 100)], None);
        assert!(r.inflated.is_empty());
    }

    #[test]
    fn a_full_handshake_row_refuses_resumed_runs() {
        let run = |resumed, certificate| Sample {
            resumed: Some(resumed),
            certificate_received: Some(certificate),
            ..sample(201, 100)
        };
        let r = VariantResult::from_samples(Variant::Quic, vec![run(true, false); 3], None);
        assert_eq!(
            r.matches_theory,
            Some(false),
            "timing matches, kind does not"
        );
        assert!(r.note.unwrap().contains("3 of 3 runs resumed a session"));
        assert_eq!(r.resumed_runs, Some(3));
        let r = VariantResult::from_samples(Variant::Quic, vec![run(false, true); 3], None);
        assert_eq!(r.matches_theory, Some(true));
        assert_eq!(r.resumed_runs, Some(0));
        let r = VariantResult::from_samples(Variant::QuicResumed, vec![run(false, true)], None);
        assert!(r
            .note
            .unwrap()
            .contains("full handshakes (certificate sent)"));
        // A certificate on a run that says it resumed is a contradiction too.
        let r = VariantResult::from_samples(Variant::Tls13Resumed, vec![run(true, true)], None);
        assert_eq!(r.matches_theory, Some(false));
        let r = VariantResult::from_samples(Variant::Tcp, vec![sample(200, 100)], None);
        assert_eq!(r.resumed_runs, None);
    }

    #[test]
    fn theory_counts_per_variant() {
        let theory: Vec<(&str, f64)> = Variant::ALL
            .iter()
            .map(|v| (v.id(), v.theory_rtts()))
            .collect();
        assert_eq!(
            theory,
            [
                ("tcp", 1.0),
                ("tls1.2", 3.0),
                ("tls1.2-resumed", 2.0),
                ("tls1.3", 2.0),
                ("tls1.3-resumed", 2.0),
                ("tls1.3-0rtt", 1.0),
                ("tls1.3-0rtt-tfo", 0.0),
                ("quic", 1.0),
                ("quic-resumed", 1.0),
                ("quic-0rtt", 0.0),
                ("udp", 0.0),
                ("sctp", 1.0),
            ]
        );
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
        addresses: &crate::server::ServiceAddresses,
        server_name: &str,
    ) -> anyhow::Result<Endpoints> {
        Ok(Endpoints {
            tcp: addresses.get(Transport::Tcp)?,
            udp: addresses.get(Transport::Udp)?,
            tls: addresses.get(Transport::Tls)?,
            quic: addresses.get(Transport::Quic)?,
            sctp: addresses.get(Transport::Sctp)?,
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
            Variant::Quic | Variant::QuicResumed | Variant::QuicZeroRtt => {
                let mut opts = quic::ClientQuicOptions::new(&endpoints.trust)?;
                if variant == Variant::Quic {
                    opts = opts.without_resumption()?;
                }
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
        certificate_received: info.certificate_received,
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
        Variant::Quic | Variant::QuicResumed | Variant::QuicZeroRtt => {
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
