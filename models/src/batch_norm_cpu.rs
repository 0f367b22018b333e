//! Batch normalisation with batch statistics as two fused CPU ops, for
//! [`BatchNorm2d`](crate::batch_norm::BatchNorm2d) in its training modes.
//!
//! Written with burn tensor ops, a training-mode batch norm is eight broadcast and reduction
//! kernels forward and about twice that backward, each a full pass over the activations; on
//! a CIFAR ResNet that cost as much as the convolutions. Here the forward is one pass for the
//! per-channel statistics ([`batch_stats`]: mean and biased variance, two-pass in f64 per
//! plane so large batches lose no precision) and one for `y = (x − μ)·γ/σ + β`
//! ([`normalize`]); the backward is one reduction pass (`Σ dy`, `Σ dy·x̂`) and one pass for
//! `dX = γ/(σ·N)·(N·dy − Σ dy − x̂·Σ dy·x̂)` ([`normalize_backward`]). Channels and planes run
//! in parallel. [`batch_norm_train`] routes non-CPU devices to the same formula in tensor ops.
//! The normalising pass can also apply what follows a ResNet's batch norms ([`Epilogue`]:
//! `relu(bn(x))`, `relu(bn(x) + shortcut)`), and its backward the ReLU's mask, read from the
//! output ([`batch_norm_train_then`]): two fewer passes each way, the separate ops' bits.

#![allow(deprecated)] // NdArray is deprecated in burn 0.22 but still supported.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Dispatch, Flex, NdArray, TensorMetadata, backend_extension,
};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use rayon::prelude::*;

use crate::output;
use crate::sparseprop::backend::{read, with_values, write};
use crate::sparseprop::ops::is_sparse_cpu_device;

/// `(batch, channels, H·W)` of an NCHW activation.
pub type Dims = (usize, usize, usize);

fn dims_of(shape: &[usize]) -> Dims {
    assert_eq!(shape.len(), 4, "batch norm: input must be 4-D [B, C, H, W]");
    (shape[0], shape[1], shape[2] * shape[3])
}

/// Longest run summed in f32 before the sums go to f64: a CHWB feature map is normalised as
/// one image with a single plane of `H·W·B` values per channel (`crate::feature_map`), and
/// its f32 lane sums would otherwise each add thousands of terms (10⁵ values over 32 lanes).
const SUM_CHUNK: usize = 4096;

/// The planes of channel `c`, `x[b, c, :, :]` for every `b`, in pieces of at most
/// [`SUM_CHUNK`] values.
fn planes(x: &[f32], (b, c, hw): Dims, ch: usize) -> impl Iterator<Item = &[f32]> {
    (0..b).flat_map(move |i| x[(i * c + ch) * hw..][..hw].chunks(SUM_CHUNK))
}

/// Independent partial sums of the plane reductions below: the compiler keeps them in SIMD
/// registers (one f32 accumulator is a serial chain of dependent adds, four cycles each, and
/// made the statistics and the backward sums of a ResNet step cost more than the passes
/// that write whole tensors).
const LANES: usize = 32;

/// `Σ p` in [`LANES`] partial sums.
fn lane_sum(p: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = p.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `Σ (p − m)²` in [`LANES`] partial sums.
fn lane_sum_sq_dev(p: &[f32], m: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = p.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += (v - m) * (v - m);
        }
    }
    let rest: f32 = chunks.remainder().iter().map(|&v| (v - m) * (v - m)).sum();
    acc.iter().sum::<f32>() + rest
}

/// The gradient that reaches the normalisation: `g` itself, or with a fused ReLU after it,
/// `g` where the layer's output `y` is positive and 0 elsewhere (burn's and torch's ReLU
/// derivative, 0 at 0).
#[inline(always)]
fn through_relu<const RELU: bool>(g: f32, y: f32) -> f32 {
    if !RELU || y > 0.0 { g } else { 0.0 }
}

