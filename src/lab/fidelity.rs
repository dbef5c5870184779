//! How faithful the link was: what each direction actually did, against
//! what its settings asked for.
//!
//! An emulator is a program on a shared machine. When other programs hold
//! the CPUs, its forwarder thread wakes up late and packets leave late; when
//! it cannot keep up, the kernel drops packets at the TUN device before the
//! forwarder ever sees them. Neither shows in the settings, so proto
//! measures them on every run:
//!
//! * **timing**: for every packet the model decides a departure time (delay,
//!   its jitter draw, its wait in the bottleneck queue); the forwarder notes
//!   when it actually wrote the packet out. *Error* = actual − scheduled.
//!   A packet more than [`LATE_THRESHOLD`] late counts as late.
//! * **realised delay**: actual departure − arrival (the one-way delay this
//!   packet saw inside the link), to compare with the configured delay;
//! * **rate**: bytes over time between packets that left back to back from
//!   the bottleneck queue;
//! * **loss**: losses the model drew and the bursts they came in, and
//!   packets lost outside the model (the TUN device's drop counter, write
//!   errors).
//!
//! [`TimingRecorder`] records (in the forwarder, per packet, no allocation);
//! [`assess`] turns a direction's counters into numbers and words (pure).

use super::model::{DirectionCounters, LinkConfig};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::{Duration, Instant};

/// A packet that leaves more than this after its scheduled time is late:
/// at that point the lab's timing is off by more than its accuracy target
/// (tens of µs on a quiet machine).
pub const LATE_THRESHOLD: Duration = Duration::from_millis(1);

/// The lab's accuracy target for the median one-way delay: on a quiet
/// machine the forwarder's median error is tens of µs (docs/lab.md).
pub const ACCURACY_TARGET: Duration = Duration::from_micros(500);

/// The forwarder's own timing, summarised (all times in nanoseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkTiming {
    /// Packets whose departure was timed (originals and copies).
    pub timed_packets: u64,
    /// Error = actual departure − scheduled departure.
    pub error_p50_ns: u64,
    pub error_p99_ns: u64,
    pub error_max_ns: u64,
    /// Packets that left more than [`LATE_THRESHOLD`] late.
    pub late_packets: u64,
    /// Realised one-way delay inside the link (departure − arrival), originals.
    pub delay_p1_ns: u64,
    pub delay_p50_ns: u64,
    pub delay_p99_ns: u64,
    /// Bytes and time of packets that left back to back from the bottleneck
    /// queue: realised rate = 8 × bytes / time.
    pub back_to_back_bytes: u64,
    pub back_to_back_ns: u64,
    /// Packets the kernel dropped at the sending host's TUN device because
    /// the forwarder did not read them in time (its transmit drop counter).
    pub tun_dropped: u64,
}

/// Records one direction's timing, packet by packet (in the forwarder).
pub struct TimingRecorder {
    errors: Histogram<u64>,
    delays: Histogram<u64>,
    late: u64,
    max_error: u64,
    /// The previous original's (scheduled, actual) departure, for the rate.
    previous: Option<(Instant, Instant)>,
    back_to_back_bytes: u64,
    back_to_back_ns: u64,
    rate_bps: Option<u64>,
}

/// Highest value the histograms track: an hour (bigger values are clamped).
const MAX_TRACKED_NS: u64 = 3_600_000_000_000;

