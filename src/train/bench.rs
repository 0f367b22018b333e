//! `shears bench train`: the recipe's own training step — its model, data, batch shapes,
//! optimizer, clipping and step rule — timed as a whole and per phase, dense, with the
//! weights masked at a sparsity but computed densely, and on the SparseProp kernels, in one
//! run. The same batch shapes go to a PyTorch reference script ([`ReferenceSpec`]) so that
//! the ratio to PyTorch is measured on the same machine in the same run.
//!
//! The benchmarked recipe is the user's recipe with three changes ([`bench_recipe`]):
//! every pruning modifier becomes a one-shot magnitude pruning at step 0 to the benchmark's
//! sparsity on the same parameters and with the same mask structure (none in the dense
//! and base modes; OBS scores are replaced by magnitudes, which give the same step cost); distillation
//! is left out (a teacher's outputs are cached after their first pass, so they cost the
//! step little); `training.sparseprop` is `off` (dense, masked, base) or `on` (SparseProp);
//! and the base mode also leaves out the step-rule modifiers (CrAM), so that it times the
//! base optimizer's step that a CrAM step is compared with.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use shears_models::op_timing::OpTime;

use super::engine::{EngineError, EngineOptions, bench_steps};
use crate::profile::{PhaseTimes, StepPhase};
use crate::recipe::Recipe;
use crate::recipe::modifiers::{FinalSparsity, InitSparsity, Modifier, PruningModifier};
use crate::recipe::sections::{OptimizerSection, SparsePropMode};

/// How the benchmarked step computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum StepMode {
    /// No masks, dense kernels.
    Dense,
    /// Weights masked at the benchmark's sparsity, dense kernels (SparseProp off).
    Masked,
    /// Weights masked at the benchmark's sparsity, SparseProp kernels for the layers sparse
    /// enough (`training.sparseprop: on`; a GPU device takes the dense masked path).
    Sparseprop,
    /// Dense, with the step-rule modifiers (`!CrAMModifier`) left out: the base optimizer's
    /// plain step on the same batches, so that `--modes base,dense` on a CrAM recipe
    /// measures what a CrAM step costs. Equal to `dense` for a recipe without CrAM.
    Base,
}

impl StepMode {
    /// The mode's name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            StepMode::Dense => "dense",
            StepMode::Masked => "masked",
            StepMode::Sparseprop => "sparseprop",
            StepMode::Base => "base",
        }
    }
}

impl StepMode {
    /// Whether the mode masks the recipe's pruned parameters at the benchmark's sparsity.
    pub fn is_sparse(self) -> bool {
        matches!(self, StepMode::Masked | StepMode::Sparseprop)
    }
}

/// The timed steps of one mode, as the engine measured them.
#[derive(Debug, Clone)]
pub struct StepBench {
    /// The model family (`bert`, `resnet20`).
    pub family: String,
    /// The realised sparsity of the pruned parameters (0 when dense).
    pub sparsity: f64,
    /// Layers that ran the SparseProp kernels.
    pub sparse_layers: usize,
    /// Wall time of each timed step.
    pub step_seconds: Vec<f64>,
    /// Training examples of the timed steps.
    pub examples: usize,
    /// Time per phase over the timed steps.
    pub phases: PhaseTimes,
    /// Time in each of shears' own CPU kernels over the timed steps
    /// ([`shears_models::op_timing`]), by op name.
    pub ops: BTreeMap<String, OpTime>,
    /// The main input's shape of every micro-batch of every timed step.
    pub batch_shapes: Vec<Vec<Vec<usize>>>,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A sparse mode was asked of a recipe that prunes nothing.
    #[error(
        "{recipe}: the recipe has no pruning modifier, so `--modes masked,sparseprop` do not know which parameters to prune; add one (e.g. !GlobalMagnitudePruningModifier) or bench `--modes dense`"
    )]
    NothingPruned {
        /// The recipe file.
        recipe: String,
    },
    /// The sparsity is outside `[0, 1)`.
    #[error("--sparsity {0}: expected a fraction in [0, 1)")]
    Sparsity(f64),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// One row of the benchmark table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// Who computed the step: `shears` or `pytorch`.
    pub engine: String,
    /// `dense`, `masked`, `sparseprop` or `base`.
    pub mode: String,
    /// Realised sparsity of the pruned parameters.
    pub sparsity: f64,
    /// Layers on the SparseProp kernels.
    pub sparse_layers: usize,
    /// Timed steps.
    pub steps: usize,
    /// Median wall time of a step, milliseconds.
    pub step_ms: f64,
    /// Training examples per second (examples of the timed steps over their total time).
    pub examples_per_sec: f64,
    /// Mean milliseconds per step in each phase (`data`, `forward`, `backward`, `clip`,
    /// `optimizer`, and `other`: the step's time outside these, e.g. M-FAC's update).
    pub phases_ms: Vec<(String, f64)>,
    /// The top ops by time, slowest first: shears' own CPU kernels (mean ms and calls per
    /// step), then [`BURN_OPS`]: the rest of the forward, backward and clipping phases.
    /// Empty for PyTorch rows.
    pub ops: Vec<OpRow>,
}

