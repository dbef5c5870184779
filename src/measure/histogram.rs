//! Latency recording: an HdrHistogram per run, and coordinated-omission
//! correction through *intended* send times.
//!
//! # Why a histogram, and why HdrHistogram
//!
//! A load test sends millions of requests; keeping every latency costs
//! memory and sorting time, and an average hides the tail. HdrHistogram
//! keeps counts in buckets whose width grows with the value, so that every
//! value is stored with a fixed number of *significant digits* (here 3:
//! 16.4 µs and 16.4 ms are both within 0.1 %), from 1 ns to an hour, in a
//! few hundred KiB, with a constant-time `record`.
//!
//! # Coordinated omission
//!
//! A load generator that waits for each reply before sending the next
//! request "coordinates" with the server: while the server stalls, the
//! client sends nothing, so the stall is measured *once* (one slow request)
//! instead of for every request that should have been sent meanwhile. The
//! percentiles then say that 99.99 % of requests were fast, which no user
//! who arrived during the stall would agree with.
//!
//! The fix (Gil Tene's, as in wrk2): decide the send times in advance
//! ([`Schedule`]), and count each request's latency from when it *should*
//! have been sent, not from when the busy client got round to sending it.
//! [`Recorder`] keeps both views so that the difference can be shown:
//!
//! ```text
//!   intended ─────── sent ─────────── received
//!      │← client late →│← what the wire took →│
//!      │←────────── corrected latency ────────→│
//!                      │←─ uncorrected latency→│
//! ```
//!
//! Everything here is pure: timestamps are nanoseconds on one monotonic
//! clock, passed in by the caller.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Significant decimal digits kept for every value (HdrHistogram's precision).
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// The largest latency recorded exactly: one hour. Larger values are
/// clamped to it (and will show as the maximum).
pub const HIGHEST_NANOS: u64 = 3_600 * 1_000_000_000;

/// The unit values are stored in. Nanoseconds keep 3 significant digits
/// even for loopback round trips of a few µs; microseconds halve the
/// memory of very wide ranges. Reports are always in µs either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Nanos,
    Micros,
}

impl Unit {
    /// How many of this unit make one microsecond.
    fn per_micro(self) -> f64 {
        match self {
            Unit::Nanos => 1000.0,
            Unit::Micros => 1.0,
        }
    }

    fn convert_nanos(self, nanos: u64) -> u64 {
        match self {
            Unit::Nanos => nanos,
            Unit::Micros => nanos / 1000,
        }
    }
}

/// A latency distribution: an HdrHistogram plus the unit of its values.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
    unit: Unit,
}

/// The numbers of a latency table, all in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub p99_99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    pub stddev_us: f64,
}

/// One line of HdrHistogram's percentile distribution: `count` values
/// (cumulative) are at most `value_us`, which is the `quantile` point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PercentilePoint {
    pub value_us: f64,
    pub quantile: f64,
    pub total_count: u64,
}

/// A bar of the terminal histogram: `count` values in `low_us..high_us`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bucket {
    pub low_us: f64,
    pub high_us: f64,
    pub count: u64,
}

impl Latencies {
    pub fn new(unit: Unit) -> Latencies {
        let highest = unit.convert_nanos(HIGHEST_NANOS);
        // The bounds are constants that HdrHistogram accepts (low ≥ 1,
        // high ≥ 2·low, 0 ≤ digits ≤ 5), so creation cannot fail; fall back
        // to an auto-resizing histogram rather than panic all the same.
        let hist =
            Histogram::new_with_bounds(1, highest, SIGNIFICANT_DIGITS).unwrap_or_else(|_| {
                let mut h = Histogram::new(SIGNIFICANT_DIGITS).unwrap_or_else(|_| unreachable!());
                h.auto(true);
                h
            });
        let mut l = Latencies { hist, unit };
        // Touch every counter now: the kernel hands out zeroed pages lazily,
        // and taking those page faults during a measurement would show up
        // as latency (64 connections × 2 histograms × 270 KiB).
        l.hist.reset();
        l
    }

    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// Records one latency given in nanoseconds. Values above an hour are
    /// clamped; zero is recorded as the smallest unit.
    pub fn record_nanos(&mut self, nanos: u64) {
        self.record_nanos_n(nanos, 1);
    }

