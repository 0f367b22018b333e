//! Learning-rate schedules: piecewise functions of the optimizer step, usable as a plain
//! function ([`LrSchedule::lr_at`]) or as a burn [`LrScheduler`] ([`StepLrScheduler`]).
//!
//! A schedule is a list of [`LrSegment`]s, each a function on a window of steps
//! `[start, end)`, like SparseML's `LearningRateFunctionModifier`s:
//!
//! * `linear`: `init + (final − init) · x`, with `x = (t − start) / (end − start)`;
//! * `cosine`: `init + (final − init) · (1 − cos(π·x)) / 2`;
//! * `cyclic_linear` with cycle `C`: within each cycle the LR falls linearly from `init` to
//!   `final` over `C` steps and jumps back (LR rewinding after each pruning step, as in
//!   the oBERT/GMP★ recipes): `init − (p / (L − 1)) · (init − final)` with `p` the position
//!   in the cycle and `L = C`, except the last, incomplete cycle, which is shortened to the
//!   steps left (`L` = remaining steps);
//! * `constant`.
//!
//! Where several segments cover a step, the one added last wins. After a segment's end
//! the LR holds its final value until another segment starts; before any segment it is
//! the schedule's base LR.

use std::f64::consts::PI;
use std::str::FromStr;

use burn::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use serde::{Deserialize, Serialize};

use super::ScheduleError;

/// The function of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum LrFunction {
    /// A constant rate.
    Constant {
        /// The rate.
        lr: f64,
    },
    /// Linear from `init_lr` at the start to `final_lr` at the end.
    Linear {
        /// LR at the segment start.
        init_lr: f64,
        /// LR reached at the segment end.
        final_lr: f64,
    },
    /// Half-cosine from `init_lr` at the start to `final_lr` at the end.
    Cosine {
        /// LR at the segment start.
        init_lr: f64,
        /// LR reached at the segment end.
        final_lr: f64,
    },
    /// Linear decay from `init_lr` to `final_lr` within every cycle of `cycle_steps`.
    CyclicLinear {
        /// LR at the start of each cycle.
        init_lr: f64,
        /// LR at the last step of each cycle.
        final_lr: f64,
        /// Cycle length in steps (>= 1).
        cycle_steps: u64,
    },
}

/// SparseML `lr_func` names accepted by [`LrFunctionName::from_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrFunctionName {
    /// `linear`.
    Linear,
    /// `cosine`.
    Cosine,
    /// `cyclic_linear`.
    CyclicLinear,
}

impl FromStr for LrFunctionName {
    type Err = ScheduleError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            "cyclic_linear" => Ok(Self::CyclicLinear),
            _ => Err(ScheduleError::UnknownName {
                what: "lr_func",
                name: name.to_string(),
                expected: "linear, cosine, cyclic_linear",
            }),
        }
    }
}

impl LrFunction {
    fn final_lr(&self) -> f64 {
        match *self {
            LrFunction::Constant { lr } => lr,
            LrFunction::Linear { final_lr, .. }
            | LrFunction::Cosine { final_lr, .. }
            | LrFunction::CyclicLinear { final_lr, .. } => final_lr,
        }
    }
}

/// A function on the window of steps `[start_step, end_step)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSegment {
    /// First step of the window.
    pub start_step: u64,
    /// First step after the window.
    pub end_step: u64,
    /// The function.
    pub function: LrFunction,
}

fn check_lr(what: &'static str, value: f64) -> Result<(), ScheduleError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(ScheduleError::LearningRate { what, value })
    }
}

impl LrSegment {
    /// A validated segment (`end > start`, rates finite and non-negative, cycle >= 1).
    pub fn new(
        start_step: u64,
        end_step: u64,
        function: LrFunction,
    ) -> Result<Self, ScheduleError> {
        if end_step <= start_step {
            return Err(ScheduleError::Window {
                start: start_step,
                end: end_step,
            });
        }
        match function {
            LrFunction::Constant { lr } => check_lr("lr", lr)?,
            LrFunction::Linear { init_lr, final_lr } | LrFunction::Cosine { init_lr, final_lr } => {
                check_lr("init_lr", init_lr)?;
                check_lr("final_lr", final_lr)?;
            }
            LrFunction::CyclicLinear {
                init_lr,
                final_lr,
                cycle_steps,
            } => {
                check_lr("init_lr", init_lr)?;
                check_lr("final_lr", final_lr)?;
                if cycle_steps == 0 {
                    return Err(ScheduleError::Period {
                        what: "cycle_steps",
                        value: 0,
                    });
                }
            }
        }
        Ok(Self {
            start_step,
            end_step,
            function,
        })
    }

    /// Whether `step` is inside the window.
    pub fn contains(&self, step: u64) -> bool {
        (self.start_step..self.end_step).contains(&step)
    }

