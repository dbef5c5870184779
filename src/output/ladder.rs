//! The ladder (sequence) diagram of a trace, as terminal text and as SVG.
//!
//! Terminal: one row per packet, ordered by the time the *client* sees it
//! (when it sends its own packets, when the server's arrive), client on
//! the left, server on the right, the arrow pointing the way the packet
//! went; under it, what it carries at every layer. A packet the link
//! dropped ends in ✗ half-way. Phase markers appear when the client's
//! clock passes the end of a phase.

use crate::measure::trace::{Fate, Ladder, Trace, TracedPacket};
use crate::wire::dissect::{Dir, Layer};
use std::fmt::Write as _;

/// Total width of the terminal ladder.
pub const WIDTH: usize = 100;
const LEFT: usize = 17; // "  12345.6  99.99 "
const RIGHT: usize = 10; // " 12345.6  "
const ARROW: usize = WIDTH - LEFT - RIGHT;

struct Paint {
    on: bool,
    brief: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// The short headline of a packet: the messages it carries, else its TCP flags.
pub fn headline(p: &TracedPacket) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !p.quic_packets.is_empty() {
        parts.push(p.quic_packets.join("+"));
    }
    for l in &p.layers {
        let text = l.text.as_str();
        let short = match l.layer {
            Layer::Tls
                if text.starts_with("application data") || text.starts_with("early data") =>
            {
                continue; // the Data label that follows says it better
            }
            Layer::Tls => text.split(" (").next().unwrap_or(text).to_string(),
            Layer::Data => text.to_string(),
            Layer::Sctp if text.starts_with("SCTP ") => continue,
            Layer::Sctp if text.starts_with("DATA") => match text.find('"') {
                Some(q) => format!("DATA {}", &text[q..]),
                None => "DATA".into(),
            },
            Layer::Sctp => text.split(' ').next().unwrap_or(text).to_string(),
            Layer::Quic => {
                let name = text.split(' ').next().unwrap_or(text);
                match name {
                    "CRYPTO" => text
                        .strip_prefix("CRYPTO ")
                        .filter(|t| !t.starts_with("off="))
                        .map(|t| {
                            t.split(" + ")
                                .map(|m| m.split(" (").next().unwrap_or(m))
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_else(|| "CRYPTO".into()),
                    "STREAM" | "DATAGRAM" => match text.find('"') {
                        Some(q) if text[q..].len() > 2 => text[q..].to_string(),
                        _ => name.to_string(),
                    },
                    "HANDSHAKE_DONE" | "CONNECTION_CLOSE" | "NEW_TOKEN" | "PING" => {
                        name.to_string()
                    }
                    _ => continue,
                }
            }
            _ => continue,
        };
        if !parts.contains(&short) {
            parts.push(short);
        }
    }
    let flags = p.tcp_flags.clone().unwrap_or_default();
    let notable = flags.contains("SYN") || flags.contains("FIN") || flags.contains("RST");
    let mut out = if parts.is_empty() {
        if flags.is_empty() {
            p.labels.first().cloned().unwrap_or_default()
        } else {
            flags
        }
    } else if notable {
        format!("{flags} {}", parts.join(", "))
    } else {
        parts.join(", ")
    };
    if p.retransmission {
        out.push_str(" (retransmission)");
    }
    out
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// The arrow line for one packet, exactly ARROW columns wide.
fn arrow(p: &TracedPacket) -> String {
    let inner = ARROW - 2; // between the two lifelines
    let label = format!(" {} ", cut(&headline(p), inner - 8));
    let dropped = p.fate == Fate::Dropped;
    let body_len = inner - 1; // one column for the head or ✗
    let mut line: Vec<char> = vec!['─'; body_len];
    let label_chars: Vec<char> = label.chars().collect();
    let start = match p.direction {
        Dir::ClientToServer => 1,
        Dir::ServerToClient => body_len.saturating_sub(label_chars.len() + 1),
    };
    for (i, c) in label_chars.iter().enumerate() {
        if let Some(slot) = line.get_mut(start + i) {
            *slot = *c;
        }
    }
    let s: String = line.into_iter().collect();
    match (p.direction, dropped) {
        (Dir::ClientToServer, false) => format!("├{s}▶┤"),
        (Dir::ServerToClient, false) => format!("├◀{s}┤"),
        (Dir::ClientToServer, true) => {
            let keep = (label_chars.len() + 2).max(body_len * 2 / 3);
            let part: String = s.chars().take(keep).collect();
            format!("├{part}✗{}│", " ".repeat(body_len - keep))
        }
        (Dir::ServerToClient, true) => {
            let keep = (label_chars.len() + 2).max(body_len * 2 / 3);
            let part: String = s.chars().skip(body_len - keep).collect();
            format!("│{}✗{part}┤", " ".repeat(body_len - keep))
        }
    }
}

/// When the client sees this packet (its own: sent; the server's: arrived).
fn client_time(p: &TracedPacket, rtt_ms: Option<f64>) -> f64 {
    match p.direction {
        Dir::ClientToServer => p.time_ms,
        Dir::ServerToClient => p.arrival_ms.unwrap_or(
            p.time_ms
                + if p.fate == Fate::Dropped {
                    rtt_ms.unwrap_or(0.0) / 4.0
                } else {
                    0.0
                },
        ),
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_default()
}

/// The whole trace as terminal text; `brief` leaves out the per-layer
/// lines under each arrow (one line per packet).
pub fn render_text(trace: &Trace, color: bool, brief: bool) -> String {
    let paint = Paint { on: color, brief };
    let mut out = String::new();
    for ladder in &trace.ladders {
        render_ladder(&mut out, trace, ladder, &paint);
    }
    out
}

fn render_ladder(out: &mut String, trace: &Trace, ladder: &Ladder, paint: &Paint) {
    let what = trace
        .variant
        .map(|v| v.id().to_string())
        .unwrap_or_default();
    let link = match trace.configured_rtt_ms {
        Some(r) => format!("lab link, {r:.0} ms RTT"),
        None => format!("from {}", trace.source),
    };
    let head = [what.as_str(), link.as_str(), ladder.title.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" · ");
    let _ = writeln!(
        out,
        "{}",
        paint.wrap("1", &cut(&format!("proto trace {head}"), WIDTH))
    );
    for n in &ladder.notes {
        let _ = writeln!(
            out,
            "{}",
            paint.wrap("33", &cut(&format!("note: {n}"), WIDTH))
        );
    }
    let rtt_unit = "RTT";
    let client = ladder.client.clone().unwrap_or_else(|| "client".into());
    let server = ladder.server.clone().unwrap_or_else(|| "server".into());
    let mid = ARROW.saturating_sub(client.len() + server.len());
    let _ = writeln!(
        out,
        "{:>9} {:>6} {client}{}{server} {:>9}",
        "client ms",
        rtt_unit,
        " ".repeat(mid),
        "server ms"
    );
    let mut rows: Vec<&TracedPacket> = ladder.packets.iter().collect();
    rows.sort_by(|a, b| client_time(a, ladder.rtt_ms).total_cmp(&client_time(b, ladder.rtt_ms)));
    let mut phases: Vec<_> = ladder.phases.iter().collect();
    phases.sort_by(|a, b| a.end_ms.total_cmp(&b.end_ms));
    let mut next_phase = 0;
    for p in rows {
        let t = client_time(p, ladder.rtt_ms);
        while let Some(ph) = phases.get(next_phase) {
            if ph.end_ms >= t - 1e-9 {
                break; // shown after the packet that ends it
            }
            phase_line(out, ph, paint);
            next_phase += 1;
        }
        let (left, right) = match p.direction {
            Dir::ClientToServer => (Some(p.time_ms), p.arrival_ms),
            Dir::ServerToClient => (p.arrival_ms, Some(p.time_ms)),
        };
        let left = if trace.configured_rtt_ms.is_none() && p.direction == Dir::ServerToClient {
            Some(p.time_ms) // a capture: one time only, the capture's
        } else {
            left
        };
        let rtts = match (left, ladder.rtt_ms) {
            (Some(l), Some(r)) if r > 0.0 => format!("{:.2}", l / r),
            _ => String::new(),
        };
        let colour = match (p.fate, p.direction) {
            (Fate::Dropped, _) => "31",
            (_, Dir::ClientToServer) => "34",
            (_, Dir::ServerToClient) => "32",
        };
        let _ = writeln!(
            out,
            "{:>9} {:>6} {} {:>9}",
            fmt_ms(left),
            rtts,
            paint.wrap(colour, &arrow(p)),
            fmt_ms(right)
        );
        if paint.brief {
            continue;
        }
        let mut details: Vec<String> = p.labels.iter().filter(|l| !l.is_empty()).cloned().collect();
        details.push(format!("{} B on the wire", p.wire_bytes));
        if let Some(why) = &p.fate_detail {
            details.push(format!("link: {why}"));
        }
        for d in details {
            let text = cut(&d, ARROW - 4);
            let pad = ARROW - 4 - text.chars().count();
            let _ = writeln!(
                out,
                "{:>16} │ {}{} │",
                "",
                paint.wrap("2", &text),
                " ".repeat(pad)
            );
        }
    }
    for ph in phases.iter().skip(next_phase) {
        phase_line(out, ph, paint);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", paint.wrap("1", "phases (client's clock)"));
    for ph in &ladder.phases {
        let _ = writeln!(
            out,
            "  {:<28} {:>9.1} → {:>9.1} ms  {:>6}",
            ph.name,
            ph.start_ms,
            ph.end_ms,
            ph.rtts.map(|r| format!("{r:.2} RTT")).unwrap_or_default()
        );
    }
    match (ladder.handshake_rtts, ladder.rtt_ms) {
        (Some(h), Some(r)) => {
            let _ = writeln!(
                out,
                "{}",
                paint.wrap(
                    "1",
                    &format!(
                        "handshake cost: {h:.2} RTT  (first reply − one RTT, in RTTs of {r:.1} ms: proto compare's formula)"
                    )
                )
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "handshake cost: not measurable (no reply, or no round trip seen)"
            );
        }
    }
    let _ = writeln!(out);
}

fn phase_line(out: &mut String, ph: &crate::measure::trace::Phase, paint: &Paint) {
    let text = match ph.rtts {
        Some(r) => format!(
            " {} done: {:.1} ms = {r:.2} RTT ",
            ph.name,
            ph.end_ms - ph.start_ms
        ),
        None => format!(" {} done: {:.1} ms ", ph.name, ph.end_ms - ph.start_ms),
    };
    let fill = (WIDTH - LEFT).saturating_sub(text.chars().count() + 2);
    let _ = writeln!(
        out,
        "{:>16} {}",
        "",
        paint.wrap("33", &format!("┄┄{text}{}", "┄".repeat(fill)))
    );
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The trace as an SVG figure: both hosts as vertical lifelines, time
/// flowing down, each packet a sloped arrow from its sending time to its
/// arrival time, labelled with its headline; phases as brackets on the
/// right margin with their cost in RTTs. One figure per conversation,
/// stacked.
pub fn render_svg(trace: &Trace) -> String {
    const W: f64 = 960.0;
    const CLIENT_X: f64 = 190.0;
    const SERVER_X: f64 = 720.0;
    const TOP: f64 = 70.0;
    let mut body = String::new();
    let mut y_offset = 0.0;
    for ladder in &trace.ladders {
        let end = ladder
            .packets
            .iter()
            .map(|p| p.arrival_ms.unwrap_or(p.time_ms))
            .fold(0.0f64, f64::max)
            .max(1.0);
        // At least 28 px between packets, at most 1600 px tall.
        let rows = ladder.packets.len().max(1) as f64;
        let height = (rows * 28.0).clamp(300.0, 1600.0);
        let scale = height / end;
        let y = |t: f64| y_offset + TOP + t * scale;
        let title = format!(
            "proto trace {} · {}",
            trace.variant.map(|v| v.id()).unwrap_or("capture"),
            ladder.title
        );
        let _ = writeln!(
            body,
            r#"<text x="20" y="{:.1}" font-size="18" font-weight="bold">{}</text>"#,
            y_offset + 28.0,
            xml_escape(&title)
        );
        for (x, name) in [
            (CLIENT_X, ladder.client.as_deref().unwrap_or("client")),
            (SERVER_X, ladder.server.as_deref().unwrap_or("server")),
        ] {
            let _ = writeln!(
                body,
                r#"<text x="{x}" y="{:.1}" font-size="14" text-anchor="middle" font-weight="bold">{}</text>"#,
                y_offset + TOP - 14.0,
                xml_escape(name)
            );
            let _ = writeln!(
                body,
                r##"<line x1="{x}" y1="{:.1}" x2="{x}" y2="{:.1}" stroke="#333" stroke-width="2"/>"##,
                y_offset + TOP - 6.0,
                y(end) + 10.0
            );
        }
        // Time axis: ms on the left, with round trips when known.
        let step = nice_step(end / 8.0);
        let mut t = 0.0;
        while t <= end + 1e-9 {
            let rtt = ladder
                .rtt_ms
                .filter(|r| *r > 0.0)
                .map(|r| format!(" ({:.1} RTT)", t / r))
                .unwrap_or_default();
            let _ = writeln!(
                body,
                r##"<text x="20" y="{:.1}" font-size="11" fill="#555">{t:.0} ms{rtt}</text><line x1="150" y1="{:.1}" x2="{CLIENT_X}" y2="{:.1}" stroke="#ccc"/>"##,
                y(t) + 4.0,
                y(t),
                y(t)
            );
            t += step;
        }
        for p in &ladder.packets {
            let (x1, x2) = match p.direction {
                Dir::ClientToServer => (CLIENT_X, SERVER_X),
                Dir::ServerToClient => (SERVER_X, CLIENT_X),
            };
            let y1 = y(p.time_ms);
            let (x2, y2, dropped) = match (p.fate, p.arrival_ms) {
                (Fate::Dropped, _) => {
                    let half = ladder.rtt_ms.unwrap_or(0.0) / 4.0;
                    ((x1 + x2) / 2.0, y(p.time_ms + half), true)
                }
                (_, Some(a)) => (x2, y(a), false),
                (_, None) => (x2, y1, false),
            };
            let colour = match (dropped, p.direction) {
                (true, _) => "#c62828",
                (_, Dir::ClientToServer) => "#1565c0",
                (_, Dir::ServerToClient) => "#2e7d32",
            };
            let marker = if dropped {
                ""
            } else {
                r#" marker-end="url(#head)""#
            };
            let _ = writeln!(
                body,
                r#"<line x1="{x1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{colour}" stroke-width="1.6"{marker}/>"#
            );
            if dropped {
                let _ = writeln!(
                    body,
                    r#"<text x="{x2:.1}" y="{:.1}" font-size="18" fill="{colour}" text-anchor="middle">✗</text>"#,
                    y2 + 6.0
                );
            }
            let (mx, my) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0 - 4.0);
            let _ = writeln!(
                body,
                r#"<text x="{mx:.1}" y="{my:.1}" font-size="12" fill="{colour}" text-anchor="middle">{}</text>"#,
                xml_escape(&cut(&headline(p), 70))
            );
        }
        // Phases: brackets on the right.
        for (i, ph) in ladder.phases.iter().enumerate() {
            let x = SERVER_X + 40.0 + (i % 2) as f64 * 8.0;
            let (a, b) = (y(ph.start_ms), y(ph.end_ms));
            let _ = writeln!(
                body,
                r##"<path d="M{x} {a:.1} h6 V{b:.1} h-6" fill="none" stroke="#ef6c00" stroke-width="1.5"/>"##
            );
            let cost = ph.rtts.map(|r| format!(": {r:.2} RTT")).unwrap_or_default();
            let _ = writeln!(
                body,
                r##"<text x="{:.1}" y="{:.1}" font-size="12" fill="#ef6c00">{}{}</text>"##,
                x + 12.0,
                (a + b) / 2.0 + 4.0,
                xml_escape(&ph.name),
                cost
            );
        }
        let summary = match (ladder.handshake_rtts, ladder.rtt_ms) {
            (Some(h), Some(r)) => format!("handshake cost {h:.2} RTT (RTT = {r:.1} ms)"),
            _ => "handshake cost not measurable".into(),
        };
        let _ = writeln!(
            body,
            r#"<text x="20" y="{:.1}" font-size="14" font-weight="bold">{}</text>"#,
            y(end) + 40.0,
            xml_escape(&summary)
        );
        y_offset = y(end) + 70.0;
    }
    format!(
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{:.0}" viewBox="0 0 {W} {:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 z" fill="#444"/></marker></defs>
<rect width="100%" height="100%" fill="white"/>
{body}</svg>
"##,
        y_offset.max(200.0),
        y_offset.max(200.0)
    )
}

/// 1, 2 or 5 times a power of ten, at least `x`.
fn nice_step(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= x)
        .unwrap_or(10.0 * p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::trace::{Phase, TracedPacket};

    fn packet(dir: Dir, t: f64, arrive: Option<f64>, fate: Fate, flags: &str) -> TracedPacket {
        TracedPacket {
            time_ms: t,
            arrival_ms: arrive,
            direction: dir,
            wire_bytes: 60,
            labels: vec![format!("{flags} seq=0 win=64240 len=0 MSS=1460")],
            fate,
            fate_detail: None,
            layers: Vec::new(),
            tcp_flags: Some(flags.into()),
            tls_handshake: Vec::new(),
            quic_packets: Vec::new(),
            quic_frames: Vec::new(),
            sctp_chunks: Vec::new(),
            app_data: false,
            retransmission: false,
        }
    }

    #[test]
    fn every_line_fits_100_columns_and_has_no_colour_when_off() {
        let ladder = Ladder {
            title: "TCP 10.77.0.1:40000 → 10.77.0.2:8081".into(),
            client: Some("10.77.0.1:40000".into()),
            server: Some("10.77.0.2:8081".into()),
            rtt_ms: Some(60.0),
            phases: vec![Phase {
                name: "TCP handshake".into(),
                start_ms: 0.0,
                end_ms: 60.0,
                rtts: Some(1.0),
            }],
            handshake_rtts: Some(1.0),
            packets: vec![
                packet(Dir::ClientToServer, 0.0, None, Fate::Dropped, "SYN"),
                packet(
                    Dir::ClientToServer,
                    1000.0,
                    Some(1030.0),
                    Fate::Delivered,
                    "SYN",
                ),
                packet(
                    Dir::ServerToClient,
                    1030.0,
                    Some(1060.0),
                    Fate::Delivered,
                    "SYN,ACK",
                ),
            ],
            notes: Vec::new(),
        };
        let trace = Trace {
            variant: None,
            source: "lab".into(),
            configured_rtt_ms: Some(60.0),
            ladders: vec![ladder],
            keylog: Default::default(),
            raw: Vec::new(),
        };
        let text = render_text(&trace, false, false);
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "too wide: {line:?}");
        }
        assert!(!text.contains('\x1b'));
        assert!(text.contains('✗'), "{text}");
        assert!(text.contains("▶┤") && text.contains("├◀"), "{text}");
        assert!(text.contains("TCP handshake done"), "{text}");
        assert!(render_text(&trace, true, false).contains("\x1b[31m"));
        let svg = render_svg(&trace);
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("TCP handshake: 1.00 RTT"), "{svg}");
    }
}
