//! Units at the ground floor: durations, byte sizes, request rates, bit
//! rates and percentages — parsed from what people type (`250ms`, `64KiB`,
//! `10k/s`, `10mbit`, `2%`) and formatted back for people — and the process
//! clock ([`clock::monotonic_nanos`]).
//!
//! Every layer uses these; this module uses nothing else of proto's. Two
//! kinds of "rate" exist and are kept apart by name: a *request* rate
//! (requests per second, for load generators) and a *bit* rate (bits per
//! second, for links). Mixing them up is an 8× or a million× mistake.

pub mod clock;
pub mod json;

pub use clock::monotonic_nanos;

use std::time::Duration;

/// Parses `250ms`, `1.5s`, `100us`/`100µs`, `2m`, `1h`, or `0`. A number
/// without a unit is refused (is `--rtt 100` 100 ms or 100 s?).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (value, unit) = number_and_unit(text)?;
    let seconds = match unit.as_str() {
        "ns" => value / 1e9,
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" | "sec" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "" if value == 0.0 => 0.0,
        "" => return Err(format!("{text:?}: add a unit, e.g. {value}ms or {value}s")),
        other => {
            return Err(format!(
                "{text:?}: unknown time unit {other:?} (use ns, us, ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Splits `"12.5ms"` into `(12.5, "ms")`; the number must be finite and ≥ 0.
pub fn number_and_unit(text: &str) -> Result<(f64, String), String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number followed by a unit"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?}: must be a non-negative number"));
    }
    Ok((value, unit.trim().to_ascii_lowercase()))
}

/// Parses byte sizes: `64`, `1K`/`1KiB` (1024), `1M`/`1MiB`, `1G`; `kB`/`MB` are powers of 1000.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size: use e.g. 64, 32K, 1M"))?;
    let factor: usize = match unit.trim() {
        "" | "B" | "b" => 1,
        "K" | "k" | "KiB" | "Ki" => 1 << 10,
        "M" | "MiB" | "Mi" => 1 << 20,
        "G" | "GiB" | "Gi" => 1 << 30,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{text}': use K, M or G"
            ))
        }
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses a request rate (requests per second, not bits — see
/// [`parse_bit_rate`]): `10000/s`, `10k/s`, `2.5k`, `500/ms`, `1M/s`; a
/// bare number is per second. Returns requests per second.
pub fn parse_request_rate(text: &str) -> Result<f64, String> {
    let text = text.trim();
    if text.to_ascii_lowercase().contains("bit") {
        return Err(format!(
            "'{text}' is a bandwidth, but this option counts requests per second \
             (e.g. 5000/s); an emulated link's bandwidth is --rate in proto lab, bench, \
             compare, hol and transfer"
        ));
    }
    let (amount, per) = match text.split_once('/') {
        Some((a, p)) => (a.trim(), p.trim()),
        None => (text, "s"),
    };
    let (number, factor) = match amount.char_indices().last() {
        Some((i, 'k' | 'K')) => (&amount[..i], 1e3),
        Some((i, 'M')) => (&amount[..i], 1e6),
        _ => (amount, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a rate: use e.g. 10000/s, 10k/s, 500/ms"))?;
    let per_second = match per {
        "s" | "sec" => 1.0,
        "ms" => 1e3,
        "us" | "µs" => 1e6,
        "m" | "min" => 1.0 / 60.0,
        other => {
            return Err(format!(
                "unknown time unit '/{other}' in '{text}': use /s or /ms"
            ))
        }
    };
    let rate = value * factor * per_second;
    if !(rate.is_finite() && rate > 0.0 && rate <= 1e9) {
        return Err(format!(
            "'{text}' is out of range (more than 0, at most 1G/s)"
        ));
    }
    Ok(rate)
}

/// Formats a duration for people: `300ms`, `5s`, `2m30s`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1e-3 {
        format!("{:.0}µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.0}ms", secs * 1e3)
    } else if secs < 60.0 {
        format!("{}s", trim_float(secs))
    } else {
        let m = d.as_secs() / 60;
        let s = d.as_secs() % 60;
        if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{s}s")
        }
    }
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Formats a duration exactly, in the largest unit below it: `50ms`,
/// `2.5ms`, `329ms`, `1.5s` — for link descriptions, where rounding would
/// misstate what was configured.
pub fn format_duration_exact(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us == 0.0 {
        "0".into()
    } else if us < 1000.0 {
        format!("{us}µs")
    } else if us < 1e6 {
        format!("{}ms", us / 1000.0)
    } else {
        format!("{}s", us / 1e6)
    }
}

/// A number with 3 significant digits: `0.0164`, `1.23`, `16.4`, `164`,
/// `16400` (from 16 437), `0` — table cells that
/// line up without claiming precision a clock does not have.
pub fn format_significant(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a < 10.0 {
        // 3 significant digits below 1 too: 0.0164, not 0.02.
        let decimals = (2 - a.log10().floor() as i32).clamp(2, 9) as usize;
        format!("{x:.decimals$}")
    } else if a < 100.0 {
        format!("{x:.1}")
    } else {
        // Keep 3 significant digits of larger numbers too: 123456 → 123000.
        let digits = a.log10().floor() as i32 + 1;
        let scale = 10f64.powi(digits - 3);
        format!("{:.0}", (x / scale).round() * scale)
    }
}

/// A unit for showing times: µs, ms or s. Pick one for a whole column or
/// axis with [`TimeUnit::for_micros`], so `2 020 000 µs` reads `2.02 s`
/// and the numbers beside it stay comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Micros,
    Millis,
    Seconds,
}

