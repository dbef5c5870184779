//! A latency-by-percentile chart as SVG text, drawn by hand.
//!
//! The layout copies HdrHistogram's plotter: the x axis is
//! `1/(1-percentile)` on a log scale, so 0 %, 90 %, 99 %, 99.9 %, … are
//! evenly spaced and the tail (where the interesting things happen) gets as
//! much room as the median. The y axis is latency, linear from 0.

use crate::measure::histogram::PercentilePoint;
use std::fmt::Write;

/// One line on the chart.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub label: &'a str,
    pub points: &'a [PercentilePoint],
}

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
// Room for the last percentile label ("99.999%"), centred on the right edge.
const RIGHT: f64 = 40.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// Where quantile `q` sits on the x axis, in decades of `1/(1-q)`
/// (0 % → 0, 90 % → 1, 99 % → 2, …), capped at `max_decades` (where 100 %
/// is drawn).
pub fn decades(q: f64, max_decades: f64) -> f64 {
    if q >= 1.0 {
        return max_decades;
    }
    (1.0 / (1.0 - q)).log10().clamp(0.0, max_decades)
}

/// The label of decade `d`: 0 → `0%`, 1 → `90%`, 2 → `99%`, 3 → `99.9%`.
pub fn decade_label(d: u32) -> String {
    match d {
        0 => "0%".into(),
        1 => "90%".into(),
        _ => format!("99.{}%", "9".repeat(d as usize - 2)).replace("99.%", "99%"),
    }
}

/// A round number ≥ `max` for the top of the y axis, and the tick step.
pub(crate) fn nice_axis(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.2);
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0] {
        let s = step * magnitude;
        let top = (max / s).ceil() * s;
        if top / s <= 8.0 {
            return (top, s);
        }
    }
    (max, max / 5.0)
}

/// An SVG document's opening: size, white background, centred title.
pub(crate) fn svg_start(width: f64, height: f64, title: &str) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    svg
}

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart as a complete SVG document. `total_count` (the number of
/// requests) decides how far into the tail the x axis goes: there is no
/// 99.999 % point in 1000 requests.
pub fn latency_by_percentile(title: &str, series: &[Series<'_>], total_count: u64) -> String {
    let max_decades = (total_count.max(1) as f64).log10().ceil().clamp(2.0, 7.0);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.value_us))
        .fold(0.0, f64::max);
    let (y_top, y_step) = nice_axis(y_max);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |q: f64| LEFT + decades(q, max_decades) / max_decades * plot_w;
    let y_of = |us: f64| TOP + plot_h - us / y_top * plot_h;

    let mut svg = svg_start(WIDTH, HEIGHT, title);
    // Vertical grid lines and labels, one per decade.
    for d in 0..=max_decades as u32 {
        let x = LEFT + f64::from(d) / max_decades * plot_w;
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + plot_h + 18.0,
            decade_label(d)
        );
    }
    // Horizontal grid lines and latency labels.
    let mut v = 0.0;
    while v <= y_top + y_step * 1e-9 {
        let y = y_of(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            crate::output::latency::format_us(v)
        );
        v += y_step;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (µs)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    // The series: latency as a step function of the percentile.
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut path = String::new();
        for (j, p) in s.points.iter().enumerate() {
            let (x, y) = (x_of(p.quantile), y_of(p.value_us));
            let _ = write!(path, "{}{x:.1},{y:.1}", if j == 0 { "" } else { " " });
        }
        let _ = writeln!(
            svg,
            r#"<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>"#
        );
        let ly = TOP + 16.0 + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 12.0,
            LEFT + 36.0,
            LEFT + 42.0,
            ly + 4.0,
            escape(s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_map_to_decades() {
        assert_eq!(decades(0.0, 5.0), 0.0);
        assert!((decades(0.9, 5.0) - 1.0).abs() < 1e-9);
        assert!((decades(0.999, 5.0) - 3.0).abs() < 1e-9);
        assert_eq!(decades(1.0, 5.0), 5.0);
        assert_eq!(decade_label(0), "0%");
        assert_eq!(decade_label(1), "90%");
        assert_eq!(decade_label(2), "99%");
        assert_eq!(decade_label(4), "99.99%");
    }

    #[test]
    fn nice_axes() {
        assert_eq!(nice_axis(87.0), (100.0, 20.0));
        let (top, step) = nice_axis(16.4);
        assert!(top >= 16.4 && top / step <= 8.0);
        let (top, step) = nice_axis(123_456.0);
        assert!(top >= 123_456.0 && top / step <= 8.0);
    }

    #[test]
    fn svg_is_well_formed_and_labelled() {
        let points = [
            PercentilePoint {
                value_us: 10.0,
                quantile: 0.0,
                total_count: 1,
            },
            PercentilePoint {
                value_us: 20.0,
                quantile: 0.99,
                total_count: 99,
            },
            PercentilePoint {
                value_us: 90.0,
                quantile: 1.0,
                total_count: 100,
            },
        ];
        let svg = latency_by_percentile(
            "tcp <test>",
            &[Series {
                label: "corrected",
                points: &points,
            }],
            10_000,
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("tcp &lt;test&gt;"));
        for label in ["0%", "90%", "99%", "99.9%", "99.99%"] {
            assert!(svg.contains(&format!(">{label}<")), "{label}");
        }
        assert!(svg.contains("<polyline"));
        assert_eq!(svg.matches("<svg").count(), svg.matches("</svg>").count());
    }
}
