//! Load results as text: the percentile table, the throughput line, an
//! ASCII histogram, HdrHistogram's `.hgrm` percentile distribution, JSON.
//!
//! Pure functions from [`LoadReport`] (or its parts) to `String`s; the
//! command decides where they go.

use crate::measure::histogram::{Bucket, Latencies, LatencySummary, PercentilePoint};
use crate::measure::load::{ConnectionFailure, LoadConfig, LoadReport, Stop};
use crate::transport::Transport;
use crate::units::{format_micros, TimeUnit};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use serde::Serialize;
use std::fmt::Write;

/// The column heads of the percentile table, and how to pick each number.
/// Picks one number out of a summary.
type Pick = fn(&LatencySummary) -> f64;

const COLUMNS: [(&str, Pick); 8] = [
    ("p50", |s| s.p50_us),
    ("p90", |s| s.p90_us),
    ("p99", |s| s.p99_us),
    ("p99.9", |s| s.p99_9_us),
    ("p99.99", |s| s.p99_99_us),
    ("max", |s| s.max_us),
    ("mean", |s| s.mean_us),
    ("stddev", |s| s.stddev_us),
];

/// The percentile table: one row per `(label, summary)`, each value in the
/// unit that suits it (`16.4 µs`, `1.20 ms`, `2.02 s`): a run's p50 and
/// its max can lie five orders of magnitude apart.
pub fn percentile_table(rows: &[(&str, LatencySummary)]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let mut head = vec![Cell::new("latency")];
    head.extend(COLUMNS.iter().map(|(name, _)| Cell::new(name)));
    table.set_header(head);
    for (label, summary) in rows {
        let mut row = vec![Cell::new(label)];
        row.extend(COLUMNS.iter().map(|(_, pick)| {
            Cell::new(format_micros(pick(summary))).set_alignment(CellAlignment::Right)
        }));
        table.add_row(row);
    }
    table.to_string()
}

/// The rows of a report's table: the latency, and in an open loop also the
/// uncorrected view, so that the difference is visible.
pub fn report_rows(report: &LoadReport) -> Vec<(&'static str, LatencySummary)> {
    if report.config.rate.is_some() {
        vec![
            ("corrected", report.latency.summary()),
            ("uncorrected", report.uncorrected.summary()),
        ]
    } else {
        vec![("round trip", report.latency.summary())]
    }
}

/// What carries a load's requests, one request in flight on each, named
/// as its transport names it: TCP and TLS open connections; QUIC and SCTP
/// open streams inside a few connections (associations); UDP has no
/// connection at all, only sockets sending datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lanes {
    Connections(usize),
    Streams {
        transport: Transport,
        connections: usize,
        per_connection: usize,
    },
    Sockets(usize),
}

impl Lanes {
    /// `connections` connections (sockets for UDP) of `transport`, each
    /// with `streams` streams where the transport has streams.
    pub fn new(transport: Transport, connections: usize, streams: usize) -> Lanes {
        match transport {
            Transport::Udp => Lanes::Sockets(connections),
            Transport::Quic | Transport::Sctp => Lanes::Streams {
                transport,
                connections,
                per_connection: streams.max(1),
            },
            _ => Lanes::Connections(connections),
        }
    }

    /// How many requests can be in flight at once (one per lane).
    pub fn count(&self) -> usize {
        match *self {
            Lanes::Connections(n) | Lanes::Sockets(n) => n,
            Lanes::Streams {
                connections,
                per_connection,
                ..
            } => connections * per_connection,
        }
    }