impl TimeUnit {
    /// The largest unit in which `max_us` (the largest value to show) is
    /// still at least 1: µs below 1 ms, ms below 1 s, else s.
    pub fn for_micros(max_us: f64) -> TimeUnit {
        if max_us.is_nan() || max_us.abs() < 1e3 {
            TimeUnit::Micros
        } else if max_us.abs() < 1e6 {
            TimeUnit::Millis
        } else {
            TimeUnit::Seconds
        }
    }

    /// `µs`, `ms` or `s`.
    pub fn symbol(self) -> &'static str {
        match self {
            TimeUnit::Micros => "µs",
            TimeUnit::Millis => "ms",
            TimeUnit::Seconds => "s",
        }
    }

    /// Microseconds in one of this unit.
    pub fn micros(self) -> f64 {
        match self {
            TimeUnit::Micros => 1.0,
            TimeUnit::Millis => 1e3,
            TimeUnit::Seconds => 1e6,
        }
    }

    /// `us` microseconds in this unit, without the symbol, 3 significant digits.
    pub fn format(self, us: f64) -> String {
        format_significant(us / self.micros())
    }
}

/// Microseconds in the unit that suits them, with its symbol: `87.0 µs`,
/// `4.30 ms`, `2.02 s`.
pub fn format_micros(us: f64) -> String {
    let unit = TimeUnit::for_micros(us);
    format!("{} {}", unit.format(us), unit.symbol())
}

/// Formats bits per second: `10 Mbit/s`, `1.5 Gbit/s`.
pub fn format_bit_rate(bps: u64) -> String {
    let b = bps as f64;
    if b >= 1e9 {
        format!("{} Gbit/s", b / 1e9)
    } else if b >= 1e6 {
        format!("{} Mbit/s", b / 1e6)
    } else if b >= 1e3 {
        format!("{} kbit/s", b / 1e3)
    } else {
        format!("{bps} bit/s")
    }
}

/// Bits per second: "10mbit", "1.5gbit", "500kbit", "64000bit" or "64000".
/// (tc's convention: "bit" suffixes are bits; "bps" would be bytes, so we
/// reject it to avoid an 8× surprise.)
pub fn parse_bit_rate(s: &str) -> Result<u64, String> {
    let (v, unit) = number_and_unit(s)?;
    let mult = match unit.as_str() {
        "" | "bit" | "bit/s" => 1.0,
        "k" | "kbit" | "kbit/s" => 1e3,
        "m" | "mbit" | "mbit/s" => 1e6,
        "g" | "gbit" | "gbit/s" => 1e9,
        u if u.contains('/') => {
            return Err(format!(
                "{s:?} counts things per unit of time, but this option is a link's bandwidth in \
                 bits per second (e.g. 10mbit); requests per second are --request-rate in \
                 proto bench and --rate in proto client"
            ))
        }
        u => {
            return Err(format!(
                "{s:?}: unknown rate unit {u:?} (use kbit, mbit, gbit)"
            ))
        }
    };
    let bps = (v * mult).round();
    if !(1.0..=1e12).contains(&bps) {
        return Err(format!("{s:?}: rate must be between 1 bit/s and 1000 gbit"));
    }
    Ok(bps as u64)
}

