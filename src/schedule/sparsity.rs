//! Gradual pruning schedules (Zhu & Gupta, as SparseML's `GMPruningModifier` runs them).
//!
//! Between `start_step` and `end_step` the target moves from `init_sparsity` to
//! `final_sparsity` along an [`Interpolation`] of the progress
//! `x = (t − start) / (end − start)`. Masks are recomputed at `start`, then every
//! `update_every` steps while `t < end`, and at `end`, where the final sparsity is
//! enforced. Between updates the target is the one of the last update.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ScheduleError, steps_for_epochs};

/// How the target moves from the initial to the final sparsity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Interpolation {
    /// `y = x`.
    Linear,
    /// `y = 1 − (1 − x)³`: fast early, slow late (Zhu & Gupta).
    Cubic,
    /// `y = 1 − (1 − x)^(1/3)`.
    InverseCubic,
}

impl Interpolation {
    /// The fraction `y` of the way from initial to final at progress `x` (clamped to
    /// `[0, 1]`).
    pub fn apply(self, x: f64) -> f64 {
        let x = x.clamp(0.0, 1.0);
        match self {
            Interpolation::Linear => x,
            Interpolation::Cubic => 1.0 - (1.0 - x).powi(3),
            Interpolation::InverseCubic => 1.0 - (1.0 - x).cbrt(),
        }
    }
}

impl FromStr for Interpolation {
    type Err = ScheduleError;

    /// `linear`, `cubic` or `inverse_cubic` (SparseML's `inter_func` values).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "linear" => Ok(Self::Linear),
            "cubic" => Ok(Self::Cubic),
            "inverse_cubic" => Ok(Self::InverseCubic),
            _ => Err(ScheduleError::UnknownName {
                what: "interpolation",
                name: name.to_string(),
                expected: "linear, cubic, inverse_cubic",
            }),
        }
    }
}

/// A gradual (or one-shot) pruning schedule in optimizer steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparsitySchedule {
    /// Target at `start_step`.
    pub init_sparsity: f64,
    /// Target at and after `end_step`.
    pub final_sparsity: f64,
    /// First update step.
    pub start_step: u64,
    /// Last update step, where `final_sparsity` is enforced (`== start_step` for one-shot).
    pub end_step: u64,
    /// Steps between updates inside `[start_step, end_step)`.
    pub update_every: u64,
    /// How the target moves between the two.
    pub interpolation: Interpolation,
    /// Whether masks stay enforced after `end_step` (if not, they are applied once at
    /// `end_step` and then released, SparseML's `leave_enabled: false`).
    pub leave_enabled: bool,
}

fn check_sparsity(what: &'static str, value: f64) -> Result<(), ScheduleError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ScheduleError::Sparsity { what, value })
    }
}

impl SparsitySchedule {
    /// A schedule in steps, validated.
    pub fn new(
        init_sparsity: f64,
        final_sparsity: f64,
        start_step: u64,
        end_step: u64,
        update_every: u64,
        interpolation: Interpolation,
        leave_enabled: bool,
    ) -> Result<Self, ScheduleError> {
        check_sparsity("init_sparsity", init_sparsity)?;
        check_sparsity("final_sparsity", final_sparsity)?;
        if end_step < start_step {
            return Err(ScheduleError::Window {
                start: start_step,
                end: end_step,
            });
        }
        if end_step > start_step && update_every == 0 {
            return Err(ScheduleError::Period {
                what: "update_every",
                value: 0,
            });
        }
        Ok(Self {
            init_sparsity,
            final_sparsity,
            start_step,
            end_step,
            update_every,
            interpolation,
            leave_enabled,
        })
    }

    /// A schedule given in (fractional) epochs, converted with the real number of
    /// optimizer steps per epoch (see [`steps_for_epochs`]).
    #[allow(clippy::too_many_arguments)]
    pub fn from_epochs(
        init_sparsity: f64,
        final_sparsity: f64,
        start_epoch: f64,
        end_epoch: f64,
        update_every_epochs: f64,
        interpolation: Interpolation,
        leave_enabled: bool,
        steps_per_epoch: u64,
    ) -> Result<Self, ScheduleError> {
        let start = steps_for_epochs("start_epoch", start_epoch, steps_per_epoch)?;
        let end = steps_for_epochs("end_epoch", end_epoch, steps_per_epoch)?;
        let every = steps_for_epochs("update_frequency", update_every_epochs, steps_per_epoch)?;
        Self::new(
            init_sparsity,
            final_sparsity,
            start,
            end,
            every,
            interpolation,
            leave_enabled,
        )
    }

    /// One-shot pruning to `sparsity` at `step`, kept afterwards.
    pub fn one_shot(sparsity: f64, step: u64) -> Result<Self, ScheduleError> {
        Self::new(
            sparsity,
            sparsity,
            step,
            step,
            0,
            Interpolation::Linear,
            true,
        )
    }

    /// The interpolated target at step `t` (clamped to the window), whether or not `t` is
    /// an update step.
    pub fn interpolated(&self, t: u64) -> f64 {
        if t >= self.end_step {
            return self.final_sparsity;
        }
        if t <= self.start_step {
            return self.init_sparsity;
        }
        let x = (t - self.start_step) as f64 / (self.end_step - self.start_step) as f64;
        self.init_sparsity
            + (self.final_sparsity - self.init_sparsity) * self.interpolation.apply(x)
    }

    /// The update period, at least 1 (the fields are public, so a hand-built schedule may
    /// hold 0; [`new`](Self::new) refuses it for a non-empty window).
    fn every(&self) -> u64 {
        self.update_every.max(1)
    }

    /// The update steps: `start`, `start + k·update_every` below `end`, and `end`.
    pub fn update_steps(&self) -> Vec<u64> {
        let mut steps = Vec::new();
        if self.end_step > self.start_step {
            let mut t = self.start_step;
            while t < self.end_step {
                steps.push(t);
                t += self.every();
            }
        }
        steps.push(self.end_step);
        steps
    }

    /// Whether masks are recomputed at `step`.
    pub fn is_update_step(&self, step: u64) -> bool {
        if step == self.end_step {
            return true;
        }
        step >= self.start_step
            && step < self.end_step
            && (step - self.start_step).is_multiple_of(self.every())
    }

    /// The last update step at or before `step` (`None` before the start).
    pub fn last_update(&self, step: u64) -> Option<u64> {
        if step < self.start_step {
            return None;
        }
        if step >= self.end_step {
            return Some(self.end_step);
        }
        Some(step - (step - self.start_step) % self.every())
    }

    /// The target the masks should have at `step`: the value of the last update at or
    /// before it (`None` before the start).
    pub fn target_at(&self, step: u64) -> Option<f64> {
        self.last_update(step).map(|t| self.interpolated(t))
    }

    /// Whether masks are enforced during `step`: from the start on, and after the end only
    /// with `leave_enabled`.
    pub fn is_enforced(&self, step: u64) -> bool {
        step >= self.start_step && (self.leave_enabled || step <= self.end_step)
    }
}
