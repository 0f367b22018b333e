//! Tensor-level entry points: one function per layer kind, whatever the device.
//!
//! On the CPU backends (Flex, NdArray, with or without autodiff) they run the SparseProp
//! kernels through [`SparsePropBackend`]; on any other device (Cube / Fusion GPUs) they build
//! the dense masked weight with differentiable tensor ops and call the dense op, so models
//! call one function everywhere and get the same gradients.

use std::sync::Arc;

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};

use super::backend::SparsePropBackend;
use super::conv::Conv2dGeometry;
use super::layout::SparsePattern;
use crate::feature_map::MapLayout;

/// A sparse weight: fixed pattern plus a 1-D tensor of the non-zero values in pattern order.
///
/// For a linear layer the pattern is `[out, in]` (PyTorch layout, rows = output neurons);
/// for a conv2d it is `[OC, IC·K·K]`.
#[derive(Debug, Clone)]
pub struct SparseWeight {
    /// Non-zero values, `[nnz]`, in CSR order of `pattern` (may carry autodiff).
    pub values: Tensor<1>,
    /// The fixed non-zero pattern.
    pub pattern: Arc<SparsePattern>,
}

impl SparseWeight {
    /// Gathers the values at `pattern` from a dense `[rows, cols]` weight tensor with a
    /// differentiable `select`, so gradients flow back into the dense tensor (zero at the
    /// pruned positions). This lets a dense-parameter layer (e.g. BERT's `PrunableLinear`,
    /// weight `[out, in]`) run the sparse kernels without changing its parameters.
    pub fn gather_from_dense(weight: Tensor<2>, pattern: Arc<SparsePattern>) -> Self {
        let [rows, cols] = weight.dims();
        assert_eq!(
            (rows, cols),
            (pattern.rows(), pattern.cols()),
            "SparseWeight::gather_from_dense: weight shape does not match the pattern"
        );
        let device = weight.device();
        let values = if is_sparse_cpu_device(&device) {
            // Row by row over the pattern, in place: no index tensor, no generic gather.
            Tensor::<1>::from_dispatch(<Dispatch as SparsePropBackend>::sparseprop_gather(
                weight.into_dispatch(),
                pattern.clone(),
            ))
        } else {
            weight
                .reshape([rows * cols])
                .select(0, index_tensor(&pattern, &device))
        };
        Self { values, pattern }
    }

    /// The dense `[rows, cols]` weight (zeros off the pattern), differentiable in the values.
    pub fn to_dense(&self) -> Tensor<2> {
        let (rows, cols) = (self.pattern.rows(), self.pattern.cols());
        let device = self.values.device();
        Tensor::<1>::zeros([rows * cols], &device)
            .scatter(
                0,
                index_tensor(&self.pattern, &device),
                self.values.clone(),
                IndexingUpdateOp::Add,
            )
            .reshape([rows, cols])
    }
}

fn index_tensor(pattern: &SparsePattern, device: &Device) -> Tensor<1, Int> {
    let idx: Vec<i64> = pattern
        .flat_indices()
        .into_iter()
        .map(|i| i as i64)
        .collect();
    let n = idx.len();
    Tensor::from_data(TensorData::new(idx, [n]), device)
}

/// Whether `device` runs the SparseProp CPU kernels (Flex or NdArray, autodiff or not).
pub fn is_sparse_cpu_device(device: &Device) -> bool {
    #[allow(deprecated)]
    let cpu = matches!(
        device.clone().inner().as_dispatch(),
        DispatchDevice::Flex(_) | DispatchDevice::NdArray(_)
    );
    cpu
}