    /// Records `count` latencies of `nanos` each.
    pub fn record_nanos_n(&mut self, nanos: u64, count: u64) {
        let value = self.unit.convert_nanos(nanos.min(HIGHEST_NANOS)).max(1);
        self.hist.saturating_record_n(value, count);
    }

    /// Adds every value of `other` to this distribution.
    pub fn merge(&mut self, other: &Latencies) {
        if other.unit == self.unit {
            // Same bounds, same unit: `add` cannot fail.
            let _ = self.hist.add(&other.hist);
        } else {
            for v in other.hist.iter_recorded() {
                let nanos = (v.value_iterated_to() as f64 * 1000.0 / other.unit.per_micro()) as u64;
                self.record_nanos_n(nanos, v.count_at_value());
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The underlying histogram (values in [`Latencies::unit`]).
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.hist
    }

    fn us(&self, value: u64) -> f64 {
        value as f64 / self.unit.per_micro()
    }

    /// The latency at `quantile` (0.0..=1.0) in µs: the highest value
    /// equivalent to the one at that rank, as HdrHistogram reports it.
    pub fn quantile_us(&self, quantile: f64) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        self.us(self.hist.value_at_quantile(quantile))
    }

    pub fn summary(&self) -> LatencySummary {
        if self.is_empty() {
            return LatencySummary {
                count: 0,
                min_us: 0.0,
                p50_us: 0.0,
                p90_us: 0.0,
                p99_us: 0.0,
                p99_9_us: 0.0,
                p99_99_us: 0.0,
                max_us: 0.0,
                mean_us: 0.0,
                stddev_us: 0.0,
            };
        }
        LatencySummary {
            count: self.count(),
            min_us: self.us(self.hist.min()),
            p50_us: self.quantile_us(0.5),
            p90_us: self.quantile_us(0.9),
            p99_us: self.quantile_us(0.99),
            p99_9_us: self.quantile_us(0.999),
            p99_99_us: self.quantile_us(0.9999),
            max_us: self.us(self.hist.highest_equivalent(self.hist.max())),
            mean_us: self.hist.mean() / self.unit.per_micro(),
            stddev_us: self.hist.stdev() / self.unit.per_micro(),
        }
    }

    /// HdrHistogram's percentile distribution: `ticks_per_half` points
    /// between each halving of the remaining distance to 100 % (so 50 %,
    /// 75 %, 87.5 %, … get ever denser towards the tail). HdrHistogram's
    /// own output uses 5.
    pub fn percentile_distribution(&self, ticks_per_half: u32) -> Vec<PercentilePoint> {
        let mut out = Vec::new();
        if self.is_empty() {
            return out;
        }
        let mut total = 0u64;
        for v in self.hist.iter_quantiles(ticks_per_half.max(1)) {
            total += v.count_since_last_iteration();
            out.push(PercentilePoint {
                value_us: self.us(v.value_iterated_to()),
                quantile: v.quantile_iterated_to(),
                total_count: total,
            });
        }
        out
    }

    /// Counts in `n` buckets of equal width on a log scale between the
    /// smallest and the largest value: the shape of the distribution for a
    /// terminal histogram. Empty when nothing was recorded.
    ///
    /// Every recorded value lands in exactly one bucket, so the counts add
    /// up to [`count`](Self::count), and the largest value is always in the
    /// last bucket (the tail is the point of the picture).
    pub fn log_buckets(&self, n: usize) -> Vec<Bucket> {
        if self.is_empty() || n == 0 {
            return Vec::new();
        }
        let lo = self.hist.lowest_equivalent(self.hist.min()).max(1);
        let top = self.hist.highest_equivalent(self.hist.max());
        let hi = top.saturating_add(1).max(lo + 1);
        let ratio = (hi as f64 / lo as f64).powf(1.0 / n as f64);
        let mut edges: Vec<u64> = (0..=n)
            .map(|i| ((lo as f64 * ratio.powi(i as i32)) as u64).clamp(lo, hi))
            .collect();
        edges[0] = lo;
        edges[n] = hi;
        // Rounding must not make the edges go backwards.
        for i in 1..=n {
            edges[i] = edges[i].max(edges[i - 1]);
        }
        let mut counts = vec![0u64; n];
        let min_group = self.hist.highest_equivalent(self.hist.min());
        // Walk HdrHistogram's own buckets (each a range of equivalent
        // values) and put each whole count into one bar. Splitting by
        // `count_between` instead counts a range that straddles an edge
        // twice. A range goes where its highest value falls, except the
        // minimum's range, which opens the first bar.
        for v in self.hist.iter_recorded() {
            let value = v.value_iterated_to();
            let index = if value == min_group && value != top {
                0
            } else {
                // The last bar whose lower edge is at most `value`.
                edges[..n]
                    .partition_point(|&e| e <= value)
                    .saturating_sub(1)
            };
            counts[index] += v.count_at_value();
        }
        (0..n)
            .map(|i| Bucket {
                low_us: self.us(edges[i]),
                high_us: self.us(edges[i + 1]),
                count: counts[i],
            })
            .collect()
    }
}

/// When each request of an open-loop run is meant to be sent: request `i`
/// at `start + offset + i · interval`, whatever happened to earlier ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Time of request 0, in ns on the run's clock.
    pub start_ns: u64,
    /// Time between two requests, in ns (fractional so that rates like
    /// 3 per second stay exact over long runs).
    pub interval_ns: f64,
}

