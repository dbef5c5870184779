//! The cable: one dedicated thread per direction moves packets from one TUN
//! device to the other, at the times the model (`model.rs`) decides.
//!
//! Why a dedicated thread with `ppoll` instead of tokio? Timing. tokio's
//! timers have 1 ms granularity, so a 100 ms RTT built from tokio sleeps
//! measured 102.5 ms. `ppoll` takes a timeout in nanoseconds, and
//! `prctl(PR_SET_TIMERSLACK, 1)` tells the kernel not to "round up" this
//! thread's wake-ups to batch them with others (the default slack is 50 µs).
//! Together the wake-up error is a few tens of microseconds on a quiet
//! machine; busy-polling the last 100 µs before a departure (below) shaves
//! off most of the rest.
//!
//! Each loop iteration:
//! 1. read every packet waiting on the input TUN (non-blocking, up to a
//!    batch), ask the model what to do with each, and either write it out at
//!    once (nothing to wait for) or park it in a heap ordered by departure;
//! 2. write out every parked packet whose departure time has come;
//! 3. sleep in `ppoll` until the input is readable, the next departure is
//!    due, or the lab asks us to stop (an eventfd).

use super::fidelity::TimingRecorder;
use super::model::{DirectionCounters, LinkModel, Verdict};
use super::pcap::PcapWriter;
use super::tap::{LinkEvent, SentFate};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Packets read per wake-up before we write out what is due.
const BATCH: usize = 64;
/// Wake up this long before a departure and busy-poll the rest.
const SPIN_AHEAD_US: u64 = 100;
/// Busy-poll this long after the last packet before sleeping. Costs CPU
/// only while traffic flows; measured on a 2-vCPU VM it cut the RTT added
/// at zero delay from 20–75 µs (two thread wake-ups per round trip) to a
/// few µs, and raised bulk throughput.
const SPIN_IDLE_US: u64 = 100;

/// A tuning constant, overridable from the environment for experiments.
fn tuning_micros(var: &str, default: u64) -> Duration {
    let us = std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Duration::from_micros(us)
}

pub type SharedPcap = Arc<Mutex<PcapWriter<BufWriter<File>>>>;

/// Where along the link the capture sees a packet. The lab captures "as the
/// client sees it", like tcpdump on the client's interface: client→server
/// packets when they leave the client, server→client packets when they
/// reach it. A handshake in the capture then spans exactly one RTT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapturePoint {
    OnArrival,
    OnDelivery,
}

/// Everything one direction's thread needs.
pub struct Direction {
    pub name: String,
    pub input: Arc<OwnedFd>,
    pub output: Arc<OwnedFd>,
    pub model: LinkModel,
    pub mtu: usize,
    pub capture: Option<(SharedPcap, CapturePoint)>,
    /// `proto trace`'s tap: every packet and its fate, and named faults.
    pub tap: Option<(super::tap::LinkTap, crate::wire::dissect::Dir)>,
    pub shared: Arc<Mutex<DirectionCounters>>,
    /// When the bottleneck will be idle again (see `LinkModel::busy_until`),
    /// published after every batch so others can read the live queue.
    pub busy_until: Arc<Mutex<Option<Instant>>>,
    pub stop: Arc<OwnedFd>,
}

/// A packet waiting for its departure time.
struct Parked {
    at: Instant,
    /// When it entered the link.
    arrived: Instant,
    seq: u64,
    is_copy: bool,
    buf: Vec<u8>,
    len: usize,
}

// BinaryHeap is a max-heap; invert the order so the earliest departure (and
// among equal times the earliest arrival, original before copy) comes first.
impl Ord for Parked {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq, other.is_copy).cmp(&(self.at, self.seq, self.is_copy))
    }
}
impl PartialOrd for Parked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Parked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Parked {}

/// Start the thread; it returns the final counters when stopped.
pub fn spawn(dir: Direction) -> io::Result<JoinHandle<DirectionCounters>> {
    std::thread::Builder::new()
        .name(dir.name.clone())
        .spawn(move || run(dir))
}

