//! Renders a handshake comparison: table, CSV, and the "what this shows" text.

use crate::measure::handshake::{Variant, VariantResult, INFLATED_RTTS};
use comfy_table::{
    presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Color, ContentArrangement, Table,
};
use serde::Serialize;
use std::time::Duration;

/// A whole comparison run, as printed and as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// "lab", "loopback" or "remote".
    pub environment: String,
    /// One sentence on where and how this was measured.
    pub setting: String,
    pub runs: usize,
    pub variants: Vec<VariantResult>,
    /// The round trip the emulated link was set to, when the lab was used.
    pub configured_rtt_ms: Option<f64>,
    /// The link emulator's counters, when the lab was used.
    pub link: Option<serde_json::Value>,
}

fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => crate::units::format_micros(d.as_secs_f64() * 1e6),
        None => "–".into(),
    }
}

fn rtts(x: Option<f64>) -> String {
    x.map(fmt_rtts).unwrap_or_else(|| "–".into())
}

/// Two decimals, without the "-0.00" that a hair under zero would print.
fn fmt_rtts(x: f64) -> String {
    let x = if x.abs() < 0.005 { 0.0 } else { x };
    format!("{x:.2}")
}

/// Packets the emulated link dropped (loss model, forced drops, full
/// queue), both directions; `None` off the lab, where nobody counts them.
pub fn packets_lost(report: &CompareReport) -> Option<u64> {
    let link = report.link.as_ref()?;
    let mut lost = 0;
    for dir in ["client_to_server", "server_to_client"] {
        for field in ["dropped_loss", "dropped_forced", "dropped_queue"] {
            lost += link[dir][field].as_u64().unwrap_or(0);
        }
    }
    Some(lost)
}

/// What stretched a variant's slow runs, in one sentence: which timer, by
/// how much — or, when the link lost nothing, that it was not a loss.
fn inflation_sentence(v: &VariantResult, lost: Option<u64>) -> Option<String> {
    let (runs, groups) = inflation_groups(v, lost)?;
    let n = v.samples.len();
    Some(match (lost, groups) {
        (_, Err(why)) => why,
        (Some(_), Ok(groups)) => format!("losses inflated {runs} of {n} handshakes: {groups}"),
        (None, Ok(groups)) => format!(
            "{runs} of {n} handshakes were inflated, probably by losses (nobody counts this path's): {groups}"
        ),
    })
}

/// The inflated runs of `v`: how many, and per timer how much time each
/// cost (`Ok`), or why it was no retransmission at all (`Err`).
fn inflation_groups(
    v: &VariantResult,
    lost: Option<u64>,
) -> Option<(usize, Result<String, String>)> {
    let runs: usize = v.inflated.iter().map(|i| i.runs).sum();
    if runs == 0 {
        return None;
    }
    let n = v.samples.len();
    if lost == Some(0) || v.runs_inflated_by_retransmission() == 0 {
        let worst = v
            .inflated
            .iter()
            .map(|i| i.excess_max)
            .max()
            .unwrap_or_default();
        return Some((
            runs,
            Err(format!(
                "{runs} of {n} runs took ≥ {} RTT more than theory (up to +{}){}: CPU time or scheduling, not a retransmission",
                INFLATED_RTTS,
                ms(Some(worst)),
                if lost == Some(0) { ", yet the link lost no packet" } else { "" }
            )),
        ));
    }
    let groups: Vec<String> = v
        .inflated
        .iter()
        .map(|i| {
            format!(
                "{} run{} +{}{}, likely {}",
                i.runs,
                if i.runs == 1 { "" } else { "s" },
                ms(Some(i.excess_median)),
                if i.runs > 1 && i.excess_max > i.excess_median {
                    format!(" (median; max +{})", ms(Some(i.excess_max)))
                } else {
                    String::new()
                },
                i.timer
            )
        })
        .collect();
    Some((runs, Ok(groups.join("; "))))
}

