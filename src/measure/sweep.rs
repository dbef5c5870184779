//! Sweeps: `proto compare` at many round-trip times or loss rates, one
//! fresh lab per point, and what the points say together.
//!
//! **RTT sweep.** Time to the first reply grows linearly with the RTT:
//!
//! ```text
//!   first_reply = intercept + slope × RTT      slope = handshake round trips + 1
//! ```
//!
//! (the `+ 1` is the request and its reply). A least-squares line through
//! the links' points (x = the median of the connections' own measured
//! RTTs, y = the median time to first reply) gives the slope (a round-trip count, to compare with theory), the intercept (time
//! that does not grow with distance: CPU, key exchange, certificate
//! checks) and R² (how straight the line is).
//!
//! **Loss sweep.** At a fixed RTT, a lost handshake packet costs a timer,
//! not a round trip: TCP's initial RTO (1 s) for a lost SYN, QUIC's first
//! PTO (≈ 1 s) for a lost Initial. Medians hide them; the p90 shows them.

use crate::lab::fidelity::{assess_lab, LinkFidelity};
use crate::lab::model::LossModel;
use crate::lab::servers::LabServers;
use crate::lab::LabConfig;
use crate::measure::handshake::{
    measure_variants, median, Endpoints, RunEvent, Variant, VariantResult,
};
use crate::units::{parse_duration, parse_percent};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a sweep varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    /// The link's round-trip time (split evenly between the directions).
    Rtt,
    /// Random loss in each direction, at the RTT of the other options.
    Loss,
}

/// `rtt=10ms..400ms`, `rtt=20ms,60ms,120ms`, `loss=0%..10%:11`.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepSpec {
    pub axis: Axis,
    /// RTTs in ms, or loss as a fraction (0..1).
    pub values: Vec<f64>,
}

/// Points a range gets when it does not say (`rtt=10ms..400ms` → 5).
pub const DEFAULT_RTT_POINTS: usize = 5;
pub const DEFAULT_LOSS_POINTS: usize = 6;
/// A sweep of more points than this would run for hours.
pub const MAX_POINTS: usize = 50;
/// Beyond this, handshakes rarely finish at all.
pub const MAX_LOSS: f64 = 0.5;

/// Why a `--sweep` value was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SweepSpecError {
    #[error("{0:?}: expected rtt=… or loss=…, e.g. rtt=10ms..400ms, rtt=20ms,60ms,120ms or loss=0%..10%")]
    Form(String),
    #[error("{0}")]
    Value(String),
    #[error("a sweep takes 2 to {MAX_POINTS} points, not {0}")]
    Points(usize),
    #[error("loss {0}% is above {max}%: handshakes would rarely finish", max = MAX_LOSS * 100.0)]
    TooLossy(f64),
}

impl SweepSpec {
    pub fn parse(s: &str) -> Result<SweepSpec, SweepSpecError> {
        let form = || SweepSpecError::Form(s.to_string());
        let (name, rest) = s.split_once('=').ok_or_else(form)?;
        let axis = match name.trim() {
            "rtt" => Axis::Rtt,
            "loss" => Axis::Loss,
            _ => return Err(form()),
        };
        let value = |v: &str| -> Result<f64, SweepSpecError> {
            match axis {
                Axis::Rtt => parse_duration(v.trim()).map(|d| d.as_secs_f64() * 1e3),
                Axis::Loss => parse_percent(v.trim()),
            }
            .map_err(SweepSpecError::Value)
        };
        let values: Vec<f64> = if let Some((from, to)) = rest.split_once("..") {
            let (to, points) = match to.split_once(':') {
                Some((to, n)) => (to, n.trim().parse().map_err(|_| form())?),
                None => (
                    to,
                    match axis {
                        Axis::Rtt => DEFAULT_RTT_POINTS,
                        Axis::Loss => DEFAULT_LOSS_POINTS,
                    },
                ),
            };
            let (from, to) = (value(from)?, value(to)?);
            if !(2..=MAX_POINTS).contains(&points) {
                return Err(SweepSpecError::Points(points));
            }
            if to <= from {
                return Err(SweepSpecError::Value(format!(
                    "{s:?}: the range must go upwards"
                )));
            }
            (0..points)
                .map(|i| from + (to - from) * i as f64 / (points - 1) as f64)
                .collect()
        } else {
            rest.split(',').map(value).collect::<Result<_, _>>()?
        };
        if values.len() < 2 || values.len() > MAX_POINTS {
            return Err(SweepSpecError::Points(values.len()));
        }
        if let Some(&worst) = values.iter().find(|&&v| axis == Axis::Loss && v > MAX_LOSS) {
            return Err(SweepSpecError::TooLossy(worst * 100.0));
        }
        Ok(SweepSpec { axis, values })
    }

