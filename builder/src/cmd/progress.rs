//! Progress on stderr: the steps of a build (a spinner, only when stderr
//! is a terminal and not `--quiet`; silent in CI logs and pipes) and the
//! byte counts of a flash ([`bytes`]).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A bar counting bytes on stderr (of `len` when known, a spinner
/// otherwise), labelled `msg`; hidden unless `enabled`.
pub fn bytes(enabled: bool, len: Option<u64>, msg: &'static str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let template = if len.is_some() {
        "{msg:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
    } else {
        "{spinner} {msg} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(msg);
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A spinner on a terminal, nothing otherwise.
    pub fn new(quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed}] {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar }
    }

    /// A silent instance (library callers, tests).
    pub fn hidden() -> Progress {
        Progress { bar: None }
    }

    /// Announce the current step.
    pub fn step(&self, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(msg.to_string());
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
