//! The training loop behind `shears run`: one loop for every [`Task`], driven step by step
//! by the recipe's [`Plan`].
//!
//! The loop knows no model family: an [`Architecture`] loads, names, checkpoints and
//! exports the model, a [`Task`] makes batches, outputs, losses and metrics, the
//! [`Modifiers`] keep the masks (each with its [`Pruner`]), a [`StepRule`] turns the
//! gradients of a [`GradientSource`] into new weights, and [`crate::train::sparse`] decides
//! which layers run SparseProp. [`Trainer`] runs them as a short list of phases.
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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::optim::Optimizer;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use shears_models::bert::{BertForQuestionAnswering, BertForSequenceClassification, ModelSource};

use super::TrainError;
use super::bench::StepBench;
use super::checkpoint::{CheckpointError, CheckpointStore, TrainState};
use super::cram::CramStep;
use super::curves::{
    CURVES_FILE, CURVES_PNG_FILE, HISTORY_FILE, RunCurves, RunSchedule, SCHEDULE_FILE, run_panels,
};
use super::grads::GradientSource;
use super::grads::{BatchGradients, Distilling, TaskSampler};
use super::mfac::{MfacConfig, MfacStep};
use super::modifiers::Modifiers;
#[allow(unused_imports)]
use super::modifiers::Pruner;
use super::optim::{OptimizerVisitor, with_optimizer};
use super::order::{batch, batches_per_epoch, epoch_order, mix};
use super::progress::{Progress, StepStats, format_duration};
use super::report::{RunReport, SparsitySummary};
use super::sparse::SparsePolicy;
use super::step::{PlainStep, RecipeRule, StepOutcome, StepRule};
use super::task::{
    Metrics, QuestionAnsweringTask, SequenceClassificationTask, Task, TaskError, TaskKind,
    head_labels, load_text_splits,
};
use super::teacher::Teacher;
use crate::arch::bert::{BertFamily, model_files};
use crate::arch::{ArchError, Architecture};
use crate::data::batch::length_bucketed_order;
use crate::device::{DeviceError, DeviceSpec};
use crate::plot::{ChartFormat, write_chart};
use crate::profile::{PhaseTimes, Recording};
use crate::recipe::Recipe;
use crate::recipe::plan::{Plan, PlanError, plan};
use crate::recipe::sections::OptimizerKind;
use crate::recipe::sections::{HeadKind, TeacherSpec, TrainingSection};
use crate::run_dir::{RunDirError, write_atomic};
use crate::schedule::lr::LrSchedule;
use crate::sparsity::checkpoint::MaskFileError;
use crate::sparsity::enforce::WeightDecay;
use crate::sparsity::enforce::{EnforceError, MaskedOptimizer, OptimStateError};
use crate::sparsity::mask::{MaskError, read_values};
use crate::sparsity::params::list_params;
use crate::sparsity::report::{ReportError, SparsityReport};
use crate::sparsity::selection::{ParamInfo, SelectionError};

/// How to run a recipe.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The run directory (created by [`crate::run_dir::RunDir::prepare`]).
    pub run_dir: PathBuf,
    /// Where to compute.
    pub device: DeviceSpec,
    /// Continue from the latest checkpoint in `run_dir`.
    pub resume: bool,
    /// Relative paths of the recipe (model, data) are resolved against this directory.
    pub base_dir: PathBuf,
    /// Stop after this many steps of this session, with a checkpoint, as a time-boxed
    /// session does; `--resume` continues it.
    pub stop_after: Option<u64>,
    /// Set from outside (the CLI's Ctrl-C/SIGTERM handler) to stop at the next step
    /// boundary with a checkpoint; the run then ends [`RunEnd::Stopped`] with
    /// `interrupted: true`.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// Why a session stops before the end of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// [`EngineOptions::stop_after`] steps were taken.
    StopAfter,
    /// [`EngineOptions::interrupt`] was set.
    Interrupted,
}

