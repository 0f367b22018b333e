//! Pruning modifiers at run time: each holds its plan, the parameters it selected, its
//! current masks and its pruner, decides when it updates, and saves and restores its own
//! state with a checkpoint. The loop asks the [`Modifiers`] for the union of the masks in
//! force at a step and never lists mask files itself.

use std::path::Path;

use burn::module::Module;

use super::engine::EngineError;
use super::grads::GradientSampler;
use super::obs_prune::{ObsConfig, obs_prune};
use crate::obs::ObsStructure;
use crate::recipe::plan::{ConstantPlan, Plan, PruningPlan};
use crate::sparsity::checkpoint::{load_masks, save_masks};
use crate::sparsity::mask::{Mask, MaskError, MaskKind, MaskSet, module_masks_from_nonzero};
use crate::sparsity::params::ParamNaming;
use crate::sparsity::selection::{ParamInfo, ParamSelector};

/// What a pruning step gets besides the model.
pub struct PruneContext<'a, M> {
    /// The optimizer step.
    pub step: u64,
    /// The modifier's masks before this step (`None` before its first step).
    pub current: Option<&'a MaskSet>,
    /// How the model names its parameters.
    pub naming: &'a dyn ParamNaming,
    /// Gradients of training mini-batches, for pruners that need them (OBS).
    pub sampler: &'a mut dyn GradientSampler<M>,
}

/// Computes the masks of a pruning step (and may update the weights, as OBS does).
pub trait Pruner<M> {
    /// The masks of `plan`'s parameters `selected` at sparsity `target`, and the model
    /// (magnitude pruning returns it unchanged; OBS moves the weights it keeps).
    fn prune(
        &mut self,
        model: M,
        plan: &PruningPlan,
        selected: &[ParamInfo],
        target: f64,
        cx: PruneContext<'_, M>,
    ) -> Result<(M, MaskSet), EngineError>;
}

/// Magnitude pruning (GMP): the smallest `|w|` go, globally or per parameter, in the
/// plan's structure (unstructured, N:M, blocks); see [`PruningPlan::masks`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Magnitude;

impl<M: Module> Pruner<M> for Magnitude {
    fn prune(
        &mut self,
        model: M,
        plan: &PruningPlan,
        selected: &[ParamInfo],
        target: f64,
        cx: PruneContext<'_, M>,
    ) -> Result<(M, MaskSet), EngineError> {
        let masks = plan
            .masks(&model, cx.naming, selected, target)
            .map_err(|source| EngineError::Mask {
                modifier: plan.label.clone(),
                source,
            })?;
        Ok((model, masks))
    }
}

/// OBS (oBERT, `!OBSPruningModifier`): a block-diagonal inverse Fisher of fresh mini-batch
/// gradients at every pruning step, global OBS scores and the OBS update of the kept weights
/// ([`obs_prune`]). The mini-batches are a function of the run's seed and the step, so a
/// resumed run prunes the same. The optimizer's moments of the weights OBS moves are kept
/// (they estimate gradient statistics, which the small OBS move barely changes, as in
/// oBERT's reference); those of newly pruned weights are zeroed by the masked optimizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Obs;

impl<M: Module> Pruner<M> for Obs {
    fn prune(
        &mut self,
        model: M,
        plan: &PruningPlan,
        selected: &[ParamInfo],
        target: f64,
        cx: PruneContext<'_, M>,
    ) -> Result<(M, MaskSet), EngineError> {
        let Some(o) = &plan.obs else {
            return Magnitude.prune(model, plan, selected, target, cx);
        };
        let from = cx.current.map_or(0.0, |m| m.sparsity());
        let cfg = ObsConfig {
            num_grads: o.num_grads.at(target) as usize,
            damp: o.damp,
            block_size: o.block_size,
            recomputations: o.recomputations,
            batch_size: o.batch_size,
            structure: match plan.mask {
                MaskKind::Block { .. } => ObsStructure::Block4,
                _ => ObsStructure::Unstructured,
            },
            seed: 0,
        };
        obs_prune(
            model,
            cx.sampler,
            cx.naming,
            selected,
            cx.current,
            from.min(target),
            target,
            &cfg,
            cx.step,
            &plan.label,
        )
    }
}

/// What a modifier keeps across a checkpoint.
pub trait ModifierState {
    /// The modifier's label (`pruning_modifiers[0] !GMPruningModifier`).
    fn label(&self) -> &str;
    /// Saves the state into the checkpoint directory `dir`.
    fn save(&self, dir: &Path) -> Result<(), EngineError>;
    /// Restores the state from the checkpoint directory `dir`.
    fn restore(&mut self, dir: &Path) -> Result<(), EngineError>;
}

