//! Numbers for JSON: the precision that was measured, not binary float
//! noise. `0.1 + 0.2` is `0.30000000000000004` as an `f64`, and a latency
//! of 454 576 ns divided by 1000 prints as `454.57599999999996`; a reader
//! (or a plotting script) should see `454.576`.
//!
//! Two tools: [`round_significant`], which any JSON output can apply to
//! every float (12 significant digits keep all a measurement carries and
//! drop the noise in the 16th and 17th), and serde helpers that write
//! durations as milliseconds rounded to the microsecond.

use std::time::Duration;

/// Significant digits kept by [`round_significant`]: far more than any
/// clock here resolves, far fewer than an `f64`'s 17 that show the noise.
pub const SIGNIFICANT_DIGITS: i32 = 12;

/// `x` rounded to [`SIGNIFICANT_DIGITS`] significant digits; non-finite
/// values and zero unchanged.
pub fn round_significant(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = SIGNIFICANT_DIGITS - 1 - magnitude;
    // Scale by a power of ten that is exact (10^k for k ≤ 22 is exact in
    // binary64); dividing by it after rounding gives the nearest double.
    if decimals >= 0 {
        let scale = 10f64.powi(decimals.min(22));
        (x * scale).round() / scale
    } else {
        let scale = 10f64.powi((-decimals).min(22));
        (x / scale).round() * scale
    }
}

/// Milliseconds rounded to the microsecond (3 decimals).
pub fn millis(d: Duration) -> f64 {
    (d.as_nanos() as f64 / 1e3).round() / 1e3
}

/// Serializes a [`Duration`] as milliseconds, to the microsecond
/// (`#[serde(serialize_with = "…duration_as_ms")]`, name the field `…_ms`).
pub fn duration_as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(millis(*d))
}

/// Like [`duration_as_ms`], for an optional duration (`null` when absent).
pub fn opt_duration_as_ms<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&millis(*d)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_goes_precision_stays() {
        assert_eq!(round_significant(454.57599999999996), 454.576);
        assert_eq!(round_significant(0.1 + 0.2), 0.3);
        assert_eq!(round_significant(454_576.0 / 1000.0).to_string(), "454.576");
        // Small and large values keep their significant digits.
        assert_eq!(
            round_significant(1.234_567_890_123_4e-9),
            1.234_567_890_12e-9
        );
        assert_eq!(
            round_significant(123_456_789_012_345.0),
            123_456_789_012_000.0
        );
        assert_eq!(round_significant(-2.5), -2.5);
        assert_eq!(round_significant(0.0), 0.0);
        assert!(round_significant(f64::NAN).is_nan());
    }

    #[test]
    fn durations_are_milliseconds_to_the_microsecond() {
        assert_eq!(millis(Duration::from_nanos(454_576_789)), 454.577);
        assert_eq!(millis(Duration::from_micros(1)), 0.001);
        let json = serde_json::to_string(&Wrapper(Duration::from_nanos(100_400_999))).unwrap();
        assert_eq!(json, "100.401");
    }

    struct Wrapper(Duration);
    impl serde::Serialize for Wrapper {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            duration_as_ms(&self.0, s)
        }
    }
}
