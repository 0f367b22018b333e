//! Step rules: how one optimizer step turns gradients into new weights.
//!
//! A rule gets a [`GradientSource`] fixed to the step's batch and may call it as often as
//! it needs (CrAM: at θ and at a perturbed θ′), and the [`MaskedOptimizer`] that applies
//! the recipe's base optimizer under the current masks. A rule with state of its own
//! (M-FAC's gradient window) saves and restores it with the checkpoint.

use std::path::Path;

use burn::module::Module;
use burn::optim::Optimizer;

use super::engine::EngineError;
use super::grads::GradientSource;
use crate::sparsity::enforce::MaskedOptimizer;

/// What a step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// The training loss of the step (of the clean pass, for rules with several passes).
    pub loss: f64,
    /// Examples the step trained on.
    pub examples: usize,
}

/// How an optimizer step uses gradients (see the module docs).
pub trait StepRule<M: Module> {
    /// Takes optimizer step `t` (0-based) at learning rate `lr`.
    fn step<O: Optimizer>(
        &mut self,
        t: u64,
        model: M,
        source: &mut dyn GradientSource<M>,
        optim: &mut MaskedOptimizer<O>,
        lr: f64,
    ) -> Result<(M, StepOutcome), EngineError>;

    /// Saves the rule's own state into the checkpoint directory `dir` (default: none).
    fn save_state(&self, _dir: &Path) -> Result<(), EngineError> {
        Ok(())
    }

    /// Restores what [`save_state`](Self::save_state) wrote (default: none).
    fn load_state(&mut self, _dir: &Path) -> Result<(), EngineError> {
        Ok(())
    }
}

/// The plain rule: one gradient call, one masked optimizer step (grads masked, clipped,
/// base step, weights re-masked).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainStep;

impl<M: Module> StepRule<M> for PlainStep {
    fn step<O: Optimizer>(
        &mut self,
        _t: u64,
        model: M,
        source: &mut dyn GradientSource<M>,
        optim: &mut MaskedOptimizer<O>,
        lr: f64,
    ) -> Result<(M, StepOutcome), EngineError> {
        let g = source.grads(&model)?;
        let model = optim.step(lr, model, g.grads);
        Ok((
            model,
            StepOutcome {
                loss: g.loss,
                examples: g.examples,
            },
        ))
    }
}

/// The rule a recipe asks for: plain, or CrAM (`!CrAMModifier`).
pub enum RecipeRule<M> {
    /// One gradient, one step.
    Plain(PlainStep),
    /// CrAM inside its window, plain outside.
    Cram(Box<super::cram::CramStep<M>>),
    /// The M-FAC optimizer (`optimizer.name: mfac`).
    Mfac(Box<super::mfac::MfacStep>),
}

impl<M: Module> StepRule<M> for RecipeRule<M> {
    fn step<O: Optimizer>(
        &mut self,
        t: u64,
        model: M,
        source: &mut dyn GradientSource<M>,
        optim: &mut MaskedOptimizer<O>,
        lr: f64,
    ) -> Result<(M, StepOutcome), EngineError> {
        match self {
            RecipeRule::Plain(r) => r.step(t, model, source, optim, lr),
            RecipeRule::Cram(r) => r.step(t, model, source, optim, lr),
            RecipeRule::Mfac(r) => r.step(t, model, source, optim, lr),
        }
    }

    fn save_state(&self, dir: &Path) -> Result<(), EngineError> {
        match self {
            RecipeRule::Mfac(r) => StepRule::<M>::save_state(r.as_ref(), dir),
            _ => Ok(()),
        }
    }

    fn load_state(&mut self, dir: &Path) -> Result<(), EngineError> {
        match self {
            RecipeRule::Mfac(r) => StepRule::<M>::load_state(r.as_mut(), dir),
            _ => Ok(()),
        }
    }
}