    /// The lab configuration for point `value`: `base` with its delays (RTT
    /// sweep) or its loss (loss sweep) replaced, in both directions. A loss
    /// sweep keeps the base's mean burst length if it had one.
    pub fn config_at(&self, base: &LabConfig, value: f64) -> LabConfig {
        let mut config = base.clone();
        for link in [&mut config.client_to_server, &mut config.server_to_client] {
            match self.axis {
                Axis::Rtt => link.delay = Duration::from_secs_f64(value / 2e3),
                Axis::Loss => {
                    let burst = link.loss.long_run().1;
                    link.loss = match burst {
                        _ if value <= 0.0 => LossModel::None,
                        Some(b) => LossModel::bursty(value, b),
                        None => LossModel::Random { p: value },
                    };
                }
            }
        }
        config
    }

    /// "rtt 60 ms" / "loss 2%".
    pub fn label(&self, value: f64) -> String {
        match self.axis {
            Axis::Rtt => format!("rtt {} ms", trim(value)),
            Axis::Loss => format!("loss {}%", trim(value * 100.0)),
        }
    }
}

/// A number with at most one decimal, no trailing ".0".
fn trim(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// One point of the sweep: every variant measured across one link.
#[derive(Clone, Debug, Serialize)]
pub struct SweepPoint {
    /// The configured round trip, ms.
    pub rtt_ms: f64,
    /// The configured loss per direction (0..1).
    pub loss: f64,
    pub variants: Vec<VariantResult>,
    /// How faithful this point's link was.
    pub fidelity: LinkFidelity,
    /// False when the sweep was interrupted during this point.
    pub complete: bool,
}

/// A straight line through (measured RTT, time to first reply), per variant.
#[derive(Clone, Debug, Serialize)]
pub struct Fit {
    pub protocol: Variant,
    /// Round trips before data, as theory says.
    pub theory_rtts: f64,
    /// Fitted round trips to the first reply (handshake + the request).
    pub slope_rtts: f64,
    /// `slope − 1`: round trips before data, to compare with theory.
    pub handshake_rtts: f64,
    /// Time that does not grow with the RTT (CPU, crypto), ms.
    pub intercept_ms: f64,
    pub r_squared: f64,
    /// Connections measured (the line goes through their medians per link).
    pub connections: usize,
    pub matches_theory: bool,
}

/// How close a fitted slope must be to theory to match.
pub const FIT_TOLERANCE_RTTS: f64 = 0.15;

/// One variant at one loss rate.
#[derive(Clone, Debug, Serialize)]
pub struct LossRow {
    pub protocol: Variant,
    pub loss: f64,
    /// Connections that completed (the rest failed or timed out).
    pub completed: usize,
    pub failed: usize,
    pub first_reply_p50_ms: Option<f64>,
    pub first_reply_p90_ms: Option<f64>,
    /// Completed connections that waited for a retransmission timer: their
    /// first reply came at least half a timer later than the round trips
    /// alone explain.
    pub stalled: usize,
    /// p90 here minus p90 at the sweep's lowest loss, ms.
    pub p90_jump_ms: Option<f64>,
}

/// The timer that decides what a lost handshake packet costs a variant.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Timer {
    pub name: &'static str,
    /// Its first value; `None`: nothing is retransmitted.
    #[serde(serialize_with = "opt_ms")]
    pub initial: Option<Duration>,
    pub why: &'static str,
}

