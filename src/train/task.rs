//! Tasks the training loop runs: what a batch is, what the model outputs, the task loss
//! and the official dev metrics. The loop ([`super::engine`]) is generic over [`Task`], so
//! pruning, distillation, LR schedules, checkpoints and resume work the same for every task.
//!
//! Implemented: extractive QA (SQuAD v1.1/v2.0, [`QuestionAnsweringTask`]) and
//! sentence(-pair) classification and regression — the generic text tasks
//! (`text-classification`, `text-regression` over TSV/CSV/JSONL/JSON files) and the nine
//! GLUE tasks (`glue/<task>`: original TSV, or the Hub's parquet files / JSON lines).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Int, Tensor};
use shears_models::bert::{
    BertConfig, BertForQuestionAnswering, BertForSequenceClassification, BertInput, BertTokenizer,
    ClassificationTargets, QuestionAnsweringOutput,
};

use std::collections::HashMap;

use crate::data::DataError;
use crate::data::batch::{
    BatchLabels, EncodedText, SquadBatch, SquadBatcher, TextBatch, TextBatcher, encode_texts,
};
use crate::data::glue::{GlueTask, load_glue_file};
use crate::data::squad::{
    SquadExample, SquadFeature, SquadPostprocessConfig, SquadPreprocessConfig, load_squad_file,
    postprocess_squad, preprocess_squad,
};
use crate::data::text::{
    Header, LabelSpec, TextColumns, TextExample, TextFileConfig, TextFormat, load_text,
    split_by_id_hash,
};
use crate::data::{Label, text::fnv1a_64};
use crate::metrics::MetricError;
use crate::metrics::classification::{accuracy, f1_binary, matthews_corrcoef};
use crate::metrics::correlation::{pearson, spearman};
use crate::metrics::glue::{GluePredictions, glue_metrics};
use crate::metrics::squad::{squad_v1, squad_v2};
use crate::recipe::sections::DataSection;

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

/// The kind of task named by `data.task`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// `text-classification`: generic sentence(-pair) classification.
    TextClassification,
    /// `text-regression`: generic sentence(-pair) regression.
    TextRegression,
    /// `glue/<task>`.
    Glue(GlueTask),
    /// `squad` / `squad_v2` (extractive QA).
    Squad {
        /// SQuAD v2 (unanswerable questions).
        v2: bool,
    },
    /// `image-classification` (not run by the engine yet).
    ImageClassification,
}

impl TaskKind {
    /// Parses `data.task`.
    pub fn parse(name: &str) -> Result<Self, TaskError> {
        let bad = |message: String| TaskError::Config {
            field: "task",
            message,
        };
        Ok(match name {
            "text-classification" => Self::TextClassification,
            "text-regression" => Self::TextRegression,
            "squad" => Self::Squad { v2: false },
            "squad_v2" => Self::Squad { v2: true },
            "image-classification" => Self::ImageClassification,
            other => match other.strip_prefix("glue/") {
                Some(t) => Self::Glue(GlueTask::from_name(t).ok_or_else(|| {
                    bad(format!(
                        "unknown GLUE task `{t}` (expected cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli)"
                    ))
                })?),
                None => {
                    return Err(bad(format!(
                        "unknown task `{other}` (expected text-classification, text-regression, glue/<task>, squad, squad_v2, image-classification)"
                    )));
                }
            },
        })
    }

    /// Whether the head predicts a real value.
    pub fn is_regression(self) -> bool {
        match self {
            Self::TextRegression => true,
            Self::Glue(t) => t.is_regression(),
            _ => false,
        }
    }
}

/// The train and dev examples of a text task.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSplits {
    /// Training examples (after `max_train_examples`).
    pub train: Vec<TextExample>,
    /// Dev examples (after `max_dev_examples`).
    pub dev: Vec<TextExample>,
    /// Records dropped while loading (zero ratings under `label_from: sign`, ...).
    pub dropped: usize,
}

fn config_err(field: &'static str, message: impl Into<String>) -> TaskError {
    TaskError::Config {
        field,
        message: message.into(),
    }
}