/// The name of the remainder in [`BenchRow::ops`]: forward + backward + clipping time not
/// spent in shears' own kernels, i.e. burn's ops (matmul, softmax, layer norm, element-wise
/// ops, autodiff's bookkeeping).
pub const BURN_OPS: &str = "burn ops (matmul, element-wise, softmax, norms; autodiff)";

/// One op of [`BenchRow::ops`].
#[derive(Debug, Clone, Serialize)]
pub struct OpRow {
    /// The op (`conv2d fwd (im2col+GEMM)`, `SparseProp linear bwd`, [`BURN_OPS`], ...).
    pub op: String,
    /// Mean milliseconds per step.
    pub ms: f64,
    /// Mean calls per step (`None` for the remainder).
    pub calls: Option<f64>,
}

impl BenchRow {
    /// The row of a shears mode.
    pub fn from_bench(mode: StepMode, b: &StepBench) -> Self {
        let n = b.step_seconds.len().max(1) as f64;
        let total: f64 = b.step_seconds.iter().sum();
        let mut phases_ms: Vec<(String, f64)> = StepPhase::ALL
            .iter()
            .map(|&p| (p.name().to_string(), b.phases.get(p) * 1e3 / n))
            .collect();
        phases_ms.push((
            "other".into(),
            ((total - b.phases.total()).max(0.0)) * 1e3 / n,
        ));
        let mut ops: Vec<OpRow> = b
            .ops
            .iter()
            .map(|(op, t)| OpRow {
                op: op.clone(),
                ms: t.seconds * 1e3 / n,
                calls: Some(t.calls as f64 / n),
            })
            .collect();
        let in_phases: f64 = [StepPhase::Forward, StepPhase::Backward, StepPhase::Clip]
            .iter()
            .map(|&p| b.phases.get(p))
            .sum();
        let ours: f64 = b.ops.values().map(|t| t.seconds).sum();
        ops.push(OpRow {
            op: BURN_OPS.into(),
            ms: (in_phases - ours).max(0.0) * 1e3 / n,
            calls: None,
        });
        ops.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        BenchRow {
            engine: "shears".into(),
            mode: mode.name().into(),
            sparsity: b.sparsity,
            sparse_layers: b.sparse_layers,
            steps: b.step_seconds.len(),
            step_ms: median(&b.step_seconds) * 1e3,
            examples_per_sec: b.examples as f64 / total.max(1e-12),
            phases_ms,
            ops,
        }
    }

    /// Mean milliseconds per step of `phase` (0 when not measured).
    pub fn phase_ms(&self, phase: &str) -> f64 {
        self.phases_ms
            .iter()
            .find(|(p, _)| p == phase)
            .map_or(0.0, |(_, v)| *v)
    }
}

