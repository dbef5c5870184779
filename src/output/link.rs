//! The emulated link, described in one line for people.

use crate::lab::model::{LinkConfig, LossModel};
use crate::lab::LinkCounters;
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
        LossModel::GilbertElliott {
            p_good_to_bad,
            p_bad_to_good,
            loss_in_good,
            loss_in_bad,
        } => {
            let bad = p_good_to_bad / (p_good_to_bad + p_bad_to_good);
            let mean = bad * loss_in_bad + (1.0 - bad) * loss_in_good;
            parts.push(format!(
                "loss {:.3}% in bursts of {:.1}",
                mean * 100.0,
                1.0 / p_bad_to_good
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
