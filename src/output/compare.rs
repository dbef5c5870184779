//! Renders a handshake comparison: table, CSV, and the "what this shows" text.

use crate::measure::handshake::{Variant, VariantResult};
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
        Some(d) if d.as_secs_f64() < 0.01 => format!("{:.3} ms", d.as_secs_f64() * 1e3),
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
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

pub fn render_table(report: &CompareReport) -> String {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    table.set_header(vec![
        "variant",
        "theory",
        "measured RTTs\nmedian (min–max)",
        "RTT",
        "TCP\nconnect",
        "TLS/QUIC\nhandshake",
        "first\nreply",
        "handshake\nbytes ↑/↓",
        "verdict",
    ]);
    let mut notes = Vec::new();
    for v in &report.variants {
        let mut footnote = || {
            notes.push(format!(
                "[{}] {}: {}",
                notes.len() + 1,
                v.protocol.id(),
                v.note.as_deref().unwrap_or("")
            ));
            notes.len()
        };
        let range = match (v.handshake_rtts_min, v.handshake_rtts_max) {
            (Some(lo), Some(hi)) => format!("{} ({lo:.2}–{hi:.2})", rtts(v.handshake_rtts)),
            _ => rtts(v.handshake_rtts),
        };
        let bytes = match (v.handshake_bytes_sent, v.handshake_bytes_received) {
            (Some(up), Some(down)) => format!("{up} / {down}"),
            _ => "–".into(),
        };
        let verdict = match v.matches_theory {
            Some(true) if v.note.is_none() => Cell::new("matches").fg(Color::Green),
            Some(true) => Cell::new(format!("matches [{}]", footnote())).fg(Color::Green),
            Some(false) => Cell::new(format!("differs [{}]", footnote())).fg(Color::Yellow),
            None => Cell::new(format!("not measured [{}]", footnote())).fg(Color::Red),
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

/// Milliseconds with sensible precision: `987 ms`, `4.3 ms`, `0.087 ms`.
fn fmt_ms(ms: f64) -> String {
    if !ms.is_finite() {
        "–".into()
    } else if ms.abs() < 0.0005 {
        "0 ms".into()
    } else if ms.abs() >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms.abs() >= 1.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

/// One CSV row per variant, for plotting.
pub fn render_csv(report: &CompareReport) -> String {
    let mut out = String::from(
        "protocol,theory_rtts,handshake_rtts,handshake_rtts_min,handshake_rtts_max,rtt_ms,tcp_connect_ms,crypto_handshake_ms,first_reply_ms,handshake_bytes_sent,handshake_bytes_received,matches_theory\n",
    );
    let f = |x: Option<f64>| x.map(|x| format!("{x:.4}")).unwrap_or_default();
    let d = |x: Option<Duration>| {
        x.map(|x| format!("{:.4}", x.as_secs_f64() * 1e3))
            .unwrap_or_default()
    };
    let u = |x: Option<u64>| x.map(|x| x.to_string()).unwrap_or_default();
    for v in &report.variants {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
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
            v.matches_theory.map(|b| b.to_string()).unwrap_or_default()
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

    #[test]
    fn csv_has_a_row_per_variant() {
        let csv = render_csv(&report());
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.lines().nth(1).unwrap().starts_with("tls1.2,3,3.0000"));
    }
}