impl TimingRecorder {
    pub fn new(config: &LinkConfig) -> TimingRecorder {
        let histogram = || {
            Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3)
                .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits are valid"))
        };
        TimingRecorder {
            errors: histogram(),
            delays: histogram(),
            late: 0,
            max_error: 0,
            previous: None,
            back_to_back_bytes: 0,
            back_to_back_ns: 0,
            // Without jitter a queued packet's scheduled gap is exactly its
            // transmission time, which is how back-to-back is recognised.
            rate_bps: config.rate_bps.filter(|_| config.jitter.is_zero()),
        }
    }

    /// A packet that arrived at `arrived`, scheduled for `scheduled`, is
    /// being written out at `actual`.
    pub fn departed(
        &mut self,
        arrived: Instant,
        scheduled: Instant,
        actual: Instant,
        is_copy: bool,
        len: usize,
    ) {
        let error = actual.saturating_duration_since(scheduled);
        let error_ns = (error.as_nanos() as u64).clamp(1, MAX_TRACKED_NS);
        let _ = self.errors.record(error_ns);
        self.max_error = self.max_error.max(error.as_nanos() as u64);
        if error > LATE_THRESHOLD {
            self.late += 1;
        }
        if is_copy {
            return;
        }
        let delay = actual.saturating_duration_since(arrived);
        let _ = self
            .delays
            .record((delay.as_nanos() as u64).clamp(1, MAX_TRACKED_NS));
        if let Some(rate) = self.rate_bps {
            if let Some((prev_scheduled, prev_actual)) = self.previous {
                let tx = super::model::transmission_time(len, rate);
                let gap = scheduled.saturating_duration_since(prev_scheduled);
                // Scheduled exactly one transmission time after the previous
                // packet (±1 µs of rounding): it waited in the queue.
                if gap.abs_diff(tx) <= Duration::from_micros(1) && !tx.is_zero() {
                    self.back_to_back_bytes += len as u64;
                    self.back_to_back_ns +=
                        actual.saturating_duration_since(prev_actual).as_nanos() as u64;
                }
            }
            self.previous = Some((scheduled, actual));
        }
    }

    pub fn summary(&self, tun_dropped: u64) -> LinkTiming {
        let q = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        LinkTiming {
            timed_packets: self.errors.len(),
            error_p50_ns: q(&self.errors, 0.5),
            error_p99_ns: q(&self.errors, 0.99),
            error_max_ns: self.max_error,
            late_packets: self.late,
            delay_p1_ns: q(&self.delays, 0.01),
            delay_p50_ns: q(&self.delays, 0.5),
            delay_p99_ns: q(&self.delays, 0.99),
            back_to_back_bytes: self.back_to_back_bytes,
            back_to_back_ns: self.back_to_back_ns,
            tun_dropped,
        }
    }
}

/// One direction's fidelity: configured against realised, in plain units.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DirectionFidelity {
    pub configured_delay_ms: f64,
    pub configured_jitter_ms: f64,
    /// Realised one-way delay inside the link, p50 and p99.
    pub delay_p50_ms: Option<f64>,
    pub delay_p99_ms: Option<f64>,
    /// Half the spread between the 1st and 99th percentile of the realised
    /// delay (a uniform ±J jitter gives 0.98·J).
    pub jitter_ms: Option<f64>,
    /// The forwarder's timing error (actual − scheduled departure).
    pub error_p50_ms: Option<f64>,
    pub error_p99_ms: Option<f64>,
    pub error_max_ms: Option<f64>,
    pub late_packets: u64,
    pub timed_packets: u64,
    pub configured_loss: f64,
    pub loss: Option<f64>,
    pub configured_loss_burst: Option<f64>,
    pub loss_burst: Option<f64>,
    pub configured_rate_bps: Option<u64>,
    pub rate_bps: Option<f64>,
    pub duplicated: u64,
    pub reordered: u64,
    /// Share of packets asked to be, and actually, duplicated / delivered
    /// after a later one.
    pub configured_duplicate: f64,
    pub duplicate: Option<f64>,
    pub configured_reorder: f64,
    pub reorder: Option<f64>,
    /// Packets lost outside the model: the TUN device dropped them before
    /// the forwarder read them, or the far device refused them.
    pub forwarder_dropped: u64,
    /// True when the link did what was asked: no packet late beyond
    /// [`LATE_THRESHOLD`] and none lost outside the model.
    pub faithful: bool,
    /// What went wrong, in words (empty when faithful).
    pub problems: Vec<String>,
    /// Departures from the settings too small to matter (a few packets a
    /// little late), in words.
    pub notes: Vec<String>,
}

/// Late packets are tolerated (reported, not flagged) while they are fewer
/// than this share of the packets…
pub const TOLERATED_LATE_SHARE: f64 = 0.01;
/// … and none is later than this share of the one-way delay, or than
/// [`TOLERATED_LATENESS_FLOOR`] when that is more.
pub const TOLERATED_LATENESS_SHARE: f64 = 0.1;
pub const TOLERATED_LATENESS_FLOOR: Duration = Duration::from_millis(5);

/// Both directions, as `--json` shows them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkFidelity {
    pub client_to_server: DirectionFidelity,
    pub server_to_client: DirectionFidelity,
    pub late_threshold_ms: f64,
    pub faithful: bool,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Compare what one direction did with what it was asked to do.