/// How [`run`] ended.
#[derive(Debug, Clone)]
pub enum RunEnd {
    /// The recipe ran to its end.
    Finished(Box<RunOutcome>),
    /// [`EngineOptions::stop_after`] or [`EngineOptions::interrupt`] stopped it; the
    /// checkpoint of `step` is saved.
    Stopped {
        /// Optimizer steps taken so far.
        step: u64,
        /// Steps of the whole run.
        total: u64,
        /// Whether [`EngineOptions::interrupt`] stopped it (else `stop_after`).
        interrupted: bool,
        /// Mean wall seconds of an optimizer step in this session (its first step, a
        /// warm-up, left out when there were others; evaluations and checkpoints excluded).
        step_seconds: f64,
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
    /// The learning rate of the step just taken (none before the first step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// The mean training loss over the steps since the previous evaluation (none if no
    /// step was taken since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
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
    /// The recipe's head does not fit its task.
    #[error("model.head: {task} needs `head: {needs}` (the recipe says `{found}`)")]
    Head {
        /// The task.
        task: TaskKind,
        /// The head it needs.
        needs: &'static str,
        /// The recipe's head.
        found: &'static str,
    },
    /// The data or the metrics failed.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A model (student, teacher, checkpoint or export) could not be loaded or saved.
    #[error(transparent)]
    Model(#[from] ArchError),
    /// The recipe cannot be turned into step schedules.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A parameter pattern is invalid.
    #[error(transparent)]
    Selection(#[from] SelectionError),
    /// A modifier selects no parameter of the model.
    #[error(
        "{modifier}: its `params` match no parameter of the model (patterns: {patterns}); the model's closest parameter names: {closest}"
    )]
    NothingSelected {
        /// The modifier.
        modifier: String,
        /// Its patterns.
        patterns: String,
        /// A few real parameter names closest to the patterns.
        closest: String,
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
    /// An inverse Fisher could not be built (OBS).
    #[error("{modifier}: {source}")]
    Fisher {
        /// The modifier or command.
        modifier: String,
        /// The cause.
        #[source]
        source: crate::fisher::FisherError,
    },
    /// Masks could not be applied.
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    /// `optimizer.weight_decay` / `optimizer.no_decay` are invalid.
    #[error("optimizer: {0}")]
    WeightDecay(#[from] crate::sparsity::enforce::WeightDecayError),
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
    /// The checkpoint of `step` could not be written (a full or read-only disk): the run
    /// stops; `kept` says which earlier checkpoint `--resume` continues from.
    #[error("the checkpoint of step {step} could not be written: {source}; {kept}")]
    CheckpointWrite {
        /// The step whose checkpoint failed.
        step: u64,
        /// What is left to resume from.
        kept: String,
        /// What failed.
        source: Box<EngineError>,
    },
    /// A run-directory file could not be written.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// The device is not compiled in.
    #[error(transparent)]
    Device(#[from] DeviceError),
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
    /// Recipe settings that cannot go together in a run.
    #[error("{field}: {message}")]
    Config {
        /// The recipe field.
        field: &'static str,
        /// What is wrong and how to fix it.
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
    /// An export could not be written.
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
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

// ---------------------------------------------------------------------------------------
// Task dispatch: the one place that maps a recipe's task to a model family and a task.

/// Receives the model family and the task a recipe names.
pub(crate) trait TaskVisitor {
    /// What the visit produces.
    type Output;
    /// Called once with the recipe's family and task.
    fn visit<A: Architecture, T: Task<Model = A::Model>>(
        self,
        arch: A,
        task: T,
    ) -> Result<Self::Output, EngineError>;
}

/// Which model a task is prepared for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ModelAt<'a> {
    /// The recipe's `model.source` (training).
    Recipe,
    /// An exported model directory or weights file (`shears eval`).
    Export(&'a Path),
}

fn head_name(h: HeadKind) -> &'static str {
    match h {
        HeadKind::Classification => "classification",
        HeadKind::Qa => "qa",
        HeadKind::None => "none",
    }
}

/// The head a task needs.
fn check_head(kind: TaskKind, head: HeadKind) -> Result<(), EngineError> {
    let needs = match kind {
        TaskKind::Squad { .. } => HeadKind::Qa,
        _ => HeadKind::Classification,
    };
    if head == needs {
        Ok(())
    } else {
        Err(EngineError::Head {
            task: kind,
            needs: head_name(needs),
            found: head_name(head),
        })
    }
}

/// Builds the family and the task of `recipe` (files relative to `base`) and hands them to
/// `visitor`.
pub(crate) fn dispatch<V: TaskVisitor>(
    recipe: &Recipe,
    base: &Path,
    at: ModelAt<'_>,
    visitor: V,
) -> Result<V::Output, EngineError> {
    let model_sec = recipe
        .model
        .as_ref()
        .ok_or(EngineError::MissingSection("model"))?;
    let data = recipe
        .data
        .as_ref()
        .ok_or(EngineError::MissingSection("data"))?;
    let kind = data.task;
    check_head(kind, model_sec.head)?;
    let eval_batch = recipe
        .training
        .as_ref()
        .map_or(64, |t| t.eval_batch_size.unwrap_or(t.batch_size));
    if kind == TaskKind::ImageClassification {
        return crate::arch::resnet::dispatch_image(recipe, base, at, eval_batch, visitor);
    }
    let (files, what) = match at {
        ModelAt::Recipe => {
            let spec = model_sec.source.as_deref().ok_or_else(|| {
                EngineError::Model(ArchError::Config {
                    field: "source",
                    message: "BERT models need a source (a model directory or hf:org/name)".into(),
                })
            })?;
            (
                model_files(base, spec, "model.source")?,
                "model.source".to_string(),
            )
        }
        ModelAt::Export(dir) => {
            let what = format!("--model {}", dir.display());
            let files = ModelSource::Local(dir.to_path_buf())
                .resolve()
                .map_err(|source| ArchError::Bert {
                    what: what.clone(),
                    source: Box::new(source),
                })?;
            (files, what)
        }
    };
    if let TaskKind::Squad { v2 } = kind {
        let arch = BertFamily::<BertForQuestionAnswering>::open(files, &what, |c| c)?;
        let task = QuestionAnsweringTask::load(data, v2, arch.tokenizer(), base, eval_batch)?;
        return visitor.visit(arch, task);
    }
    let probe = BertFamily::<BertForSequenceClassification>::open(files.clone(), &what, |c| c)?;
    let num_labels = head_labels(kind, model_sec.num_labels, probe.config());
    if let ModelAt::Export(_) = at
        && probe.config().num_labels() != num_labels
    {
        return Err(EngineError::Model(ArchError::TeacherHead {
            what,
            expected: num_labels,
            found: probe.config().num_labels(),
        }));
    }
    let splits = load_text_splits(data, kind, Some(num_labels), base)?;
    let regression = kind.is_regression();
    let arch = BertFamily::<BertForSequenceClassification>::open(files, &what, move |c| {
        let mut c = c.with_num_labels(num_labels);
        c.problem_type = Some(if regression {
            shears_models::bert::ProblemType::Regression
        } else {
            shears_models::bert::ProblemType::SingleLabelClassification
        });
        c
    })?;
    let task = SequenceClassificationTask::new(
        kind,
        &splits,
        arch.tokenizer(),
        data.max_seq_length.unwrap_or(128),
        num_labels,
        eval_batch,
    )?;
    visitor.visit(arch, task)
}

// ---------------------------------------------------------------------------------------
// Training.

/// Runs a recipe in `opts.run_dir` (prepared by the caller) and returns what it produced.
pub fn run(recipe: &Recipe, opts: &EngineOptions) -> Result<RunEnd, EngineError> {
    if recipe.training.is_none() {
        return Err(EngineError::MissingSection("training"));
    }
    dispatch(
        recipe,
        &opts.base_dir,
        ModelAt::Recipe,
        Train { recipe, opts },
    )
}

/// Times `steps` optimizer steps of `recipe` (after `warmup` untimed ones), starting from
/// the masks its modifiers set at step 0, in the scratch run directory `opts.run_dir`
/// (`shears bench train`; [`super::bench`] prepares the recipe). With `export`, the model
/// before the first step is exported there in its family's layout.
pub fn bench_steps(
    recipe: &Recipe,
    opts: &EngineOptions,
    warmup: u64,
    steps: u64,
    export: Option<&Path>,
) -> Result<StepBench, EngineError> {
    dispatch(
        recipe,
        &opts.base_dir,
        ModelAt::Recipe,
        Bench {
            recipe,
            opts,
            warmup,
            steps,
            export,
        },
    )
}

struct Bench<'a> {
    recipe: &'a Recipe,
    opts: &'a EngineOptions,
    warmup: u64,
    steps: u64,
    export: Option<&'a Path>,
}

impl TaskVisitor for Bench<'_> {
    type Output = StepBench;

    fn visit<A: Architecture, T: Task<Model = A::Model>>(
        self,
        arch: A,
        task: T,
    ) -> Result<StepBench, EngineError> {
        let optimizer = self
            .recipe
            .optimizer
            .clone()
            .ok_or(EngineError::MissingSection("optimizer"))?;
        struct Start<'a, A, T> {
            bench: Bench<'a>,
            arch: A,
            task: T,
        }
        impl<A: Architecture, T: Task<Model = A::Model>> OptimizerVisitor for Start<'_, A, T> {
            type Output = Result<StepBench, EngineError>;

            fn visit<O: Optimizer>(self, optim: MaskedOptimizer<O>) -> Self::Output {
                let b = self.bench;
                let (model, trainer) =
                    Trainer::setup(b.recipe, b.opts, self.arch, &self.task, optim)?;
                trainer.bench(model, b.warmup, b.steps, b.export)
            }
        }
        with_optimizer(
            &optimizer,
            Start {
                bench: self,
                arch,
                task,
            },
        )?
    }
}

/// How many optimizer steps a recipe's run takes on its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepPlan {
    /// Training examples (after `max_train_examples`).
    pub train_examples: usize,
    /// Optimizer steps per epoch (batches over gradient accumulation).
    pub steps_per_epoch: u64,
    /// Optimizer steps of the run (the recipe's epochs, capped by `training.max_steps`).
    pub total_steps: u64,
}

