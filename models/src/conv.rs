//! [`PrunableConv2d`]: the conv layer of the ResNets, beside [`PrunableLinear`](crate::linear::PrunableLinear).
//!
//! The weight is stored in PyTorch layout `[OC, IC, KH, KW]` under the name `weight` (and the
//! optional bias under `bias`), so parameter names and shapes equal a torch state dict.
//! Square kernels, one stride and one zero padding for both directions, `groups = 1`,
//! `dilation = 1`.
//!
//! The layer runs dense by default ([`dense_conv2d`]: im2col + GEMM on the CPU, burn's conv2d
//! on other devices).
//! [`PrunableConv2d::set_sparse`] switches it, at run time, to the SparseProp conv kernels on
//! the current non-zero pattern of its weight (forward and backward, gradients flow back into
//! the dense weight through a differentiable gather); the parameter stays the same dense
//! tensor, so names, records, optimizers and exports do not change.

use std::sync::Arc;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use crate::conv_gemm::dense_conv2d;
use crate::feature_map::{FeatureMap, MapLayout};
use crate::sparseprop::conv::Conv2dGeometry;
use crate::sparseprop::layout::{LayoutError, SparsePattern};
use crate::sparseprop::ops::{
    SparseWeight, is_sparse_cpu_device, sparse_conv2d, sparse_conv2d_chwb,
};
use crate::sparseprop::select::{Execution, decide_conv2d};

/// Configuration of a [`PrunableConv2d`].
#[derive(Config, Debug)]
pub struct PrunableConv2dConfig {
    /// Input channels `IC`.
    pub in_channels: usize,
    /// Output channels `OC`.
    pub out_channels: usize,
    /// Kernel side `K` (the kernel is `K × K`).
    pub kernel_size: usize,
    /// Stride in both directions.
    #[config(default = 1)]
    pub stride: usize,
    /// Zero padding on every side.
    #[config(default = 0)]
    pub padding: usize,
    /// Whether the layer has a bias `[OC]` (initialised to zero).
    #[config(default = false)]
    pub bias: bool,
    /// Initializer of the weight. The default is torchvision's
    /// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`: `N(0, 2 / (OC·K·K))`.
    #[config(
        default = "Initializer::KaimingNormal { gain: std::f64::consts::SQRT_2, fan_out_only: true }"
    )]
    pub initializer: Initializer,
}

/// A 2-D convolution with the weight in PyTorch layout `[OC, IC, K, K]` that can run on the
/// SparseProp kernels.
#[derive(Module, Debug)]
pub struct PrunableConv2d {
    /// Weight, `[OC, IC, K, K]` (PyTorch layout).
    pub weight: Param<Tensor<4>>,
    /// Optional bias, `[OC]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Stride in both directions.
    #[module(skip)]
    pub stride: usize,
    /// Zero padding on every side.
    #[module(skip)]
    pub padding: usize,
    /// The non-zero pattern (over `[OC, IC·K·K]`) the sparse kernels run on, when sparse
    /// execution is on.
    #[module(skip)]
    pub pattern: Option<Arc<SparsePattern>>,
    /// Sparse, dense, or measured choice, when `pattern` is set.
    #[module(skip)]
    pub execution: Execution,
}

impl PrunableConv2dConfig {
    /// Creates the layer on `device`.
    pub fn init(&self, device: &Device) -> PrunableConv2d {
        let k = self.kernel_size;
        let weight = self.initializer.init_with(
            [self.out_channels, self.in_channels, k, k],
            Some(self.in_channels * k * k),
            Some(self.out_channels * k * k),
            device,
        );
        let bias = self
            .bias
            .then(|| Initializer::Zeros.init([self.out_channels], device));
        PrunableConv2d {
            weight,
            bias,
            stride: self.stride,
            padding: self.padding,
            pattern: None,
            execution: Execution::Dense,
        }
    }
}

