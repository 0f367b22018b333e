//! shears' own recipe sections, beside the SparseML modifiers: what model, which data,
//! how to train, which optimizer, on which device, and where results go.
//!
//! Paths in a recipe are relative to the directory `shears` runs in (the repository root
//! for the shipped recipes), like the Hugging Face example scripts.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::data::glue::GlueTask;

/// `model:` — the network to sparsify.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face model directory (`config.json`, `model.safetensors` or
    /// `pytorch_model.bin`, tokenizer files), `hf:org/name[@revision]`, a weights file
    /// (`*.safetensors`, PyTorch `*.pth`/`*.bin`: image models), or a run's exported `model/`
    /// directory. Absent: the model starts from a fresh initialisation (image models trained
    /// from scratch; BERT needs a source for its config and tokenizer).
    pub source: Option<String>,
    /// Which head runs on top of the encoder.
    #[serde(default)]
    pub head: HeadKind,
    /// Number of labels of a classification head (default: from the task).
    pub num_labels: Option<usize>,
    /// Teacher for distillation: a model directory (e.g. the dense run's exported model),
    /// `hf:org/name`, or `self`: a frozen copy of the student taken when distillation
    /// starts (so one recipe can fine-tune densely, then prune with the dense model as
    /// teacher, as in SparseML's `distill_teacher: self`). Never checkpointed with the
    /// student (a `self` teacher is re-created from its saved weights on resume).
    pub teacher: Option<TeacherSpec>,
    /// Where the teacher runs (`flex`, `ndarray`, `wgpu[:N]`, `cuda[:N]`; default: the
    /// training device). A teacher only runs forward, so it can sit on another GPU, or on
    /// the CPU beside a GPU student; its outputs are copied to the training device.
    pub teacher_device: Option<crate::device::DeviceSpec>,
    /// The model family (image models): `resnet20`, `resnet32`, `resnet44`, `resnet56`,
    /// `resnet110` (CIFAR layout; `-b` suffix for the 1×1-conv shortcut, e.g. `resnet20-b`),
    /// `resnet18`, `resnet34`, `resnet50` (torchvision layout). BERT models need none: their
    /// `config.json` says what they are.
    pub architecture: Option<String>,
}

/// `model.teacher`: where the distillation teacher comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeacherSpec {
    /// `self`: a frozen snapshot of the student taken when distillation starts.
    SelfSnapshot,
    /// A model directory, a weights file or `hf:org/name`.
    Source(String),
}

impl<'de> Deserialize<'de> for TeacherSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Err(serde::de::Error::custom(
                "`teacher` is empty: give a model directory, `hf:org/name` or `self`",
            ));
        }
        Ok(if s == "self" {
            Self::SelfSnapshot
        } else {
            Self::Source(s)
        })
    }
}

impl Serialize for TeacherSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::SelfSnapshot => s.serialize_str("self"),
            Self::Source(p) => s.serialize_str(p),
        }
    }
}

/// The task named by `data.task`.
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
    /// `image-classification`.
    ImageClassification,
}

/// `data.task` is not a known task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownTask(String);

