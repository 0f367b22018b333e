//! [`LayerNorm`] with the Hugging Face parameter names `weight` / `bias`.
//!
//! burn's [`LayerNorm`](burn::nn::LayerNorm) names them `gamma` / `beta`; keeping the HF names
//! means checkpoints load and export without remapping.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

/// Configuration of a [`LayerNorm`].
#[derive(Config, Debug)]
pub struct LayerNormConfig {
    /// Size of the normalised (last) dimension.
    pub d_model: usize,
    /// Added to the variance for numerical stability (HF `layer_norm_eps`).
    #[config(default = 1e-12)]
    pub epsilon: f64,
}

/// Layer normalisation over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Scale, `[d_model]` (HF `weight`, burn `gamma`).
    pub weight: Param<Tensor<1>>,
    /// Shift, `[d_model]` (HF `bias`, burn `beta`).
    pub bias: Param<Tensor<1>>,
    /// Added to the variance.
    pub epsilon: f64,
}

impl LayerNormConfig {
    /// Creates the layer on `device` (weight 1, bias 0).
    pub fn init(&self, device: &Device) -> LayerNorm {
        LayerNorm {
            weight: Initializer::Ones.init([self.d_model], device),
            bias: Initializer::Zeros.init([self.d_model], device),
            epsilon: self.epsilon,
        }
    }
}

impl LayerNorm {
    /// Normalises `x` of shape `[..., d_model]` over its last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::layer_norm(x, self.weight.val(), Some(self.bias.val()), self.epsilon)
    }
}