/// Sparse linear `y = x·Wᵀ + b` for `x: [..., in]` and `weight` over `[out, in]`;
/// returns `[..., out]`. Autodiff gives gradients for `x`, the values and the bias.
pub fn sparse_linear<const D: usize>(
    x: Tensor<D>,
    weight: &SparseWeight,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let dims = x.dims();
    let (rows, cols) = (weight.pattern.rows(), weight.pattern.cols());
    assert_eq!(
        dims[D - 1],
        cols,
        "sparse_linear: input features ≠ weight columns"
    );
    let batch: usize = dims[..D - 1].iter().product();
    let x2: Tensor<2> = x.reshape([batch, cols]);
    let y2 = if is_sparse_cpu_device(&x2.device()) {
        Tensor::<2>::from_dispatch(<Dispatch as SparsePropBackend>::sparseprop_linear(
            x2.into_dispatch(),
            weight.values.clone().into_dispatch(),
            weight.pattern.clone(),
        ))
    } else {
        x2.matmul(weight.to_dense().transpose())
    };
    let y2 = match bias {
        Some(b) => y2 + b.reshape([1, rows]),
        None => y2,
    };
    let mut out = dims;
    out[D - 1] = rows;
    y2.reshape(out)
}

/// Checks an input's channels `c` and spatial size `(h, w)` against `geom` (`what` names the
/// entry point in the panic message).
fn check_conv_input(what: &str, (c, h, w): (usize, usize, usize), geom: &Conv2dGeometry) {
    assert_eq!(c, geom.in_channels, "{what}: input channels ≠ geometry");
    assert!(
        geom.output_size(h, w).is_some(),
        "{what}: kernel larger than the padded input"
    );
}

/// The CPU kernels' conv2d of `x` in `layout`, plus the bias on the output's channel axis.
fn cpu_conv2d(
    x: Tensor<4>,
    weight: &SparseWeight,
    bias: Option<Tensor<1>>,
    geom: &Conv2dGeometry,
    layout: MapLayout,
) -> Tensor<4> {
    let y = Tensor::<4>::from_dispatch(<Dispatch as SparsePropBackend>::sparseprop_conv2d(
        x.into_dispatch(),
        weight.values.clone().into_dispatch(),
        weight.pattern.clone(),
        *geom,
        layout,
    ));
    let oc = geom.out_channels;
    match (bias, layout) {
        (Some(b), MapLayout::Nchw) => y + b.reshape([1, oc, 1, 1]),
        (Some(b), MapLayout::Chwb) => y + b.reshape([oc, 1, 1, 1]),
        (None, _) => y,
    }
}

/// Sparse conv2d of `x: [B, IC, H, W]` with `weight` over `[OC, IC·K·K]` and `geom`;
/// returns `[B, OC, OH, OW]`.
pub fn sparse_conv2d(
    x: Tensor<4>,
    weight: &SparseWeight,
    bias: Option<Tensor<1>>,
    geom: &Conv2dGeometry,
) -> Tensor<4> {
    let [_, c, h, w] = x.dims();
    check_conv_input("sparse_conv2d", (c, h, w), geom);
    if is_sparse_cpu_device(&x.device()) {
        cpu_conv2d(x, weight, bias, geom, MapLayout::Nchw)
    } else {
        let k = geom.kernel;
        let wd = weight
            .to_dense()
            .reshape([geom.out_channels, geom.in_channels, k, k]);
        conv2d(
            x,
            wd,
            bias,
            ConvOptions::new([geom.stride; 2], [geom.padding; 2], [1, 1], 1),
        )
    }
}

/// Sparse conv2d in the kernels' own channel-major order: `x: [IC, H, W, B]` → `[OC, OH, OW,
/// B]` (see [`crate::feature_map`]), with no layout change on the CPU backends. Other devices
/// run [`sparse_conv2d`] between two permutes.
pub fn sparse_conv2d_chwb(
    x: Tensor<4>,
    weight: &SparseWeight,
    bias: Option<Tensor<1>>,
    geom: &Conv2dGeometry,
) -> Tensor<4> {
    let [c, h, w, _] = x.dims();
    check_conv_input("sparse_conv2d_chwb", (c, h, w), geom);
    if !is_sparse_cpu_device(&x.device()) {
        return sparse_conv2d(x.permute([3, 0, 1, 2]), weight, bias, geom).permute([1, 2, 3, 0]);
    }
    cpu_conv2d(x, weight, bias, geom, MapLayout::Chwb)
}