/// Optimizer steps per epoch over `train_len` examples: batches over gradient accumulation.
fn steps_per_epoch(train_len: usize, training: &crate::recipe::sections::TrainingSection) -> u64 {
    batches_per_epoch(train_len, training.batch_size.max(1))
        .div_ceil(training.gradient_accumulation_steps.max(1)) as u64
}

/// Loads the recipe's training data (not the model's weights) and counts the steps.
pub fn step_plan(recipe: &Recipe, base: &Path) -> Result<StepPlan, EngineError> {
    let training = recipe
        .training
        .as_ref()
        .ok_or(EngineError::MissingSection("training"))?;
    struct Count<'a> {
        recipe: &'a Recipe,
        training: &'a crate::recipe::sections::TrainingSection,
    }
    impl TaskVisitor for Count<'_> {
        type Output = StepPlan;
        fn visit<A: Architecture, T: Task<Model = A::Model>>(
            self,
            _arch: A,
            task: T,
        ) -> Result<StepPlan, EngineError> {
            let spe = steps_per_epoch(task.train_len(), self.training);
            let total = plan(self.recipe, spe)?.total_steps;
            Ok(StepPlan {
                train_examples: task.train_len(),
                steps_per_epoch: spe,
                total_steps: self.training.max_steps.map_or(total, |m| m.min(total)),
            })
        }
    }
    dispatch(recipe, base, ModelAt::Recipe, Count { recipe, training })
}

struct Train<'a> {
    recipe: &'a Recipe,
    opts: &'a EngineOptions,
}

impl TaskVisitor for Train<'_> {
    type Output = RunEnd;

    fn visit<A: Architecture, T: Task<Model = A::Model>>(
        self,
        arch: A,
        task: T,
    ) -> Result<RunEnd, EngineError> {
        let optimizer = self
            .recipe
            .optimizer
            .clone()
            .ok_or(EngineError::MissingSection("optimizer"))?;
        with_optimizer(
            &optimizer,
            StartTrainer {
                recipe: self.recipe,
                opts: self.opts,
                arch,
                task,
            },
        )?
    }
}

struct StartTrainer<'a, A, T> {
    recipe: &'a Recipe,
    opts: &'a EngineOptions,
    arch: A,
    task: T,
}

impl<A: Architecture, T: Task<Model = A::Model>> OptimizerVisitor for StartTrainer<'_, A, T> {
    type Output = Result<RunEnd, EngineError>;

    fn visit<O: Optimizer>(self, optim: MaskedOptimizer<O>) -> Self::Output {
        let (model, mut trainer) =
            Trainer::setup(self.recipe, self.opts, self.arch, &self.task, optim)?;
        let model = trainer.resume(model)?;
        trainer.train(model)
    }
}

const MODEL_FILE: &str = "model.safetensors";
const OPTIM_FILE: &str = "optimizer.safetensors";
const TEACHER_DIR: &str = "teacher-self";

/// Appends lines to `train.log`.
struct RunLog {
    file: std::fs::File,
    path: PathBuf,
}

impl RunLog {
    fn open(path: PathBuf) -> Result<Self, EngineError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Self { file, path })
    }

    fn line(&mut self, line: &str) {
        let _ = writeln!(self.file, "{line}");
    }

    fn handle(&self) -> Result<Box<dyn Write + Send>, EngineError> {
        Ok(Box::new(self.file.try_clone().map_err(io_err(&self.path))?))
    }
}

/// The progress bar of the current phase (`dense`, `prune`, `recover`, `train`).
struct Phase {
    name: &'static str,
    progress: Option<Progress>,
    started: Instant,
    examples: usize,
}

/// The autodiff handles of the data-parallel devices other than the main one
/// (`training.devices[1..]`), checking that the list starts with the run's device `main`,
/// names each device once, and that every device exists. `shears run` calls it before it
/// creates the run directory, so a bad list leaves nothing behind.
pub fn data_parallel_replicas(
    main: DeviceSpec,
    training: &TrainingSection,
) -> Result<Vec<Device>, EngineError> {
    let Some(devices) = training.devices.as_deref() else {
        return Ok(Vec::new());
    };
    let config = |message: String| EngineError::Config {
        field: "training.devices",
        message,
    };
    match devices.first() {
        None => {
            return Err(config(
                "the list is empty: name at least one device, or remove the key".into(),
            ));
        }
        Some(first) if *first != main => {
            return Err(config(format!(
                "the list starts with `{first}` but the run's device is `{main}`: the first device is the main one (pass `--devices` instead of `--device`, or make them agree)"
            )));
        }
        Some(_) => {}
    }
    for (i, d) in devices.iter().enumerate() {
        if devices[..i].contains(d) {
            return Err(config(format!("`{d}` is named twice")));
        }
    }
    devices[1..]
        .iter()
        .map(|d| Ok(d.device()?.autodiff()))
        .collect()
}

