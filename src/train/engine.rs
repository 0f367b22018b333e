//! The training loop behind `shears run`: one loop for every [`Task`], driven step by step
//! by the recipe's [`Plan`].
//!
//! At the start of optimizer step `t`:
//! 1. every pruning modifier whose schedule updates at `t` recomputes its masks from the
//!    current weights (magnitude; global or layer-wise; unstructured, N:M or blocks) at the
//!    target of step `t`; constant-pruning modifiers capture the zeros at their start;
//!    masks of modifiers whose window ended without `leave_enabled` are dropped. The union
//!    goes to the [`MaskedOptimizer`], which zeroes the pruned weights;
//! 2. at the distillation start with `teacher: self`, the student is snapshotted (frozen,
//!    inference mode) as the teacher;
//! 3. the learning rate is the plan's LR at `t` (LR modifiers, rewinding included);
//! 4. the device RNG (dropout) is seeded from `(seed, t)`, the micro-batches of `t` are
//!    taken from the seeded permutation of epoch `t / steps_per_epoch`, the loss is
//!    `(1 − hardness)·task + hardness·KD` while distilling, gradients are accumulated,
//!    masked, clipped by global norm and applied.
//!
//! Because the data order and the RNG of a step depend only on `(seed, step)`, and a
//! checkpoint holds weights, masks, optimizer moments, the step and the evaluation history,
//! a resumed run takes exactly the steps an uninterrupted run takes (bit for bit on CPU).
//!
//! burn-train's `SupervisedTraining` is not used for the loop itself: it checkpoints only at
//! epoch ends, hides the step counter from the optimizer hook, and its optimizer records
//! cannot be built outside burn-optim, so neither mid-epoch schedules (pruning every half
//! epoch, LR cycles) nor an exact mid-epoch resume fit it. The loop reuses burn's
//! optimizers, batcher trait and gradient accumulation.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{
    AdamConfig, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer, SgdConfig,
    decay::WeightDecayConfig, momentum::MomentumConfig,
};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use shears_models::bert::weights::{Checkpoint, export_safetensors, load_into};
use shears_models::bert::{
    BertArchitecture, BertConfig, BertError, BertForQuestionAnswering,
    BertForSequenceClassification, BertTokenizer, ModelFiles, ModelSource, save_pretrained,
};

use super::checkpoint::{CheckpointError, CheckpointStore, TrainState};
use super::order::{batch, batches_per_epoch, epoch_order, mix};
use super::progress::{Progress, StepStats, format_duration};
use super::report::{RunReport, SparsitySummary};
use super::task::{
    Metrics, QuestionAnsweringTask, SequenceClassificationTask, Task, TaskError, TaskKind,
    head_labels, load_text_splits,
};
use super::{TrainError, check_finite_loss};
use crate::data::batch::length_bucketed_order;
use crate::device::{DeviceKind, DeviceUnavailable};
use crate::distill::{combine, kd_loss};
use crate::recipe::Recipe;
use crate::recipe::plan::{ConstantPlan, Plan, PlanError, PruningPlan, plan};
use crate::recipe::sections::{HeadKind, OptimizerKind, OptimizerSection};
use crate::run_dir::{RunDirError, write_atomic};
use crate::sparsity::checkpoint::{MaskFileError, load_masks, save_masks};
use crate::sparsity::enforce::{EnforceError, MaskedOptimizer, OptimStateError};
use crate::sparsity::mask::{
    Mask, MaskError, MaskSet, compute_module_masks, module_masks_from_nonzero, read_values,
};
use crate::sparsity::params::{HfNames, list_params};
use crate::sparsity::report::{ReportError, SparsityReport};
use crate::sparsity::selection::{ParamInfo, ParamSelector, SelectionError};

/// How to run a recipe.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The run directory (created by [`crate::run_dir::RunDir::prepare`]).
    pub run_dir: PathBuf,
    /// Where to compute.
    pub device: DeviceKind,
    /// Continue from the latest checkpoint in `run_dir`.
    pub resume: bool,
    /// Relative paths of the recipe (model, data) are resolved against this directory.
    pub base_dir: PathBuf,
    /// Stop after this many steps of this session, with a checkpoint, as a time-boxed
    /// session does; `--resume` continues it.
    pub stop_after: Option<u64>,
}

/// How [`run`] ended.
#[derive(Debug, Clone)]
pub enum RunEnd {
    /// The recipe ran to its end.
    Finished(Box<RunOutcome>),
    /// [`EngineOptions::stop_after`] stopped it; the checkpoint of `step` is saved.
    Stopped {
        /// Optimizer steps taken so far.
        step: u64,
        /// Steps of the whole run.
        total: u64,
    },
}

