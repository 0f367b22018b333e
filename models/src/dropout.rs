//! Dropout with a counter-based mask, forward and backward, as a burn backend extension on
//! the CPU backends (Flex, NdArray, with autodiff).
//!
//! burn's dropout draws a Bernoulli tensor element by element from its ChaCha20 device RNG
//! (≈ 7 % of a MiniLM fine-tuning step on 2 cores). Here each call draws one 64-bit seed
//! from that same device RNG — so the masks stay a function of the run's seed and step,
//! as shears' exact resume needs — and element `i` is kept when a 32-bit hash of
//! `(seed, i)` (two rounds of the MurmurHash3 finaliser) is at least `p·2³²`. The hash is
//! vectorised like the other CPU kernels, and the backward recomputes the mask from the
//! seed instead of storing it.
//!
//! [`dropout`] takes burn's own [`Dropout`] module (its probability and training flag), so
//! models keep burn's module and records; on other devices (GPUs) it calls
//! [`Dropout::forward`].

#![allow(deprecated)] // NdArray is deprecated in burn 0.22 but still supported.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Dispatch, Flex, NdArray, TensorMetadata, backend_extension,
};
use burn::nn::Dropout;
use burn::tensor::{Distribution, Tensor};
use rayon::prelude::*;

use crate::output;
use crate::sparseprop::backend::{with_values, write};
use crate::sparseprop::ops::is_sparse_cpu_device;
use crate::sparseprop::simd::Isa;

/// Elements per parallel task.
const CHUNK: usize = 16 * 1024;

/// A dropout mask: which elements survive, and the scale `1 / (1 − p)` of the survivors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropMask {
    /// The call's seed (drawn from the device RNG).
    pub seed: u64,
    /// An element is kept when its hash is at least this (`round(p·2³²)`).
    threshold: u32,
    /// `1 / (1 − p)` as f32 bits (`Eq` for the op state).
    scale_bits: u32,
}

impl DropMask {
    /// The mask of drop probability `prob` in `[0, 1)` with `seed`.
    ///
    /// # Panics
    /// If `prob` is outside `[0, 1)`.
    pub fn new(seed: u64, prob: f64) -> Self {
        assert!(
            (0.0..1.0).contains(&prob),
            "dropout probability {prob} outside [0, 1)"
        );
        DropMask {
            seed,
            threshold: (prob * 4_294_967_296.0).round().min(u32::MAX as f64) as u32,
            scale_bits: ((1.0 / (1.0 - prob)) as f32).to_bits(),
        }
    }

    /// The scale of the kept elements.
    pub fn scale(&self) -> f32 {
        f32::from_bits(self.scale_bits)
    }

    /// Whether element `i` is kept.
    #[inline(always)]
    pub fn keeps(&self, i: usize) -> bool {
        hash(self.seed, i as u32) >= self.threshold
    }

    /// `v[i] ← v[i]·scale` where element `offset + i` is kept, `0` elsewhere.
    #[inline(always)]
    fn apply(&self, offset: usize, v: &mut [f32]) {
        let scale = self.scale();
        for (j, x) in v.iter_mut().enumerate() {
            let keep = hash(self.seed, (offset + j) as u32) >= self.threshold;
            *x = if keep { *x * scale } else { 0.0 };
        }
    }

    /// Applies the mask to `v`, whose element `i` is element `i` of the masked tensor.
    pub fn apply_slice(&self, v: &mut [f32]) {
        let isa = Isa::detect();
        v.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| self.apply_chunk(isa, c * CHUNK, chunk));
    }

    /// `v` with the mask applied, into a new buffer (chunk by chunk in parallel; the input is
    /// borrowed, not copied first).
    pub fn applied(&self, v: &[f32]) -> Vec<f32> {
        let isa = Isa::detect();
        output::map_copy(v, CHUNK, |at, out| self.apply_chunk(isa, at, out))
    }

    fn apply_chunk(&self, isa: Isa, offset: usize, v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512(m: &DropMask, offset: usize, v: &mut [f32]) {
                m.apply(offset, v)
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2(m: &DropMask, offset: usize, v: &mut [f32]) {
                m.apply(offset, v)
            }
            match isa {
                // SAFETY: `Isa::detect` only returns instruction sets this CPU supports.
                Isa::Avx512 => return unsafe { avx512(self, offset, v) },
                Isa::Avx2Fma => return unsafe { avx2(self, offset, v) },
                Isa::Portable => {}
            }
        }
        self.apply(offset, v)
    }
}

