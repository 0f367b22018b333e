//! The SparseProp backend extension: sparse linear and conv2d as custom burn ops with a
//! hand-written autodiff backward, on the CPU backends (Flex, NdArray).
//!
//! GPU backends (Cube / Fusion) are not in the extension: the Tensor-level wrappers in
//! [`super::ops`] route non-CPU devices to a dense masked computation with plain tensor ops.

#![allow(deprecated)] // NdArray is deprecated in burn 0.22 but still supported.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, NdArray, TensorMetadata, backend_extension};
use burn::tensor::{DType, TensorData};

use super::conv::{self, Conv2dGeometry};
use super::layout::SparsePattern;
use super::linear;
use super::simd::Isa;
use crate::feature_map::MapLayout;

/// Sparse ops with fixed patterns; values are a 1-D float tensor in pattern (CSR) order.
#[backend_extension(Autodiff, NdArray, Flex)]
pub trait SparsePropBackend: Backend {
    /// `Y = X·Wᵀ` for `x: [B, in]`, `W` = `pattern` (`[out, in]`) with `values`; `[B, out]`.
    fn sparseprop_linear(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self>;

    /// The values of a dense `weight: [rows, cols]` at `pattern`'s non-zeros, `[nnz]` in CSR
    /// order; the backward scatters their gradient into a dense `[rows, cols]` one (zeros off
    /// the pattern).
    fn sparseprop_gather(
        weight: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self>;

    /// Conv2d with the sparse `[OC, IC, K, K]` weight: `x: [B, IC, H, W]` → `[B, OC, OH, OW]`
    /// for [`MapLayout::Nchw`], `x: [IC, H, W, B]` → `[OC, OH, OW, B]` (the kernels' own
    /// order, no layout change either way) for [`MapLayout::Chwb`].
    fn sparseprop_conv2d(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
        geom: Conv2dGeometry,
        layout: MapLayout,
    ) -> FloatTensor<Self>;
}

/// Reads a CPU primitive as an f32 vector (converting other float dtypes) and its shape.
pub(crate) fn read<B: Backend>(t: FloatTensor<B>) -> (Vec<f32>, Vec<usize>) {
    let shape = t.shape().as_slice().to_vec();
    let mut fut = pin!(B::float_into_data(t));
    let mut cx = Context::from_waker(Waker::noop());
    // CPU backends resolve immediately; yield in the (not expected) pending case.
    let data: TensorData = loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => break r.expect("sparseprop: reading a CPU tensor failed"),
            Poll::Pending => std::thread::yield_now(),
        }
    };
    let data = if data.dtype() == DType::F32 {
        data
    } else {
        data.convert::<f32>()
    };
    let vec = data
        .try_into_vec::<f32>()
        .expect("sparseprop: tensor data is f32 after conversion");
    (vec, shape)
}

/// Runs `f` on a CPU primitive's values as f32: borrowed without a copy from a contiguous f32
/// Flex tensor (autodiff keeps inputs alive for the backward, so `read` would copy them),
/// read (copied, converted) otherwise.
pub(crate) fn with_values<B: Backend, R>(t: &FloatTensor<B>, f: impl FnOnce(&[f32]) -> R) -> R {
    if let Some(flex) = (t as &dyn std::any::Any).downcast_ref::<burn_flex::FlexTensor>()
        && let Some(v) = flex.as_slice::<f32>()
    {
        return f(v);
    }
    let (v, _) = read::<B>(t.clone());
    f(&v)
}

/// Runs `f` on the values of a float tensor as f32: borrowed without a copy from a contiguous
/// f32 tensor of the Flex backend (for element-wise passes over large tensors, such as an
/// optimizer's over every parameter and gradient, that would otherwise copy each input on
/// the calling thread first), read (copied, converted) otherwise.
///
/// # Panics
/// If the tensor cannot be read as f32 (a quantized tensor).
pub fn with_tensor_values<const D: usize, R>(
    t: &burn::tensor::Tensor<D>,
    f: impl FnOnce(&[f32]) -> R,
) -> R {
    let dispatch = t.clone().into_dispatch();
    if let burn::backend::DispatchTensorKind::Flex(burn::backend::BackendTensor::Float(flex)) =
        &dispatch.kind
        && let Some(v) = flex.as_slice::<f32>()
    {
        return f(v);
    }
    let v = t
        .clone()
        .try_into_vec_as::<f32>()
        .expect("a float tensor reads as f32");
    f(&v)
}

/// A CPU primitive of `shape` holding `v`.
pub(crate) fn write<B: Backend>(
    v: Vec<f32>,
    shape: Vec<usize>,
    device: &B::Device,
) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(v, shape), device)
}