impl PrunableConv2d {
    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.weight.lazy_shape().dims::<4>()[1]
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.lazy_shape().dims::<4>()[0]
    }

    /// Kernel side.
    pub fn kernel_size(&self) -> usize {
        self.weight.lazy_shape().dims::<4>()[2]
    }

    /// Channels, kernel, stride and padding as the SparseProp kernels take them.
    pub fn geometry(&self) -> Conv2dGeometry {
        Conv2dGeometry {
            in_channels: self.in_channels(),
            out_channels: self.out_channels(),
            kernel: self.kernel_size(),
            stride: self.stride,
            padding: self.padding,
        }
    }

    /// Runs the layer with SparseProp on the current non-zeros of its weight:
    /// `Execution::Sparse` always, `Execution::Auto` when a one-time timing for the input shape
    /// says it pays (see [`decide_conv2d`]). Returns the weight's sparsity.
    ///
    /// The pattern is fixed until the next call: after a mask update, call it again. Weights
    /// off the pattern are treated as zero (masked training keeps them zero).
    pub fn set_sparse(&mut self, execution: Execution) -> Result<f64, LayoutError> {
        let [oc, ic, kh, kw] = self.weight.val().dims();
        let data = self.weight.val().into_data().convert::<f32>();
        let values = data.as_slice::<f32>().expect("converted to f32");
        let (pattern, _) = SparsePattern::from_dense(oc, ic * kh * kw, values, None)?;
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

    /// Whether a forward on an input of logical size `[B, IC, H, W]` on `device` runs the
    /// SparseProp kernels: `Execution::Sparse` always, `Execution::Auto` when a one-time timing
    /// for the shape says it pays (see [`decide_conv2d`]), never without a pattern. Non-CPU
    /// devices run the dense masked path whatever this says.
    pub fn runs_sparse(&self, dims: [usize; 4], device: &Device) -> bool {
        let Some(pattern) = &self.pattern else {
            return false;
        };
        match self.execution {
            Execution::Dense => false,
            Execution::Sparse => true,
            Execution::Auto => {
                let [b, _, h, w] = dims;
                decide_conv2d(pattern, &self.geometry(), (b, h, w), device).sparse
            }
        }
    }

    /// The layout this layer's forward works in for an input of logical size `dims` on
    /// `device`: CHWB where the SparseProp CPU kernels run, NCHW otherwise.
    pub fn preferred_layout(&self, dims: [usize; 4], device: &Device) -> MapLayout {
        if is_sparse_cpu_device(device) && self.runs_sparse(dims, device) {
            MapLayout::Chwb
        } else {
            MapLayout::Nchw
        }
    }

    /// The sparse weight gathered from the dense parameter (differentiably), if there is a
    /// pattern.
    fn sparse_weight(&self) -> Option<SparseWeight> {
        let pattern = self.pattern.as_ref()?;
        let [oc, ic, k, _] = self.weight.val().dims();
        let flat = self.weight.val().reshape([oc, ic * k * k]);
        Some(SparseWeight::gather_from_dense(flat, pattern.clone()))
    }

    /// Applies the layer to `x: [B, IC, H, W]`, giving `[B, OC, OH, OW]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let bias = self.bias.as_ref().map(|b| b.val());
        if self.runs_sparse(x.dims(), &x.device())
            && let Some(weight) = self.sparse_weight()
        {
            return sparse_conv2d(x, &weight, bias, &self.geometry());
        }
        dense_conv2d(x, self.weight.val(), bias, &self.geometry())
    }

    /// Applies the layer to a feature map in either layout. Where the SparseProp CPU kernels
    /// run, the map is taken to (and the output given in) CHWB, so consecutive sparse layers
    /// never change the layout; the dense path takes and gives NCHW.
    pub fn forward_map(&self, x: FeatureMap) -> FeatureMap {
        let chwb = self.preferred_layout(x.dims(), &x.device()) == MapLayout::Chwb;
        match chwb.then(|| self.sparse_weight()).flatten() {
            Some(weight) => {
                let bias = self.bias.as_ref().map(|b| b.val());
                FeatureMap::Chwb(sparse_conv2d_chwb(
                    x.into_chwb(),
                    &weight,
                    bias,
                    &self.geometry(),
                ))
            }
            _ => FeatureMap::Nchw(self.forward(x.into_nchw())),
        }
    }
}
