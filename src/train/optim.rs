//! The recipe's base optimizer (`optimizer:`), built with explicit PyTorch/HF defaults and
//! wrapped in a [`MaskedOptimizer`].

use burn::optim::{
    AdamConfig, AdamWConfig, Optimizer, SgdConfig, decay::WeightDecayConfig,
    momentum::MomentumConfig,
};

use crate::recipe::sections::{OptimizerKind, OptimizerSection};
use crate::sparsity::enforce::MaskedOptimizer;

/// Receives the masked optimizer a recipe names (each burn optimizer is its own type).
pub trait OptimizerVisitor {
    /// What the visit produces.
    type Output;
    /// Called once with the optimizer.
    fn visit<O: Optimizer>(self, optim: MaskedOptimizer<O>) -> Self::Output;
}

/// Builds the recipe's optimizer and hands it to `visitor`.
pub fn with_optimizer<V: OptimizerVisitor>(o: &OptimizerSection, visitor: V) -> V::Output {
    match o.name {
        OptimizerKind::Adamw => visitor.visit(MaskedOptimizer::new(adamw(o))),
        OptimizerKind::Adam => visitor.visit(MaskedOptimizer::new(adam(o))),
        OptimizerKind::Sgd => visitor.visit(MaskedOptimizer::new(sgd(o))),
    }
}

fn decay(o: &OptimizerSection) -> Option<WeightDecayConfig> {
    (o.weight_decay > 0.0).then(|| WeightDecayConfig::new(o.weight_decay as f32))
}

/// AdamW with the recipe's values and HF's defaults (eps 1e-8), not burn's (eps 1e-5,
/// weight decay 1e-4).
fn adamw(o: &OptimizerSection) -> impl Optimizer {
    AdamWConfig::new()
        .with_beta_1(o.betas[0] as f32)
        .with_beta_2(o.betas[1] as f32)
        .with_epsilon(o.eps as f32)
        .with_weight_decay(o.weight_decay as f32)
        .build()
}

fn adam(o: &OptimizerSection) -> impl Optimizer {
    AdamConfig::new()
        .with_beta_1(o.betas[0] as f32)
        .with_beta_2(o.betas[1] as f32)
        .with_epsilon(o.eps as f32)
        .with_weight_decay(decay(o))
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
        .with_weight_decay(decay(o))
        .build()
}
