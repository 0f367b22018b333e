//! [`BertModel`]: embeddings, encoder and optional pooler (HF `BertModel`).

use burn::module::Module;
use burn::tensor::activation::tanh;
use burn::tensor::{Device, Int, Tensor};

use super::config::BertConfig;
use super::embeddings::BertEmbeddings;
use super::encoder::{BertEncoder, bert_linear};
use super::error::BertError;
use crate::linear::PrunableLinear;

/// A batch of tokenised inputs, all `[batch, seq]`.
#[derive(Debug, Clone)]
pub struct BertInput {
    /// Token ids.
    pub input_ids: Tensor<2, Int>,
    /// Segment ids (0 for the first sentence, 1 for the second).
    pub token_type_ids: Tensor<2, Int>,
    /// 1 for a real token, 0 for padding.
    pub attention_mask: Tensor<2, Int>,
}

impl BertInput {
    /// Builds a batch from row-major id vectors; every row must have the same length.
    pub fn from_rows(
        input_ids: &[Vec<u32>],
        token_type_ids: &[Vec<u32>],
        attention_mask: &[Vec<u32>],
        device: &Device,
    ) -> Result<Self, BertError> {
        let batch = input_ids.len();
        if batch == 0 {
            return Err(BertError::Input("empty batch".to_string()));
        }
        let seq = input_ids[0].len();
        let to_tensor = |name: &str, rows: &[Vec<u32>]| {
            if rows.len() != batch {
                return Err(BertError::Input(format!(
                    "`{name}` has {} rows, `input_ids` has {batch}",
                    rows.len()
                )));
            }
            let mut flat = Vec::with_capacity(batch * seq);
            for (i, row) in rows.iter().enumerate() {
                if row.len() != seq {
                    return Err(BertError::Input(format!(
                        "`{name}` row {i} has length {}, expected {seq}",
                        row.len()
                    )));
                }
                flat.extend(row.iter().map(|&v| v as i64));
            }
            Ok(Tensor::<1, Int>::from_data(flat.as_slice(), device).reshape([batch, seq]))
        };
        Ok(Self {
            input_ids: to_tensor("input_ids", input_ids)?,
            token_type_ids: to_tensor("token_type_ids", token_type_ids)?,
            attention_mask: to_tensor("attention_mask", attention_mask)?,
        })
    }
}

/// The pooler: `tanh(dense(hidden[:, 0]))` (HF `BertPooler`).
#[derive(Module, Debug)]
pub struct BertPooler {
    /// `[hidden, hidden]` projection of the first token.
    pub dense: PrunableLinear,
}

impl BertPooler {
    /// Pools `[batch, seq, hidden]` into `[batch, hidden]`.
    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [batch, _, h] = hidden.dims();
        let first = hidden.slice([0..batch, 0..1]).reshape([batch, h]);
        tanh(self.dense.forward(first))
    }
}

/// What [`BertModel::forward`] returns.
#[derive(Debug, Clone)]
pub struct BertModelOutput {
    /// Hidden states of the last layer, `[batch, seq, hidden]`.
    pub last_hidden_state: Tensor<3>,
    /// Pooler output `[batch, hidden]` (absent when the model has no pooler).
    pub pooler_output: Option<Tensor<2>>,
}

/// The BERT backbone (HF `BertModel`).
#[derive(Module, Debug)]
pub struct BertModel {
    /// Embedding block (HF `embeddings.*`).
    pub embeddings: BertEmbeddings,
    /// Encoder layers (HF `encoder.layer.N.*`).
    pub encoder: BertEncoder,
    /// Pooler (HF `pooler.dense.*`); `None` as in HF task models that drop it (QA).
    pub pooler: Option<BertPooler>,
}

impl BertModel {
    /// Creates a model with fresh weights; `with_pooler` adds the pooler.
    pub fn new(config: &BertConfig, with_pooler: bool, device: &Device) -> Self {
        Self {
            embeddings: BertEmbeddings::new(config, device),
            encoder: BertEncoder::new(config, device),
            pooler: with_pooler.then(|| BertPooler {
                dense: bert_linear(config, config.hidden_size, config.hidden_size, device),
            }),
        }
    }

    /// Runs the backbone. Padding positions (`attention_mask == 0`) are not attended to.
    ///
    /// Inputs longer than `max_position_embeddings` are out of range for the position table:
    /// truncate when tokenising (the tokenizer wrapper does).
    pub fn forward(&self, input: &BertInput) -> BertModelOutput {
        let mask_bias = attention_bias(input.attention_mask.clone());
        let x = self
            .embeddings
            .forward(input.input_ids.clone(), input.token_type_ids.clone());
        let last_hidden_state = self.encoder.forward(x, mask_bias);
        let pooler_output = self
            .pooler
            .as_ref()
            .map(|p| p.forward(last_hidden_state.clone()));
        BertModelOutput {
            last_hidden_state,
            pooler_output,
        }
    }
}

/// Turns a `[batch, seq]` 1/0 mask into the additive `[batch, 1, 1, seq]` bias of the attention
/// scores: 0 for tokens, `f32::MIN` for padding (as HF does with `torch.finfo(dtype).min`).
pub fn attention_bias(attention_mask: Tensor<2, Int>) -> Tensor<4> {
    let [batch, seq] = attention_mask.dims();
    let pad = attention_mask.equal_elem(0).float();
    (pad * f32::MIN).reshape([batch, 1, 1, seq])
}

/// Mean of the hidden states over real tokens (sentence-transformers mean pooling):
/// `sum(h * mask) / max(sum(mask), 1e-9)`, `[batch, seq, hidden]` -> `[batch, hidden]`.
pub fn mean_pool(last_hidden_state: Tensor<3>, attention_mask: Tensor<2, Int>) -> Tensor<2> {
    let [batch, seq, hidden] = last_hidden_state.dims();
    let mask = attention_mask.float().reshape([batch, seq, 1]);
    let summed = (last_hidden_state * mask.clone())
        .sum_dim(1)
        .reshape([batch, hidden]);
    let counts = mask.sum_dim(1).reshape([batch, 1]).clamp_min(1e-9);
    summed / counts
}

/// Divides each row of `x` `[batch, d]` by its L2 norm (at least 1e-12, as `F.normalize`).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}