    /// What one lane is: `connection`, `stream` or `socket`.
    pub fn unit(&self) -> &'static str {
        match self {
            Lanes::Connections(_) => "connection",
            Lanes::Streams { .. } => "stream",
            Lanes::Sockets(_) => "socket",
        }
    }

    /// Lane `i` (0-based, as the load numbers them: each connection's
    /// streams in turn) in words: `connection 3`, `socket 1`,
    /// `QUIC connection 2, stream 3`.
    pub fn name(&self, i: usize) -> String {
        match *self {
            Lanes::Connections(_) => format!("connection {}", i + 1),
            Lanes::Sockets(_) => format!("socket {}", i + 1),
            Lanes::Streams {
                transport,
                per_connection,
                ..
            } => format!(
                "{} {}, stream {}",
                if transport == Transport::Sctp {
                    "SCTP association"
                } else {
                    "QUIC connection"
                },
                i / per_connection + 1,
                i % per_connection
            ),
        }
    }

    /// `2 connections`, `2 QUIC connections × 4 streams = 8 streams`,
    /// `1 SCTP association × 2 streams = 2 streams`, `1 UDP socket`.
    pub fn describe(&self) -> String {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        match *self {
            Lanes::Connections(n) => plural(n, "connection"),
            Lanes::Sockets(n) => format!("{} (no connections: datagrams)", plural(n, "UDP socket")),
            Lanes::Streams {
                transport,
                connections,
                per_connection,
            } => {
                let carrier = if transport == Transport::Sctp {
                    "SCTP association"
                } else {
                    "QUIC connection"
                };
                format!(
                    "{} × {} = {}",
                    plural(connections, carrier),
                    plural(per_connection, "stream"),
                    plural(self.count(), "stream")
                )
            }
        }
    }
}

/// Throughput, errors and losses as a few lines of text.
pub fn summary_lines(report: &LoadReport, lanes: Lanes) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "throughput: {:.0} requests/s, {:.2} MB/s one way ({} bytes per message), {} requests in {:.3} s",
        report.requests_per_sec(),
        report.megabytes_per_sec(),
        report.config.message_bytes(),
        report.latency.count(),
        report.elapsed.as_secs_f64()
    );
    let _ = write!(
        out,
        "errors: {} wrong replies, {} failed {}s",
        report.mismatches,
        report.failed_connections,
        lanes.unit()
    );
    if report.lost > 0 || report.late > 0 || report.duplicates > 0 {
        let _ = write!(
            out,
            ", {} lost ({:.2} %), {} late, {} duplicated",
            report.lost,
            report.loss_ratio() * 100.0,
            report.late,
            report.duplicates
        );
    }
    if report.unsent > 0 {
        let _ = write!(
            out,
            ", {} scheduled requests never sent (the server could not keep up with --rate)",
            report.unsent
        );
    }
    out.push('\n');
    for e in &report.errors {
        let _ = writeln!(out, "  {}: {}", lanes.name(e.connection), e.failure);
    }
    out
}

/// A horizontal bar chart of `buckets` (log-spaced latency ranges), `width`
/// characters for the longest bar.
pub fn ascii_histogram(buckets: &[Bucket], width: usize) -> String {
    let mut out = String::new();
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0);
    if max == 0 {
        return out;
    }
    let largest = buckets.iter().map(|b| b.high_us).fold(0.0, f64::max);
    let unit = TimeUnit::for_micros(largest);
    let labels: Vec<String> = buckets
        .iter()
        .map(|b| {
            format!(
                "{} – {} {}",
                unit.format(b.low_us),
                unit.format(b.high_us),
                unit.symbol()
            )
        })
        .collect();
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    for (b, label) in buckets.iter().zip(&labels) {
        // Eighths of a character, so small counts still show.
        let eighths = (b.count as f64 / max as f64 * width as f64 * 8.0).round() as usize;
        let mut bar = "█".repeat(eighths / 8);
        if !eighths.is_multiple_of(8) {
            bar.push(['▏', '▎', '▍', '▌', '▋', '▊', '▉'][eighths % 8 - 1]);
        } else if b.count > 0 && eighths == 0 {
            bar.push('▏');
        }
        let _ = writeln!(
            out,
            "{label:>label_width$} │{bar:<width$} {}",
            b.count,
            width = width + 1
        );
    }
    out
}