/// The sparse linear forward on any CPU backend's primitives.
pub(crate) fn linear_forward<B: Backend>(
    x: FloatTensor<B>,
    values: FloatTensor<B>,
    pattern: &SparsePattern,
) -> FloatTensor<B> {
    let device = x.device();
    let xs = x.shape().as_slice().to_vec();
    assert_eq!(xs.len(), 2, "sparseprop_linear: input must be 2-D");
    let b = xs[0];
    let y = crate::op_timing::time("SparseProp linear fwd", || {
        with_values::<B, _>(&x, |xv| {
            with_values::<B, _>(&values, |vv| {
                linear::forward(pattern, vv, xv, b, Isa::detect())
            })
        })
    });
    write::<B>(y, vec![b, pattern.rows()], &device)
}

/// The sparse linear backward on any CPU backend's primitives: `(dX, dvalues)`.
pub(crate) fn linear_backward<B: Backend>(
    x: FloatTensor<B>,
    values: FloatTensor<B>,
    grad: FloatTensor<B>,
    pattern: &SparsePattern,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let device = x.device();
    let xs = x.shape().as_slice().to_vec();
    let b = xs[0];
    let (dx, dval) = crate::op_timing::time("SparseProp linear bwd", || {
        with_values::<B, _>(&x, |xv| {
            with_values::<B, _>(&values, |vv| {
                with_values::<B, _>(&grad, |gv| {
                    linear::backward(pattern, vv, xv, gv, b, Isa::detect())
                })
            })
        })
    });
    let nnz = dval.len();
    (
        write::<B>(dx, xs, &device),
        write::<B>(dval, vec![nnz], &device),
    )
}

/// The gather of [`SparsePropBackend::sparseprop_gather`] on any CPU backend's primitives:
/// row by row over the pattern, reading the weight in place (no index tensor).
pub(crate) fn gather_forward<B: Backend>(
    weight: FloatTensor<B>,
    pattern: &SparsePattern,
) -> FloatTensor<B> {
    let device = weight.device();
    assert_eq!(
        weight.shape().as_slice(),
        [pattern.rows(), pattern.cols()],
        "sparseprop_gather: weight shape ≠ pattern shape"
    );
    let v = with_values::<B, _>(&weight, |w| pattern.gather(w));
    let n = v.len();
    write::<B>(v, vec![n], &device)
}

/// `(B, H, W)` of a conv input of shape `xs` in `layout`.
fn conv_dims(xs: &[usize], layout: MapLayout) -> (usize, usize, usize) {
    assert_eq!(xs.len(), 4, "sparseprop_conv2d: input must be 4-D");
    match layout {
        MapLayout::Nchw => (xs[0], xs[2], xs[3]),
        MapLayout::Chwb => (xs[3], xs[1], xs[2]),
    }
}

/// The sparse conv2d forward on any CPU backend's primitives.
pub(crate) fn conv2d_forward<B: Backend>(
    x: FloatTensor<B>,
    values: FloatTensor<B>,
    pattern: &SparsePattern,
    geom: &Conv2dGeometry,
    layout: MapLayout,
) -> FloatTensor<B> {
    let device = x.device();
    let xs = x.shape().as_slice().to_vec();
    let (b, h, w) = conv_dims(&xs, layout);
    let (oh, ow) = geom
        .output_size(h, w)
        .expect("sparseprop_conv2d: kernel larger than the padded input");
    let y = crate::op_timing::time("SparseProp conv2d fwd", || {
        with_values::<B, _>(&x, |xv| {
            with_values::<B, _>(&values, |vv| {
                let isa = Isa::detect();
                match layout {
                    MapLayout::Nchw => conv::forward(pattern, vv, geom, xv, (b, h, w), isa),
                    MapLayout::Chwb => {
                        conv::forward_channel_major(pattern, vv, geom, xv, (b, h, w), isa)
                    }
                }
            })
        })
    });
    let shape = match layout {
        MapLayout::Nchw => vec![b, geom.out_channels, oh, ow],
        MapLayout::Chwb => vec![geom.out_channels, oh, ow, b],
    };
    write::<B>(y, shape, &device)
}

