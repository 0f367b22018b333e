//! A recipe turned into step-based schedules, given the REAL number of optimizer steps
//! per epoch (the data loader's length divided by gradient accumulation; never a guess,
//! see SparseML issue 1117). This is what the training loop and `recipe check` run on.

use crate::schedule::ScheduleError;
use crate::schedule::lr::{LrFunction, LrSchedule, LrSegment};
use crate::schedule::sparsity::{Interpolation, SparsitySchedule};
use crate::sparsity::mask::{MaskKind, Scope};

use super::Recipe;
use super::modifiers::{
    FinalSparsity, InitSparsity, InterFunc, LrFunc, MaskType, Modifier, NumGrads, Params,
};
use super::validate::{Time, window};

/// One gradual (or one-shot) pruning modifier, in steps.
#[derive(Debug, Clone, PartialEq)]
pub struct PruningPlan {
    /// `pruning_modifiers[0] !GMPruningModifier`.
    pub label: String,
    /// Names, `re:` patterns or `__ALL_PRUNABLE__`.
    pub params: Vec<String>,
    /// Excluded names or patterns.
    pub ignore: Vec<String>,
    /// Per-group targets (`final_sparsity: {0.9: [...]}`): `(target, names)`; empty when
    /// one target applies to all `params`.
    pub groups: Vec<(f64, Vec<String>)>,
    /// Start from each parameter's existing sparsity (`__FROM_PARAM__`).
    pub init_from_param: bool,
    /// The schedule of the (largest) target.
    pub schedule: SparsitySchedule,
    /// Mask structure.
    pub mask: MaskKind,
    /// One threshold across all parameters, or per parameter.
    pub scope: Scope,
    /// OBS instead of magnitude (`!OBSPruningModifier`).
    pub obs: Option<ObsPlan>,
}

impl PruningPlan {
    /// The magnitude masks of `selected` (parameters of `model`, named by `naming`) at the
    /// schedule's target `target`: one global threshold or one per parameter (the plan's
    /// scope), in the plan's structure. With per-group targets, each group's target scales
    /// with `target` along the schedule (`init + (goal − init)·progress`).
    pub fn masks<M: burn::module::Module>(
        &self,
        model: &M,
        naming: &dyn crate::sparsity::params::ParamNaming,
        selected: &[crate::sparsity::selection::ParamInfo],
        target: f64,
    ) -> Result<crate::sparsity::mask::MaskSet, crate::sparsity::mask::MaskError> {
        use crate::sparsity::mask::{MaskSet, compute_module_masks};
        let (kind, scope) = (self.mask, self.scope);
        if self.groups.is_empty() {
            return compute_module_masks(model, naming, selected, target, kind, scope);
        }
        let (init, fin) = (self.schedule.init_sparsity, self.schedule.final_sparsity);
        let frac = if fin > init {
            (target - init) / (fin - init)
        } else {
            1.0
        };
        let mut out = MaskSet::new();
        for (goal, names) in &self.groups {
            let group = crate::sparsity::selection::ParamSelector::new(names, &self.ignore)?
                .select(selected)
                .matched;
            if group.is_empty() {
                continue;
            }
            let t = init + (goal - init) * frac;
            out.extend(compute_module_masks(model, naming, &group, t, kind, scope)?);
        }
        Ok(out)
    }
}

/// `!ConstantPruningModifier`: freeze the zeros present at `start_step`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstantPlan {
    /// Which modifier.
    pub label: String,
    /// Names, `re:` patterns or `__ALL_PRUNABLE__`.
    pub params: Vec<String>,
    /// Excluded names or patterns.
    pub ignore: Vec<String>,
    /// When the zeros are captured.
    pub start_step: u64,
    /// When masking stops (`None`: never).
    pub end_step: Option<u64>,
}

/// `!DistillationModifier`, in steps.
#[derive(Debug, Clone, PartialEq)]
pub struct DistillPlan {
    /// Weight of the KD loss.
    pub hardness: f64,
    /// Softmax temperature.
    pub temperature: f64,
    /// Outputs distilled (`logits` by default).
    pub output_keys: Vec<crate::distill::OutputKey>,
    /// First step with distillation.
    pub start_step: u64,
    /// First step without it again (`None`: to the end).
    pub end_step: Option<u64>,
}

