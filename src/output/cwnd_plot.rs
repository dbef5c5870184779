//! The congestion-control figure as SVG, drawn by hand: three panels on one
//! time axis, the way lecture slides show it.
//!
//! ```text
//!   packets │  cwnd ╱╲  ╱╲  ╱╲      ← slow start, then the sawtooth
//!           │ ─ ─ ─ ─ ─ ─ ─ ─ ─     ← BDP and BDP + queue (where losses start)
//!   ms      │  RTT and the bottleneck queue's delay (bufferbloat)
//!   Mbit/s  │  delivery rate against the link's rate
//!           └──────────────────── time
//! ```
//!
//! Losses are red vertical lines (dashed for timeouts).

use crate::measure::overhead::{Overhead, APPLICATION};
use crate::measure::phases::TransferReport;
use crate::measure::transfer::Sample;
use crate::output::plot::{escape, nice_axis, svg_start};
use std::fmt::Write;

const WIDTH: f64 = 900.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 50.0;
const PANEL_H: f64 = 190.0;
const GAP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// One line in a panel.
struct Line<'a> {
    label: &'a str,
    color: &'a str,
    dashed: bool,
    value: &'a dyn Fn(&Sample) -> Option<f64>,
}

/// A constant marked across a panel (the BDP, the link rate).
struct Level<'a> {
    label: String,
    color: &'a str,
    value: f64,
}

/// At most this many points per line: enough for 900 pixels.
const MAX_POINTS: usize = 1800;

fn thin(samples: &[Sample]) -> impl Iterator<Item = &Sample> {
    let step = samples.len().div_ceil(MAX_POINTS).max(1);
    samples.iter().step_by(step)
}

struct Panel<'a> {
    title: &'a str,
    unit: &'a str,
    lines: Vec<Line<'a>>,
    levels: Vec<Level<'a>>,
}