pub fn render_table(report: &CompareReport) -> String {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    table.set_header(vec![
        "variant",
        "theory",
        "measured RTTs\nmedian (p90 / max)",
        "RTT",
        "TCP\nconnect",
        "TLS/QUIC\nhandshake",
        "first\nreply",
        "handshake\nbytes ↑/↓",
        "verdict",
    ]);
    let lost = packets_lost(report);
    let mut notes = Vec::new();
    for v in &report.variants {
        let mut footnote = |text: &str| {
            notes.push(format!("[{}] {}: {text}", notes.len() + 1, v.protocol.id()));
            notes.len()
        };
        let range = match (v.handshake_rtts_p90, v.handshake_rtts_max) {
            (Some(p90), Some(hi)) if v.samples.len() > 1 => {
                format!(
                    "{} ({} / {})",
                    rtts(v.handshake_rtts),
                    fmt_rtts(p90),
                    fmt_rtts(hi)
                )
            }
            _ => rtts(v.handshake_rtts),
        };
        let bytes = match (v.handshake_bytes_sent, v.handshake_bytes_received) {
            (Some(up), Some(down)) => format!("{up} / {down}"),
            _ => "–".into(),
        };
        let note = v.note.as_deref();
        let inflated = inflation_sentence(v, lost);
        let by_timer = v.runs_inflated_by_retransmission();
        let verdict = match (v.matches_theory, note, &inflated) {
            (Some(true), None, None) => Cell::new("matches").fg(Color::Green),
            (Some(true), note, Some(text)) if by_timer > 0 && lost != Some(0) => {
                let text = match note {
                    Some(n) => format!("{n}; {text}"),
                    None => text.clone(),
                };
                Cell::new(format!(
                    "median matches;\n{by_timer} of {} inflated\nby {} [{}]",
                    v.samples.len(),
                    if lost.is_some() { "losses" } else { "losses?" },
                    footnote(&text)
                ))
                .fg(Color::Yellow)
            }
            (Some(true), note, inflated) => {
                let text: Vec<&str> = note.into_iter().chain(inflated.as_deref()).collect();
                Cell::new(format!("matches [{}]", footnote(&text.join("; ")))).fg(Color::Green)
            }
            (Some(false), note, inflated) => {
                let text: Vec<&str> = note.into_iter().chain(inflated.as_deref()).collect();
                Cell::new(format!("differs [{}]", footnote(&text.join("; ")))).fg(Color::Yellow)
            }
            (None, note, _) => {
                Cell::new(format!("not measured [{}]", footnote(note.unwrap_or("")))).fg(Color::Red)
            }
        };
        table.add_row(vec![
            Cell::new(v.protocol.id()),
            Cell::new(format!("{} RTT\n{}", v.theory_rtts, v.claim)),
            Cell::new(range).set_alignment(CellAlignment::Right),
            Cell::new(ms(v.rtt)).set_alignment(CellAlignment::Right),
            Cell::new(ms(v.tcp_connect)).set_alignment(CellAlignment::Right),
            Cell::new(ms(v.crypto_handshake)).set_alignment(CellAlignment::Right),
            Cell::new(ms(v.first_reply)).set_alignment(CellAlignment::Right),
            Cell::new(bytes).set_alignment(CellAlignment::Right),
            verdict,
        ]);
    }
    let mut out = table.to_string();
    for note in notes {
        out.push('\n');
        out.push_str(&note);
    }
    out
}

/// Time spent before data could flow: `first_reply − rtt`.
fn before_data(v: &VariantResult) -> Option<Duration> {
    Some(v.first_reply?.saturating_sub(v.rtt?))
}

