//! `proto compare --sweep` end to end across the lab: an RTT sweep whose
//! fitted slopes are theory's round-trip counts, a loss sweep in which a
//! lost SYN costs TCP its initial RTO, CSV, the figure, and Ctrl-C that
//! keeps what was measured.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use support::PROTO;

static LAB_LOCK: Mutex<()> = Mutex::new(());

/// Some(guard) when the lab can run here: the sweeps of this file run one
/// at a time, so that one's links do not slow the other's forwarders.
fn lab_or_skip(test: &str) -> Option<MutexGuard<'static, ()>> {
    if !support::lab_or_skip(test) {
        return None;
    }
    Some(LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner()))
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("proto-sweep-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sweep_json(args: &[&str], certs: &std::path::Path) -> serde_json::Value {
    support::proto_json("compare", args, certs)
}

/// Fits that miss theory, as "id: measured vs theory".
fn misses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["fits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            let (h, t) = (
                f["handshake_rtts"].as_f64().unwrap(),
                f["theory_rtts"].as_f64().unwrap(),
            );
            (h - t).abs() > 0.15
        })
        .map(|f| {
            (
                f["protocol"].as_str().unwrap().to_string(),
                format!("{:.3} vs {}", f["handshake_rtts"], f["theory_rtts"]),
            )
        })
        .collect()
}

/// 20, 60 and 120 ms: every variant's slope − 1 is its theory count within
/// ±0.15. A variant that misses is measured once more on its own (a busy
/// machine can delay a whole link's connections); a real error misses twice.
#[test]
fn rtt_sweep_fits_every_variant_to_its_theory_count() {
    let Some(_guard) = lab_or_skip("rtt_sweep_fits_every_variant_to_its_theory_count") else {
        return;
    };
    let dir = temp_dir("rtt");
    let svg = dir.join("rtt.svg");
    let svg_arg = svg.to_str().unwrap();
    let report = sweep_json(
        &[
            "--sweep",
            "rtt=20ms,60ms,120ms",
            "--runs",
            "2",
            "--svg",
            svg_arg,
        ],
        &dir,
    );
    assert_eq!(report["axis"], "rtt");
    assert_eq!(report["points"].as_array().unwrap().len(), 3);
    let fits = report["fits"].as_array().unwrap();
    let variants = report["points"][0]["variants"].as_array().unwrap().len();
    assert!(variants >= 11, "every variant by default");
    assert_eq!(fits.len(), variants, "a line for every variant");
    for f in fits {
        // A straight line (a busy machine adds scatter, not curvature).
        assert!(f["r_squared"].as_f64().unwrap() > 0.95, "{f}");
        assert_eq!(f["connections"], 6, "{f}");
    }
    let first = misses(&report);
    if !first.is_empty() {
        eprintln!("measuring again: {first:?}");
        let ids: Vec<&str> = first.iter().map(|(id, _)| id.as_str()).collect();
        let again = sweep_json(
            &[
                "--sweep",
                "rtt=20ms,60ms,120ms",
                "--runs",
                "2",
                "--protocols",
                &ids.join(","),
            ],
            &dir,
        );
        let second = misses(&again);
        assert!(
            second.is_empty(),
            "twice off theory: {first:?} then {second:?}"
        );
    }
    let figure = std::fs::read_to_string(&svg).unwrap();
    assert!(figure.starts_with("<svg"), "{figure}");
    assert!(
        figure.contains("stroke-dasharray"),
        "theory lines are dashed"
    );
    assert!(figure.contains("tls1.2 "), "a legend entry per variant");
    assert!(figure.trim_end().ends_with("</svg>"));
}

