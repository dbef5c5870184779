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
        "streams stalled",
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
            format!("{} of {}", r.streams_stalled, config.streams),
        ];
        table.add_row(row);
    }
    for i in 1..10 {
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
        "A request is \"stalled\" when it took more than {STALL_FACTOR}× the fastest reply.\n"
    ));
    let find = |t: &str| results.iter().find(|r| r.transport == t);
    if let (Some(tcp), Some(quic)) = (find("tcp"), find("quic")) {
        if let (Some(t), Some(q)) = (tcp.stalled_per_loss, quic.stalled_per_loss) {
            out.push_str(&format!(
                "\nWhat this shows (claim C6): on TCP each lost packet held up {t:.1} requests, across {} streams — \
                 everything queued behind the missing bytes waits for the retransmission. On QUIC each loss held \
                 up {q:.1}: only its own stream waited (its next requests queue behind the lost one: \
                 within one stream QUIC keeps order too){}.\n",
                tcp.streams_stalled,
                if q * 2.0 < t {
                    ", so the claim holds"
                } else {
                    " — here not clearly fewer than TCP's, so this run does not show the claim (try more --duration)"
                }
            ));
        }
    }
    if let (Some(tcp), Some(sctp)) = (find("tcp"), find("sctp")) {
        if let (Some(t), Some(s)) = (tcp.stalled_per_loss, sctp.stalled_per_loss) {
            out.push_str(&format!(
                "On SCTP (claim C12: multi-streaming) each loss held up {s:.1}: its streams are ordered one by one, \
                 not as one byte stream{}.\n",
                if s * 2.0 < t {
                    ", so a loss stalls only its own stream, as on QUIC"
                } else {
                    " — here not clearly fewer than TCP's, so this run does not show it (try more --duration)"
                }
            ));
        }
    }
    out
}
