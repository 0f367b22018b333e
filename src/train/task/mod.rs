//! Tasks the training loop runs: what a batch is, what the model outputs, the task loss
//! and the official dev metrics. The loop ([`super::engine`]) is generic over [`Task`], so
//! pruning, distillation, LR schedules, checkpoints and resume work the same for every task
//! and every model family.
//!
//! Implemented: sentence(-pair) classification and regression ([`text`]), extractive QA
//! ([`qa`]) and image classification ([`image`]).

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::data::DataError;
use crate::distill::OutputKey;
use crate::metrics::MetricError;

pub mod image;
pub mod qa;
pub mod text;

pub use crate::recipe::sections::TaskKind;
pub use image::{ImageClassificationTask, ImageClassifier};
pub use qa::QuestionAnsweringTask;
pub use text::{SequenceClassificationTask, TextSplits, head_labels, load_text_splits, subset};

/// Metric values by name (`accuracy`, `f1`, `pearson`, ...).
pub type Metrics = BTreeMap<String, f64>;

/// Why a task's data could not be prepared or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The recipe's `data:` section is incomplete or inconsistent.
    #[error("data.{field}: {message}")]
    Config {
        /// The offending key.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A data file is bad.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A metric could not be computed.
    #[error("computing dev metrics: {0}")]
    Metric(#[from] MetricError),
}

pub(crate) fn config_err(field: &'static str, message: impl Into<String>) -> TaskError {
    TaskError::Config {
        field,
        message: message.into(),
    }
}

/// What a model computed for a batch, by output: the heads a task has are `Some`.
///
/// Distillation reads the outputs a recipe names ([`OutputKey`]) from the student's and the
/// teacher's `Outputs`; the task loss reads the ones its head produces.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// Class logits `[batch, classes]` (or `[batch, 1]` for regression).
    pub logits: Option<Tensor<2>>,
    /// Start-position logits `[batch, tokens]` (extractive QA).
    pub start_logits: Option<Tensor<2>>,
    /// End-position logits `[batch, tokens]` (extractive QA).
    pub end_logits: Option<Tensor<2>>,
}

impl Outputs {
    /// The outputs of a classification (or regression) head.
    pub fn logits(logits: Tensor<2>) -> Self {
        Self {
            logits: Some(logits),
            ..Self::default()
        }
    }

    /// The output `key`, when the head produces it.
    pub fn get(&self, key: OutputKey) -> Option<&Tensor<2>> {
        match key {
            OutputKey::Logits => self.logits.as_ref(),
            OutputKey::StartLogits => self.start_logits.as_ref(),
            OutputKey::EndLogits => self.end_logits.as_ref(),
        }
    }

    /// Sets the output `key`.
    pub fn set(&mut self, key: OutputKey, value: Tensor<2>) {
        let slot = match key {
            OutputKey::Logits => &mut self.logits,
            OutputKey::StartLogits => &mut self.start_logits,
            OutputKey::EndLogits => &mut self.end_logits,
        };
        *slot = Some(value);
    }

    /// The outputs present, in [`OutputKey`] order.
    pub fn into_entries(self) -> Vec<(OutputKey, Tensor<2>)> {
        [
            (OutputKey::Logits, self.logits),
            (OutputKey::StartLogits, self.start_logits),
            (OutputKey::EndLogits, self.end_logits),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// A training task for the loop in [`super::engine`].
pub trait Task {
    /// The model trained.
    type Model: Module;
    /// A batch of training data.
    type Batch;

    /// Number of training examples.
    fn train_len(&self) -> usize;
    /// The length (tokens) of every training example, for length grouping (images: all 1).
    fn train_lengths(&self) -> Vec<usize>;
    /// The batch of the training examples at `indices` in epoch `epoch`, with tensors on
    /// `device`. Any randomness (augmentation) is a function of the run's seed, `epoch`
    /// and the example index only, so a resumed run sees the same batches.
    fn batch(&self, indices: &[usize], epoch: u64, device: &Device) -> Self::Batch;
    /// The shape of the batch's main input (tokens `[batch, length]`, images
    /// `[batch, channels, height, width]`), for benchmarks and reference scripts.
    fn batch_shape(&self, batch: &Self::Batch) -> Vec<usize>;
    /// What the model outputs for `batch` (the heads distillation can use).
    fn outputs(&self, model: &Self::Model, batch: &Self::Batch) -> Outputs;
    /// The task loss of `outputs` on `batch`.
    fn loss(&self, model: &Self::Model, outputs: &Outputs, batch: &Self::Batch) -> Tensor<1>;
    /// Number of dev examples (questions for SQuAD).
    fn dev_len(&self) -> usize;
    /// The official metrics on the dev split (`model` is in inference mode on `device`).
    fn evaluate(&self, model: &Self::Model, device: &Device) -> Result<Metrics, TaskError>;
    /// The metric that represents the task in summaries (`accuracy`, `pearson`, ...).
    fn main_metric(&self) -> &'static str;
    /// Whether every output has one fixed-width row per example and a training example
    /// always gives the same input (no augmentation), so a teacher's outputs can be
    /// computed once and cached; not for per-token outputs.
    fn outputs_cacheable(&self) -> bool {
        false
    }
}
