//! `proto transfer` as text: the summary table, a cwnd sparkline, the
//! "what this shows" paragraph, and every sample as CSV.

use crate::measure::overhead::{Overhead, APPLICATION};
use crate::measure::phases::{TransferReport, WindowLimit};
use crate::measure::transfer::{Protocol, Sample};
use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, Table};
use std::fmt::Write;

fn mbit(bps: f64) -> String {
    format!("{:.1} Mbit/s", bps / 1e6)
}

fn mb(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.2} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

fn pct(x: f64) -> String {
    format!("{:.0} %", x * 100.0)
}

/// The summary table.
pub fn summary_table(r: &TransferReport) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["", "measured"]);
    let mut row = |k: &str, v: String| {
        t.add_row(vec![k.to_string(), v]);
    };
    row(
        "transferred",
        format!("{} in {:.2} s", mb(r.run.bytes), r.run.seconds),
    );
    let of_rate = |bps: f64, share: Option<f64>| match (share, r.link.rate_bps) {
        (Some(s), Some(rate)) => format!("{} = {} of {}", mbit(bps), pct(s), mbit(rate as f64)),
        _ => mbit(bps),
    };
    row("goodput", of_rate(r.goodput_bps, r.goodput_share));
    if let Some(g) = r.steady_goodput_bps {
        row("goodput after slow start", of_rate(g, r.steady_share));
    }
    match &r.slow_start {
        Some(ss) => {
            row(
                "slow start ended",
                format!(
                    "at {:.0} ms, cwnd {} segments ({}), by {}",
                    ss.end_ms,
                    ss.end_cwnd,
                    mb(u64::from(ss.end_cwnd) * mss(r)),
                    ss.ended_by
                ),
            );
            if !ss.growth_per_rtt.is_empty() {
                row(
                    "cwnd growth per RTT in slow start",
                    ss.growth_per_rtt
                        .iter()
                        .map(|g| format!("×{g:.2}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
        }
        None => row("slow start", "no samples".into()),
    }
    if r.losses.is_empty() {
        row("loss events", "none".into());
    }
    for (i, l) in r.losses.iter().enumerate().take(12) {
        row(
            &format!("loss event {}", i + 1),
            format!(
                "{:.0} ms, {}: cwnd {} → {}{}",
                l.at_ms,
                l.kind,
                l.cwnd_before,
                l.cwnd_after
                    .map_or("(still recovering)".into(), |c| c.to_string()),
                l.ratio.map_or(String::new(), |x| format!(" (×{x:.2})")),
            ),
        );
    }
    if r.losses.len() > 12 {
        row("…", format!("{} loss events in all", r.losses.len()));
    }
    let q = r.queue_delay_ms;
    row(
        "queueing delay at the bottleneck",
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            q.p50, q.p99, q.max
        ),
    );
    row(
        "sender's smoothed RTT",
        format!(
            "min {:.1} ms, p50 {:.1} ms, p99 {:.1} ms",
            r.run.min_rtt_ms, r.srtt_ms.p50, r.srtt_ms.p99
        ),
    );
    row(
        "retransmitted",
        format!(
            "{} ({} segments); the link dropped {} packets ({} queue full, {} random, {} forced){}",
            mb(r.retransmitted_bytes),
            r.retransmitted_segments,
            drops(r),
            r.run.link.client_to_server.dropped_queue,
            r.run.link.client_to_server.dropped_loss,
            r.run.link.client_to_server.dropped_forced,
            if r.run.host_drops > 0 {
                format!(
                    "; the client host dropped {} before the link",
                    r.run.host_drops
                )
            } else {
                String::new()
            }
        ),
    );
    for (k, v) in window_rows(&r.window) {
        row(k, v);
    }
    if let Some(z) = &r.zero_window {
        row(
            "zero window",
            format!(
                "first at {:.0} ms, {:.0} ms in all, up to {} unanswered probes",
                z.first_ms, z.zero_ms, z.max_probes
            ),
        );
    }
    if let Some(c) = t.column_mut(1) {
        c.set_cell_alignment(CellAlignment::Left);
    }
    t.to_string()
}

fn drops(r: &TransferReport) -> u64 {
    let d = r.run.link.client_to_server;
    d.dropped_queue + d.dropped_loss + d.dropped_forced
}

fn mss(r: &TransferReport) -> u64 {
    r.run.samples.last().map_or(1448, |s| u64::from(s.mss))
}

fn window_rows(w: &WindowLimit) -> Vec<(&'static str, String)> {
    let mut rows = vec![(
        "window limit",
        format!(
            "{} (link idle while cwnd had room: {} of the time)",
            if w.limited { "WINDOW-LIMITED" } else { "none" },
            pct(w.window_bound_share)
        ),
    )];
    if w.largest_flight_bytes == 0 {
        // QUIC: quinn reports neither bytes in flight nor limit counters.
        return rows;
    }
    rows.extend([
        (
            "most data in flight",
            format!(
                "{} vs BDP {} (÷ RTT = {})",
                mb(w.largest_flight_bytes),
                mb(w.bdp_bytes),
                mbit(w.flight_rate_bps as f64)
            ),
        ),
        (
            "kernel's limit counters",
            format!(
                "receiver's window {}, send buffer {} of the time; largest advertised window {}",
                pct(w.receiver_window_share),
                pct(w.send_buffer_share),
                w.largest_peer_window.map_or("not reported".into(), mb)
            ),
        ),
    ]);
    rows
}

/// The header overhead as a table: one row per layer, outermost first,
/// with its bytes in one full-size packet and per 1000 bytes of data over
/// the whole transfer.
pub fn overhead_table(o: &Overhead, protocol: Protocol) -> String {
    let f = &o.full_packet;
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "client→server layer".to_string(),
        format!("one full packet ({} seen)", f.count),
        format!("per 1000 data bytes ({} packets)", o.packets),
        "how it was counted".to_string(),
    ]);
    for l in &o.layers {
        let per_packet = match (l.per_packet, l.name == APPLICATION) {
            (Some(b), _) => b.to_string(),
            // The application's share of a TLS or QUIC packet is inside
            // the encrypted part: the full packet's remainder.
            (None, true) => "the rest".into(),
            (None, false) => "—".into(),
        };
        t.add_row(vec![
            l.name.clone(),
            per_packet,
            format!("{:.1}", l.per_1000),
            l.how.clone(),
        ]);
    }
    t.add_row(vec![
        "total on the wire".to_string(),
        (f.ip + f.transport + f.options + f.payload).to_string(),
        format!("{:.1}", 1000.0 + o.total_per_1000()),
        String::new(),
    ]);
    for i in 1..3 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = format!(
        "Header overhead, measured from the packets the lab forwarded: {:.1} header bytes per 1000 \
         bytes of data\n{t}\n",
        o.total_per_1000()
    );
    if protocol != Protocol::Quic {
        let _ = writeln!(
            out,
            "SYN offered: {}; SYN-ACK accepted: {}. So each data segment carries {} option bytes \
             (timestamps: 10 + 2 NOP) — and {} were measured.",
            o.syn_options.join(", "),
            o.syn_ack_options.join(", "),
            o.negotiated_option_bytes,
            f.options
        );
    }
    out
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One line of block characters: `values` averaged into `width` columns,
/// scaled from 0 to their maximum.
pub fn sparkline(values: &[f64], width: usize) -> String {
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let max = values.iter().copied().fold(0.0, f64::max);
    let cols = width.min(values.len());
    (0..cols)
        .map(|c| {
            let a = c * values.len() / cols;
            let b = ((c + 1) * values.len() / cols).max(a + 1);
            let avg = values[a..b].iter().sum::<f64>() / (b - a) as f64;
            let level = if max > 0.0 {
                ((avg / max) * 7.0).round() as usize
            } else {
                0
            };
            BARS[level.min(7)]
        })
        .collect()
}

/// cwnd and the bottleneck queue over time, as two labelled sparklines.
pub fn sparklines(samples: &[Sample], width: usize) -> String {
    let cwnd: Vec<f64> = samples.iter().map(|s| f64::from(s.cwnd)).collect();
    let queue: Vec<f64> = samples.iter().map(|s| s.queue_delay_ms).collect();
    let end = samples.last().map_or(0.0, |s| s.t_ms / 1e3);
    let max_cwnd = cwnd.iter().copied().fold(0.0, f64::max);
    let max_q = queue.iter().copied().fold(0.0, f64::max);
    format!(
        "cwnd  {} max {max_cwnd:.0} segments\nqueue {} max {max_q:.1} ms\n      0 s{:>w$}\n",
        sparkline(&cwnd, width),
        sparkline(&queue, width),
        format!("{end:.1} s"),
        w = width.saturating_sub(3)
    )
}

/// The "what this shows" paragraph: phases found and claims checked.
pub fn what_this_shows(r: &TransferReport) -> String {
    let mut out = String::from("What this shows (claim C9):\n");
    let mut phases = Vec::new();
    if let Some(ss) = &r.slow_start {
        phases.push(format!(
            "slow start from 10 segments to {} by {:.0} ms (ended by {})",
            ss.end_cwnd, ss.end_ms, ss.ended_by
        ));
    }
    let timeouts = r.losses.iter().filter(|l| l.kind == "timeout").count();
    let fast = r.losses.len() - timeouts;
    if fast > 0 {
        phases.push(format!(
            "{fast} loss recover{} without a timeout",
            if fast == 1 { "y" } else { "ies" }
        ));
    }
    if timeouts > 0 {
        phases.push(format!(
            "{timeouts} retransmission timeout{}",
            if timeouts == 1 { "" } else { "s" }
        ));
    }
    if r.losses.len() > 1
        || r.slow_start
            .as_ref()
            .is_some_and(|s| s.ended_by != "the transfer ended first")
    {
        phases.push(format!("congestion avoidance ({}'s sawtooth)", r.run.cc));
    }
    if let Some(z) = &r.zero_window {
        phases.push(format!(
            "flow control: the receiver's window hit zero at {:.0} ms and stayed closed {:.0} ms",
            z.first_ms, z.zero_ms
        ));
    }
    let _ = writeln!(out, "  Phases found: {}.", phases.join("; "));
    for c in &r.claims {
        let verdict = match c.holds {
            Some(true) => "holds",
            Some(false) => "does NOT hold here",
            None => "not shown by this run",
        };
        let _ = writeln!(out, "  • {}: {} — {verdict}.", c.claim, c.measured);
    }
    let w = &r.window;
    if w.limited {
        let _ = writeln!(
            out,
            "  • A window, not the link, limited this transfer: for {} of the steady state the bottleneck \
             queue was empty while the sender kept less than 80 % of its cwnd in flight (the kernel counted \
             the receiver's window limiting {} and the send buffer {} of the time). The path holds {} (BDP); \
             the most the sender had in flight was {}, which carries {} per round trip. Socket buffers cap \
             the window: {} (`--host-buffers sized` fits the link).",
            pct(w.window_bound_share),
            pct(w.receiver_window_share),
            pct(w.send_buffer_share),
            mb(w.bdp_bytes),
            mb(w.largest_flight_bytes),
            mbit(w.flight_rate_bps as f64),
            r.host_buffers.describe()
        );
    }
    for n in &r.run.notes {
        let _ = writeln!(out, "  Note: {n}.");
    }
    out
}

/// Every sample as CSV (one header line).
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "t_ms,cwnd,ssthresh,srtt_ms,rttvar_ms,unacked,in_flight,ca_state,bytes_acked,bytes_retrans,total_retrans,delivery_rate_bps,pacing_rate_bps,peer_window,probes,mss,queue_delay_ms,queue_bytes,link_drops\n",
    );
    let opt = |v: Option<u64>| v.map_or(String::new(), |x| x.to_string());
    for s in samples {
        let _ = writeln!(
            out,
            "{:.3},{},{},{:.3},{:.3},{},{},{},{},{},{},{},{},{},{},{},{:.3},{},{}",
            s.t_ms,
            s.cwnd,
            opt(s.ssthresh.map(u64::from)),
            s.srtt_ms,
            s.rttvar_ms,
            s.unacked,
            opt(s.in_flight.map(u64::from)),
            s.ca_state,
            s.bytes_acked,
            s.bytes_retrans,
            s.total_retrans,
            s.delivery_rate_bps,
            opt(s.pacing_rate_bps),
            opt(s.peer_window.map(u64::from)),
            s.probes,
            s.mss,
            s.queue_delay_ms,
            s.queue_bytes,
            s.link_drops
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_maximum() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0], 4), "▁▃▅█");
        // Averaged into fewer columns.
        assert_eq!(sparkline(&[0.0, 0.0, 4.0, 4.0], 2), "▁█");
        assert_eq!(sparkline(&[], 10), "");
    }

    #[test]
    fn csv_has_a_row_per_sample() {
        let s = Sample {
            t_ms: 1.5,
            cwnd: 10,
            ca_state: "open",
            peer_window: Some(0),
            ..Default::default()
        };
        let text = csv(&[s.clone(), s]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0].split(',').count(),
            lines[1].split(',').count(),
            "{text}"
        );
        assert!(lines[1].starts_with("1.500,10,,"));
    }
}
