//! The exact (erf) GELU of BERT's feed-forward layers, forward and backward, as a burn
//! backend extension on the CPU backends (Flex, NdArray, with autodiff).
//!
//! burn's CPU GELU evaluates `erf` element by element through scalar `libm` (≈ 7 % of a
//! MiniLM fine-tuning step on 2 cores, forward and backward together). Here the
//! cumulative normal is computed in a form the compiler vectorises (no library calls, no
//! branches), instantiated for AVX-512, AVX2 + FMA and the baseline instruction set, picked
//! at run time ([`Isa::detect`]):
//!
//! * `1 + erf(z) = q` for `z < 0` and `2 − q` otherwise, with `q = P(t)·exp(−z²)`,
//!   `t = 1 / (1 + p|z|)` (Abramowitz & Stegun 7.1.26, |error| ≤ 1.5·10⁻⁷). Taking `q`
//!   directly on the negative side keeps the left tail accurate in relative terms;
//! * `exp` by Cody–Waite reduction `x = n·ln 2 + r`, a degree-6 Taylor polynomial on
//!   `|r| ≤ ln 2 / 2` and `2ⁿ` built from the exponent bits;
//! * `gelu(x) = ½·x·(1 + erf(x/√2))`, `gelu′(x) = ½·(1 + erf(x/√2)) + x·φ(x)`, where
//!   `φ(x) = exp(−x²/2)/√(2π)` reuses the `exp(−z²)` of the forward formula.
//!
//! The result differs from burn's `gelu` by at most a few 10⁻⁷ (relative to `max(1, |x|)`;
//! tested). Other devices (GPUs) call burn's `gelu`, whose backward burn derives.

#![allow(deprecated)] // NdArray is deprecated in burn 0.22 but still supported.

use std::f32::consts::{FRAC_1_SQRT_2, LN_2, LOG2_E};

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

use crate::output;
use crate::sparseprop::backend::{with_values, write};
use crate::sparseprop::ops::is_sparse_cpu_device;
use crate::sparseprop::simd::Isa;

/// Elements per parallel task.
const CHUNK: usize = 16 * 1024;

/// `eˣ`, vectorisable (see the module docs): 0 below −87 (where `eˣ` < 1.7·10⁻³⁸), `x`
/// clamped to 88 above.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // ln 2 split so that `n·LN2_HI` is exact for |n| < 2¹¹.
    const LN2_HI: f32 = 0.693_145_75; // 0x3F31_7200: ln 2 with the low 12 bits clear
    const LN2_LO: f32 = LN_2 - LN2_HI;
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let underflow = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2ⁿ from the bits of `t`, whose low mantissa bits hold `n` (offset by ROUND's): integer
    // ops only, which vectorise (a float-to-int `as` cast, saturating, does not).
    let two_n = (t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127)) << 23;
    let e = p * f32::from_bits(two_n);
    if underflow { 0.0 } else { e }
}

/// `(1 + erf(z), exp(−z²))` (see the module docs).
#[inline(always)]
fn one_plus_erf(z: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = z.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let e = exp(-a * a);
    let q = poly * e;
    (if z < 0.0 { q } else { 2.0 - q }, e)
}

/// `½·x·(1 + erf(x/√2))`.
#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    0.5 * x * one_plus_erf(x * FRAC_1_SQRT_2).0
}

/// `g · gelu′(x)`.
#[inline(always)]
fn gelu_grad_one(x: f32, g: f32) -> f32 {
    // 1/√(2π)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let (cdf2, e) = one_plus_erf(x * FRAC_1_SQRT_2);
    g * (0.5 * cdf2 + x * INV_SQRT_2PI * e)
}

#[inline(always)]
fn forward_chunk(x: &mut [f32]) {
    for v in x {
        *v = gelu_one(*v);
    }
}

#[inline(always)]
fn backward_chunk(x: &[f32], g: &mut [f32]) {
    for (g, &x) in g.iter_mut().zip(x) {
        *g = gelu_grad_one(x, *g);
    }
}

/// Runs `$body` compiled for the widest instruction set of `isa` (the loops inside are
/// `#[inline(always)]`, so they vectorise with it).
macro_rules! with_isa {
    ($isa:expr, fn($($arg:ident : $ty:ty),*) $body:block) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) $body
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $body
            match $isa {
                // SAFETY: `Isa::detect` only returns instruction sets this CPU supports.
                Isa::Avx512 => return unsafe { avx512($($arg),*) },
                Isa::Avx2Fma => return unsafe { avx2($($arg),*) },
                Isa::Portable => {}
            }
        }
        fn portable($($arg: $ty),*) $body
        portable($($arg),*)
    }};
}

/// GELU of every element of `x`, in place, with the kernels compiled for `isa` (the op itself,
/// [`gelu`], runs the widest instruction set of this CPU; this entry point compares them).
///
/// # Panics
/// If this CPU does not support `isa`.
pub fn gelu_slice_on(isa: Isa, x: &mut [f32]) {
    assert!(isa.supported(), "gelu: this CPU cannot run {isa:?}");
    x.par_chunks_mut(CHUNK)
        .for_each(|c| with_isa!(isa, fn(c: &mut [f32]) { forward_chunk(c) }));
}