/// One training run: the recipe's plan, the model family and task, the masking modifiers,
/// the optimizer and step rule, the teacher, and the run directory's state.
struct Trainer<'a, A: Architecture, T: Task<Model = A::Model>, O: Optimizer> {
    recipe: &'a Recipe,
    opts: &'a EngineOptions,
    training: &'a TrainingSection,
    arch: A,
    task: &'a T,
    plain: Device,
    ad: Device,
    /// Data parallel: the other devices' autodiff handles (`training.devices[1..]`).
    replicas: Vec<Device>,
    /// Where the teacher runs (`model.teacher_device`, default the training device).
    teacher_plain: Device,
    plan: Plan,
    lr: LrSchedule,
    spe: u64,
    end: u64,
    accum: usize,
    batch_size: usize,
    micro_batches: usize,
    digest: String,
    all_params: Vec<ParamInfo>,
    modifiers: Modifiers<A::Model>,
    optim: MaskedOptimizer<O>,
    rule: RecipeRule<A::Model>,
    sparse: SparsePolicy,
    teacher: Teacher<A::Model>,
    store: CheckpointStore,
    history: Vec<EvalRecord>,
    /// Sum and count of the training losses since the last evaluation (checkpointed, so
    /// a resumed run reports the same means).
    loss_sum: f64,
    loss_count: u64,
    /// Wall seconds and count of this session's optimizer steps after its first, and the
    /// first's (a warm-up).
    step_time: (f64, u64),
    first_step_seconds: f64,
    step: u64,
    session_start: u64,
    wall_before: f64,
    started: Instant,
    log: RunLog,
    phase: Phase,
    order: Option<(u64, Vec<usize>)>,
    lengths: Vec<usize>,
    epoch_started: Instant,
    epoch_examples: usize,
}