fn opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1e3)),
        None => s.serialize_none(),
    }
}

/// The retransmission timer behind `variant`'s handshake.
pub fn handshake_timer(variant: Variant) -> Timer {
    match variant {
        Variant::Quic | Variant::QuicResumed | Variant::QuicZeroRtt => Timer {
            name: "QUIC's first PTO",
            initial: Some(Duration::from_millis(999)),
            why: "A lost Initial is resent after the probe timeout: before any RTT is measured it is 3 × the initial estimate of 333 ms (RFC 9002 §6.2).",
        },
        Variant::Udp => Timer {
            name: "none",
            initial: None,
            why: "UDP never resends: a lost datagram costs the application's own timeout (proto's --timeout), and the run fails.",
        },
        Variant::Sctp => Timer {
            name: "SCTP's RTO.Initial",
            initial: Some(Duration::from_secs(1)),
            why: "A lost INIT or COOKIE-ECHO is resent after RTO.Initial (RFC 9260 §16).",
        },
        // Everything else starts with a TCP handshake.
        _ => Timer {
            name: "TCP's initial RTO",
            initial: Some(Duration::from_secs(1)),
            why: "A lost SYN or SYN-ACK is resent after the initial retransmission timeout (RFC 6298 §2); a segment lost later waits at least 200 ms (Linux's minimum RTO).",
        },
    }
}

/// A variant and the timer behind its jumps under loss.
#[derive(Clone, Debug, Serialize)]
pub struct VariantTimer {
    pub protocol: Variant,
    pub timer: Timer,
}

/// Everything a sweep measured.
#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    pub axis: Axis,
    pub runs: usize,
    /// The link of the other options, in words (the swept value aside).
    pub setting: String,
    pub points: Vec<SweepPoint>,
    /// RTT sweep: one line per variant.
    pub fits: Vec<Fit>,
    /// Loss sweep: one row per variant and point.
    pub loss_rows: Vec<LossRow>,
    /// Loss sweep: the timer behind each variant's jumps.
    pub timers: Vec<VariantTimer>,
    /// Ctrl-C ended the sweep early; `points` holds what was measured.
    pub interrupted: bool,
    /// True when every point's link was faithful.
    pub faithful: bool,
}

/// Progress, for a display.
#[derive(Clone, Debug)]
pub enum SweepEvent {
    PointStarted {
        index: usize,
        of: usize,
        label: String,
    },
    /// A point's link is measured and torn down.
    PointDone {
        index: usize,
        of: usize,
        label: String,
    },
    Run(RunEvent),
}

/// What a sweep runs.
#[derive(Clone, Debug)]
pub struct SweepPlan {
    pub spec: SweepSpec,
    /// The link at every point, but for the swept value.
    pub base: LabConfig,
    pub variants: Vec<Variant>,
    pub runs: usize,
    pub timeout: Duration,
    pub setting: String,
}

