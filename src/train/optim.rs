//! The recipe's base optimizer (`optimizer:`), built with explicit PyTorch/HF defaults and
//! wrapped in a [`MaskedOptimizer`].
//!
//! Weight decay is applied by the [`MaskedOptimizer`] per parameter group (none on the
//! parameters `optimizer.no_decay` names — by default every parameter of at most one
//! dimension: biases and norm parameters, Hugging Face's rule), L2 for SGD and Adam and
//! decoupled for AdamW exactly as PyTorch orders them; the burn optimizers themselves are
//! built without decay.

use burn::optim::{AdamConfig, Optimizer, SgdConfig, momentum::MomentumConfig};

use super::adamw::FusedAdamW;

use crate::recipe::sections::{OptimizerKind, OptimizerSection};
use crate::sparsity::enforce::{MaskedOptimizer, WeightDecay, WeightDecayError};

/// Receives the masked optimizer a recipe names (each burn optimizer is its own type).
pub trait OptimizerVisitor {
    /// What the visit produces.
    type Output;
    /// Called once with the optimizer.
    fn visit<O: Optimizer>(self, optim: MaskedOptimizer<O>) -> Self::Output;
}

/// Builds the recipe's optimizer (with its weight decay groups) and hands it to `visitor`.
pub fn with_optimizer<V: OptimizerVisitor>(
    o: &OptimizerSection,
    visitor: V,
) -> Result<V::Output, WeightDecayError> {
    let decay = WeightDecay::from_optimizer_section(o)?;
    Ok(match o.name {
        OptimizerKind::Adamw => visitor.visit(wrap_with(MaskedOptimizer::new(adamw(o)), &decay)),
        OptimizerKind::Adam => visitor.visit(wrap_with(MaskedOptimizer::new(adam(o)), &decay)),
        OptimizerKind::Sgd => visitor.visit(wrap_with(MaskedOptimizer::new(sgd(o)), &decay)),
        // M-FAC's step rule preconditions (weight decay included) and hands the direction
        // to a plain SGD step under the masks.
        OptimizerKind::Mfac => visitor.visit(MaskedOptimizer::new(
            SgdConfig::new().with_weight_decay(None).build(),
        )),
    })
}

fn wrap_with<O: Optimizer>(
    m: MaskedOptimizer<O>,
    decay: &Option<WeightDecay>,
) -> MaskedOptimizer<O> {
    match decay {
        Some(d) => m.with_weight_decay(d.clone()),
        None => m,
    }
}

/// AdamW with the recipe's values and HF's defaults (eps 1e-8), not burn's (eps 1e-5,
/// weight decay 1e-4); the decay itself is the masked optimizer's. Fused into one pass per
/// parameter on the CPU backends ([`FusedAdamW`], burn's numbers and state).
fn adamw(o: &OptimizerSection) -> impl Optimizer {
    FusedAdamW::new(o.betas[0] as f32, o.betas[1] as f32, o.eps as f32)
}

fn adam(o: &OptimizerSection) -> impl Optimizer {
    AdamConfig::new()
        .with_beta_1(o.betas[0] as f32)
        .with_beta_2(o.betas[1] as f32)
        .with_epsilon(o.eps as f32)
        .with_weight_decay(None)
        .build()
}

/// SGD as PyTorch defines it (dampening 0, burn's default is 0.1).
fn sgd(o: &OptimizerSection) -> impl Optimizer {
    let momentum = (o.momentum > 0.0).then(|| {
        MomentumConfig::new()
            .with_momentum(o.momentum)
            .with_dampening(0.0)
            .with_nesterov(o.nesterov)
    });
    SgdConfig::new()
        .with_momentum(momentum)
        .with_weight_decay(None)
        .build()
}