impl EngineError {
    /// [`EngineError::NothingSelected`] for `modifier`'s `patterns` over the model's
    /// parameters `all`, naming the real parameters closest to the patterns.
    pub fn nothing_selected(modifier: &str, patterns: &[String], all: &[ParamInfo]) -> Self {
        let mut closest: Vec<String> = Vec::new();
        for p in patterns {
            for n in crate::suggest::closest_names(p, all.iter().map(|i| i.name.as_str()), 3) {
                if !closest.contains(&n) {
                    closest.push(n);
                }
            }
        }
        EngineError::NothingSelected {
            modifier: modifier.to_string(),
            patterns: patterns.join(", "),
            closest: closest
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

impl<'a, A, T, O> Trainer<'a, A, T, O>
where
    A: Architecture,
    T: Task<Model = A::Model>,
    O: Optimizer,
{
    /// Loads the student (and a teacher directory), plans the schedules and prepares the
    /// modifiers, the optimizer and the run directory.
    fn setup(
        recipe: &'a Recipe,
        opts: &'a EngineOptions,
        arch: A,
        task: &'a T,
        optim: MaskedOptimizer<O>,
    ) -> Result<(A::Model, Self), EngineError> {
        let training = recipe
            .training
            .as_ref()
            .ok_or(EngineError::MissingSection("training"))?;
        let plain = opts.device.device()?;
        let ad = plain.clone().autodiff();
        let replicas = data_parallel_replicas(opts.device, training)?;
        let teacher_plain = match recipe.model.as_ref().and_then(|m| m.teacher_device) {
            Some(spec) => spec.device()?,
            None => plain.clone(),
        };
        // Fresh weights (a new head, a model trained from scratch) are drawn from the seed.
        let rng = crate::rng::seeded(&plain, training.seed);
        let model = arch.load_student(&ad)?;
        drop(rng);
        let teacher = match recipe.model.as_ref().and_then(|m| m.teacher.as_ref()) {
            None => Teacher::None,
            Some(TeacherSpec::SelfSnapshot) => Teacher::PendingSnapshot,
            Some(TeacherSpec::Source(spec)) => Teacher::loaded(arch.load_teacher(
                &crate::arch::resolve_path(&opts.base_dir, spec),
                &teacher_plain,
            )?),
        };
        let accum = training.gradient_accumulation_steps.max(1);
        let batch_size = training.batch_size.max(1);
        let micro_batches = batches_per_epoch(task.train_len(), batch_size);
        let spe = steps_per_epoch(task.train_len(), training);
        let plan: Plan = plan(recipe, spe)?;
        let lr = plan.lr.clone().ok_or(PlanError::NoLearningRate)?;
        let end = training
            .max_steps
            .map_or(plan.total_steps, |m| m.min(plan.total_steps));
        let naming = arch.naming();
        let all_params = list_params(&model, &naming);
        let modifiers = Modifiers::new(&plan, &all_params)?;
        let mut optim = optim.with_naming(naming);
        if let Some(max) = training.max_grad_norm {
            optim = optim.with_max_grad_norm(max);
        }
        let optimizer = recipe
            .optimizer
            .as_ref()
            .ok_or(EngineError::MissingSection("optimizer"))?;
        let rule = match (plan.cram.clone(), optimizer.name) {
            (Some(_), OptimizerKind::Mfac) => {
                return Err(EngineError::Config {
                    field: "optimizer.name",
                    message: "CrAM's base optimizer cannot be mfac (two preconditioned passes are not defined); use sgd, adam or adamw".into(),
                });
            }
            (None, OptimizerKind::Mfac) => RecipeRule::Mfac(Box::new(MfacStep::new(MfacConfig {
                num_grads: optimizer.num_grads.unwrap_or(1024),
                damp: optimizer.damp.unwrap_or(1e-5),
                momentum: optimizer.momentum,
                decay: WeightDecay::from_optimizer_section(optimizer)?,
            }))),
            (None, _) => {
                if optimizer.num_grads.is_some() || optimizer.damp.is_some() {
                    return Err(EngineError::Config {
                        field: "optimizer",
                        message: "`num_grads` and `damp` are M-FAC settings: set `name: mfac` or remove them".into(),
                    });
                }
                RecipeRule::Plain(PlainStep)
            }
            (Some(c), _) => RecipeRule::Cram(Box::new(CramStep::new(
                c,
                &all_params,
                training.seed,
                A::freeze_batch_stats,
            )?)),
        };
        let run_dir = &opts.run_dir;
        let sparse = SparsePolicy::from_recipe(training);
        let trainer = Self {
            recipe,
            opts,
            training,
            task,
            plain,
            ad,
            replicas,
            teacher_plain,
            spe,
            end,
            accum,
            batch_size,
            micro_batches,
            digest: recipe_digest(recipe),
            all_params,
            modifiers,
            optim,
            rule,
            sparse,
            teacher,
            store: CheckpointStore::new(run_dir, 2),
            history: Vec::new(),
            loss_sum: 0.0,
            loss_count: 0,
            step_time: (0.0, 0),
            first_step_seconds: 0.0,
            step: 0,
            session_start: 0,
            wall_before: 0.0,
            started: Instant::now(),
            log: RunLog::open(run_dir.join("train.log"))?,
            phase: Phase {
                name: "",
                progress: None,
                started: Instant::now(),
                examples: 0,
            },
            order: None,
            lengths: task.train_lengths(),
            epoch_started: Instant::now(),
            epoch_examples: 0,
            lr,
            plan,
            arch,
        };
        Ok((model, trainer))
    }

    fn resume_error(&self, message: impl Into<String>) -> EngineError {
        EngineError::Resume {
            dir: self.opts.run_dir.clone(),
            message: message.into(),
        }
    }

    /// With `--resume`: weights, modifier states, masks, optimizer and rule state, history
    /// and the teacher snapshot from the latest complete checkpoint.
    fn resume(&mut self, mut model: A::Model) -> Result<A::Model, EngineError> {
        if !self.opts.resume {
            return Ok(model);
        }
        let Some((dir, state)) = self.store.latest()? else {
            return Err(self.resume_error("it has no complete checkpoint"));
        };
        if state.recipe_sha256 != self.digest {
            return Err(self.resume_error(
                "the recipe (after --set overrides) differs from the one the run started with; \
                 resume with the same recipe and overrides",
            ));
        }
        if state.steps_per_epoch != self.spe {
            return Err(self.resume_error(format!(
                "the data give {} steps per epoch, the checkpoint {}: the data changed",
                self.spe, state.steps_per_epoch
            )));
        }
        model = self.arch.load_weights(model, &dir.join(MODEL_FILE))?;
        for m in self.modifiers.states_mut() {
            m.restore(&dir)?;
        }
        let enforced = self.modifiers.enforced(state.step)?;
        model = self.optim.set_masks(model, enforced)?;
        self.optim.load_state(&model, &dir.join(OPTIM_FILE))?;
        self.rule.load_state(&dir)?;
        let h = dir.join(HISTORY_FILE);
        self.history = serde_json::from_slice(&std::fs::read(&h).map_err(io_err(&h))?)
            .map_err(|e| self.resume_error(format!("{}: {e}", h.display())))?;
        if matches!(self.teacher, Teacher::PendingSnapshot)
            && let Some(d) = &self.plan.distill
            && state.step > d.start_step
        {
            let tdir = self.opts.run_dir.join(TEACHER_DIR);
            let t = self
                .arch
                .load(&tdir.display().to_string(), &self.teacher_plain)?;
            self.teacher = Teacher::loaded(t);
        }
        self.step = state.step;
        self.wall_before = state.wall_seconds;
        self.loss_sum = state.loss_sum;
        self.loss_count = state.loss_count;
        model = self.switch_sparse(model, state.step);
        eprintln!(
            "resuming {} at step {}/{} (epoch {:.2})",
            self.opts.run_dir.display(),
            self.step,
            self.end,
            self.step as f64 / self.spe as f64
        );
        Ok(model)
    }

    fn wall(&self) -> f64 {
        self.wall_before + self.started.elapsed().as_secs_f64()
    }

    fn evaluate(&self, model: &A::Model, t: u64) -> Result<EvalRecord, EngineError> {
        let metrics = self.task.evaluate(&model.valid(), &self.plain)?;
        Ok(EvalRecord {
            step: t,
            epoch: t as f64 / self.spe as f64,
            sparsity: self.optim.masks().sparsity(),
            metrics,
            lr: (t > 0).then(|| self.lr.lr_at(t - 1)),
            train_loss: (self.loss_count > 0).then(|| self.loss_sum / self.loss_count as f64),
        })
    }

    /// The phases of the loop, from the current step to the end.
    fn train(mut self, mut model: A::Model) -> Result<RunEnd, EngineError> {
        self.session_start = self.step;
        self.write_schedule()?;
        self.started = Instant::now();
        self.epoch_started = self.started;
        if self.step == 0 && self.modifiers.first_prune() == Some(0) && self.end > 0 {
            // Pruning starts at once: evaluate the starting (dense) model first.
            let rec = self.evaluate(&model, 0)?;
            self.log_eval(format!(
                "eval step 0 (dense start): {}",
                fmt_metrics(&rec.metrics)
            ));
            self.history.push(rec);
        }
        while self.step < self.end {
            let t = self.step;
            model = self.update_masks(model, t)?;
            self.snapshot_teacher(&model, t)?;
            model = self.train_step(model, t)?;
            if self.step.is_multiple_of(self.spe) {
                self.log_epoch_time();
            }
            if self.step == self.end {
                // The exported model's BatchNorm statistics, re-estimated if asked.
                model = self.recalibrate(model, self.end);
            }
            self.evaluate_if_due(&model)?;
            if let Some(stop) = self.checkpoint_if_due(&model)? {
                self.finish_phase();
                let interrupted = stop == Stop::Interrupted;
                self.log.line(&format!(
                    "step {}: stopped ({}), checkpoint saved; resume with --resume",
                    self.step,
                    if interrupted {
                        "interrupted"
                    } else {
                        "--stop-after"
                    }
                ));
                let (sum, n) = self.step_time;
                return Ok(RunEnd::Stopped {
                    step: self.step,
                    total: self.end,
                    interrupted,
                    step_seconds: if n > 0 {
                        sum / n as f64
                    } else {
                        self.first_step_seconds
                    },
                });
            }
        }
        self.finish_phase();
        self.finish(model)
    }

    /// `epoch k: 5m38s (148.2 ex/s), 18 layers on SparseProp`: the wall time of every
    /// epoch trained in this session, so dense and sparse epochs can be compared.
    fn log_epoch_time(&mut self) {
        let now = Instant::now();
        let secs = now.duration_since(self.epoch_started).as_secs_f64();
        let examples = std::mem::take(&mut self.epoch_examples);
        self.epoch_started = now;
        if self.step - self.session_start < self.spe {
            return; // a partial epoch (resumed mid-epoch)
        }
        let line = format!(
            "epoch {}: {} ({:.1} ex/s), {} layers on SparseProp",
            self.step / self.spe,
            format_duration(secs),
            examples as f64 / secs.max(1e-9),
            self.sparse.active_layers()
        );
        self.log.line(&line);
        log::info!("{line}");
    }

    fn log_eval(&mut self, line: String) {
        eprintln!("{line}");
        self.log.line(&line);
    }

    fn finish_phase(&mut self) {
        if let Some(pr) = self.phase.progress.take() {
            pr.finish();
        }
    }

    /// Phase 1: modifiers update their masks; the union goes to the optimizer, which zeroes
    /// the pruned weights; SparseProp is re-packed on the new patterns.
    fn update_masks(&mut self, model: A::Model, t: u64) -> Result<A::Model, EngineError> {
        let naming = self.arch.naming();
        let (model, changed) = {
            let mut sampler =
                TaskSampler::new(self.task, &self.ad, self.training.seed, A::norm_in_eval);
            self.modifiers.update(t, model, &naming, &mut sampler)?
        };
        if !changed {
            return Ok(model);
        }
        let enforced = self.modifiers.enforced(t)?;
        let model = self.optim.set_masks(model, enforced)?;
        let line = format!(
            "step {t}: masks updated, sparsity of the pruned parameters {:.2}%",
            self.optim.masks().sparsity() * 100.0
        );
        self.log.line(&line);
        log::info!("{line}");
        let model = self.recalibrate(model, t);
        Ok(self.switch_sparse(model, t))
    }

    /// BatchNorm re-calibration (`training.bn_recalibration_batches`) on the first batches
    /// of step `t`'s epoch order: the statistics are a function of the weights and the step
    /// only, so a resumed run recomputes the same ones.
    fn recalibrate(&mut self, mut model: A::Model, t: u64) -> A::Model {
        let Some(n) = self.training.bn_recalibration_batches.filter(|&n| n > 0) else {
            return model;
        };
        if !self.arch.begin_recalibration(&mut model, None) {
            return model;
        }
        self.micro_batch_indices(t);
        let epoch = t / self.spe;
        let order = self
            .order
            .as_ref()
            .expect("set by micro_batch_indices")
            .1
            .clone();
        let batches = batches_per_epoch(order.len(), self.batch_size).min(n);
        for b in 0..batches {
            let xb = self
                .task
                .batch(batch(&order, self.batch_size, b), epoch, &self.ad);
            let _ = self.task.outputs(&model, &xb);
        }
        self.arch.end_recalibration(&mut model);
        self.log.line(&format!(
            "step {t}: BatchNorm statistics re-estimated over {batches} training batches"
        ));
        model
    }

    /// Re-decides which layers run SparseProp (after a mask change or a resume).
    fn switch_sparse(&mut self, mut model: A::Model, t: u64) -> A::Model {
        if let Some(line) = self.sparse.apply(&self.arch, &mut model, &self.ad, t) {
            self.log.line(&line);
            log::info!("{line}");
        }
        model
    }

    /// Phase 2: at the distillation start with `teacher: self`, the student is snapshotted
    /// (frozen, inference mode) and saved so that a resume reloads the same teacher.
    fn snapshot_teacher(&mut self, model: &A::Model, t: u64) -> Result<(), EngineError> {
        if let Some(d) = &self.plan.distill
            && t == d.start_step
            && matches!(self.teacher, Teacher::PendingSnapshot)
        {
            let snapshot = model.valid().to_device(&self.teacher_plain);
            self.arch
                .export(&snapshot, &self.opts.run_dir.join(TEACHER_DIR))?;
            self.log
                .line(&format!("step {t}: teacher = snapshot of the student"));
            self.teacher = Teacher::loaded(snapshot);
        }
        Ok(())
    }

    /// The example indices of the micro-batches of step `t` (from the seeded order of its
    /// epoch).
    fn micro_batch_indices(&mut self, t: u64) -> Vec<Vec<usize>> {
        let epoch = t / self.spe;
        let seed = self.training.seed;
        if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let o = if self.training.group_by_length {
                length_bucketed_order(&self.lengths, self.batch_size, 50, mix(seed, epoch))
            } else {
                epoch_order(self.task.train_len(), seed, epoch, true)
            };
            self.order = Some((epoch, o));
        }
        let order = &self.order.as_ref().expect("set above").1;
        let first = (t % self.spe) as usize * self.accum;
        (first..(first + self.accum).min(self.micro_batches))
            .map(|b| batch(order, self.batch_size, b).to_vec())
            .collect()
    }

    /// Phase 3: one optimizer step at the plan's LR, through the step rule.
    fn train_step(&mut self, model: A::Model, t: u64) -> Result<A::Model, EngineError> {
        let timer = Instant::now();
        let lr = self.lr.lr_at(t);
        self.enter_phase(t)?;
        let (model, outcome) = self.one_step(model, t)?;
        let secs = timer.elapsed().as_secs_f64();
        if self.step == self.session_start {
            self.first_step_seconds = secs;
        } else {
            self.step_time.0 += secs;
            self.step_time.1 += 1;
        }
        self.step += 1;
        self.loss_sum += outcome.loss;
        self.loss_count += 1;
        self.phase.examples += outcome.examples;
        self.epoch_examples += outcome.examples;
        let secs = self.phase.started.elapsed().as_secs_f64().max(1e-9);
        let stats = StepStats {
            step: self.step,
            loss: outcome.loss,
            lr,
            sparsity: self.optim.masks().sparsity(),
            examples_per_sec: self.phase.examples as f64 / secs,
        };
        if let Some(pr) = &mut self.phase.progress {
            pr.step(stats);
        }
        Ok(model)
    }

    /// Optimizer step `t` on its micro-batches (with distillation while it is active),
    /// through the step rule.
    fn one_step(
        &mut self,
        model: A::Model,
        t: u64,
    ) -> Result<(A::Model, StepOutcome), EngineError> {
        let lr = self.lr.lr_at(t);
        let micro = self.micro_batch_indices(t);
        let distilling = self
            .plan
            .distill
            .as_ref()
            .filter(|d| t >= d.start_step && d.end_step.is_none_or(|e| t < e));
        let cache_batch = self.training.eval_batch_size.unwrap_or(self.batch_size);
        let mut source = BatchGradients {
            task: self.task,
            device: &self.ad,
            seed: mix(self.training.seed, t),
            step: t,
            epoch: t / self.spe,
            micro_batches: micro.iter().map(Vec::as_slice).collect(),
            distill: distilling.map(|plan| Distilling {
                plan,
                teacher: &mut self.teacher,
                plain: &self.teacher_plain,
                cache_batch,
            }),
            replicas: &self.replicas,
            main: &self.plain,
        };
        self.rule.step(
            t,
            model,
            &mut source as &mut dyn GradientSource<_>,
            &mut self.optim,
            lr,
        )
    }

    /// `shears bench train`: the masks of step 0, then `warmup` untimed steps and `steps`
    /// steps timed as a whole and per phase ([`crate::profile`]); with `export`, the model
    /// before the masks is exported there first.
    fn bench(
        mut self,
        mut model: A::Model,
        warmup: u64,
        steps: u64,
        export: Option<&Path>,
    ) -> Result<StepBench, EngineError> {
        if let Some(dir) = export {
            self.arch.export(&model.valid(), dir)?;
        }
        model = self.update_masks(model, 0)?;
        let gpu = (!self.opts.device.is_cpu()).then(|| self.ad.clone());
        let mut out = StepBench {
            family: self.arch.name(),
            sparsity: self.optim.masks().sparsity(),
            sparse_layers: self.sparse.active_layers(),
            step_seconds: Vec::new(),
            examples: 0,
            phases: PhaseTimes::default(),
            ops: Default::default(),
            batch_shapes: Vec::new(),
        };
        for t in 0..warmup + steps {
            if t < warmup {
                model = self.one_step(model, t)?.0;
                continue;
            }
            let epoch = t / self.spe;
            let shapes = self
                .micro_batch_indices(t)
                .iter()
                .map(|idx| {
                    self.task
                        .batch_shape(&self.task.batch(idx, epoch, &self.plain))
                })
                .collect();
            out.batch_shapes.push(shapes);
            if let Some(d) = &gpu {
                let _ = d.sync();
            }
            let recording = Recording::start(gpu.clone());
            let ops = shears_models::op_timing::Recording::start();
            let timer = Instant::now();
            let (m, outcome) = self.one_step(model, t)?;
            if let Some(d) = &gpu {
                let _ = d.sync();
            }
            out.step_seconds.push(timer.elapsed().as_secs_f64());
            out.phases.add(&recording.finish());
            for (name, t) in ops.finish() {
                let o = out.ops.entry(name.to_string()).or_default();
                o.seconds += t.seconds;
                o.calls += t.calls;
            }
            out.examples += outcome.examples;
            model = m;
        }
        Ok(out)
    }

    fn enter_phase(&mut self, t: u64) -> Result<(), EngineError> {
        let name = match self.modifiers.first_prune() {
            Some(s) if t < s => "dense",
            Some(_) if self.modifiers.last_prune_end().is_some_and(|e| t < e) => "prune",
            Some(_) => "recover",
            None => "train",
        };
        if name == self.phase.name {
            return Ok(());
        }
        self.finish_phase();
        self.phase = Phase {
            name,
            progress: Some(Progress::new(
                name,
                t,
                self.end,
                self.training.log_every_steps.unwrap_or(50),
                Some(self.log.handle()?),
            )),
            started: Instant::now(),
            examples: 0,
        };
        Ok(())
    }

    /// Phase 4: evaluation every `eval_every_epochs`, at the first pruning step and at the
    /// end.
    fn evaluate_if_due(&mut self, model: &A::Model) -> Result<(), EngineError> {
        let step = self.step;
        let eval_every = self
            .training
            .eval_every_epochs
            .map_or(self.spe, |e| ((e * self.spe as f64).round() as u64).max(1));
        if !(step.is_multiple_of(eval_every)
            || step == self.end
            || self.modifiers.first_prune() == Some(step))
        {
            return Ok(());
        }
        let rec = self.evaluate(model, step)?;
        self.log_eval(format!(
            "eval step {step} (epoch {:.2}) sparsity {:.1}%: {}",
            rec.epoch,
            rec.sparsity * 100.0,
            fmt_metrics(&rec.metrics)
        ));
        self.history.push(rec);
        (self.loss_sum, self.loss_count) = (0.0, 0);
        write_atomic(
            &self.opts.run_dir.join(HISTORY_FILE),
            &serde_json::to_vec_pretty(&self.history).expect("history serialises"),
        )?;
        self.write_curves();
        Ok(())
    }

    /// `schedule.json`: the step plan `shears plot` marks pruning steps from.
    fn write_schedule(&self) -> Result<(), EngineError> {
        let schedule = RunSchedule {
            steps_per_epoch: self.spe,
            total_steps: self.end,
            pruning_steps: self.modifiers.pruning_steps(self.end),
        };
        write_atomic(
            &self.opts.run_dir.join(SCHEDULE_FILE),
            &serde_json::to_vec_pretty(&schedule).expect("schedule serialises"),
        )?;
        Ok(())
    }

    /// `curves.svg` and `curves.png` from the history so far. A chart that cannot be drawn
    /// is logged, not fatal: training goes on.
    fn write_curves(&mut self) {
        let run = RunCurves {
            label: self
                .opts
                .run_dir
                .file_name()
                .map_or_else(|| "run".to_string(), |n| n.to_string_lossy().into_owned()),
            history: self.history.clone(),
            pruning_steps: self.modifiers.pruning_steps(self.end),
        };
        let panels = run_panels(&[run], self.task.main_metric());
        for (file, format) in [
            (CURVES_FILE, ChartFormat::Svg),
            (CURVES_PNG_FILE, ChartFormat::Png),
        ] {
            if let Err(e) = write_chart(&self.opts.run_dir.join(file), format, &panels) {
                self.log_eval(format!("warning: {file} not written: {e}"));
            }
        }
    }

    /// Phase 5: a checkpoint every `checkpoint_every_steps`, at the end, and where
    /// `--stop-after` or an interrupt ends the session (then returns why).
    fn checkpoint_if_due(&mut self, model: &A::Model) -> Result<Option<Stop>, EngineError> {
        let step = self.step;
        let at_end = step == self.end;
        let interrupted = !at_end
            && self
                .opts
                .interrupt
                .as_ref()
                .is_some_and(|flag| flag.load(Ordering::SeqCst));
        let stop = if interrupted {
            Some(Stop::Interrupted)
        } else if !at_end
            && self
                .opts
                .stop_after
                .is_some_and(|k| step == self.session_start + k)
        {
            Some(Stop::StopAfter)
        } else {
            None
        };
        let stopping = stop.is_some();
        let every = self
            .training
            .checkpoint_every_steps
            .unwrap_or(self.spe)
            .max(1);
        if !(step.is_multiple_of(every) || at_end || stopping) {
            return Ok(None);
        }
        let state = TrainState {
            step,
            steps_per_epoch: self.spe,
            seed: self.training.seed,
            lr: self.lr.lr_at(step.saturating_sub(1)),
            sparsity_targets: self.modifiers.targets_at(step),
            recipe_sha256: self.digest.clone(),
            wall_seconds: self.wall(),
            loss_sum: self.loss_sum,
            loss_count: self.loss_count,
        };
        self.write_checkpoint(model, &state)
            .map_err(|source| EngineError::CheckpointWrite {
                step,
                kept: match self.store.latest() {
                    Ok(Some((dir, _))) => format!(
                        "the latest complete checkpoint ({}) is intact and --resume continues from it",
                        dir.display()
                    ),
                    _ => "there is no earlier complete checkpoint".to_string(),
                },
                source: Box::new(source),
            })?;
        Ok(stop)
    }

    /// Writes every file of the checkpoint of `state.step` under a `.partial` name and
    /// publishes it; a failure leaves the previous checkpoint as `latest`.
    fn write_checkpoint(
        &mut self,
        model: &A::Model,
        state: &TrainState,
    ) -> Result<(), EngineError> {
        let pending = self.store.begin(state.step)?;
        self.arch
            .save_weights(model, &pending.dir.join(MODEL_FILE))?;
        self.optim.save_state(&pending.dir.join(OPTIM_FILE))?;
        self.rule.save_state(&pending.dir)?;
        write_atomic(
            &pending.dir.join(crate::run_dir::RESOLVED_RECIPE),
            self.recipe.resolved_yaml().as_bytes(),
        )?;
        for m in self.modifiers.states() {
            m.save(&pending.dir)?;
        }
        write_atomic(
            &pending.dir.join(HISTORY_FILE),
            &serde_json::to_vec_pretty(&self.history).expect("history serialises"),
        )?;
        self.store.commit(pending, state)?;
        Ok(())
    }

    /// The end: the final evaluation, the export, the sparsity report and `report.json`.
    fn finish(mut self, model: A::Model) -> Result<RunEnd, EngineError> {
        let end = self.end;
        let run_dir = self.opts.run_dir.clone();
        let last = match self.history.last() {
            Some(r) if r.step == end => r.clone(),
            _ => {
                // A resume of a finished run (or an empty one): evaluate what we have.
                let rec = self.evaluate(&model, end)?;
                self.history.push(rec.clone());
                rec
            }
        };
        let dense = self
            .modifiers
            .first_prune()
            .filter(|&s| end > s)
            .and_then(|s| self.history.iter().rev().find(|r| r.step <= s).cloned());

        let export = self.recipe.output.as_ref().is_none_or(|o| o.export);
        let inference = model.valid();
        let model_dir = if export {
            let dir = run_dir.join("model");
            let partial = run_dir.join("model.partial");
            if partial.exists() {
                std::fs::remove_dir_all(&partial).map_err(io_err(&partial))?;
            }
            self.arch.export(&inference, &partial)?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
            }
            std::fs::rename(&partial, &dir).map_err(io_err(&dir))?;
            Some(dir)
        } else {
            None
        };

        // Sparsity of the pruned parameters, measured on the final values.
        let pruned = self.modifiers.pruned_names();
        let pruned_infos: Vec<ParamInfo> = self
            .all_params
            .iter()
            .filter(|p| pruned.binary_search(&p.name).is_ok())
            .cloned()
            .collect();
        let values =
            read_values(&inference, &self.arch.naming(), &pruned_infos).map_err(|source| {
                EngineError::Mask {
                    modifier: "final sparsity".into(),
                    source,
                }
            })?;
        let target = self.modifiers.final_target();
        let report_table =
            SparsityReport::from_values(&values, Some(self.optim.masks()), Some(target));
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
            recipe: self.recipe.path.display().to_string(),
            model: self
                .recipe
                .model
                .as_ref()
                .and_then(|m| m.source.clone())
                .unwrap_or_else(|| format!("{} (fresh initialisation)", self.arch.name())),
            task: self
                .recipe
                .data
                .as_ref()
                .map(|d| d.task.to_string())
                .unwrap_or_default(),
            device: self.opts.device.to_string(),
            steps: end,
            wall_seconds: self.wall(),
            metrics,
            sparsity,
        };
        report.write(&run_dir.join("report.json"))?;
        let table = report_table.to_table();
        let _ = std::fs::write(run_dir.join("sparsity.txt"), &table);
        self.log.line(&format!(
            "done: {} steps in {}",
            end,
            format_duration(report.wall_seconds)
        ));
        Ok(RunEnd::Finished(Box::new(RunOutcome {
            report,
            dense,
            last,
            main_metric: self.task.main_metric().to_string(),
            history: self.history,
            model_dir,
            sparsity_table: table,
        })))
    }
}