/// HdrHistogram's percentile-distribution text (`outputPercentileDistribution`
/// of the Java library, what wrk2 prints and the HdrHistogram plotter
/// reads). Values are in milliseconds, as the plotter expects.
pub fn hgrm(latencies: &Latencies) -> String {
    const TO_MS: f64 = 1e-3;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for p in latencies.percentile_distribution(5) {
        let value = p.value_us * TO_MS;
        if p.quantile < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.6} {:2.12} {:10} {:14.2}",
                p.quantile,
                p.total_count,
                1.0 / (1.0 - p.quantile)
            );
        } else {
            let _ = writeln!(out, "{value:12.6} {:2.12} {:10}", p.quantile, p.total_count);
        }
    }
    let s = latencies.summary();
    let h = latencies.histogram();
    let _ = writeln!(
        out,
        "#[Mean    = {:12.6}, StdDeviation   = {:12.6}]",
        s.mean_us * TO_MS,
        s.stddev_us * TO_MS
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.6}, Total count    = {:12}]",
        s.max_us * TO_MS,
        s.count
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h.sigfig())
    );
    out
}

/// HdrHistogram's sub-bucket count for a precision: the power of two
/// that holds 2 × 10^digits (2048 for 3 digits).
fn sub_buckets(digits: u8) -> u64 {
    (2 * 10u64.pow(u32::from(digits))).next_power_of_two()
}

/// A whole run as JSON (everything the text shows, and the percentile
/// distribution).
#[derive(Debug, Serialize)]
pub struct LoadJson<'a> {
    pub transport: &'a str,
    pub target: &'a str,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Connections (QUIC, TCP, TLS) or SCTP associations; `null` for UDP,
    /// which has none.
    pub connections: Option<usize>,
    /// QUIC and SCTP: streams in each connection (association).
    pub streams_per_connection: Option<usize>,
    /// UDP: sockets sending datagrams.
    pub sockets: Option<usize>,
    /// What carries one request in flight: `connection`, `stream` or `socket`.
    pub lane: &'static str,
    /// How many of them: requests in flight at once in a closed loop.
    pub lanes: usize,
    pub size: usize,
    pub framed: bool,
    pub message_bytes: usize,
    pub count: Option<u64>,
    pub duration_s: Option<f64>,
    pub warmup_s: f64,
    pub rate_per_s: Option<f64>,
    pub requests: u64,
    pub warmup_requests: u64,
    pub mismatches: u64,
    pub lost: u64,
    pub loss_ratio: f64,
    pub late: u64,
    pub duplicates: u64,
    pub unsent: u64,
    /// Lanes (see `lane`: connections, streams or sockets) that failed.
    pub failed: u64,
    pub errors: &'a [ConnectionFailure],
    pub elapsed_s: f64,
    pub requests_per_s: f64,
    pub mb_per_s: f64,
    /// In an open loop: corrected for coordinated omission.
    pub latency_us: LatencySummary,
    /// Open loop only: from the actual send times.
    pub uncorrected_latency_us: Option<LatencySummary>,
    pub percentiles: Vec<PercentilePoint>,
    /// `proto bench`: where client and servers ran (`one-cpu`, `two-cpus`,
    /// `unpinned`, `lab`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<&'static str>,
}

impl<'a> LoadJson<'a> {
    pub fn new(
        report: &'a LoadReport,
        transport: &'a str,
        target: &'a str,
        lanes: Lanes,
    ) -> LoadJson<'a> {
        let (connections, streams_per_connection, sockets) = match lanes {
            Lanes::Connections(n) => (Some(n), None, None),
            Lanes::Streams {
                connections,
                per_connection,
                ..
            } => (Some(connections), Some(per_connection), None),
            Lanes::Sockets(n) => (None, None, Some(n)),
        };
        LoadJson {
            transport,
            target,
            mode: if report.config.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            connections,
            streams_per_connection,
            sockets,
            lane: lanes.unit(),
            lanes: lanes.count(),
            size: report.config.size,
            framed: report.config.framed,
            message_bytes: report.config.message_bytes(),
            count: match report.config.stop {
                Stop::Count(n) => Some(n),
                Stop::Duration(_) => None,
            },
            duration_s: match report.config.stop {
                Stop::Duration(d) => Some(d.as_secs_f64()),
                Stop::Count(_) => None,
            },
            warmup_s: report.config.warmup.as_secs_f64(),
            rate_per_s: report.config.rate,
            requests: report.requests,
            warmup_requests: report.warmup_requests,
            mismatches: report.mismatches,
            lost: report.lost,
            loss_ratio: report.loss_ratio(),
            late: report.late,
            duplicates: report.duplicates,
            unsent: report.unsent,
            failed: report.failed_connections,
            errors: &report.errors,
            elapsed_s: report.elapsed.as_secs_f64(),
            requests_per_s: report.requests_per_sec(),
            mb_per_s: report.megabytes_per_sec(),
            latency_us: report.latency.summary(),
            uncorrected_latency_us: report.config.rate.map(|_| report.uncorrected.summary()),
            percentiles: report.latency.percentile_distribution(5),
            placement: None,
        }
    }
}

