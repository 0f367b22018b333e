//! Wall time per phase of a training step (`shears bench train`).
//!
//! The training code marks its phases with [`span`]; nothing is recorded unless a
//! [`Recording`] is active on the thread (one thread-local check per span otherwise).
//! Times are exclusive: a span opened inside another pauses the outer one, so the phases
//! add up to the step. On a GPU the device is synchronised at every span boundary, so a
//! phase is charged for the work it queued, not for the work of the phase before it.

use std::cell::RefCell;
use std::time::Instant;

use burn::tensor::Device;
use serde::Serialize;

/// The phases of an optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepPhase {
    /// Building the batch tensors from the data set (tokens, images, augmentation).
    Data,
    /// The forward pass and the loss (the student's, and a teacher's while distilling).
    Forward,
    /// `backward()` and collecting the gradients of the parameters.
    Backward,
    /// Masking the gradients and the global-norm clip.
    Clip,
    /// The base optimizer's update and re-masking the weights.
    Optimizer,
}

impl StepPhase {
    /// Every phase, in step order.
    pub const ALL: [StepPhase; 5] = [
        StepPhase::Data,
        StepPhase::Forward,
        StepPhase::Backward,
        StepPhase::Clip,
        StepPhase::Optimizer,
    ];

    /// The phase's name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            StepPhase::Data => "data",
            StepPhase::Forward => "forward",
            StepPhase::Backward => "backward",
            StepPhase::Clip => "clip",
            StepPhase::Optimizer => "optimizer",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Seconds spent in each phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseTimes {
    seconds: [f64; 5],
}

impl PhaseTimes {
    /// Seconds in `phase`.
    pub fn get(&self, phase: StepPhase) -> f64 {
        self.seconds[phase.index()]
    }

    /// Adds the times of `other`.
    pub fn add(&mut self, other: &PhaseTimes) {
        for (a, b) in self.seconds.iter_mut().zip(other.seconds) {
            *a += b;
        }
    }

    /// Seconds in all phases together.
    pub fn total(&self) -> f64 {
        self.seconds.iter().sum()
    }
}

struct Recorder {
    times: PhaseTimes,
    /// Open spans, innermost last, each with the instant it last (re)started counting.
    open: Vec<(StepPhase, Instant)>,
    /// Synchronised at span boundaries (GPU devices).
    sync: Option<Device>,
}

impl Recorder {
    fn sync(&self) {
        if let Some(d) = &self.sync {
            // A device that cannot synchronise fails the run's next op anyway.
            let _ = d.sync();
        }
    }

    /// Charges the innermost open span for the time since it last started counting.
    fn charge_innermost(&mut self, now: Instant) {
        if let Some((phase, since)) = self.open.last_mut() {
            self.times.seconds[phase.index()] += now.duration_since(*since).as_secs_f64();
            *since = now;
        }
    }
}

thread_local! {
    static RECORDER: RefCell<Option<Recorder>> = const { RefCell::new(None) };
}

/// An active recording on this thread; [`Recording::finish`] returns the times.
#[must_use = "the recording stops when this is dropped"]
pub struct Recording(());

impl Recording {
    /// Starts recording the phases run on this thread. `sync` is synchronised at every span
    /// boundary (pass the device for GPUs; CPU backends compute eagerly).
    pub fn start(sync: Option<Device>) -> Self {
        RECORDER.with(|r| {
            *r.borrow_mut() = Some(Recorder {
                times: PhaseTimes::default(),
                open: Vec::new(),
                sync,
            });
        });
        Recording(())
    }

    /// Stops recording and returns the times.
    pub fn finish(self) -> PhaseTimes {
        RECORDER
            .with(|r| r.borrow_mut().take())
            .map(|r| r.times)
            .unwrap_or_default()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        RECORDER.with(|r| r.borrow_mut().take());
    }
}

/// Marks the code until the returned guard drops as `phase` (see the module docs).
pub fn span(phase: StepPhase) -> Span {
    let active = RECORDER.with(|r| {
        let mut r = r.borrow_mut();
        let Some(rec) = r.as_mut() else {
            return false;
        };
        rec.sync();
        rec.charge_innermost(Instant::now());
        rec.open.push((phase, Instant::now()));
        true
    });
    Span { active }
}

/// The guard of an open phase (see [`span`]).
pub struct Span {
    active: bool,
}

impl Drop for Span {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        RECORDER.with(|r| {
            if let Some(rec) = r.borrow_mut().as_mut() {
                rec.sync();
                let now = Instant::now();
                rec.charge_innermost(now);
                rec.open.pop();
                if let Some((_, since)) = rec.open.last_mut() {
                    *since = now;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn busy(ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }

    #[test]
    fn nested_spans_are_exclusive_and_nothing_is_recorded_when_off() {
        {
            let _s = span(StepPhase::Forward); // no recording: a no-op
            busy(5);
        }
        let rec = Recording::start(None);
        let start = Instant::now();
        {
            let _f = span(StepPhase::Forward);
            busy(20);
            {
                let _d = span(StepPhase::Data);
                busy(30);
            }
            busy(20);
        }
        let wall = start.elapsed().as_secs_f64();
        let t = rec.finish();
        assert!(t.get(StepPhase::Data) >= 0.030, "{t:?}");
        assert!(t.get(StepPhase::Forward) >= 0.040, "{t:?}");
        // Exclusive times add up to the wall time of the outer span, not more.
        assert!(t.total() <= wall + 1e-9, "{t:?} vs {wall}");
        assert!(t.get(StepPhase::Forward) < 0.040 + (wall - 0.070) + 1e-9);
        assert_eq!(t.get(StepPhase::Backward), 0.0);
        // Recording stopped: a later span records nothing.
        let _s = span(StepPhase::Clip);
        assert!(RECORDER.with(|r| r.borrow().is_none()));
    }
}
