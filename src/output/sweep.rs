//! `proto compare --sweep`: the fitted lines (RTT sweep) or the spread
//! under loss (loss sweep) as a table, a "what this shows" paragraph, CSV
//! with every connection, and the lecture figure as SVG.

use crate::measure::handshake::Variant;
use crate::measure::sweep::{Axis, SweepReport};
use crate::output::plot::{escape, nice_axis, svg_start};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Color, ContentArrangement, Table};
use std::fmt::Write;

fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

fn opt_ms(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.1} ms"))
}

/// The sweep's values, e.g. "20, 60, 120 ms" or "0, 2, 4 %".
fn values(report: &SweepReport) -> String {
    let list: Vec<String> = report
        .points
        .iter()
        .map(|p| match report.axis {
            Axis::Rtt => trim(p.rtt_ms),
            Axis::Loss => trim(p.loss * 100.0),
        })
        .collect();
    let unit = match report.axis {
        Axis::Rtt => "ms",
        Axis::Loss => "%",
    };
    format!("{} {unit}", list.join(", "))
}

/// One decimal, without the "-0.0" that a hair under zero would print.
fn one_decimal(x: f64) -> String {
    let x = if x.abs() < 0.05 { 0.0 } else { x };
    format!("{x:.1}")
}

fn trim(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// The table of the sweep.
pub fn render_table(report: &SweepReport) -> String {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    match report.axis {
        Axis::Rtt => {
            table.set_header(vec![
                "variant",
                "theory\n(RTTs before data)",
                "fitted slope\n(RTTs to reply)",
                "handshake RTTs\n(slope − 1)",
                "intercept\n(CPU, crypto)",
                "R²",
                "connections",
                "verdict",
            ]);
            for f in &report.fits {
                let verdict = if f.matches_theory {
                    Cell::new("matches").fg(Color::Green)
                } else {
                    Cell::new("differs").fg(Color::Yellow)
                };
                table.add_row(vec![
                    Cell::new(f.protocol.id()),
                    right(format!("{}", f.theory_rtts)),
                    right(two_decimals(f.slope_rtts)),
                    right(two_decimals(f.handshake_rtts)),
                    right(format!("{} ms", one_decimal(f.intercept_ms))),
                    right(format!("{:.4}", f.r_squared)),
                    right(f.connections.to_string()),
                    verdict,
                ]);
            }
        }
        Axis::Loss => {
            table.set_header(vec![
                "variant",
                "loss",
                "completed",
                "first reply\np50",
                "first reply\np90",
                "p90 vs\nlowest loss",
                "waited for\na timer",
            ]);
            for r in &report.loss_rows {
                table.add_row(vec![
                    Cell::new(r.protocol.id()),
                    right(format!("{}%", trim(r.loss * 100.0))),
                    right(format!("{}/{}", r.completed, r.completed + r.failed)),
                    right(opt_ms(r.first_reply_p50_ms)),
                    right(opt_ms(r.first_reply_p90_ms)),
                    right(r.p90_jump_ms.map_or("–".into(), |j| format!("{j:+.0} ms"))),
                    right(r.stalled.to_string()),
                ]);
            }
        }
    }
    table.to_string()
}

/// What the sweep shows, in words, with the link's fidelity.
pub fn render_explanation(report: &SweepReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} sweep over {} ({} runs per variant at each point, a fresh link per point). {}",
        match report.axis {
            Axis::Rtt => "RTT",
            Axis::Loss => "Loss",
        },
        values(report),
        report.runs,
        report.setting
    );
    match report.axis {
        Axis::Rtt => {
            out.push_str(
                "\nWhat this shows: time to the first reply is a straight line in the RTT. Its slope \
                 counts round trips (the handshake's plus one for the request itself); its intercept \
                 is what does not grow with distance: CPU, key exchange, certificate checks. The line \
                 goes through each link's medians (x = the connections' own measured RTT).\n",
            );
            let slope = |v: Variant| report.fits.iter().find(|f| f.protocol == v);
            if let (Some(full), Some(zero)) = (slope(Variant::Tls12), slope(Variant::QuicZeroRtt)) {
                let at = |f: &crate::measure::sweep::Fit| f.intercept_ms + f.slope_rtts * 329.0;
                let _ = writeln!(
                    out,
                    "At the lecture's 329 ms (Australia) the lines put tls1.2's first reply at {:.0} ms \
                     and quic-0rtt's at {:.0} ms: 0-RTT matters most on long links.",
                    at(full),
                    at(zero)
                );
            }
            let differ: Vec<String> = report
                .fits
                .iter()
                .filter(|f| !f.matches_theory)
                .map(|f| {
                    format!(
                        "{} ({} vs {})",
                        f.protocol.id(),
                        two_decimals(f.handshake_rtts),
                        f.theory_rtts
                    )
                })
                .collect();
            if !differ.is_empty() {
                let _ = writeln!(
                    out,
                    "Differs from theory by more than {} RTT: {}.",
                    crate::measure::sweep::FIT_TOLERANCE_RTTS,
                    differ.join(", ")
                );
            }
        }
        Axis::Loss => {
            out.push_str(
                "\nWhat this shows: a lost handshake packet costs a timer, not a round trip. The median \
                 hides it; the p90 shows it as a jump of about one timer. \"Waited for a timer\": \
                 connections whose first reply came at least half a timer later than their round trips \
                 explain.\n",
            );
            for crate::measure::sweep::VariantTimer {
                protocol: variant,
                timer,
            } in &report.timers
            {
                let jumps = report
                    .loss_rows
                    .iter()
                    .filter(|r| r.protocol == *variant)
                    .filter_map(|r| r.p90_jump_ms.map(|j| (r.loss, j)))
                    .fold(None, |best: Option<(f64, f64)>, (loss, j)| match best {
                        Some((_, b)) if b >= j => best,
                        _ => Some((loss, j)),
                    });
                let stalled: usize = report
                    .loss_rows
                    .iter()
                    .filter(|r| r.protocol == *variant)
                    .map(|r| r.stalled)
                    .sum();
                let measured = match jumps {
                    Some((loss, j)) if j > 100.0 => format!(
                        "p90 up {j:.0} ms at {}% loss, {stalled} {} waited",
                        trim(loss * 100.0),
                        if stalled == 1 {
                            "connection"
                        } else {
                            "connections"
                        }
                    ),
                    _ => "no jump".into(),
                };
                let initial = timer.initial.map_or(String::new(), |t| {
                    format!(", {:.0} ms", t.as_secs_f64() * 1e3)
                });
                let _ = writeln!(
                    out,
                    "  {:<16} {measured}. Timer: {}{initial}. {}",
                    variant.id(),
                    timer.name,
                    timer.why
                );
            }
            if report.runs < 10 {
                let _ = writeln!(
                    out,
                    "Only {} runs per point: the p90 is nearly the maximum; --runs 20 shows the spread.",
                    report.runs
                );
            }
        }
    }
    let bent: Vec<String> = report
        .points
        .iter()
        .filter(|p| !p.fidelity.faithful)
        .map(|p| match report.axis {
            Axis::Rtt => format!("{} ms", trim(p.rtt_ms)),
            Axis::Loss => format!("{}%", trim(p.loss * 100.0)),
        })
        .collect();
    if bent.is_empty() {
        out.push_str(
            "Link fidelity: at every point every packet left within 1 ms of its scheduled time.\n",
        );
    } else {
        let _ = writeln!(
            out,
            "WARNING: the link was bent at {} (packets left late or were dropped outside the \
             settings: the machine was busy; see \"fidelity\" in --json). Re-run on a quieter machine.",
            bent.join(", ")
        );
    }
    if report.interrupted {
        out.push_str("Interrupted: these are the points measured before Ctrl-C.\n");
    }
    out
}

