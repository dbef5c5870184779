//! The emulated link, described in one line for people.

use crate::lab::fidelity::{DirectionFidelity, LinkFidelity};
use crate::lab::model::{LinkConfig, LossModel};
use crate::lab::{LabConfig, LinkCounters};
use crate::units::{format_bit_rate, format_duration_exact};

/// One line describing a direction, e.g. "delay 50ms, loss 2%, rate 10 Mbit/s".
pub fn describe(link: &LinkConfig) -> String {
    let mut parts = vec![format!("delay {}", format_duration_exact(link.delay))];
    if !link.jitter.is_zero() {
        parts.push(format!("jitter ±{}", format_duration_exact(link.jitter)));
    }
    match link.loss {
        LossModel::None => {}
        LossModel::Random { p } => parts.push(format!("loss {}%", p * 100.0)),
        LossModel::GilbertElliott { .. } => {
            let (mean, burst) = link.loss.long_run();
            parts.push(format!(
                "loss {:.3}% in bursts of {:.1}",
                mean * 100.0,
                burst.unwrap_or(f64::INFINITY)
            ))
        }
    }
    if let Some(r) = link.rate_bps {
        parts.push(format!(
            "rate {}, queue {} packets",
            format_bit_rate(r),
            link.queue_packets
        ));
    }
    if link.reorder > 0.0 {
        parts.push(format!(
            "reorder {}% (+{})",
            link.reorder * 100.0,
            format_duration_exact(link.reorder_delay)
        ));
    }
    if link.duplicate > 0.0 {
        parts.push(format!("duplicate {}%", link.duplicate * 100.0));
    }
    if !link.drop_data_packets.is_empty() {
        let list: Vec<String> = link.drop_data_packets.iter().map(u64::to_string).collect();
        parts.push(format!("drops data packet {}", list.join(", ")));
    }
    parts.join(", ")
}

/// The counters as a small table for stderr.
/// Both directions in one line: "each way: …" when they are alike,
/// "up: …; down: …" when not.
pub fn describe_both(up: &LinkConfig, down: &LinkConfig) -> String {
    let (up, down) = (describe(up), describe(down));
    if up == down {
        format!("each way: {up}")
    } else {
        format!("up: {up}; down: {down}")
    }
}

pub fn counters_table(c: &LinkCounters) -> String {
    let (u, d) = (&c.client_to_server, &c.server_to_client);
    let rows: [(&str, u64, u64); 11] = [
        ("packets sent into the link", u.packets, d.packets),
        ("bytes sent into the link", u.bytes, d.bytes),
        (
            "packets delivered",
            u.delivered_packets,
            d.delivered_packets,
        ),
        ("bytes delivered", u.delivered_bytes, d.delivered_bytes),
        ("dropped by loss", u.dropped_loss, d.dropped_loss),
        ("dropped by full queue", u.dropped_queue, d.dropped_queue),
        ("duplicated", u.duplicated, d.duplicated),
        ("reordered", u.reordered, d.reordered),
        ("queue peak (packets)", u.queue_peak, d.queue_peak),
        ("in flight at exit", u.in_flight, d.in_flight),
        ("write errors", u.write_errors, d.write_errors),
    ];
    let mut out = format!(
        "{:<28} {:>14} {:>14}\n",
        "link counters", "client→server", "server→client"
    );
    for (name, up, down) in rows {
        if name == "write errors" && up == 0 && down == 0 {
            continue;
        }
        out.push_str(&format!("{name:<28} {up:>14} {down:>14}\n"));
    }
    out
}