/// Saves `masks` (when set) as `dir/file`; restores them from there (absent: none yet).
fn save_opt(masks: &Option<MaskSet>, dir: &Path, file: &str) -> Result<(), EngineError> {
    if let Some(m) = masks {
        save_masks(m, &dir.join(file))?;
    }
    Ok(())
}

fn restore_opt(dir: &Path, file: &str) -> Result<Option<MaskSet>, EngineError> {
    let f = dir.join(file);
    Ok(if f.is_file() {
        Some(load_masks(&f)?)
    } else {
        None
    })
}

/// A pruning modifier (`!GMPruningModifier`, `!GlobalMagnitudePruningModifier`, ...).
pub struct Pruning<M> {
    /// The schedule, targets and structure.
    pub plan: PruningPlan,
    selected: Vec<ParamInfo>,
    pruner: Box<dyn Pruner<M>>,
    state: SavedMasks,
}

/// A `!ConstantPruningModifier`: freezes the zeros present at its start.
pub struct ConstantMask {
    /// When and what.
    pub plan: ConstantPlan,
    selected: Vec<ParamInfo>,
    state: SavedMasks,
}

/// A modifier's masks and the checkpoint file they are saved in.
struct SavedMasks {
    masks: Option<MaskSet>,
    file: String,
}

impl SavedMasks {
    fn save(&self, dir: &Path) -> Result<(), EngineError> {
        save_opt(&self.masks, dir, &self.file)
    }
    fn restore(&mut self, dir: &Path) -> Result<(), EngineError> {
        self.masks = restore_opt(dir, &self.file)?;
        Ok(())
    }
}

impl<M> ModifierState for Pruning<M> {
    fn label(&self) -> &str {
        &self.plan.label
    }
    fn save(&self, dir: &Path) -> Result<(), EngineError> {
        self.state.save(dir)
    }
    fn restore(&mut self, dir: &Path) -> Result<(), EngineError> {
        self.state.restore(dir)
    }
}

impl ModifierState for ConstantMask {
    fn label(&self) -> &str {
        &self.plan.label
    }
    fn save(&self, dir: &Path) -> Result<(), EngineError> {
        self.state.save(dir)
    }
    fn restore(&mut self, dir: &Path) -> Result<(), EngineError> {
        self.state.restore(dir)
    }
}

fn select(
    all: &[ParamInfo],
    label: &str,
    params: &[String],
    ignore: &[String],
) -> Result<Vec<ParamInfo>, EngineError> {
    let selection = ParamSelector::new(params, ignore)?.select(all);
    if selection.matched.is_empty() {
        return Err(EngineError::nothing_selected(label, params, all));
    }
    Ok(selection.matched)
}

/// The union of mask sets: a coordinate is pruned when any set prunes it.
fn union(sets: impl IntoIterator<Item = MaskSet>) -> Result<MaskSet, MaskError> {
    let mut out = MaskSet::new();
    for set in sets {
        for (name, mask) in set.iter() {
            let merged = match out.get(name) {
                Some(prev) if prev.shape() == mask.shape() => Mask::new(
                    mask.shape().to_vec(),
                    prev.keep()
                        .iter()
                        .zip(mask.keep())
                        .map(|(a, b)| *a && *b)
                        .collect(),
                )?,
                _ => mask.clone(),
            };
            out.insert(name.to_string(), merged);
        }
    }
    Ok(out)
}

/// Every masking modifier of a run.
pub struct Modifiers<M> {
    pruning: Vec<Pruning<M>>,
    constant: Vec<ConstantMask>,
}