/// `!CrAMModifier`, in steps.
#[derive(Debug, Clone, PartialEq)]
pub struct CramPlan {
    /// Which modifier.
    pub label: String,
    /// Ascent step ρ.
    pub rho: f64,
    /// The compression levels, one drawn per step: the sparsity and the mask structure
    /// (unstructured, or N:M with sparsity `1 − N/M`).
    pub levels: Vec<(f64, MaskKind)>,
    /// CrAM+: the clean gradient is added.
    pub plus: bool,
    /// The perturbed-pass gradient is masked.
    pub sparse_grad: bool,
    /// Names, `re:` patterns or `__ALL_PRUNABLE__`.
    pub params: Vec<String>,
    /// Excluded names or patterns.
    pub ignore: Vec<String>,
    /// One threshold over all parameters, or one per tensor.
    pub scope: Scope,
    /// First CrAM step.
    pub start_step: u64,
    /// First plain step again (`None`: to the end).
    pub end_step: Option<u64>,
}

impl CramPlan {
    /// Whether step `t` is a CrAM step.
    pub fn active_at(&self, t: u64) -> bool {
        t >= self.start_step && self.end_step.is_none_or(|e| t < e)
    }
}

/// The OBS settings of an `!OBSPruningModifier` (oBERT's defaults filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct ObsPlan {
    /// Gradients per Fisher, by target sparsity.
    pub num_grads: NumGrads,
    /// Dampening λ.
    pub damp: f64,
    /// Fisher block size.
    pub block_size: usize,
    /// Sub-steps per pruning step.
    pub recomputations: usize,
    /// Examples per gradient.
    pub batch_size: usize,
}

/// The fields a gradual pruning modifier (magnitude or OBS) shares.
struct Gradual<'a> {
    label: &'a str,
    params: &'a Params,
    ignore: &'a [String],
    init: InitSparsity,
    fin: &'a FinalSparsity,
    window: (Option<f64>, Option<f64>, Option<u64>, Option<u64>),
    every: (Option<f64>, Option<u64>),
    inter: InterFunc,
    mask: MaskType,
    global: bool,
    leave_enabled: bool,
}

fn gradual(g: Gradual<'_>, spe: u64, obs: Option<ObsPlan>) -> Result<PruningPlan, ScheduleError> {
    let (se, ee, ss, es) = g.window;
    let w = window(se, ee, ss, es, None).expect("validated recipes have pruning windows");
    let (start, end) = (
        w.start.to_step(spe),
        w.end.map(|t| t.to_step(spe)).expect("validated"),
    );
    let (init, init_from_param) = match g.init {
        InitSparsity::Value(v) => (v, false),
        InitSparsity::FromParam => (0.0, true),
    };
    let (fin, groups) = match g.fin {
        FinalSparsity::Value(v) => (*v, Vec::new()),
        FinalSparsity::Groups(gr) => (gr.iter().map(|(s, _)| *s).fold(0.0, f64::max), gr.clone()),
    };
    let every = match g.every {
        (Some(e), _) => ((e * spe as f64).round() as u64).max(1),
        (None, Some(s)) => s,
        (None, None) => 0,
    };
    let schedule = SparsitySchedule::new(
        init,
        fin,
        start,
        end,
        if end > start {
            every.min(end - start)
        } else {
            every
        },
        interpolation(g.inter),
        g.leave_enabled,
    )?;
    Ok(PruningPlan {
        label: g.label.to_string(),
        params: g.params.patterns(),
        ignore: g.ignore.to_vec(),
        groups,
        init_from_param,
        schedule,
        mask: mask_kind(g.mask),
        scope: if g.global {
            Scope::Global
        } else {
            Scope::LayerWise
        },
        obs,
    })
}

/// Everything a run does, step by step.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Optimizer steps per epoch.
    pub steps_per_epoch: u64,
    /// Total optimizer steps (from `!EpochRangeModifier`, else the end of the last window).
    pub total_steps: u64,
    /// The learning rate at every step; `None` when the recipe sets none (`optimizer.lr`
    /// or an LR modifier), which a training run refuses ([`PlanError::NoLearningRate`]).
    pub lr: Option<LrSchedule>,
    /// Pruning modifiers.
    pub pruning: Vec<PruningPlan>,
    /// Constant-mask modifiers.
    pub constant: Vec<ConstantPlan>,
    /// Distillation, if any.
    pub distill: Option<DistillPlan>,
    /// CrAM, if any.
    pub cram: Option<CramPlan>,
}

