//! The process clock: one monotonic nanosecond counter every layer shares.
//!
//! A framed request carries the client's send time in its timestamp field,
//! and the server echoes it back unchanged, so `now - timestamp` of a reply
//! is its round-trip time — but only if both readings come from the same
//! clock. This is that clock.

use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds on a monotonic clock that starts when the process first asks.
pub fn monotonic_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards() {
        let a = monotonic_nanos();
        let b = monotonic_nanos();
        assert!(b >= a);
    }
}
