//! `proto hol`'s results as text: one row per transport, and the verdict
//! on claim C6 in words.

use crate::lab::LabConfig;
use crate::measure::hol::{HolConfig, HolSummary, STALL_FACTOR};
use crate::output::link::describe;
use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, Table};

/// The comparison table and what it shows, for the terminal.
pub fn hol_table(results: &[HolSummary], lab: &LabConfig, config: &HolConfig) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "transport",
        "requests",
        "min ms",
        "p50 ms",
        "p99 ms",
        "max ms",
        "packets lost",
        "stalled requests",
        "stalled per loss",
        "loss events\nseen",
        "streams stalled per\nloss event: median (max)",
    ]);
    for r in results {
        let row = vec![
            r.transport.to_string(),
            r.requests.to_string(),
            format!("{:.1}", r.min_ms),
            format!("{:.1}", r.p50_ms),
            format!("{:.1}", r.p99_ms),
            format!("{:.1}", r.max_ms),
            r.packets_lost.to_string(),
            r.stalled.to_string(),
            r.stalled_per_loss
                .map(|x| format!("{x:.1}"))
                .unwrap_or_else(|| "–".into()),
            r.loss_events.to_string(),
            streams_per_event(r, config),
        ];
        table.add_row(row);
    }
    for i in 1..11 {
        if let Some(c) = table.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = format!(
        "Link: client→server {}; server→client {}. {} streams, each sending one request per {:?}.\n{table}\n",
        describe(&lab.client_to_server),
        describe(&lab.server_to_client),
        config.streams,
        config.interval
    );
    out.push_str(&format!(
        "A request is \"stalled\" when it took more than {STALL_FACTOR}× the fastest reply. A \"loss event\" is a \
         group of stalled replies that arrive together: what one retransmission released.\n"
    ));
    let find = |t: &str| results.iter().find(|r| r.transport == t);
    if let (Some(tcp), Some(quic)) = (find("tcp"), find("quic")) {
        if let (Some(t), Some(q)) = (tcp.stalled_per_loss, quic.stalled_per_loss) {
            out.push_str(&format!(
                "\nWhat this shows (claim C6): on TCP each lost packet held up {t:.1} requests, and each loss \
                 event stalled {} — everything queued behind the missing bytes waits for the \
                 retransmission. On QUIC each loss held up {q:.1} requests and stalled {}{}.\n",
                streams_in_words(tcp, config),
                streams_in_words(quic, config),
                if fewer_streams(quic, tcp) {
                    ", so the claim holds: only the lost packet's stream waited (its next requests queue \
                     behind the lost one: within one stream QUIC keeps order too)"
                } else {
                    " — here a loss event did not clearly stall fewer streams than on TCP, so this run does not show the claim (try more --duration)"
                }
            ));
        }
    }
    if let (Some(tcp), Some(sctp)) = (find("tcp"), find("sctp")) {
        if let (Some(_), Some(s)) = (tcp.stalled_per_loss, sctp.stalled_per_loss) {
            out.push_str(&format!(
                "On SCTP (claim C12: multi-streaming) each loss held up {s:.1} requests and stalled {}{}.\n",
                streams_in_words(sctp, config),
                if fewer_streams(sctp, tcp) {
                    ": its streams are ordered one by one, not as one byte stream, so a loss stalls only \
                     its own stream, as on QUIC"
                } else {
                    " — here a loss event did not clearly stall fewer streams than on TCP, so this run does not show it (try more --duration)"
                }
            ));
        }
    }
    out
}

/// The claim's test: a loss event on `multi` stalls (median) less than half
/// the streams one on TCP stalls.
fn fewer_streams(multi: &HolSummary, tcp: &HolSummary) -> bool {
    match (multi.streams_per_loss_median, tcp.streams_per_loss_median) {
        (Some(m), Some(t)) => m * 2.0 < t,
        _ => false,
    }
}

/// `8 of 8 (8)`: the median streams one loss event stalled, of all, and the largest.
fn streams_per_event(r: &HolSummary, config: &HolConfig) -> String {
    match (r.streams_per_loss_median, r.streams_per_loss_max) {
        (Some(median), Some(max)) => format!("{median} of {} ({max})", config.streams),
        _ => "–".into(),
    }
}

/// `all 8 streams (median of 12 loss events)`, `1 of 8 streams (…)`.
fn streams_in_words(r: &HolSummary, config: &HolConfig) -> String {
    match r.streams_per_loss_median {
        Some(m) if m >= config.streams as f64 => format!(
            "all {} streams (median of {} loss events)",
            config.streams, r.loss_events
        ),
        Some(m) => format!(
            "{m} of {} streams (median of {} loss events)",
            config.streams, r.loss_events
        ),
        None => "no stream (no loss event seen)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::hol::{summarize, Reply};
    use std::time::Duration;

    #[test]
    fn quic_rows_say_one_stream_per_loss_not_all() {
        let config = HolConfig {
            streams: 4,
            interval: Duration::from_millis(20),
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(1),
        };
        let reply = |stream, sent: u64, latency: u64| Reply {
            stream,
            sent_at: Duration::from_millis(sent),
            latency: Duration::from_millis(latency),
        };
        let mut tcp: Vec<Reply> = (0..4).map(|k| reply(k, 5 * k as u64, 50)).collect();
        // One loss: all four streams released at 300 ms.
        tcp.extend((0..4).map(|k| reply(k, 100 + 5 * k as u64, 200 - 5 * k as u64)));
        let mut quic: Vec<Reply> = (0..4).map(|k| reply(k, 5 * k as u64, 50)).collect();
        // Four losses over the run, each its own stream: every stream had
        // one, yet each loss stalled one stream.
        quic.extend((0..4).map(|k| reply(k, 200 * k as u64 + 100, 120)));
        let results = [summarize("tcp", &tcp, 1), summarize("quic", &quic, 4)];
        let text = hol_table(&results, &LabConfig::default(), &config);
        assert!(text.contains("4 of 4 (4)"), "{text}");
        assert!(text.contains("1 of 4 (1)"), "{text}");
        assert!(
            text.contains("each loss event stalled all 4 streams"),
            "{text}"
        );
        assert!(
            text.contains("stalled 1 of 4 streams (median of 4 loss events)"),
            "{text}"
        );
    }
}
