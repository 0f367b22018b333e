//! BERT with Hugging Face fidelity.
//!
//! * [`BertConfig`] reads HF `config.json`.
//! * [`BertModel`] (embeddings, post-norm encoder, pooler), [`BertForSequenceClassification`]
//!   and [`BertForQuestionAnswering`]; every linear is a [`PrunableLinear`](crate::linear::PrunableLinear).
//! * Parameter paths equal HF keys except `self` (see [`names`]).
//! * [`weights`] loads `model.safetensors` / `pytorch_model.bin` (with or without `bert.`,
//!   with or without a head) and exports HF-layout safetensors; [`pretrained`] ties files,
//!   config and model together; [`source`] resolves directories and `hf:org/name[@rev]`.
//! * [`BertTokenizer`] wraps the `tokenizers` crate.

pub mod config;
pub mod embeddings;
pub mod encoder;
pub mod error;
pub mod heads;
pub mod model;
pub mod names;
pub mod pretrained;
pub mod source;
pub mod tokenizer;
pub mod weights;

pub use config::{BertConfig, HiddenAct, ProblemType};
pub use error::BertError;
pub use heads::{
    BertForQuestionAnswering, BertForSequenceClassification, ClassificationTargets,
    QuestionAnsweringOutput, SequenceClassifierOutput,
};
pub use model::{BertInput, BertModel, BertModelOutput, l2_normalize, mean_pool};
pub use pretrained::{
    BertArchitecture, Pretrained, load_pretrained, load_tokenizer, save_pretrained,
};
pub use source::{ModelFiles, ModelSource};
pub use tokenizer::{BertTokenizer, Encoded, Truncation, TruncationStrategy};
pub use weights::{Checkpoint, LoadReport};
