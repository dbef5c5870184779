//! A latency-by-percentile chart as SVG text, drawn by hand.
//!
//! The layout copies HdrHistogram's plotter: the x axis is
//! `1/(1-percentile)` on a log scale, so 0 %, 90 %, 99 %, 99.9 %, … are
//! evenly spaced and the tail (where the interesting things happen) gets as
//! much room as the median. The y axis is latency, linear from 0 or
//! logarithmic ([`LatencyScale`]), labelled in µs, ms or s as values grow.
//! Sized for a slide: 16:9, 20 px text, the conditions under the title.

use crate::measure::histogram::PercentilePoint;
use crate::units::TimeUnit;
use std::fmt::Write;

/// One line on the chart.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub label: &'a str,
    pub points: &'a [PercentilePoint],
}

/// How the latency axis is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatencyScale {
    /// Linear from 0: distances compare directly, but a long tail squeezes
    /// the median into the bottom row of pixels.
    #[default]
    Linear,
    /// Logarithmic (1-2-5 ticks): the median and a tail 1000× longer both
    /// stay readable.
    Log,
}

/// What the chart shows besides its data.
#[derive(Debug, Clone, Default)]
pub struct ChartText {
    /// The first line of the title: what was measured.
    pub title: String,
    /// The second line: the conditions (link, placement, load).
    pub conditions: String,
}

// A 16:9 canvas with text sized for a projector: a slide shows the SVG at
// about 1280 px wide, where 20 px text stays readable from the back row.
const WIDTH: f64 = 1280.0;
const HEIGHT: f64 = 720.0;
const FONT: f64 = 20.0;
const TITLE_FONT: f64 = 26.0;
const LEFT: f64 = 120.0;
// Room for the last percentile label ("99.999%"), centred on the right edge.
const RIGHT: f64 = 60.0;
const TOP: f64 = 100.0;
const BOTTOM: f64 = 90.0;
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

/// The unit the latency axis is labelled in: the one that keeps the
/// largest value between 1 and 1000 (µs up to 1 ms, ms up to 1 s, then s),
/// so no label reads "2 020 000" ([`TimeUnit::for_micros`], as the tables).
pub(crate) fn time_unit_for(max_us: f64) -> (&'static str, f64) {
    let unit = TimeUnit::for_micros(max_us);
    (unit.symbol(), unit.micros())
}

/// A tick label: no more digits than the step needs (0.25, 2.5, 40).
fn tick_label(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// Ticks of a log axis from `low` to `high` (both > 0): 1, 2, 5 × 10ⁿ.
fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(low.log10().floor());
    while decade <= high * 1.000_001 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * decade;
            if v >= low * 0.999_999 && v <= high * 1.000_001 {
                ticks.push(v);
            }
        }
        decade *= 10.0;
    }
    ticks
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

/// The SVG path of one series: latency is a *step* function of the
/// percentile. HdrHistogram's point (q, v) says "a fraction q of requests
/// took at most v", so between the previous point's q and this one every
/// request took v: rise to v at the previous q, then run flat to this q.
fn step_path(points: &[(f64, f64)]) -> String {
    let mut path = String::new();
    for (i, &(x, y)) in points.iter().enumerate() {
        if i == 0 {
            let _ = write!(path, "M{x:.1},{y:.1}");
        } else {
            let (prev_x, _) = points[i - 1];
            let _ = write!(path, " L{prev_x:.1},{y:.1} L{x:.1},{y:.1}");
        }
    }
    path
}