/// The "what this shows" paragraph, with the lecture's claims beside the
/// measured milliseconds.
pub fn render_explanation(report: &CompareReport) -> String {
    let find = |variant: Variant| {
        report
            .variants
            .iter()
            .find(|v| v.protocol == variant && v.handshake_rtts.is_some())
    };
    let mut out = format!("{}\n\n", report.setting);
    out.push_str(
        "What this shows: every handshake round trip is time in which no data flows. \
         \"measured RTTs\" = (time to first reply − one RTT for the echo itself) ÷ the \
         connection's own RTT, measured on the connection after its first reply.\n",
    );
    let rtt_ms = report
        .variants
        .iter()
        .filter_map(|v| v.rtt)
        .map(|d| d.as_secs_f64() * 1e3)
        .collect::<Vec<_>>();
    let Some(measured_rtt) = crate::measure::handshake::median(&rtt_ms) else {
        return out;
    };
    // Claims are stated for the RTT the link was set to (the lecture's
    // 329 ms), measurements come from the connections themselves.
    let rtt = report.configured_rtt_ms.unwrap_or(measured_rtt);
    let line = |v: &VariantResult, claim_rtts: f64| {
        let measured = before_data(v)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(f64::NAN);
        format!(
            "  {:<16} claim {} RTT = {:>7} before data; measured {:>5} RTT = {:>9}\n",
            v.protocol.id(),
            claim_rtts,
            fmt_ms(claim_rtts * rtt),
            v.handshake_rtts.map(fmt_rtts).unwrap_or_else(|| "–".into()),
            fmt_ms(measured)
        )
    };
    out.push_str(&match report.configured_rtt_ms {
        Some(set) => format!(
            "\nThe link's RTT was set to {}; the connections measured {}:\n",
            fmt_ms(set),
            fmt_ms(measured_rtt)
        ),
        None => format!("\nAt the measured RTT ({}):\n", fmt_ms(rtt)),
    });
    for variant in Variant::ALL {
        if let Some(v) = find(variant) {
            out.push_str(&line(v, variant.theory_rtts()));
        }
    }
    let lost = packets_lost(report);
    let inflated: Vec<String> = report
        .variants
        .iter()
        .filter(|v| v.runs_inflated_by_retransmission() > 0 && lost != Some(0))
        .filter_map(|v| {
            let (runs, groups) = inflation_groups(v, lost)?;
            Some(format!(
                "  {:<16} {runs} of {} runs: {}\n",
                v.protocol.id(),
                v.samples.len(),
                groups.unwrap_or_else(|why| why)
            ))
        })
        .collect();
    if !inflated.is_empty() {
        out.push_str(&format!(
            "\n{} some handshakes: the medians above are what theory predicts, the p90 and max \
             what a lost packet costs. A lost flight is resent only when a timer fires, and \
             the extra time of each slow run names the timer:\n",
            match lost {
                Some(lost) => format!("Losses inflated (the link dropped {lost} packets)"),
                None => "Probably losses inflated".to_string(),
            }
        ));
        out.extend(inflated);
    }
    if let (Some(tls12), Some(quic)) = (find(Variant::Tls12), find(Variant::Quic)) {
        let (a, b) = (before_data(tls12), before_data(quic));
        if let (Some(a), Some(b)) = (a, b) {
            out.push_str(&format!(
                "\nThe lecture's example: TCP + TLS 1.2 spends {} before any data (claim: 3 RTT = {}); \
                 QUIC {} (claim: 1 RTT = {}). Claimed \"from {} to {}\", measured from {} to {}.\n",
                fmt_ms(a.as_secs_f64() * 1e3),
                fmt_ms(3.0 * rtt),
                fmt_ms(b.as_secs_f64() * 1e3),
                fmt_ms(rtt),
                fmt_ms(3.0 * rtt),
                fmt_ms(rtt),
                fmt_ms(a.as_secs_f64() * 1e3),
                fmt_ms(b.as_secs_f64() * 1e3),
            ));
        }
    }
    out
}

/// Milliseconds in the unit that suits them: `987 ms`, `4.30 ms`, `1.31 s`.
fn fmt_ms(ms: f64) -> String {
    if ms == 0.0 {
        "0 ms".into()
    } else if ms.is_finite() {
        crate::units::format_micros(ms * 1e3)
    } else {
        "–".into()
    }
}