impl<M: Module> Modifiers<M> {
    /// The modifiers of `plan` over the model's parameters `all` (magnitude pruners).
    pub fn new(plan: &Plan, all: &[ParamInfo]) -> Result<Self, EngineError> {
        let pruning = plan
            .pruning
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(Pruning {
                    plan: p.clone(),
                    selected: select(all, &p.label, &p.params, &p.ignore)?,
                    pruner: if p.obs.is_some() {
                        Box::new(Obs) as Box<dyn Pruner<M>>
                    } else {
                        Box::new(Magnitude)
                    },
                    state: SavedMasks {
                        masks: None,
                        file: format!("masks-prune-{i}.safetensors"),
                    },
                })
            })
            .collect::<Result<_, EngineError>>()?;
        let constant = plan
            .constant
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(ConstantMask {
                    plan: c.clone(),
                    selected: select(all, &c.label, &c.params, &c.ignore)?,
                    state: SavedMasks {
                        masks: None,
                        file: format!("masks-constant-{i}.safetensors"),
                    },
                })
            })
            .collect::<Result<_, EngineError>>()?;
        Ok(Self { pruning, constant })
    }

    /// Every modifier's state, for checkpoints.
    pub fn states(&self) -> impl Iterator<Item = &dyn ModifierState> {
        self.pruning
            .iter()
            .map(|p| p as &dyn ModifierState)
            .chain(self.constant.iter().map(|c| c as &dyn ModifierState))
    }

    /// Every modifier's state, for a resume.
    pub fn states_mut(&mut self) -> impl Iterator<Item = &mut dyn ModifierState> {
        self.pruning
            .iter_mut()
            .map(|p| p as &mut dyn ModifierState)
            .chain(
                self.constant
                    .iter_mut()
                    .map(|c| c as &mut dyn ModifierState),
            )
    }

    /// The sorted, distinct names of the parameters any pruning modifier prunes.
    pub fn pruned_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .pruning
            .iter()
            .flat_map(|p| p.selected.iter().map(|i| i.name.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The largest final sparsity of the pruning modifiers (0 without any).
    pub fn final_target(&self) -> f64 {
        self.pruning
            .iter()
            .map(|p| p.plan.schedule.final_sparsity)
            .fold(0.0, f64::max)
    }

    /// The first step any pruning modifier updates at.
    pub fn first_prune(&self) -> Option<u64> {
        self.pruning
            .iter()
            .map(|p| p.plan.schedule.start_step)
            .min()
    }

    /// The end of the last pruning window.
    pub fn last_prune_end(&self) -> Option<u64> {
        self.pruning.iter().map(|p| p.plan.schedule.end_step).max()
    }

    /// The steps before `end` at which some pruning modifier recomputes its masks.
    pub fn pruning_steps(&self, end: u64) -> Vec<u64> {
        (0..end)
            .filter(|&t| {
                self.pruning
                    .iter()
                    .any(|p| p.plan.schedule.is_update_step(t) && p.plan.schedule.is_enforced(t))
            })
            .collect()
    }

    /// Each pruning modifier's target at `step`, by label.
    pub fn targets_at(&self, step: u64) -> Vec<(String, f64)> {
        self.pruning
            .iter()
            .map(|p| {
                (
                    p.plan.label.clone(),
                    p.plan.schedule.target_at(step).unwrap_or(0.0),
                )
            })
            .collect()
    }

    /// Brings every modifier to step `t`: pruning modifiers that update at `t` recompute
    /// their masks at the schedule's target; constant modifiers capture the zeros at their
    /// start. Returns the model (a pruner may change weights) and whether the masks in
    /// force changed.
    pub fn update(
        &mut self,
        t: u64,
        mut model: M,
        naming: &dyn ParamNaming,
        sampler: &mut dyn GradientSampler<M>,
    ) -> Result<(M, bool), EngineError> {
        let mut changed = false;
        for p in &mut self.pruning {
            if p.plan.schedule.is_update_step(t) && p.plan.schedule.is_enforced(t) {
                let target = p.plan.schedule.interpolated(t);
                let cx = PruneContext {
                    step: t,
                    current: p.state.masks.as_ref(),
                    naming,
                    sampler: &mut *sampler,
                };
                let (m, masks) = p.pruner.prune(model, &p.plan, &p.selected, target, cx)?;
                model = m;
                p.state.masks = Some(masks);
                changed = true;
            } else if p.state.masks.is_some() && !p.plan.schedule.is_enforced(t) {
                changed = true;
            }
        }
        for c in &mut self.constant {
            if t == c.plan.start_step && c.state.masks.is_none() {
                c.state.masks = Some(
                    module_masks_from_nonzero(&model, naming, &c.selected).map_err(|source| {
                        EngineError::Mask {
                            modifier: c.plan.label.clone(),
                            source,
                        }
                    })?,
                );
                changed = true;
            }
            if c.plan.end_step == Some(t) {
                changed = true;
            }
        }
        Ok((model, changed))
    }

    /// The union of the masks in force at step `t`.
    pub fn enforced(&self, t: u64) -> Result<MaskSet, EngineError> {
        let sets = self
            .pruning
            .iter()
            .filter(|p| p.plan.schedule.is_enforced(t))
            .filter_map(|p| p.state.masks.clone())
            .chain(
                self.constant
                    .iter()
                    .filter(|c| t >= c.plan.start_step && c.plan.end_step.is_none_or(|e| t < e))
                    .filter_map(|c| c.state.masks.clone()),
            );
        union(sets).map_err(|source| EngineError::Mask {
            modifier: "mask union".into(),
            source,
        })
    }
}