/// The chart as a complete SVG document. `total_count` (the number of
/// requests) decides how far into the tail the x axis goes: there is no
/// 99.999 % point in 1000 requests.
pub fn latency_by_percentile(
    text: &ChartText,
    series: &[Series<'_>],
    total_count: u64,
    scale: LatencyScale,
) -> String {
    let max_decades = (total_count.max(1) as f64).log10().ceil().clamp(2.0, 7.0);
    let values = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.value_us))
    };
    let y_max = values().fold(0.0, f64::max);
    let y_min_positive = values().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |q: f64| LEFT + decades(q, max_decades) / max_decades * plot_w;

    // The y axis: a linear one is labelled in one unit (in its title), a
    // log one, spanning decades, gives each tick its own ("50 µs", "2 s").
    let (unit, per_unit) = match scale {
        LatencyScale::Linear => time_unit_for(y_max),
        LatencyScale::Log => ("", 1.0),
    };
    let (ticks, y_fraction): (Vec<f64>, Box<dyn Fn(f64) -> f64>) = match scale {
        LatencyScale::Linear => {
            let (top, step) = nice_axis(y_max / per_unit);
            let ticks = (0..)
                .map(|i| f64::from(i) * step)
                .take_while(|v| *v <= top + step * 1e-9)
                .collect();
            (ticks, Box::new(move |v: f64| v / top))
        }
        LatencyScale::Log => {
            let max = y_max.max(1.0);
            let min = if y_min_positive.is_finite() {
                y_min_positive.clamp(1.0, max)
            } else {
                max
            };
            let low = 10f64.powf(min.log10().floor());
            let high = 10f64.powf(max.log10().ceil()).max(low * 10.0);
            let span = (high / low).log10();
            (
                log_ticks(low, high),
                Box::new(move |v: f64| (v.max(low) / low).log10() / span),
            )
        }
    };
    let tick_text = |v: f64| match scale {
        LatencyScale::Linear => tick_label(v),
        LatencyScale::Log => {
            let (unit, per_unit) = time_unit_for(v);
            format!("{} {unit}", tick_label(v / per_unit))
        }
    };
    let y_of = |in_unit: f64| TOP + plot_h - y_fraction(in_unit) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="{FONT}">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="38" text-anchor="middle" font-size="{TITLE_FONT}" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(&text.title)
    );
    if !text.conditions.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="72" text-anchor="middle" fill="#444">{}</text>"##,
            WIDTH / 2.0,
            escape(&text.conditions)
        );
    }
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
            TOP + plot_h + FONT + 8.0,
            decade_label(d)
        );
    }
    // Horizontal grid lines and latency labels.
    for v in &ticks {
        let y = y_of(*v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 10.0,
            y + FONT * 0.35,
            tick_text(*v)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (log scale of 1/(1−p): the tail gets room)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 22.0
    );
    let axis = match scale {
        LatencyScale::Linear => format!("latency ({unit})"),
        LatencyScale::Log => "latency (log scale)".to_string(),
    };
    let _ = writeln!(
        svg,
        r#"<text x="30" y="{:.1}" text-anchor="middle" transform="rotate(-90 30 {:.1})">{axis}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|p| (x_of(p.quantile), y_of(p.value_us / per_unit)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<path d="{}" fill="none" stroke="{color}" stroke-width="3"/>"#,
            step_path(&points)
        );
        let ly = TOP + 24.0 + (FONT + 10.0) * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 16.0,
            LEFT + 56.0,
            LEFT + 64.0,
            ly + FONT * 0.35,
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
    fn the_axis_unit_grows_with_the_values() {
        assert_eq!(time_unit_for(950.0), ("µs", 1.0));
        assert_eq!(time_unit_for(4_490.0), ("ms", 1e3));
        assert_eq!(time_unit_for(2_020_000.0), ("s", 1e6));
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(40.0), "40");
        assert_eq!(tick_label(2.5), "2.5");
    }

    #[test]
    fn log_ticks_are_one_two_five_per_decade() {
        assert_eq!(
            log_ticks(1.0, 100.0),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(log_ticks(10.0, 100.0).first(), Some(&10.0));
    }

    #[test]
    fn percentiles_are_drawn_as_steps() {
        // Up at the previous percentile, then flat: never a diagonal.
        let path = step_path(&[(0.0, 100.0), (10.0, 80.0), (20.0, 50.0)]);
        assert_eq!(
            path,
            "M0.0,100.0 L0.0,80.0 L10.0,80.0 L10.0,50.0 L20.0,50.0"
        );
    }

    #[test]
    fn a_long_tail_is_labelled_in_seconds_and_a_log_axis_says_so() {
        let points = [
            PercentilePoint {
                value_us: 70.0,
                quantile: 0.5,
                total_count: 50,
            },
            PercentilePoint {
                value_us: 2_020_000.0,
                quantile: 1.0,
                total_count: 100,
            },
        ];
        let series = [Series {
            label: "round trip",
            points: &points,
        }];
        let text = ChartText::default();
        let linear = latency_by_percentile(&text, &series, 100, LatencyScale::Linear);
        assert!(linear.contains(">latency (s)<"), "{linear}");
        assert!(!linear.contains(">2020000<"));
        let log = latency_by_percentile(&text, &series, 100, LatencyScale::Log);
        assert!(log.contains(">latency (log scale)<"), "{log}");
        // From 70 µs's decade to 2 s's: each tick carries its unit.
        for tick in [">10 µs<", ">50 µs<", ">1 ms<", ">1 s<", ">10 s<"] {
            assert!(log.contains(tick), "{tick} in {log}");
        }
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
        let text = ChartText {
            title: "tcp <test>".into(),
            conditions: "loopback".into(),
        };
        let series = [Series {
            label: "corrected",
            points: &points,
        }];
        let svg = latency_by_percentile(&text, &series, 10_000, LatencyScale::Linear);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("tcp &lt;test&gt;"));
        for label in ["0%", "90%", "99%", "99.9%", "99.99%"] {
            assert!(svg.contains(&format!(">{label}<")), "{label}");
        }
        assert!(svg.contains("<path d=\"M"));
        assert!(svg.contains(">latency (µs)<"));
        assert_eq!(svg.matches("<svg").count(), svg.matches("</svg>").count());
    }
}
