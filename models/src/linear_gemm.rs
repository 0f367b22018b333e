//! The dense path of [`PrunableLinear`](crate::linear::PrunableLinear) on the CPU:
//! `y = x·Wᵀ` with the weight in its `[out, in]` layout, one GEMM per product on the `gemm`
//! crate burn itself uses, the transposes expressed as strides (burn's `linear` on a
//! transposed weight view copies it to a contiguous layout in the forward and again in the
//! backward), as a backend extension with its own autodiff backward that computes only the
//! gradients autodiff asks for.
//!
//! [`dense_linear`] routes non-CPU devices to [`burn::tensor::module::linear`].

#![allow(deprecated)] // NdArray is deprecated in burn 0.22 but still supported.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Dispatch, Flex, NdArray, TensorMetadata, backend_extension,
};
use burn::tensor::Tensor;
use gemm::Parallelism;

use crate::conv_gemm::{View, matmul};
use crate::output;
use crate::sparseprop::backend::{with_values, write};
use crate::sparseprop::ops::is_sparse_cpu_device;

/// `y: [n, out] = x: [n, in] · wᵀ` for `w: [out, in]`.
pub fn forward(n: usize, x: &[f32], w: &[f32], d_out: usize, d_in: usize) -> Vec<f32> {
    let mut y = output::zeroed(n * d_out);
    matmul(
        (n, d_out, d_in),
        &mut y,
        false,
        View::rows(x, d_in),
        View::transposed(w, d_in),
        Parallelism::Rayon(0),
    );
    y
}

/// `dx: [n, in] = dy: [n, out] · w` for `w: [out, in]`.
pub fn input_grad(n: usize, dy: &[f32], w: &[f32], d_out: usize, d_in: usize) -> Vec<f32> {
    let mut dx = output::zeroed(n * d_in);
    matmul(
        (n, d_in, d_out),
        &mut dx,
        false,
        View::rows(dy, d_out),
        View::rows(w, d_in),
        Parallelism::Rayon(0),
    );
    dx
}

/// `dw: [out, in] = dyᵀ · x` for `dy: [n, out]`, `x: [n, in]`.
pub fn weight_grad(n: usize, dy: &[f32], x: &[f32], d_out: usize, d_in: usize) -> Vec<f32> {
    let mut dw = output::zeroed(d_out * d_in);
    matmul(
        (d_out, d_in, n),
        &mut dw,
        false,
        View::transposed(dy, d_out),
        View::rows(x, d_in),
        Parallelism::Rayon(0),
    );
    dw
}

/// Dense `x·Wᵀ` through the `gemm` crate (no bias: it is added with plain tensor ops).
#[backend_extension(Autodiff, NdArray, Flex)]
pub trait LinearGemmBackend: Backend {
    /// `x: [n, in]` with `weight: [out, in]` → `[n, out]`.
    fn linear_gemm(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
}

fn dims(x: &[usize], w: &[usize]) -> (usize, usize, usize) {
    assert!(
        x.len() == 2 && w.len() == 2,
        "linear_gemm: 2-D input and weight"
    );
    assert_eq!(x[1], w[1], "linear_gemm: input features ≠ weight columns");
    (x[0], x[1], w[0])
}

fn forward_on<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>) -> FloatTensor<B> {
    let device = x.device();
    let (n, d_in, d_out) = dims(x.shape().as_slice(), weight.shape().as_slice());
    let y = with_values::<B, _>(&x, |xv| {
        with_values::<B, _>(&weight, |wv| {
            crate::op_timing::time("linear fwd (GEMM)", || forward(n, xv, wv, d_out, d_in))
        })
    });
    write::<B>(y, vec![n, d_out], &device)
}

impl LinearGemmBackend for Flex {
    fn linear_gemm(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        forward_on::<Self>(x, w)
    }
}

impl LinearGemmBackend for NdArray {
    fn linear_gemm(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        forward_on::<Self>(x, w)
    }
}

/// Backward of [`LinearGemmBackend::linear_gemm`]: `dX` and `dW`, each only when asked for.
#[derive(Debug)]
struct LinearGemmBackward;

impl<B: Backend> Backward<B, 2> for LinearGemmBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, w) = ops.state;
        let device = grad.device();
        let xs = x.shape().as_slice().to_vec();
        let ws = w.shape().as_slice().to_vec();
        let (n, d_in, d_out) = dims(&xs, &ws);
        with_values::<B, _>(&grad, |dy| {
            if let Some(node) = node_w {
                let dw = with_values::<B, _>(&x, |xv| {
                    crate::op_timing::time("linear dW (GEMM)", || {
                        weight_grad(n, dy, xv, d_out, d_in)
                    })
                });
                grads.register::<B>(node.id, write::<B>(dw, ws, &device));
            }
            if let Some(node) = node_x {
                let dx = with_values::<B, _>(&w, |wv| {
                    crate::op_timing::time("linear dX (GEMM)", || {
                        input_grad(n, dy, wv, d_out, d_in)
                    })
                });
                grads.register::<B>(node.id, write::<B>(dx, xs, &device));
            }
        });
    }
}

impl<B: LinearGemmBackend, C: CheckpointStrategy> LinearGemmBackend for Autodiff<B, C> {
    fn linear_gemm(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        match LinearGemmBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xp = x.primitive().clone();
                let wp = weight.primitive().clone();
                let out = B::linear_gemm(xp.clone(), wp.clone());
                prep.finish((xp, wp), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::linear_gemm(x.into_primitive(), weight.into_primitive()))
            }
        }
    }
}

/// Dense `y = x·Wᵀ + b` for `x: [..., in]`, `weight: [out, in]` and the optional `bias:
/// [out]`, giving `[..., out]`: one GEMM per product on the CPU backends,
/// [`burn::tensor::module::linear`] on a transposed view elsewhere. Differentiable in `x`,
/// `weight` and `bias`.
pub fn dense_linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    if !is_sparse_cpu_device(&x.device()) {
        return burn::tensor::module::linear(x, weight.transpose(), bias);
    }
    let dims = x.dims();
    let d_in = dims[D - 1];
    let n: usize = dims[..D - 1].iter().product();
    let d_out = weight.dims()[0];
    let y = Tensor::<2>::from_dispatch(<Dispatch as LinearGemmBackend>::linear_gemm(
        x.reshape([n, d_in]).into_dispatch(),
        weight.into_dispatch(),
    ));
    let y = match bias {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    };
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}