/// `(Σ g, Σ g·(x − m))` over a plane of `x` and its gradient `g` (masked by the output `y`
/// when `RELU`; `y` is any slice of `x`'s length otherwise), in [`LANES`] partial sums.
fn lane_sums_dy<const RELU: bool>(x: &[f32], g: &[f32], y: &[f32], m: f32) -> (f32, f32) {
    let (mut a, mut b) = ([0.0f32; LANES], [0.0f32; LANES]);
    let (mut xc, mut gc) = (x.chunks_exact(LANES), g.chunks_exact(LANES));
    let mut yc = y.chunks_exact(LANES);
    for ((xs, gs), ys) in (&mut xc).zip(&mut gc).zip(&mut yc) {
        for l in 0..LANES {
            let gl = through_relu::<RELU>(gs[l], ys[l]);
            a[l] += gl;
            b[l] += gl * (xs[l] - m);
        }
    }
    let (mut ra, mut rb) = (0.0f32, 0.0f32);
    let rest = xc
        .remainder()
        .iter()
        .zip(gc.remainder())
        .zip(yc.remainder());
    for ((&v, &g), &o) in rest {
        let g = through_relu::<RELU>(g, o);
        ra += g;
        rb += g * (v - m);
    }
    (a.iter().sum::<f32>() + ra, b.iter().sum::<f32>() + rb)
}

/// Per-channel mean and biased variance of `x: [B, C, H, W]`: `[μ₀ … μ_C−1, σ²₀ … σ²_C−1]`.
pub fn batch_stats(x: &[f32], d: Dims) -> Vec<f32> {
    let (b, c, hw) = d;
    assert_eq!(x.len(), b * c * hw, "batch norm: input length");
    let n = (b * hw) as f64;
    let per: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            if n == 0.0 {
                return (f32::NAN, f32::NAN);
            }
            let sum: f64 = planes(x, d, ch).map(|p| lane_sum(p) as f64).sum();
            let mean = sum / n;
            let m = mean as f32;
            let sq: f64 = planes(x, d, ch).map(|p| lane_sum_sq_dev(p, m) as f64).sum();
            // The f32 mean's rounding error, taken out again (`Σ(x − m)² − N·(μ − m)²`).
            let shift = mean - m as f64;
            (m, (sq / n - shift * shift).max(0.0) as f32)
        })
        .collect();
    per.iter()
        .map(|p| p.0)
        .chain(per.iter().map(|p| p.1))
        .collect()
}

/// `1/√(σ² + ε)` per channel from [`batch_stats`]' output.
fn inv_std(stats: &[f32], c: usize, eps: f64) -> Vec<f32> {
    stats[c..]
        .iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect()
}

/// What follows the normalisation inside the fused op (a ResNet's `relu(bn(x))` and
/// `relu(bn(x) + shortcut)`: one pass over the activation instead of three).
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    /// `y = bn(x)`.
    None,
    /// `y = max(bn(x), 0)`.
    Relu,
    /// `y = max(bn(x) + r, 0)` with `r` shaped like `x`.
    AddRelu(&'a [f32]),
}

/// `y = (x − μ)·γ/√(σ² + ε) + β` per channel, with `stats` from [`batch_stats`], followed by
/// `epilogue` (each element rounded exactly as the separate ops round it).
pub fn normalize(
    x: &[f32],
    d: Dims,
    stats: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    epilogue: Epilogue<'_>,
) -> Vec<f32> {
    let (_, c, hw) = d;
    assert_eq!(stats.len(), 2 * c, "batch norm: statistics length");
    if let Epilogue::AddRelu(r) = epilogue {
        assert_eq!(r.len(), x.len(), "batch norm: residual length");
    }
    let inv = inv_std(stats, c, eps);
    if hw == 0 {
        return Vec::new();
    }
    let relu = |v: f32| if v > 0.0 { v } else { 0.0 };
    output::build(
        x.len(),
        hw,
        || (),
        |_, i, yp| {
            let xp = &x[i * hw..][..hw];
            let ch = i % c;
            let scale = gamma[ch] * inv[ch];
            let shift = beta[ch] - stats[ch] * scale;
            let pairs = yp.iter_mut().zip(xp);
            match epilogue {
                Epilogue::None => pairs.for_each(|(o, &v)| *o = v * scale + shift),
                Epilogue::Relu => pairs.for_each(|(o, &v)| *o = relu(v * scale + shift)),
                Epilogue::AddRelu(r) => pairs
                    .zip(&r[i * hw..][..hw])
                    .for_each(|((o, &v), &s)| *o = relu((v * scale + shift) + s)),
            }
        },
    )
}

