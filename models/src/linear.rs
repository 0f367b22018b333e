//! [`PrunableLinear`]: the one linear layer type of every BERT linear (encoder, pooler, heads).
//!
//! The weight is stored in PyTorch layout `[out, in]`, so parameter names *and* shapes equal a
//! Hugging Face state dict: loading and export never transpose. burn's stock
//! [`Linear`](burn::nn::Linear) stores `[in, out]` instead.
//!
//! The layer runs dense by default. [`PrunableLinear::set_sparse`] switches it, at run time,
//! to the SparseProp kernels on the current non-zero pattern of its weight (forward and
//! backward); the parameter stays the same dense `[out, in]` tensor, so names, records,
//! optimizers and exports do not change.

use std::sync::Arc;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use crate::sparseprop::layout::{LayoutError, SparsePattern};
use crate::sparseprop::ops::{SparseWeight, sparse_linear};
use crate::sparseprop::select::{Execution, decide_linear};

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
    /// The non-zero pattern the sparse kernels run on, when sparse execution is on.
    #[module(skip)]
    pub pattern: Option<Arc<SparsePattern>>,
    /// Sparse, dense, or measured choice, when `pattern` is set.
    #[module(skip)]
    pub execution: Execution,
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
        PrunableLinear {
            weight,
            bias,
            pattern: None,
            execution: Execution::Dense,
        }
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

    /// Runs the layer with SparseProp on the current non-zeros of its weight:
    /// `Execution::Sparse` always, `Execution::Auto` when the layer is sparse enough and a
    /// one-time timing says it pays (see [`decide_linear`]). Returns the weight's sparsity.
    ///
    /// The pattern is fixed until the next call: after a mask update, call it again. Weights
    /// off the pattern are treated as zero (masked training keeps them zero).
    pub fn set_sparse(&mut self, execution: Execution) -> Result<f64, LayoutError> {
        let [rows, cols] = self.weight.val().dims();
        let data = self.weight.val().into_data().convert::<f32>();
        let values = data.as_slice::<f32>().expect("converted to f32");
        let (pattern, _) = SparsePattern::from_dense(rows, cols, values, None)?;
        let sparsity = pattern.sparsity();
        self.pattern = Some(Arc::new(pattern));
        self.execution = execution;
        Ok(sparsity)
    }

    /// Back to the dense path.
    pub fn set_dense(&mut self) {
        self.pattern = None;
        self.execution = Execution::Dense;
    }

    /// Whether the next forward may use the sparse kernels.
    pub fn is_sparse(&self) -> bool {
        self.pattern.is_some() && self.execution != Execution::Dense
    }

    /// Applies the layer to `x` of shape `[..., in]`, giving `[..., out]`.
    ///
    /// This is the single forward of every BERT linear: dense `x.matmul(W^T) + b`, or the
    /// SparseProp kernels when [`set_sparse`](Self::set_sparse) switched them on.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if let Some(pattern) = &self.pattern {
            let sparse = match self.execution {
                Execution::Dense => false,
                Execution::Sparse => true,
                Execution::Auto => {
                    let dims = x.dims();
                    let batch = dims[..D - 1].iter().product();
                    decide_linear(pattern, batch, &x.device()).sparse
                }
            };
            if sparse {
                let weight = SparseWeight::gather_from_dense(self.weight.val(), pattern.clone());
                return sparse_linear(x, &weight, self.bias.as_ref().map(|b| b.val()));
            }
        }
        crate::linear_gemm::dense_linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }
}