/// Runs the sweep: for each point a fresh lab with proto's servers, every
/// variant measured from its client host. `cancel` (Ctrl-C) stops it
/// between connections; what was measured is returned.
pub async fn run(
    plan: &SweepPlan,
    on_event: Arc<dyn Fn(SweepEvent) + Send + Sync>,
    cancel: CancellationToken,
) -> anyhow::Result<SweepReport> {
    let mut points = Vec::new();
    let mut interrupted = false;
    for (index, &value) in plan.spec.values.iter().enumerate() {
        if cancel.is_cancelled() {
            interrupted = true;
            break;
        }
        on_event(SweepEvent::PointStarted {
            index,
            of: plan.spec.values.len(),
            label: plan.spec.label(value),
        });
        let config = plan.spec.config_at(&plan.base, value);
        let servers = LabServers::start(config.clone()).await?;
        let server_ip = servers.lab().server_ip().to_string();
        let endpoints = Endpoints::from_addresses(&servers.addresses, &server_ip)?;
        let mut variants = Vec::new();
        let mut complete = true;
        for &variant in &plan.variants {
            let (endpoints, on_event, cancel) =
                (endpoints.clone(), on_event.clone(), cancel.clone());
            let (runs, timeout) = (plan.runs, plan.timeout);
            let measured = servers
                .on_client(move || async move {
                    let one = [variant];
                    let measuring = measure_variants(&one, &endpoints, runs, timeout, |e| {
                        on_event(SweepEvent::Run(e))
                    });
                    tokio::select! {
                        results = measuring => Some(results),
                        _ = cancel.cancelled() => None,
                    }
                })
                .await?;
            match measured {
                Some(mut results) => {
                    if let Err(why) = &servers.fast_open {
                        for v in results
                            .iter_mut()
                            .filter(|v| v.protocol == Variant::Tls13ZeroRttTfo)
                        {
                            v.note = Some(format!("TCP Fast Open is not available here: {why}"));
                        }
                    }
                    variants.extend(results)
                }
                None => {
                    complete = false;
                    interrupted = true;
                    break;
                }
            }
        }
        let (_, counters) = servers.stop().await?;
        let rtt = config.client_to_server.delay + config.server_to_client.delay;
        points.push(SweepPoint {
            rtt_ms: rtt.as_secs_f64() * 1e3,
            loss: config.client_to_server.loss.long_run().0,
            variants,
            fidelity: assess_lab(&config, &counters),
            complete,
        });
        if interrupted {
            break;
        }
        on_event(SweepEvent::PointDone {
            index,
            of: plan.spec.values.len(),
            label: plan.spec.label(value),
        });
    }
    Ok(summarise(plan, points, interrupted))
}

