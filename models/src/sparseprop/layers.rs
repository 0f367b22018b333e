//! burn modules with a fixed sparsity pattern: [`SparseLinear`] and [`SparseConv2d`].
//!
//! The trainable parameter is the vector of non-zero values (the pattern is fixed and not a
//! parameter), so pruned weights stay exactly zero through any optimizer step. Both layers
//! are built from a dense weight and its mask and convert back to dense.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::{Bool, Tensor, TensorData};

use super::conv::Conv2dGeometry;
use super::layout::{LayoutError, SparsePattern};
use super::ops::{SparseWeight, sparse_conv2d, sparse_linear};
use super::select::{Execution, decide_conv2d, decide_linear};

/// Errors building a sparse layer.
#[derive(Debug, thiserror::Error)]
pub enum SparseLayerError {
    /// The dense weight, mask or bias has the wrong shape.
    #[error("sparse layer: {what} has shape {got:?}, expected {expected:?}")]
    Shape {
        /// Which tensor ("mask", "bias").
        what: &'static str,
        /// The shape given.
        got: Vec<usize>,
        /// The shape expected.
        expected: Vec<usize>,
    },
    /// The geometry is invalid (zero stride or kernel, or not square).
    #[error("sparse conv2d: {0}")]
    Geometry(String),
    /// Building the layout failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

fn to_f32_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 after conversion")
}

fn mask_vec<const D: usize>(m: Tensor<D, Bool>) -> Vec<bool> {
    m.into_data().iter::<bool>().collect()
}

/// A linear layer `y = x·Wᵀ + b` with a fixed sparse weight `W ∈ R^{out × in}`.
#[derive(Module, Debug)]
pub struct SparseLinear {
    /// Non-zero weight values in CSR order of the pattern, `[nnz]`.
    pub values: Param<Tensor<1>>,
    /// Optional bias `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// The fixed pattern over `[out, in]`.
    #[module(skip)]
    pub pattern: Arc<SparsePattern>,
    /// Dense, sparse, or measured choice.
    #[module(skip)]
    pub execution: Execution,
}

impl SparseLinear {
    /// Builds the layer from a dense `[out, in]` weight (PyTorch layout), an optional keep
    /// mask (default: the non-zeros of `weight`) and an optional `[out]` bias.
    pub fn from_dense(
        weight: Tensor<2>,
        mask: Option<Tensor<2, Bool>>,
        bias: Option<Tensor<1>>,
    ) -> Result<Self, SparseLayerError> {
        let [rows, cols] = weight.dims();
        let device = weight.device();
        let mask = match mask {
            Some(m) => {
                if m.dims() != [rows, cols] {
                    return Err(SparseLayerError::Shape {
                        what: "mask",
                        got: m.dims().to_vec(),
                        expected: vec![rows, cols],
                    });
                }
                Some(mask_vec(m))
            }
            None => None,
        };
        if let Some(b) = &bias
            && b.dims() != [rows]
        {
            return Err(SparseLayerError::Shape {
                what: "bias",
                got: b.dims().to_vec(),
                expected: vec![rows],
            });
        }
        let dense = to_f32_vec(weight);
        let (pattern, values) = SparsePattern::from_dense(rows, cols, &dense, mask.as_deref())?;
        let n = values.len();
        Ok(Self {
            values: Param::from_tensor(Tensor::from_data(TensorData::new(values, [n]), &device)),
            bias: bias.map(Param::from_tensor),
            pattern: Arc::new(pattern),
            execution: Execution::Auto,
        })
    }

    /// Sets how the layer executes.
    pub fn with_execution(mut self, execution: Execution) -> Self {
        self.execution = execution;
        self
    }

    /// The current sparse weight (values carry autodiff when the layer is trained).
    pub fn weight(&self) -> SparseWeight {
        SparseWeight {
            values: self.values.val(),
            pattern: self.pattern.clone(),
        }
    }

    /// The dense `[out, in]` weight and the bias.
    pub fn to_dense(&self) -> (Tensor<2>, Option<Tensor<1>>) {
        (
            self.weight().to_dense(),
            self.bias.as_ref().map(|b| b.val()),
        )
    }

    /// Applies the layer to `x: [..., in]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let weight = self.weight();
        let bias = self.bias.as_ref().map(|b| b.val());
        let sparse = match self.execution {
            Execution::Sparse => true,
            Execution::Dense => false,
            Execution::Auto => {
                let dims = x.dims();
                let batch = dims[..D - 1].iter().product();
                decide_linear(&self.pattern, batch, &x.device()).sparse
            }
        };
        if sparse {
            sparse_linear(x, &weight, bias)
        } else {
            let y = x.matmul(weight.to_dense().transpose().unsqueeze());
            match bias {
                Some(b) => y + b.unsqueeze(),
                None => y,
            }
        }
    }
}

