//! Keeping an open loop's send times to the microsecond: one policy, two
//! ways to sleep.
//!
//! Sending 10 000 requests per second on time needs a wake-up every 100 µs.
//! tokio's timers tick in whole milliseconds (requests would leave in
//! bursts, 10 per tick, and the coordinated-omission correction would
//! charge the server for the client's lateness), and even a precise kernel
//! timer wakes a thread some µs late. So the [`WakePolicy`]:
//!
//! 1. asks to be woken `lead` before the deadline,
//! 2. learns `lead` from how late each wake-up actually was (a moving
//!    average, aiming 1.5× the usual lateness early, at most
//!    [`MAX_LEAD_NS`]),
//! 3. spends the last stretch yielding the CPU in a loop until the
//!    deadline (yielding, not just spinning, lets a server pinned to the
//!    same CPU run meanwhile).
//!
//! ```text
//!   now ──── sleep ────┬── wake-up delay ──┬─ yield… ─┐
//!                   wake_at             woke up    deadline
//!                      │←──────── lead ──────────────→│
//! ```
//!
//! The back-ends only sleep: [`ThreadTimer`] with `nanosleep` (the kernel's
//! timer slack set to 1 µs for the thread, instead of 50 µs), [`TaskTimer`]
//! with a `timerfd` registered with tokio on Linux (tokio's own timer
//! elsewhere).

use crate::units::monotonic_nanos;
use std::time::Duration;

/// How early the first wake-up is asked for, before anything is learnt.
pub const INITIAL_LEAD_NS: u64 = 20_000;
/// The most the timer asks to be woken early (and so the longest spin).
pub const MAX_LEAD_NS: u64 = 50_000;
/// Deadlines closer than this are not worth a sleep: yield until then.
const MIN_SLEEP_NS: u64 = 2_000;

/// When to ask for a wake-up, learnt from how late the last ones were.
/// Pure: times are ns on one monotonic clock, passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakePolicy {
    lead_ns: u64,
}

impl Default for WakePolicy {
    fn default() -> Self {
        WakePolicy {
            lead_ns: INITIAL_LEAD_NS,
        }
    }
}

impl WakePolicy {
    /// The current lead, in ns.
    pub fn lead_ns(&self) -> u64 {
        self.lead_ns
    }

    /// For a deadline, at `now`: the time to ask to be woken at, or `None`
    /// when the deadline is too close (or past) to sleep at all.
    pub fn wake_at(&self, deadline_ns: u64, now_ns: u64) -> Option<u64> {
        let wake_at = deadline_ns.saturating_sub(self.lead_ns);
        (wake_at > now_ns + MIN_SLEEP_NS).then_some(wake_at)
    }

    /// Learns from a wake-up asked for `wake_at` that came at `woke_ns`.
    pub fn learn(&mut self, wake_at: u64, woke_ns: u64) {
        let late = woke_ns.saturating_sub(wake_at);
        let target = (late + late / 2).min(MAX_LEAD_NS);
        self.lead_ns = (self.lead_ns * 7 + target) / 8;
    }
}

/// The last stretch before a deadline, on any thread: yield until it is due.
fn yield_until(deadline_ns: u64) {
    while monotonic_nanos() < deadline_ns {
        std::thread::yield_now();
    }
}

/// The policy with a blocking sleep, for one thread.
#[derive(Debug)]
pub struct ThreadTimer {
    policy: WakePolicy,
}

impl ThreadTimer {
    /// Call on the thread that will sleep: it sets that thread's timer slack.
    pub fn new() -> ThreadTimer {
        #[cfg(target_os = "linux")]
        // SAFETY: PR_SET_TIMERSLACK takes an integer and touches only the
        // calling thread's scheduling parameters.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
        }
        ThreadTimer {
            policy: WakePolicy::default(),
        }
    }

    /// Blocks until `deadline_ns` on [`monotonic_nanos`]'s clock.
    pub fn sleep_until(&mut self, deadline_ns: u64) {
        let now = monotonic_nanos();
        if let Some(wake_at) = self.policy.wake_at(deadline_ns, now) {
            std::thread::sleep(Duration::from_nanos(wake_at - now));
            self.policy.learn(wake_at, monotonic_nanos());
        }
        yield_until(deadline_ns);
    }
}