/// The sparse conv2d backward on any CPU backend's primitives: `(dX, dvalues)`.
pub(crate) fn conv2d_backward<B: Backend>(
    x: FloatTensor<B>,
    values: FloatTensor<B>,
    grad: FloatTensor<B>,
    pattern: &SparsePattern,
    geom: &Conv2dGeometry,
    layout: MapLayout,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let device = x.device();
    let xs = x.shape().as_slice().to_vec();
    let dimsv = conv_dims(&xs, layout);
    let (dx, dval) = crate::op_timing::time("SparseProp conv2d bwd", || {
        with_values::<B, _>(&x, |xv| {
            with_values::<B, _>(&values, |vv| {
                with_values::<B, _>(&grad, |gv| {
                    let isa = Isa::detect();
                    match layout {
                        MapLayout::Nchw => conv::backward(pattern, vv, geom, xv, gv, dimsv, isa),
                        MapLayout::Chwb => {
                            conv::backward_channel_major(pattern, vv, geom, xv, gv, dimsv, isa)
                        }
                    }
                })
            })
        })
    });
    let nnz = dval.len();
    (
        write::<B>(dx, xs, &device),
        write::<B>(dval, vec![nnz], &device),
    )
}

impl SparsePropBackend for Flex {
    fn sparseprop_linear(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self> {
        linear_forward::<Self>(x, values, &pattern)
    }

    fn sparseprop_gather(
        weight: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self> {
        gather_forward::<Self>(weight, &pattern)
    }

    fn sparseprop_conv2d(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
        geom: Conv2dGeometry,
        layout: MapLayout,
    ) -> FloatTensor<Self> {
        conv2d_forward::<Self>(x, values, &pattern, &geom, layout)
    }
}

impl SparsePropBackend for NdArray {
    fn sparseprop_linear(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self> {
        linear_forward::<Self>(x, values, &pattern)
    }

    fn sparseprop_gather(
        weight: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self> {
        gather_forward::<Self>(weight, &pattern)
    }

    fn sparseprop_conv2d(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
        geom: Conv2dGeometry,
        layout: MapLayout,
    ) -> FloatTensor<Self> {
        conv2d_forward::<Self>(x, values, &pattern, &geom, layout)
    }
}

/// Backward of the sparse linear: `dX` through the CSC pass, `dvalues` at the non-zeros.
#[derive(Debug)]
struct LinearBackward;

impl<B: Backend> Backward<B, 2> for LinearBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, Arc<SparsePattern>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [node_x, node_v] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, values, pattern) = ops.state;
        let (dx, dval) = linear_backward::<B>(x, values, grad, &pattern);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_v {
            grads.register::<B>(node.id, dval);
        }
    }
}

/// Backward of the gather: the values' gradient scattered into a dense one.
#[derive(Debug)]
struct GatherBackward;

impl<B: Backend> Backward<B, 1> for GatherBackward {
    type State = Arc<SparsePattern>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let pattern = ops.state;
            let device = grad.device();
            let dense = with_values::<B, _>(&grad, |g| pattern.to_dense(g))
                .expect("sparseprop_gather: the gradient has one entry per non-zero");
            let shape = vec![pattern.rows(), pattern.cols()];
            grads.register::<B>(node.id, write::<B>(dense, shape, &device));
        }
    }
}

/// Backward of the sparse conv2d.
#[derive(Debug)]
struct Conv2dBackward;

impl<B: Backend> Backward<B, 2> for Conv2dBackward {
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        Arc<SparsePattern>,
        Conv2dGeometry,
        MapLayout,
    );

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [node_x, node_v] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, values, pattern, geom, layout) = ops.state;
        let (dx, dval) = conv2d_backward::<B>(x, values, grad, &pattern, &geom, layout);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_v {
            grads.register::<B>(node.id, dval);
        }
    }
}

impl<B: SparsePropBackend, C: CheckpointStrategy> SparsePropBackend for Autodiff<B, C> {
    fn sparseprop_linear(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self> {
        match LinearBackward
            .prepare::<C>([x.node(), values.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xp = x.primitive().clone();
                let vp = values.primitive().clone();
                let out = B::sparseprop_linear(xp.clone(), vp.clone(), pattern.clone());
                prep.finish((xp, vp, pattern), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::sparseprop_linear(
                x.into_primitive(),
                values.into_primitive(),
                pattern,
            )),
        }
    }

    fn sparseprop_gather(
        weight: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self> {
        match GatherBackward
            .prepare::<C>([weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::sparseprop_gather(weight.primitive().clone(), pattern.clone());
                prep.finish(pattern, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::sparseprop_gather(weight.into_primitive(), pattern))
            }
        }
    }

    fn sparseprop_conv2d(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
        geom: Conv2dGeometry,
        layout: MapLayout,
    ) -> FloatTensor<Self> {
        match Conv2dBackward
            .prepare::<C>([x.node(), values.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xp = x.primitive().clone();
                let vp = values.primitive().clone();
                let out =
                    B::sparseprop_conv2d(xp.clone(), vp.clone(), pattern.clone(), geom, layout);
                prep.finish((xp, vp, pattern, geom, layout), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::sparseprop_conv2d(
                x.into_primitive(),
                values.into_primitive(),
                pattern,
                geom,
                layout,
            )),
        }
    }
}