/// Gradients of [`normalize`] (no epilogue) with the statistics taken as functions of `x` (as
/// autodiff through the plain formula gives them): `(dX, dγ, dβ)`.
pub fn normalize_backward(
    x: &[f32],
    d: Dims,
    stats: &[f32],
    gamma: &[f32],
    eps: f64,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    normalize_backward_masked::<false>(x, d, stats, gamma, eps, dy, &[])
}

/// Gradients of [`normalize`] with [`Epilogue::Relu`], from the op's output `y` (the ReLU
/// mask) and `dy`: `(dX, dγ, dβ)`, without materialising the masked gradient.
pub fn normalize_relu_backward(
    x: &[f32],
    d: Dims,
    stats: &[f32],
    gamma: &[f32],
    eps: f64,
    dy: &[f32],
    y: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(y.len(), x.len(), "batch norm: Y length");
    normalize_backward_masked::<true>(x, d, stats, gamma, eps, dy, y)
}

/// The ReLU's backward alone: `dy` where `y > 0`, 0 elsewhere (for [`Epilogue::AddRelu`]:
/// this is the residual's gradient and the one the normalisation receives).
pub fn relu_backward(dy: &[f32], y: &[f32]) -> Vec<f32> {
    assert_eq!(dy.len(), y.len(), "relu: Y length");
    const CHUNK: usize = 4096;
    output::build(
        dy.len(),
        CHUNK,
        || (),
        |_, i, o| {
            let (g, y) = (&dy[i * CHUNK..][..o.len()], &y[i * CHUNK..][..o.len()]);
            for ((o, &g), &y) in o.iter_mut().zip(g).zip(y) {
                *o = through_relu::<true>(g, y);
            }
        },
    )
}

fn normalize_backward_masked<const RELU: bool>(
    x: &[f32],
    d: Dims,
    stats: &[f32],
    gamma: &[f32],
    eps: f64,
    dy: &[f32],
    y: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (b, c, hw) = d;
    assert_eq!(dy.len(), x.len(), "batch norm: dY length");
    let inv = inv_std(stats, c, eps);
    // Without the ReLU the mask is never read: any slice of x's length stands in for it.
    let y = if RELU { y } else { x };
    // Σ dy and Σ dy·x̂ per channel.
    let sums: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (m, s) = (stats[ch], inv[ch]);
            let (mut sg, mut sgx) = (0.0f64, 0.0f64);
            for ((xp, gp), yp) in planes(x, d, ch)
                .zip(planes(dy, d, ch))
                .zip(planes(y, d, ch))
            {
                let (a, bx) = lane_sums_dy::<RELU>(xp, gp, yp, m);
                sg += a as f64;
                sgx += bx as f64;
            }
            (sg as f32, (sgx * s as f64) as f32)
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s.1).collect();
    let n = (b * hw) as f32;
    if hw == 0 {
        return (Vec::new(), dgamma, dbeta);
    }
    let dx = output::build(
        x.len(),
        hw,
        || (),
        |_, i, dp| {
            let (xp, gp) = (&x[i * hw..][..hw], &dy[i * hw..][..hw]);
            let ch = i % c;
            let (m, s) = (stats[ch], inv[ch]);
            let k = gamma[ch] * s;
            let (mg, mgx) = (dbeta[ch] / n, dgamma[ch] / n);
            let yp = &y[i * hw..][..hw];
            for (((o, &v), &g), &yv) in dp.iter_mut().zip(xp).zip(gp).zip(yp) {
                let g = through_relu::<RELU>(g, yv);
                *o = k * (g - mg - (v - m) * s * mgx);
            }
        },
    );
    (dx, dgamma, dbeta)
}