/// The median of `xs` (0 when empty).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// `recipe` as `mode` benchmarks it at `sparsity` (see the module docs), stopping after
/// `max_steps` steps.
pub fn bench_recipe(
    recipe: &Recipe,
    mode: StepMode,
    sparsity: f64,
    max_steps: u64,
) -> Result<Recipe, BenchError> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(BenchError::Sparsity(sparsity));
    }
    let mut r = recipe.clone();
    if let Some(m) = r.model.as_mut() {
        m.teacher = None;
    }
    let one_shot = |p: PruningModifier| PruningModifier {
        init_sparsity: InitSparsity::Value(sparsity),
        final_sparsity: FinalSparsity::Value(sparsity),
        start_epoch: None,
        end_epoch: None,
        update_frequency: None,
        start_step: Some(0),
        end_step: Some(0),
        update_frequency_steps: Some(1),
        leave_enabled: true,
        ..p
    };
    let mut pruned = false;
    r.modifiers.retain_mut(|e| {
        let keep = match &e.modifier {
            Modifier::DistillationModifier(_) | Modifier::ConstantPruningModifier(_) => false,
            Modifier::CrAMModifier(_) => mode != StepMode::Base,
            Modifier::GMPruningModifier(_)
            | Modifier::MagnitudePruningModifier(_)
            | Modifier::GlobalMagnitudePruningModifier(_)
            | Modifier::OBSPruningModifier(_) => mode.is_sparse(),
            _ => true,
        };
        if keep {
            let global = e.modifier.is_global();
            let magnitude = match &e.modifier {
                Modifier::GMPruningModifier(p)
                | Modifier::MagnitudePruningModifier(p)
                | Modifier::GlobalMagnitudePruningModifier(p) => Some(p.clone()),
                Modifier::OBSPruningModifier(o) => Some(PruningModifier {
                    params: o.params.clone(),
                    ignore: o.ignore.clone(),
                    init_sparsity: o.init_sparsity,
                    final_sparsity: o.final_sparsity.clone(),
                    start_epoch: None,
                    end_epoch: None,
                    update_frequency: None,
                    start_step: None,
                    end_step: None,
                    update_frequency_steps: None,
                    inter_func: o.inter_func,
                    mask_type: o.mask_type,
                    global_sparsity: Some(global),
                    leave_enabled: true,
                    log_types: None,
                }),
                _ => None,
            };
            if let Some(p) = magnitude {
                pruned = true;
                let p = PruningModifier {
                    global_sparsity: Some(global),
                    ..one_shot(p)
                };
                e.modifier = Modifier::GMPruningModifier(p);
            }
        }
        keep
    });
    if mode.is_sparse() && !pruned {
        return Err(BenchError::NothingPruned {
            recipe: recipe.path.display().to_string(),
        });
    }
    if let Some(t) = r.training.as_mut() {
        t.max_steps = Some(max_steps);
        t.sparseprop = match mode {
            StepMode::Sparseprop => SparsePropMode::On,
            StepMode::Dense | StepMode::Masked | StepMode::Base => SparsePropMode::Off,
        };
    }
    Ok(r)
}

/// Benchmarks `recipe` in `mode`: `warmup` untimed steps, then `steps` timed ones, in the
/// scratch directory `opts.run_dir`. With `export`, the model as the first step sees it
/// (before masking) is exported there in its family's layout, for a reference script.
pub fn bench_mode(
    recipe: &Recipe,
    opts: &EngineOptions,
    mode: StepMode,
    sparsity: f64,
    warmup: u64,
    steps: u64,
    export: Option<&Path>,
) -> Result<StepBench, BenchError> {
    let r = bench_recipe(recipe, mode, sparsity, warmup + steps)?;
    Ok(bench_steps(&r, opts, warmup, steps, export)?)
}

/// What a PyTorch reference script needs to time the same step (written as JSON; the
/// repository's script is `benches/train_step_torch.py`).
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceSpec {
    /// The model family (`bert`, `resnet20`, `resnet18`, ...).
    pub family: String,
    /// The model exported by shears in its family's layout (Hugging Face directory for
    /// BERT, `config.json` + torch-named safetensors for ResNets).
    pub model_dir: String,
    /// The recipe's task (`text-classification`, `image-classification`, ...).
    pub task: String,
    /// The recipe's optimizer section.
    pub optimizer: OptimizerSection,
    /// Global-norm clipping threshold.
    pub max_grad_norm: Option<f64>,
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f64,
    /// Threads the reference should use (shears' compute threads).
    pub threads: usize,
    /// Untimed steps before the timed ones.
    pub warmup: u64,
    /// The main input's shape of every micro-batch of every timed step.
    pub batch_shapes: Vec<Vec<Vec<usize>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