/// One CSV row per connection: the raw data behind the table and figure.
pub fn render_csv(report: &SweepReport) -> String {
    let mut out = String::from(
        "rtt_ms,loss_percent,protocol,theory_rtts,run,first_reply_ms,connection_rtt_ms,tcp_connect_ms,crypto_handshake_ms,resumed,early_data_accepted\n",
    );
    let opt = |d: Option<std::time::Duration>| {
        d.map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64() * 1e3))
    };
    let flag = |b: Option<bool>| b.map_or(String::new(), |b| b.to_string());
    for p in &report.points {
        for v in &p.variants {
            for (i, s) in v.samples.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{:.3},{:.3},{},{},{},{}",
                    trim(p.rtt_ms),
                    trim(p.loss * 100.0),
                    v.protocol.id(),
                    v.theory_rtts,
                    i + 1,
                    s.first_reply.as_secs_f64() * 1e3,
                    s.rtt.as_secs_f64() * 1e3,
                    opt(s.tcp_connect),
                    opt(s.crypto_handshake),
                    flag(s.resumed),
                    flag(s.early_data_accepted)
                );
            }
        }
    }
    out
}

const WIDTH: f64 = 1100.0;
const HEIGHT: f64 = 640.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 330.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 70.0;
const COLORS: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939",
];