/// The two ops as a burn backend extension.
#[backend_extension(Autodiff, NdArray, Flex)]
pub trait BatchNormBackend: Backend {
    /// `[2, C]`: per-channel mean and biased variance of `x: [B, C, H, W]` (no gradient).
    fn bn_batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `(x − μ)·γ/√(σ² + ε) + β` with `stats` from [`bn_batch_stats`](Self::bn_batch_stats)
    /// of the same `x`; differentiable in `x` (through the statistics too), `γ` and `β`.
    fn bn_normalize(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;

    /// `max(bn_normalize(x, …), 0)` in one pass; differentiable like
    /// [`bn_normalize`](Self::bn_normalize) followed by a ReLU.
    fn bn_normalize_relu(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;

    /// `max(bn_normalize(x, …) + residual, 0)` in one pass (a residual block's end);
    /// differentiable in `x`, `γ`, `β` and `residual`.
    fn bn_normalize_add_relu(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
}

fn stats_on<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let device = x.device();
    let d = dims_of(x.shape().as_slice());
    let stats = with_values::<B, _>(&x, |xv| {
        crate::op_timing::time("batch norm stats", || batch_stats(xv, d))
    });
    write::<B>(stats, vec![2, d.1], &device)
}

/// The CPU forward: `residual` given means [`Epilogue::AddRelu`], else `relu` picks
/// [`Epilogue::Relu`] or none.
fn normalize_on<B: Backend>(
    x: FloatTensor<B>,
    stats: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    eps: f64,
    relu: bool,
    residual: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    let device = x.device();
    let shape = x.shape().as_slice().to_vec();
    let (sv, _) = read::<B>(stats);
    let (gv, _) = read::<B>(weight);
    let (bv, _) = read::<B>(bias);
    let run = |xv: &[f32], epilogue: Epilogue<'_>| {
        crate::op_timing::time("batch norm normalize", || {
            normalize(xv, dims_of(&shape), &sv, &gv, &bv, eps, epilogue)
        })
    };
    let y = with_values::<B, _>(&x, |xv| match &residual {
        Some(r) => with_values::<B, _>(r, |rv| run(xv, Epilogue::AddRelu(rv))),
        None if relu => run(xv, Epilogue::Relu),
        None => run(xv, Epilogue::None),
    });
    write::<B>(y, shape, &device)
}

macro_rules! cpu_backend {
    ($($backend:ty),*) => {$(
        impl BatchNormBackend for $backend {
            fn bn_batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
                stats_on::<Self>(x)
            }
            fn bn_normalize(
                x: FloatTensor<Self>,
                s: FloatTensor<Self>,
                w: FloatTensor<Self>,
                b: FloatTensor<Self>,
                eps: f64,
            ) -> FloatTensor<Self> {
                normalize_on::<Self>(x, s, w, b, eps, false, None)
            }
            fn bn_normalize_relu(
                x: FloatTensor<Self>,
                s: FloatTensor<Self>,
                w: FloatTensor<Self>,
                b: FloatTensor<Self>,
                eps: f64,
            ) -> FloatTensor<Self> {
                normalize_on::<Self>(x, s, w, b, eps, true, None)
            }
            fn bn_normalize_add_relu(
                x: FloatTensor<Self>,
                s: FloatTensor<Self>,
                w: FloatTensor<Self>,
                b: FloatTensor<Self>,
                r: FloatTensor<Self>,
                eps: f64,
            ) -> FloatTensor<Self> {
                normalize_on::<Self>(x, s, w, b, eps, true, Some(r))
            }
        }
    )*};
}

cpu_backend!(Flex, NdArray);

/// Backward of [`BatchNormBackend::bn_normalize`].
#[derive(Debug)]
struct NormalizeBackward;

impl<B: Backend> Backward<B, 3> for NormalizeBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, stats, weight, eps) = ops.state;
        let device = grad.device();
        let shape = x.shape().as_slice().to_vec();
        let (sv, _) = read::<B>(stats);
        let (gv, _) = read::<B>(weight);
        let d = dims_of(&shape);
        let (dx, dgamma, dbeta) = with_values::<B, _>(&grad, |dy| {
            with_values::<B, _>(&x, |xv| {
                crate::op_timing::time("batch norm bwd", || {
                    normalize_backward(xv, d, &sv, &gv, eps, dy)
                })
            })
        });
        if let Some(node) = node_x {
            grads.register::<B>(node.id, write::<B>(dx, shape, &device));
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, write::<B>(dgamma, vec![d.1], &device));
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, write::<B>(dbeta, vec![d.1], &device));
        }
    }
}

/// Backward of [`BatchNormBackend::bn_normalize_relu`]: the ReLU mask is the op's output.
#[derive(Debug)]
struct NormalizeReluBackward;

