//! SparseProp: sparse forward and backward CPU kernels for linear and conv2d layers with a
//! fixed unstructured sparsity pattern (Nikdan et al., ICML 2023; methods.md §4), as a burn
//! backend extension with a custom autodiff backward.
//!
//! * [`layout`]: the weight layout (CSR values + CSC index) and its construction.
//! * [`simd`]: runtime CPU-feature dispatch (AVX-512, AVX2+FMA, portable).
//! * [`linear`], [`conv`]: the kernels on raw f32 buffers; [`transpose`]: their layout change
//!   (batch innermost).
//! * [`backend`]: the `#[backend_extension]` trait on Flex and NdArray, and its autodiff.
//! * [`ops`]: Tensor-level entry points ([`sparse_linear`], [`sparse_conv2d`]) that work on
//!   any device (dense masked fallback off the CPU backends).
//! * [`layers`]: the burn modules [`SparseLinear`] and [`SparseConv2d`].
//! * [`select`]: measured dense/sparse auto-selection.
//! * [`bench`]: layer benchmarks against the dense path.

pub mod backend;
pub mod bench;
pub mod conv;
pub mod layers;
pub mod layout;
pub mod linear;
pub mod ops;
pub mod select;
pub mod simd;
pub mod transpose;

pub use conv::Conv2dGeometry;
pub use layers::{SparseConv2d, SparseLayerError, SparseLinear};
pub use layout::{LayoutError, SparsePattern};
pub use ops::{
    SparseWeight, is_sparse_cpu_device, sparse_conv2d, sparse_conv2d_chwb, sparse_linear,
};
pub use select::{Decision, Execution};