/// The MurmurHash3 32-bit finaliser.
#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// A 32-bit hash of `(seed, i)`.
#[inline(always)]
fn hash(seed: u64, i: u32) -> u32 {
    fmix32(fmix32(i ^ seed as u32).wrapping_add((seed >> 32) as u32))
}

/// Dropout computed by shears' own CPU kernels.
#[backend_extension(Autodiff, NdArray, Flex)]
pub trait DropoutBackend: Backend {
    /// `x` with `mask` applied (kept elements scaled by `1 / (1 − p)`, others zero).
    fn dropout_masked(x: FloatTensor<Self>, mask: DropMask) -> FloatTensor<Self>;
}

fn masked<B: Backend>(x: FloatTensor<B>, mask: DropMask) -> FloatTensor<B> {
    let device = x.device();
    let shape = x.shape().as_slice().to_vec();
    let y = with_values::<B, _>(&x, |v| {
        crate::op_timing::time("dropout", || mask.applied(v))
    });
    write::<B>(y, shape, &device)
}

impl DropoutBackend for Flex {
    fn dropout_masked(x: FloatTensor<Self>, mask: DropMask) -> FloatTensor<Self> {
        masked::<Self>(x, mask)
    }
}

impl DropoutBackend for NdArray {
    fn dropout_masked(x: FloatTensor<Self>, mask: DropMask) -> FloatTensor<Self> {
        masked::<Self>(x, mask)
    }
}

/// Backward of the dropout: the same mask on the gradient.
#[derive(Debug)]
struct DropoutBackward;

impl<B: Backend> Backward<B, 1> for DropoutBackward {
    type State = DropMask;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            grads.register::<B>(node.id, masked::<B>(grad, ops.state));
        }
    }
}

impl<B: DropoutBackend, C: CheckpointStrategy> DropoutBackend for Autodiff<B, C> {
    fn dropout_masked(x: FloatTensor<Self>, mask: DropMask) -> FloatTensor<Self> {
        match DropoutBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::dropout_masked(x.primitive().clone(), mask);
                prep.finish(mask, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::dropout_masked(x.into_primitive(), mask)),
        }
    }
}

/// A 64-bit seed from the device RNG of `x`'s device (four uniform draws, 16 bits each).
fn draw_seed<const D: usize>(x: &Tensor<D>) -> u64 {
    let u = Tensor::<1>::random([4], Distribution::Default, &x.device())
        .into_data()
        .to_vec::<f32>()
        .expect("random floats are f32");
    u.iter()
        .fold(0u64, |s, &v| (s << 16) | ((v * 65_536.0) as u64 & 0xffff))
}

/// `module`'s dropout of `x`: the counter-based kernels on the CPU backends,
/// [`Dropout::forward`] elsewhere. Like burn's, it is the identity outside training (the
/// module's training flag off, or a device without autodiff) and for `p = 0`.
pub fn dropout<const D: usize>(module: &Dropout, x: Tensor<D>) -> Tensor<D> {
    if !module.training.is_enabled() || !x.device().is_autodiff() || module.prob == 0.0 {
        return x;
    }
    if !is_sparse_cpu_device(&x.device()) {
        return module.forward(x);
    }
    let mask = DropMask::new(draw_seed(&x), module.prob);
    Tensor::from_dispatch(<Dispatch as DropoutBackend>::dropout_masked(
        x.into_dispatch(),
        mask,
    ))
}
