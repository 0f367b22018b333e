//! Schedules as plain types, with no recipe knowledge: how the sparsity target and the
//! learning rate evolve with the optimizer step.
//!
//! Time is counted in optimizer steps. Epoch-based settings are converted with
//! [`steps_for_epochs`] from the *real* number of optimizer steps per epoch (the length
//! of the data loader divided by gradient accumulation), never from a guess: a wrong
//! `steps_per_epoch` silently distorts a schedule (SparseML issue 1117).

pub mod lr;
pub mod sparsity;

/// Errors of schedule construction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// A sparsity outside `[0, 1]`.
    #[error("{what} = {value} is not a sparsity in [0, 1]")]
    Sparsity {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// A learning rate that is negative or not finite.
    #[error("{what} = {value} is not a valid learning rate (finite, >= 0)")]
    LearningRate {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// An epoch value that is negative or not finite.
    #[error("{what} = {value} is not a valid epoch (finite, >= 0)")]
    Epoch {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// `steps_per_epoch` of zero.
    #[error("steps per epoch must be at least 1 (the real number of optimizer steps per epoch)")]
    NoStepsPerEpoch,
    /// A window that ends before it starts.
    #[error("end step {end} is before start step {start}")]
    Window {
        /// Start step.
        start: u64,
        /// End step.
        end: u64,
    },
    /// A zero period where a positive one is needed.
    #[error("{what} must be at least 1 step (got {value} steps)")]
    Period {
        /// Which setting.
        what: &'static str,
        /// Its value in steps.
        value: u64,
    },
    /// An unknown interpolation or LR function name.
    #[error("unknown {what} `{name}` (expected one of: {expected})")]
    UnknownName {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
        /// The accepted names.
        expected: &'static str,
    },
}

/// Converts a time in (possibly fractional) epochs to optimizer steps:
/// `round(epochs · steps_per_epoch)`.
pub fn steps_for_epochs(
    what: &'static str,
    epochs: f64,
    steps_per_epoch: u64,
) -> Result<u64, ScheduleError> {
    if steps_per_epoch == 0 {
        return Err(ScheduleError::NoStepsPerEpoch);
    }
    if !epochs.is_finite() || epochs < 0.0 {
        return Err(ScheduleError::Epoch {
            what,
            value: epochs,
        });
    }
    Ok((epochs * steps_per_epoch as f64).round() as u64)
}