/// What the link actually did against its settings, both directions, and
/// a verdict in words (see `lab/fidelity.rs`).
pub fn fidelity_report(f: &LinkFidelity) -> String {
    let (u, d) = (&f.client_to_server, &f.server_to_client);
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut row = |name: &str, get: &dyn Fn(&DirectionFidelity) -> String| {
        rows.push((name.to_string(), get(u), get(d)));
    };
    let ms = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.2}"));
    row("one-way delay asked (ms)", &|x| {
        format!("{:.2}", x.configured_delay_ms)
    });
    row("  realised p50 / p99 (ms)", &|x| {
        format!("{} / {}", ms(x.delay_p50_ms), ms(x.delay_p99_ms))
    });
    row(
        "  timing error p50 / p99",
        &|x| match (x.error_p50_ms, x.error_p99_ms) {
            (Some(p50), Some(p99)) => format!("+{p50:.2} / +{p99:.2}"),
            _ => "–".into(),
        },
    );
    if u.configured_jitter_ms > 0.0 || d.configured_jitter_ms > 0.0 {
        row("jitter asked / realised (±ms)", &|x| {
            format!("{:.2} / {}", x.configured_jitter_ms, ms(x.jitter_ms))
        });
    }
    let lossy = |x: &DirectionFidelity| x.configured_loss > 0.0 || x.loss.is_some_and(|l| l > 0.0);
    if lossy(u) || lossy(d) {
        let pct = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{:.2}%", v * 100.0));
        row("loss asked / realised", &|x| {
            format!("{} / {}", pct(Some(x.configured_loss)), pct(x.loss))
        });
        if u.configured_loss_burst.is_some() || d.configured_loss_burst.is_some() {
            let n = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.1}"));
            row("  mean burst asked / realised", &|x| {
                format!("{} / {}", n(x.configured_loss_burst), n(x.loss_burst))
            });
        }
    }
    if u.configured_rate_bps.is_some() || d.configured_rate_bps.is_some() {
        row("rate asked / realised", &|x| {
            let asked = x.configured_rate_bps.map_or("–".into(), format_bit_rate);
            let unmeasured = if x.configured_jitter_ms > 0.0 {
                "n/a (jitter)"
            } else {
                "–"
            };
            let got = x
                .rate_bps
                .map_or(unmeasured.into(), |r| format_bit_rate(r.round() as u64));
            format!("{asked} / {got}")
        });
    }
    let pct = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{:.2}%", v * 100.0));
    let asks = |f: fn(&DirectionFidelity) -> f64| f(u) > 0.0 || f(d) > 0.0;
    if asks(|x| x.configured_duplicate) {
        row("duplicate asked / realised", &|x| {
            format!(
                "{} / {}",
                pct(Some(x.configured_duplicate)),
                pct(x.duplicate)
            )
        });
    }
    if asks(|x| x.configured_reorder) {
        row("reorder asked / realised", &|x| {
            format!("{} / {}", pct(Some(x.configured_reorder)), pct(x.reorder))
        });
    }
    row("duplicated / reordered", &|x| {
        format!("{} / {}", x.duplicated, x.reordered)
    });
    row(
        &format!("late > {} ms / timed", f.late_threshold_ms),
        &|x| format!("{} / {}", x.late_packets, x.timed_packets),
    );
    row("dropped by the forwarder", &|x| {
        x.forwarder_dropped.to_string()
    });
    let mut out = format!(
        "{:<30} {:>24} {:>24}\n",
        "link fidelity", "client→server", "server→client"
    );
    for (name, up, down) in rows {
        out.push_str(&format!("{name:<30} {up:>24} {down:>24}\n"));
    }
    out.push_str(&fidelity_verdict(f));
    out.push('\n');
    out
}

/// The verdict of [`fidelity_verdict`] when the link was *not* faithful
/// (for commands that report it only then).
pub fn fidelity_warning(config: &LabConfig, counters: &LinkCounters) -> Option<String> {
    let fidelity = crate::lab::fidelity::assess_lab(config, counters);
    (!fidelity.faithful).then(|| fidelity_verdict(&fidelity))
}

/// One sentence: was the link what was asked for, and if not, why.
pub fn fidelity_verdict(f: &LinkFidelity) -> String {
    if f.faithful {
        let worst = [&f.client_to_server, &f.server_to_client]
            .iter()
            .filter_map(|x| x.error_max_ms)
            .fold(0.0, f64::max);
        let notes: Vec<String> = [
            ("client→server", &f.client_to_server),
            ("server→client", &f.server_to_client),
        ]
        .iter()
        .flat_map(|(dir, x)| x.notes.iter().map(move |n| format!("{dir}: {n}")))
        .collect();
        if !notes.is_empty() {
            return format!(
                "The link was faithful within proto's tolerance, none lost outside the settings; {}.",
                notes.join("; ")
            );
        }
        return format!(
            "The link was faithful: every packet left within {} ms of its time (worst {:.2} ms late), none lost outside the settings.",
            f.late_threshold_ms, worst
        );
    }
    let mut problems = Vec::new();
    for (dir, x) in [
        ("client→server", &f.client_to_server),
        ("server→client", &f.server_to_client),
    ] {
        for p in &x.problems {
            problems.push(format!("{dir}: {p}"));
        }
    }
    format!(
        "WARNING: the link was NOT what was asked for. {}. Re-run on a quieter machine (fewer programs busy) before trusting these figures.",
        problems.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::LinkCounters;

    #[test]
    fn counters_table_lists_both_directions() {
        let mut c = LinkCounters::default();
        c.client_to_server.packets = 12;
        c.server_to_client.dropped_loss = 3;
        let t = counters_table(&c);
        assert!(t.starts_with("link counters"));
        let line = t.lines().find(|l| l.starts_with("packets sent")).unwrap();
        assert!(line.ends_with("12              0"), "{line}");
        let line = t
            .lines()
            .find(|l| l.starts_with("dropped by loss"))
            .unwrap();
        assert!(line.ends_with("0              3"), "{line}");
        assert!(!t.contains("write errors"), "hidden while zero");
    }
}
