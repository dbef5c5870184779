//! Reading a transfer's samples like a lecturer reads the cwnd figure:
//! where slow start ended, how fast it grew, what each loss did to the
//! window, how full the queue ran, and whether the link or a window limited
//! the goodput. Pure functions over [`TransferRun`], so they are tested with
//! made-up samples.

use super::transfer::{Sample, TransferRun};
use crate::lab::buffers::HostBufferReport;
use serde::Serialize;

/// Steady goodput at or above this share of the link's rate means the link,
/// not a window, set the pace.
const LINK_LIMITED_SHARE: f64 = 0.9;

/// The link the transfer crossed, as configured.
#[derive(Clone, Debug, Serialize)]
pub struct LinkFacts {
    /// Bottleneck rate on the data's way (bit/s), if the link has one.
    pub rate_bps: Option<u64>,
    /// Round trip the link adds (ms).
    pub rtt_ms: f64,
    /// Bottleneck queue (packets).
    pub queue_packets: usize,
    /// Bandwidth-delay product (bytes); uses the assumed rate without `--rate`.
    pub bdp_bytes: u64,
    /// Description of both directions.
    pub description: String,
}

/// How slow start went.
#[derive(Clone, Debug, Serialize)]
pub struct SlowStart {
    /// When it ended (ms since the connection opened), and why.
    pub end_ms: f64,
    pub ended_by: &'static str,
    /// The largest cwnd (segments) it reached.
    pub end_cwnd: u32,
    /// cwnd after each of the first round trips ÷ the one before.
    pub growth_per_rtt: Vec<f64>,
}

/// One loss event: the sender entered recovery (fast retransmit) or, after
/// a timeout, the loss state.
#[derive(Clone, Debug, Serialize)]
pub struct LossEvent {
    pub at_ms: f64,
    /// "fast retransmit" (3 duplicate ACKs / SACK) or "timeout"; for QUIC
    /// "congestion event".
    pub kind: &'static str,
    /// cwnd (segments) just before the sender noticed the loss.
    pub cwnd_before: u32,
    /// The new ssthresh the controller chose.
    pub ssthresh_after: Option<u32>,
    /// cwnd when recovery ended (`None` if it had not ended).
    pub cwnd_after: Option<u32>,
    /// cwnd_after ÷ cwnd_before (the multiplicative decrease).
    pub ratio: Option<f64>,
    pub recovery_ms: Option<f64>,
}

/// Whether a window, not the link, held the transfer back.
#[derive(Clone, Debug, Serialize)]
pub struct WindowLimit {
    /// Share of the sending time limited by the receiver's window, and by
    /// the sender's own buffer (TCP_INFO's rwnd_limited / sndbuf_limited).
    pub receiver_window_share: f64,
    pub send_buffer_share: f64,
    /// The largest window the receiver advertised (bytes).
    pub largest_peer_window: Option<u64>,
    /// The most data the sender ever had in flight (bytes): the window it
    /// really used.
    pub largest_flight_bytes: u64,
    /// What that window carries per round trip: flight ÷ min RTT (bit/s).
    pub flight_rate_bps: u64,
    /// Share of the steady state in which the bottleneck queue was empty
    /// (the link had room) while the sender kept less than 80 % of its cwnd
    /// in flight: neither the link nor congestion control held it back, so
    /// a window (send buffer or receiver's window) did.
    pub window_bound_share: f64,
    /// The link's bandwidth-delay product (bytes).
    pub bdp_bytes: u64,
    /// What the receiver's window allows: window ÷ RTT (bit/s).
    pub window_rate_bps: Option<u64>,
    /// True when a window limited more than a fifth of the sending time.
    pub limited: bool,
}

/// A claim from the course notes, checked against this run.
#[derive(Clone, Debug, Serialize)]
pub struct Claim {
    pub claim: String,
    pub measured: String,
    /// `None` when this run cannot say (e.g. no loss happened).
    pub holds: Option<bool>,
}

/// Percentiles of a quantity over the samples.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ZeroWindow {
    /// When the receiver first advertised a zero window (ms).
    pub first_ms: f64,
    /// Total time the advertised window was zero (ms).
    pub zero_ms: f64,
    /// Most unanswered zero-window probes seen at once.
    pub max_probes: u8,
}

