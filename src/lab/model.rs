//! The link's impairment model: pure, seeded, no I/O and no clock.
//!
//! This file decides *what happens to a packet* on the emulated link; the
//! forwarder (`forwarder.rs`) only moves bytes and asks this model. Like
//! quinn-proto, the model never reads a clock: the caller passes `now`, so a
//! unit test can replay any arrival pattern in microseconds and check the
//! exact departure times.
//!
//! A packet that arrives at one end of a direction goes through these stages,
//! in this order (each stage has its own random stream, so turning on jitter
//! does not change which packets are lost):
//!
//! ```text
//!   arrival ──► loss ──► bottleneck queue ──► propagation ──► reorder ──► duplicate ──► departure(s)
//!               (random    (rate + drop-tail    (delay ±        (hold some     (send a copy
//!                or GE)     buffer)              jitter)         back)          too)
//! ```
//!
//! * **Loss** is either independent ("each packet is lost with probability p")
//!   or bursty with a **Gilbert-Elliott** model (see [`LossModel`]).
//! * **Rate** models a bottleneck: a link of R bit/s needs `8·len/R` seconds to
//!   put a packet on the wire, so packets that arrive while it is busy wait in
//!   a queue. The queue holds at most `queue_packets` packets; a packet that
//!   arrives when it is full is dropped. Dropping the *arriving* packet (the
//!   tail) is called **drop-tail**, the simplest router buffer policy, and it
//!   is what makes TCP see loss when it sends faster than the bottleneck.
//! * **Delay** is the one-way propagation delay (half the RTT if both
//!   directions are equal). **Jitter** varies it uniformly in ±jitter, but a
//!   packet is never allowed to leave before the one that arrived before it:
//!   real links rarely reorder, and TCP would otherwise see spurious
//!   reordering everywhere. (So packets sent closer together than the jitter
//!   bunch up behind the slowest one, as on a link whose delay varies.) Reordering happens only when asked for
//!   (`reorder`): such a packet is held back `reorder_delay` longer and later
//!   packets overtake it.
//! * **Duplicate** sends the packet twice.

use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How packets are lost.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum LossModel {
    /// No random loss.
    #[default]
    None,
    /// Each packet is lost independently with probability `p` (0..=1).
    Random { p: f64 },
    /// Gilbert-Elliott: a two-state Markov chain. The link is either *Good*
    /// or *Bad*; before each packet it moves Good→Bad with probability
    /// `p_good_to_bad` and Bad→Good with `p_bad_to_good`, and it loses the
    /// packet with `loss_in_good` or `loss_in_bad` depending on the state.
    /// Real Wi-Fi and radio links lose packets in bursts (a microwave oven,
    /// a fade), which this reproduces: mean burst length is
    /// `1 / p_bad_to_good` packets in the Bad state.
    GilbertElliott {
        p_good_to_bad: f64,
        p_bad_to_good: f64,
        loss_in_good: f64,
        loss_in_bad: f64,
    },
}

impl LossModel {
    /// The simple Gilbert model with a given long-run loss rate and mean
    /// burst length (in packets): everything is lost in Bad, nothing in Good.
    ///
    /// Stationary probability of Bad is `p / (p + r)`; we want that to equal
    /// `loss`, and the mean stay in Bad is `1 / r = burst`.
    pub fn bursty(loss: f64, mean_burst: f64) -> LossModel {
        if loss <= 0.0 {
            return LossModel::None;
        }
        let r = 1.0 / mean_burst.max(1.0);
        let loss = loss.min(0.999_999);
        let p = (loss * r / (1.0 - loss)).min(1.0);
        LossModel::GilbertElliott {
            p_good_to_bad: p,
            p_bad_to_good: r,
            loss_in_good: 0.0,
            loss_in_bad: 1.0,
        }
    }

