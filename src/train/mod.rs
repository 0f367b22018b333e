//! The training engine: the recipe-driven loop ([`engine`]) and its benchmark ([`bench`]), the tasks it trains
//! ([`task`]), gradient sources ([`grads`]), step rules ([`step`], CrAM in [`cram`], M-FAC in [`mfac`]), masking modifiers and
//! pruners ([`modifiers`]), the distillation teacher ([`teacher`]), the SparseProp policy
//! ([`sparse`]), one-shot pruning ([`oneshot`]), exports of runs ([`export`]), the base optimizers ([`optim`], fused AdamW in [`adamw`]), deterministic data order, checkpoints that
//! a failure cannot corrupt, exclusive seeding of the device RNG ([`crate::rng`]), progress lines and bars, and the run report.

pub mod adamw;
pub mod bench;
pub mod checkpoint;
pub mod cram;
pub mod curves;
pub mod engine;
pub mod export;
pub mod grads;
pub mod mfac;
pub mod modifiers;
pub mod obs_prune;
pub mod oneshot;
pub mod optim;
pub mod order;
pub mod progress;
pub mod report;
pub mod sparse;
pub mod step;
pub mod task;
pub mod teacher;

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss became NaN or infinite; the last good checkpoint is kept.
    #[error(
        "the loss is {value} at step {step}: training stopped; the last good checkpoint is kept"
    )]
    NonFiniteLoss {
        /// The optimizer step.
        step: u64,
        /// The loss value.
        value: f64,
    },
    /// Saving or loading a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
}

/// Checks a loss value before the optimizer step uses its gradients.
pub fn check_finite_loss(step: u64, value: f64) -> Result<(), TrainError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(TrainError::NonFiniteLoss { step, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_losses_stop_training() {
        assert!(check_finite_loss(3, 0.25).is_ok());
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = check_finite_loss(7, v).unwrap_err();
            assert!(matches!(e, TrainError::NonFiniteLoss { step: 7, .. }));
            assert!(e.to_string().contains("step 7"));
        }
    }
}