/// One line saying what is about to happen.
pub fn describe_load(label: &str, c: &LoadConfig, lanes: Lanes) -> String {
    let amount = match c.stop {
        Stop::Count(n) => format!("{n} requests"),
        Stop::Duration(d) => format!("for {}", crate::units::format_duration(d)),
    };
    let mode = match c.rate {
        Some(r) => format!("open loop at {r:.0} requests/s (latency from intended send times)"),
        None => format!("closed loop (one request in flight per {})", lanes.unit()),
    };
    let warmup = if c.warmup.is_zero() {
        String::new()
    } else {
        format!(
            " after {} of warm-up",
            crate::units::format_duration(c.warmup)
        )
    };
    format!(
        "{label}: {amount}{warmup}, {}, {}-byte {}, {mode}",
        lanes.describe(),
        c.size,
        if c.framed { "frames" } else { "lines" },
    )
}

/// The human report: table, throughput, errors, histogram.
pub fn load_text(report: &LoadReport, lanes: Lanes) -> String {
    let mut out = percentile_table(&report_rows(report));
    out.push('\n');
    out.push_str(&summary_lines(report, lanes));
    let buckets = report.latency.log_buckets(16);
    if !buckets.is_empty() {
        out.push_str("\nlatency histogram (log scale):\n");
        out.push_str(&ascii_histogram(&buckets, 50));
    }
    out
}

