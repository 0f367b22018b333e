//! [`BertConfig`]: the Hugging Face `config.json` of the BERT family.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::BertError;

/// Activation of the feed-forward block (HF `hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// Exact GELU with `erf` (HF `"gelu"`).
    Gelu,
    /// Tanh approximation of GELU (HF `"gelu_new"`).
    GeluNew,
    /// Tanh approximation of GELU (HF `"gelu_pytorch_tanh"`).
    GeluPytorchTanh,
    /// ReLU (HF `"relu"`).
    Relu,
    /// SiLU (HF `"silu"`).
    Silu,
    /// SiLU under its other name (HF `"swish"`).
    Swish,
}

impl HiddenAct {
    /// Applies the activation.
    pub fn forward<const D: usize>(self, x: burn::tensor::Tensor<D>) -> burn::tensor::Tensor<D> {
        use burn::tensor::activation as act;
        match self {
            HiddenAct::Gelu => crate::activation::gelu(x),
            HiddenAct::GeluNew | HiddenAct::GeluPytorchTanh => act::gelu_approximate(x),
            HiddenAct::Relu => act::relu(x),
            HiddenAct::Silu | HiddenAct::Swish => act::silu(x),
        }
    }
}

/// What the sequence-classification head is trained for (HF `problem_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    /// One label per input, softmax cross-entropy.
    SingleLabelClassification,
    /// Any number of labels per input, sigmoid binary cross-entropy per label.
    MultiLabelClassification,
    /// Real-valued target(s), mean squared error.
    Regression,
}

fn default_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn default_dropout() -> f64 {
    0.1
}
fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_init_range() -> f64 {
    0.02
}
fn default_eps() -> f64 {
    1e-12
}

/// The configuration of a BERT model, deserialised from (and serialised to) HF `config.json`.
///
/// Field names and defaults follow `transformers.BertConfig`. Fields this crate does not use are
/// kept in [`extra`](Self::extra) so that an exported `config.json` keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Size of the WordPiece vocabulary.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads per layer (must divide `hidden_size`).
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Activation of the feed-forward block.
    #[serde(default = "default_act")]
    pub hidden_act: HiddenAct,
    /// Dropout probability on embeddings and sublayer outputs (training only).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout probability on attention probabilities (training only).
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Number of learned position embeddings (the longest input).
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Standard deviation of the normal initialiser of fresh weights.
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Epsilon of every layer norm.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Id of the padding token.
    #[serde(default)]
    pub pad_token_id: u32,
    /// Position embedding kind; only `"absolute"` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_embedding_type: Option<String>,
    /// Dropout before the classification head (defaults to `hidden_dropout_prob`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_dropout: Option<f64>,
    /// Explicit number of labels (HF derives it from `id2label` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_labels: Option<usize>,
    /// Label names by index (keys are decimal strings, as in HF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    /// Label indices by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, usize>>,
    /// What the classification head is trained for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<ProblemType>,
    /// Every other field of `config.json`, kept verbatim for export.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl BertConfig {
    /// The all-MiniLM-L6-v2 shape (6 layers, hidden 384, 12 heads, FFN 1536, uncased vocabulary).
    pub fn minilm_l6() -> Self {
        Self::new(30522, 384, 6, 12, 1536)
    }

    /// A configuration with the given sizes and HF defaults elsewhere.
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        intermediate_size: usize,
    ) -> Self {
        Self {
            vocab_size,
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            hidden_act: default_act(),
            hidden_dropout_prob: default_dropout(),
            attention_probs_dropout_prob: default_dropout(),
            max_position_embeddings: default_max_positions(),
            type_vocab_size: default_type_vocab(),
            initializer_range: default_init_range(),
            layer_norm_eps: default_eps(),
            pad_token_id: 0,
            position_embedding_type: None,
            classifier_dropout: None,
            num_labels: None,
            id2label: None,
            label2id: None,
            problem_type: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Reads and validates `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BertError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| BertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self =
            serde_json::from_str(&text).map_err(|source| BertError::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        config
            .validate()
            .map_err(|reason| BertError::InvalidConfig {
                path: path.to_path_buf(),
                reason,
            })?;
        Ok(config)
    }

    /// Writes `config.json` (pretty-printed, HF field names).
    pub fn to_file(&self, path: impl AsRef<Path>) -> Result<(), BertError> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self).map_err(|source| BertError::ConfigParse {
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::write(path, text).map_err(|source| BertError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks the sizes are consistent; the error says which field is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "`hidden_size` ({}) is not a multiple of `num_attention_heads` ({})",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if let Some(kind) = &self.position_embedding_type
            && kind != "absolute"
        {
            return Err(format!(
                "`position_embedding_type` = {kind:?} is not supported (only \"absolute\")"
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", Some(self.hidden_dropout_prob)),
            (
                "attention_probs_dropout_prob",
                Some(self.attention_probs_dropout_prob),
            ),
            ("classifier_dropout", self.classifier_dropout),
        ] {
            if let Some(p) = p
                && !(0.0..1.0).contains(&p)
            {
                return Err(format!("`{name}` = {p} is not in [0, 1)"));
            }
        }
        if self.num_labels() == 0 {
            return Err("`num_labels` must be positive".to_string());
        }
        Ok(())
    }

    /// Number of outputs of the classification head: `num_labels`, else the size of
    /// `id2label`, else 2 (the HF default).
    pub fn num_labels(&self) -> usize {
        self.num_labels
            .or_else(|| self.id2label.as_ref().map(|m| m.len()))
            .unwrap_or(2)
    }

    /// The problem type: the configured one, else regression for one label and single-label
    /// classification otherwise (HF infers it from the label dtype; we cannot).
    pub fn problem_type(&self) -> ProblemType {
        self.problem_type.unwrap_or(if self.num_labels() == 1 {
            ProblemType::Regression
        } else {
            ProblemType::SingleLabelClassification
        })
    }

    /// Sets the number of labels (and drops label maps of another size).
    pub fn with_num_labels(mut self, num_labels: usize) -> Self {
        self.num_labels = Some(num_labels);
        if self
            .id2label
            .as_ref()
            .is_some_and(|m| m.len() != num_labels)
        {
            self.id2label = None;
            self.label2id = None;
        }
        self
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