    /// The long-run share of packets lost, and the mean burst length (in
    /// packets) for Gilbert-Elliott: the chain is in Bad a share
    /// `p / (p + r)` of the time and stays there `1 / r` packets on average.
    pub fn long_run(&self) -> (f64, Option<f64>) {
        match *self {
            LossModel::None => (0.0, None),
            LossModel::Random { p } => (p, None),
            LossModel::GilbertElliott {
                p_good_to_bad: p,
                p_bad_to_good: r,
                loss_in_good,
                loss_in_bad,
            } => {
                let bad = if p + r > 0.0 { p / (p + r) } else { 0.0 };
                let mean = bad * loss_in_bad + (1.0 - bad) * loss_in_good;
                (mean, (r > 0.0).then(|| 1.0 / r))
            }
        }
    }

    fn validate(&self) -> Result<(), LinkConfigError> {
        let probs: Vec<f64> = match *self {
            LossModel::None => vec![],
            LossModel::Random { p } => vec![p],
            LossModel::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_in_good,
                loss_in_bad,
            } => vec![p_good_to_bad, p_bad_to_good, loss_in_good, loss_in_bad],
        };
        check_probs(&probs, "loss")
    }
}

fn check_probs(probs: &[f64], what: &'static str) -> Result<(), LinkConfigError> {
    for &p in probs {
        if !(0.0..=1.0).contains(&p) || p.is_nan() {
            return Err(LinkConfigError::Probability { what, value: p });
        }
    }
    Ok(())
}

/// Settings the link model cannot honour.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LinkConfigError {
    #[error("{what} probability {value} is outside 0..=1 (give a percentage such as 2%)")]
    Probability { what: &'static str, value: f64 },
    #[error("rate must be above 0 bit/s (e.g. --rate 10mbit)")]
    ZeroRate,
    #[error("queue must hold at least 1 packet")]
    ZeroQueue,
}

/// A link below this rate needs more than a second per full-size packet
/// (1500 bytes × 8 / 12 kbit/s = 1 s): almost surely a missing unit.
pub const SLOW_RATE_WARNING_BPS: u64 = 12_000;

/// One direction of the emulated link.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Uniform variation of the delay in ±jitter (never reorders by itself).
    pub jitter: Duration,
    pub loss: LossModel,
    /// Bottleneck rate in bit/s; `None` means as fast as the forwarder goes.
    pub rate_bps: Option<u64>,
    /// Bottleneck buffer size in packets (drop-tail); used only with a rate.
    pub queue_packets: usize,
    /// Probability (0..=1) that a packet is held back so later ones overtake it.
    pub reorder: f64,
    /// How much longer a reordered packet is held back.
    pub reorder_delay: Duration,
    /// Probability (0..=1) that a packet is delivered twice.
    pub duplicate: f64,
    /// Drop exactly these data packets (1-based, counting only packets of
    /// at least [`DATA_PACKET_MIN`] bytes): a loss that happens at the same
    /// place on every run, so a sender's response to it can be reproduced.
    pub drop_data_packets: Vec<u64>,
}

/// A packet this large or larger counts as a "data packet" for
/// [`LinkConfig::drop_data_packets`]. Pure TCP ACKs (40–92 bytes with
/// options) and QUIC ACK-only packets stay below; full segments are far above.
pub const DATA_PACKET_MIN: usize = 200;

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: LossModel::None,
            rate_bps: None,
            queue_packets: 100,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(10),
            duplicate: 0.0,
            drop_data_packets: Vec::new(),
        }
    }
}

impl LinkConfig {
    /// Reject settings the model cannot honour (probabilities outside 0..=1,
    /// a zero rate, a zero-length queue).
    pub fn validate(&self) -> Result<(), LinkConfigError> {
        self.loss.validate()?;
        check_probs(&[self.reorder], "reorder")?;
        check_probs(&[self.duplicate], "duplicate")?;
        if self.rate_bps == Some(0) {
            return Err(LinkConfigError::ZeroRate);
        }
        if self.queue_packets == 0 {
            return Err(LinkConfigError::ZeroQueue);
        }
        Ok(())
    }