impl Schedule {
    /// A schedule of `rate` requests per second, starting at `start_ns`.
    pub fn per_second(start_ns: u64, rate: f64) -> Schedule {
        Schedule {
            start_ns,
            interval_ns: 1e9 / rate,
        }
    }

    /// The intended send time of request `i`.
    pub fn intended(&self, i: u64) -> u64 {
        self.start_ns + (i as f64 * self.interval_ns) as u64
    }
}

/// The three moments of one request, in ns on one monotonic clock. In a
/// closed loop the intended time is the send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub intended: u64,
    pub sent: u64,
    pub received: u64,
}

/// Records both latency views of every request (open loop), or the one
/// view there is (closed loop, where the intended time is the send time).
#[derive(Debug, Clone)]
pub struct Recorder {
    /// From the intended send time: what a user arriving on schedule saw.
    pub corrected: Latencies,
    /// From the actual send time: what the wire took (hides stalls).
    /// `None` in a closed loop, where it would equal `corrected`.
    pub uncorrected: Option<Latencies>,
}

impl Recorder {
    /// A recorder for an open loop (both views).
    pub fn new(unit: Unit) -> Recorder {
        Recorder {
            corrected: Latencies::new(unit),
            uncorrected: Some(Latencies::new(unit)),
        }
    }

    /// A recorder for a closed loop: one histogram (half the memory and
    /// half the recording work per request).
    pub fn closed_loop(unit: Unit) -> Recorder {
        Recorder {
            corrected: Latencies::new(unit),
            uncorrected: None,
        }
    }

    pub fn record(&mut self, t: Timing) {
        // The clock is monotonic, but be safe against callers that pass an
        // intended time in the future of the send (clamp to zero).
        self.corrected
            .record_nanos(t.received.saturating_sub(t.intended.min(t.sent)));
        if let Some(u) = &mut self.uncorrected {
            u.record_nanos(t.received.saturating_sub(t.sent));
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.corrected.merge(&other.corrected);
        match (&mut self.uncorrected, &other.uncorrected) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (Some(mine), None) => mine.merge(&other.corrected),
            (None, _) => {}
        }
    }