    /// The LR at `step` inside the window (steps outside are clamped to it; after the
    /// window it is the final LR).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step >= self.end_step {
            return self.function.final_lr();
        }
        let step = step.max(self.start_step);
        let len = (self.end_step - self.start_step) as f64;
        let x = (step - self.start_step) as f64 / len;
        match self.function {
            LrFunction::Constant { lr } => lr,
            LrFunction::Linear { init_lr, final_lr } => init_lr + (final_lr - init_lr) * x,
            LrFunction::Cosine { init_lr, final_lr } => {
                init_lr + (final_lr - init_lr) * (1.0 - (PI * x).cos()) / 2.0
            }
            LrFunction::CyclicLinear {
                init_lr,
                final_lr,
                cycle_steps,
            } => {
                // `new` refuses 0; a hand-built segment with 0 acts as 1.
                let cycle_steps = cycle_steps.max(1);
                let offset = step - self.start_step;
                let cycle_start = offset - offset % cycle_steps;
                let cycle_len = cycle_steps.min(self.end_step - self.start_step - cycle_start);
                if cycle_len <= 1 {
                    return init_lr;
                }
                let pos = (offset - cycle_start) as f64;
                init_lr - pos / (cycle_len - 1) as f64 * (init_lr - final_lr)
            }
        }
    }
}

/// A piecewise learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// The LR before any segment starts.
    pub base_lr: f64,
    /// The segments, later ones taking precedence.
    pub segments: Vec<LrSegment>,
}

impl LrSchedule {
    /// A constant schedule at `base_lr`, to which segments are added.
    pub fn new(base_lr: f64) -> Result<Self, ScheduleError> {
        check_lr("base_lr", base_lr)?;
        Ok(Self {
            base_lr,
            segments: Vec::new(),
        })
    }

    /// Adds a segment (it takes precedence over earlier ones where they overlap).
    pub fn with_segment(mut self, segment: LrSegment) -> Self {
        self.segments.push(segment);
        self
    }

    /// Linear warm-up from 0 to `peak_lr` over `warmup_steps`, then linear decay to
    /// `final_lr` at `total_steps` (Hugging Face's `linear` schedule when `final_lr = 0`).
    pub fn linear_with_warmup(
        peak_lr: f64,
        warmup_steps: u64,
        total_steps: u64,
        final_lr: f64,
    ) -> Result<Self, ScheduleError> {
        let mut s = Self::new(peak_lr)?;
        if warmup_steps > 0 {
            s = s.with_segment(LrSegment::new(
                0,
                warmup_steps,
                LrFunction::Linear {
                    init_lr: 0.0,
                    final_lr: peak_lr,
                },
            )?);
        }
        Ok(s.with_segment(LrSegment::new(
            warmup_steps,
            total_steps,
            LrFunction::Linear {
                init_lr: peak_lr,
                final_lr,
            },
        )?))
    }

    /// Half-cosine from `init_lr` at step 0 to `final_lr` at `total_steps`.
    pub fn cosine(init_lr: f64, final_lr: f64, total_steps: u64) -> Result<Self, ScheduleError> {
        Ok(Self::new(init_lr)?.with_segment(LrSegment::new(
            0,
            total_steps,
            LrFunction::Cosine { init_lr, final_lr },
        )?))
    }

    /// `cyclic_linear` over `[start_step, end_step)` with cycles of `cycle_steps` (set it
    /// to the pruning interval for LR rewinding after every pruning step).
    pub fn cyclic_linear(
        init_lr: f64,
        final_lr: f64,
        cycle_steps: u64,
        start_step: u64,
        end_step: u64,
    ) -> Result<Self, ScheduleError> {
        Ok(Self::new(init_lr)?.with_segment(LrSegment::new(
            start_step,
            end_step,
            LrFunction::CyclicLinear {
                init_lr,
                final_lr,
                cycle_steps,
            },
        )?))
    }

    /// The LR for optimizer step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if let Some(seg) = self.segments.iter().rev().find(|s| s.contains(step)) {
            return seg.lr_at(step);
        }
        // Hold the final LR of the segment that ended last before `step`.
        self.segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.end_step <= step)
            .max_by_key(|(i, s)| (s.end_step, *i))
            .map(|(_, s)| s.function.final_lr())
            .unwrap_or(self.base_lr)
    }

    /// A burn [`LrScheduler`] that yields `lr_at(0)`, `lr_at(1)`, ... on successive calls.
    pub fn into_scheduler(self) -> StepLrScheduler {
        StepLrScheduler {
            schedule: self,
            next_step: 0,
        }
    }
}

/// An [`LrSchedule`] as a burn [`LrScheduler`]; its record holds the step counter.
#[derive(Debug, Clone)]
pub struct StepLrScheduler {
    schedule: LrSchedule,
    next_step: u64,
}

/// Record key of the step counter.
const NEXT_STEP_KEY: &str = "next_step";

impl StepLrScheduler {
    /// The step whose LR the next call to `step` returns.
    pub fn next_step(&self) -> u64 {
        self.next_step
    }
}

impl LrScheduler for StepLrScheduler {
    fn step(&mut self) -> f64 {
        let lr = self.schedule.lr_at(self.next_step);
        self.next_step += 1;
        lr
    }

    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar(NEXT_STEP_KEY, self.next_step)
    }

    fn load_record(&mut self, record: LrSchedulerRecord) {
        if let Some(step) = record.scalar::<u64>(NEXT_STEP_KEY) {
            self.next_step = step;
        }
    }
}