pub fn assess(config: &LinkConfig, c: &DirectionCounters) -> DirectionFidelity {
    let t = &c.timing;
    let timed = t.timed_packets > 0;
    let some = |ns: u64| timed.then(|| ms(ns));
    let (configured_loss, configured_loss_burst) = config.loss.long_run();
    let forwarder_dropped = t.tun_dropped + c.write_errors;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    if t.late_packets > 0 {
        // A late packet stretches the round trip it is part of by its
        // lateness. A few packets, a little late, move no median; many, or
        // one late by a good part of the delay, bend the experiment.
        let late_share = t.late_packets as f64 / t.timed_packets.max(1) as f64;
        let tolerated_ms = (TOLERATED_LATENESS_SHARE * config.delay.as_secs_f64() * 1e3)
            .max(TOLERATED_LATENESS_FLOOR.as_secs_f64() * 1e3);
        let what = format!(
            "{} of {} packets left more than {} ms late (worst {:.1} ms)",
            t.late_packets,
            t.timed_packets,
            LATE_THRESHOLD.as_millis(),
            ms(t.error_max_ns)
        );
        if late_share < TOLERATED_LATE_SHARE && ms(t.error_max_ns) < tolerated_ms {
            notes.push(format!(
                "{what}: under {:.0} % of the packets and under {tolerated_ms:.0} ms, too \
                 few and too small to move the figures",
                TOLERATED_LATE_SHARE * 100.0
            ));
        } else {
            problems.push(format!(
                "{what}: the machine was too busy to keep the link's timing, so round trips \
                 of this run are inflated"
            ));
        }
    }
    if t.tun_dropped > 0 {
        problems.push(format!(
            "{} packets were dropped at the sending host's TUN device before the forwarder \
             read them (it could not keep up): losses the settings did not ask for",
            t.tun_dropped
        ));
    }
    if c.write_errors > 0 {
        problems.push(format!(
            "{} packets could not be written to the receiving host's TUN device",
            c.write_errors
        ));
    }
    let share = |n: u64| (c.packets > 0).then(|| n as f64 / c.packets as f64);
    let rate_bps = (t.back_to_back_ns > 0)
        .then(|| t.back_to_back_bytes as f64 * 8.0 / (t.back_to_back_ns as f64 / 1e9));
    DirectionFidelity {
        configured_delay_ms: config.delay.as_secs_f64() * 1e3,
        configured_jitter_ms: config.jitter.as_secs_f64() * 1e3,
        delay_p50_ms: some(t.delay_p50_ns),
        delay_p99_ms: some(t.delay_p99_ns),
        jitter_ms: some(t.delay_p99_ns.saturating_sub(t.delay_p1_ns) / 2),
        error_p50_ms: some(t.error_p50_ns),
        error_p99_ms: some(t.error_p99_ns),
        error_max_ms: some(t.error_max_ns),
        late_packets: t.late_packets,
        timed_packets: t.timed_packets,
        configured_loss,
        loss: share(c.dropped_loss),
        configured_loss_burst,
        loss_burst: (c.loss_bursts > 0).then(|| c.dropped_loss as f64 / c.loss_bursts as f64),
        configured_rate_bps: config.rate_bps,
        rate_bps,
        duplicated: c.duplicated,
        reordered: c.reordered,
        configured_duplicate: config.duplicate,
        duplicate: share(c.duplicated),
        configured_reorder: config.reorder,
        reorder: share(c.reordered),
        forwarder_dropped,
        faithful: problems.is_empty(),
        problems,
        notes,
    }
}

/// Both directions of a lab.
pub fn assess_lab(config: &super::LabConfig, c: &super::LinkCounters) -> LinkFidelity {
    let up = assess(&config.client_to_server, &c.client_to_server);
    let down = assess(&config.server_to_client, &c.server_to_client);
    LinkFidelity {
        faithful: up.faithful && down.faithful,
        client_to_server: up,
        server_to_client: down,
        late_threshold_ms: LATE_THRESHOLD.as_secs_f64() * 1e3,
    }
}

/// The TUN device `name`'s transmit drop counter, read from
/// `/proc/thread-self/net/dev` (call it on a thread inside the device's
/// namespace). For a TUN device "transmit" is the host handing a packet to
/// proto: a drop there is a packet the forwarder never got to read.
pub fn tun_tx_dropped(name: &str) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
    parse_tx_dropped(&table, name)
}