    /// The uncorrected view: its own histogram, or the corrected one in a
    /// closed loop (where both are the same).
    pub fn uncorrected_or_corrected(&self) -> &Latencies {
        self.uncorrected.as_ref().unwrap_or(&self.corrected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        // 3 significant digits: within 0.1 % (plus rounding of the bucket).
        (a - b).abs() <= b.abs() * 0.002 + 1e-9
    }

    #[test]
    fn known_latencies_give_known_percentiles() {
        // 1..=10000 µs, one each: the p-th percentile is p·100 µs.
        let mut l = Latencies::new(Unit::Nanos);
        for us in 1..=10_000u64 {
            l.record_nanos(us * 1000);
        }
        let s = l.summary();
        assert_eq!(s.count, 10_000);
        assert!(close(s.p50_us, 5000.0), "{}", s.p50_us);
        assert!(close(s.p90_us, 9000.0), "{}", s.p90_us);
        assert!(close(s.p99_us, 9900.0), "{}", s.p99_us);
        assert!(close(s.p99_9_us, 9990.0), "{}", s.p99_9_us);
        assert!(close(s.max_us, 10_000.0), "{}", s.max_us);
        assert!(close(s.min_us, 1.0), "{}", s.min_us);
        assert!(close(s.mean_us, 5000.5), "{}", s.mean_us);
        // Standard deviation of 1..=n is sqrt((n²-1)/12).
        let sd = ((10_000f64.powi(2) - 1.0) / 12.0).sqrt();
        assert!((s.stddev_us - sd).abs() < sd * 0.002, "{}", s.stddev_us);
    }

    #[test]
    fn a_single_outlier_is_only_in_the_max() {
        let mut l = Latencies::new(Unit::Micros);
        l.record_nanos_n(20_000, 9_999);
        l.record_nanos(200_000_000);
        let s = l.summary();
        assert!(close(s.p99_9_us, 20.0));
        assert!(close(s.p99_99_us, 20.0));
        assert!(close(s.max_us, 200_000.0), "{}", s.max_us);
    }

    #[test]
    fn three_significant_digits_in_nanoseconds() {
        let mut l = Latencies::new(Unit::Nanos);
        l.record_nanos(16_437);
        assert!((l.quantile_us(0.5) - 16.437).abs() < 0.02);
    }

    #[test]
    fn merging_adds_counts_across_units() {
        let mut a = Latencies::new(Unit::Nanos);
        a.record_nanos_n(10_000, 10);
        let mut b = Latencies::new(Unit::Micros);
        b.record_nanos_n(30_000, 10);
        a.merge(&b);
        assert_eq!(a.count(), 20);
        assert!(close(a.summary().max_us, 30.0));
    }

    #[test]
    fn percentile_distribution_ends_at_100_percent_with_every_count() {
        let mut l = Latencies::new(Unit::Nanos);
        for us in 1..=1000u64 {
            l.record_nanos(us * 1000);
        }
        let d = l.percentile_distribution(5);
        let last = d.last().unwrap();
        assert_eq!(last.quantile, 1.0);
        assert_eq!(last.total_count, 1000);
        assert!(d.windows(2).all(|w| w[0].quantile <= w[1].quantile
            && w[0].value_us <= w[1].value_us
            && w[0].total_count <= w[1].total_count));
    }

    #[test]
    fn log_buckets_hold_every_value() {
        let mut l = Latencies::new(Unit::Nanos);
        for us in [10u64, 11, 12, 100, 1000, 1000, 5000] {
            l.record_nanos(us * 1000);
        }
        let b = l.log_buckets(12);
        assert_eq!(b.len(), 12);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 7);
        assert!(b[0].count >= 3, "{b:?}");
        assert!(b.windows(2).all(|w| w[0].high_us <= w[1].low_us + 1e-9));
    }

