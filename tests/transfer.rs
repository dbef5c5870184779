//! `proto transfer` (claim C9) and the lab's host buffers (issue 17): the
//! sender's congestion window read from the kernel across an emulated
//! bottleneck. Each test runs one short transfer; they take turns (a lock),
//! because two bulk transfers at once would share the CPUs that carry both.

mod support;

use serde_json::Value;
use std::process::Command;
use std::sync::Mutex;
use support::lab_or_skip;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `proto transfer tcp ARGS --json` and returns the report.
fn transfer(args: &[&str]) -> Value {
    transfer_over("tcp", args)
}

/// Runs `proto transfer PROTOCOL ARGS --json` and returns the report.
fn transfer_over(protocol: &str, args: &[&str]) -> Value {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let certs = std::env::temp_dir().join(format!("proto-transfer-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_proto"))
        .args(["transfer", protocol, "--json"])
        .args(args)
        .env("PROTO_CERT_DIR", &certs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "proto transfer {args:?} failed: {stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A short summary for assertion messages (the full report has every sample).
fn brief(r: &Value) -> String {
    format!(
        "cc {} goodput {} steady {} host drops {} slow start {} losses {} window {} notes {}",
        r["run"]["cc"],
        r["goodput_share"],
        r["steady_share"],
        r["run"]["host_drops"],
        r["slow_start"],
        r["losses"],
        r["window"],
        r["run"]["notes"]
    )
}

/// cwnd grows 1.7–2.3× per RTT over the first four RTTs of slow start.
fn assert_doubles(r: &Value) {
    let growth: Vec<f64> = r["slow_start"]["growth_per_rtt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_f64().unwrap())
        .collect();
    assert!(growth.len() >= 4, "{}", brief(r));
    let over_four = growth[..4].iter().product::<f64>().powf(0.25);
    assert!(
        (1.7..=2.3).contains(&over_four),
        "cwnd growth per RTT over the first four RTTs: ×{over_four:.2} ({growth:?})"
    );
}

/// The first loss event's cwnd after ÷ before must be in `range`.
fn assert_cut(r: &Value, range: std::ops::RangeInclusive<f64>, who: &str) {
    let loss = r["losses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] != "timeout")
        .unwrap_or_else(|| panic!("no loss recovered without a timeout: {}", brief(r)));
    let ratio = loss["ratio"].as_f64().unwrap();
    assert!(
        range.contains(&ratio),
        "{who}'s cwnd after the loss ÷ before: {ratio} ({loss})"
    );
}

// 100 ms RTT, 50 Mbit/s, a one-BDP queue; data packet 400 is dropped, in
// the sixth flight of slow start (10+20+40+80+160 = 310 before it).
const CLASSIC: [&str; 8] = [
    "--rtt",
    "100ms",
    "--rate",
    "50mbit",
    "--queue-bdp",
    "1",
    "--drop-nth",
    "400",
];

#[test]
fn reno_doubles_per_rtt_in_slow_start_and_halves_after_a_loss() {
    if !lab_or_skip("reno_doubles_per_rtt_in_slow_start_and_halves_after_a_loss") {
        return;
    }
    let r = transfer(
        &[
            &CLASSIC[..],
            &["--cc", "reno", "--size", "3M", "--overhead"],
        ]
        .concat(),
    );
    assert_eq!(r["run"]["cc"], "reno");
    assert_doubles(&r);
    assert_cut(&r, 0.4..=0.6, "Reno");
    // C9's 20 bytes: a full segment is IPv4 20 + TCP 20 + the options the
    // SYNs negotiated (timestamps: 12), read from the captured packets.
    let o = &r["overhead"];
    let full = &o["full_packet"];
    assert_eq!(
        (full["ip"].as_u64(), full["transport"].as_u64()),
        (Some(20), Some(20)),
        "{o}"
    );
    assert_eq!(full["options"], o["negotiated_option_bytes"], "{o}");
    assert_eq!(
        full["ip"].as_u64().unwrap()
            + full["transport"].as_u64().unwrap()
            + full["options"].as_u64().unwrap()
            + full["payload"].as_u64().unwrap(),
        1500,
        "a full segment fills the 1500-byte MTU: {o}"
    );
    assert_eq!(
        r["run"]["link"]["client_to_server"]["dropped_forced"], 1,
        "exactly the one forced drop"
    );
}

#[test]
fn tls_is_sampled_from_the_same_tcp_and_its_records_are_counted() {
    if !lab_or_skip("tls_is_sampled_from_the_same_tcp_and_its_records_are_counted") {
        return;
    }
    let svg = std::env::temp_dir().join(format!("proto-transfer-tls-{}.svg", std::process::id()));
    let r = transfer_over(
        "tls",
        &[
            &CLASSIC[..],
            &["--cc", "reno", "--size", "3M", "--overhead", "--svg"],
            &[svg.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(r["run"]["protocol"], "tls");
    assert_eq!(r["run"]["cc"], "reno");
    assert_eq!(r["run"]["bytes"], 3 << 20, "{}", brief(&r));
    // TCP_INFO read under rustls: the same slow start and the same cut.
    assert_doubles(&r);
    assert_cut(&r, 0.4..=0.6, "Reno under TLS");
    // What TLS wrote: 3 MiB in 16 KiB writes is 192 full records of
    // 16 384 bytes, then a close_notify alert. TLS 1.3 protects each with a
    // 16-byte AEAD tag and a 1-byte inner content type (the alert's body:
    // 2 bytes + 1 + 16).
    let tls = &r["run"]["tls"];
    assert_eq!(tls["version"], "TLS 1.3", "{tls}");
    assert_eq!(tls["plaintext_bytes"], 3 << 20, "{tls}");
    assert_eq!(tls["records"], 193, "{tls}");
    assert_eq!(tls["record_header_bytes"], 5 * 193, "{tls}");
    assert_eq!(
        tls["record_body_bytes"].as_u64().unwrap() - (3 << 20),
        192 * 17 + 19,
        "{tls}"
    );
    // The overhead split: IP 20 + TCP 20 + negotiated options per segment,
    // and TLS's 5 + 17 bytes per 16 384 (≈ 1.3 per 1000).
    let o = &r["overhead"];
    assert_eq!(
        o["full_packet"]["options"], o["negotiated_option_bytes"],
        "{o}"
    );
    let layer = |name: &str| {
        o["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no layer {name}: {o}"))["per_1000"]
            .as_f64()
            .unwrap()
    };
    let tls_share = layer("TLS record header") + layer("TLS AEAD tag + inner content type");
    assert!((1.2..1.5).contains(&tls_share), "TLS per 1000: {tls_share}");
    assert!(layer("IPv4 header") > 13.0, "{o}");
    let figure = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&svg);
    assert!(figure.contains("header bytes per 1000 bytes of data, by layer"));
    assert!(figure.contains("TLS record header"));
}

#[test]
fn cubic_cuts_cwnd_to_seven_tenths_after_a_loss() {
    if !lab_or_skip("cubic_cuts_cwnd_to_seven_tenths_after_a_loss") {
        return;
    }
    let r = transfer(&[&CLASSIC[..], &["--cc", "cubic", "--size", "3M"]].concat());
    assert_eq!(r["run"]["cc"], "cubic");
    assert_cut(&r, 0.6..=0.8, "CUBIC");
}

#[test]
fn steady_goodput_is_close_to_the_link_rate() {
    if !lab_or_skip("steady_goodput_is_close_to_the_link_rate") {
        return;
    }
    let r = transfer(&[
        "--rtt",
        "100ms",
        "--rate",
        "50mbit",
        "--queue-bdp",
        "1",
        "--cc",
        "reno",
        // Slow start overshoots to twice the path's capacity, so Reno's
        // first cut leaves it above capacity and a second loss follows
        // within a second, its recovery a dip in the steady state. 8 s
        // make that dip a small part of what is measured (at 5 s one run
        // in a few measured 0.83).
        "--duration",
        "8s",
    ]);
    let steady = r["steady_share"].as_f64().unwrap_or(0.0);
    assert!(steady >= 0.85, "steady goodput {steady}: {}", brief(&r));
    // A one-BDP queue that a loss-based sender fills: up to 100 ms of queueing.
    assert!(
        r["queue_delay_ms"]["p99"].as_f64().unwrap() > 50.0,
        "{}",
        r["queue_delay_ms"]
    );
}

#[test]
fn bbr_keeps_the_queue_low_where_reno_fills_it() {
    let test = "bbr_keeps_the_queue_low_where_reno_fills_it";
    if !lab_or_skip(test) {
        return;
    }
    let offered = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .unwrap_or_default();
    if !offered.split_whitespace().any(|cc| cc == "bbr") {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: this kernel offers no BBR (tcp_available_congestion_control: {}); \
             `modprobe tcp_bbr` adds it (.ci/run tries)",
            offered.trim()
        );
        return;
    }
    // 100 ms × 50 Mbit/s behind a drop-tail queue of eight BDPs: 800 ms of
    // queueing when full (the bloated buffer of a home router). So deep
    // that Reno's halving leaves it far from empty.
    let run = |cc: &str| {
        transfer(&[
            "--rtt",
            "100ms",
            "--rate",
            "50mbit",
            "--queue-bdp",
            "8",
            "--cc",
            cc,
            "--duration",
            "4s",
        ])
    };
    let reno = run("reno");
    let bbr = run("bbr");
    assert_eq!(bbr["run"]["cc"], "bbr");
    let q = |r: &Value, p: &str| r["queue_delay_ms"][p].as_f64().unwrap();
    let overflows = |r: &Value| {
        r["run"]["link"]["client_to_server"]["dropped_queue"]
            .as_u64()
            .unwrap()
    };
    let figures = format!(
        "reno: queueing p50 {:.0} ms p99 {:.0} ms, RTT p50 {} ms, {} overflows; \
         bbr: queueing p50 {:.0} ms p99 {:.0} ms, RTT p50 {} ms, {} overflows",
        q(&reno, "p50"),
        q(&reno, "p99"),
        reno["srtt_ms"]["p50"],
        overflows(&reno),
        q(&bbr, "p50"),
        q(&bbr, "p99"),
        bbr["srtt_ms"]["p50"],
        overflows(&bbr)
    );
    // Reno (measured: queueing p50 ≈ 700 ms, p99 800 ms, RTT p50 ≈ 800 ms)
    // keeps growing until the buffer overflows, and halving never drains it.
    assert!(overflows(&reno) > 0, "{figures}");
    assert!(q(&reno, "p99") > 600.0, "{figures}");
    assert!(
        reno["srtt_ms"]["p50"].as_f64().unwrap() > 300.0,
        "the RTT rises (bufferbloat): {figures}"
    );
    // BBR (measured: queueing p50 10–30 ms, p99 ≈ 200 ms in its startup,
    // RTT p50 110–130 ms) paces at the rate it measured and never fills it.
    assert_eq!(overflows(&bbr), 0, "{figures}");
    assert!(
        q(&bbr, "p50") * 5.0 < q(&reno, "p50"),
        "BBR's median queueing delay should be far below Reno's: {figures}"
    );
    let claim = bbr["claims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["claim"].as_str().unwrap().starts_with("BBR"))
        .unwrap_or_else(|| panic!("no BBR claim: {}", bbr["claims"]));
    assert_eq!(claim["holds"], true, "{claim}");
}

#[test]
fn sized_host_buffers_fill_a_long_fat_link_and_kernel_defaults_do_not() {
    if !lab_or_skip("sized_host_buffers_fill_a_long_fat_link_and_kernel_defaults_do_not") {
        return;
    }
    // 200 ms × 200 Mbit/s: a BDP of 5 MB, above the kernel's default send
    // buffer maximum (tcp_wmem 4 MB). (At 100 ms the 2.5 MB BDP fits in it
    // on current kernels, so the defaults do not limit there.)
    let run = |buffers: &str| {
        transfer(&[
            "--rtt",
            "200ms",
            "--rate",
            "200mbit",
            "--queue-bdp",
            "1",
            "--cc",
            "reno",
            "--duration",
            "5s",
            "--host-buffers",
            buffers,
        ])
    };
    let steady = |r: &Value| r["steady_share"].as_f64().unwrap_or(0.0);
    // A busy machine can only lower goodput, never raise it: when the
    // forwarder falls behind, the client's TUN queue overflows and the host
    // (not the emulated link) loses packets, which proto counts. So the
    // "reaches 90 %" check gets up to three attempts, and is only waived
    // when every attempt saw such host losses (said loudly).
    let host_drops = |r: &Value| r["run"]["host_drops"].as_u64().unwrap_or(0);
    let mut sized = run("sized");
    for _ in 0..2 {
        if steady(&sized) >= 0.9 {
            break;
        }
        eprintln!("sized buffers, another attempt after: {}", brief(&sized));
        sized = run("sized");
    }
    if steady(&sized) < 0.9 && host_drops(&sized) > 0 {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "NOT CHECKED (machine too busy): sized buffers reached only {:.2} of the rate, with {} packets \
             lost by the client host before the link in every attempt",
            steady(&sized),
            host_drops(&sized)
        );
    } else {
        assert!(steady(&sized) >= 0.9, "sized buffers: {}", brief(&sized));
    }
    let kernel = run("kernel");
    // With the defaults the window may never leave slow start (no loss):
    // then the whole transfer is the steady state.
    let kernel_share = kernel["steady_share"]
        .as_f64()
        .or(kernel["goodput_share"].as_f64())
        .unwrap_or(0.0);
    assert!(
        kernel_share < steady(&sized) - 0.1,
        "kernel defaults should carry measurably less: sized {} vs kernel {}",
        steady(&sized),
        brief(&kernel)
    );
    assert_eq!(sized["host_buffers"]["mode"], "sized");
    assert_eq!(kernel["host_buffers"]["mode"], "kernel");
    // BDP 5 MB; room for a window of twice (BDP + queue) in the send buffer.
    assert_eq!(sized["host_buffers"]["bdp_bytes"], 5_000_000);
    assert!(
        sized["host_buffers"]["client"]["tcp_wmem"][2]
            .as_u64()
            .unwrap()
            >= 20_000_000
    );
    assert_eq!(sized["window"]["limited"], false, "{}", brief(&sized));
    assert_eq!(kernel["window"]["limited"], true, "{}", brief(&kernel));
}

#[test]
fn printed_buffer_sizes_are_what_the_namespaces_hold() {
    if !lab_or_skip("printed_buffer_sizes_are_what_the_namespaces_hold") {
        return;
    }
    use proto::lab::{Lab, LabConfig, LinkConfig};
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::start(LabConfig::symmetric(LinkConfig {
        delay: std::time::Duration::from_millis(150),
        rate_bps: Some(1_000_000_000),
        ..Default::default()
    }))
    .unwrap();
    let read = |path: &str| -> Vec<u64> {
        std::fs::read_to_string(format!("/proc/sys/net/{path}"))
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let report = lab.host_buffers().clone();
    for (host, held) in [
        (
            "client",
            lab.in_client(|| {
                (
                    read("ipv4/tcp_rmem"),
                    read("ipv4/tcp_wmem"),
                    read("core/rmem_max"),
                )
            }),
        ),
        (
            "server",
            lab.in_server(|| {
                (
                    read("ipv4/tcp_rmem"),
                    read("ipv4/tcp_wmem"),
                    read("core/rmem_max"),
                )
            }),
        ),
    ] {
        let printed = if host == "client" {
            &report.client
        } else {
            &report.server
        };
        assert_eq!(printed.tcp_rmem.to_vec(), held.0, "{host} tcp_rmem");
        assert_eq!(printed.tcp_wmem.to_vec(), held.1, "{host} tcp_wmem");
        assert_eq!(vec![printed.rmem_max], held.2, "{host} rmem_max");
        // 1 Gbit/s × 300 ms = 37.5 MB; the maxima leave room for twice that.
        assert!(printed.tcp_rmem[2] >= 2 * 37_500_000, "{host}: {printed:?}");
        assert!(printed.tcp_wmem[2] >= 2 * 37_500_000, "{host}: {printed:?}");
    }
    // The root namespace is untouched.
    assert_ne!(read("ipv4/tcp_wmem"), report.client.tcp_wmem.to_vec());
    assert!(
        report
            .describe()
            .contains("sized to the link (BDP 37.5 MB)"),
        "{}",
        report.describe()
    );
}

#[test]
fn a_slow_reader_closes_the_window_to_zero() {
    if !lab_or_skip("a_slow_reader_closes_the_window_to_zero") {
        return;
    }
    // The receiver reads 2 Mbit/s (in bursts every 500 ms) from a 50 Mbit/s link.
    let r = transfer(&["--slow-reader", "2mbit", "--duration", "5s"]);
    let zero = &r["zero_window"];
    assert!(
        zero["zero_ms"].as_f64().is_some_and(|ms| ms > 100.0),
        "the advertised window should sit at zero for a while: {zero} ({})",
        brief(&r)
    );
    let share = r["goodput_share"].as_f64().unwrap();
    assert!(
        share < 0.1,
        "flow control, not the link, sets the pace: {share}"
    );
}

#[test]
fn quic_newreno_doubles_per_rtt_in_slow_start_and_halves_after_a_loss() {
    if !lab_or_skip("quic_newreno_doubles_per_rtt_in_slow_start_and_halves_after_a_loss") {
        return;
    }
    let r = transfer_over(
        "quic",
        &[&CLASSIC[..], &["--cc", "newreno", "--size", "3M"]].concat(),
    );
    assert_eq!(r["run"]["cc"], "newreno");
    assert_eq!(r["run"]["bytes"], 3 << 20, "{}", brief(&r));
    assert_doubles(&r);
    assert_cut(&r, 0.4..=0.6, "quinn's NewReno");
}