fn format_of(path: &Path) -> Result<TextFormat, TaskError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("tsv") => Ok(TextFormat::Tsv { quoting: false }),
        Some("csv") => Ok(TextFormat::Csv),
        Some("jsonl") => Ok(TextFormat::JsonLines),
        Some("json") => Ok(TextFormat::JsonArray),
        _ => Err(config_err(
            "train",
            format!(
                "{}: unknown file type (expected .tsv, .csv, .jsonl or .json)",
                path.display()
            ),
        )),
    }
}

fn generic_config(
    data: &DataSection,
    path: &Path,
    regression: bool,
    num_labels: Option<usize>,
) -> Result<TextFileConfig, TaskError> {
    let label = match (data.label_from.as_deref(), regression) {
        (Some("sign"), false) => LabelSpec::SignOfScore,
        (Some("sign"), true) => {
            return Err(config_err(
                "label_from",
                "`sign` makes classes; use it with task text-classification",
            ));
        }
        (Some("as_is") | None, true) => LabelSpec::Score,
        (Some("as_is") | None, false) => LabelSpec::ClassIndex {
            num_classes: num_labels.ok_or_else(|| TaskError::Config {
                field: "label_column",
                message: "integer class labels need `model.num_labels`".into(),
            })?,
        },
        (Some(other), _) => {
            return Err(config_err(
                "label_from",
                format!("unknown value `{other}` (expected sign or as_is)"),
            ));
        }
    };
    Ok(TextFileConfig {
        format: format_of(path)?,
        header: Header::FirstRow,
        columns: TextColumns {
            id: data.id_column.clone(),
            text: data
                .text_column
                .clone()
                .ok_or_else(|| config_err("text_column", "required for generic text tasks"))?,
            text_pair: data.text_pair_column.clone(),
            label: Some(
                data.label_column
                    .clone()
                    .ok_or_else(|| config_err("label_column", "required for training"))?,
            ),
        },
        label,
        drop_unlabeled: false,
    })
}

fn load_file(
    data: &DataSection,
    kind: TaskKind,
    num_labels: Option<usize>,
    path: &Path,
) -> Result<(Vec<TextExample>, usize), TaskError> {
    let loaded = match kind {
        TaskKind::Glue(task) => load_glue_file(path, task)?,
        TaskKind::TextClassification | TaskKind::TextRegression => load_text(
            path,
            &generic_config(data, path, kind.is_regression(), num_labels)?,
        )?,
        _ => unreachable!("only text tasks reach load_file"),
    };
    Ok((loaded.examples, loaded.dropped))
}

/// Keeps `max` examples chosen by a fixed hash of their ids (independent of the seed and
/// the file order), preserving the order of those kept.
pub fn subset(examples: Vec<TextExample>, max: Option<usize>, salt: &str) -> Vec<TextExample> {
    subset_by(examples, max, salt, |e| e.id.as_str())
}

/// Loads the train and dev examples a recipe's `data:` section names. Relative paths are
/// relative to `base` (the directory `shears` runs in); `num_labels` (the recipe's
/// `model.num_labels`) bounds integer class labels of generic files.
pub fn load_text_splits(
    data: &DataSection,
    kind: TaskKind,
    num_labels: Option<usize>,
    base: &Path,
) -> Result<TextSplits, TaskError> {
    let resolve = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let train_path = data.train.as_deref().map(resolve).ok_or_else(|| {
        config_err(
            "train",
            "required: a local file (GLUE: the original TSV, or the Hub's parquet file such as \
             sst2/train-00000-of-00001.parquet of nyu-mll/glue)",
        )
    })?;
    let (train, mut dropped) = load_file(data, kind, num_labels, &train_path)?;
    let (train, dev) = match (&data.dev, data.dev_fraction) {
        (Some(dev), _) => {
            let (dev, d) = load_file(data, kind, num_labels, &resolve(dev))?;
            dropped += d;
            (train, dev)
        }
        (None, Some(f)) if f > 0.0 && f < 1.0 => split_by_id_hash(train, f),
        (None, Some(f)) => {
            return Err(config_err("dev_fraction", format!("{f} is not in (0, 1)")));
        }
        (None, None) => {
            return Err(config_err(
                "dev",
                "give a dev file or `dev_fraction` to hold out part of `train`",
            ));
        }
    };
    if let Some(e) = dev.iter().find(|e| e.label == Label::Missing) {
        return Err(config_err(
            "dev",
            format!(
                "example {} has no label: the dev split must be labelled",
                e.id
            ),
        ));
    }
    let train = subset(train, data.max_train_examples, "train");
    let dev = subset(dev, data.max_dev_examples, "dev");
    if train.is_empty() {
        return Err(config_err("train", "no training examples"));
    }
    if dev.is_empty() {
        return Err(config_err("dev", "no dev examples"));
    }
    Ok(TextSplits {
        train,
        dev,
        dropped,
    })
}

