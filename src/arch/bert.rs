//! [`BertFamily`]: BERT models from Hugging Face checkpoints.

use std::marker::PhantomData;
use std::path::Path;

use burn::tensor::Device;
use shears_models::bert::encoder::BertEncoder;
use shears_models::bert::weights::{Checkpoint, export_safetensors, load_into};
use shears_models::bert::{
    BertArchitecture, BertConfig, BertError, BertForQuestionAnswering,
    BertForSequenceClassification, BertModel, BertTokenizer, ModelFiles, ModelSource,
    save_pretrained,
};
use shears_models::sparseprop::select::Execution;

use super::{ArchError, Architecture, SparseLayer, load_burn_record, resolve_path, switch_layer};
use crate::sparsity::params::HfNames;
use shears_models::weights::is_burn_record;

/// A BERT module with an encoder (every HF BERT class shears runs).
pub trait BertWithEncoder: BertArchitecture + 'static {
    /// The encoder, whose linears SparseProp can run.
    fn encoder_mut(&mut self) -> &mut BertEncoder;
    /// The prefix of the encoder's parameter names (`bert.` under a task head).
    const PREFIX: &'static str;
}

impl BertWithEncoder for BertModel {
    fn encoder_mut(&mut self) -> &mut BertEncoder {
        &mut self.encoder
    }
    const PREFIX: &'static str = "";
}

impl BertWithEncoder for BertForSequenceClassification {
    fn encoder_mut(&mut self) -> &mut BertEncoder {
        &mut self.bert.encoder
    }
    const PREFIX: &'static str = "bert.";
}

impl BertWithEncoder for BertForQuestionAnswering {
    fn encoder_mut(&mut self) -> &mut BertEncoder {
        &mut self.bert.encoder
    }
    const PREFIX: &'static str = "bert.";
}

/// The linears of one encoder layer, in [`shears_models::bert::encoder::BertLayer::linears_mut`]
/// order, by HF name.
const LAYER_LINEARS: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

/// BERT of HF class `M` (sequence classification, QA, or the bare encoder), loaded from a
/// Hugging Face directory or `hf:org/name`.
#[derive(Debug, Clone)]
pub struct BertFamily<M> {
    files: ModelFiles,
    config: BertConfig,
    tokenizer: BertTokenizer,
    model: PhantomData<fn() -> M>,
}

fn bert_err(what: &str) -> impl Fn(BertError) -> ArchError + '_ {
    move |source| ArchError::Bert {
        what: what.to_string(),
        source: Box::new(source),
    }
}

/// The files of the model at `spec` (a directory or `hf:org/name`, relative to `base`).
pub fn model_files(base: &Path, spec: &str, what: &str) -> Result<ModelFiles, ArchError> {
    let resolved = resolve_path(base, spec);
    ModelSource::parse(&resolved)
        .and_then(|s| s.resolve())
        .map_err(|source| ArchError::Bert {
            what: format!("{what} `{spec}`"),
            source: Box::new(source),
        })
}

impl<M: BertWithEncoder> BertFamily<M> {
    /// The family of the source `files`, with the config the task needs (`adjust` sets the
    /// label count and problem type of a task head). Reads `config.json` and the tokenizer.
    pub fn open(
        files: ModelFiles,
        what: &str,
        adjust: impl FnOnce(BertConfig) -> BertConfig,
    ) -> Result<Self, ArchError> {
        let base = BertConfig::from_file(&files.config).map_err(bert_err(what))?;
        let tokenizer = shears_models::bert::load_tokenizer(&files, &base)
            .map_err(bert_err(what))?
            .ok_or_else(|| ArchError::NoTokenizer {
                what: what.to_string(),
            })?;
        Ok(Self {
            config: adjust(base),
            files,
            tokenizer,
            model: PhantomData,
        })
    }

    /// The tokenizer of the source.
    pub fn tokenizer(&self) -> &BertTokenizer {
        &self.tokenizer
    }

