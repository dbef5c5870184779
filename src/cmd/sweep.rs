//! `proto compare --sweep`: the comparison at several RTTs or loss rates,
//! with a progress bar, Ctrl-C that keeps what was measured, and the
//! table, CSV, JSON or SVG figure.

use crate::cmd::compare::{lab_config, CompareArgs};
use crate::lab::Lab;
use crate::measure::handshake::RunEvent;
use crate::measure::sweep::{self, Axis, SweepEvent, SweepPlan, SweepSpec};
use crate::output::link::describe;
use crate::output::progress::Counter;
use crate::output::sweep::{render_csv, render_explanation, render_svg, render_table};
use anyhow::Context;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub async fn run(args: &CompareArgs, spec: &SweepSpec) -> anyhow::Result<ExitCode> {
    Lab::check_available().context(
        "proto compare --sweep needs the emulated link (each point is a link of its own)",
    )?;
    let base = lab_config(&args.link)?;
    let first = spec.config_at(&base, spec.values[0]);
    let swept = match spec.axis {
        Axis::Rtt => "the RTT swept",
        Axis::Loss => "the loss swept",
    };
    let plan = SweepPlan {
        spec: spec.clone(),
        base,
        variants: args.protocols.clone(),
        runs: args.runs as usize,
        timeout: args.timeout,
        setting: format!(
            "Link at the first point: {} ({swept}).",
            describe(&first.client_to_server)
        ),
    };

    // Ctrl-C ends the sweep between connections and keeps what it measured;
    // a second Ctrl-C ends proto at once.
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    let signals = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
            eprintln!("\nproto compare: interrupted; finishing the current connection (Ctrl-C again to quit now)");
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });

    let connections = spec.values.len() * plan.variants.len() * plan.runs;
    let bar = Arc::new(Counter::with_eta(connections as u64, "connections"));
    let shown = bar.clone();
    let point = std::sync::Mutex::new(String::new());
    let on_event = Arc::new(move |event: SweepEvent| match event {
        SweepEvent::PointStarted { index, of, label } => {
            if let Ok(mut p) = point.lock() {
                *p = format!("{label} ({}/{of})", index + 1);
            }
        }
        SweepEvent::PointDone { index, of, label } => {
            // Without a terminal (no bar), a line per point shows progress
            // in logs, and tells a script what is in hand before Ctrl-C.
            if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!("proto compare: {label} measured ({}/{of})", index + 1);
            }
        }
        SweepEvent::Run(RunEvent::VariantStarted(variant)) => {
            let p = point.lock().map(|p| p.clone()).unwrap_or_default();
            shown.set_message(format!("{p} {}", variant.id()));
        }
        SweepEvent::Run(RunEvent::ConnectionDone) => shown.inc(1),
        SweepEvent::Run(RunEvent::VariantSkipped { connections }) => shown.inc(connections as u64),
    });
    let report = sweep::run(&plan, on_event, cancel.clone()).await;
    signals.abort();
    bar.finish();
    let report = report?;

    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else if args.csv {
        out!("{}", render_csv(&report));
    } else {
        outln!("{}", render_table(&report));
        outln!("{}", render_explanation(&report));
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, render_svg(&report))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("proto compare: figure written to {}", path.display());
    }
    Ok(if report.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}