/// Everything `proto transfer` reports.
#[derive(Clone, Debug, Serialize)]
pub struct TransferReport {
    pub link: LinkFacts,
    pub host_buffers: HostBufferReport,
    pub goodput_bps: f64,
    /// Goodput ÷ the link's rate.
    pub goodput_share: Option<f64>,
    /// Goodput after the first loss recovery (or after slow start without
    /// a loss) to the end: the steady state.
    pub steady_goodput_bps: Option<f64>,
    pub steady_share: Option<f64>,
    pub slow_start: Option<SlowStart>,
    pub losses: Vec<LossEvent>,
    /// The lab's queueing delay on the data's way (ms).
    pub queue_delay_ms: Spread,
    /// The sender's smoothed RTT (ms).
    pub srtt_ms: Spread,
    pub retransmitted_bytes: u64,
    pub retransmitted_segments: u32,
    pub window: WindowLimit,
    pub zero_window: Option<ZeroWindow>,
    pub claims: Vec<Claim>,
    /// Header bytes per layer, from a capture (`--overhead`, `--pcap`).
    pub overhead: Option<super::overhead::Overhead>,
    pub run: TransferRun,
}

/// The sender's window states that mean "a loss is being repaired".
fn in_recovery(s: &Sample) -> bool {
    matches!(s.ca_state, "recovery" | "loss")
}

/// Slow start: from the first sample to the first one with a finite
/// ssthresh (a loss, or HyStart deciding the queue is building).
pub fn slow_start(samples: &[Sample], rtt_ms: f64) -> Option<SlowStart> {
    let first = samples.first()?;
    let end = samples
        .iter()
        .position(|s| s.ssthresh.is_some() || in_recovery(s));
    let (end_ms, ended_by, upto) = match end {
        Some(i) => (
            samples[i].t_ms,
            if in_recovery(&samples[i]) {
                "loss"
            } else {
                "ssthresh (the controller left slow start without a loss)"
            },
            i,
        ),
        None => (
            samples.last()?.t_ms,
            "the transfer ended first",
            samples.len(),
        ),
    };
    let during = &samples[..upto];
    let end_cwnd = during.iter().map(|s| s.cwnd).max().unwrap_or(first.cwnd);
    // Growth per RTT: cwnd jumps when a flight's ACKs come back, so look at
    // it half an RTT after each return of ACKs, starting from the first,
    // stepping by the sender's current RTT estimate (the queue that builds
    // up in slow start delays each flight's ACKs a little more).
    let mut growth = Vec::new();
    if rtt_ms > 0.0 {
        if let Some(g) = during.iter().find(|s| s.cwnd > first.cwnd) {
            let at = |t: f64| during.iter().take_while(|s| s.t_ms <= t).last();
            let last_t = during.last().map_or(0.0, |s| s.t_ms);
            let mut prev = first.cwnd;
            let mut t = g.t_ms + 0.5 * rtt_ms;
            while growth.len() < 8 && t <= end_ms && t <= last_t {
                let Some(s) = at(t) else { break };
                growth.push(s.cwnd as f64 / prev.max(1) as f64);
                prev = s.cwnd;
                t += if s.srtt_ms > 0.0 { s.srtt_ms } else { rtt_ms };
            }
        }
    }
    Some(SlowStart {
        end_ms,
        ended_by,
        end_cwnd,
        growth_per_rtt: growth,
    })
}

/// Every entry into recovery or loss state, with the window before and after.
pub fn loss_events(samples: &[Sample]) -> Vec<LossEvent> {
    let mut events = Vec::new();
    let mut i = 1;
    while i < samples.len() {
        if in_recovery(&samples[i]) && !in_recovery(&samples[i - 1]) {
            // cwnd just before: recovery only ever lowers cwnd from there
            // (proportional rate reduction), so the larger of the last
            // sample before and the first inside is the closer estimate.
            let before = samples[i - 1].cwnd.max(samples[i].cwnd);
            let start = &samples[i];
            let exit = samples[i..].iter().position(|s| !in_recovery(s));
            let (cwnd_after, recovery_ms) = match exit {
                Some(k) => {
                    let s = &samples[i + k];
                    (Some(s.cwnd), Some(s.t_ms - start.t_ms))
                }
                None => (None, None),
            };
            events.push(LossEvent {
                at_ms: start.t_ms,
                kind: if start.ca_state == "loss" {
                    "timeout"
                } else {
                    "fast retransmit"
                },
                cwnd_before: before,
                ssthresh_after: start.ssthresh,
                cwnd_after,
                ratio: cwnd_after.map(|a| a as f64 / before.max(1) as f64),
                recovery_ms,
            });
            i += exit.unwrap_or(samples.len());
        } else {
            i += 1;
        }
    }
    events
}