/// Why a recipe cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A schedule is invalid in steps (e.g. an update interval shorter than one step).
    #[error("{modifier}: {source}")]
    Schedule {
        /// Which modifier.
        modifier: String,
        /// What is wrong.
        #[source]
        source: ScheduleError,
    },
    /// Nothing says how long to train.
    #[error("the recipe does not say how long to train: add an !EpochRangeModifier")]
    NoLength,
    /// No learning rate anywhere.
    #[error("the recipe sets no learning rate: add `optimizer.lr` or a learning-rate modifier")]
    NoLearningRate,
}

fn interpolation(f: InterFunc) -> Interpolation {
    match f {
        InterFunc::Linear => Interpolation::Linear,
        InterFunc::Cubic => Interpolation::Cubic,
        InterFunc::InverseCubic => Interpolation::InverseCubic,
    }
}

/// The mask kind of a recipe `mask_type` (validation has rejected custom blocks).
pub fn mask_kind(m: MaskType) -> MaskKind {
    match m {
        MaskType::Unstructured => MaskKind::Unstructured,
        MaskType::Block4 => MaskKind::Block { size: 4 },
        MaskType::NM { n, m } => MaskKind::NM { n, m },
        MaskType::Block { cols, .. } => MaskKind::Block { size: cols },
    }
}

