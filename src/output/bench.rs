//! `proto bench`'s comparison: one row per transport, with each transport's
//! latency and throughput as a ratio to TCP's.

use crate::measure::load::LoadReport;
use crate::transport::Transport;
use crate::units::format_micros;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};

/// The comparison: one row per transport, ratios to TCP's when TCP ran.
pub fn comparison_table(rows: &[(Transport, &LoadReport)]) -> String {
    let tcp = rows
        .iter()
        .find(|(transport, _)| *transport == Transport::Tcp)
        .map(|(_, report)| (report.latency.summary().p50_us, report.requests_per_sec()));
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "transport".to_string(),
        "requests".into(),
        "p50".into(),
        "p99".into(),
        "p99.9".into(),
        "max".into(),
        "requests/s".into(),
        "MB/s".into(),
        "p50 vs tcp".into(),
        "req/s vs tcp".into(),
        "errors".into(),
        "lost".into(),
    ]);
    for (transport, report) in rows {
        let s = report.latency.summary();
        let rps = report.requests_per_sec();
        let (p50_ratio, rps_ratio) = match tcp {
            Some((p50, tcp_rps)) if p50 > 0.0 && tcp_rps > 0.0 => (
                format!("{:.2}×", s.p50_us / p50),
                format!("{:.2}×", rps / tcp_rps),
            ),
            _ => ("-".into(), "-".into()),
        };
        let right = |text: String| Cell::new(text).set_alignment(CellAlignment::Right);
        table.add_row(vec![
            Cell::new(transport.name()),
            right(s.count.to_string()),
            right(format_micros(s.p50_us)),
            right(format_micros(s.p99_us)),
            right(format_micros(s.p99_9_us)),
            right(format_micros(s.max_us)),
            right(format!("{rps:.0}")),
            right(format!("{:.2}", report.megabytes_per_sec())),
            right(p50_ratio),
            right(rps_ratio),
            right((report.mismatches + report.failed_connections).to_string()),
            right(report.lost.to_string()),
        ]);
    }
    table.to_string()
}
