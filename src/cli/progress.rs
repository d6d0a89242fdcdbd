//! Showing a run's progress: a spinner per stage on a terminal, plain lines otherwise.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::Progress;
use crate::run::{Outcome, Stage};

/// How often the terminal spinner redraws.
const TICK: Duration = Duration::from_millis(120);

/// Whether output to a stream may carry escape sequences (colour, bold, the spinner's
/// redrawing): only to a terminal, and never while `NO_COLOR` is set to anything but
/// the empty string, as <https://no-color.org> asks. clap's help and errors follow
/// the same variable by themselves.
pub fn escapes_allowed(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// Progress for stderr: a spinner on a terminal that takes escape sequences, prefixed
/// lines otherwise (a log, CI, or `NO_COLOR`).
pub fn for_stderr() -> Box<dyn Progress> {
    use std::io::IsTerminal;
    if escapes_allowed(std::io::stderr().is_terminal()) {
        Box::new(Spinner {
            bar: None,
            stage: None,
        })
    } else {
        Box::new(Lines { stage: None })
    }
}

/// Plain lines, one per output line, for logs and CI.
struct Lines {
    stage: Option<Stage>,
}

impl Progress for Lines {
    fn stage_started(&mut self, stage: Stage) {
        self.stage = Some(stage);
        eprintln!("[{stage}] started");
    }

    fn line(&mut self, line: &str) {
        let line = super::printable::printable(line);
        eprintln!("[{}] {line}", self.stage.map_or("", Stage::as_str));
    }

    fn stage_finished(&mut self, stage: Stage, outcome: Outcome, elapsed: Duration) {
        let word = match outcome {
            Outcome::Succeeded => "done",
            Outcome::Failed => "failed",
        };
        eprintln!(
            "[{stage}] {word} in {}",
            humantime::format_duration(round(elapsed))
        );
    }
}

/// One spinner line per stage, showing the latest output line while it runs.
struct Spinner {
    bar: Option<ProgressBar>,
    stage: Option<Stage>,
}

/// Stages whose every line is worth keeping on screen (one per instance step).
const KEPT_STAGES: [Stage; 1] = [Stage::Deploy];

impl Progress for Spinner {
    fn stage_started(&mut self, stage: Stage) {
        let bar = ProgressBar::new_spinner();
        // The template is a constant known to parse; fall back to the default style anyway.
        let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_prefix(stage.to_string());
        self.stage = Some(stage);
        bar.enable_steady_tick(TICK);
        self.bar = Some(bar);
    }

    fn line(&mut self, line: &str) {
        if let Some(bar) = &self.bar {
            if self.stage.is_some_and(|stage| KEPT_STAGES.contains(&stage)) {
                bar.println(format!("  {line}"));
            } else {
                bar.set_message(line.to_string());
            }
        }
    }

    fn stage_finished(&mut self, stage: Stage, outcome: Outcome, elapsed: Duration) {
        if let Some(bar) = self.bar.take() {
            let mark = match outcome {
                Outcome::Succeeded => "✓",
                Outcome::Failed => "✗",
            };
            bar.finish_and_clear();
            eprintln!(
                "{mark} {stage} ({})",
                humantime::format_duration(round(elapsed))
            );
        }
    }
}

/// Milliseconds are enough for people.
fn round(elapsed: Duration) -> Duration {
    Duration::from_millis(elapsed.as_millis() as u64)
}
