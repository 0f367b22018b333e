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
use rayon::prelude::*;

use crate::sparseprop::backend::{read, with_values, write};
use crate::sparseprop::ops::is_sparse_cpu_device;

/// `(batch, channels, H·W)` of an NCHW activation.
pub type Dims = (usize, usize, usize);

fn dims_of(shape: &[usize]) -> Dims {
    assert_eq!(shape.len(), 4, "batch norm: input must be 4-D [B, C, H, W]");
    (shape[0], shape[1], shape[2] * shape[3])
}

/// The planes of channel `c`: `x[b, c, :, :]` for every `b`.
fn planes(x: &[f32], (b, c, hw): Dims, ch: usize) -> impl Iterator<Item = &[f32]> {
    (0..b).map(move |i| &x[(i * c + ch) * hw..][..hw])
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

/// `(Σ g, Σ g·(x − m))` over a plane of `x` and its gradient `g`, in [`LANES`] partial sums.
fn lane_sums_dy(x: &[f32], g: &[f32], m: f32) -> (f32, f32) {
    let (mut a, mut b) = ([0.0f32; LANES], [0.0f32; LANES]);
    let (mut xc, mut gc) = (x.chunks_exact(LANES), g.chunks_exact(LANES));
    for (xs, gs) in (&mut xc).zip(&mut gc) {
        for l in 0..LANES {
            a[l] += gs[l];
            b[l] += gs[l] * (xs[l] - m);
        }
    }
    let (mut ra, mut rb) = (0.0f32, 0.0f32);
    for (&v, &g) in xc.remainder().iter().zip(gc.remainder()) {
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

/// `y = (x − μ)·γ/√(σ² + ε) + β` per channel, with `stats` from [`batch_stats`].
pub fn normalize(
    x: &[f32],
    d: Dims,
    stats: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> Vec<f32> {
    let (_, c, hw) = d;
    assert_eq!(stats.len(), 2 * c, "batch norm: statistics length");
    let inv = inv_std(stats, c, eps);
    let mut y = vec![0.0f32; x.len()];
    if hw == 0 {
        return y;
    }
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(i, (yp, xp))| {
            let ch = i % c;
            let scale = gamma[ch] * inv[ch];
            let shift = beta[ch] - stats[ch] * scale;
            for (o, &v) in yp.iter_mut().zip(xp) {
                *o = v * scale + shift;
            }
        });
    y
}

/// Gradients of [`normalize`] with the statistics taken as functions of `x` (as autodiff
/// through the plain formula gives them): `(dX, dγ, dβ)`.
pub fn normalize_backward(
    x: &[f32],
    d: Dims,
    stats: &[f32],
    gamma: &[f32],
    eps: f64,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (b, c, hw) = d;
    assert_eq!(dy.len(), x.len(), "batch norm: dY length");
    let inv = inv_std(stats, c, eps);
    // Σ dy and Σ dy·x̂ per channel.
    let sums: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (m, s) = (stats[ch], inv[ch]);
            let (mut sg, mut sgx) = (0.0f64, 0.0f64);
            for (xp, gp) in planes(x, d, ch).zip(planes(dy, d, ch)) {
                let (a, bx) = lane_sums_dy(xp, gp, m);
                sg += a as f64;
                sgx += bx as f64;
            }
            (sg as f32, (sgx * s as f64) as f32)
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s.1).collect();
    let n = (b * hw) as f32;
    let mut dx = vec![0.0f32; x.len()];
    if hw == 0 {
        return (dx, dgamma, dbeta);
    }
    dx.par_chunks_mut(hw)
        .zip(x.par_chunks(hw).zip(dy.par_chunks(hw)))
        .enumerate()
        .for_each(|(i, (dp, (xp, gp)))| {
            let ch = i % c;
            let (m, s) = (stats[ch], inv[ch]);
            let k = gamma[ch] * s;
            let (mg, mgx) = (dbeta[ch] / n, dgamma[ch] / n);
            for ((o, &v), &g) in dp.iter_mut().zip(xp).zip(gp) {
                *o = k * (g - mg - (v - m) * s * mgx);
            }
        });
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
}

fn stats_on<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let device = x.device();
    let d = dims_of(x.shape().as_slice());
    let stats = with_values::<B, _>(&x, |xv| {
        crate::op_timing::time("batch norm stats", || batch_stats(xv, d))
    });
    write::<B>(stats, vec![2, d.1], &device)
}

fn normalize_on<B: Backend>(
    x: FloatTensor<B>,
    stats: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let device = x.device();
    let shape = x.shape().as_slice().to_vec();
    let (sv, _) = read::<B>(stats);
    let (gv, _) = read::<B>(weight);
    let (bv, _) = read::<B>(bias);
    let y = with_values::<B, _>(&x, |xv| {
        crate::op_timing::time("batch norm normalize", || {
            normalize(xv, dims_of(&shape), &sv, &gv, &bv, eps)
        })
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
                normalize_on::<Self>(x, s, w, b, eps)
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
        return (y, mean.detach().reshape([c]), var.detach().reshape([c]));
    }
    let stats = Tensor::<2>::from_dispatch(<Dispatch as BatchNormBackend>::bn_batch_stats(
        x.clone().into_dispatch(),
    ));
    let y = Tensor::<4>::from_dispatch(<Dispatch as BatchNormBackend>::bn_normalize(
        x.into_dispatch(),
        stats.clone().into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        eps,
    ));
    let mean = stats.clone().slice([0..1, 0..c]).reshape([c]);
    let var = stats.slice([1..2, 0..c]).reshape([c]);
    (y, mean, var)
}