/// p50, p99 and max of `value` over the samples.
pub fn spread(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> Spread {
    let mut v: Vec<f64> = samples.iter().map(value).collect();
    if v.is_empty() {
        return Spread::default();
    }
    v.sort_by(f64::total_cmp);
    let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Spread {
        p50: pick(0.5),
        p99: pick(0.99),
        max: v[v.len() - 1],
    }
}

/// Acknowledged bytes per second between `from_ms` and the last sample.
fn goodput_after(samples: &[Sample], from_ms: f64) -> Option<f64> {
    let start = samples.iter().find(|s| s.t_ms >= from_ms)?;
    let end = samples.last()?;
    let seconds = (end.t_ms - start.t_ms) / 1e3;
    (seconds >= 0.5)
        .then(|| (end.bytes_acked.saturating_sub(start.bytes_acked)) as f64 * 8.0 / seconds)
}

fn zero_window(samples: &[Sample]) -> Option<ZeroWindow> {
    let first = samples.iter().find(|s| s.peer_window == Some(0))?;
    let mut zero_ms = 0.0;
    for w in samples.windows(2) {
        if w[0].peer_window == Some(0) {
            zero_ms += w[1].t_ms - w[0].t_ms;
        }
    }
    Some(ZeroWindow {
        first_ms: first.t_ms,
        zero_ms,
        max_probes: samples.iter().map(|s| s.probes).max().unwrap_or(0),
    })
}

/// Analyse a run.
pub fn analyze(
    run: TransferRun,
    link: LinkFacts,
    host_buffers: HostBufferReport,
) -> TransferReport {
    let samples = &run.samples;
    let rtt_ms = if run.min_rtt_ms > 0.0 {
        run.min_rtt_ms
    } else {
        link.rtt_ms
    };
    let slow_start = slow_start(samples, rtt_ms);
    let mut losses = loss_events(samples);
    if run.protocol == super::transfer::Protocol::Quic {
        // QUIC has no "fast retransmit" state; quinn reports congestion events.
        for l in &mut losses {
            l.kind = "congestion event";
        }
    }
    let goodput_bps = if run.seconds > 0.0 {
        run.bytes as f64 * 8.0 / run.seconds
    } else {
        0.0
    };
    let share = |bps: f64| link.rate_bps.map(|r| bps / r as f64);
    // The steady state starts when slow start is over: after the recovery
    // from the loss that ended it, or when the controller left it on its own.
    let steady_from = match &slow_start {
        Some(s) if s.ended_by == "loss" => losses
            .first()
            .and_then(|l| l.recovery_ms.map(|r| l.at_ms + r)),
        Some(s) if s.ended_by != "the transfer ended first" => Some(s.end_ms),
        _ => None,
    };
    let steady_goodput_bps = steady_from.and_then(|t| goodput_after(samples, t));
    let last = samples.last();
    let busy = run.busy_us.max(1) as f64;
    let largest_peer_window = samples
        .iter()
        .filter_map(|s| s.peer_window.map(u64::from))
        .max();
    let rwnd_share = run.rwnd_limited_us as f64 / busy;
    let sndbuf_share = run.sndbuf_limited_us as f64 / busy;
    let largest_flight_bytes = samples
        .iter()
        .filter_map(|s| s.in_flight.map(|f| u64::from(f) * u64::from(s.mss)))
        .max()
        .unwrap_or(0);
    let steady: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_ms >= steady_from.unwrap_or(f64::INFINITY) && s.ca_state == "open")
        .collect();
    let window_bound_share = if steady.is_empty() || link.rate_bps.is_none() {
        0.0
    } else {
        steady
            .iter()
            .filter(|s| {
                s.in_flight
                    .is_some_and(|f| f64::from(f) < 0.8 * f64::from(s.cwnd))
                    && s.queue_delay_ms < 1.0
            })
            .count() as f64
            / steady.len() as f64
    };
    let window = WindowLimit {
        receiver_window_share: rwnd_share,
        send_buffer_share: sndbuf_share,
        largest_flight_bytes,
        flight_rate_bps: if rtt_ms > 0.0 {
            (largest_flight_bytes as f64 * 8.0 / (rtt_ms / 1e3)) as u64
        } else {
            0
        },
        window_bound_share,
        largest_peer_window,
        bdp_bytes: link.bdp_bytes,
        window_rate_bps: largest_peer_window
            .filter(|_| rtt_ms > 0.0)
            .map(|w| (w as f64 * 8.0 / (rtt_ms / 1e3)) as u64),
        limited: window_limited(
            [rwnd_share, sndbuf_share, window_bound_share],
            steady_goodput_bps.and_then(share),
        ),
    };
    let mut report = TransferReport {
        goodput_bps,
        goodput_share: share(goodput_bps),
        steady_goodput_bps,
        steady_share: steady_goodput_bps.and_then(share),
        queue_delay_ms: spread(samples, |s| s.queue_delay_ms),
        srtt_ms: spread(samples, |s| s.srtt_ms),
        retransmitted_bytes: last.map_or(0, |s| s.bytes_retrans),
        retransmitted_segments: last.map_or(0, |s| s.total_retrans),
        zero_window: zero_window(samples),
        window,
        slow_start,
        losses,
        claims: Vec::new(),
        overhead: None,
        link,
        host_buffers,
        run,
    };
    report.claims = claims(&report);
    report
}