fn run(mut d: Direction) -> DirectionCounters {
    // SAFETY: prctl with integer arguments only affects this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    // Why not a higher priority (nice -20 or real-time)? Measured here, it
    // removes a few late outliers when other programs load every CPU, but
    // then the busy-polling below starves the very applications whose
    // packets we carry: on 2 CPUs the zero-delay RTT went from ~20 µs to
    // ~210 µs. Plain priority shares the CPUs fairly.
    let input = d.input.as_raw_fd();
    let output = d.output.as_raw_fd();
    let mut heap: BinaryHeap<Parked> = BinaryHeap::new();
    // Buffers always have the full length; `Parked::len` says how much of
    // one is packet. Recycling them avoids an allocation per packet.
    let buf_len = d.mtu.max(1500) + 64;
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let spin_ahead = tuning_micros("PROTO_LAB_SPIN_AHEAD_US", SPIN_AHEAD_US);
    let spin_idle = tuning_micros("PROTO_LAB_SPIN_IDLE_US", SPIN_IDLE_US);
    let mut last_activity = Instant::now();
    let mut timing = TimingRecorder::new(d.model.config());

    loop {
        // 1. Drain the input.
        let mut read_full_batch = true;
        for _ in 0..BATCH {
            let mut buf = pool.pop().unwrap_or_else(|| vec![0u8; buf_len]);
            // SAFETY: buf is a valid writable buffer of buf.len() bytes.
            let n = unsafe { libc::read(input, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                pool.push(buf);
                read_full_batch = false;
                break; // EAGAIN (drained), EINTR or an error: poll decides.
            }
            let len = n as usize;
            let now = Instant::now();
            last_activity = now;
            capture(&d, CapturePoint::OnArrival, &buf[..len]);
            if let Some((tap, dir)) = &d.tap {
                if tap.should_drop(*dir, &buf[..len]) {
                    tap.record(LinkEvent::Sent {
                        dir: *dir,
                        seq: u64::MAX,
                        at: now,
                        bytes: buf[..len].to_vec(),
                        fate: SentFate::Fault,
                    });
                    pool.push(buf);
                    continue;
                }
            }
            let arrival = d.model.arrive(now, len);
            if let Some((tap, dir)) = &d.tap {
                tap.record(LinkEvent::Sent {
                    dir: *dir,
                    seq: arrival.seq,
                    at: now,
                    bytes: buf[..len].to_vec(),
                    fate: SentFate::from_verdict(arrival.verdict),
                });
            }
            let (at, copy_at) = match arrival.verdict {
                Verdict::Lost | Verdict::QueueFull => {
                    pool.push(buf);
                    continue;
                }
                Verdict::Deliver { at, copy_at } => (at, copy_at),
            };
            if let Some(copy_at) = copy_at {
                let mut copy = pool.pop().unwrap_or_else(|| vec![0u8; buf_len]);
                copy[..len].copy_from_slice(&buf[..len]);
                heap.push(Parked {
                    at: copy_at,
                    arrived: now,
                    seq: arrival.seq,
                    is_copy: true,
                    buf: copy,
                    len,
                });
            }
            if at <= now && heap.is_empty() {
                // Nothing scheduled ahead of it: straight through.
                let sent = Departure {
                    seq: arrival.seq,
                    is_copy: false,
                    arrived: now,
                    scheduled: at,
                };
                deliver(&mut d, &mut timing, output, sent, &buf[..len]);
                pool.push(buf);
            } else if len < buf_len / 4 {
                // A small packet (an ACK) waiting out a delay: park a
                // right-sized copy, so a large MTU does not cost 64 KiB per ACK.
                let small = buf[..len].to_vec();
                pool.push(buf);
                heap.push(Parked {
                    at,
                    arrived: now,
                    seq: arrival.seq,
                    is_copy: false,
                    buf: small,
                    len,
                });
            } else {
                heap.push(Parked {
                    at,
                    arrived: now,
                    seq: arrival.seq,
                    is_copy: false,
                    buf,
                    len,
                });
            }
        }

        // 2. Release everything that is due.
        let now = Instant::now();
        while heap.peek().is_some_and(|p| p.at <= now) {
            if let Some(p) = heap.pop() {
                let sent = Departure {
                    seq: p.seq,
                    is_copy: p.is_copy,
                    arrived: p.arrived,
                    scheduled: p.at,
                };
                deliver(&mut d, &mut timing, output, sent, &p.buf[..p.len]);
                if p.buf.len() == buf_len {
                    pool.push(p.buf);
                }
                last_activity = now;
            }
        }
        if let Ok(mut shared) = d.shared.lock() {
            *shared = d.model.counters();
        }
        if let Ok(mut busy) = d.busy_until.lock() {
            *busy = d.model.busy_until();
        }
        if pool.len() > 4 * BATCH {
            pool.truncate(4 * BATCH);
        }

        // 3. Sleep until something happens. Two refinements trade a little
        //    CPU for precision: wake `spin_ahead` before a departure and
        //    busy-poll the rest (a sleeping thread takes tens of µs to wake
        //    up on a VM), and keep busy-polling for `spin_idle` after the
        //    last packet, when the next one is likely to follow soon.
        let now = Instant::now();
        let timeout = if read_full_batch || now < last_activity + spin_idle {
            Some(Duration::ZERO)
        } else {
            heap.peek().map(|p| {
                p.at.saturating_duration_since(now)
                    .saturating_sub(spin_ahead)
            })
        };
        match wait(input, d.stop.as_raw_fd(), timeout) {
            Ok(true) => break,
            Ok(false) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }

    d.model.set_in_flight(heap.len() as u64);
    if let Some((pcap, _)) = &d.capture {
        if let Ok(mut w) = pcap.lock() {
            let _ = w.flush();
        }
    }
    let mut counters = d.model.counters();
    // The TUN's drop counter is read by the lab, inside the namespace.
    counters.timing = timing.summary(0);
    if let Ok(mut shared) = d.shared.lock() {
        *shared = counters;
    }
    counters
}

/// Which packet leaves, and when it should.
struct Departure {
    seq: u64,
    is_copy: bool,
    arrived: Instant,
    scheduled: Instant,
}

fn deliver(
    d: &mut Direction,
    timing: &mut TimingRecorder,
    output: RawFd,
    sent: Departure,
    packet: &[u8],
) {
    let Departure { seq, is_copy, .. } = sent;
    timing.departed(
        sent.arrived,
        sent.scheduled,
        Instant::now(),
        is_copy,
        packet.len(),
    );
    // Capture first: the receiving kernel may answer inside write() (the
    // client's ACK to a SYN-ACK), and the answer must not precede it in
    // the file.
    capture(d, CapturePoint::OnDelivery, packet);
    if let Some((tap, dir)) = &d.tap {
        tap.record(LinkEvent::Delivered {
            dir: *dir,
            seq,
            at: Instant::now(),
            is_copy,
        });
    }
    // SAFETY: packet is a valid readable buffer.
    let n = unsafe { libc::write(output, packet.as_ptr().cast(), packet.len()) };
    if n == packet.len() as isize {
        d.model.released(seq, is_copy, packet.len());
    } else {
        d.model.write_failed();
    }
}

fn capture(d: &Direction, point: CapturePoint, packet: &[u8]) {
    if let Some((pcap, at)) = &d.capture {
        if *at == point {
            if let Ok(mut w) = pcap.lock() {
                // Stamp inside the lock so the file's timestamps never go back.
                let _ = w.write_packet(SystemTime::now(), packet);
            }
        }
    }
}

/// ppoll on the input and the stop eventfd. Ok(true) means "stop".
fn wait(input: RawFd, stop: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd: input,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: fds is a valid array of 2 pollfd; ts_ptr is null or points to
    // a timespec that lives until the call returns; no signal mask change.
    let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, ts_ptr, std::ptr::null()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(fds[1].revents & libc::POLLIN != 0)
}

/// An eventfd used to tell the forwarder threads to stop.
pub fn stop_fd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is wrapped at once.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor we own.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Signal the stop eventfd (level-triggered: every thread polling it wakes).
pub fn signal_stop(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd.
    unsafe {
        libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8);
    }
}