/// The SVG chart of a run: corrected and (open loop) uncorrected lines.
/// `conditions` says where it ran (the link, or loopback), for the title.
pub fn load_chart(
    label: &str,
    conditions: &str,
    report: &LoadReport,
    scale: crate::output::plot::LatencyScale,
) -> String {
    let corrected = report.latency.percentile_distribution(5);
    let uncorrected = report.uncorrected.percentile_distribution(5);
    let mut series = vec![crate::output::plot::Series {
        label: if report.config.rate.is_some() {
            "corrected (from intended send time)"
        } else {
            "round trip"
        },
        points: &corrected,
    }];
    if report.config.rate.is_some() {
        series.push(crate::output::plot::Series {
            label: "uncorrected (from actual send time)",
            points: &uncorrected,
        });
    }
    let mode = match report.config.rate {
        Some(r) => format!("{r:.0} requests/s"),
        None => "closed loop".into(),
    };
    let c = &report.config;
    let text = crate::output::plot::ChartText {
        title: format!("{label}: latency by percentile"),
        conditions: format!(
            "{conditions}; {} requests, {mode}, {} connection{}, {}-byte {}",
            report.latency.count(),
            c.connections,
            if c.connections == 1 { "" } else { "s" },
            c.size,
            if c.framed { "frames" } else { "lines" },
        ),
    };
    crate::output::plot::latency_by_percentile(&text, &series, report.latency.count(), scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::histogram::Unit;

    fn sample() -> Latencies {
        let mut l = Latencies::new(Unit::Nanos);
        for us in 1..=1000u64 {
            l.record_nanos(us * 1000);
        }
        l
    }

    #[test]
    fn table_has_every_column() {
        let t = percentile_table(&[("round trip", sample().summary())]);
        for col in [
            "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean", "stddev",
        ] {
            assert!(t.contains(col), "{col} missing in\n{t}");
        }
        assert!(t.contains("500"), "{t}");
    }

    #[test]
    fn lanes_are_named_as_the_transport_names_them() {
        use crate::measure::load::Stop;
        use std::time::Duration;
        let config = LoadConfig {
            connections: 8,
            size: 16,
            framed: false,
            stop: Stop::Count(400),
            warmup: Duration::ZERO,
            rate: None,
            timeout: Duration::from_secs(1),
            unit: Unit::Nanos,
        };
        let quic = Lanes::new(Transport::Quic, 2, 4);
        let line = describe_load("quic x", &config, quic);
        assert!(
            line.contains("2 QUIC connections × 4 streams = 8 streams"),
            "{line}"
        );
        assert!(line.contains("one request in flight per stream"), "{line}");
        assert!(!line.contains("8 connections"), "{line}");
        let udp = Lanes::new(Transport::Udp, 1, 1);
        let line = describe_load("udp x", &config, udp);
        assert!(
            line.contains("1 UDP socket (no connections: datagrams)"),
            "{line}"
        );
        assert!(!line.contains("1 connection"), "{line}");
        let report = LoadReport {
            config: config.clone(),
            latency: sample(),
            uncorrected: sample(),
            requests: 1000,
            warmup_requests: 0,
            mismatches: 0,
            lost: 0,
            late: 0,
            duplicates: 0,
            unsent: 0,
            failed_connections: 0,
            errors: Vec::new(),
            elapsed: Duration::from_secs(1),
        };
        assert!(summary_lines(&report, udp).contains("0 failed sockets"));
        assert_eq!(quic.name(5), "QUIC connection 2, stream 1");
        assert_eq!(udp.name(0), "socket 1");
        assert!(summary_lines(&report, quic).contains("0 failed streams"));
        let tcp = Lanes::new(Transport::Tcp, 1, 1);
        assert!(summary_lines(&report, tcp).contains("0 failed connections"));
        assert_eq!(
            Lanes::new(Transport::Sctp, 1, 2).describe(),
            "1 SCTP association × 2 streams = 2 streams"
        );
        let json = LoadJson::new(&report, "quic", "x", quic);
        assert_eq!(
            (json.connections, json.streams_per_connection, json.lanes),
            (Some(2), Some(4), 8)
        );
        let json = LoadJson::new(&report, "udp", "x", udp);
        assert_eq!(
            (json.connections, json.sockets, json.lane),
            (None, Some(1), "socket")
        );
    }

    #[test]
    fn large_latencies_switch_to_ms_and_s() {
        let mut l = Latencies::new(Unit::Nanos);
        l.record_nanos(68_000);
        l.record_nanos(2_020_000_000);
        let t = percentile_table(&[("round trip", l.summary())]);
        assert!(t.contains("2.02 s") && t.contains("68.0 µs"), "{t}");
        assert!(!t.contains("2020000"), "{t}");
        let buckets = [Bucket {
            low_us: 1_000_000.0,
            high_us: 2_020_000.0,
            count: 1,
        }];
        let text = ascii_histogram(&buckets, 10);
        assert!(text.contains("1.00 – 2.02 s"), "{text}");
    }

    #[test]
    fn ascii_histogram_scales_to_the_largest_bucket() {
        let buckets = [
            Bucket {
                low_us: 10.0,
                high_us: 20.0,
                count: 100,
            },
            Bucket {
                low_us: 20.0,
                high_us: 40.0,
                count: 50,
            },
            Bucket {
                low_us: 40.0,
                high_us: 80.0,
                count: 1,
            },
        ];
        let text = ascii_histogram(&buckets, 10);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].matches('█').count(), 10);
        assert_eq!(lines[1].matches('█').count(), 5);
        assert!(lines[2].contains('▏') && lines[2].ends_with(" 1"), "{text}");
    }

    #[test]
    fn hgrm_has_the_standard_shape() {
        let text = hgrm(&sample());
        let mut lines = text.lines();
        let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            head,
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines.next(), Some(""));
        let rows: Vec<Vec<f64>> = lines
            .clone()
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
            .collect();
        assert!(rows.len() > 20);
        assert!(rows[..rows.len() - 1].iter().all(|r| r.len() == 4));
        let last = rows.last().unwrap();
        assert_eq!(last.len(), 3);
        assert_eq!(last[1], 1.0);
        assert_eq!(last[2], 1000.0);
        assert!((last[0] - 1.0).abs() < 0.002, "max is 1 ms: {last:?}");
        assert!(text.contains("#[Mean    ="));
        assert!(text.contains("Total count    =         1000]"));
    }
}
