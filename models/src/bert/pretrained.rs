//! Loading a whole pretrained model (config, weights, tokenizer) and saving it in HF layout.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;

use super::config::BertConfig;
use super::error::BertError;
use super::heads::{BertForQuestionAnswering, BertForSequenceClassification};
use super::model::BertModel;
use super::source::ModelFiles;
use super::tokenizer::BertTokenizer;
use super::weights::{Checkpoint, LoadReport, export_safetensors, load_into};

/// A BERT module that corresponds to one HF architecture class.
pub trait BertArchitecture: Module + Sized {
    /// The HF class name written to `config.json` `architectures`.
    const ARCHITECTURE: &'static str;

    /// Creates the module with fresh weights.
    fn from_config(config: &BertConfig, device: &Device) -> Self;

    /// The config to export with this module (sizes that the module fixes, such as the
    /// number of labels, are taken from the module).
    fn export_config(&self, config: &BertConfig) -> BertConfig {
        config.clone()
    }
}

impl BertArchitecture for BertModel {
    const ARCHITECTURE: &'static str = "BertModel";
    fn from_config(config: &BertConfig, device: &Device) -> Self {
        BertModel::new(config, true, device)
    }
}

impl BertArchitecture for BertForSequenceClassification {
    const ARCHITECTURE: &'static str = "BertForSequenceClassification";
    fn from_config(config: &BertConfig, device: &Device) -> Self {
        BertForSequenceClassification::new(config, device)
    }
    fn export_config(&self, config: &BertConfig) -> BertConfig {
        let mut config = config.clone().with_num_labels(self.num_labels());
        config.problem_type = Some(self.problem_type);
        if config.id2label.is_none() {
            let labels = (0..self.num_labels()).map(|i| (i.to_string(), format!("LABEL_{i}")));
            config.id2label = Some(labels.clone().collect());
            config.label2id = Some(labels.enumerate().map(|(i, (_, l))| (l, i)).collect());
        }
        config
    }
}

impl BertArchitecture for BertForQuestionAnswering {
    const ARCHITECTURE: &'static str = "BertForQuestionAnswering";
    fn from_config(config: &BertConfig, device: &Device) -> Self {
        BertForQuestionAnswering::new(config, device)
    }
}

/// A loaded model with everything that came with it.
#[derive(Debug)]
pub struct Pretrained<M> {
    /// The model.
    pub model: M,
    /// Its configuration.
    pub config: BertConfig,
    /// The tokenizer (`tokenizer.json`, else `vocab.txt`), if the source has one.
    pub tokenizer: Option<BertTokenizer>,
    /// What the weight loading did.
    pub report: LoadReport,
}

/// Loads config, weights and tokenizer of `files` into architecture `M` on `device`.
///
/// `vocab.txt` alone is read lowercasing unless `config.json` says `"do_lower_case": false`.
pub fn load_pretrained<M: BertArchitecture>(
    files: &ModelFiles,
    device: &Device,
) -> Result<Pretrained<M>, BertError> {
    let config = BertConfig::from_file(&files.config)?;
    let (model, report) = if crate::weights::is_burn_record(&files.weights) {
        crate::weights::load_burn_record(M::from_config(&config, device), &files.weights)?
    } else {
        let checkpoint = Checkpoint::read(&files.weights)?;
        load_into(M::from_config(&config, device), &checkpoint)?
    };
    let tokenizer = load_tokenizer(files, &config)?;
    Ok(Pretrained {
        model,
        config,
        tokenizer,
        report,
    })
}

/// The tokenizer of `files`: `tokenizer.json`, else `vocab.txt` (lowercasing unless
/// `config.json` says `"do_lower_case": false`); `None` when the source has neither.
pub fn load_tokenizer(
    files: &ModelFiles,
    config: &BertConfig,
) -> Result<Option<BertTokenizer>, BertError> {
    Ok(match (&files.tokenizer_json, &files.vocab_txt) {
        (Some(json), _) => Some(BertTokenizer::from_file(json)?),
        (None, Some(vocab)) => {
            let lowercase = config
                .extra
                .get("do_lower_case")
                .and_then(|v| v.as_bool())
                .unwrap_or(true);
            Some(BertTokenizer::from_vocab(vocab, lowercase)?)
        }
        (None, None) => None,
    })
}

/// Writes `model.safetensors` and `config.json` into `dir` (created if needed), in the layout
/// HF `from_pretrained` reads.
pub fn save_pretrained<M: BertArchitecture>(
    model: &M,
    config: &BertConfig,
    dir: &Path,
) -> Result<(), BertError> {
    std::fs::create_dir_all(dir).map_err(|source| BertError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut config = model.export_config(config);
    config.extra.insert(
        "architectures".to_string(),
        serde_json::json!([M::ARCHITECTURE]),
    );
    config
        .extra
        .insert("model_type".to_string(), serde_json::json!("bert"));
    export_safetensors(model, &dir.join("model.safetensors"))?;
    config.to_file(dir.join("config.json"))
}