/// One evaluation during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Optimizer steps taken when it ran.
    pub step: u64,
    /// `step / steps_per_epoch`.
    pub epoch: f64,
    /// Sparsity of the pruned parameters at that point.
    pub sparsity: f64,
    /// Dev metrics.
    pub metrics: Metrics,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The content of `report.json`.
    pub report: RunReport,
    /// The last evaluation before the first mask (the dense model), when the recipe prunes.
    pub dense: Option<EvalRecord>,
    /// The final evaluation.
    pub last: EvalRecord,
    /// The metric that summarises the task (`accuracy`, `pearson`, `mcc`).
    pub main_metric: String,
    /// Every evaluation, in order.
    pub history: Vec<EvalRecord>,
    /// The exported model directory, if the recipe exports.
    pub model_dir: Option<PathBuf>,
    /// Per-parameter sparsity table of the final model (pruned parameters).
    pub sparsity_table: String,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A section a run needs is missing.
    #[error("the recipe has no `{0}:` section, which a run needs")]
    MissingSection(&'static str),
    /// The recipe asks for something the engine does not run yet.
    #[error("{0}")]
    Unsupported(String),
    /// The data or the metrics failed.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A model (student or teacher) could not be loaded or saved.
    #[error("{what}: {source}")]
    Model {
        /// Which model and where.
        what: String,
        /// The cause.
        #[source]
        source: BertError,
    },
    /// The recipe cannot be turned into step schedules.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A parameter pattern is invalid.
    #[error(transparent)]
    Selection(#[from] SelectionError),
    /// A modifier selects no parameter of the model.
    #[error("{modifier}: its `params` match no parameter of the model (patterns: {patterns})")]
    NothingSelected {
        /// The modifier.
        modifier: String,
        /// Its patterns.
        patterns: String,
    },
    /// Masks could not be computed.
    #[error("{modifier}: {source}")]
    Mask {
        /// The modifier.
        modifier: String,
        /// The cause.
        #[source]
        source: MaskError,
    },
    /// Masks could not be applied.
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    /// The optimizer state could not be saved or restored.
    #[error(transparent)]
    OptimState(#[from] OptimStateError),
    /// A mask file could not be saved or restored.
    #[error(transparent)]
    MaskFile(#[from] MaskFileError),
    /// Training stopped (non-finite loss).
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A run-directory file could not be written.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// The device is not compiled in.
    #[error(transparent)]
    Device(#[from] DeviceUnavailable),
    /// The final sparsity could not be measured.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A resume is impossible.
    #[error("cannot resume {dir}: {message}")]
    Resume {
        /// The run directory.
        dir: PathBuf,
        /// Why.
        message: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The sha256 of the resolved recipe, hex.
pub fn recipe_digest(recipe: &Recipe) -> String {
    let digest = sha2::Sha256::digest(recipe.resolved_yaml().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn resolve_path(base: &Path, spec: &str) -> String {
    if spec.starts_with("hf:") || Path::new(spec).is_absolute() {
        spec.to_string()
    } else {
        base.join(spec).display().to_string()
    }
}

fn model_files(base: &Path, spec: &str, what: &str) -> Result<ModelFiles, EngineError> {
    let resolved = resolve_path(base, spec);
    ModelSource::parse(&resolved)
        .and_then(|s| s.resolve())
        .map_err(|source| EngineError::Model {
            what: format!("{what} `{spec}`"),
            source,
        })
}

/// Loads a model of architecture `M` from `files`, with the config adjusted by `adjust`.
///
/// With `fresh_head`, task-head tensors (`classifier.*`, `qa_outputs.*`) whose shape does not
/// fit the task (a checkpoint fine-tuned for another label count) are dropped with a warning
/// and the head keeps its fresh initialisation, like `ignore_mismatched_sizes=True` in
/// `transformers`; any other mismatch is an error.
fn load_model<M: BertArchitecture>(
    files: &ModelFiles,
    device: &Device,
    what: &str,
    fresh_head: bool,
    adjust: impl FnOnce(BertConfig) -> BertConfig,
) -> Result<(M, BertConfig), EngineError> {
    let wrap = |source| EngineError::Model {
        what: what.to_string(),
        source,
    };
    let config = adjust(BertConfig::from_file(&files.config).map_err(wrap)?);
    let mut checkpoint = Checkpoint::read(&files.weights).map_err(wrap)?;
    loop {
        match load_into(M::from_config(&config, device), &checkpoint) {
            Ok((model, report)) => {
                if !report.initialized.is_empty() {
                    log::info!(
                        "{what}: freshly initialised (not in the checkpoint): {}",
                        report.initialized.join(", ")
                    );
                }
                return Ok((model, config));
            }
            Err(BertError::ShapeMismatch {
                key,
                expected,
                found,
                ..
            }) if fresh_head
                && (key.starts_with("classifier.") || key.starts_with("qa_outputs."))
                && checkpoint.remove(&key).is_some() =>
            {
                eprintln!(
                    "warning: {what}: `{key}` has shape {found:?} in the checkpoint, the task needs {expected:?}: \
                     the head is initialised afresh"
                );
            }
            Err(e) => return Err(wrap(e)),
        }
    }
}

fn read_config(files: &ModelFiles, what: &str) -> Result<BertConfig, EngineError> {
    BertConfig::from_file(&files.config).map_err(|source| EngineError::Model {
        what: what.to_string(),
        source,
    })
}

fn load_tokenizer(
    files: &ModelFiles,
    config: &BertConfig,
    what: &str,
) -> Result<BertTokenizer, EngineError> {
    shears_models::bert::load_tokenizer(files, config)
        .map_err(|source| EngineError::Model {
            what: what.to_string(),
            source,
        })?
        .ok_or_else(|| {
            EngineError::Unsupported(format!(
                "{what}: no tokenizer.json or vocab.txt next to the weights"
            ))
        })
}

/// Runs a recipe in `opts.run_dir` (prepared by the caller) and returns what it produced.
pub fn run(recipe: &Recipe, opts: &EngineOptions) -> Result<RunEnd, EngineError> {
    let model_sec = recipe
        .model
        .as_ref()
        .ok_or(EngineError::MissingSection("model"))?;
    let data = recipe
        .data
        .as_ref()
        .ok_or(EngineError::MissingSection("data"))?;
    let training = recipe
        .training
        .as_ref()
        .ok_or(EngineError::MissingSection("training"))?;
    let kind = TaskKind::parse(&data.task)?;
    check_head(kind, model_sec.head)?;
    let plain = opts.device.device()?;
    let files = model_files(&opts.base_dir, &model_sec.source, "model.source")?;
    let base_config = read_config(&files, "model.source")?;
    let tokenizer = load_tokenizer(&files, &base_config, "model.source")?;
    let eval_batch = training.eval_batch_size.unwrap_or(training.batch_size);
    if let TaskKind::Squad { v2 } = kind {
        let task = QuestionAnsweringTask::load(data, v2, &tokenizer, &opts.base_dir, eval_batch)?;
        return start_task(recipe, opts, plain, files, &task, |c| c, |_| Ok(()));
    }
    let splits = load_text_splits(data, kind, model_sec.num_labels, &opts.base_dir)?;
    let num_labels = head_labels(kind, model_sec.num_labels, &base_config);
    let task = SequenceClassificationTask::new(
        kind,
        &splits,
        &tokenizer,
        data.max_seq_length.unwrap_or(128),
        num_labels,
        eval_batch,
    )?;
    let regression = kind.is_regression();
    let adjust = move |c: BertConfig| {
        let mut c = c.with_num_labels(num_labels);
        c.problem_type = Some(if regression {
            shears_models::bert::ProblemType::Regression
        } else {
            shears_models::bert::ProblemType::SingleLabelClassification
        });
        c
    };
    let teacher_ok = |t: &BertForSequenceClassification| {
        if t.num_labels() == num_labels {
            Ok(())
        } else {
            Err(format!(
                "it has {} labels, the student {num_labels}",
                t.num_labels()
            ))
        }
    };
    start_task(recipe, opts, plain, files, &task, adjust, teacher_ok)
}

/// The head a task needs.
fn check_head(kind: TaskKind, head: HeadKind) -> Result<(), EngineError> {
    match (kind, head) {
        (
            TaskKind::TextClassification | TaskKind::TextRegression | TaskKind::Glue(_),
            HeadKind::Classification,
        )
        | (TaskKind::Squad { .. }, HeadKind::Qa) => Ok(()),
        (TaskKind::ImageClassification, _) => Err(EngineError::Unsupported(
            "image classification is not run by the training engine yet".into(),
        )),
        (TaskKind::Squad { .. }, h) => Err(EngineError::Unsupported(format!(
            "data.task squad/squad_v2 needs model.head: qa (the recipe says {h:?})"
        ))),
        (_, h) => Err(EngineError::Unsupported(format!(
            "sentence tasks need model.head: classification (the recipe says {h:?})"
        ))),
    }
}

/// Loads student and teacher for `task` and runs the loop with the recipe's optimizer.
fn start_task<T: Task>(
    recipe: &Recipe,
    opts: &EngineOptions,
    plain: Device,
    files: ModelFiles,
    task: &T,
    adjust: impl FnOnce(BertConfig) -> BertConfig,
    teacher_ok: impl Fn(&T::Model) -> Result<(), String>,
) -> Result<RunEnd, EngineError> {
    let model_sec = recipe.model.as_ref().expect("checked by run");
    let training = recipe.training.as_ref().expect("checked by run");
    let ad = plain.clone().autodiff();
    plain.seed(training.seed);
    let (model, config) = load_model::<T::Model>(&files, &ad, "model.source", true, adjust)?;
    let teacher = match model_sec.teacher.as_deref() {
        None => TeacherSource::None,
        Some("self") => TeacherSource::SelfSnapshot,
        Some(spec) => {
            let tfiles = model_files(&opts.base_dir, spec, "model.teacher")?;
            let what = format!("model.teacher `{spec}`");
            let (t, _) = load_model::<T::Model>(&tfiles, &plain, &what, false, |c| c)?;
            teacher_ok(&t).map_err(|m| EngineError::Unsupported(format!("{what}: {m}")))?;
            TeacherSource::Loaded(t)
        }
    };
    let ctx = Context {
        recipe,
        opts,
        plain,
        ad,
        config,
        files,
        task_name: recipe
            .data
            .as_ref()
            .map(|d| d.task.clone())
            .unwrap_or_default(),
    };
    let optimizer = recipe
        .optimizer
        .clone()
        .ok_or(EngineError::MissingSection("optimizer"))?;
    match optimizer.name {
        OptimizerKind::Adamw => drive(&ctx, task, model, teacher, adamw(&optimizer)),
        OptimizerKind::Adam => drive(&ctx, task, model, teacher, adam(&optimizer)),
        OptimizerKind::Sgd => drive(&ctx, task, model, teacher, sgd(&optimizer)),
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

enum TeacherSource<M> {
    None,
    SelfSnapshot,
    Loaded(M),
}

struct Context<'a> {
    recipe: &'a Recipe,
    opts: &'a EngineOptions,
    plain: Device,
    ad: Device,
    config: BertConfig,
    files: ModelFiles,
    task_name: String,
}

/// A pruning modifier at run time.
struct PruneState {
    plan: PruningPlan,
    selected: Vec<ParamInfo>,
    masks: Option<MaskSet>,
}

/// A constant-pruning modifier at run time.
struct ConstantState {
    plan: ConstantPlan,
    selected: Vec<ParamInfo>,
    masks: Option<MaskSet>,
}

fn select(
    all: &[ParamInfo],
    label: &str,
    params: &[String],
    ignore: &[String],
) -> Result<Vec<ParamInfo>, EngineError> {
    let selection = ParamSelector::new(params, ignore)?.select(all);
    if selection.matched.is_empty() {
        return Err(EngineError::NothingSelected {
            modifier: label.to_string(),
            patterns: params.join(", "),
        });
    }
    Ok(selection.matched)
}

impl PruneState {
    /// The masks at target `target` (the schedule's value; groups scale with it).
    fn compute<M: Module>(&self, model: &M, target: f64) -> Result<MaskSet, EngineError> {
        let err = |source| EngineError::Mask {
            modifier: self.plan.label.clone(),
            source,
        };
        let (kind, scope) = (self.plan.mask, self.plan.scope);
        if self.plan.groups.is_empty() {
            return compute_module_masks(model, &HfNames, &self.selected, target, kind, scope)
                .map_err(err);
        }
        let (init, fin) = (
            self.plan.schedule.init_sparsity,
            self.plan.schedule.final_sparsity,
        );
        let frac = if fin > init {
            (target - init) / (fin - init)
        } else {
            1.0
        };
        let mut out = MaskSet::new();
        for (goal, names) in &self.plan.groups {
            let group = ParamSelector::new(names, &self.plan.ignore)?
                .select(&self.selected)
                .matched;
            if group.is_empty() {
                continue;
            }
            let t = init + (goal - init) * frac;
            out.extend(compute_module_masks(model, &HfNames, &group, t, kind, scope).map_err(err)?);
        }
        Ok(out)
    }
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

const MODEL_FILE: &str = "model.safetensors";
const OPTIM_FILE: &str = "optimizer.safetensors";
const HISTORY_FILE: &str = "history.json";
const TEACHER_DIR: &str = "teacher-self";

fn mask_file(prefix: &str, i: usize) -> String {
    format!("masks-{prefix}-{i}.safetensors")
}

#[allow(clippy::too_many_lines)]
fn drive<T: Task, O: Optimizer>(
    ctx: &Context<'_>,
    task: &T,
    mut model: T::Model,
    teacher: TeacherSource<T::Model>,
    optimizer: O,
) -> Result<RunEnd, EngineError> {
    let recipe = ctx.recipe;
    let training = recipe.training.as_ref().expect("checked by run");
    let run_dir = &ctx.opts.run_dir;
    let accum = training.gradient_accumulation_steps.max(1);
    let batch_size = training.batch_size.max(1);
    let n = task.train_len();
    let micro_batches = batches_per_epoch(n, batch_size);
    let spe = micro_batches.div_ceil(accum) as u64;
    let plan: Plan = plan(recipe, spe)?;
    let lr_schedule = plan.lr.clone().ok_or(PlanError::NoLearningRate)?;
    let end = training
        .max_steps
        .map_or(plan.total_steps, |m| m.min(plan.total_steps));
    let seed = training.seed;
    let digest = recipe_digest(recipe);

    let all_params = list_params(&model, &HfNames);
    let mut prune: Vec<PruneState> = plan
        .pruning
        .iter()
        .map(|p| {
            Ok(PruneState {
                plan: p.clone(),
                selected: select(&all_params, &p.label, &p.params, &p.ignore)?,
                masks: None,
            })
        })
        .collect::<Result<_, EngineError>>()?;
    let mut constant: Vec<ConstantState> = plan
        .constant
        .iter()
        .map(|c| {
            Ok(ConstantState {
                plan: c.clone(),
                selected: select(&all_params, &c.label, &c.params, &c.ignore)?,
                masks: None,
            })
        })
        .collect::<Result<_, EngineError>>()?;
    let pruned_names: Vec<String> = {
        let mut v: Vec<String> = prune
            .iter()
            .flat_map(|p| p.selected.iter().map(|i| i.name.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let target = plan
        .pruning
        .iter()
        .map(|p| p.schedule.final_sparsity)
        .fold(0.0, f64::max);
    let first_prune = prune.iter().map(|p| p.plan.schedule.start_step).min();

    let mut optim = MaskedOptimizer::new(optimizer).with_naming(HfNames);
    if let Some(max) = training.max_grad_norm {
        optim = optim.with_max_grad_norm(max);
    }
    let store = CheckpointStore::new(run_dir, 2);
    let mut teacher = teacher;
    let mut history: Vec<EvalRecord> = Vec::new();
    let mut step = 0u64;
    let mut wall_before = 0.0f64;

    if ctx.opts.resume {
        let Some((dir, state)) = store.latest()? else {
            return Err(EngineError::Resume {
                dir: run_dir.clone(),
                message: "it has no complete checkpoint".into(),
            });
        };
        if state.recipe_sha256 != digest {
            return Err(EngineError::Resume {
                dir: run_dir.clone(),
                message:
                    "the recipe (after --set overrides) differs from the one the run started with; \
                          resume with the same recipe and overrides"
                        .into(),
            });
        }
        if state.steps_per_epoch != spe {
            return Err(EngineError::Resume {
                dir: run_dir.clone(),
                message: format!(
                    "the data give {spe} steps per epoch, the checkpoint {}: the data changed",
                    state.steps_per_epoch
                ),
            });
        }
        let ckpt = Checkpoint::read(dir.join(MODEL_FILE)).map_err(|source| EngineError::Model {
            what: format!("checkpoint {}", dir.display()),
            source,
        })?;
        model = load_into(model, &ckpt)
            .map_err(|source| EngineError::Model {
                what: format!("checkpoint {}", dir.display()),
                source,
            })?
            .0;
        for (i, p) in prune.iter_mut().enumerate() {
            let f = dir.join(mask_file("prune", i));
            p.masks = if f.is_file() {
                Some(load_masks(&f)?)
            } else {
                None
            };
        }
        for (i, c) in constant.iter_mut().enumerate() {
            let f = dir.join(mask_file("constant", i));
            c.masks = if f.is_file() {
                Some(load_masks(&f)?)
            } else {
                None
            };
        }
        let enforced = enforced_masks(&prune, &constant, state.step)?;
        model = optim.set_masks(model, enforced)?;
        optim.load_state(&model, &dir.join(OPTIM_FILE))?;
        let h = dir.join(HISTORY_FILE);
        history = serde_json::from_slice(&std::fs::read(&h).map_err(io_err(&h))?).map_err(|e| {
            EngineError::Resume {
                dir: run_dir.clone(),
                message: format!("{}: {e}", h.display()),
            }
        })?;
        if matches!(teacher, TeacherSource::SelfSnapshot)
            && let Some(d) = &plan.distill
            && state.step > d.start_step
        {
            let tdir = run_dir.join(TEACHER_DIR);
            let tfiles = ModelSource::Local(tdir.clone())
                .resolve()
                .map_err(|source| EngineError::Model {
                    what: format!("teacher snapshot {}", tdir.display()),
                    source,
                })?;
            let (t, _) =
                load_model::<T::Model>(&tfiles, &ctx.plain, "teacher snapshot", false, |c| c)?;
            teacher = TeacherSource::Loaded(t);
        }
        step = state.step;
        wall_before = state.wall_seconds;
        eprintln!(
            "resuming {} at step {step}/{end} (epoch {:.2})",
            run_dir.display(),
            step as f64 / spe as f64
        );
    }

    let log_path = run_dir.join("train.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err(&log_path))?;
    let mut log_line = {
        let mut log = log.try_clone().map_err(io_err(&log_path))?;
        move |line: &str| {
            let _ = writeln!(log, "{line}");
        }
    };
    let eval_every = training
        .eval_every_epochs
        .map_or(spe, |e| ((e * spe as f64).round() as u64).max(1));
    let ckpt_every = training.checkpoint_every_steps.unwrap_or(spe).max(1);
    let log_every = training.log_every_steps.unwrap_or(50);
    let started = Instant::now();
    let wall = |started: &Instant| wall_before + started.elapsed().as_secs_f64();

    let last_prune_end = prune.iter().map(|p| p.plan.schedule.end_step).max();
    let phase_of = |t: u64| -> &'static str {
        match first_prune {
            Some(s) if t < s => "dense",
            Some(_) if last_prune_end.is_some_and(|e| t < e) => "prune",
            Some(_) => "recover",
            None => "train",
        }
    };
    let mut phase = "";
    let mut progress: Option<Progress> = None;
    let mut phase_start = Instant::now();
    let mut phase_examples = 0usize;
    let distill = plan.distill.clone();

    let evaluate = |model: &T::Model, sparsity: f64, t: u64| -> Result<EvalRecord, EngineError> {
        let metrics = task.evaluate(&model.clone().valid(), &ctx.plain)?;
        Ok(EvalRecord {
            step: t,
            epoch: t as f64 / spe as f64,
            sparsity,
            metrics,
        })
    };

    if step == 0 && first_prune == Some(0) && end > 0 {
        // Pruning starts at once: evaluate the starting (dense) model first.
        let rec = evaluate(&model, 0.0, 0)?;
        let line = format!("eval step 0 (dense start): {}", fmt_metrics(&rec.metrics));
        eprintln!("{line}");
        log_line(&line);
        history.push(rec);
    }
    let session_start = step;
    let mut teacher_cache: Option<TeacherCache> = None;
    let lengths = task.train_lengths();
    let mut order: Option<(u64, Vec<usize>)> = None;
    while step < end {
        let t = step;
        // 1. Masks.
        let mut changed = false;
        for p in &mut prune {
            if p.plan.schedule.is_update_step(t) && p.plan.schedule.is_enforced(t) {
                let target = p.plan.schedule.interpolated(t);
                p.masks = Some(p.compute(&model, target)?);
                changed = true;
            } else if p.masks.is_some() && !p.plan.schedule.is_enforced(t) {
                changed = true;
            }
        }
        for c in &mut constant {
            if t == c.plan.start_step && c.masks.is_none() {
                c.masks = Some(
                    module_masks_from_nonzero(&model, &HfNames, &c.selected).map_err(|source| {
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
        if changed {
            let enforced = enforced_masks(&prune, &constant, t)?;
            model = optim.set_masks(model, enforced)?;
            let line = format!(
                "step {t}: masks updated, sparsity of the pruned parameters {:.2}%",
                optim.masks().sparsity() * 100.0
            );
            log_line(&line);
            log::info!("{line}");
        }
        // 2. Teacher snapshot.
        if let Some(d) = &distill
            && t == d.start_step
            && matches!(teacher, TeacherSource::SelfSnapshot)
        {
            let snapshot = model.clone().valid();
            save_pretrained(&snapshot, &ctx.config, &run_dir.join(TEACHER_DIR)).map_err(
                |source| EngineError::Model {
                    what: "teacher snapshot".into(),
                    source,
                },
            )?;
            log_line(&format!("step {t}: teacher = snapshot of the student"));
            teacher = TeacherSource::Loaded(snapshot);
        }
        let distilling = distill
            .as_ref()
            .filter(|d| t >= d.start_step && d.end_step.is_none_or(|e| t < e));
        // 3. LR.
        let lr = lr_schedule.lr_at(t);
        // 4. Forward / backward.
        let p = phase_of(t);
        if p != phase {
            if let Some(old) = progress.take() {
                old.finish();
            }
            phase = p;
            progress = Some(Progress::new(
                phase,
                t,
                end,
                log_every,
                Some(Box::new(log.try_clone().map_err(io_err(&log_path))?)),
            ));
            phase_start = Instant::now();
            phase_examples = 0;
        }
        ctx.ad.seed(mix(seed, t));
        let epoch = t / spe;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let o = if training.group_by_length {
                length_bucketed_order(&lengths, batch_size, 50, mix(seed, epoch))
            } else {
                epoch_order(n, seed, epoch, true)
            };
            order = Some((epoch, o));
        }
        let order = &order.as_ref().expect("set above").1;
        let first_micro = (t % spe) as usize * accum;
        let micros: Vec<usize> = (first_micro..(first_micro + accum).min(micro_batches)).collect();
        let total_examples: usize = micros
            .iter()
            .map(|&b| batch(order, batch_size, b).len())
            .sum();
        let mut accumulator = GradientsAccumulator::<T::Model>::new();
        let mut loss_sum = 0.0f64;
        for &b in &micros {
            let idx = batch(order, batch_size, b);
            let xb = task.batch(idx, &ctx.ad);
            let outputs = task.outputs(&model, &xb);
            let task_loss = task.loss(&model, &outputs, &xb);
            let loss = match (distilling, &teacher) {
                (Some(d), TeacherSource::Loaded(tm)) => {
                    if teacher_cache.is_none() && task.outputs_cacheable() {
                        teacher_cache = Some(TeacherCache::build(
                            task,
                            tm,
                            &ctx.plain,
                            training.eval_batch_size.unwrap_or(batch_size),
                        ));
                    }
                    let t_out: Vec<(&'static str, Tensor<2>)> = match &teacher_cache {
                        Some(cache) => cache.batch(idx, &ctx.ad),
                        None => {
                            let tb = task.batch(idx, &ctx.plain);
                            task.outputs(tm, &tb)
                                .into_iter()
                                .map(|(k, v)| (k, Tensor::from_data(v.into_data(), &ctx.ad)))
                                .collect()
                        }
                    };
                    let terms: Vec<Tensor<1>> = outputs
                        .iter()
                        .filter(|(k, _)| d.output_keys.iter().any(|o| o == k))
                        .filter_map(|(k, s)| {
                            t_out
                                .iter()
                                .find(|(tk, _)| tk == k)
                                .map(|(_, tv)| kd_loss(s.clone(), tv.clone(), d.temperature))
                        })
                        .collect();
                    combine(task_loss, terms, d.hardness)
                }
                _ => task_loss,
            };
            // Micro-batches are weighted by their size, so accumulation equals one big batch.
            let loss = loss.mul_scalar(idx.len() as f64 / total_examples.max(1) as f64);
            let value = loss.clone().into_scalar::<f64>();
            check_finite_loss(t, value)?;
            loss_sum += value;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            accumulator.accumulate(&model, grads);
        }
        let grads = accumulator.grads();
        model = optim.step(lr, model, grads);
        step += 1;
        phase_examples += total_examples;
        if let Some(pr) = &mut progress {
            let secs = phase_start.elapsed().as_secs_f64().max(1e-9);
            pr.step(StepStats {
                step,
                loss: loss_sum,
                lr,
                sparsity: optim.masks().sparsity(),
                examples_per_sec: phase_examples as f64 / secs,
            });
        }
        // Evaluation and checkpoints.
        let at_end = step == end;
        let eval_now = step.is_multiple_of(eval_every) || at_end || first_prune == Some(step);
        if eval_now {
            let rec = evaluate(&model, optim.masks().sparsity(), step)?;
            let line = format!(
                "eval step {step} (epoch {:.2}) sparsity {:.1}%: {}",
                rec.epoch,
                rec.sparsity * 100.0,
                fmt_metrics(&rec.metrics)
            );
            eprintln!("{line}");
            log_line(&line);
            history.push(rec);
            write_atomic(
                &run_dir.join(HISTORY_FILE),
                &serde_json::to_vec_pretty(&history).expect("history serialises"),
            )?;
        }
        let stopping = ctx
            .opts
            .stop_after
            .is_some_and(|k| step == session_start + k && !at_end);
        if step.is_multiple_of(ckpt_every) || at_end || stopping {
            let state = TrainState {
                step,
                steps_per_epoch: spe,
                seed,
                lr,
                sparsity_targets: prune
                    .iter()
                    .map(|p| {
                        (
                            p.plan.label.clone(),
                            p.plan.schedule.target_at(step).unwrap_or(0.0),
                        )
                    })
                    .collect(),
                recipe_sha256: digest.clone(),
                wall_seconds: wall(&started),
            };
            let pending = store.begin(step)?;
            export_safetensors(&model, &pending.dir.join(MODEL_FILE)).map_err(|source| {
                EngineError::Model {
                    what: "checkpoint".into(),
                    source,
                }
            })?;
            optim.save_state(&pending.dir.join(OPTIM_FILE))?;
            write_atomic(
                &pending.dir.join(crate::run_dir::RESOLVED_RECIPE),
                recipe.resolved_yaml().as_bytes(),
            )?;
            for (i, p) in prune.iter().enumerate() {
                if let Some(m) = &p.masks {
                    save_masks(m, &pending.dir.join(mask_file("prune", i)))?;
                }
            }
            for (i, c) in constant.iter().enumerate() {
                if let Some(m) = &c.masks {
                    save_masks(m, &pending.dir.join(mask_file("constant", i)))?;
                }
            }
            write_atomic(
                &pending.dir.join(HISTORY_FILE),
                &serde_json::to_vec_pretty(&history).expect("history serialises"),
            )?;
            store.commit(pending, &state)?;
        }
        if stopping {
            if let Some(pr) = progress.take() {
                pr.finish();
            }
            log_line(&format!(
                "step {step}: stopped (--stop-after); resume with --resume"
            ));
            return Ok(RunEnd::Stopped { step, total: end });
        }
    }
    if let Some(pr) = progress.take() {
        pr.finish();
    }
    let last = match history.last() {
        Some(r) if r.step == end => r.clone(),
        _ => {
            // A resume of a finished run (or an empty one): evaluate what we have.
            let rec = evaluate(&model, optim.masks().sparsity(), end)?;
            history.push(rec.clone());
            rec
        }
    };
    let dense = first_prune
        .filter(|&s| end > s)
        .and_then(|s| history.iter().rev().find(|r| r.step <= s).cloned());

    // Export.
    let export = recipe.output.as_ref().is_none_or(|o| o.export);
    let inference = model.clone().valid();
    let model_dir = if export {
        let dir = run_dir.join("model");
        let partial = run_dir.join("model.partial");
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(io_err(&partial))?;
        }
        save_pretrained(&inference, &ctx.config, &partial).map_err(|source| {
            EngineError::Model {
                what: "export".into(),
                source,
            }
        })?;
        copy_tokenizer_files(&ctx.files, &partial)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        std::fs::rename(&partial, &dir).map_err(io_err(&dir))?;
        Some(dir)
    } else {
        None
    };

    // Sparsity of the pruned parameters, measured on the final values.
    let pruned_infos: Vec<ParamInfo> = all_params
        .iter()
        .filter(|p| pruned_names.binary_search(&p.name).is_ok())
        .cloned()
        .collect();
    let values =
        read_values(&inference, &HfNames, &pruned_infos).map_err(|source| EngineError::Mask {
            modifier: "final sparsity".into(),
            source,
        })?;
    let report_table = SparsityReport::from_values(&values, Some(optim.masks()), Some(target));
    let (zeros, numel) = values.iter().fold((0usize, 0usize), |(z, n), p| {
        (
            z + p.values.iter().filter(|v| **v == 0.0).count(),
            n + p.values.len(),
        )
    });
    let sparsity = SparsitySummary {
        global: if numel == 0 {
            0.0
        } else {
            zeros as f64 / numel as f64
        },
        target,
        params: report_table
            .params
            .iter()
            .map(|p| (p.name.clone(), p.sparsity))
            .collect(),
    };
    let mut metrics = BTreeMap::from([("dev".to_string(), last.metrics.clone())]);
    if let Some(d) = &dense {
        metrics.insert("dev_dense".to_string(), d.metrics.clone());
    }
    let report = RunReport {
        recipe: recipe.path.display().to_string(),
        model: recipe
            .model
            .as_ref()
            .map(|m| m.source.clone())
            .unwrap_or_default(),
        task: ctx.task_name.clone(),
        device: ctx.opts.device.to_string(),
        steps: end,
        wall_seconds: wall(&started),
        metrics,
        sparsity,
    };
    report.write(&run_dir.join("report.json"))?;
    let table = report_table.to_table();
    let _ = std::fs::write(run_dir.join("sparsity.txt"), &table);
    log_line(&format!(
        "done: {} steps in {}",
        end,
        format_duration(report.wall_seconds)
    ));
    Ok(RunEnd::Finished(Box::new(RunOutcome {
        report,
        dense,
        last,
        main_metric: task.main_metric().to_string(),
        history,
        model_dir,
        sparsity_table: table,
    })))
}

/// The teacher's outputs for every training example, computed once (inference mode, in a
/// fixed batching by length, so the values do not depend on when a run was resumed) and
/// reused every epoch: distillation then costs no teacher forward per step.
struct TeacherCache {
    /// `(key, width, rows)`: row `i` of `rows` (`width` values) belongs to example `i`.
    outputs: Vec<(&'static str, usize, Vec<f32>)>,
}

impl TeacherCache {
    fn build<T: Task>(task: &T, teacher: &T::Model, device: &Device, batch_size: usize) -> Self {
        let n = task.train_len();
        let lengths = task.train_lengths();
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by_key(|&i| (lengths[i], i));
        let mut outputs: Vec<(&'static str, usize, Vec<f32>)> = Vec::new();
        for chunk in idx.chunks(batch_size.max(1)) {
            let b = task.batch(chunk, device);
            for (k, t) in task.outputs(teacher, &b) {
                let width = t.dims()[1];
                let pos = match outputs.iter().position(|(key, _, _)| *key == k) {
                    Some(p) => p,
                    None => {
                        outputs.push((k, width, vec![0.0; n * width]));
                        outputs.len() - 1
                    }
                };
                let rows = &mut outputs[pos].2;
                for (r, v) in chunk.iter().zip(
                    t.into_data()
                        .iter::<f32>()
                        .collect::<Vec<_>>()
                        .chunks(width),
                ) {
                    rows[r * width..(r + 1) * width].copy_from_slice(v);
                }
            }
        }
        Self { outputs }
    }

    fn batch(&self, idx: &[usize], device: &Device) -> Vec<(&'static str, Tensor<2>)> {
        self.outputs
            .iter()
            .map(|(k, width, rows)| {
                let mut flat = Vec::with_capacity(idx.len() * width);
                for &i in idx {
                    flat.extend_from_slice(&rows[i * width..(i + 1) * width]);
                }
                (
                    *k,
                    Tensor::from_data(
                        burn::tensor::TensorData::new(flat, [idx.len(), *width]),
                        device,
                    ),
                )
            })
            .collect()
    }
}

fn enforced_masks(
    prune: &[PruneState],
    constant: &[ConstantState],
    t: u64,
) -> Result<MaskSet, EngineError> {
    let sets = prune
        .iter()
        .filter(|p| p.plan.schedule.is_enforced(t))
        .filter_map(|p| p.masks.clone())
        .chain(
            constant
                .iter()
                .filter(|c| t >= c.plan.start_step && c.plan.end_step.is_none_or(|e| t < e))
                .filter_map(|c| c.masks.clone()),
        );
    union(sets).map_err(|source| EngineError::Mask {
        modifier: "mask union".into(),
        source,
    })
}

/// `accuracy 0.8712 f1 0.8790`.
pub fn fmt_metrics(m: &Metrics) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Tokenizer files copied next to an exported model, when the source has them.
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

fn copy_tokenizer_files(files: &ModelFiles, dest: &Path) -> Result<(), EngineError> {
    let dirs: Vec<&Path> = [
        files.tokenizer_json.as_deref(),
        files.vocab_txt.as_deref(),
        Some(files.config.as_path()),
    ]
    .into_iter()
    .flatten()
    .filter_map(Path::parent)
    .collect();
    for name in TOKENIZER_FILES {
        if let Some(src) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
            let to = dest.join(name);
            std::fs::copy(&src, &to).map_err(io_err(&to))?;
        }
    }
    Ok(())
}

/// Evaluates an exported model directory on the dev split of a recipe's task; returns the
/// metrics and the number of dev examples (questions for SQuAD).
pub fn evaluate_model(
    recipe: &Recipe,
    model_dir: &Path,
    device: DeviceKind,
    base_dir: &Path,
) -> Result<(Metrics, usize), EngineError> {
    let model_sec = recipe
        .model
        .as_ref()
        .ok_or(EngineError::MissingSection("model"))?;
    let data = recipe
        .data
        .as_ref()
        .ok_or(EngineError::MissingSection("data"))?;
    let kind = TaskKind::parse(&data.task)?;
    check_head(kind, model_sec.head)?;
    let plain = device.device()?;
    let spec = format!("--model {}", model_dir.display());
    let files = ModelSource::Local(model_dir.to_path_buf())
        .resolve()
        .map_err(|source| EngineError::Model {
            what: spec.clone(),
            source,
        })?;
    let tokenizer = load_tokenizer(&files, &read_config(&files, &spec)?, &spec)?;
    let eval_batch = recipe
        .training
        .as_ref()
        .map_or(64, |t| t.eval_batch_size.unwrap_or(t.batch_size));
    if let TaskKind::Squad { v2 } = kind {
        let task = QuestionAnsweringTask::load(data, v2, &tokenizer, base_dir, eval_batch)?;
        let (model, _) =
            load_model::<BertForQuestionAnswering>(&files, &plain, &spec, false, |c| c)?;
        return Ok((task.evaluate(&model, &plain)?, task.dev_len()));
    }
    let (model, config) =
        load_model::<BertForSequenceClassification>(&files, &plain, &spec, false, |c| c)?;
    let num_labels = model.num_labels();
    let expected = head_labels(kind, model_sec.num_labels, &config);
    if expected != num_labels {
        return Err(EngineError::Unsupported(format!(
            "{spec} has {num_labels} labels, the task needs {expected}"
        )));
    }
    let splits = load_text_splits(data, kind, Some(num_labels), base_dir)?;
    let task = SequenceClassificationTask::new(
        kind,
        &splits,
        &tokenizer,
        data.max_seq_length.unwrap_or(128),
        num_labels,
        eval_batch,
    )?;
    Ok((task.evaluate(&model, &plain)?, task.dev_len()))
}