    proptest::proptest! {
        /// Any histogram: the bars hold every value exactly once, and the
        /// maximum sits in a non-empty last bar whose range contains it.
        #[test]
        fn log_buckets_count_everything_and_keep_the_max(
            values in proptest::collection::vec(1u64..5_000_000_000, 1..300),
            repeats in proptest::collection::vec(1u64..1000, 1..300),
            n in 1usize..40,
            nanos in proptest::bool::ANY,
        ) {
            let mut l = Latencies::new(if nanos { Unit::Nanos } else { Unit::Micros });
            for (v, r) in values.iter().zip(repeats.iter().cycle()) {
                l.record_nanos_n(*v, *r);
            }
            let b = l.log_buckets(n);
            let s = l.summary();
            proptest::prop_assert_eq!(b.len(), n);
            proptest::prop_assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), l.count());
            let last = b[n - 1];
            proptest::prop_assert!(last.count > 0, "{:?}", b);
            proptest::prop_assert!(last.low_us <= s.max_us && s.max_us < last.high_us, "max {} in {:?}", s.max_us, last);
            // The minimum opens the first bar (unless every value is in
            // one of HdrHistogram's ranges: then they all share the last).
            let bars_used = b.iter().filter(|b| b.count > 0).count();
            proptest::prop_assert!(b[0].count > 0 || bars_used == 1, "{:?}", b);
            proptest::prop_assert!(b[0].low_us <= s.min_us, "min {} below {:?}", s.min_us, b[0]);
            proptest::prop_assert!(b.windows(2).all(|w| w[0].high_us == w[1].low_us));
        }
    }

    /// The report that found the bug: 100 000 round trips whose bars
    /// added up to 100 098, "fixed" by zeroing the bar with the maximum.
    /// Dense values fill HdrHistogram ranges that straddle the bars' edges.
    #[test]
    fn the_tail_of_a_real_run_is_not_lost() {
        let mut l = Latencies::new(Unit::Nanos);
        for i in 0..100_000u64 {
            l.record_nanos(40_000 + i * 29); // 40 µs .. 2.94 ms
        }
        l.record_nanos(4_490_000);
        let b = l.log_buckets(12);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 100_001, "{b:?}");
        assert_eq!(b[11].count, 1, "the maximum alone in the last bar: {b:?}");
    }

    #[test]
    fn schedule_is_fixed_in_advance() {
        let s = Schedule::per_second(1_000, 10_000.0);
        assert_eq!(s.intended(0), 1_000);
        assert_eq!(s.intended(1), 101_000);
        assert_eq!(s.intended(10_000), 1_000 + 1_000_000_000);
        let three = Schedule::per_second(0, 3.0);
        assert_eq!(three.intended(3), 1_000_000_000);
    }

    /// The heart of coordinated-omission correction, without any I/O: a
    /// client on a 1 ms schedule meets a server that stalls for 100 ms.
    #[test]
    fn correction_shows_a_stall_that_the_uncorrected_view_hides() {
        let schedule = Schedule::per_second(0, 1000.0);
        let service = 20_000; // 20 µs per request normally
        let stall_at = 500;
        let stall = 100_000_000; // 100 ms
        let mut rec = Recorder::new(Unit::Nanos);
        let mut free_at = 0u64; // when the one-in-flight client can send again
        for i in 0..1000 {
            let intended = schedule.intended(i);
            let sent = intended.max(free_at);
            let took = if i == stall_at { stall } else { service };
            let received = sent + took;
            rec.record(Timing {
                intended,
                sent,
                received,
            });
            free_at = received;
        }
        let c = rec.corrected.summary();
        let u = rec.uncorrected_or_corrected().summary();
        // Uncorrected: one slow request in 1000, p99 still 20 µs.
        assert!(close(u.p99_us, 20.0), "uncorrected p99 {}", u.p99_us);
        assert!(close(u.max_us, 100_000.0));
        // Corrected: the ~100 requests that should have gone out during the
        // stall waited for it, so ~10 % of requests saw 2..100 ms: p95 is
        // about 50 ms and p99 about 90 ms, while p85 is still fast.
        assert!(c.p99_us > 80_000.0, "corrected p99 {}", c.p99_us);
        let p85 = rec.corrected.quantile_us(0.85);
        assert!(p85 < 1_000.0, "corrected p85 {p85}");
        assert!(close(c.max_us, 100_000.0));
    }
}
