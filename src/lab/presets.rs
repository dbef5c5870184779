//! Named links (`--link australia`): the delay, jitter, loss and rate of a
//! kind of path people meet, each with where its numbers come from.
//!
//! A preset only fills in what the user did not give: `--link 3g --rtt
//! 100ms` is a 3G link with a 100 ms round trip. The figures are for the
//! whole path (client ⇄ server), as the sources state them; the lab splits
//! the round trip evenly between the two directions.

use std::time::Duration;

/// One named link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preset {
    /// The name on the command line.
    pub name: &'static str,
    /// Round-trip time added by the link.
    pub rtt: Duration,
    /// Delay varies uniformly by ± this much in each direction.
    pub jitter: Duration,
    /// Packet loss per direction (0..1).
    pub loss: f64,
    /// Mean loss-burst length in packets (Gilbert-Elliott), when bursty.
    pub loss_burst: Option<f64>,
    /// Bottleneck rate client→server (upload), bit/s.
    pub up_rate: Option<u64>,
    /// Bottleneck rate server→client (download), bit/s.
    pub down_rate: Option<u64>,
    /// Where the numbers come from, in one line.
    pub source: &'static str,
}

/// Every preset, in the order `--help` lists them.
pub static PRESETS: [Preset; 6] = [
    Preset {
        name: "australia",
        rtt: Duration::from_millis(329),
        jitter: Duration::ZERO,
        loss: 0.0,
        loss_burst: None,
        up_rate: None,
        down_rate: None,
        source: "329 ms RTT: the lecture's ping from Europe to Australia (CLAIMS.md C2, C5)",
    },
    Preset {
        name: "wifi",
        rtt: Duration::from_millis(20),
        jitter: Duration::from_millis(5),
        loss: 0.01,
        loss_burst: Some(3.0),
        up_rate: Some(50_000_000),
        down_rate: Some(50_000_000),
        source: "20 ms RTT ±5 ms, 1% loss in bursts of 3, 50 Mbit/s: an illustrative busy home Wi-Fi (no standard profile exists)",
    },
    Preset {
        name: "lte",
        rtt: Duration::from_millis(70),
        jitter: Duration::ZERO,
        loss: 0.0,
        loss_burst: None,
        up_rate: Some(12_000_000),
        down_rate: Some(12_000_000),
        source: "70 ms RTT, 12/12 Mbit/s: WebPageTest's \"LTE\" connectivity profile",
    },
    Preset {
        name: "3g",
        rtt: Duration::from_millis(300),
        jitter: Duration::ZERO,
        loss: 0.0,
        loss_burst: None,
        up_rate: Some(768_000),
        down_rate: Some(1_600_000),
        source: "300 ms RTT, 1.6 Mbit/s down, 768 kbit/s up: WebPageTest's \"3G\" connectivity profile",
    },
    Preset {
        name: "satellite-geo",
        rtt: Duration::from_millis(600),
        jitter: Duration::ZERO,
        loss: 0.0,
        loss_burst: None,
        up_rate: None,
        down_rate: None,
        source: "600 ms RTT: a geostationary hop each way, at least 558 ms of propagation alone (RFC 2488 §2), plus processing",
    },
    Preset {
        name: "dsl",
        rtt: Duration::from_millis(50),
        jitter: Duration::ZERO,
        loss: 0.0,
        loss_burst: None,
        up_rate: Some(384_000),
        down_rate: Some(1_500_000),
        source: "50 ms RTT, 1.5 Mbit/s down, 384 kbit/s up: WebPageTest's \"DSL\" connectivity profile",
    },
];

impl Preset {
    /// The preset called `name`, if there is one.
    pub fn by_name(name: &str) -> Option<&'static Preset> {
        PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// The names, comma-separated (for error messages).
    pub fn names() -> String {
        PRESETS
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for p in &PRESETS {
            assert_eq!(Preset::by_name(p.name), Some(p));
            assert_eq!(PRESETS.iter().filter(|q| q.name == p.name).count(), 1);
            assert!(!p.source.is_empty());
            assert!(
                p.jitter <= p.rtt / 2,
                "{}: jitter above the one-way delay",
                p.name
            );
        }
        assert_eq!(
            Preset::by_name("Australia").map(|p| p.rtt),
            Some(Duration::from_millis(329))
        );
        assert!(Preset::by_name("moon").is_none());
    }
}