/// Fits and loss rows from the points (pure: the tests feed it samples).
pub fn summarise(plan: &SweepPlan, points: Vec<SweepPoint>, interrupted: bool) -> SweepReport {
    let (mut fits, mut loss_rows, mut timers) = (Vec::new(), Vec::new(), Vec::new());
    for &variant in &plan.variants {
        let results = || {
            points.iter().filter_map(move |p| {
                p.variants
                    .iter()
                    .find(|v| v.protocol == variant)
                    .map(|v| (p, v))
            })
        };
        match plan.spec.axis {
            Axis::Rtt => {
                // One point per link: the medians of its connections' own
                // RTT and first reply (a connection that a busy machine
                // delayed does not tilt the line).
                let xy: Vec<(f64, f64)> = results()
                    .filter_map(|(_, v)| {
                        let rtts: Vec<f64> = v.samples.iter().map(|s| ms(s.rtt)).collect();
                        let replies: Vec<f64> =
                            v.samples.iter().map(|s| ms(s.first_reply)).collect();
                        Some((median(&rtts)?, median(&replies)?))
                    })
                    .collect();
                let connections = results().map(|(_, v)| v.samples.len()).sum();
                if let Some(line) = least_squares(&xy) {
                    let theory = variant.theory_rtts();
                    let handshake = line.slope - 1.0;
                    fits.push(Fit {
                        protocol: variant,
                        theory_rtts: theory,
                        slope_rtts: line.slope,
                        handshake_rtts: handshake,
                        intercept_ms: line.intercept,
                        r_squared: line.r_squared,
                        connections,
                        matches_theory: (handshake - theory).abs() <= FIT_TOLERANCE_RTTS,
                    });
                }
            }
            Axis::Loss => {
                let timer = handshake_timer(variant);
                timers.push(VariantTimer {
                    protocol: variant,
                    timer,
                });
                let mut baseline_p90 = None;
                for (point, v) in results() {
                    let replies: Vec<f64> = v.samples.iter().map(|s| ms(s.first_reply)).collect();
                    let p90 = percentile(&replies, 0.9);
                    if baseline_p90.is_none() {
                        baseline_p90 = p90;
                    }
                    // Round trips alone: (handshake + request) × the RTT.
                    let expected = (variant.theory_rtts() + 1.0) * point.rtt_ms;
                    let half_timer = timer.initial.map_or(f64::INFINITY, |t| ms(t) / 2.0);
                    loss_rows.push(LossRow {
                        protocol: variant,
                        loss: point.loss,
                        completed: v.samples.len(),
                        failed: plan.runs.saturating_sub(v.samples.len()),
                        first_reply_p50_ms: percentile(&replies, 0.5),
                        first_reply_p90_ms: p90,
                        stalled: replies
                            .iter()
                            .filter(|&&r| r - expected >= half_timer)
                            .count(),
                        p90_jump_ms: p90.zip(baseline_p90).map(|(p, b)| p - b),
                    });
                }
            }
        }
    }
    let faithful = points.iter().all(|p| p.fidelity.faithful);
    SweepReport {
        axis: plan.spec.axis,
        runs: plan.runs,
        setting: plan.setting.clone(),
        points,
        fits,
        loss_rows,
        timers,
        interrupted,
        faithful,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile (nearest rank) of `values`.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// y = intercept + slope · x, and how much of y's variance it explains.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Line {
    pub slope: f64,
    pub intercept: f64,
    pub r_squared: f64,
}

/// Ordinary least squares; `None` without two distinct x values.
pub fn least_squares(points: &[(f64, f64)]) -> Option<Line> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    if sxx <= f64::EPSILON * n {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = mean_y - slope * mean_x;
    let r_squared = if syy > 0.0 {
        (sxy * sxy) / (sxx * syy)
    } else {
        1.0
    };
    Some(Line {
        slope,
        intercept,
        r_squared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::handshake::Sample;

    #[test]
    fn parses_ranges_and_lists() {
        let s = SweepSpec::parse("rtt=10ms..400ms").unwrap();
        assert_eq!(s.axis, Axis::Rtt);
        assert_eq!(s.values, [10.0, 107.5, 205.0, 302.5, 400.0]);
        let s = SweepSpec::parse("rtt=20ms,60ms,120ms").unwrap();
        assert_eq!(s.values, [20.0, 60.0, 120.0]);
        let s = SweepSpec::parse("loss=0%..10%").unwrap();
        assert_eq!(s.axis, Axis::Loss);
        assert_eq!(s.values.len(), 6);
        assert!((s.values[1] - 0.02).abs() < 1e-12);
        let s = SweepSpec::parse("loss=0%..10%:11").unwrap();
        assert_eq!(s.values.len(), 11);
        for bad in [
            "rtt",
            "jitter=1ms..2ms",
            "rtt=10ms",
            "rtt=10ms..5ms",
            "rtt=1ms..2ms:1",
            "rtt=1ms..2ms:500",
            "loss=0%..80%",
            "rtt=ten..20ms",
        ] {
            assert!(SweepSpec::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(s.label(0.02), "loss 2%");
        assert_eq!(
            SweepSpec::parse("rtt=1ms,2ms").unwrap().label(107.5),
            "rtt 107.5 ms"
        );
    }

    #[test]
    fn config_at_sets_the_swept_value_in_both_directions() {
        let base = LabConfig::symmetric(crate::lab::LinkConfig {
            delay: Duration::from_millis(30),
            loss: LossModel::bursty(0.01, 3.0),
            ..Default::default()
        });
        let rtt = SweepSpec::parse("rtt=20ms,60ms").unwrap();
        let c = rtt.config_at(&base, 60.0);
        assert_eq!(c.server_to_client.delay, Duration::from_millis(30));
        assert_eq!(c.client_to_server.delay, Duration::from_millis(30));
        let loss = SweepSpec::parse("loss=0%..10%").unwrap();
        let c = loss.config_at(&base, 0.1);
        let (mean, burst) = c.client_to_server.loss.long_run();
        assert!((mean - 0.1).abs() < 1e-9 && (burst.unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(
            loss.config_at(&base, 0.0).server_to_client.loss,
            LossModel::None
        );
    }

    #[test]
    fn least_squares_recovers_a_line() {
        let pts: Vec<(f64, f64)> = [20.0, 60.0, 120.0]
            .iter()
            .map(|&x| (x, 3.0 * x + 2.5))
            .collect();
        let l = least_squares(&pts).unwrap();
        assert!((l.slope - 3.0).abs() < 1e-9);
        assert!((l.intercept - 2.5).abs() < 1e-9);
        assert!((l.r_squared - 1.0).abs() < 1e-9);
        assert!(least_squares(&[(1.0, 2.0), (1.0, 3.0)]).is_none());
        assert!(least_squares(&[(1.0, 2.0)]).is_none());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(5.0));
        assert_eq!(percentile(&v, 0.9), Some(9.0));
        assert_eq!(percentile(&v, 1.0), Some(10.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    fn sample(rtt_ms: f64, first_ms: f64) -> Sample {
        Sample {
            rtt: Duration::from_secs_f64(rtt_ms / 1e3),
            first_reply: Duration::from_secs_f64(first_ms / 1e3),
            ..Sample::default()
        }
    }

    fn point(rtt_ms: f64, loss: f64, variant: Variant, samples: Vec<Sample>) -> SweepPoint {
        let config = LabConfig::default();
        SweepPoint {
            rtt_ms,
            loss,
            variants: vec![VariantResult::from_samples(variant, samples, None)],
            fidelity: assess_lab(&config, &Default::default()),
            complete: true,
        }
    }

    fn plan(spec: &str, variants: Vec<Variant>, runs: usize) -> SweepPlan {
        SweepPlan {
            spec: SweepSpec::parse(spec).unwrap(),
            base: LabConfig::default(),
            variants,
            runs,
            timeout: Duration::from_secs(5),
            setting: String::new(),
        }
    }

    #[test]
    fn rtt_fit_gives_the_round_trip_count() {
        // TLS 1.2: 3 RTT of handshake + 1 for the request, plus 4 ms of CPU.
        let points = [20.0, 60.0, 120.0]
            .iter()
            .map(|&rtt| {
                point(
                    rtt,
                    0.0,
                    Variant::Tls12,
                    vec![sample(rtt + 0.1, 4.0 * rtt + 4.0)],
                )
            })
            .collect();
        let r = summarise(
            &plan("rtt=20ms,60ms,120ms", vec![Variant::Tls12], 1),
            points,
            false,
        );
        let f = &r.fits[0];
        assert!((f.handshake_rtts - 3.0).abs() < 0.01, "{f:?}");
        assert!((f.intercept_ms - 3.6).abs() < 0.1, "{f:?}");
        assert!(f.matches_theory && f.r_squared > 0.999);
    }

    #[test]
    fn loss_rows_show_the_jump_and_the_stalled_runs() {
        let quiet = point(40.0, 0.0, Variant::Tcp, vec![sample(40.0, 80.0); 10]);
        let mut lossy = vec![sample(40.0, 80.0); 8];
        lossy.extend([sample(40.0, 1080.0), sample(40.0, 1081.0)]);
        let lossy = point(40.0, 0.1, Variant::Tcp, lossy);
        let r = summarise(
            &plan("loss=0%..10%", vec![Variant::Tcp], 10),
            vec![quiet, lossy],
            false,
        );
        let row = &r.loss_rows[1];
        assert_eq!(row.stalled, 2);
        assert_eq!(row.first_reply_p50_ms, Some(80.0));
        assert_eq!(row.first_reply_p90_ms, Some(1080.0));
        assert_eq!(row.p90_jump_ms, Some(1000.0));
        assert_eq!(r.timers[0].timer.name, "TCP's initial RTO");
    }
}
