//! Scaled dot-product self-attention for inference on the CPU backends, as one op.
//!
//! Written as tensor ops, a BERT attention makes six passes over the whole
//! `[batch, heads, seq, seq]` score tensor (scale, mask, and the softmax's max, exp, sum and
//! division, the exp through scalar `libm`) and copies Q, K, V and the context between the
//! linears' `[batch, seq, heads·head_dim]` layout and the heads-first one. Here each
//! `(sequence, head)` pair is one task: `S = Q·Kᵀ` read straight from the linears' layout
//! (strided GEMM), the masked softmax of `S` in place while it is in L1/L2 (vectorised
//! `exp`), `P·V` into a `seq × head_dim` tile, written into the context in the linears'
//! layout. There is no backward: the op is for inference (no autodiff, hence no attention
//! dropout); training keeps the tensor-op form, whose gradients burn derives.

#![allow(deprecated)] // NdArray is deprecated in burn 0.22 but still supported.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, NdArray, TensorMetadata, backend_extension};
use burn::tensor::{Device, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::activation::softmax_rows_on;
use crate::conv_gemm::{View, matmul};
use crate::sparseprop::backend::{with_values, write};
use crate::sparseprop::simd::Isa;

/// `softmax(scale·Q·Kᵀ + bias)·V` per sequence and head.
///
/// `q`, `k`, `v`: `[batch, seq, heads·head_dim]` (each token's heads side by side, as the
/// projections produce them); `bias`: `[batch, seq]`, added to every query's score of key
/// `j` (0 for tokens, a large negative number for padding). Returns the context in the same
/// layout as `q`.
///
/// # Panics
/// If the slice lengths do not match the shape.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: &[f32],
    (batch, seq, heads, head_dim): (usize, usize, usize, usize),
    scale: f32,
    isa: Isa,
) -> Vec<f32> {
    let hidden = heads * head_dim;
    let n = batch * seq * hidden;
    assert!(
        q.len() == n && k.len() == n && v.len() == n,
        "attention: q/k/v ≠ batch × seq × heads·head_dim"
    );
    assert_eq!(bias.len(), batch * seq, "attention: bias ≠ batch × seq");
    let mut out = vec![0.0f32; n];
    if n == 0 {
        return out;
    }
    let tiles: Vec<Vec<f32>> = (0..batch * heads)
        .into_par_iter()
        .map(|t| {
            let (b, h) = (t / heads, t % heads);
            let base = b * seq * hidden + h * head_dim;
            let mut s = vec![0.0f32; seq * seq];
            matmul(
                (seq, seq, head_dim),
                &mut s,
                false,
                View::strided(&q[base..], hidden, 1),
                View::strided(&k[base..], 1, hidden),
                Parallelism::None,
            );
            softmax_rows_on(isa, &mut s, &bias[b * seq..(b + 1) * seq], scale);
            let mut o = vec![0.0f32; seq * head_dim];
            matmul(
                (seq, head_dim, seq),
                &mut o,
                false,
                View::rows(&s, seq),
                View::strided(&v[base..], hidden, 1),
                Parallelism::None,
            );
            o
        })
        .collect();
    for (t, o) in tiles.iter().enumerate() {
        let (b, h) = (t / heads, t % heads);
        for (i, row) in o.chunks_exact(head_dim).enumerate() {
            let at = (b * seq + i) * hidden + h * head_dim;
            out[at..at + head_dim].copy_from_slice(row);
        }
    }
    out
}

/// The fused inference attention on the CPU backends (no autodiff: see the module docs).
#[backend_extension(NdArray, Flex)]
pub trait AttentionBackend: Backend {
    /// [`attention`] on tensors: `q`, `k`, `v` `[batch, seq, heads·head_dim]`, `bias`
    /// `[batch, seq]`; returns `[batch, seq, heads·head_dim]`.
    fn attention_inference(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> FloatTensor<Self>;
}

fn attention_on<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
    heads: usize,
    scale: f32,
) -> FloatTensor<B> {
    let device = q.device();
    let shape = q.shape().as_slice().to_vec();
    assert_eq!(shape.len(), 3, "attention: q must be [batch, seq, hidden]");
    let (batch, seq, hidden) = (shape[0], shape[1], shape[2]);
    assert!(
        heads > 0 && hidden.is_multiple_of(heads),
        "attention: {hidden} features do not split into {heads} heads"
    );
    let dims = (batch, seq, heads, hidden / heads);
    let out = crate::op_timing::time("attention (fused, inference)", || {
        with_values::<B, _>(&q, |q| {
            with_values::<B, _>(&k, |k| {
                with_values::<B, _>(&v, |v| {
                    with_values::<B, _>(&bias, |bias| {
                        attention(q, k, v, bias, dims, scale, Isa::detect())
                    })
                })
            })
        })
    });
    write::<B>(out, shape, &device)
}

