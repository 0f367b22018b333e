//! Progress of a training phase: a live bar on a terminal, plain lines otherwise (and
//! always in the run's log), each with loss, learning rate, current sparsity, throughput
//! and ETA.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// One step's numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Optimizer steps done in this phase.
    pub step: u64,
    /// Loss of the last step.
    pub loss: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Sparsity of the pruned parameters now.
    pub sparsity: f64,
    /// Examples per second since the phase started.
    pub examples_per_sec: f64,
}

/// Seconds left at the current rate, or `None` before any progress.
pub fn eta_seconds(done: u64, total: u64, elapsed_secs: f64) -> Option<f64> {
    (done > 0 && total >= done).then(|| elapsed_secs / done as f64 * (total - done) as f64)
}

/// `1h02m03s`, `4m05s`, `6s`.
pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// The plain progress line of a phase that began at step `first` (the ETA extrapolates the
/// phase's own pace: `elapsed_secs` is the time since `first`).
pub fn plain_line(
    phase: &str,
    first: u64,
    total: u64,
    stats: &StepStats,
    elapsed_secs: f64,
) -> String {
    let eta = eta_seconds(
        stats.step.saturating_sub(first),
        total.saturating_sub(first),
        elapsed_secs,
    )
    .map_or_else(|| "?".into(), format_duration);
    format!(
        "{phase} step {}/{total} loss {:.4} lr {:.3e} sparsity {:.1}% {:.1} ex/s eta {eta}",
        stats.step,
        stats.loss,
        stats.lr,
        stats.sparsity * 100.0,
        stats.examples_per_sec
    )
}

/// Reports the progress of one phase.
pub struct Progress {
    phase: String,
    first: u64,
    total: u64,
    every: u64,
    start: Instant,
    bar: Option<ProgressBar>,
    log: Option<Box<dyn Write + Send>>,
}

impl Progress {
    /// A phase from step `first` to `total`; plain lines every `every` steps when stderr is
    /// not a terminal; every line also goes to `log`.
    pub fn new(
        phase: &str,
        first: u64,
        total: u64,
        every: u64,
        log: Option<Box<dyn Write + Send>>,
    ) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_position(first);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                    .expect("the template is valid")
                    .progress_chars("=> "),
            );
            bar.set_prefix(phase.to_string());
            bar
        });
        Progress {
            phase: phase.to_string(),
            first,
            total,
            every: every.max(1),
            start: Instant::now(),
            bar,
            log,
        }
    }

    /// Reports a finished step.
    pub fn step(&mut self, stats: StepStats) {
        let line = plain_line(
            &self.phase,
            self.first,
            self.total,
            &stats,
            self.start.elapsed().as_secs_f64(),
        );
        if let Some(bar) = &self.bar {
            bar.set_position(stats.step);
            bar.set_message(format!(
                "loss {:.4} lr {:.2e} sparsity {:.1}% {:.1} ex/s",
                stats.loss,
                stats.lr,
                stats.sparsity * 100.0,
                stats.examples_per_sec
            ));
        } else if stats.step.is_multiple_of(self.every) || stats.step == self.total {
            eprintln!("{line}");
        }
        if let Some(log) = &mut self.log {
            // The log is best effort: a full disk must not stop training.
            let _ = writeln!(log, "{line}");
        }
    }

    /// Ends the phase.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_every_number() {
        let s = StepStats {
            step: 50,
            loss: 0.123456,
            lr: 8e-5,
            sparsity: 0.7,
            examples_per_sec: 41.25,
        };
        assert_eq!(
            plain_line("prune", 0, 200, &s, 100.0),
            "prune step 50/200 loss 0.1235 lr 8.000e-5 sparsity 70.0% 41.2 ex/s eta 5m00s"
        );
        // A phase that began at step 40: 10 steps in 100 s, 150 to go.
        assert!(plain_line("prune", 40, 200, &s, 100.0).ends_with("eta 25m00s"));
        assert_eq!(eta_seconds(0, 10, 5.0), None);
        assert_eq!(format_duration(3723.0), "1h02m03s");
        assert_eq!(format_duration(6.4), "6s");
    }
}
