//! [`BertError`]: everything that can go wrong reading or writing a BERT model.

use std::path::PathBuf;

use crate::weights::WeightsError;

/// An error from BERT configuration, weights, tokenizer or model-source handling.
///
/// Every variant names the file (and the tensor key, where there is one).
#[derive(Debug, thiserror::Error)]
pub enum BertError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON for a BERT config.
    #[error("{}: not a valid BERT config.json: {source}", path.display())]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The JSON error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// `config.json` parses but its values are inconsistent or unsupported.
    #[error("{}: invalid BERT config: {reason}", path.display())]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint is neither a readable safetensors nor a readable PyTorch file.
    #[error("{}: cannot read checkpoint: {message}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A tensor has an element type that cannot become f32 weights.
    #[error("{}: tensor `{key}` has unsupported dtype {dtype}", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// The dtype, as the file names it.
        dtype: String,
    },
    /// A tensor's shape differs from the model's parameter.
    #[error(
        "{}: tensor `{key}` has shape {found:?}, the model expects {expected:?}",
        path.display()
    )]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor key (HF name).
        key: String,
        /// The shape of the model parameter.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// Backbone weights are absent from the checkpoint (heads may be absent; these may not).
    #[error("{}: missing {} backbone tensor(s): {}", path.display(), keys.len(), keys.join(", "))]
    MissingKeys {
        /// The file.
        path: PathBuf,
        /// The HF names that were not found.
        keys: Vec<String>,
    },
    /// A model directory lacks a required file.
    #[error("{}: no {what} found (looked for {candidates})", dir.display())]
    MissingFile {
        /// The directory.
        dir: PathBuf,
        /// What was looked for (e.g. "weights").
        what: String,
        /// The file names tried.
        candidates: String,
    },
    /// The tokenizer could not be built or could not encode an input.
    #[error("{}: tokenizer error: {message}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizers crate's message.
        message: String,
    },
    /// A model source string could not be parsed.
    #[error("invalid model source {spec:?}: {reason}")]
    InvalidSource {
        /// The source as given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// The Hugging Face Hub could not provide a file.
    #[error(
        "{spec}: cannot fetch `{file}` from the Hugging Face Hub: {message} \
         (offline? download the model and pass its local directory instead)"
    )]
    Hub {
        /// The source as given (`hf:org/name[@rev]`).
        spec: String,
        /// The file requested.
        file: String,
        /// The hub client's message.
        message: String,
    },
    /// Inputs to the model are inconsistent (shapes, lengths).
    #[error("invalid model input: {0}")]
    Input(String),
    /// Any other weight I/O error (e.g. strict loading's unexpected keys).
    #[error(transparent)]
    Weights(WeightsError),
}

/// Weight I/O errors keep the BERT variants they had before the I/O became generic: `Format`
/// and `Write` become [`BertError::Checkpoint`], the others their namesakes.
impl From<WeightsError> for BertError {
    fn from(e: WeightsError) -> Self {
        match e {
            WeightsError::Io { path, source } => BertError::Io { path, source },
            WeightsError::Format { path, message } => BertError::Checkpoint { path, message },
            WeightsError::Write { path, message } => BertError::Checkpoint {
                path,
                message: format!("cannot write: {message}"),
            },
            WeightsError::UnsupportedDtype { path, key, dtype } => {
                BertError::UnsupportedDtype { path, key, dtype }
            }
            WeightsError::ShapeMismatch {
                path,
                key,
                expected,
                found,
            } => BertError::ShapeMismatch {
                path,
                key,
                expected,
                found,
            },
            WeightsError::MissingKeys { path, keys } => BertError::MissingKeys { path, keys },
            other => BertError::Weights(other),
        }
    }
}