impl AttentionBackend for Flex {
    fn attention_inference(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> FloatTensor<Self> {
        attention_on::<Self>(q, k, v, bias, heads, scale)
    }
}

impl AttentionBackend for NdArray {
    fn attention_inference(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> FloatTensor<Self> {
        attention_on::<Self>(q, k, v, bias, heads, scale)
    }
}

/// Whether [`attention_inference`] runs on `device`: a CPU backend (Flex, NdArray) without
/// autodiff.
pub fn fused_attention_applies(device: &Device) -> bool {
    !device.is_autodiff() && crate::sparseprop::ops::is_sparse_cpu_device(device)
}

/// [`attention`] on tensors (shapes as in [`AttentionBackend::attention_inference`]).
///
/// # Panics
/// Unless [`fused_attention_applies`] to the tensors' device.
pub fn attention_inference(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    bias: Tensor<2>,
    heads: usize,
    scale: f32,
) -> Tensor<3> {
    assert!(
        fused_attention_applies(&q.device()),
        "attention_inference: needs a CPU device without autodiff"
    );
    Tensor::from_dispatch(<Dispatch as AttentionBackend>::attention_inference(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        bias.into_dispatch(),
        heads,
        scale,
    ))
}

#[cfg(test)]
mod tests {
    use super::{Isa, attention};

    /// Plain f64 `softmax(scale·Q·Kᵀ + bias)·V` per sequence and head.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        bias: &[f32],
        (batch, seq, heads, d): (usize, usize, usize, usize),
        scale: f64,
    ) -> Vec<f64> {
        let hidden = heads * d;
        let at = |b: usize, i: usize, h: usize, c: usize| (b * seq + i) * hidden + h * d + c;
        let mut out = vec![0.0f64; batch * seq * hidden];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..seq {
                    let s: Vec<f64> = (0..seq)
                        .map(|j| {
                            let dot: f64 = (0..d)
                                .map(|c| q[at(b, i, h, c)] as f64 * k[at(b, j, h, c)] as f64)
                                .sum();
                            dot * scale + bias[b * seq + j] as f64
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for c in 0..d {
                        out[at(b, i, h, c)] = (0..seq)
                            .map(|j| e[j] / sum * v[at(b, j, h, c)] as f64)
                            .sum();
                    }
                }
            }
        }
        out
    }

    /// The fused kernel equals the plain formula on every instruction set of this CPU, with
    /// padded keys (bias −10⁴, as BERT's mask), sequence lengths on and off the vector width,
    /// and one-token sequences.
    #[test]
    fn fused_attention_equals_the_plain_formula() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        };
        for isa in [Isa::Portable, Isa::Avx2Fma, Isa::Avx512] {
            if !isa.supported() {
                continue;
            }
            for dims @ (batch, seq, heads, d) in
                [(2, 5, 3, 4), (3, 17, 2, 8), (1, 1, 4, 2), (2, 40, 12, 32)]
            {
                let n = batch * seq * heads * d;
                let (q, k, v): (Vec<f32>, Vec<f32>, Vec<f32>) = (
                    (0..n).map(|_| rnd()).collect(),
                    (0..n).map(|_| rnd()).collect(),
                    (0..n).map(|_| rnd()).collect(),
                );
                // The last sequence has its last third padded (never its first token).
                let bias: Vec<f32> = (0..batch * seq)
                    .map(|i| {
                        let (b, j) = (i / seq, i % seq);
                        if b == batch - 1 && j > 0 && j >= seq - seq / 3 {
                            -10_000.0
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let scale = 1.0 / (d as f64).sqrt();
                let got = attention(&q, &k, &v, &bias, dims, scale as f32, isa);
                let want = reference(&q, &k, &v, &bias, dims, scale);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (*g as f64 - w).abs() <= 2e-6 * (1.0 + w.abs()),
                        "{isa:?} {dims:?} at {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