    /// Settings the model honours but that are probably not what was
    /// meant, each as a sentence saying what will happen.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(rate) = self.rate_bps.filter(|&r| r < SLOW_RATE_WARNING_BPS) {
            warnings.push(format!(
                "rate {rate} bit/s: one 1500-byte packet takes {:.0} s to send; \
                 did you mean {rate}kbit or {rate}mbit?",
                transmission_time(1500, rate).as_secs_f64()
            ));
        }
        if self.jitter > self.delay {
            let f = crate::units::format_duration_exact;
            warnings.push(format!(
                "jitter ±{} is larger than the delay {}: a delay cannot go below 0, \
                 so the realised delays are not centred on {} (their mean is higher) \
                 and in-order delivery bunches packets behind the slowest",
                f(self.jitter),
                f(self.delay),
                f(self.delay)
            ));
        }
        warnings
    }
}

/// What the link did with the traffic in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirectionCounters {
    /// Packets that entered the link (sent by the host at this end).
    pub packets: u64,
    /// Bytes (whole IP packets) that entered the link.
    pub bytes: u64,
    /// Packets written out at the far end (duplicates count twice).
    pub delivered_packets: u64,
    pub delivered_bytes: u64,
    /// Lost by the loss model.
    pub dropped_loss: u64,
    /// Dropped on purpose (`drop_data_packets`).
    pub dropped_forced: u64,
    /// Dropped because the bottleneck queue was full (drop-tail).
    pub dropped_queue: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Packets delivered after a packet that entered the link later.
    pub reordered: u64,
    /// Most packets ever waiting in (or being sent from) the bottleneck queue.
    pub queue_peak: u64,
    /// Packets still inside the link when it was shut down.
    pub in_flight: u64,
    /// Packets the far end's TUN device refused (should stay 0).
    pub write_errors: u64,
    /// Runs of consecutive packets lost by the loss model (mean burst
    /// length = `dropped_loss / loss_bursts`).
    pub loss_bursts: u64,
    /// When packets actually left, against when they should have (filled
    /// in when the link stops; see `fidelity.rs`).
    pub timing: super::fidelity::LinkTiming,
}