/// One CSV row per variant, for plotting.
pub fn render_csv(report: &CompareReport) -> String {
    let mut out = String::from(
        "protocol,theory_rtts,handshake_rtts,handshake_rtts_min,handshake_rtts_max,rtt_ms,tcp_connect_ms,crypto_handshake_ms,first_reply_ms,handshake_bytes_sent,handshake_bytes_received,matches_theory,handshake_rtts_p90,runs,inflated_runs,resumed_runs\n",
    );
    let f = |x: Option<f64>| x.map(|x| format!("{x:.4}")).unwrap_or_default();
    let d = |x: Option<Duration>| {
        x.map(|x| format!("{:.4}", x.as_secs_f64() * 1e3))
            .unwrap_or_default()
    };
    let u = |x: Option<u64>| x.map(|x| x.to_string()).unwrap_or_default();
    for v in &report.variants {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            v.protocol.id(),
            v.theory_rtts,
            f(v.handshake_rtts),
            f(v.handshake_rtts_min),
            f(v.handshake_rtts_max),
            d(v.rtt),
            d(v.tcp_connect),
            d(v.crypto_handshake),
            d(v.first_reply),
            u(v.handshake_bytes_sent),
            u(v.handshake_bytes_received),
            v.matches_theory.map(|b| b.to_string()).unwrap_or_default(),
            f(v.handshake_rtts_p90),
            v.samples.len(),
            v.inflated.iter().map(|i| i.runs).sum::<usize>(),
            v.resumed_runs.map(|n| n.to_string()).unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::handshake::Sample;

    fn report() -> CompareReport {
        let s = |first: u64| Sample {
            first_reply: Duration::from_millis(first),
            rtt: Duration::from_millis(100),
            ..Sample::default()
        };
        CompareReport {
            environment: "lab".into(),
            setting: "test".into(),
            runs: 1,
            variants: vec![
                VariantResult::from_samples(Variant::Tls12, vec![s(400)], None),
                VariantResult::from_samples(Variant::Quic, vec![s(200)], None),
                VariantResult::unavailable(Variant::Tls13ZeroRttTfo, "no TFO".into()),
            ],
            link: None,
            configured_rtt_ms: Some(100.0),
        }
    }

    #[test]
    fn table_shows_every_variant_and_verdict() {
        let t = render_table(&report());
        assert!(t.contains("tls1.2") && t.contains("quic") && t.contains("matches"));
        assert!(t.contains("not measured [1]"));
        assert!(t.contains("[1] tls1.3-0rtt-tfo: no TFO"));
    }

    #[test]
    fn explanation_puts_claims_beside_measurements() {
        let e = render_explanation(&report());
        assert!(e.contains("from 300 ms to 100 ms"), "{e}");
        assert!(e.contains("measured from 300 ms to 100 ms"), "{e}");
    }

    /// TLS 1.3 and QUIC at 100 ms RTT over a link that lost `lost` packets:
    /// most runs at theory, a few a timer later.
    fn lossy(lost: u64) -> CompareReport {
        let s = |first: u64| Sample {
            first_reply: Duration::from_millis(first),
            rtt: Duration::from_millis(100),
            ..Sample::default()
        };
        let mut tls: Vec<Sample> = (0..8).map(|_| s(302)).collect();
        tls.extend([s(1305), s(1598)]);
        let mut quic: Vec<Sample> = (0..9).map(|_| s(201)).collect();
        quic.push(s(1201));
        CompareReport {
            environment: "lab".into(),
            setting: "test".into(),
            runs: 10,
            variants: vec![
                VariantResult::from_samples(Variant::Tls13, tls, None),
                VariantResult::from_samples(Variant::Quic, quic, None),
                VariantResult::from_samples(Variant::Tcp, vec![s(200), s(201)], None),
            ],
            link: Some(serde_json::json!({
                "client_to_server": {"dropped_loss": lost},
                "server_to_client": {"dropped_loss": 0},
            })),
            configured_rtt_ms: Some(100.0),
        }
    }

    #[test]
    fn losses_are_not_called_matches_and_their_timer_is_named() {
        let report = lossy(7);
        let t = render_table(&report);
        assert!(
            t.contains("2.02 (12.05 / 14.98)"),
            "median (p90 / max): {t}"
        );
        assert!(
            t.contains("median matches;") && t.contains("2 of 10 inflated"),
            "{t}"
        );
        assert!(t.contains("losses inflated 2 of 10 handshakes"), "{t}");
        assert!(t.contains("TCP's initial retransmission timeout"), "{t}");
        assert!(t.contains("QUIC's first probe timeout"), "{t}");
        assert!(t.contains("+1.00 s"), "the excess in seconds: {t}");
        // TCP had no slow run: a plain "matches".
        let tcp_row = t.lines().find(|l| l.contains("│ tcp ")).unwrap();
        assert!(
            tcp_row.contains("matches") && !tcp_row.contains("inflated"),
            "{t}"
        );
        let e = render_explanation(&report);
        assert!(
            e.contains("Losses inflated (the link dropped 7 packets)"),
            "{e}"
        );
        assert!(e.contains("tls1.3") && e.contains("quic"), "{e}");
        // The same times without a lost packet are not blamed on losses.
        let report = lossy(0);
        let t = render_table(&report);
        assert!(!t.contains("losses"), "{t}");
        assert!(t.contains("not a retransmission"), "{t}");
        assert!(!render_explanation(&report).contains("Losses inflated"));
    }

    #[test]
    fn csv_has_a_row_per_variant() {
        let csv = render_csv(&report());
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.lines().nth(1).unwrap().starts_with("tls1.2,3,3.0000"));
    }
}