/// The whole figure.
pub fn figure(r: &TransferReport) -> String {
    let samples = &r.run.samples;
    let t_end = samples.last().map_or(1.0, |s| s.t_ms).max(1.0);
    let mss = samples.last().map_or(1448.0, |s| f64::from(s.mss.max(1)));
    let bdp_packets = r.link.bdp_bytes as f64 / mss;
    let mut cwnd_levels = vec![Level {
        label: format!("BDP {bdp_packets:.0}"),
        color: "#888",
        value: bdp_packets,
    }];
    if r.link.rate_bps.is_some() {
        let with_queue = bdp_packets + r.link.queue_packets as f64;
        cwnd_levels.push(Level {
            label: format!("BDP + queue {with_queue:.0}"),
            color: "#bbb",
            value: with_queue,
        });
    }
    let cwnd = |s: &Sample| Some(f64::from(s.cwnd));
    let flight = |s: &Sample| s.in_flight.map(f64::from);
    let ssthresh = |s: &Sample| s.ssthresh.map(f64::from);
    let srtt = |s: &Sample| Some(s.srtt_ms);
    let queue = |s: &Sample| Some(s.queue_delay_ms);
    let delivery = |s: &Sample| Some(s.delivery_rate_bps as f64 / 1e6);
    let window = |s: &Sample| s.peer_window.map(|w| f64::from(w) / mss);
    // In flight first, so cwnd is drawn over it where they coincide.
    let mut window_lines = vec![
        Line {
            label: "in flight",
            color: "#2ca02c",
            dashed: false,
            value: &flight,
        },
        Line {
            label: "cwnd",
            color: "#1f77b4",
            dashed: false,
            value: &cwnd,
        },
        Line {
            label: "ssthresh",
            color: "#9467bd",
            dashed: true,
            value: &ssthresh,
        },
    ];
    if r.zero_window.is_some() {
        window_lines.push(Line {
            label: "receiver's window",
            color: "#ff7f0e",
            dashed: false,
            value: &window,
        });
    }
    let panels = [
        Panel {
            title: "congestion window",
            unit: "packets",
            lines: window_lines,
            levels: cwnd_levels,
        },
        Panel {
            title: "round trip",
            unit: "ms",
            lines: vec![
                Line {
                    label: "sender's RTT",
                    color: "#1f77b4",
                    dashed: false,
                    value: &srtt,
                },
                Line {
                    label: "queueing delay",
                    color: "#d62728",
                    dashed: false,
                    value: &queue,
                },
            ],
            levels: vec![Level {
                label: format!("path {:.0} ms", r.link.rtt_ms),
                color: "#888",
                value: r.link.rtt_ms,
            }],
        },
        Panel {
            title: "throughput",
            unit: "Mbit/s",
            lines: vec![Line {
                label: "delivery rate",
                color: "#2ca02c",
                dashed: false,
                value: &delivery,
            }],
            levels: r
                .link
                .rate_bps
                .map(|rate| Level {
                    label: format!("link {:.0} Mbit/s", rate as f64 / 1e6),
                    color: "#888",
                    value: rate as f64 / 1e6,
                })
                .into_iter()
                .collect(),
        },
    ];

    let bar_h = if r.overhead.is_some() {
        OVERHEAD_H
    } else {
        0.0
    };
    let height = TOP + panels.len() as f64 * (PANEL_H + GAP) - GAP + BOTTOM + bar_h;
    let plot_w = WIDTH - LEFT - RIGHT;
    let x_of = |t: f64| LEFT + t / t_end * plot_w;
    let title = format!(
        "{} with {} across {}",
        r.run.protocol.name().to_uppercase(),
        r.run.cc,
        r.link.description.split(';').next().unwrap_or_default()
    );
    let mut svg = svg_start(WIDTH, height, &title);
    for (i, panel) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL_H + GAP);
        draw_panel(&mut svg, panel, samples, top, &x_of, t_end);
        // Losses, on every panel.
        for l in &r.losses {
            let x = x_of(l.at_ms);
            let dash = if l.kind == "timeout" {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            };
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{:.1}" stroke="#d62728" stroke-opacity="0.5"{dash}/>"##,
                top + PANEL_H
            );
        }
    }
    // The shared time axis.
    let bottom = TOP + panels.len() as f64 * (PANEL_H + GAP) - GAP;
    let (t_top, t_step) = nice_axis(t_end / 1e3);
    let _ = t_top;
    let mut t = 0.0;
    while t <= t_top + 1e-9 && t * 1e3 <= t_end + 1e-9 {
        let x = x_of(t * 1e3);
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 16.0,
            trim(t)
        );
        t += t_step;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s){}</text>"#,
        LEFT + plot_w / 2.0,
        bottom + 36.0,
        if r.losses.is_empty() {
            ""
        } else {
            "   red lines: losses (dashed: timeout)"
        }
    );
    if let Some(o) = &r.overhead {
        overhead_bar(&mut svg, o, bottom + BOTTOM + 10.0);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Room for the header-overhead bar under the panels.
const OVERHEAD_H: f64 = 150.0;
const LAYER_COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// Header bytes per 1000 bytes of data as one bar stacked by layer
/// (outermost first), each layer's figure in the legend under it.
fn overhead_bar(svg: &mut String, o: &Overhead, top: f64) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let headers: Vec<_> = o.layers.iter().filter(|l| l.name != APPLICATION).collect();
    let total = o.total_per_1000();
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{top:.1}" font-weight="bold">header bytes per 1000 bytes of data, by layer: {total:.1} in all (measured from the forwarded packets)</text>"#
    );
    let (bar_top, bar_h) = (top + 10.0, 28.0);
    let mut x = LEFT;
    for (i, l) in headers.iter().enumerate() {
        let w = if total > 0.0 {
            l.per_1000 / total * plot_w
        } else {
            0.0
        };
        let color = LAYER_COLORS[i % LAYER_COLORS.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{bar_top:.1}" width="{w:.1}" height="{bar_h}" fill="{color}"><title>{}: {:.1}</title></rect>"#,
            escape(&l.name),
            l.per_1000
        );
        x += w;
        // Legend: two per row under the bar.
        let lx = LEFT + (i % 2) as f64 * 400.0;
        let ly = bar_top + bar_h + 20.0 + (i / 2) as f64 * 18.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{ly:.1}">{} {:.1}</text>"#,
            ly - 9.0,
            lx + 14.0,
            escape(&l.name),
            l.per_1000
        );
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn draw_panel(
    svg: &mut String,
    panel: &Panel<'_>,
    samples: &[Sample],
    top: f64,
    x_of: &dyn Fn(f64) -> f64,
    t_end: f64,
) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let y_max = thin(samples)
        .flat_map(|s| panel.lines.iter().filter_map(|l| (l.value)(s)))
        .chain(panel.levels.iter().map(|l| l.value))
        .fold(0.0, f64::max);
    let (y_top, y_step) = nice_axis(y_max);
    let y_of = |v: f64| top + PANEL_H - (v / y_top).clamp(0.0, 1.0) * PANEL_H;
    let mut v = 0.0;
    while v <= y_top + y_step * 1e-9 {
        let y = y_of(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            trim(v)
        );
        v += y_step;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{top:.1}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#444"/><text x="{LEFT}" y="{:.1}" font-weight="bold">{}</text>"##,
        top - 10.0,
        escape(panel.title)
    );
    let mid = top + PANEL_H / 2.0;
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{mid:.1}" text-anchor="middle" transform="rotate(-90 18 {mid:.1})">{}</text>"#,
        escape(panel.unit)
    );
    for level in &panel.levels {
        let y = y_of(level.value);
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" fill="{}">{}</text>"#,
            LEFT + plot_w,
            level.color,
            LEFT + plot_w + 6.0,
            y + 4.0,
            level.color,
            escape(&level.label)
        );
    }
    for (i, line) in panel.lines.iter().enumerate() {
        let mut path = String::new();
        for s in thin(samples) {
            if let Some(v) = (line.value)(s) {
                let _ = write!(
                    path,
                    "{}{:.1},{:.1}",
                    if path.is_empty() { "" } else { " " },
                    x_of(s.t_ms.min(t_end)),
                    y_of(v)
                );
            }
        }
        let dash = if line.dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        if !path.is_empty() {
            let _ = writeln!(
                svg,
                r#"<polyline points="{path}" fill="none" stroke="{}" stroke-width="1.5"{dash}/>"#,
                line.color
            );
        }
        // Legend in a row above the panel.
        let ly = top - 10.0;
        let lx = LEFT + 200.0 + 130.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 18.0,
            line.color,
            lx + 22.0,
            ly + 4.0,
            escape(line.label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::buffers::HostBufferReport;
    use crate::measure::phases::{analyze, LinkFacts};
    use crate::measure::transfer::{Protocol, TcpOptions, TransferRun};

    #[test]
    fn the_figure_has_three_panels_and_marks_the_loss() {
        let samples: Vec<Sample> = (0..1000)
            .map(|t| Sample {
                t_ms: t as f64,
                cwnd: if t < 500 { 10 + t } else { 255 },
                in_flight: Some(10),
                ssthresh: (t >= 500).then_some(255),
                ca_state: if (500..600).contains(&t) {
                    "recovery"
                } else {
                    "open"
                },
                srtt_ms: 100.0,
                mss: 1448,
                ..Default::default()
            })
            .collect();
        let run = TransferRun {
            protocol: Protocol::Tcp,
            cc: "reno".into(),
            bytes: 1_000_000,
            seconds: 1.0,
            options: TcpOptions::default(),
            busy_us: 0,
            rwnd_limited_us: 0,
            sndbuf_limited_us: 0,
            min_rtt_ms: 100.0,
            samples,
            link: Default::default(),
            host_drops: 0,
            tls: None,
            notes: vec![],
        };
        let link = LinkFacts {
            rate_bps: Some(50_000_000),
            rtt_ms: 100.0,
            queue_packets: 417,
            bdp_bytes: 625_000,
            description: "client→server delay 50ms <x>; server→client".into(),
        };
        let report = analyze(run, link, HostBufferReport::default());
        let svg = figure(&report);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for title in [
            "congestion window",
            "round trip",
            "throughput",
            "BDP 432",
            "link 50 Mbit/s",
        ] {
            assert!(svg.contains(title), "{title}");
        }
        assert!(svg.contains("&lt;x&gt;"), "text is escaped");
        // One loss, marked on each of the three panels.
        assert_eq!(
            svg.matches(r##"stroke="#d62728" stroke-opacity"##).count(),
            3
        );
    }
}