/// The geometric mean: the constant factor per step that gives the same
/// overall growth.
/// Whether a window (the receiver's, the send buffer's, or cwnd with the
/// link idle) limited the transfer: one of them for more than a fifth of
/// the time — and only where the link had room to spare. A sender that
/// fills the link (≥ 90 % of its rate once slow start is over) is
/// link-limited, whatever its in-flight data looked like: BBR paces at the
/// bottleneck's rate with cwnd at 2 BDP, so it keeps well under its cwnd
/// in flight and the queue empty on purpose.
fn window_limited(shares: [f64; 3], steady_share_of_link: Option<f64>) -> bool {
    shares.iter().any(|s| *s > 0.2)
        && !steady_share_of_link.is_some_and(|s| s >= LINK_LIMITED_SHARE)
}

fn geometric_mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty() && v.iter().all(|&x| x > 0.0))
        .then(|| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

impl SlowStart {
    /// Growth per RTT over the first four round trips (geometric mean).
    pub fn early_growth(&self) -> Option<f64> {
        geometric_mean(&self.growth_per_rtt[..self.growth_per_rtt.len().min(4)])
    }
}

/// The course-notes claims this run can speak to, each with its figure.
fn claims(r: &TransferReport) -> Vec<Claim> {
    let mut out = Vec::new();
    if let Some(ss) = &r.slow_start {
        let first: Vec<f64> = ss.growth_per_rtt.iter().take(4).copied().collect();
        if let Some(m) = ss.early_growth() {
            out.push(Claim {
                claim: "slow start doubles cwnd every round trip".into(),
                measured: format!(
                    "×{m:.2} per RTT over the first {} RTTs ({})",
                    first.len(),
                    first
                        .iter()
                        .map(|g| format!("×{g:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                holds: Some((1.7..=2.3).contains(&m)),
            });
        }
    }
    let expected = match r.run.cc.as_str() {
        "reno" | "newreno" => Some(("Reno halves cwnd after a loss", 0.5)),
        "cubic" => Some(("CUBIC cuts cwnd to 0.7 after a loss", 0.7)),
        _ => None,
    };
    if let Some((claim, factor)) = expected {
        let first = r
            .losses
            .iter()
            .find(|l| l.kind != "timeout" && l.ratio.is_some());
        out.push(match first {
            Some(l) => Claim {
                claim: claim.into(),
                measured: format!(
                    "cwnd {} → {} (×{:.2}) at {:.0} ms",
                    l.cwnd_before,
                    l.cwnd_after.unwrap_or(0),
                    l.ratio.unwrap_or(0.0),
                    l.at_ms
                ),
                holds: l.ratio.map(|x| (x - factor).abs() <= 0.1),
            },
            None => Claim {
                claim: claim.into(),
                measured: "no loss was repaired by fast retransmit in this run (try --drop-nth)"
                    .into(),
                holds: None,
            },
        });
    }
    if let Some(rate) = r.link.rate_bps {
        let base = r.link.rtt_ms;
        let q = r.queue_delay_ms;
        let buffer_ms = r.link.queue_packets as f64 * 1500.0 * 8.0 / rate as f64 * 1e3;
        if r.run.cc == "bbr" {
            // BBR paces at the bottleneck rate it measured and caps what is
            // in flight near 2 × BDP, so a deep buffer never fills: the
            // queue stays a fraction of it (up to about one BDP), with no
            // overflow. A buffer shallower than the path cannot show that.
            let overflows = r.run.link.client_to_server.dropped_queue;
            out.push(Claim {
                claim: "BBR keeps the bottleneck queue (and so the RTT) low instead of filling the buffer"
                    .into(),
                measured: format!(
                    "queueing delay p50 {:.1} ms, p99 {:.1} ms in a {:.0} ms drop-tail buffer ({}); sender's RTT p50 {:.1} ms on a {:.0} ms path",
                    q.p50,
                    q.p99,
                    buffer_ms,
                    if overflows == 0 {
                        "never full".to_string()
                    } else {
                        format!("it overflowed: {overflows} drops")
                    },
                    r.srtt_ms.p50,
                    base
                ),
                holds: (buffer_ms > base).then_some(q.p50 < 0.25 * buffer_ms && overflows == 0),
            });
        } else if buffer_ms > 0.25 * base {
            // Only a sender that kept going until the queue overflowed can show it.
            let filled = r.run.link.client_to_server.dropped_queue > 0;
            out.push(Claim {
                claim: "a loss-based sender fills a big drop-tail queue: the RTT rises (bufferbloat)"
                    .into(),
                measured: format!(
                    "queueing delay p50 {:.1} ms, p99 {:.1} ms; sender's RTT p99 {:.1} ms vs {:.1} ms of path{}",
                    q.p50,
                    q.p99,
                    r.srtt_ms.p99,
                    base,
                    if filled { "" } else { " (the queue never overflowed in this run)" }
                ),
                holds: filled.then_some(q.p99 > 0.25 * base.max(1.0)),
            });
        }
        if let Some(s) = r.steady_share.or(r.goodput_share) {
            out.push(Claim {
                claim: "a long transfer's goodput comes close to the link rate".into(),
                measured: format!(
                    "{:.1} Mbit/s of {:.1} Mbit/s ({:.0} %{})",
                    r.steady_goodput_bps.unwrap_or(r.goodput_bps) / 1e6,
                    rate as f64 / 1e6,
                    s * 100.0,
                    if r.steady_share.is_some() {
                        ", after slow start"
                    } else {
                        ", whole transfer"
                    }
                ),
                holds: Some(s >= 0.85),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_ms: f64, cwnd: u32, ssthresh: Option<u32>, ca_state: &'static str) -> Sample {
        Sample {
            t_ms,
            cwnd,
            ssthresh,
            ca_state,
            ..Default::default()
        }
    }

    /// A textbook slow start at 100 ms RTT: cwnd doubles when each flight's
    /// ACKs return (at 10 ms, 110 ms, …), then a loss at 520 ms.
    fn textbook() -> Vec<Sample> {
        let mut v = Vec::new();
        for t in 0..520 {
            let flights = if t < 10 { 0 } else { (t - 10) / 100 + 1 };
            v.push(s(t as f64, 10 << flights, None, "open"));
        }
        for t in 520..640 {
            v.push(s(t as f64, 300, Some(320), "recovery"));
        }
        for t in 640..700 {
            v.push(s(t as f64, 320, Some(320), "open"));
        }
        v
    }

    #[test]
    fn slow_start_doubles_per_rtt_until_the_loss() {
        let ss = slow_start(&textbook(), 100.0).unwrap();
        assert_eq!(ss.end_ms, 520.0);
        assert_eq!(ss.ended_by, "loss");
        assert_eq!(ss.end_cwnd, 640);
        assert_eq!(ss.growth_per_rtt[..4], [2.0, 2.0, 2.0, 2.0]);
    }

    #[test]
    fn a_loss_event_measures_the_cut() {
        let events = loss_events(&textbook());
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!((e.cwnd_before, e.cwnd_after), (640, Some(320)));
        assert_eq!(e.ratio, Some(0.5));
        assert_eq!(e.recovery_ms, Some(120.0));
        assert_eq!(e.kind, "fast retransmit");
    }

    #[test]
    fn a_window_limits_only_a_link_with_room_to_spare() {
        // The kernel's buffers cap the window: half the link, limited.
        assert!(window_limited([0.0, 0.0, 0.6], Some(0.3)));
        // BBR at 95 % of the link with little in flight: the link's pace.
        assert!(!window_limited([0.0, 0.0, 0.6], Some(0.95)));
        // No link rate to compare with: the counters decide.
        assert!(window_limited([0.5, 0.0, 0.0], None));
        assert!(!window_limited([0.1, 0.1, 0.1], Some(0.3)));
    }

    #[test]
    fn spread_and_zero_window() {
        let mut v = textbook();
        for (i, x) in v.iter_mut().enumerate() {
            x.queue_delay_ms = (i % 100) as f64;
            x.peer_window = Some(if (100..150).contains(&i) { 0 } else { 1000 });
        }
        let q = spread(&v, |s| s.queue_delay_ms);
        assert_eq!((q.p50, q.max), (50.0, 99.0));
        let z = zero_window(&v).unwrap();
        assert_eq!((z.first_ms, z.zero_ms), (100.0, 50.0));
    }
}