    /// The (task-adjusted) config.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Loads `files` into a fresh `M` built from `config`.
    ///
    /// With `fresh_head`, task-head tensors (`classifier.*`, `qa_outputs.*`) whose shape
    /// does not fit the task (a checkpoint fine-tuned for another label count) are dropped
    /// with a warning and the head keeps its fresh initialisation, like
    /// `ignore_mismatched_sizes=True` in `transformers`; any other mismatch is an error.
    fn load_files(
        files: &ModelFiles,
        config: &BertConfig,
        device: &Device,
        what: &str,
        fresh_head: bool,
    ) -> Result<M, ArchError> {
        if is_burn_record(&files.weights) {
            return load_burn_record(M::from_config(config, device), &files.weights);
        }
        let mut checkpoint = Checkpoint::read(&files.weights).map_err(bert_err(what))?;
        loop {
            match load_into(M::from_config(config, device), &checkpoint) {
                Ok((model, report)) => {
                    if !report.initialized.is_empty() {
                        log::info!(
                            "{what}: freshly initialised (not in the checkpoint): {}",
                            report.initialized.join(", ")
                        );
                    }
                    return Ok(model);
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
                Err(e) => return Err(bert_err(what)(e)),
            }
        }
    }

    fn load_config_of(spec: &str, device: &Device) -> Result<(M, BertConfig), ArchError> {
        let what = spec.to_string();
        let files = ModelSource::parse(spec)
            .and_then(|s| s.resolve())
            .map_err(bert_err(&what))?;
        let config = BertConfig::from_file(&files.config).map_err(bert_err(&what))?;
        Ok((
            Self::load_files(&files, &config, device, &what, false)?,
            config,
        ))
    }
}

/// Tokenizer files copied next to an exported model, when the source has them.
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

impl<M: BertWithEncoder> Architecture for BertFamily<M> {
    type Model = M;
    type Naming = HfNames;

    fn name(&self) -> String {
        "bert".into()
    }

    fn naming(&self) -> HfNames {
        HfNames
    }

    fn load_student(&self, device: &Device) -> Result<M, ArchError> {
        let _rng = crate::rng::exclusive();
        let model = Self::load_files(&self.files, &self.config, device, "model.source", true)?;
        crate::rng::materialize(&model);
        Ok(model)
    }

    fn load(&self, spec: &str, device: &Device) -> Result<M, ArchError> {
        let _rng = crate::rng::exclusive();
        let model = Self::load_config_of(spec, device)?.0;
        crate::rng::materialize(&model);
        Ok(model)
    }

    fn load_teacher(&self, spec: &str, device: &Device) -> Result<M, ArchError> {
        let _rng = crate::rng::exclusive();
        let (teacher, config) = Self::load_config_of(spec, device)?;
        crate::rng::materialize(&teacher);
        if M::ARCHITECTURE == BertForSequenceClassification::ARCHITECTURE
            && config.num_labels() != self.config.num_labels()
        {
            return Err(ArchError::TeacherHead {
                what: format!("model.teacher `{spec}`"),
                expected: self.config.num_labels(),
                found: config.num_labels(),
            });
        }
        Ok(teacher)
    }

    fn save_weights(&self, model: &M, file: &Path) -> Result<(), ArchError> {
        export_safetensors(model, file)
            .map(|_| ())
            .map_err(bert_err("checkpoint"))
    }

    fn load_weights(&self, model: M, file: &Path) -> Result<M, ArchError> {
        let what = format!("checkpoint {}", file.display());
        let ckpt = Checkpoint::read(file).map_err(bert_err(&what))?;
        Ok(load_into(model, &ckpt).map_err(bert_err(&what))?.0)
    }

    fn export(&self, model: &M, dir: &Path) -> Result<(), ArchError> {
        save_pretrained(&model.valid(), &self.config, dir).map_err(bert_err("export"))?;
        let sources: Vec<&Path> = [
            self.files.tokenizer_json.as_deref(),
            self.files.vocab_txt.as_deref(),
            Some(self.files.config.as_path()),
        ]
        .into_iter()
        .flatten()
        .filter_map(Path::parent)
        .collect();
        for name in TOKENIZER_FILES {
            if let Some(src) = sources.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
                let to = dir.join(name);
                std::fs::copy(&src, &to).map_err(|source| ArchError::Io { path: to, source })?;
            }
        }
        Ok(())
    }

    fn set_sparse(&self, model: &mut M, threshold: f64, execution: Execution) -> Vec<SparseLayer> {
        sparsify_encoder(model, threshold, execution)
    }
}

/// Switches every encoder linear of `model` whose weight is at least `threshold` sparse to
/// the SparseProp kernels with `execution`, and every other one to the dense path (what
/// [`Architecture::set_sparse`] does for BERT; `shears infer` calls it on a loaded model).
pub fn sparsify_encoder<M: BertWithEncoder>(
    model: &mut M,
    threshold: f64,
    execution: Execution,
) -> Vec<SparseLayer> {
    let encoder = model.encoder_mut();
    let mut out = Vec::new();
    for (i, layer) in encoder.layer.iter_mut().enumerate() {
        for (linear, suffix) in layer.linears_mut().into_iter().zip(LAYER_LINEARS) {
            let name = format!("{}encoder.layer.{i}.{suffix}.weight", M::PREFIX);
            out.extend(switch_layer(name, linear, threshold, execution));
        }
    }
    out
}