/// Backward of [`BatchNormBackend::bn_normalize_add_relu`].
#[derive(Debug)]
struct NormalizeAddReluBackward;

/// What the fused ops' backwards keep: `x`, the statistics, `γ`, the output `y`, `ε`.
type FusedState<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    f64,
);

/// `(dX, dγ, dβ, the gradient reaching the normalisation)` of a fused op from its state and
/// `dy`; with `add`, the last is materialised (it is also the residual's gradient).
fn fused_backward<B: Backend>(
    state: FusedState<B>,
    grad: &FloatTensor<B>,
    add: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let (x, stats, weight, y, eps) = state;
    let d = dims_of(x.shape().as_slice());
    let (sv, _) = read::<B>(stats);
    let (gv, _) = read::<B>(weight);
    with_values::<B, _>(grad, |dy| {
        with_values::<B, _>(&x, |xv| {
            with_values::<B, _>(&y, |yv| {
                crate::op_timing::time("batch norm bwd", || {
                    if add {
                        let g = relu_backward(dy, yv);
                        let (dx, dgamma, dbeta) = normalize_backward(xv, d, &sv, &gv, eps, &g);
                        (dx, dgamma, dbeta, Some(g))
                    } else {
                        let (dx, dgamma, dbeta) =
                            normalize_relu_backward(xv, d, &sv, &gv, eps, dy, yv);
                        (dx, dgamma, dbeta, None)
                    }
                })
            })
        })
    })
}

/// Registers `dX`, `dγ`, `dβ` (and the residual's gradient) for the parents that track one.
fn register_fused<B: Backend>(
    grads: &mut Gradients,
    parents: &[Option<NodeId>],
    shape: Vec<usize>,
    device: &B::Device,
    (dx, dgamma, dbeta, dres): (Vec<f32>, Vec<f32>, Vec<f32>, Option<Vec<f32>>),
) {
    let c = shape[1];
    let outs = [
        Some((dx, shape.clone())),
        Some((dgamma, vec![c])),
        Some((dbeta, vec![c])),
        dres.map(|g| (g, shape)),
    ];
    for (node, out) in parents.iter().zip(outs) {
        if let (Some(id), Some((v, s))) = (node, out) {
            grads.register::<B>(*id, write::<B>(v, s, device));
        }
    }
}

impl<B: Backend> Backward<B, 3> for NormalizeReluBackward {
    type State = FusedState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let shape = ops.state.0.shape().as_slice().to_vec();
        let out = fused_backward::<B>(ops.state, &grad, false);
        let ids = ops.parents.map(|p| p.map(|n| n.id));
        register_fused::<B>(grads, &ids, shape, &grad.device(), out);
    }
}

impl<B: Backend> Backward<B, 4> for NormalizeAddReluBackward {
    type State = FusedState<B>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let shape = ops.state.0.shape().as_slice().to_vec();
        let out = fused_backward::<B>(ops.state, &grad, true);
        let ids = ops.parents.map(|p| p.map(|n| n.id));
        register_fused::<B>(grads, &ids, shape, &grad.device(), out);
    }
}

