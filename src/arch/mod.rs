//! Model families the engine trains, behind one trait.
//!
//! An [`Architecture`] is what the engine, `shears eval` and the teacher of a distillation
//! run know of a model: how to build it from the recipe's source, how its parameters are
//! named for users (masks, `params` patterns, reports), how to save and restore its weights
//! in a checkpoint, and how to export it in its ecosystem's layout. The training loop
//! itself never sees a BERT or ResNet type.
//!
//! * [`bert::BertFamily`]: Hugging Face BERT checkpoints (directories or `hf:org/name`),
//!   HF parameter names, HF-layout export with the tokenizer files.
//! * [`resnet::ResNetFamily`]: CIFAR ResNets and torchvision ResNets (safetensors or
//!   PyTorch files), torch state-dict names, safetensors export.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use shears_models::bert::BertError;
use shears_models::sparseprop::layout::LayoutError;
use shears_models::sparseprop::select::Execution;

use crate::sparsity::params::ParamNaming;

pub mod bert;
pub mod resnet;

/// Why a model could not be loaded, saved or prepared.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// A BERT model (student, teacher, checkpoint or export) failed.
    #[error("{what}: {source}")]
    Bert {
        /// Which model and where.
        what: String,
        /// The cause.
        #[source]
        source: Box<BertError>,
    },
    /// A ResNet model (source, teacher, checkpoint or export) failed.
    #[error("{what}: {source}")]
    ResNet {
        /// Which model and where.
        what: String,
        /// The cause.
        #[source]
        source: Box<shears_models::resnet::ResNetError>,
    },
    /// A BERT source has no tokenizer.
    #[error("{what}: no tokenizer.json or vocab.txt next to the weights")]
    NoTokenizer {
        /// Which model and where.
        what: String,
    },
    /// The teacher's head does not fit the student's.
    #[error("{what}: it has {found} labels, the student {expected}")]
    TeacherHead {
        /// The teacher and where.
        what: String,
        /// The student's label count.
        expected: usize,
        /// The teacher's.
        found: usize,
    },
    /// `model.architecture` names no known model.
    #[error("model.architecture: {0}")]
    UnknownArchitecture(String),
    /// The recipe's model section does not fit the family.
    #[error("model.{field}: {message}")]
    Config {
        /// The offending key.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A burn record (`model.bpk`) could not be read into the model (the error names the
    /// file and the missing, unused or mis-shaped tensors).
    #[error(transparent)]
    BurnRecord(#[from] shears_models::weights::WeightsError),
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

/// Reads the burn record `file` into `model` ([`shears_models::weights::load_burn_record`]).
pub fn load_burn_record<M: Module>(model: M, file: &Path) -> Result<M, ArchError> {
    Ok(shears_models::weights::load_burn_record(model, file)?.0)
}

/// One prunable layer as SparseProp sees it: its weight's name (as the family presents
/// it) and its current sparsity.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseLayer {
    /// The weight's user-facing name (`encoder.layer.0.attention.self.query.weight`,
    /// `layer1.0.conv1.weight`).
    pub name: String,
    /// Fraction of zeros of the weight when the layer was switched.
    pub sparsity: f64,
    /// Whether the layer now runs the sparse kernels.
    pub sparse: bool,
}

/// A model family: everything the engine needs to know of a model besides its forward
/// pass (which the [`crate::train::task::Task`] calls).
pub trait Architecture {
    /// The module trained (on an autodiff device) and evaluated (after `valid()`).
    type Model: Module + 'static;
    /// How the family names parameters for users.
    type Naming: ParamNaming + Clone + Send + Sync + 'static;

    /// The family's name in messages and reports (`bert`, `resnet20`).
    fn name(&self) -> String;
    /// The naming of parameters (masks, `params` patterns, reports, checkpoints).
    fn naming(&self) -> Self::Naming;
    /// The model to train, on `device`: from the recipe's source, where a task head that
    /// does not fit the task is initialised afresh (with a warning), or freshly initialised
    /// when the recipe names no source.
    fn load_student(&self, device: &Device) -> Result<Self::Model, ArchError>;
    /// A model saved in this family's layout (a directory or a weights file; a teacher, a
    /// snapshot, an export), strictly: every tensor must fit.
    fn load(&self, spec: &str, device: &Device) -> Result<Self::Model, ArchError>;
    /// Like [`load`](Self::load), and checks that the teacher's head fits the student's.
    fn load_teacher(&self, spec: &str, device: &Device) -> Result<Self::Model, ArchError> {
        self.load(spec, device)
    }
    /// Writes the weights of `model` to a checkpoint file (safetensors, the family's names).
    fn save_weights(&self, model: &Self::Model, file: &Path) -> Result<(), ArchError>;
    /// Reads the weights of a checkpoint file written by [`save_weights`](Self::save_weights)
    /// into `model`.
    fn load_weights(&self, model: Self::Model, file: &Path) -> Result<Self::Model, ArchError>;
    /// Exports `model` (inference mode) in the family's layout into the directory `dir`
    /// (created), as other tools load it.
    fn export(&self, model: &Self::Model, dir: &Path) -> Result<(), ArchError>;
    /// Starts a re-calibration of the normalisation statistics (BatchNorm): resets them, and
    /// the following forward passes (on any device) normalise with their batch statistics
    /// and fold them into the running ones with `momentum` (an exponential average, as
    /// torch's `momentum=0.1`), or with `None` into a plain average of the passes (torch's
    /// `momentum=None`). Returns `false` when the family has no running statistics (BERT),
    /// and then the caller skips the passes.
    fn begin_recalibration(&self, _model: &mut Self::Model, _momentum: Option<f64>) -> bool {
        false
    }
    /// Ends a re-calibration: the normalisation layers use the new statistics in
    /// inference and go back to their usual training behaviour.
    fn end_recalibration(&self, _model: &mut Self::Model) {}
    /// With `frozen`, the normalisation layers of `model` normalise training-mode passes
    /// with the batch statistics but do not update their running statistics (CrAM's
    /// perturbed pass); without, they return to their usual training behaviour. Families
    /// without running statistics (BERT) do nothing.
    fn freeze_batch_stats(_model: &mut Self::Model, _frozen: bool) {}
    /// Makes the normalisation layers of `model` use their running statistics even on the
    /// autodiff device (gradients of the model in inference behaviour, as OBS collects them).
    /// Families without running statistics do nothing.
    fn norm_in_eval(_model: &mut Self::Model) {}
    /// Switches every prunable layer whose weight's sparsity is at least `threshold` to the
    /// SparseProp kernels with `execution` (re-packed on the current non-zeros), and every
    /// other prunable layer to the dense path. Returns the layers, in model order.
    fn set_sparse(
        &self,
        model: &mut Self::Model,
        threshold: f64,
        execution: Execution,
    ) -> Vec<SparseLayer>;
}

/// A prunable layer that can switch between SparseProp and the dense path.
pub(crate) trait Switchable {
    /// Packs the current non-zeros for SparseProp; returns the weight's sparsity.
    fn to_sparse(&mut self, execution: Execution) -> Result<f64, LayoutError>;
    /// Back to the dense path.
    fn to_dense(&mut self);
}

impl Switchable for shears_models::linear::PrunableLinear {
    fn to_sparse(&mut self, execution: Execution) -> Result<f64, LayoutError> {
        self.set_sparse(execution)
    }
    fn to_dense(&mut self) {
        self.set_dense();
    }
}

impl Switchable for shears_models::resnet::PrunableLayerMut<'_> {
    fn to_sparse(&mut self, execution: Execution) -> Result<f64, LayoutError> {
        self.set_sparse(execution)
    }
    fn to_dense(&mut self) {
        self.set_dense();
    }
}

/// Runs `layer` on SparseProp when its weight is at least `threshold` sparse (and
/// `execution` is not dense), else on the dense path; a weight that cannot be packed stays
/// dense with a warning (`None`).
pub(crate) fn switch_layer(
    name: String,
    layer: &mut impl Switchable,
    threshold: f64,
    execution: Execution,
) -> Option<SparseLayer> {
    let sparsity = match layer.to_sparse(execution) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("{name}: stays dense: {e}");
            layer.to_dense();
            return None;
        }
    };
    let sparse = sparsity >= threshold && execution != Execution::Dense;
    if !sparse {
        layer.to_dense();
    }
    Some(SparseLayer {
        name,
        sparsity,
        sparse,
    })
}

/// A recipe path resolved against `base` (`hf:` sources and absolute paths unchanged).
pub fn resolve_path(base: &Path, spec: &str) -> String {
    if spec.starts_with("hf:") || Path::new(spec).is_absolute() {
        spec.to_string()
    } else {
        base.join(spec).display().to_string()
    }
}