/// `/proc/net/dev`: after "name:", 8 receive columns (bytes packets errs
/// drop fifo frame compressed multicast), then transmit (bytes packets
/// errs drop …): the transmit drop count is the 12th number.
fn parse_tx_dropped(table: &str, name: &str) -> Option<u64> {
    table.lines().find_map(|line| {
        let (iface, numbers) = line.split_once(':')?;
        if iface.trim() != name {
            return None;
        }
        numbers.split_whitespace().nth(11)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::model::LossModel;

    #[test]
    fn reads_the_transmit_drop_column() {
        let table = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n\
            lab-client:   1000      10    0    0    0     0          0         0     2000      20    0    7    0     0       0          0\n";
        assert_eq!(parse_tx_dropped(table, "lab-client"), Some(7));
        assert_eq!(parse_tx_dropped(table, "lo"), Some(0));
        assert_eq!(parse_tx_dropped(table, "eth0"), None);
    }

    #[test]
    fn timing_error_and_late_packets() {
        let config = LinkConfig {
            delay: Duration::from_millis(10),
            ..Default::default()
        };
        let mut r = TimingRecorder::new(&config);
        let t0 = Instant::now();
        for i in 0..100u64 {
            let arrived = t0 + Duration::from_millis(i);
            let scheduled = arrived + Duration::from_millis(10);
            // One packet in a hundred 3 ms late, the rest 20 µs.
            let error = if i == 50 { 3_000 } else { 20 };
            let actual = scheduled + Duration::from_micros(error);
            r.departed(arrived, scheduled, actual, false, 100);
        }
        let c = DirectionCounters {
            packets: 100,
            delivered_packets: 100,
            timing: r.summary(0),
            ..Default::default()
        };
        let f = assess(&config, &c);
        assert_eq!(f.late_packets, 1);
        assert!(!f.faithful);
        assert!(f.problems[0].contains("1 of 100 packets left more than 1 ms late (worst 3.0 ms)"));
        assert!((f.error_p50_ms.unwrap() - 0.02).abs() < 0.001);
        assert!((f.delay_p50_ms.unwrap() - 10.02).abs() < 0.01);
        assert!(f.jitter_ms.unwrap() < 0.01);
    }

    #[test]
    fn a_few_slightly_late_packets_are_noted_not_flagged() {
        let config = LinkConfig {
            delay: Duration::from_millis(50),
            ..Default::default()
        };
        let run = |late_every: u64, lateness_us: u64| {
            let mut r = TimingRecorder::new(&config);
            let t0 = Instant::now();
            for i in 0..1000u64 {
                let arrived = t0 + Duration::from_millis(i);
                let scheduled = arrived + Duration::from_millis(50);
                let error = if i % late_every == 7 { lateness_us } else { 20 };
                r.departed(
                    arrived,
                    scheduled,
                    scheduled + Duration::from_micros(error),
                    false,
                    100,
                );
            }
            let c = DirectionCounters {
                packets: 1000,
                delivered_packets: 1000,
                timing: r.summary(0),
                ..Default::default()
            };
            assess(&config, &c)
        };
        // 2 of 1000 packets 3 ms late on a 50 ms delay: noted.
        let few = run(500, 3_000);
        assert!(few.faithful, "{:?}", few.problems);
        assert!(
            few.notes[0].contains("2 of 1000 packets"),
            "{:?}",
            few.notes
        );
        // The same two, 20 ms late (40 % of the delay): flagged.
        let big = run(500, 20_000);
        assert!(!big.faithful);
        // 2 % of the packets 2 ms late: flagged.
        let many = run(50, 2_000);
        assert!(!many.faithful);
        assert!(many.notes.is_empty());
    }

    #[test]
    fn realised_rate_from_back_to_back_departures() {
        // 1500 bytes at 12 Mbit/s: 1 ms each; the forwarder keeps the pace.
        let config = LinkConfig {
            rate_bps: Some(12_000_000),
            ..Default::default()
        };
        let mut r = TimingRecorder::new(&config);
        let t0 = Instant::now();
        for i in 1..=10u64 {
            let scheduled = t0 + Duration::from_millis(i);
            r.departed(
                t0,
                scheduled,
                scheduled + Duration::from_micros(5),
                false,
                1500,
            );
        }
        let c = DirectionCounters {
            packets: 10,
            timing: r.summary(0),
            ..Default::default()
        };
        let f = assess(&config, &c);
        let rate = f.rate_bps.unwrap();
        assert!((rate - 12e6).abs() < 1e3, "{rate}");
        assert!(f.faithful);
    }

    #[test]
    fn loss_rate_and_bursts_and_forwarder_drops() {
        let config = LinkConfig {
            loss: LossModel::bursty(0.1, 4.0),
            ..Default::default()
        };
        let c = DirectionCounters {
            packets: 1000,
            dropped_loss: 100,
            loss_bursts: 25,
            timing: LinkTiming {
                tun_dropped: 3,
                ..Default::default()
            },
            ..Default::default()
        };
        let f = assess(&config, &c);
        assert_eq!(f.loss, Some(0.1));
        assert_eq!(f.loss_burst, Some(4.0));
        assert!((f.configured_loss - 0.1).abs() < 1e-9);
        assert!((f.configured_loss_burst.unwrap() - 4.0).abs() < 1e-9);
        assert_eq!(f.forwarder_dropped, 3);
        assert!(!f.faithful);
        assert!(f.problems[0].contains("TUN device"));
    }
}