/// Builds the plan of a validated recipe.
pub fn plan(recipe: &Recipe, steps_per_epoch: u64) -> Result<Plan, PlanError> {
    let spe = steps_per_epoch.max(1);
    let step = |t: Time| t.to_step(spe);
    let period = |epochs: Option<f64>, steps: Option<u64>| -> u64 {
        match (epochs, steps) {
            (Some(e), _) => ((e * spe as f64).round() as u64).max(1),
            (None, Some(s)) => s,
            (None, None) => 0,
        }
    };
    let mut pruning = Vec::new();
    let mut constant = Vec::new();
    let mut distill = None;
    let mut cram = None;
    let mut segments = Vec::new();
    let mut last_end = 0u64;
    let mut total = recipe.epoch_range().and_then(|w| w.end).map(step);
    for m in &recipe.modifiers {
        let label = m.label();
        let sched_err = |source| PlanError::Schedule {
            modifier: label.clone(),
            source,
        };
        match &m.modifier {
            Modifier::GMPruningModifier(p)
            | Modifier::MagnitudePruningModifier(p)
            | Modifier::GlobalMagnitudePruningModifier(p) => {
                let plan = gradual(
                    Gradual {
                        label: &label,
                        params: &p.params,
                        ignore: &p.ignore,
                        init: p.init_sparsity,
                        fin: &p.final_sparsity,
                        window: (p.start_epoch, p.end_epoch, p.start_step, p.end_step),
                        every: (p.update_frequency, p.update_frequency_steps),
                        inter: p.inter_func,
                        mask: p.mask_type,
                        global: m.modifier.is_global(),
                        leave_enabled: p.leave_enabled,
                    },
                    spe,
                    None,
                )
                .map_err(sched_err)?;
                last_end = last_end.max(plan.schedule.end_step);
                pruning.push(plan);
            }
            Modifier::OBSPruningModifier(p) => {
                let obs = ObsPlan {
                    num_grads: p.num_grads.clone().unwrap_or(NumGrads::Const(1024)),
                    damp: p.damp.unwrap_or(1e-7),
                    block_size: p.fisher_block_size.unwrap_or(50) as usize,
                    recomputations: p.num_recomputations.unwrap_or(1) as usize,
                    batch_size: p
                        .grad_sampler_kwargs
                        .as_ref()
                        .and_then(|k| k.get("batch_size"))
                        .map_or(16, |b| *b as usize),
                };
                let plan = gradual(
                    Gradual {
                        label: &label,
                        params: &p.params,
                        ignore: &p.ignore,
                        init: p.init_sparsity,
                        fin: &p.final_sparsity,
                        window: (p.start_epoch, p.end_epoch, p.start_step, p.end_step),
                        every: (p.update_frequency, p.update_frequency_steps),
                        inter: p.inter_func,
                        mask: p.mask_type,
                        global: true,
                        leave_enabled: p.leave_enabled,
                    },
                    spe,
                    Some(obs),
                )
                .map_err(sched_err)?;
                last_end = last_end.max(plan.schedule.end_step);
                pruning.push(plan);
            }
            Modifier::ConstantPruningModifier(c) => {
                let w = window(
                    c.start_epoch,
                    c.end_epoch,
                    c.start_step,
                    c.end_step,
                    Some(Time::Epoch(0.0)),
                )
                .expect("validated");
                constant.push(ConstantPlan {
                    label: label.clone(),
                    params: c.params.patterns(),
                    ignore: c.ignore.clone(),
                    start_step: step(w.start),
                    end_step: w.end.map(step),
                });
            }
            Modifier::LearningRateFunctionModifier(l) => {
                let w = window(l.start_epoch, l.end_epoch, l.start_step, l.end_step, None)
                    .expect("validated");
                let (start, end) = (step(w.start), w.end.map(step).expect("validated"));
                last_end = last_end.max(end);
                let function = match l.lr_func {
                    LrFunc::Linear => LrFunction::Linear {
                        init_lr: l.init_lr,
                        final_lr: l.final_lr,
                    },
                    LrFunc::Cosine => LrFunction::Cosine {
                        init_lr: l.init_lr,
                        final_lr: l.final_lr,
                    },
                    LrFunc::CyclicLinear => LrFunction::CyclicLinear {
                        init_lr: l.init_lr,
                        final_lr: l.final_lr,
                        cycle_steps: period(l.cycle_epochs, l.cycle_steps),
                    },
                };
                if end > start {
                    segments.push(LrSegment::new(start, end, function).map_err(sched_err)?);
                }
            }
            Modifier::SetLearningRateModifier(s) => {
                let w = window(
                    s.start_epoch,
                    s.end_epoch,
                    s.start_step,
                    s.end_step,
                    Some(Time::Epoch(0.0)),
                )
                .expect("validated");
                let start = step(w.start);
                let end = w.end.map(step).unwrap_or(u64::MAX);
                if end > start {
                    segments.push(
                        LrSegment::new(
                            start,
                            end,
                            LrFunction::Constant {
                                lr: s.learning_rate,
                            },
                        )
                        .map_err(sched_err)?,
                    );
                }
            }
            Modifier::DistillationModifier(d) => {
                let w = window(
                    d.start_epoch,
                    d.end_epoch,
                    d.start_step,
                    d.end_step,
                    Some(Time::Epoch(0.0)),
                )
                .expect("validated");
                distill = Some(DistillPlan {
                    hardness: d.hardness,
                    temperature: d.temperature,
                    output_keys: d
                        .distill_output_keys
                        .clone()
                        .unwrap_or_else(|| vec![crate::distill::OutputKey::Logits]),
                    start_step: step(w.start),
                    end_step: w.end.map(step),
                });
            }
            Modifier::CrAMModifier(c) => {
                let w = window(
                    c.start_epoch,
                    c.end_epoch,
                    c.start_step,
                    c.end_step,
                    Some(Time::Epoch(0.0)),
                )
                .expect("validated");
                let levels = match (&c.sparsities, &c.nm_patterns) {
                    (Some(s), _) => s.iter().map(|f| (f.0, MaskKind::Unstructured)).collect(),
                    (None, p) => p
                        .iter()
                        .flatten()
                        .map(|p| {
                            (
                                1.0 - p.n as f64 / p.m as f64,
                                MaskKind::NM { n: p.n, m: p.m },
                            )
                        })
                        .collect(),
                };
                cram = Some(CramPlan {
                    label: label.clone(),
                    rho: c.rho.0,
                    levels,
                    plus: c.plus,
                    sparse_grad: c.sparse_grad,
                    params: c.params.patterns(),
                    ignore: c.ignore.clone(),
                    scope: if c.global_sparsity {
                        Scope::Global
                    } else {
                        Scope::LayerWise
                    },
                    start_step: step(w.start),
                    end_step: w.end.map(step),
                });
            }
            Modifier::EpochRangeModifier(_) => {}
        }
    }
    if total.is_none() && last_end > 0 {
        total = Some(last_end);
    }
    let total_steps = total.ok_or(PlanError::NoLength)?;
    let base_lr = recipe.optimizer.as_ref().map(|o| o.lr).or_else(|| {
        segments.first().map(|s: &LrSegment| match s.function {
            LrFunction::Constant { lr } => lr,
            LrFunction::Linear { init_lr, .. }
            | LrFunction::Cosine { init_lr, .. }
            | LrFunction::CyclicLinear { init_lr, .. } => init_lr,
        })
    });
    let lr = match base_lr {
        None => None,
        Some(base) => {
            let mut lr = LrSchedule::new(base).map_err(|source| PlanError::Schedule {
                modifier: "optimizer.lr".into(),
                source,
            })?;
            for s in segments {
                lr = lr.with_segment(s);
            }
            Some(lr)
        }
    };
    Ok(Plan {
        steps_per_epoch: spe,
        total_steps,
        lr,
        pruning,
        constant,
        distill,
        cram,
    })
}