impl Default for ThreadTimer {
    fn default() -> Self {
        ThreadTimer::new()
    }
}

/// The policy with an async sleep, for one task.
pub struct TaskTimer {
    policy: WakePolicy,
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl TaskTimer {
    /// Call inside a tokio runtime (the timerfd registers with it).
    pub fn new() -> TaskTimer {
        TaskTimer {
            policy: WakePolicy::default(),
            #[cfg(target_os = "linux")]
            fd: timerfd::create(),
        }
    }

    /// Waits until `deadline_ns` on [`monotonic_nanos`]'s clock.
    pub async fn sleep_until(&mut self, deadline_ns: u64) {
        let now = monotonic_nanos();
        if let Some(wake_at) = self.policy.wake_at(deadline_ns, now) {
            self.sleep(wake_at - now).await;
            self.policy.learn(wake_at, monotonic_nanos());
        }
        yield_until(deadline_ns);
    }

    async fn sleep(&self, wait_ns: u64) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            if timerfd::sleep(fd, wait_ns).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_nanos(wait_ns)).await;
    }
}

impl Default for TaskTimer {
    fn default() -> Self {
        TaskTimer::new()
    }
}

#[cfg(target_os = "linux")]
mod timerfd {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use tokio::io::unix::AsyncFd;

    pub fn create() -> Option<AsyncFd<OwnedFd>> {
        // SAFETY: timerfd_create has no memory-safety preconditions; a
        // non-negative result is a fresh descriptor that we now own.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a valid descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an OwnedFd keeps its descriptor open, and returns the same
        // one from as_raw_fd, until it is dropped with the AsyncFd.
        unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
    }

    /// Arms the timer `wait_ns` from now and waits until it fires.
    pub async fn sleep(fd: &AsyncFd<OwnedFd>, wait_ns: u64) -> std::io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (wait_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (wait_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: the descriptor is a timerfd we own; `spec` is a valid
        // itimerspec and the old value is not requested (null).
        let rc = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        loop {
            let mut guard = fd.readable().await?;
            let read = guard.try_io(|inner| {
                let mut expirations = [0u8; 8];
                // SAFETY: reading 8 bytes into an 8-byte buffer.
                let n = unsafe {
                    libc::read(
                        inner.get_ref().as_raw_fd(),
                        expirations.as_mut_ptr().cast(),
                        expirations.len(),
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_only_when_the_deadline_is_far_enough() {
        let p = WakePolicy::default();
        assert_eq!(p.wake_at(1_000_000, 0), Some(1_000_000 - INITIAL_LEAD_NS));
        assert_eq!(p.wake_at(INITIAL_LEAD_NS + 1_000, 0), None, "yield instead");
        assert_eq!(p.wake_at(5, 10), None, "already due");
    }

    #[test]
    fn the_lead_follows_the_lateness_of_wake_ups() {
        let mut p = WakePolicy::default();
        // Wake-ups 4 µs late: the lead settles at 1.5 × 4 µs.
        for i in 0..100 {
            let wake_at = i * 1_000_000;
            p.learn(wake_at, wake_at + 4_000);
        }
        assert!((5_900..=6_100).contains(&p.lead_ns()), "{}", p.lead_ns());
        // Very late wake-ups: the lead (and so the spin) stays bounded.
        for i in 0..100 {
            p.learn(i, i + 10_000_000);
        }
        assert!(p.lead_ns() <= MAX_LEAD_NS);
    }

    #[test]
    fn a_thread_timer_is_never_early() {
        let mut t = ThreadTimer::new();
        for _ in 0..5 {
            let deadline = monotonic_nanos() + 300_000;
            t.sleep_until(deadline);
            assert!(monotonic_nanos() >= deadline);
        }
    }

    #[tokio::test]
    async fn a_task_timer_is_never_early() {
        let mut t = TaskTimer::new();
        for _ in 0..5 {
            let deadline = monotonic_nanos() + 300_000;
            t.sleep_until(deadline).await;
            assert!(monotonic_nanos() >= deadline);
        }
    }
}