/// The lecture figure: time to first reply against RTT (one colour per
/// variant: measured connections as dots, the fitted line solid, theory
/// dashed), or against loss (p50 solid, p90 dashed, the timers named).
pub fn render_svg(report: &SweepReport) -> String {
    let title = match report.axis {
        Axis::Rtt => "Time to first reply vs round-trip time (dashed: theory, solid: fit)",
        Axis::Loss => "Time to first reply vs loss (dots: connections, solid: median, dashed: p90)",
    };
    let mut svg = svg_start(WIDTH, HEIGHT, title);
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="44" text-anchor="middle" font-size="12" fill="#555">{}</text>"##,
        WIDTH / 2.0,
        escape(&report.setting)
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    // Axis ranges from everything that will be drawn.
    let xs: Vec<f64> = report
        .points
        .iter()
        .map(|p| match report.axis {
            Axis::Rtt => p.rtt_ms,
            Axis::Loss => p.loss * 100.0,
        })
        .collect();
    let x_data_max = xs.iter().copied().fold(0.0, f64::max);
    let y_data_max = report
        .points
        .iter()
        .flat_map(|p| p.variants.iter())
        .flat_map(|v| v.samples.iter())
        .map(|s| s.first_reply.as_secs_f64() * 1e3)
        .fold(0.0, f64::max);
    let (x_top, x_step) = nice_axis(x_data_max);
    let (y_top, y_step) = nice_axis(y_data_max * 1.05);
    let x_of = |x: f64| LEFT + plot_w * (x / x_top).clamp(0.0, 1.0);
    let y_of = |y: f64| TOP + plot_h * (1.0 - (y / y_top).clamp(0.0, 1.0));
    // Grid and ticks.
    let mut t = 0.0;
    while t <= y_top + y_step / 2.0 {
        let y = y_of(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            trim(t)
        );
        t += y_step;
    }
    let mut t = 0.0;
    while t <= x_top + x_step / 2.0 {
        let x = x_of(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0,
            trim(t)
        );
        t += x_step;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let x_label = match report.axis {
        Axis::Rtt => "round-trip time (ms)",
        Axis::Loss => "loss per direction (%)",
    };
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="14">{x_label}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 25.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{:.1}" text-anchor="middle" font-size="14" transform="rotate(-90 20 {:.1})">time to first reply (ms)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    let variants: Vec<Variant> = {
        let mut v: Vec<Variant> = Vec::new();
        for p in &report.points {
            for r in &p.variants {
                if !v.contains(&r.protocol) {
                    v.push(r.protocol);
                }
            }
        }
        v
    };
    for (i, &variant) in variants.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let legend_y = TOP + 12.0 + 22.0 * i as f64;
        let mut label = variant.id().to_string();
        match report.axis {
            Axis::Rtt => {
                // Every connection as a dot at its own measured RTT.
                for p in &report.points {
                    for v in p.variants.iter().filter(|v| v.protocol == variant) {
                        for s in &v.samples {
                            let _ = writeln!(
                                svg,
                                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}" fill-opacity="0.6"/>"#,
                                x_of(s.rtt.as_secs_f64() * 1e3),
                                y_of(s.first_reply.as_secs_f64() * 1e3)
                            );
                        }
                    }
                }
                let theory_slope = variant.theory_rtts() + 1.0;
                let _ = writeln!(
                    svg,
                    r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-dasharray="6 4" stroke-opacity="0.7"/>"#,
                    x_of(0.0),
                    y_of(0.0),
                    x_of(x_top),
                    y_of(theory_slope * x_top)
                );
                if let Some(f) = report.fits.iter().find(|f| f.protocol == variant) {
                    let (x0, x1) = (xs.iter().copied().fold(f64::INFINITY, f64::min), x_data_max);
                    let _ = writeln!(
                        svg,
                        r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/>"#,
                        x_of(x0),
                        y_of(f.intercept_ms + f.slope_rtts * x0),
                        x_of(x1),
                        y_of(f.intercept_ms + f.slope_rtts * x1)
                    );
                    let measured = two_decimals(f.handshake_rtts);
                    label = format!("{} {measured} RTT (theory {})", variant.id(), f.theory_rtts);
                }
            }
            Axis::Loss => {
                // Every connection as a dot, shifted a little per variant
                // so that the spread of each stays visible.
                let shift = (i as f64 - variants.len() as f64 / 2.0) * 3.0;
                for p in &report.points {
                    for v in p.variants.iter().filter(|v| v.protocol == variant) {
                        for s in &v.samples {
                            let _ = writeln!(
                                svg,
                                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}" fill-opacity="0.5"/>"#,
                                x_of(p.loss * 100.0) + shift,
                                y_of(s.first_reply.as_secs_f64() * 1e3)
                            );
                        }
                    }
                }
                let rows: Vec<_> = report
                    .loss_rows
                    .iter()
                    .filter(|r| r.protocol == variant)
                    .collect();
                for (dash, pick) in [
                    (
                        "",
                        (|r: &crate::measure::sweep::LossRow| r.first_reply_p50_ms) as fn(&_) -> _,
                    ),
                    (r#" stroke-dasharray="6 4""#, |r| r.first_reply_p90_ms),
                ] {
                    let pts: Vec<String> = rows
                        .iter()
                        .filter_map(|r| {
                            pick(r).map(|y| format!("{:.1},{:.1}", x_of(r.loss * 100.0), y_of(y)))
                        })
                        .collect();
                    let _ = writeln!(
                        svg,
                        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
                        pts.join(" ")
                    );
                }
                if let Some(t) = report.timers.iter().find(|t| t.protocol == variant) {
                    label = format!("{} ({})", variant.id(), t.timer.name);
                }
            }
        }
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="14">{}</text>"#,
            LEFT + plot_w + 12.0,
            legend_y - 4.0,
            LEFT + plot_w + 30.0,
            legend_y,
            escape(&label)
        );
    }
    if report.axis == Axis::Rtt {
        // At the end of each theory line, its round trips before data and
        // the variants that theory puts on it: the lecture's slide.
        let mut counts: Vec<f64> = variants.iter().map(|v| v.theory_rtts()).collect();
        counts.sort_by(f64::total_cmp);
        counts.dedup();
        for count in counts {
            let names: Vec<&str> = variants
                .iter()
                .filter(|v| v.theory_rtts() == count)
                .map(|v| v.id())
                .collect();
            let slope = count + 1.0;
            // Where the line leaves the plot: the right edge or the top.
            let x_end = x_top.min(y_top * 0.97 / slope);
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="13" fill="#333" stroke="white" stroke-width="4" paint-order="stroke">{} RTT before data: {}</text>"##,
                x_of(x_end) - 4.0,
                y_of(slope * x_end) - 7.0,
                count,
                escape(&names.join(", "))
            );
        }
    }
    if report.axis == Axis::Loss {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="13" fill="#555">jumps of ≈1 s: TCP's initial RTO (1 s), QUIC's first PTO (≈1 s), SCTP's RTO.Initial (1 s)</text>"##,
            LEFT,
            HEIGHT - 8.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A fitted count to two decimals, without the "-0.00" that a fit of
/// −0.001 RTT would print.
fn two_decimals(x: f64) -> String {
    let text = format!("{x:.2}");
    if text == "-0.00" {
        "0.00".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fit_just_below_zero_prints_as_zero() {
        assert_eq!(two_decimals(-0.001), "0.00");
        assert_eq!(two_decimals(-0.02), "-0.02");
        assert_eq!(two_decimals(2.997), "3.00");
    }
    use crate::lab::fidelity::assess_lab;
    use crate::lab::LabConfig;
    use crate::measure::handshake::{Sample, VariantResult};
    use crate::measure::sweep::{summarise, SweepPlan, SweepPoint, SweepSpec};
    use std::time::Duration;

    fn report(spec: &str, points: &[(f64, f64, f64)]) -> SweepReport {
        // (rtt ms, loss, first reply ms) for tcp, one connection each.
        let points = points
            .iter()
            .map(|&(rtt, loss, first)| SweepPoint {
                rtt_ms: rtt,
                loss,
                variants: vec![VariantResult::from_samples(
                    Variant::Tcp,
                    vec![Sample {
                        rtt: Duration::from_secs_f64(rtt / 1e3),
                        first_reply: Duration::from_secs_f64(first / 1e3),
                        ..Sample::default()
                    }],
                    None,
                )],
                fidelity: assess_lab(&LabConfig::default(), &Default::default()),
                complete: true,
            })
            .collect();
        let plan = SweepPlan {
            spec: SweepSpec::parse(spec).unwrap(),
            base: LabConfig::default(),
            variants: vec![Variant::Tcp],
            runs: 1,
            timeout: Duration::from_secs(1),
            setting: "Link: test.".into(),
        };
        summarise(&plan, points, false)
    }

    #[test]
    fn rtt_sweep_renders_the_fit_and_the_figure() {
        let r = report("rtt=20ms,60ms", &[(20.0, 0.0, 40.5), (60.0, 0.0, 120.5)]);
        let table = render_table(&r);
        assert!(table.contains("tcp") && table.contains("1.00") && table.contains("matches"));
        assert!(table.contains("0.5 ms"), "{table}");
        let text = render_explanation(&r);
        assert!(text.contains("RTT sweep over 20, 60 ms"), "{text}");
        let svg = render_svg(&r);
        assert!(svg.contains("stroke-dasharray"), "theory dashed");
        assert!(svg.contains("tcp 1.00 RTT (theory 1)"), "{svg}");
        assert!(svg.contains("1 RTT before data: tcp"), "{svg}");
        let csv = render_csv(&r);
        assert_eq!(csv.lines().count(), 3);
        assert!(csv
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("60,0,tcp,1,1,120.500,60.000,"));
    }

    #[test]
    fn loss_sweep_names_the_timer() {
        let r = report("loss=0%,10%", &[(20.0, 0.0, 40.0), (20.0, 0.1, 1040.0)]);
        let text = render_explanation(&r);
        assert!(
            text.contains("p90 up 1000 ms at 10% loss, 1 connection waited"),
            "{text}"
        );
        assert!(text.contains("TCP's initial RTO, 1000 ms"), "{text}");
        assert!(text.contains("--runs 20"), "few runs: {text}");
        let svg = render_svg(&r);
        assert!(svg.contains("TCP's initial RTO"));
        assert!(svg.contains("<polyline"));
    }
}