impl TaskKind {
    /// Parses a task name (`glue/sst2`, `squad_v2`, ...).
    pub fn parse(name: &str) -> Result<Self, UnknownTask> {
        Ok(match name {
            "text-classification" => Self::TextClassification,
            "text-regression" => Self::TextRegression,
            "squad" => Self::Squad { v2: false },
            "squad_v2" => Self::Squad { v2: true },
            "image-classification" => Self::ImageClassification,
            other => match other.strip_prefix("glue/") {
                Some(t) => Self::Glue(GlueTask::from_name(t).ok_or_else(|| {
                    UnknownTask(format!(
                        "unknown GLUE task `{t}` (expected cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli)"
                    ))
                })?),
                None => {
                    return Err(UnknownTask(format!(
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

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TextClassification => f.write_str("text-classification"),
            Self::TextRegression => f.write_str("text-regression"),
            Self::Glue(t) => write!(f, "glue/{}", t.name()),
            Self::Squad { v2: false } => f.write_str("squad"),
            Self::Squad { v2: true } => f.write_str("squad_v2"),
            Self::ImageClassification => f.write_str("image-classification"),
        }
    }
}

impl<'de> Deserialize<'de> for TaskKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for TaskKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `data.label_from`: how labels are derived from a numeric label column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelFrom {
    /// Negative → 0, positive → 1, zero dropped (classification only).
    Sign,
    /// The column's value: a class index, or a score for regression.
    AsIs,
}

/// The head on top of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// Sequence classification (or regression with one label).
    #[default]
    Classification,
    /// Extractive question answering (start/end logits).
    Qa,
    /// No head: the encoder's hidden states.
    None,
}

/// `data.dev`: one dev file, or several by name, in the order written.
#[derive(Debug, Clone, PartialEq)]
pub enum DevFiles {
    /// One dev file.
    One(String),
    /// Several dev files by name (at least one; the first is the main one).
    Named(Vec<(String, String)>),
}

impl DevFiles {
    /// The main dev file: the only one, or the first named.
    pub fn main(&self) -> &str {
        match self {
            DevFiles::One(p) => p,
            DevFiles::Named(v) => &v[0].1,
        }
    }

    /// The dev files after the main one, with their names.
    pub fn others(&self) -> &[(String, String)] {
        match self {
            DevFiles::One(_) => &[],
            DevFiles::Named(v) => &v[1..],
        }
    }

    /// Applies `f` to every path (e.g. to resolve them against a directory).
    pub fn map_paths(&self, f: impl Fn(&str) -> String) -> DevFiles {
        match self {
            DevFiles::One(p) => DevFiles::One(f(p)),
            DevFiles::Named(v) => {
                DevFiles::Named(v.iter().map(|(n, p)| (n.clone(), f(p))).collect())
            }
        }
    }
}

impl<'de> Deserialize<'de> for DevFiles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = DevFiles;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a dev file, or dev files by name ({matched: FILE, mismatched: FILE})")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DevFiles, E> {
                Ok(DevFiles::One(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<DevFiles, A::Error> {
                let mut out: Vec<(String, String)> = Vec::new();
                while let Some((name, path)) = map.next_entry::<String, String>()? {
                    if name.is_empty() || name.contains('/') {
                        return Err(serde::de::Error::custom(format!(
                            "dev set name `{name}`: give a non-empty name without `/`"
                        )));
                    }
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!(
                            "dev set `{name}` is named twice"
                        )));
                    }
                    out.push((name, path));
                }
                if out.is_empty() {
                    return Err(serde::de::Error::custom("no dev file named"));
                }
                Ok(DevFiles::Named(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for DevFiles {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            DevFiles::One(p) => s.serialize_str(p),
            DevFiles::Named(v) => {
                let mut m = s.serialize_map(Some(v.len()))?;
                for (n, p) in v {
                    m.serialize_entry(n, p)?;
                }
                m.end()
            }
        }
    }
}

/// `data:` — the task and its files.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// The task: `text-classification`, `text-regression`, `glue/<task>` (cola, sst2,
    /// mrpc, stsb, qqp, mnli, qnli, rte, wnli), `squad`, `squad_v2`, `image-classification`.
    pub task: TaskKind,
    /// Training file (TSV/CSV/JSONL/parquet/JSON, by extension) or directory.
    pub train: Option<String>,
    /// Dev file; when absent, a deterministic split of `train` (see `dev_fraction`).
    /// Text tasks also take several, by name (`{matched: …, mismatched: …}`): each is
    /// evaluated; the first is the main one, the others' metrics are reported as
    /// `name/metric`.
    pub dev: Option<DevFiles>,
    /// Fraction of `train` held out as dev when no `dev` file is given (by a hash of the id).
    pub dev_fraction: Option<f64>,
    /// Column with the text (generic text tasks).
    pub text_column: Option<String>,
    /// Column with the second text of a pair (generic text tasks).
    pub text_pair_column: Option<String>,
    /// Column with the label.
    pub label_column: Option<String>,
    /// Column with a stable example id (used by the dev split).
    pub id_column: Option<String>,
    /// Headerless TSV/CSV files: the names of their columns, in order (`[id, text,
    /// label]`); every row must have exactly this many fields. Default: the first row is
    /// the header.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// How labels are derived from a numeric label column: `sign` (negative → 0,
    /// positive → 1, zero dropped) or `as_is`.
    pub label_from: Option<LabelFrom>,
    /// Maximum tokens per input (default 128; 384 for SQuAD).
    pub max_seq_length: Option<usize>,
    /// Overlap between SQuAD windows (default 128).
    pub doc_stride: Option<usize>,
    /// Use at most this many training examples (for quick runs).
    pub max_train_examples: Option<usize>,
    /// Use at most this many dev examples (for quick runs).
    pub max_dev_examples: Option<usize>,
    /// Image tasks: the format of `train`/`dev`, `cifar10`, `idx` or `image_folder` (see
    /// [`ImageFormat`](crate::data::image_batch::ImageFormat)); default: detected from the
    /// path.
    #[serde(default)]
    pub format: Option<crate::data::image_batch::ImageFormat>,
    /// Image tasks: `{mean: [..], std: [..]}` per channel of pixels scaled to `0..=1`;
    /// default: the training set's own statistics.
    #[serde(default)]
    pub normalize: Option<crate::data::image_batch::NormalizeConfig>,
    /// Image tasks: training augmentation `{random_crop_padding: 4, horizontal_flip: true}`;
    /// default: none.
    #[serde(default)]
    pub augment: Option<crate::data::image_batch::AugmentConfig>,
}

/// `training:` — the loop.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSection {
    /// Seed of every random choice (initialisation, shuffling, dropout).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Examples per optimizer step (before accumulation).
    pub batch_size: usize,
    /// Examples per evaluation batch (default: `batch_size`).
    pub eval_batch_size: Option<usize>,
    /// Micro-batches accumulated per optimizer step.
    #[serde(default = "one")]
    pub gradient_accumulation_steps: usize,
    /// Clip the global gradient norm (computed after masking) to this value.
    pub max_grad_norm: Option<f64>,
    /// Evaluate on the dev split every this many epochs (default 1).
    pub eval_every_epochs: Option<f64>,
    /// Save a checkpoint every this many optimizer steps (default: every epoch).
    pub checkpoint_every_steps: Option<u64>,
    /// Stop after this many optimizer steps (a cap for smoke tests; the schedules keep
    /// their epoch-based positions).
    pub max_steps: Option<u64>,
    /// Print a progress line every this many steps when not on a terminal (default 50).
    pub log_every_steps: Option<u64>,
    /// Batch examples of similar length (HF's `group_by_length`): each epoch's shuffled
    /// examples are cut into pools of 50 batches, each pool sorted by length and cut into
    /// batches, and the batches shuffled. Less padding, same examples per epoch.
    #[serde(default)]
    pub group_by_length: bool,
    /// SparseProp during training: `auto` (default) runs the sparse kernels for every
    /// prunable layer whose weight is at least `sparseprop_min_sparsity` sparse, on CPU
    /// devices; `on` does so on every device (GPUs take the dense masked path inside the
    /// op); `off` keeps every layer dense. Layers are re-packed after each mask update.
    #[serde(default)]
    pub sparseprop: SparsePropMode,
    /// The weight sparsity from which a layer runs SparseProp (default 0.8).
    pub sparseprop_min_sparsity: Option<f64>,
    /// BatchNorm re-calibration: after every mask update and before the export, reset the
    /// running statistics and re-estimate them as the plain average over this many training
    /// batches (forward passes only; no weight changes). Default: none. Models without
    /// running statistics (BERT) ignore it.
    pub bn_recalibration_batches: Option<usize>,
    /// Label smoothing ε of the classification cross-entropy, in `[0, 1]` (PyTorch's
    /// `label_smoothing`; default 0).
    #[serde(default, deserialize_with = "crate::loss::deserialize_label_smoothing")]
    pub label_smoothing: f64,
    /// Data parallel: the devices one optimizer step's batch is split over (e.g.
    /// `[cuda:0, cuda:1]`), the first being the main device, where the gradients are
    /// summed, masks computed and the optimizer stepped. Each micro-batch is cut into
    /// contiguous shards, one per device, of sizes differing by at most one; the result
    /// equals a one-device run with the same global batch up to float rounding, except
    /// that dropout draws its own masks per shard and BatchNorm normalises each shard by
    /// its own statistics (like PyTorch DDP without SyncBatchNorm). Default: the run's one
    /// `device`.
    pub devices: Option<Vec<crate::device::DeviceSpec>>,
}

/// `training.sparseprop` (and `shears infer --sparseprop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SparsePropMode {
    /// Sparse kernels on CPU devices for layers sparse enough.
    #[default]
    Auto,
    /// Sparse kernels for layers sparse enough, on any device.
    On,
    /// Always dense.
    Off,
}

/// `optimizer:` — which optimizer, with HF-style explicit defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSection {
    /// `adamw`, `adam`, `sgd` or `mfac`.
    pub name: OptimizerKind,
    /// Learning rate when no LR modifier is active.
    pub lr: f64,
    /// Weight decay (decoupled for AdamW, L2 for Adam and SGD).
    #[serde(default)]
    pub weight_decay: f64,
    /// Adam β1, β2.
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// Adam ε (HF default 1e-8; burn's own default is 1e-5).
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// SGD momentum.
    #[serde(default)]
    pub momentum: f64,
    /// SGD Nesterov momentum.
    #[serde(default)]
    pub nesterov: bool,
    /// Parameters that get no weight decay: exact names, `re:` patterns, or `__1D__`
    /// (every parameter with at most one dimension: biases, LayerNorm/BatchNorm weights
    /// and biases). Default `[__1D__]` (Hugging Face's rule); `[]` decays everything. See
    /// [`WeightDecay`](crate::sparsity::enforce::WeightDecay).
    #[serde(
        default = "crate::sparsity::enforce::default_no_decay",
        deserialize_with = "crate::sparsity::enforce::deserialize_no_decay"
    )]
    pub no_decay: Vec<String>,
    /// M-FAC: gradients in the sliding window `m` (default 1024, the reference's; the state
    /// is `m × d` floats for `d` trained parameters).
    pub num_grads: Option<usize>,
    /// M-FAC: dampening λ of the Fisher (default 1e-5, the reference's for CIFAR; 1e-6 for
    /// BERT fine-tuning).
    pub damp: Option<f64>,
}

/// The optimizers a recipe can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// AdamW (decoupled weight decay).
    Adamw,
    /// Adam.
    Adam,
    /// SGD with optional momentum.
    Sgd,
    /// M-FAC (Frantar et al. 2021): the gradient preconditioned by the inverse empirical
    /// Fisher of the last `num_grads` gradients, optional momentum, L2 weight decay added to
    /// the gradient first.
    Mfac,
}

/// `output:` — where results go.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Run directory (default `runs/<recipe-name>-<timestamp>`; `--out` wins).
    pub dir: Option<String>,
    /// Export the final model in Hugging Face layout into `<dir>/model` (default true).
    #[serde(default = "yes")]
    pub export: bool,
}

fn default_seed() -> u64 {
    42
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}

fn default_eps() -> f64 {
    1e-8
}
