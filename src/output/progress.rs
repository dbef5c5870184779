//! Progress on stderr while long runs go on — drawn only when stderr is a
//! terminal, so pipes, `--json` and CI logs stay clean. The one place proto
//! uses a progress bar library.

use crate::measure::load::{LoadConfig, LoadProgress, Stop};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// A bar counting finished units of work (`{pos}/{len} {unit}`), with a
/// message naming the current item; hidden when stderr is not a terminal.
pub struct Counter {
    bar: ProgressBar,
}

impl Counter {
    pub fn new(len: u64, unit: &str) -> Counter {
        let bar = ProgressBar::new(len);
        if std::io::stderr().is_terminal() {
            let template = format!("{{spinner}} {{msg:<16}} [{{bar:30}}] {{pos}}/{{len}} {unit}");
            bar.set_style(
                ProgressStyle::with_template(&template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        Counter { bar }
    }

    /// Like [`Counter::new`], with the estimated time left (for sweeps
    /// that run for minutes).
    pub fn with_eta(len: u64, unit: &str) -> Counter {
        let counter = Counter::new(len, unit);
        if std::io::stderr().is_terminal() {
            let template = format!(
                "{{spinner}} {{msg:<28}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{eta}} left"
            );
            counter.bar.set_style(
                ProgressStyle::with_template(&template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
        }
        counter
    }

    pub fn set_message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    pub fn set_position(&self, position: u64) {
        self.bar.set_position(position);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A progress bar on stderr while a run goes on (none when stderr is not a
/// terminal, so pipes and CI logs stay clean).
pub struct ProgressDisplay {
    task: Option<(ProgressBar, tokio::task::JoinHandle<()>)>,
}

impl ProgressDisplay {
    pub fn start(
        progress: &Arc<LoadProgress>,
        config: &LoadConfig,
        label: &str,
    ) -> ProgressDisplay {
        if !std::io::stderr().is_terminal() {
            return ProgressDisplay { task: None };
        }
        let warmup = config.warmup;
        let (len, template) = match config.stop {
            Stop::Count(n) => (n, "{prefix:>5} [{bar:40}] {pos}/{len} requests {msg}"),
            Stop::Duration(d) => (
                (d + warmup).as_millis() as u64,
                "{prefix:>5} [{bar:40}] {msg}",
            ),
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_prefix(label.to_string());
        let stop = config.stop;
        let progress = progress.clone();
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                let done = progress.completed.load(Relaxed);
                let started = progress.started_at.load(Relaxed);
                match stop {
                    Stop::Count(_) => {
                        shown.set_position(done);
                        if started == 0 {
                            shown.set_message("connecting");
                        } else {
                            shown.set_message("");
                        }
                    }
                    Stop::Duration(_) => {
                        let ms = if started == 0 {
                            0
                        } else {
                            crate::units::monotonic_nanos().saturating_sub(started) / 1_000_000
                        };
                        shown.set_position(ms);
                        shown.set_message(format!("{done} requests"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        ProgressDisplay {
            task: Some((bar, task)),
        }
    }

    pub async fn finish(self) {
        if let Some((bar, task)) = self.task {
            task.abort();
            let _ = task.await;
            bar.finish_and_clear();
        }
    }
}