impl<B: BatchNormBackend, C: CheckpointStrategy> BatchNormBackend for Autodiff<B, C> {
    fn bn_batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        <FloatTensor<Self>>::new(B::bn_batch_stats(x.into_primitive()))
    }

    fn bn_normalize(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let sp = stats.into_primitive();
        match NormalizeBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xp = x.primitive().clone();
                let wp = weight.primitive().clone();
                let out = B::bn_normalize(
                    xp.clone(),
                    sp.clone(),
                    wp.clone(),
                    bias.into_primitive(),
                    eps,
                );
                prep.finish((xp, sp, wp, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::bn_normalize(
                x.into_primitive(),
                sp,
                weight.into_primitive(),
                bias.into_primitive(),
                eps,
            )),
        }
    }

    fn bn_normalize_relu(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let sp = stats.into_primitive();
        match NormalizeReluBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xp = x.primitive().clone();
                let wp = weight.primitive().clone();
                let out = B::bn_normalize_relu(
                    xp.clone(),
                    sp.clone(),
                    wp.clone(),
                    bias.into_primitive(),
                    eps,
                );
                prep.finish((xp, sp, wp, out.clone(), eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::bn_normalize_relu(
                x.into_primitive(),
                sp,
                weight.into_primitive(),
                bias.into_primitive(),
                eps,
            )),
        }
    }

    fn bn_normalize_add_relu(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let sp = stats.into_primitive();
        match NormalizeAddReluBackward
            .prepare::<C>([x.node(), weight.node(), bias.node(), residual.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xp = x.primitive().clone();
                let wp = weight.primitive().clone();
                let out = B::bn_normalize_add_relu(
                    xp.clone(),
                    sp.clone(),
                    wp.clone(),
                    bias.into_primitive(),
                    residual.into_primitive(),
                    eps,
                );
                prep.finish((xp, sp, wp, out.clone(), eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::bn_normalize_add_relu(
                x.into_primitive(),
                sp,
                weight.into_primitive(),
                bias.into_primitive(),
                residual.into_primitive(),
                eps,
            )),
        }
    }
}

/// What follows a batch norm in the same op: nothing, a ReLU, or a residual sum and a ReLU.
#[derive(Debug, Clone)]
pub enum Activation {
    /// `bn(x)`.
    Identity,
    /// `relu(bn(x))`.
    Relu,
    /// `relu(bn(x) + residual)`, the residual shaped like `x`.
    AddRelu(Box<Tensor<4>>),
}

impl Activation {
    /// Applies the activation to an already normalised `y` with burn tensor ops (the path of
    /// the evaluation mode and of non-CPU devices).
    pub fn apply(self, y: Tensor<4>) -> Tensor<4> {
        match self {
            Activation::Identity => y,
            Activation::Relu => relu(y),
            Activation::AddRelu(r) => relu(y + *r),
        }
    }
}

/// Training-mode batch norm of `x: [B, C, H, W]` with `weight`/`bias: [C]`: returns `y` and
/// the batch's per-channel mean and biased variance (`[C]` each, without gradient). Fused
/// CPU ops on Flex and NdArray, tensor ops elsewhere; differentiable in `x`, `weight`, `bias`.
pub fn batch_norm_train(
    x: Tensor<4>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    batch_norm_train_then(x, weight, bias, eps, Activation::Identity)
}

/// [`batch_norm_train`] followed by `activation`, fused into the normalisation pass on Flex and
/// NdArray (values and gradients equal to the separate ops': the same roundings, the ReLU's
/// derivative 0 at 0), the separate tensor ops elsewhere. Differentiable in `x`, `weight`,
/// `bias` and the residual.
pub fn batch_norm_train_then(
    x: Tensor<4>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
    activation: Activation,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    let [_, c, _, _] = x.dims();
    if !is_sparse_cpu_device(&x.device()) {
        let mean = x.clone().mean_dim(0).mean_dim(2).mean_dim(3);
        let centered = x - mean.clone();
        let var = (centered.clone() * centered.clone())
            .mean_dim(0)
            .mean_dim(2)
            .mean_dim(3);
        let y = centered / (var.clone() + eps).sqrt() * weight.reshape([1, c, 1, 1])
            + bias.reshape([1, c, 1, 1]);
        let y = activation.apply(y);
        return (y, mean.detach().reshape([c]), var.detach().reshape([c]));
    }
    let stats = Tensor::<2>::from_dispatch(<Dispatch as BatchNormBackend>::bn_batch_stats(
        x.clone().into_dispatch(),
    ));
    let (x, s, w, b) = (
        x.into_dispatch(),
        stats.clone().into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    );
    let y = Tensor::<4>::from_dispatch(match activation {
        Activation::Identity => <Dispatch as BatchNormBackend>::bn_normalize(x, s, w, b, eps),
        Activation::Relu => <Dispatch as BatchNormBackend>::bn_normalize_relu(x, s, w, b, eps),
        Activation::AddRelu(r) => <Dispatch as BatchNormBackend>::bn_normalize_add_relu(
            x,
            s,
            w,
            b,
            (*r).into_dispatch(),
            eps,
        ),
    });
    let mean = stats.clone().slice([0..1, 0..c]).reshape([c]);
    let var = stats.slice([1..2, 0..c]).reshape([c]);
    (y, mean, var)
}