/// A small, fast, well-mixed PRNG (SplitMix64, Steele et al. 2014). We carry
/// our own so that a seed means the same drops on every platform and every
/// version of proto, which a general-purpose crate does not promise.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A separate stream for each (seed, direction, purpose).
    pub fn stream(seed: u64, direction: u64, purpose: u64) -> Rng {
        let mut r = Rng(seed);
        let a = r.next_u64();
        Rng(a
            ^ direction.wrapping_mul(0xD6E8_FEB8_6659_FD93)
            ^ purpose.wrapping_mul(0xA076_1D64_78BD_642F))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p`. Always draws, so the stream position only
    /// depends on how many packets were seen.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// Random stream purposes (see [`Rng::stream`]).
const STREAM_LOSS: u64 = 1;
const STREAM_JITTER: u64 = 2;
const STREAM_REORDER: u64 = 3;
const STREAM_DUPLICATE: u64 = 4;

/// What happens to one arriving packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Lost by the loss model.
    Lost,
    /// The bottleneck queue was full.
    QueueFull,
    /// Leaves the far end at `at`; with `copy_at`, a duplicate leaves then too.
    Deliver {
        at: Instant,
        copy_at: Option<Instant>,
    },
}

/// The model's decision, with the packet's arrival sequence number (used to
/// count reordering when it is released).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub seq: u64,
    pub verdict: Verdict,
}

/// The state of one direction of the link.
#[derive(Debug)]
pub struct LinkModel {
    cfg: LinkConfig,
    loss_rng: Rng,
    jitter_rng: Rng,
    reorder_rng: Rng,
    dup_rng: Rng,
    /// Gilbert-Elliott state.
    in_bad_state: bool,
    /// Whether the loss model took the previous packet (to count bursts).
    previous_lost: bool,
    /// Times at which each packet in the bottleneck finishes transmission.
    queue: VecDeque<Instant>,
    /// When the bottleneck finishes sending everything queued so far.
    busy_until: Option<Instant>,
    /// Latest departure scheduled for an in-order packet (FIFO clamp).
    last_departure: Option<Instant>,
    next_seq: u64,
    /// Data packets (≥ DATA_PACKET_MIN bytes) seen so far.
    data_packets: u64,
    /// Highest arrival sequence number released so far.
    max_released: Option<u64>,
    counters: DirectionCounters,
}

impl LinkModel {
    /// `direction` separates the random streams of the two directions.
    pub fn new(cfg: LinkConfig, seed: u64, direction: u64) -> LinkModel {
        LinkModel {
            loss_rng: Rng::stream(seed, direction, STREAM_LOSS),
            jitter_rng: Rng::stream(seed, direction, STREAM_JITTER),
            reorder_rng: Rng::stream(seed, direction, STREAM_REORDER),
            dup_rng: Rng::stream(seed, direction, STREAM_DUPLICATE),
            cfg,
            in_bad_state: false,
            previous_lost: false,
            queue: VecDeque::new(),
            busy_until: None,
            last_departure: None,
            next_seq: 0,
            data_packets: 0,
            max_released: None,
            counters: DirectionCounters::default(),
        }
    }

    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    pub fn counters(&self) -> DirectionCounters {
        self.counters
    }

    /// When the bottleneck will have sent everything queued so far (`None`
    /// without a rate, or before the first packet). A packet arriving at
    /// `now` waits `busy_until - now` in the queue: the queueing delay.
    pub fn busy_until(&self) -> Option<Instant> {
        self.busy_until
    }

    /// True when the link does nothing at all to packets, so the forwarder
    /// can skip scheduling.
    pub fn is_transparent(&self) -> bool {
        let c = &self.cfg;
        c.delay.is_zero()
            && c.jitter.is_zero()
            && c.loss == LossModel::None
            && c.rate_bps.is_none()
            && c.reorder == 0.0
            && c.duplicate == 0.0
    }

    /// A packet of `len` bytes arrives at `now`: decide its fate.
    pub fn arrive(&mut self, now: Instant, len: usize) -> Arrival {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.counters.packets += 1;
        self.counters.bytes += len as u64;

        // 0. A deliberate drop of the Nth data packet.
        if len >= DATA_PACKET_MIN {
            self.data_packets += 1;
            if self.cfg.drop_data_packets.contains(&self.data_packets) {
                self.counters.dropped_forced += 1;
                return Arrival {
                    seq,
                    verdict: Verdict::Lost,
                };
            }
        }

        // 1. Loss.
        let lost = self.lose();
        if lost && !self.previous_lost {
            self.counters.loss_bursts += 1;
        }
        self.previous_lost = lost;
        if lost {
            self.counters.dropped_loss += 1;
            return Arrival {
                seq,
                verdict: Verdict::Lost,
            };
        }

        // 2. Bottleneck: serialisation at the link rate behind a drop-tail queue.
        let sent_at = match self.cfg.rate_bps {
            None => now,
            Some(rate) => {
                // Packets whose last bit has left by `now` are out of the queue.
                while self.queue.front().is_some_and(|&end| end <= now) {
                    self.queue.pop_front();
                }
                if self.queue.len() >= self.cfg.queue_packets {
                    self.counters.dropped_queue += 1;
                    return Arrival {
                        seq,
                        verdict: Verdict::QueueFull,
                    };
                }
                let start = match self.busy_until {
                    Some(busy) if busy > now => busy,
                    _ => now,
                };
                let end = start + transmission_time(len, rate);
                self.busy_until = Some(end);
                self.queue.push_back(end);
                self.counters.queue_peak = self.counters.queue_peak.max(self.queue.len() as u64);
                end
            }
        };

        // 3. Propagation delay with jitter, never earlier than the packet
        //    before it (unless this packet is picked for reordering below).
        let mut at = sent_at + self.cfg.delay;
        if !self.cfg.jitter.is_zero() {
            let j = self.cfg.jitter.as_nanos() as f64;
            let offset = (self.jitter_rng.next_f64() * 2.0 - 1.0) * j;
            let one_way = (self.cfg.delay.as_nanos() as f64 + offset).max(0.0);
            at = sent_at + Duration::from_nanos(one_way as u64);
        }

        // 4. Reordering: hold this one back; later packets overtake it.
        let held_back = self.cfg.reorder > 0.0 && self.reorder_rng.chance(self.cfg.reorder);
        if held_back {
            at += self.cfg.reorder_delay;
        } else {
            if let Some(last) = self.last_departure {
                at = at.max(last);
            }
            self.last_departure = Some(at);
        }

        // 5. Duplication: the copy follows the original immediately.
        let copy_at = if self.cfg.duplicate > 0.0 && self.dup_rng.chance(self.cfg.duplicate) {
            self.counters.duplicated += 1;
            Some(at)
        } else {
            None
        };

        Arrival {
            seq,
            verdict: Verdict::Deliver { at, copy_at },
        }
    }

    /// The forwarder wrote packet `seq` (`is_copy` for a duplicate) to the far
    /// end. Returns true if it was delivered out of order, i.e. after a
    /// packet that arrived later.
    pub fn released(&mut self, seq: u64, is_copy: bool, len: usize) -> bool {
        self.counters.delivered_packets += 1;
        self.counters.delivered_bytes += len as u64;
        if is_copy {
            return false;
        }
        let late = self.max_released.is_some_and(|max| seq < max);
        if late {
            self.counters.reordered += 1;
        }
        self.max_released = Some(self.max_released.map_or(seq, |m| m.max(seq)));
        late
    }

    /// Packets scheduled but never released (the link shut down first).
    pub fn set_in_flight(&mut self, n: u64) {
        self.counters.in_flight = n;
    }

    /// The far end refused a packet the model had scheduled.
    pub fn write_failed(&mut self) {
        self.counters.write_errors += 1;
    }

    fn lose(&mut self) -> bool {
        match self.cfg.loss {
            LossModel::None => false,
            LossModel::Random { p } => self.loss_rng.chance(p),
            LossModel::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_in_good,
                loss_in_bad,
            } => {
                // Move the Markov chain one step, then lose according to the state.
                let flip = if self.in_bad_state {
                    p_bad_to_good
                } else {
                    p_good_to_bad
                };
                if self.loss_rng.chance(flip) {
                    self.in_bad_state = !self.in_bad_state;
                }
                let p = if self.in_bad_state {
                    loss_in_bad
                } else {
                    loss_in_good
                };
                self.loss_rng.chance(p)
            }
        }
    }
}

/// Time to put `len` bytes on a wire of `rate` bit/s.
pub fn transmission_time(len: usize, rate_bps: u64) -> Duration {
    let nanos = (len as u128 * 8 * 1_000_000_000) / rate_bps as u128;
    Duration::from_nanos(nanos as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(a: Arrival) -> Instant {
        match a.verdict {
            Verdict::Deliver { at, .. } => at,
            v => panic!("expected delivery, got {v:?}"),
        }
    }

    #[test]
    fn transparent_link_delivers_at_arrival() {
        let mut m = LinkModel::new(LinkConfig::default(), 1, 0);
        assert!(m.is_transparent());
        let t0 = Instant::now();
        let a = m.arrive(t0, 100);
        assert_eq!(
            a.verdict,
            Verdict::Deliver {
                at: t0,
                copy_at: None
            }
        );
        assert!(!m.released(a.seq, false, 100));
        let c = m.counters();
        assert_eq!(
            (c.packets, c.bytes, c.delivered_packets, c.delivered_bytes),
            (1, 100, 1, 100)
        );
    }

    #[test]
    fn delay_is_added_exactly() {
        let cfg = LinkConfig {
            delay: ms(50),
            ..Default::default()
        };
        let mut m = LinkModel::new(cfg, 1, 0);
        let t0 = Instant::now();
        for i in 0..10 {
            let now = t0 + Duration::from_micros(i * 7);
            assert_eq!(at(m.arrive(now, 1500)), now + ms(50));
        }
    }

    #[test]
    fn drops_exactly_the_chosen_data_packets() {
        let cfg = LinkConfig {
            drop_data_packets: vec![2, 4],
            ..Default::default()
        };
        let mut m = LinkModel::new(cfg, 1, 0);
        let t0 = Instant::now();
        // ACK-sized packets are not counted: data packets 1..=5 are the 1500s.
        let sizes = [60, 1500, 60, 1500, 1500, 60, 1500, 1500];
        let lost: Vec<bool> = sizes
            .iter()
            .map(|&len| m.arrive(t0, len).verdict == Verdict::Lost)
            .collect();
        assert_eq!(lost, [false, false, false, true, false, false, true, false]);
        assert_eq!(m.counters().dropped_forced, 2);
        assert_eq!(m.counters().dropped_loss, 0);
    }

    #[test]
    fn rate_serialises_packets() {
        // 1500 bytes at 12 Mbit/s take exactly 1 ms on the wire.
        let cfg = LinkConfig {
            rate_bps: Some(12_000_000),
            delay: ms(10),
            ..Default::default()
        };
        let mut m = LinkModel::new(cfg, 1, 0);
        let t0 = Instant::now();
        // Three packets at once: they leave 1, 2 and 3 ms later (+ delay).
        for k in 1..=3 {
            assert_eq!(at(m.arrive(t0, 1500)), t0 + ms(k) + ms(10));
        }
        // An idle link sends a later packet right away.
        let t1 = t0 + ms(100);
        assert_eq!(at(m.arrive(t1, 1500)), t1 + ms(1) + ms(10));
        assert_eq!(m.counters().queue_peak, 3);
    }

    #[test]
    fn drop_tail_queue_drops_the_arrivals_that_do_not_fit() {
        let cfg = LinkConfig {
            rate_bps: Some(12_000_000),
            queue_packets: 5,
            ..Default::default()
        };
        let mut m = LinkModel::new(cfg, 1, 0);
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..8).map(|_| m.arrive(t0, 1500).verdict).collect();
        assert!(verdicts[..5]
            .iter()
            .all(|v| matches!(v, Verdict::Deliver { .. })));
        assert!(verdicts[5..].iter().all(|v| *v == Verdict::QueueFull));
        assert_eq!(m.counters().dropped_queue, 3);
        assert_eq!(m.counters().queue_peak, 5);
        // After 2 ms two packets have left, so two more fit.
        let t1 = t0 + ms(2);
        assert!(matches!(
            m.arrive(t1, 1500).verdict,
            Verdict::Deliver { .. }
        ));
        assert!(matches!(
            m.arrive(t1, 1500).verdict,
            Verdict::Deliver { .. }
        ));
        assert_eq!(m.arrive(t1, 1500).verdict, Verdict::QueueFull);
    }

    #[test]
    fn long_run_rate_matches_the_setting() {
        let cfg = LinkConfig {
            rate_bps: Some(10_000_000),
            queue_packets: 10_000,
            ..Default::default()
        };
        let mut m = LinkModel::new(cfg, 1, 0);
        let t0 = Instant::now();
        let mut last = t0;
        for _ in 0..1000 {
            last = at(m.arrive(t0, 1250));
        }
        // 1000 × 1250 B × 8 = 10 Mbit → exactly 1 s.
        assert_eq!(last - t0, Duration::from_secs(1));
    }

    #[test]
    fn jitter_varies_delay_but_never_reorders() {
        let cfg = LinkConfig {
            delay: ms(20),
            jitter: ms(10),
            ..Default::default()
        };
        let mut m = LinkModel::new(cfg, 7, 0);
        let t0 = Instant::now();
        let mut prev = t0;
        let mut distinct = std::collections::BTreeSet::new();
        // Packets 5 ms apart: far enough apart for their delays to differ.
        // (Packets closer together than the jitter queue behind the slowest.)
        for i in 0..2000 {
            let now = t0 + Duration::from_millis(i * 5);
            let a = m.arrive(now, 100);
            let d = at(a);
            assert!(d >= prev, "departures must stay in arrival order");
            assert!(d >= now + ms(10) && d <= now + ms(30) + ms(1));
            distinct.insert((d - now).as_micros() / 1000);
            prev = d;
            assert!(!m.released(a.seq, false, 100));
        }
        assert!(
            distinct.len() > 10,
            "jitter should spread delays: {distinct:?}"
        );
        assert_eq!(m.counters().reordered, 0);
    }

    #[test]
    fn random_loss_rate_and_seed_determinism() {
        let cfg = LinkConfig {
            loss: LossModel::Random { p: 0.1 },
            ..Default::default()
        };
        let run = |seed| {
            let mut m = LinkModel::new(cfg.clone(), seed, 0);
            let t0 = Instant::now();
            (0..20_000)
                .map(|_| m.arrive(t0, 10).verdict == Verdict::Lost)
                .collect::<Vec<bool>>()
        };
        let a = run(42);
        assert_eq!(a, run(42), "same seed, same drops");
        assert_ne!(a, run(43), "another seed, other drops");
        let lost = a.iter().filter(|&&l| l).count() as f64 / a.len() as f64;
        assert!((lost - 0.1).abs() < 0.01, "loss {lost}");
    }

    #[test]
    fn the_two_directions_draw_different_streams() {
        let cfg = LinkConfig {
            loss: LossModel::Random { p: 0.5 },
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut a = LinkModel::new(cfg.clone(), 1, 0);
        let mut b = LinkModel::new(cfg, 1, 1);
        let va: Vec<_> = (0..64).map(|_| a.arrive(t0, 1).verdict).collect();
        let vb: Vec<_> = (0..64).map(|_| b.arrive(t0, 1).verdict).collect();
        assert_ne!(va, vb);
    }

    #[test]
    fn gilbert_elliott_loses_in_bursts() {
        let cfg = LinkConfig {
            loss: LossModel::bursty(0.05, 4.0),
            ..Default::default()
        };
        let mut m = LinkModel::new(cfg, 3, 0);
        let t0 = Instant::now();
        let lost: Vec<bool> = (0..200_000)
            .map(|_| m.arrive(t0, 10).verdict == Verdict::Lost)
            .collect();
        let rate = lost.iter().filter(|&&l| l).count() as f64 / lost.len() as f64;
        assert!((rate - 0.05).abs() < 0.005, "long-run loss {rate}");
        // Mean length of runs of consecutive losses.
        let (mut runs, mut in_run) = (0u64, false);
        for &l in &lost {
            if l && !in_run {
                runs += 1;
            }
            in_run = l;
        }
        let mean_burst = lost.iter().filter(|&&l| l).count() as f64 / runs as f64;
        assert!((mean_burst - 4.0).abs() < 0.3, "mean burst {mean_burst}");
        // The counters count the same bursts.
        assert_eq!(m.counters().loss_bursts, runs);
    }

    #[test]
    fn duplicates_follow_the_original() {
        let cfg = LinkConfig {
            duplicate: 0.2,
            delay: ms(5),
            ..Default::default()
        };
        let mut m = LinkModel::new(cfg, 9, 0);
        let t0 = Instant::now();
        let mut copies = 0;
        for _ in 0..10_000 {
            if let Verdict::Deliver {
                at,
                copy_at: Some(c),
            } = m.arrive(t0, 10).verdict
            {
                assert_eq!(at, c);
                copies += 1;
            }
        }
        assert_eq!(m.counters().duplicated, copies);
        assert!((copies as f64 / 10_000.0 - 0.2).abs() < 0.02);
    }

    #[test]
    fn reordered_packets_are_overtaken_and_counted_on_release() {
        let cfg = LinkConfig {
            delay: ms(10),
            reorder: 0.1,
            reorder_delay: ms(5),
            ..Default::default()
        };
        let mut m = LinkModel::new(cfg, 5, 0);
        let t0 = Instant::now();
        // 1 packet per ms: a held-back packet is overtaken by the next 4-5.
        let mut sched: Vec<(Instant, u64)> = (0..1000)
            .map(|i| {
                let a = m.arrive(t0 + ms(i), 100);
                (at(a), a.seq)
            })
            .collect();
        sched.sort();
        // What a receiver sees: a packet is late if a higher seq came first.
        let (mut max, mut late) = (None::<u64>, 0u64);
        for &(_, seq) in &sched {
            if max.is_some_and(|m| seq < m) {
                late += 1;
            }
            max = Some(max.map_or(seq, |m| m.max(seq)));
            m.released(seq, false, 100);
        }
        assert!(late > 50 && late < 150, "late {late}");
        assert_eq!(m.counters().reordered, late);
    }

    #[test]
    fn bursty_helper_handles_edges() {
        assert_eq!(LossModel::bursty(0.0, 3.0), LossModel::None);
        assert!(LossModel::bursty(0.5, 1.0).validate().is_ok());
        assert!(LossModel::bursty(1.0, 10.0).validate().is_ok());
    }

    #[test]
    fn invalid_configs_are_rejected() {
        assert!(LinkConfig {
            duplicate: 1.5,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(LinkConfig {
            rate_bps: Some(0),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(LinkConfig {
            queue_packets: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(LinkConfig {
            loss: LossModel::Random { p: -0.1 },
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}

#[cfg(test)]
mod properties {
    //! Properties that must hold for *any* settings and traffic.
    use super::*;
    use proptest::prelude::*;

    fn config() -> impl Strategy<Value = LinkConfig> {
        (
            0u64..50_000,                              // delay µs
            0u64..20_000,                              // jitter µs
            0.0f64..0.5,                               // loss
            prop::option::of(100_000u64..100_000_000), // rate
            1usize..50,                                // queue
            0.0f64..0.3,                               // reorder
            0.0f64..0.3,                               // duplicate
            prop::collection::vec(1u64..50, 0..3),     // forced drops
        )
            .prop_map(
                |(d, j, loss, rate, queue, reorder, duplicate, drops)| LinkConfig {
                    delay: Duration::from_micros(d),
                    jitter: Duration::from_micros(j),
                    loss: LossModel::Random { p: loss },
                    rate_bps: rate,
                    queue_packets: queue,
                    reorder,
                    reorder_delay: Duration::from_millis(3),
                    duplicate,
                    drop_data_packets: drops,
                },
            )
    }

    proptest! {
        #[test]
        fn every_packet_is_accounted_for_and_never_early(
            cfg in config(),
            seed in any::<u64>(),
            gaps in prop::collection::vec((0u64..3_000, 40usize..1500), 1..300),
        ) {
            let mut m = LinkModel::new(cfg.clone(), seed, 0);
            let t0 = Instant::now();
            let mut now = t0;
            let mut last_in_order: Option<Instant> = None;
            let mut scheduled = 0u64;
            let mut departures = Vec::new();
            for (gap_us, len) in gaps {
                now += Duration::from_micros(gap_us);
                let a = m.arrive(now, len);
                if let Verdict::Deliver { at, copy_at } = a.verdict {
                    // Never before the minimum one-way delay.
                    prop_assert!(at >= now + cfg.delay.saturating_sub(cfg.jitter));
                    if cfg.reorder == 0.0 {
                        // Without --reorder, departures keep arrival order.
                        prop_assert!(last_in_order.is_none_or(|l| at >= l));
                        last_in_order = Some(at);
                    }
                    scheduled += 1 + copy_at.is_some() as u64;
                    departures.push((at, a.seq, false, len));
                    if let Some(c) = copy_at {
                        departures.push((c, a.seq, true, len));
                    }
                }
            }
            let c = m.counters();
            prop_assert!(c.queue_peak <= cfg.queue_packets as u64);
            prop_assert_eq!(
                c.packets,
                c.dropped_loss + c.dropped_queue + c.dropped_forced + scheduled - c.duplicated
            );
            // Release in departure order, as the forwarder does.
            departures.sort();
            for (_, seq, is_copy, len) in departures {
                m.released(seq, is_copy, len);
            }
            let c = m.counters();
            prop_assert_eq!(c.delivered_packets, scheduled);
            if cfg.reorder == 0.0 {
                prop_assert_eq!(c.reordered, 0);
            }
        }
    }
}