/// A training task for the loop in [`super::engine`].
pub trait Task {
    /// The model trained.
    type Model: shears_models::bert::BertArchitecture + Clone;
    /// A batch of training data.
    type Batch;

    /// Number of training examples.
    fn train_len(&self) -> usize;
    /// The length (tokens) of every training example, for length grouping.
    fn train_lengths(&self) -> Vec<usize>;
    /// The batch of the training examples at `indices`, with tensors on `device`.
    fn batch(&self, indices: &[usize], device: &Device) -> Self::Batch;
    /// The named outputs that distillation can use (`logits`; `start_logits`, `end_logits`).
    fn outputs(&self, model: &Self::Model, batch: &Self::Batch) -> Vec<(&'static str, Tensor<2>)>;
    /// The task loss of `outputs` on `batch`.
    fn loss(
        &self,
        model: &Self::Model,
        outputs: &[(&'static str, Tensor<2>)],
        batch: &Self::Batch,
    ) -> Tensor<1>;
    /// The official metrics on the dev split (`model` is in inference mode on `device`).
    fn evaluate(&self, model: &Self::Model, device: &Device) -> Result<Metrics, TaskError>;
    /// The metric that represents the task in summaries (`accuracy`, `pearson`, ...).
    fn main_metric(&self) -> &'static str;
    /// Whether every output has one fixed-width row per example (class logits), so a
    /// teacher's outputs can be computed once and cached; not for per-token outputs.
    fn outputs_cacheable(&self) -> bool {
        false
    }
}

/// Sentence(-pair) classification or regression with a [`BertForSequenceClassification`].
#[derive(Debug, Clone)]
pub struct SequenceClassificationTask {
    kind: TaskKind,
    train: Vec<EncodedText>,
    /// Dev examples sorted by length (padding waste is minimal; metrics do not depend on order).
    dev: Vec<EncodedText>,
    batcher: TextBatcher,
    eval_batch_size: usize,
    num_labels: usize,
}

impl SequenceClassificationTask {
    /// Tokenizes the splits with `tokenizer` (truncating to `max_length` tokens).
    pub fn new(
        kind: TaskKind,
        splits: &TextSplits,
        tokenizer: &BertTokenizer,
        max_length: usize,
        num_labels: usize,
        eval_batch_size: usize,
    ) -> Result<Self, TaskError> {
        let train = encode_texts(tokenizer.inner(), &splits.train, max_length)?;
        let mut dev = encode_texts(tokenizer.inner(), &splits.dev, max_length)?;
        dev.sort_by_key(|e| e.input_ids.len());
        if !kind.is_regression() {
            for e in train.iter().chain(&dev) {
                if let Label::Class(c) = e.label
                    && c >= num_labels
                {
                    return Err(config_err(
                        "label_column",
                        format!(
                            "example {} has class {c}, but the model has {num_labels} labels (set model.num_labels)",
                            e.id
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            kind,
            train,
            dev,
            batcher: TextBatcher {
                pad_id: tokenizer.pad_id(),
            },
            eval_batch_size: eval_batch_size.max(1),
            num_labels,
        })
    }

    /// The number of dev examples.
    pub fn dev_len(&self) -> usize {
        self.dev.len()
    }

    fn input(batch: &TextBatch) -> BertInput {
        BertInput {
            input_ids: batch.input_ids.clone(),
            token_type_ids: batch.token_type_ids.clone(),
            attention_mask: batch.attention_mask.clone(),
        }
    }
}

impl Task for SequenceClassificationTask {
    type Model = BertForSequenceClassification;
    type Batch = TextBatch;

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn train_lengths(&self) -> Vec<usize> {
        self.train.iter().map(|e| e.input_ids.len()).collect()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> TextBatch {
        let items = indices.iter().map(|&i| self.train[i].clone()).collect();
        self.batcher.batch(items, device)
    }

    fn outputs(&self, model: &Self::Model, batch: &TextBatch) -> Vec<(&'static str, Tensor<2>)> {
        vec![("logits", model.forward(&Self::input(batch)).logits)]
    }

    fn loss(
        &self,
        model: &Self::Model,
        outputs: &[(&'static str, Tensor<2>)],
        batch: &TextBatch,
    ) -> Tensor<1> {
        let logits = outputs[0].1.clone();
        let targets = match &batch.labels {
            BatchLabels::Class(c) => ClassificationTargets::Labels(c.clone()),
            BatchLabels::Score(s) => {
                let n = s.dims()[0];
                ClassificationTargets::Regression(s.clone().reshape([n, 1]))
            }
            BatchLabels::Missing => {
                unreachable!("training examples are labelled (checked on load)")
            }
        };
        model.loss(logits, targets)
    }

    fn evaluate(&self, model: &Self::Model, device: &Device) -> Result<Metrics, TaskError> {
        let mut classes = Vec::with_capacity(self.dev.len());
        let mut scores = Vec::with_capacity(self.dev.len());
        for chunk in self.dev.chunks(self.eval_batch_size) {
            let batch = self.batcher.batch(chunk.to_vec(), device);
            let logits = model.forward(&Self::input(&batch)).logits;
            if self.kind.is_regression() {
                scores.extend(logits.into_data().iter::<f64>());
            } else {
                let arg: Tensor<2, Int> = logits.argmax(1);
                classes.extend(arg.into_data().iter::<i64>().map(|c| c as usize));
            }
        }
        let gold_classes: Vec<usize> = self
            .dev
            .iter()
            .map(|e| match e.label {
                Label::Class(c) => c,
                _ => usize::MAX,
            })
            .collect();
        let gold_scores: Vec<f64> = self
            .dev
            .iter()
            .map(|e| match e.label {
                Label::Score(s) => f64::from(s),
                _ => f64::NAN,
            })
            .collect();
        let mut out = Metrics::new();
        match self.kind {
            TaskKind::Glue(task) => {
                let preds = if task.is_regression() {
                    GluePredictions::Scores {
                        predictions: &scores,
                        labels: &gold_scores,
                    }
                } else {
                    GluePredictions::Classes {
                        predictions: &classes,
                        labels: &gold_classes,
                    }
                };
                for (k, v) in glue_metrics(task, preds)? {
                    out.insert(k.to_string(), v);
                }
            }
            TaskKind::TextRegression => {
                out.insert("pearson".into(), pearson(&scores, &gold_scores)?);
                out.insert("spearmanr".into(), spearman(&scores, &gold_scores)?);
            }
            _ => {
                out.insert("accuracy".into(), accuracy(&classes, &gold_classes)?);
                if self.num_labels == 2 {
                    out.insert("f1".into(), f1_binary(&classes, &gold_classes)?);
                } else {
                    out.insert("mcc".into(), matthews_corrcoef(&classes, &gold_classes)?);
                }
            }
        }
        Ok(out)
    }

    fn outputs_cacheable(&self) -> bool {
        true
    }

    fn main_metric(&self) -> &'static str {
        match self.kind {
            TaskKind::Glue(GlueTask::Cola) => "mcc",
            k if k.is_regression() => "pearson",
            _ => "accuracy",
        }
    }
}

/// Extractive question answering (SQuAD v1.1 / v2.0) with a [`BertForQuestionAnswering`]:
/// examples are split into overlapping windows (`max_seq_length`, `doc_stride`), the loss is
/// the mean cross-entropy of the start and end positions, and dev predictions go through the
/// HF postprocessing (n-best 20, answers up to 30 tokens, null answers for v2) into the
/// official EM/F1.
#[derive(Debug, Clone)]
pub struct QuestionAnsweringTask {
    train: Vec<SquadFeature>,
    dev_examples: Vec<SquadExample>,
    dev_features: Vec<SquadFeature>,
    batcher: SquadBatcher,
    eval_batch_size: usize,
    post: SquadPostprocessConfig,
}

/// Keeps `max` items chosen by a fixed hash of their ids (see [`subset`]).
fn subset_by<T>(items: Vec<T>, max: Option<usize>, salt: &str, id: impl Fn(&T) -> &str) -> Vec<T> {
    let Some(max) = max else { return items };
    if items.len() <= max {
        return items;
    }
    let mut keyed: Vec<(u64, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, e)| (fnv1a_64(format!("{salt}:{}", id(e)).as_bytes()), i))
        .collect();
    keyed.sort_unstable();
    let mut keep: Vec<usize> = keyed.into_iter().take(max).map(|(_, i)| i).collect();
    keep.sort_unstable();
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    keep.into_iter()
        .map(|i| slots[i].take().expect("indices are distinct"))
        .collect()
}

impl QuestionAnsweringTask {
    /// Loads `data.train` and `data.dev` (SQuAD JSON, Hub parquet or JSON lines) and windows
    /// them with `tokenizer`.
    pub fn load(
        data: &DataSection,
        v2: bool,
        tokenizer: &BertTokenizer,
        base: &Path,
        eval_batch_size: usize,
    ) -> Result<Self, TaskError> {
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let train = data.train.as_deref().ok_or_else(|| {
            config_err(
                "train",
                "required: SQuAD JSON (train-v1.1.json) or the Hub's parquet file of rajpurkar/squad",
            )
        })?;
        let dev = data.dev.as_deref().ok_or_else(|| {
            config_err(
                "dev",
                "required for SQuAD: the dev file (dev-v1.1.json or the validation parquet)",
            )
        })?;
        let train = subset_by(
            load_squad_file(resolve(train))?,
            data.max_train_examples,
            "train",
            |e| e.id.as_str(),
        );
        let dev_examples = subset_by(
            load_squad_file(resolve(dev))?,
            data.max_dev_examples,
            "dev",
            |e| e.id.as_str(),
        );
        if train.is_empty() || dev_examples.is_empty() {
            return Err(config_err("train", "no examples"));
        }
        let config = SquadPreprocessConfig {
            max_length: data.max_seq_length.unwrap_or(384),
            doc_stride: data.doc_stride.unwrap_or(128),
        };
        let features = preprocess_squad(tokenizer.inner(), &train, &config)?;
        let dev_features = preprocess_squad(tokenizer.inner(), &dev_examples, &config)?;
        Ok(Self {
            train: features,
            dev_examples,
            dev_features,
            batcher: SquadBatcher {
                pad_id: tokenizer.pad_id(),
            },
            eval_batch_size: eval_batch_size.max(1),
            post: SquadPostprocessConfig {
                version_2: v2,
                ..SquadPostprocessConfig::default()
            },
        })
    }

    /// Number of dev questions.
    pub fn dev_len(&self) -> usize {
        self.dev_examples.len()
    }

    fn input(batch: &SquadBatch) -> BertInput {
        BertInput {
            input_ids: batch.input_ids.clone(),
            token_type_ids: batch.token_type_ids.clone(),
            attention_mask: batch.attention_mask.clone(),
        }
    }
}

impl Task for QuestionAnsweringTask {
    type Model = BertForQuestionAnswering;
    type Batch = SquadBatch;

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn train_lengths(&self) -> Vec<usize> {
        self.train.iter().map(|f| f.input_ids.len()).collect()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> SquadBatch {
        let items = indices.iter().map(|&i| self.train[i].clone()).collect();
        self.batcher.batch(items, device)
    }

    fn outputs(&self, model: &Self::Model, batch: &SquadBatch) -> Vec<(&'static str, Tensor<2>)> {
        let out = model.forward(&Self::input(batch));
        vec![
            ("start_logits", out.start_logits),
            ("end_logits", out.end_logits),
        ]
    }

    fn loss(
        &self,
        model: &Self::Model,
        outputs: &[(&'static str, Tensor<2>)],
        batch: &SquadBatch,
    ) -> Tensor<1> {
        let out = QuestionAnsweringOutput {
            start_logits: outputs[0].1.clone(),
            end_logits: outputs[1].1.clone(),
        };
        model.loss(
            &out,
            batch.start_positions.clone(),
            batch.end_positions.clone(),
        )
    }

    fn evaluate(&self, model: &Self::Model, device: &Device) -> Result<Metrics, TaskError> {
        let n = self.dev_features.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (self.dev_features[i].input_ids.len(), i));
        let mut starts = vec![Vec::new(); n];
        let mut ends = vec![Vec::new(); n];
        for chunk in order.chunks(self.eval_batch_size) {
            let items = chunk
                .iter()
                .map(|&i| self.dev_features[i].clone())
                .collect();
            let batch = self.batcher.batch(items, device);
            let out = model.forward(&Self::input(&batch));
            let width = out.start_logits.dims()[1];
            let s: Vec<f32> = out.start_logits.into_data().iter::<f32>().collect();
            let e: Vec<f32> = out.end_logits.into_data().iter::<f32>().collect();
            for (r, &i) in chunk.iter().enumerate() {
                starts[i] = s[r * width..(r + 1) * width].to_vec();
                ends[i] = e[r * width..(r + 1) * width].to_vec();
            }
        }
        let preds = postprocess_squad(
            &self.dev_examples,
            &self.dev_features,
            &starts,
            &ends,
            &self.post,
        )?;
        let map: HashMap<String, String> = preds.into_iter().map(|p| (p.id, p.text)).collect();
        let mut out = Metrics::new();
        if self.post.version_2 {
            let s = squad_v2(&self.dev_examples, &map)?;
            out.insert("exact".into(), s.all.exact);
            out.insert("f1".into(), s.all.f1);
            if let Some(h) = s.has_ans {
                out.insert("HasAns_f1".into(), h.f1);
            }
            if let Some(h) = s.no_ans {
                out.insert("NoAns_f1".into(), h.f1);
            }
        } else {
            let s = squad_v1(&self.dev_examples, &map)?;
            out.insert("exact_match".into(), s.exact_match);
            out.insert("f1".into(), s.f1);
        }
        Ok(out)
    }

    fn main_metric(&self) -> &'static str {
        "f1"
    }
}

/// The head configuration a task needs: the number of outputs of the classifier.
pub fn head_labels(kind: TaskKind, recipe_num_labels: Option<usize>, config: &BertConfig) -> usize {
    match kind {
        TaskKind::Glue(t) => t.num_labels(),
        k if k.is_regression() => 1,
        _ => recipe_num_labels.unwrap_or_else(|| config.num_labels()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(id: &str) -> TextExample {
        TextExample {
            id: id.into(),
            text: id.into(),
            text_pair: None,
            label: Label::Class(0),
        }
    }

    #[test]
    fn subsets_keep_file_order_and_do_not_depend_on_it() {
        let all: Vec<TextExample> = (0..50).map(|i| ex(&format!("e{i}"))).collect();
        let a = subset(all.clone(), Some(20), "train");
        assert_eq!(a.len(), 20);
        let pos = |e: &TextExample| all.iter().position(|x| x == e).unwrap();
        assert!(a.windows(2).all(|w| pos(&w[0]) < pos(&w[1])));
        let mut rev = all.clone();
        rev.reverse();
        let mut b = subset(rev, Some(20), "train");
        b.reverse();
        assert_eq!(a, b);
        assert_eq!(subset(all.clone(), Some(80), "train"), all);
    }

    #[test]
    fn task_names_parse() {
        assert_eq!(
            TaskKind::parse("glue/stsb").unwrap(),
            TaskKind::Glue(GlueTask::Stsb)
        );
        assert!(TaskKind::parse("glue/stsb").unwrap().is_regression());
        let e = TaskKind::parse("glue/foo").unwrap_err().to_string();
        assert!(e.starts_with("data.task: unknown GLUE task `foo`"), "{e}");
        assert!(TaskKind::parse("summarize").is_err());
    }
}