/// `g ← g · gelu′(x)` element-wise (the GELU backward), in place in `g`, with the kernels
/// compiled for `isa`.
///
/// # Panics
/// If the lengths differ or this CPU does not support `isa`.
pub fn gelu_backward_slice_on(isa: Isa, x: &[f32], g: &mut [f32]) {
    assert_eq!(x.len(), g.len(), "gelu_backward_slice_on: lengths differ");
    assert!(isa.supported(), "gelu: this CPU cannot run {isa:?}");
    g.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(g, x)| with_isa!(isa, fn(x: &[f32], g: &mut [f32]) { backward_chunk(x, g) }));
}

/// The attention softmax of each row of `scores` (rows of `bias.len()` entries), in place:
/// `p_j = exp(x_j − max x) / Σ exp(x_j − max x)` with `x_j = scale·s_j + bias_j`, with the
/// vectorised `exp` above, compiled for `isa`.
///
/// # Panics
/// If `scores` is not whole rows, or this CPU does not support `isa`.
pub(crate) fn softmax_rows_on(isa: Isa, scores: &mut [f32], bias: &[f32], scale: f32) {
    assert!(isa.supported(), "softmax: this CPU cannot run {isa:?}");
    assert!(
        scores.len().is_multiple_of(bias.len().max(1)),
        "softmax_rows: scores are not whole rows"
    );
    with_isa!(isa, fn(scores: &mut [f32], bias: &[f32], scale: f32) {
        // Lane-wise partial maxima and sums (16 lanes), so that the reductions vectorise
        // too (a single float accumulator is a serial chain the compiler must keep).
        const L: usize = 16;
        for row in scores.chunks_exact_mut(bias.len().max(1)) {
            for (s, &b) in row.iter_mut().zip(bias) {
                *s = *s * scale + b;
            }
            let mut lanes = [f32::NEG_INFINITY; L];
            let mut chunks = row.chunks_exact(L);
            for c in &mut chunks {
                for (a, &x) in lanes.iter_mut().zip(c) {
                    *a = if x > *a { x } else { *a };
                }
            }
            let max = (lanes.iter().chain(chunks.remainder()))
                .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
            for s in row.iter_mut() {
                *s = exp(*s - max);
            }
            let mut sums = [0.0f32; L];
            let mut chunks = row.chunks_exact(L);
            for c in &mut chunks {
                for (a, &e) in sums.iter_mut().zip(c) {
                    *a += e;
                }
            }
            let sum = sums.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
            let inv = 1.0 / sum;
            for s in row.iter_mut() {
                *s *= inv;
            }
        }
    })
}

/// Activations computed by shears' own CPU kernels.
#[backend_extension(Autodiff, NdArray, Flex)]
pub trait ActivationBackend: Backend {
    /// The exact (erf) GELU of every element.
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The GELU of `x` into a new buffer, chunk by chunk in parallel (the input is borrowed: the
/// autodiff graph keeps it for the backward).
fn gelu_of(x: &[f32]) -> Vec<f32> {
    let isa = Isa::detect();
    output::map_copy(
        x,
        CHUNK,
        |_, y| with_isa!(isa, fn(y: &mut [f32]) { forward_chunk(y) }),
    )
}

/// `g · gelu′(x)` into a new buffer, chunk by chunk in parallel.
fn gelu_backward_of(x: &[f32], g: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), g.len(), "gelu backward: lengths differ");
    let isa = Isa::detect();
    output::map_copy(g, CHUNK, |at, d| {
        let x = &x[at..][..d.len()];
        with_isa!(isa, fn(x: &[f32], d: &mut [f32]) { backward_chunk(x, d) })
    })
}

fn gelu_forward<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let device = x.device();
    let shape = x.shape().as_slice().to_vec();
    let y = with_values::<B, _>(&x, |v| crate::op_timing::time("GELU fwd", || gelu_of(v)));
    write::<B>(y, shape, &device)
}

impl ActivationBackend for Flex {
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu_forward::<Self>(x)
    }
}

impl ActivationBackend for NdArray {
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu_forward::<Self>(x)
    }
}

/// Backward of the GELU: `dx = g · gelu′(x)`.
#[derive(Debug)]
struct GeluBackward;

impl<B: Backend> Backward<B, 1> for GeluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let device = grad.device();
            let shape = grad.shape().as_slice().to_vec();
            let dx = with_values::<B, _>(&ops.state, |x| {
                with_values::<B, _>(&grad, |g| {
                    crate::op_timing::time("GELU bwd", || gelu_backward_of(x, g))
                })
            });
            grads.register::<B>(node.id, write::<B>(dx, shape, &device));
        }
    }
}

impl<B: ActivationBackend, C: CheckpointStrategy> ActivationBackend for Autodiff<B, C> {
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xp = x.primitive().clone();
                let out = B::gelu_erf(xp.clone());
                prep.finish(xp, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gelu_erf(x.into_primitive())),
        }
    }
}

/// The exact (erf) GELU of `x`: shears' vectorised kernels on the CPU backends, burn's
/// `gelu` elsewhere. Differentiable on every device.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if is_sparse_cpu_device(&x.device()) {
        Tensor::from_dispatch(<Dispatch as ActivationBackend>::gelu_erf(x.into_dispatch()))
    } else {
        burn::tensor::activation::gelu(x)
    }
}
