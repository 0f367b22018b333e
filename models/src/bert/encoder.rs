//! The BERT encoder: post-norm transformer layers built on [`PrunableLinear`].
//!
//! Field names follow the HF state dict (`encoder.layer.N.attention.self.query`, ...), with
//! `self` stored as `self_attention` (see [`super::names`]).

#![allow(non_snake_case)] // `LayerNorm` is the HF parameter name.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Initializer};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

use super::config::{BertConfig, HiddenAct};
use crate::attention::{attention_inference, fused_attention_applies};
use crate::dropout::dropout;
use crate::layer_norm::{LayerNorm, LayerNormConfig};
use crate::linear::{PrunableLinear, PrunableLinearConfig};
use crate::sparseprop::layout::LayoutError;
use crate::sparseprop::select::Execution;

/// A fresh BERT linear: normal(0, `initializer_range`) weight, zero bias.
pub(crate) fn bert_linear(
    config: &BertConfig,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> PrunableLinear {
    PrunableLinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: config.initializer_range,
        })
        .init(device)
}

fn bert_layer_norm(config: &BertConfig, device: &Device) -> LayerNorm {
    LayerNormConfig::new(config.hidden_size)
        .with_epsilon(config.layer_norm_eps)
        .init(device)
}

/// Multi-head scaled dot-product self-attention (HF `BertSelfAttention`).
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// Query projection `[hidden, hidden]`.
    pub query: PrunableLinear,
    /// Key projection `[hidden, hidden]`.
    pub key: PrunableLinear,
    /// Value projection `[hidden, hidden]`.
    pub value: PrunableLinear,
    /// Dropout on attention probabilities (training only).
    pub dropout: Dropout,
    /// Number of heads.
    pub num_heads: usize,
}

impl BertSelfAttention {
    /// Attends over `x` `[batch, seq, hidden]`; `mask_bias` `[batch, 1, 1, seq]` is added to the
    /// scores (0 for tokens, a large negative number for padding).
    pub fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let head_dim = hidden / self.num_heads;
        let split = |t: Tensor<3>| {
            t.reshape([batch, seq, self.num_heads, head_dim])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (
            self.query.forward(x.clone()),
            self.key.forward(x.clone()),
            self.value.forward(x),
        );
        let scale = 1.0 / (head_dim as f64).sqrt();
        if fused_attention_applies(&q.device()) {
            let bias = mask_bias.reshape([batch, seq]);
            return attention_inference(q, k, v, bias, self.num_heads, scale as f32);
        }
        let (q, k, v) = (split(q), split(k), split(v));
        let scores = q.matmul(k.transpose()) * scale + mask_bias;
        let probs = dropout(&self.dropout, softmax(scores, 3));
        probs
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, seq, hidden])
    }
}

/// Output projection, dropout, residual and layer norm after a sublayer (HF `BertSelfOutput` /
/// `BertOutput`).
#[derive(Module, Debug)]
pub struct BertResidualOutput {
    /// Projection back to `hidden`.
    pub dense: PrunableLinear,
    /// Layer norm of `dropout(dense(x)) + residual`.
    pub LayerNorm: LayerNorm,
    /// Dropout (training only).
    pub dropout: Dropout,
}

impl BertResidualOutput {
    fn new(config: &BertConfig, d_in: usize, device: &Device) -> Self {
        Self {
            dense: bert_linear(config, d_in, config.hidden_size, device),
            LayerNorm: bert_layer_norm(config, device),
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
        }
    }

    /// `LayerNorm(dropout(dense(x)) + residual)`.
    pub fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        self.LayerNorm
            .forward(dropout(&self.dropout, self.dense.forward(x)) + residual)
    }
}

/// Self-attention followed by its output block (HF `BertAttention`).
#[derive(Module, Debug)]
pub struct BertAttention {
    /// HF `attention.self`.
    pub self_attention: BertSelfAttention,
    /// HF `attention.output`.
    pub output: BertResidualOutput,
}

/// The feed-forward expansion (HF `BertIntermediate`).
#[derive(Module, Debug)]
pub struct BertIntermediate {
    /// `[intermediate, hidden]` projection.
    pub dense: PrunableLinear,
    /// Activation (HF `hidden_act`).
    #[module(skip)]
    pub activation: HiddenAct,
}

/// One post-norm encoder layer (HF `BertLayer`).
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Attention block.
    pub attention: BertAttention,
    /// Feed-forward expansion.
    pub intermediate: BertIntermediate,
    /// Feed-forward contraction, residual and layer norm.
    pub output: BertResidualOutput,
}

impl BertLayer {
    /// Creates a layer with fresh weights.
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        let h = config.hidden_size;
        Self {
            attention: BertAttention {
                self_attention: BertSelfAttention {
                    query: bert_linear(config, h, h, device),
                    key: bert_linear(config, h, h, device),
                    value: bert_linear(config, h, h, device),
                    dropout: DropoutConfig::new(config.attention_probs_dropout_prob).init(),
                    num_heads: config.num_attention_heads,
                },
                output: BertResidualOutput::new(config, h, device),
            },
            intermediate: BertIntermediate {
                dense: bert_linear(config, h, config.intermediate_size, device),
                activation: config.hidden_act,
            },
            output: BertResidualOutput::new(config, config.intermediate_size, device),
        }
    }

    /// Applies the layer to `x` `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        let attn = self.attention.self_attention.forward(x.clone(), mask_bias);
        let attn = self.attention.output.forward(attn, x);
        let inter = self
            .intermediate
            .activation
            .forward(self.intermediate.dense.forward(attn.clone()));
        self.output.forward(inter, attn)
    }
}

/// The stack of encoder layers (HF `BertEncoder`).
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// The layers, HF `encoder.layer.N`.
    pub layer: Vec<BertLayer>,
}

impl BertLayer {
    /// The six encoder linears of this layer in HF order: `attention.self.{query,key,value}`,
    /// `attention.output.dense`, `intermediate.dense`, `output.dense`.
    pub fn linears_mut(&mut self) -> [&mut PrunableLinear; 6] {
        let attention = &mut self.attention;
        let s = &mut attention.self_attention;
        [
            &mut s.query,
            &mut s.key,
            &mut s.value,
            &mut attention.output.dense,
            &mut self.intermediate.dense,
            &mut self.output.dense,
        ]
    }
}

impl BertEncoder {
    /// Switches every encoder linear to SparseProp execution on its weight's current
    /// non-zeros (see [`PrunableLinear::set_sparse`]); returns each layer's sparsity, in
    /// [`BertLayer::linears_mut`] order, layer by layer.
    pub fn set_sparse(&mut self, execution: Execution) -> Result<Vec<f64>, LayoutError> {
        let mut out = Vec::new();
        for layer in &mut self.layer {
            for linear in layer.linears_mut() {
                out.push(linear.set_sparse(execution)?);
            }
        }
        Ok(out)
    }

    /// Back to dense execution for every encoder linear.
    pub fn set_dense(&mut self) {
        for layer in &mut self.layer {
            for linear in layer.linears_mut() {
                linear.set_dense();
            }
        }
    }

    /// Creates `num_hidden_layers` fresh layers.
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        Self {
            layer: (0..config.num_hidden_layers)
                .map(|_| BertLayer::new(config, device))
                .collect(),
        }
    }

    /// Runs all layers.
    pub fn forward(&self, mut x: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        for layer in &self.layer {
            x = layer.forward(x, mask_bias.clone());
        }
        x
    }
}