/// At 20 % loss with a fixed seed some TCP connections lose their SYN or
/// SYN-ACK: `connect()` then takes the initial RTO (1 s) longer, and so does
/// the first reply. The report names the timer.
#[test]
fn loss_sweep_shows_tcps_initial_rto_at_a_lost_syn() {
    let Some(_guard) = lab_or_skip("loss_sweep_shows_tcps_initial_rto_at_a_lost_syn") else {
        return;
    };
    let dir = temp_dir("loss");
    let report = sweep_json(
        &[
            "--sweep",
            "loss=0%,20%",
            "--rtt",
            "20ms",
            "--protocols",
            "tcp",
            "--runs",
            "12",
            "--seed",
            "7",
        ],
        &dir,
    );
    let points = report["points"].as_array().unwrap();
    let samples = |p: usize| {
        points[p]["variants"][0]["samples"]
            .as_array()
            .unwrap()
            .clone()
    };
    let mut quiet: Vec<f64> = samples(0)
        .iter()
        .map(|s| s["first_reply_ms"].as_f64().unwrap())
        .collect();
    quiet.sort_by(f64::total_cmp);
    let baseline = quiet[quiet.len() / 2];
    assert!((39.0..50.0).contains(&baseline), "no loss: {baseline} ms");
    // One lost SYN or SYN-ACK: connect() took the RTT plus one initial RTO;
    // and nothing lost after it: the echo took one round trip. (A segment
    // lost later costs another timer on top, which is not this jump.)
    let one_rto: Vec<f64> = samples(1)
        .iter()
        .filter(|s| {
            let connect = s["tcp_connect_ms"].as_f64().unwrap();
            let echo = s["first_reply_ms"].as_f64().unwrap() - connect;
            (800.0..1600.0).contains(&(connect - 20.0)) && echo < 60.0
        })
        .map(|s| s["first_reply_ms"].as_f64().unwrap() - baseline)
        .collect();
    assert!(!one_rto.is_empty(), "seed 7 loses a SYN: {:?}", samples(1));
    for jump in &one_rto {
        assert!(
            (950.0..1350.0).contains(jump),
            "a lost SYN cost {jump} ms, not TCP's initial RTO of 1 s"
        );
    }
    let row = &report["loss_rows"][1];
    assert!(
        row["stalled"].as_u64().unwrap() >= one_rto.len() as u64,
        "{row}"
    );
    assert!(row["p90_jump_ms"].as_f64().unwrap() >= 900.0, "{row}");
    assert_eq!(report["timers"][0]["timer"]["name"], "TCP's initial RTO");
    assert_eq!(report["timers"][0]["timer"]["initial"], 1000.0);
}

#[test]
fn sweep_csv_has_a_row_per_connection() {
    let Some(_guard) = lab_or_skip("sweep_csv_has_a_row_per_connection") else {
        return;
    };
    let dir = temp_dir("csv");
    let out = Command::new(PROTO)
        .args([
            "compare",
            "--sweep",
            "rtt=2ms,4ms",
            "--protocols",
            "tcp,udp",
            "--runs",
            "2",
            "--csv",
        ])
        .env("PROTO_CERT_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("rtt_ms,loss_percent,protocol,theory_rtts,run,first_reply_ms"));
    assert_eq!(lines.len(), 1 + 2 * 2 * 2, "{csv}");
    assert!(lines[1].starts_with("2,0,tcp,1,1,"), "{csv}");
}

/// Ctrl-C during the second point: proto stops, prints the first point
/// (and what it had of the second) and exits with 130.
#[test]
fn an_interrupted_sweep_prints_what_it_measured() {
    let Some(_guard) = lab_or_skip("an_interrupted_sweep_prints_what_it_measured") else {
        return;
    };
    let dir = temp_dir("interrupt");
    let mut child = Command::new(PROTO)
        .args([
            "compare",
            "--sweep",
            "rtt=20ms,3s",
            "--protocols",
            "tcp",
            "--runs",
            "2",
            "--json",
        ])
        .env("PROTO_CERT_DIR", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("proto ended before the first point: {seen}");
        }
        seen.push_str(&line);
        if line.contains("rtt 20 ms measured (1/2)") {
            break;
        }
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert_eq!(out.status.code(), Some(130), "{seen}{rest}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {seen}{rest}"));
    assert_eq!(report["interrupted"], true);
    let points = report["points"].as_array().unwrap();
    assert!(!points.is_empty() && points.len() <= 2, "{report}");
    assert_eq!(points[0]["complete"], true);
    assert_eq!(
        points[0]["variants"][0]["samples"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    if let Some(second) = points.get(1) {
        assert_eq!(second["complete"], false);
    }
}
