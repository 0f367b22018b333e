//! [`PrunableLinear`]: the one linear layer type of every BERT linear (encoder, pooler, heads).
//!
//! The weight is stored in PyTorch layout `[out, in]`, so parameter names *and* shapes equal a
//! Hugging Face state dict: loading and export never transpose. burn's stock
//! [`Linear`](burn::nn::Linear) stores `[in, out]` instead.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

/// Configuration of a [`PrunableLinear`].
#[derive(Config, Debug)]
pub struct PrunableLinearConfig {
    /// Number of input features (`in`).
    pub d_input: usize,
    /// Number of output features (`out`).
    pub d_output: usize,
    /// Whether the layer has a bias `[out]`.
    #[config(default = true)]
    pub bias: bool,
    /// Initializer of the weight; the bias (if any) starts at zero, as in Hugging Face BERT.
    #[config(default = "Initializer::Normal { mean: 0.0, std: 0.02 }")]
    pub initializer: Initializer,
}

/// A linear layer `y = x W^T + b` with the weight in PyTorch layout `[out, in]`.
#[derive(Module, Debug)]
pub struct PrunableLinear {
    /// Weight, `[out, in]` (PyTorch / Hugging Face layout).
    pub weight: Param<Tensor<2>>,
    /// Optional bias, `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
}

impl PrunableLinearConfig {
    /// Creates the layer on `device`.
    pub fn init(&self, device: &Device) -> PrunableLinear {
        let weight = self.initializer.init_with(
            [self.d_output, self.d_input],
            Some(self.d_input),
            Some(self.d_output),
            device,
        );
        let bias = self
            .bias
            .then(|| Initializer::Zeros.init([self.d_output], device));
        PrunableLinear { weight, bias }
    }
}

impl PrunableLinear {
    /// Number of input features.
    pub fn d_input(&self) -> usize {
        self.weight.lazy_shape().dims::<2>()[1]
    }

    /// Number of output features.
    pub fn d_output(&self) -> usize {
        self.weight.lazy_shape().dims::<2>()[0]
    }

    /// Applies the layer to `x` of shape `[..., in]`, giving `[..., out]`.
    ///
    /// This is the single forward of every BERT linear. Today it runs the dense path
    /// `x.matmul(W^T) + b`; it is the place where the SparseProp sparse path
    /// (`shears_models::sparseprop`) will plug in, so that encoder, pooler and heads all
    /// switch together.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // `linear` takes the weight as `[in, out]`: a transposed view of our `[out, in]`.
        burn::tensor::module::linear(
            x,
            self.weight.val().transpose(),
            self.bias.as_ref().map(|b| b.val()),
        )
    }
}