/// `accuracy 0.8712 f1 0.8790`.
pub fn fmt_metrics(m: &Metrics) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------
// Evaluation of an exported model.

struct Evaluate<'a> {
    spec: &'a Path,
    device: Device,
    sparse: SparsePolicy,
}

impl TaskVisitor for Evaluate<'_> {
    type Output = (Metrics, usize);

    fn visit<A: Architecture, T: Task<Model = A::Model>>(
        self,
        arch: A,
        task: T,
    ) -> Result<(Metrics, usize), EngineError> {
        let mut model = arch.load(&self.spec.display().to_string(), &self.device)?;
        let layers = self.sparse.switch(&arch, &mut model, &self.device);
        let n = layers.iter().filter(|l| l.sparse).count();
        if n > 0 {
            eprintln!(
                "eval: SparseProp on {n} of {} prunable layers",
                layers.len()
            );
        }
        let metrics = task.evaluate(&model, &self.device)?;
        Ok((metrics, task.dev_len()))
    }
}

/// Evaluates an exported model (a directory, or a weights file for image models) on the
/// dev split of a recipe's task; returns the metrics and the number of dev examples
/// (questions for SQuAD). Prunable layers at least `training.sparseprop_min_sparsity`
/// sparse run the SparseProp kernels as the recipe's `training.sparseprop` says (`auto`:
/// on CPU devices), as they do in training.
pub fn evaluate_model(
    recipe: &Recipe,
    model_dir: &Path,
    device: DeviceSpec,
    base_dir: &Path,
) -> Result<(Metrics, usize), EngineError> {
    dispatch(
        recipe,
        base_dir,
        ModelAt::Export(model_dir),
        Evaluate {
            spec: model_dir,
            device: device.device()?,
            sparse: recipe
                .training
                .as_ref()
                .map_or_else(SparsePolicy::default, SparsePolicy::from_recipe),
        },
    )
}
