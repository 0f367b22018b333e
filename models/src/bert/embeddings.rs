//! [`BertEmbeddings`]: word + position + token-type embeddings, layer norm, dropout.

#![allow(non_snake_case)] // `LayerNorm` is the HF parameter name.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer};
use burn::tensor::{Device, Int, Tensor};

use super::config::BertConfig;
use crate::dropout::dropout;
use crate::layer_norm::{LayerNorm, LayerNormConfig};

/// The embedding block of BERT (HF `BertEmbeddings`, absolute positions).
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// Token embeddings, `[vocab_size, hidden]`.
    pub word_embeddings: Embedding,
    /// Absolute position embeddings, `[max_position_embeddings, hidden]`.
    pub position_embeddings: Embedding,
    /// Segment embeddings, `[type_vocab_size, hidden]`.
    pub token_type_embeddings: Embedding,
    /// Layer norm after the sum.
    pub LayerNorm: LayerNorm,
    /// Dropout after the layer norm (training only).
    pub dropout: Dropout,
}

impl BertEmbeddings {
    /// Creates the block with fresh weights (normal, std `initializer_range`).
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        let emb = |n: usize| {
            EmbeddingConfig::new(n, config.hidden_size)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: config.initializer_range,
                })
                .init(device)
        };
        Self {
            word_embeddings: emb(config.vocab_size),
            position_embeddings: emb(config.max_position_embeddings),
            token_type_embeddings: emb(config.type_vocab_size),
            LayerNorm: LayerNormConfig::new(config.hidden_size)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
        }
    }

    /// Embeds `input_ids` / `token_type_ids`, both `[batch, seq]`, into `[batch, seq, hidden]`.
    /// Positions are `0..seq`.
    pub fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        let [batch, seq] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
            .unsqueeze::<2>()
            .repeat_dim(0, batch);
        let x = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(positions)
            + self.token_type_embeddings.forward(token_type_ids);
        dropout(&self.dropout, self.LayerNorm.forward(x))
    }
}