/// A percentage as a probability: "2%" or "2" → 0.02.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim();
    let v: f64 = t
        .parse()
        .map_err(|_| format!("{s:?}: expected a percentage like 2%"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s:?}: must be between 0% and 100%"));
    }
    Ok(v / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_of_the_other_kind_is_refused_with_the_right_flag() {
        let err = parse_bit_rate("5000/s").unwrap_err();
        assert!(err.contains("--request-rate"), "{err}");
        let err = parse_request_rate("10mbit").unwrap_err();
        assert!(err.contains("bandwidth"), "{err}");
        assert_eq!(parse_bit_rate("10mbit/s"), Ok(10_000_000));
    }

    #[test]
    fn times_switch_unit_as_they_grow() {
        assert_eq!(format_micros(87.0), "87.0 µs");
        assert_eq!(format_micros(4_300.0), "4.30 ms");
        assert_eq!(format_micros(454_576.0), "455 ms");
        assert_eq!(format_micros(2_020_000.0), "2.02 s");
        assert_eq!(format_micros(0.0), "0 µs");
        // One unit for a column: the largest value decides.
        let unit = TimeUnit::for_micros(2_020_000.0);
        assert_eq!(
            (unit.symbol(), unit.format(16_437.0)),
            ("s", "0.0164".into())
        );
        let unit = TimeUnit::for_micros(4_490.0);
        assert_eq!((unit.symbol(), unit.format(68.0)), ("ms", "0.0680".into()));
        assert_eq!(TimeUnit::for_micros(f64::NAN), TimeUnit::Micros);
        assert_eq!(format_significant(123_456.0), "123000");
        assert_eq!(format_significant(164.4), "164");
        assert_eq!(format_significant(16.44), "16.4");
        assert_eq!(format_significant(1.234), "1.23");
        assert_eq!(format_significant(0.0), "0");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("100µs"), Ok(Duration::from_micros(100)));
        assert!(parse_duration("5").is_err(), "a bare number needs a unit");
        assert!(parse_duration("-5ms").is_err());
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("32K"), Ok(32768));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2kB"), Ok(2000));
        assert!(parse_size("1X").is_err());
    }

    #[test]
    fn request_rates() {
        assert_eq!(parse_request_rate("10000/s"), Ok(10_000.0));
        assert_eq!(parse_request_rate("10k/s"), Ok(10_000.0));
        assert_eq!(parse_request_rate("2.5k"), Ok(2_500.0));
        assert_eq!(parse_request_rate("500/ms"), Ok(500_000.0));
        assert_eq!(parse_request_rate("1M/s"), Ok(1e6));
        assert!(parse_request_rate("0/s").is_err());
        assert!(parse_request_rate("fast").is_err());
        assert!(parse_request_rate("5/h").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn bit_rates() {
        assert_eq!(parse_bit_rate("10mbit"), Ok(10_000_000));
        assert_eq!(parse_bit_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_bit_rate("1.5Gbit"), Ok(1_500_000_000));
        assert_eq!(parse_bit_rate("500kbit"), Ok(500_000));
        assert_eq!(parse_bit_rate("64000"), Ok(64_000));
        assert!(parse_bit_rate("10mbps").is_err());
        assert!(parse_bit_rate("0").is_err());
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("2%"), Ok(0.02));
        assert_eq!(parse_percent("50"), Ok(0.5));
        assert_eq!(parse_percent("0.5 %"), Ok(0.005));
        assert!(parse_percent("101%").is_err());
        assert!(parse_percent("x").is_err());
    }
}
