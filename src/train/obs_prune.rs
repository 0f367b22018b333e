//! One OBS pruning step on a model (oBERT's procedure): collect `m` mini-batch gradients of
//! the task loss with the model in inference behaviour (no dropout; BatchNorm on its running
//! statistics), each restricted to the weights still in place, fold them into one
//! block-diagonal inverse Fisher per pruned tensor, score and prune globally with the OBS
//! update ([`crate::obs`]), and repeat for each recomputation with fresh gradients at the
//! updated weights.

use burn::module::{Module, ParamId};
use burn::optim::GradientsParams;

use super::engine::EngineError;
use super::grads::GradientSampler;
use super::order::mix;
use crate::fisher::BlockInverse;
use crate::obs::{ObsStructure, ObsTensor, prune_step, recomputation_targets};
use crate::sparsity::mask::{MaskError, MaskSet, ParamValues, read_values, write_values};
use crate::sparsity::params::{ParamNaming, module_params};
use crate::sparsity::selection::ParamInfo;

/// The settings of OBS pruning (SparseML's `!OBSPruningModifier` fields).
#[derive(Debug, Clone, PartialEq)]
pub struct ObsConfig {
    /// Gradients per Fisher (`num_grads`, oBERT: 1024).
    pub num_grads: usize,
    /// Dampening λ (`damp`, oBERT: 1e-7; M-FAC: 1e-5).
    pub damp: f64,
    /// Block size of the block-diagonal Fisher (`fisher_block_size`, oBERT: 50).
    pub block_size: usize,
    /// Sub-steps of one pruning step, each with fresh gradients (`num_recomputations`).
    pub recomputations: usize,
    /// Examples per gradient (`grad_sampler_kwargs.batch_size`, oBERT: 16 for GLUE).
    pub batch_size: usize,
    /// Single weights or groups of 4.
    pub structure: ObsStructure,
    /// Seed of the mini-batch sample.
    pub seed: u64,
}

/// The flattened gradient of parameter `id` (rank 1 to 4), if it has one.
fn flat_grad(grads: &GradientsParams, id: ParamId, rank: usize) -> Option<Vec<f32>> {
    fn get<const D: usize>(g: &GradientsParams, id: ParamId) -> Option<Vec<f32>> {
        g.get::<D>(id).and_then(|t| t.try_into_vec_as::<f32>().ok())
    }
    match rank {
        1 => get::<1>(grads, id),
        2 => get::<2>(grads, id),
        3 => get::<3>(grads, id),
        4 => get::<4>(grads, id),
        _ => None,
    }
}

fn mask_err(label: &str) -> impl Fn(MaskError) -> EngineError + '_ {
    move |source| EngineError::Mask {
        modifier: label.to_string(),
        source,
    }
}

fn fisher_err(label: &str) -> impl Fn(crate::fisher::FisherError) -> EngineError + '_ {
    move |source| EngineError::Fisher {
        modifier: label.to_string(),
        source,
    }
}

/// Prunes the `selected` parameters of `model` (on the autodiff device) from their current
/// masks `current` (sparsity `from`) to sparsity `target` with OBS, gradients from
/// `sampler` (stream `stream` and the recomputation index pick the mini-batches); returns the
/// updated model and the new masks. `label` names the caller in errors.
#[allow(clippy::too_many_arguments)]
pub fn obs_prune<M: Module>(
    mut model: M,
    sampler: &mut dyn GradientSampler<M>,
    naming: &dyn ParamNaming,
    selected: &[ParamInfo],
    current: Option<&MaskSet>,
    from: f64,
    target: f64,
    cfg: &ObsConfig,
    stream: u64,
    label: &str,
) -> Result<(M, MaskSet), EngineError> {
    let ids: Vec<(ParamId, usize)> = {
        let params = module_params(&model, naming);
        selected
            .iter()
            .map(|s| {
                params
                    .iter()
                    .find(|p| p.info.name == s.name)
                    .map(|p| (p.id, p.info.shape.len()))
                    .ok_or_else(|| EngineError::Mask {
                        modifier: label.to_string(),
                        source: MaskError::MissingParam {
                            param: s.name.clone(),
                        },
                    })
            })
            .collect::<Result<_, _>>()?
    };
    let mut masks = current.cloned().unwrap_or_default();
    for (j, sub_target) in recomputation_targets(from, target, cfg.recomputations)
        .into_iter()
        .enumerate()
    {
        // The Fisher at the current weights.
        let mut invs: Vec<BlockInverse<f32>> = selected
            .iter()
            .map(|s| BlockInverse::new(s.numel(), cfg.block_size, cfg.num_grads, cfg.damp))
            .collect::<Result<_, _>>()
            .map_err(fisher_err(label))?;
        let sub_stream = mix(mix(cfg.seed, stream), j as u64);
        for i in 0..cfg.num_grads {
            let g = sampler.sample(&model, sub_stream, i, cfg.batch_size)?.grads;
            for ((s, &(id, rank)), inv) in selected.iter().zip(&ids).zip(invs.iter_mut()) {
                let mut flat = flat_grad(&g, id, rank).unwrap_or_else(|| vec![0.0; s.numel()]);
                if let Some(m) = masks.get(&s.name) {
                    for (x, k) in flat.iter_mut().zip(m.keep()) {
                        if !k {
                            *x = 0.0;
                        }
                    }
                }
                inv.add_gradient(&flat).map_err(fisher_err(label))?;
            }
        }
        let values = read_values(&model, naming, selected).map_err(mask_err(label))?;
        let mut tensors: Vec<ObsTensor> = values
            .into_iter()
            .map(|p| ObsTensor {
                mask: masks.get(&p.info.name).cloned(),
                info: p.info,
                values: p.values,
            })
            .collect();
        masks =
            prune_step(&mut tensors, &invs, sub_target, cfg.structure).map_err(mask_err(label))?;
        let updated: Vec<ParamValues> = tensors
            .into_iter()
            .map(|t| ParamValues {
                info: t.info,
                values: t.values,
            })
            .collect();
        model = write_values(model, naming, &updated).map_err(mask_err(label))?;
    }
    Ok((model, masks))
}
