//! CPU reductions burn is slow at, as a backend extension: the sum of squares of a tensor
//! (each gradient's share of the global norm that clipping needs, every step, over every
//! parameter — 22.7 M values for MiniLM).
//!
//! burn's `x.powi_scalar(2).sum()` writes a squared copy of the tensor before summing it;
//! [`sum_of_squares`] reads the values in place (no copy of a contiguous Flex tensor), sums
//! chunks in f32 and the chunks in f64, in parallel. Other devices keep burn's ops.

#![allow(deprecated)] // NdArray is deprecated in burn 0.22 but still supported.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, NdArray, backend_extension};
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::sparseprop::backend::{with_values, write};
use crate::sparseprop::ops::is_sparse_cpu_device;

/// Values per parallel chunk (summed in f32; the chunk sums in f64).
const CHUNK: usize = 4096;

/// `Σ xᵢ²` of `x`, summed in f32 per chunk of 4,096 values and in f64 over the chunks.
pub fn sum_squares_slice(x: &[f32]) -> f64 {
    x.par_chunks(CHUNK)
        .map(|c| c.iter().map(|v| v * v).sum::<f32>() as f64)
        .sum()
}

/// The reductions as a burn backend extension.
#[backend_extension(Autodiff, NdArray, Flex)]
pub trait ReduceBackend: Backend {
    /// `[Σ xᵢ²]`, a one-element tensor (no gradient).
    fn sum_squares(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

fn sum_squares_on<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let device = burn::backend::TensorMetadata::device(&x);
    let s = with_values::<B, _>(&x, |v| {
        crate::op_timing::time("sum of squares", || sum_squares_slice(v))
    });
    write::<B>(vec![s as f32], vec![1], &device)
}

impl ReduceBackend for Flex {
    fn sum_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
        sum_squares_on::<Self>(x)
    }
}

impl ReduceBackend for NdArray {
    fn sum_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
        sum_squares_on::<Self>(x)
    }
}

impl<B: ReduceBackend, C: CheckpointStrategy> ReduceBackend for Autodiff<B, C> {
    fn sum_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
        <FloatTensor<Self>>::new(B::sum_squares(x.into_primitive()))
    }
}

/// `[Σ xᵢ²]` of `x` as a one-element tensor without gradient: the in-place reduction on the
/// CPU backends, `x.powi_scalar(2).sum()` elsewhere.
pub fn sum_of_squares<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    if is_sparse_cpu_device(&x.device()) {
        Tensor::from_dispatch(<Dispatch as ReduceBackend>::sum_squares(x.into_dispatch()))
    } else {
        x.powi_scalar(2).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn sums_of_squares_equal_a_direct_f64_sum_on_both_cpu_backends() {
        let mut s = 0x1234_5678_9ABC_DEF1u64;
        for n in [0usize, 1, 7, CHUNK - 1, CHUNK, 3 * CHUNK + 5, 100_003] {
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
                })
                .collect();
            let want: f64 = v.iter().map(|&x| x as f64 * x as f64).sum();
            let tol = 1e-6 * want.max(1.0);
            assert!(
                (sum_squares_slice(&v) - want).abs() <= tol,
                "slice, n = {n}"
            );
            for device in [Device::flex(), Device::ndarray()] {
                let t = Tensor::<2>::from_data(TensorData::new(v.clone(), [1, n]), &device);
                let got = sum_of_squares(t).into_scalar::<f64>();
                assert!(
                    (got - want).abs() <= tol,
                    "{device:?}, n = {n}: {got} vs {want}"
                );
                // A non-contiguous view (a transpose) is read through a copy, same value.
                let t = Tensor::<2>::from_data(TensorData::new(v.clone(), [1, n]), &device);
                let got = sum_of_squares(t.transpose()).into_scalar::<f64>();
                assert!((got - want).abs() <= tol, "{device:?} transposed, n = {n}");
            }
        }
    }
}