/// A conv2d layer with a fixed sparse `[OC, IC, K, K]` weight (square kernel, no groups or
/// dilation).
#[derive(Module, Debug)]
pub struct SparseConv2d {
    /// Non-zero weight values in CSR order of the pattern over `[OC, IC·K·K]`, `[nnz]`.
    pub values: Param<Tensor<1>>,
    /// Optional bias `[OC]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// The fixed pattern over `[OC, IC·K·K]`.
    #[module(skip)]
    pub pattern: Arc<SparsePattern>,
    /// Channels, kernel, stride and padding.
    #[module(skip)]
    pub geometry: Conv2dGeometry,
    /// Dense, sparse, or measured choice.
    #[module(skip)]
    pub execution: Execution,
}

impl SparseConv2d {
    /// Builds the layer from a dense `[OC, IC, K, K]` weight, an optional keep mask (default:
    /// the non-zeros of `weight`), an optional `[OC]` bias, a stride and a zero padding.
    pub fn from_dense(
        weight: Tensor<4>,
        mask: Option<Tensor<4, Bool>>,
        bias: Option<Tensor<1>>,
        stride: usize,
        padding: usize,
    ) -> Result<Self, SparseLayerError> {
        let [oc, ic, kh, kw] = weight.dims();
        if kh != kw || kh == 0 || stride == 0 {
            return Err(SparseLayerError::Geometry(format!(
                "kernel {kh}×{kw}, stride {stride}: need a square non-empty kernel and stride ≥ 1"
            )));
        }
        let device = weight.device();
        let mask = match mask {
            Some(m) => {
                if m.dims() != [oc, ic, kh, kw] {
                    return Err(SparseLayerError::Shape {
                        what: "mask",
                        got: m.dims().to_vec(),
                        expected: vec![oc, ic, kh, kw],
                    });
                }
                Some(mask_vec(m))
            }
            None => None,
        };
        if let Some(b) = &bias
            && b.dims() != [oc]
        {
            return Err(SparseLayerError::Shape {
                what: "bias",
                got: b.dims().to_vec(),
                expected: vec![oc],
            });
        }
        let dense = to_f32_vec(weight);
        let (pattern, values) =
            SparsePattern::from_dense(oc, ic * kh * kw, &dense, mask.as_deref())?;
        let n = values.len();
        Ok(Self {
            values: Param::from_tensor(Tensor::from_data(TensorData::new(values, [n]), &device)),
            bias: bias.map(Param::from_tensor),
            pattern: Arc::new(pattern),
            geometry: Conv2dGeometry {
                in_channels: ic,
                out_channels: oc,
                kernel: kh,
                stride,
                padding,
            },
            execution: Execution::Auto,
        })
    }

    /// Sets how the layer executes.
    pub fn with_execution(mut self, execution: Execution) -> Self {
        self.execution = execution;
        self
    }

    /// The current sparse weight.
    pub fn weight(&self) -> SparseWeight {
        SparseWeight {
            values: self.values.val(),
            pattern: self.pattern.clone(),
        }
    }

    /// The dense `[OC, IC, K, K]` weight and the bias.
    pub fn to_dense(&self) -> (Tensor<4>, Option<Tensor<1>>) {
        let g = &self.geometry;
        (
            self.weight()
                .to_dense()
                .reshape([g.out_channels, g.in_channels, g.kernel, g.kernel]),
            self.bias.as_ref().map(|b| b.val()),
        )
    }

    /// Applies the layer to `x: [B, IC, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let g = self.geometry;
        let sparse = match self.execution {
            Execution::Sparse => true,
            Execution::Dense => false,
            Execution::Auto => {
                let [b, _, h, w] = x.dims();
                decide_conv2d(&self.pattern, &g, (b, h, w), &x.device()).sparse
            }
        };
        let bias = self.bias.as_ref().map(|b| b.val());
        if sparse {
            sparse_conv2d(x, &self.weight(), bias, &g)
        } else {
            let (w, _) = self.to_dense();
            burn::tensor::module::conv2d(
                x,
                w,
                bias,
                burn::tensor::ops::ConvOptions::new([g.stride; 2], [g.padding; 2], [1, 1], 1),
            )
        }
    }
}
