//! The dense conv2d of [`PrunableConv2d`](crate::conv::PrunableConv2d) on the CPU: im2col +
//! GEMM for the forward, `dX` (GEMM + col2im) and `dW` (GEMM over the batch), as a burn
//! backend extension with its own autodiff backward; 3×3 stride-1 pad-1 convs whose width
//! suits the CPU's vectors run the direct kernels of [`conv3x3`] instead.
//!
//! burn's Flex conv2d runs its forward through a tiled NHWC im2col and its backward through
//! the generic transposed-convolution defaults; on the small channel counts of CIFAR ResNets
//! (16–64 channels, 32×32 images) that is several times slower than PyTorch. This path keeps
//! the NCHW layout, builds one image's column matrix `[IC·K·K, OH·OW]` at a time (a strided
//! copy, contiguous rows for stride 1), hands the products to the `gemm` crate burn itself
//! uses (its kernels are chosen at run time from the CPU's features), runs the batch in
//! parallel, and computes only the gradients autodiff asks for (none for the input image).
//!
//! [`dense_conv2d`] routes non-CPU devices to [`burn::tensor::module::conv2d`].

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
use burn::tensor::ops::ConvOptions;
use gemm::Parallelism;
use rayon::prelude::*;

use crate::conv3x3;
use crate::output;
use crate::sparseprop::backend::{with_values, write};
use crate::sparseprop::conv::Conv2dGeometry;
use crate::sparseprop::ops::is_sparse_cpu_device;

/// Sizes of one dense conv2d call over a batch of NCHW images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvDims {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels `IC`.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels `OC`.
    pub c_out: usize,
    /// Kernel side `K`.
    pub k: usize,
    /// Stride in both directions (≥ 1).
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvDims {
    /// The sizes for input dims `[B, IC, H, W]` and `geom`, or `None` where the kernel does
    /// not fit the padded input (or the stride is 0).
    pub fn new(input: [usize; 4], geom: &Conv2dGeometry) -> Option<Self> {
        let [batch, c_in, h, w] = input;
        let (oh, ow) = geom.output_size(h, w)?;
        Some(Self {
            batch,
            c_in,
            h,
            w,
            c_out: geom.out_channels,
            k: geom.kernel,
            stride: geom.stride,
            pad: geom.padding,
            oh,
            ow,
        })
    }

    /// Rows of the column matrix, `IC·K·K` (the weight's columns).
    fn cols(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Output positions of one image, `OH·OW`.
    fn spatial(&self) -> usize {
        self.oh * self.ow
    }

    /// One input image's length, `IC·H·W`.
    fn image(&self) -> usize {
        self.c_in * self.h * self.w
    }

    /// A 1×1 kernel with stride 1 and no padding: the image is its own column matrix.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// The output columns `ox` whose input column `ox·s + kw − p` lies inside `[0, W)`.
    fn inside(&self, kw: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.pad);
        let lo = if kw >= p { 0 } else { (p - kw).div_ceil(s) };
        let hi = if self.w + p <= kw {
            0
        } else {
            ((self.w - 1 + p - kw) / s + 1).min(self.ow)
        };
        (lo.min(hi), hi)
    }
}

/// Fills `col: [IC·K·K, OH·OW]` with the patches of one image `x: [IC, H, W]`.
fn im2col(d: &ConvDims, x: &[f32], col: &mut [f32]) {
    let (k, s, p, ohw) = (d.k, d.stride, d.pad, d.spatial());
    for c in 0..d.c_in {
        let plane = &x[c * d.h * d.w..][..d.h * d.w];
        for kh in 0..k {
            for kw in 0..k {
                let row = &mut col[((c * k + kh) * k + kw) * ohw..][..ohw];
                let (lo, hi) = d.inside(kw);
                for oy in 0..d.oh {
                    let out = &mut row[oy * d.ow..][..d.ow];
                    let iy = oy * s + kh;
                    if iy < p || iy - p >= d.h {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &plane[(iy - p) * d.w..][..d.w];
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    if s == 1 {
                        out[lo..hi].copy_from_slice(&src[lo + kw - p..hi + kw - p]);
                    } else {
                        for (ox, o) in out[lo..hi].iter_mut().enumerate() {
                            *o = src[(ox + lo) * s + kw - p];
                        }
                    }
                }
            }
        }
    }
}

/// The column matrix `[IC·K·K, OH·OW]` of one image: the image itself for a pointwise
/// kernel, else built in `col`.
fn columns<'a>(d: &ConvDims, x: &'a [f32], col: &'a mut Vec<f32>) -> &'a [f32] {
    if d.pointwise() {
        return x;
    }
    col.resize(d.cols() * d.spatial(), 0.0);
    im2col(d, x, col);
    col
}

/// Adds the column-matrix gradient `col: [IC·K·K, OH·OW]` back onto one image's `dx: [IC, H, W]`.
fn col2im(d: &ConvDims, col: &[f32], dx: &mut [f32]) {
    let (k, s, p, ohw) = (d.k, d.stride, d.pad, d.spatial());
    for c in 0..d.c_in {
        let plane = &mut dx[c * d.h * d.w..][..d.h * d.w];
        for kh in 0..k {
            for kw in 0..k {
                let row = &col[((c * k + kh) * k + kw) * ohw..][..ohw];
                let (lo, hi) = d.inside(kw);
                for oy in 0..d.oh {
                    let iy = oy * s + kh;
                    if iy < p || iy - p >= d.h {
                        continue;
                    }
                    let src = &row[oy * d.ow..][..d.ow];
                    let dst = &mut plane[(iy - p) * d.w..][..d.w];
                    if s == 1 {
                        for (o, g) in dst[lo + kw - p..hi + kw - p].iter_mut().zip(&src[lo..hi]) {
                            *o += g;
                        }
                    } else {
                        for ox in lo..hi {
                            dst[ox * s + kw - p] += src[ox];
                        }
                    }
                }
            }
        }
    }
}

/// A read-only matrix view: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// Row-major `[rows, cols]`.
    pub(crate) fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of row-major `[cols, rows]` data, seen as `[rows, cols]`.
    pub(crate) fn transposed(data: &'a [f32], rows: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: rows,
        }
    }

    /// Element `(i, j)` at `data[i·rs + j·cs]` (e.g. one head's columns of a
    /// `[seq, heads·head_dim]` matrix: `rs = heads·head_dim`, `cs = 1`).
    pub(crate) fn strided(data: &'a [f32], rs: usize, cs: usize) -> Self {
        Self { data, rs, cs }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]` with `dst` row-major; accumulates when `add`.
pub(crate) fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    add: bool,
    lhs: View,
    rhs: View,
    par: Parallelism,
) {
    assert!(dst.len() >= m * n && lhs.fits(m, k) && rhs.fits(k, n));
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !add {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: every index the product reads or writes lies inside the slices (checked
    // above), `dst` is borrowed mutably and does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            add,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Runs images in parallel when the batch can feed every thread, else one image at a time
/// with a parallel GEMM.
fn split(batch: usize) -> (bool, Parallelism) {
    if batch >= rayon::current_num_threads() {
        (true, Parallelism::None)
    } else {
        (false, Parallelism::Rayon(0))
    }
}

/// The forward: `y: [B, OC, OH, OW]` from `x: [B, IC, H, W]` and `w: [OC, IC, K, K]`.
pub fn forward(d: &ConvDims, x: &[f32], w: &[f32]) -> Vec<f32> {
    if let Some(isa) = conv3x3::isa_for(d) {
        return conv3x3::forward(isa, d, x, w);
    }
    assert_eq!(x.len(), d.batch * d.image(), "conv2d: input length");
    assert_eq!(w.len(), d.c_out * d.cols(), "conv2d: weight length");
    let (ohw, cols) = (d.spatial(), d.cols());
    let mut y = output::zeroed(d.batch * d.c_out * ohw);
    if y.is_empty() {
        return y;
    }
    let image = |x_b: &[f32], y_b: &mut [f32], col: &mut Vec<f32>, par| {
        let rhs = columns(d, x_b, col);
        let lhs = View::rows(w, cols);
        matmul(
            (d.c_out, ohw, cols),
            y_b,
            false,
            lhs,
            View::rows(rhs, ohw),
            par,
        );
    };
    let (batched, par) = split(d.batch);
    let pairs = y
        .par_chunks_mut(d.c_out * ohw)
        .zip(x.par_chunks(d.image().max(1)));
    if batched {
        pairs.for_each_init(Vec::new, |col, (y_b, x_b)| image(x_b, y_b, col, par));
    } else {
        let mut col = Vec::new();
        for (y_b, x_b) in y.chunks_mut(d.c_out * ohw).zip(x.chunks(d.image().max(1))) {
            image(x_b, y_b, &mut col, par);
        }
    }
    y
}

/// The input gradient `dX: [B, IC, H, W]` from `w` and `dy: [B, OC, OH, OW]`.
pub fn input_grad(d: &ConvDims, w: &[f32], dy: &[f32]) -> Vec<f32> {
    if let Some(isa) = conv3x3::isa_for(d) {
        return conv3x3::input_grad(isa, d, w, dy);
    }
    assert_eq!(
        dy.len(),
        d.batch * d.c_out * d.spatial(),
        "conv2d: dY length"
    );
    assert_eq!(w.len(), d.c_out * d.cols(), "conv2d: weight length");
    let (ohw, cols) = (d.spatial(), d.cols());
    let mut dx = output::zeroed(d.batch * d.image());
    if dx.is_empty() {
        return dx;
    }
    let image = |dy_b: &[f32], dx_b: &mut [f32], col: &mut Vec<f32>, par| {
        // dcol = Wᵀ · dy_b: [IC·K·K, OC] · [OC, OH·OW].
        let lhs = View::transposed(w, cols);
        let rhs = View::rows(dy_b, ohw);
        if d.pointwise() {
            matmul((cols, ohw, d.c_out), dx_b, false, lhs, rhs, par);
        } else {
            col.resize(cols * ohw, 0.0);
            matmul((cols, ohw, d.c_out), col, false, lhs, rhs, par);
            col2im(d, col, dx_b);
        }
    };
    let (batched, par) = split(d.batch);
    let out = d.c_out * ohw;
    if batched {
        dx.par_chunks_mut(d.image())
            .zip(dy.par_chunks(out.max(1)))
            .for_each_init(Vec::new, |col, (dx_b, dy_b)| image(dy_b, dx_b, col, par));
    } else {
        let mut col = Vec::new();
        for (dx_b, dy_b) in dx.chunks_mut(d.image()).zip(dy.chunks(out.max(1))) {
            image(dy_b, dx_b, &mut col, par);
        }
    }
    dx
}

/// The weight gradient `dW: [OC, IC, K, K]` from `x` and `dy`, summed over the batch.
///
/// Accumulated transposed, `dWᵀ: [IC·K·K, OC] += col_b · dy_bᵀ`, and transposed once at the
/// end: with the output channels innermost the `gemm` crate reads the column matrix as it
/// lies; the product `dy_b · col_bᵀ` made it gather `col_b` across rows, 2.7× slower on the
/// 16-channel stage of a CIFAR ResNet.
pub fn weight_grad(d: &ConvDims, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if let Some(isa) = conv3x3::isa_for(d) {
        return conv3x3::weight_grad(isa, d, x, dy);
    }
    assert_eq!(x.len(), d.batch * d.image(), "conv2d: input length");
    assert_eq!(
        dy.len(),
        d.batch * d.c_out * d.spatial(),
        "conv2d: dY length"
    );
    let (ohw, cols) = (d.spatial(), d.cols());
    let len = d.c_out * cols;
    // dWᵀ += col_b · dy_bᵀ: [IC·K·K, OH·OW] · [OH·OW, OC].
    let image = |x_b: &[f32], dy_b: &[f32], dwt: &mut [f32], col: &mut Vec<f32>, add, par| {
        let lhs = View::rows(columns(d, x_b, col), ohw);
        matmul(
            (cols, d.c_out, ohw),
            dwt,
            add,
            lhs,
            View::transposed(dy_b, ohw),
            par,
        );
    };
    if d.batch == 0 || ohw == 0 || len == 0 {
        return vec![0.0; len];
    }
    let (batched, par) = split(d.batch);
    let out = d.c_out * ohw;
    let dwt = if batched {
        // One accumulator per worker, each image added in batch order within it.
        let threads = rayon::current_num_threads();
        let per = d.batch.div_ceil(threads);
        let partial: Vec<Vec<f32>> = x
            .par_chunks(per * d.image())
            .zip(dy.par_chunks(per * out))
            .map(|(xs, dys)| {
                let (mut dwt, mut col) = (vec![0.0f32; len], Vec::new());
                for (i, (x_b, dy_b)) in xs.chunks(d.image()).zip(dys.chunks(out)).enumerate() {
                    image(x_b, dy_b, &mut dwt, &mut col, i > 0, par);
                }
                dwt
            })
            .collect();
        let mut parts = partial.into_iter();
        let mut dwt = parts.next().unwrap_or_else(|| vec![0.0; len]);
        for p in parts {
            for (a, b) in dwt.iter_mut().zip(&p) {
                *a += b;
            }
        }
        dwt
    } else {
        let (mut dwt, mut col) = (vec![0.0f32; len], Vec::new());
        for (i, (x_b, dy_b)) in x.chunks(d.image()).zip(dy.chunks(out)).enumerate() {
            image(x_b, dy_b, &mut dwt, &mut col, i > 0, par);
        }
        dwt
    };
    crate::sparseprop::transpose::transpose(&dwt, cols, d.c_out)
}

/// Dense conv2d through im2col + GEMM (no bias: it is added with plain tensor ops).
#[backend_extension(Autodiff, NdArray, Flex)]
pub trait ConvGemmBackend: Backend {
    /// `x: [B, IC, H, W]` with `weight: [OC, IC, K, K]` → `[B, OC, OH, OW]`.
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geom: Conv2dGeometry,
    ) -> FloatTensor<Self>;
}

fn dims_of(x: &[usize], geom: &Conv2dGeometry) -> ConvDims {
    let input: [usize; 4] = x
        .try_into()
        .expect("conv2d_gemm: input must be 4-D [B, C, H, W]");
    assert_eq!(input[1], geom.in_channels, "conv2d_gemm: input channels");
    ConvDims::new(input, geom).expect("conv2d_gemm: kernel larger than the padded input")
}

/// One of the three products of a conv2d, for the op-timing names.
#[derive(Clone, Copy)]
enum Pass {
    Forward,
    InputGrad,
    WeightGrad,
}

impl Pass {
    /// The op-timing name of this pass on the path that runs `d`.
    fn label(self, d: &ConvDims) -> &'static str {
        match (self, conv3x3::isa_for(d).is_some()) {
            (Pass::Forward, true) => "conv2d fwd (direct 3×3)",
            (Pass::Forward, false) => "conv2d fwd (im2col+GEMM)",
            (Pass::InputGrad, true) => "conv2d dX (direct 3×3)",
            (Pass::InputGrad, false) => "conv2d dX (GEMM+col2im)",
            (Pass::WeightGrad, true) => "conv2d dW (direct 3×3)",
            (Pass::WeightGrad, false) => "conv2d dW (im2col+GEMM)",
        }
    }
}

fn forward_on<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    geom: &Conv2dGeometry,
) -> FloatTensor<B> {
    let device = x.device();
    let d = dims_of(x.shape().as_slice(), geom);
    let y = with_values::<B, _>(&x, |xv| {
        with_values::<B, _>(&weight, |wv| {
            crate::op_timing::time(Pass::Forward.label(&d), || forward(&d, xv, wv))
        })
    });
    write::<B>(y, vec![d.batch, d.c_out, d.oh, d.ow], &device)
}

impl ConvGemmBackend for Flex {
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        g: Conv2dGeometry,
    ) -> FloatTensor<Self> {
        forward_on::<Self>(x, w, &g)
    }
}

impl ConvGemmBackend for NdArray {
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        g: Conv2dGeometry,
    ) -> FloatTensor<Self> {
        forward_on::<Self>(x, w, &g)
    }
}

/// Backward of [`ConvGemmBackend::conv2d_gemm`]: `dX` and `dW`, each only when asked for.
#[derive(Debug)]
struct ConvGemmBackward;

impl<B: Backend> Backward<B, 2> for ConvGemmBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, Conv2dGeometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, w, geom) = ops.state;
        let device = grad.device();
        let xs = x.shape().as_slice().to_vec();
        let ws = w.shape().as_slice().to_vec();
        let d = dims_of(&xs, &geom);
        with_values::<B, _>(&grad, |dy| {
            if let Some(node) = node_w {
                let dw = with_values::<B, _>(&x, |xv| {
                    crate::op_timing::time(Pass::WeightGrad.label(&d), || weight_grad(&d, xv, dy))
                });
                grads.register::<B>(node.id, write::<B>(dw, ws, &device));
            }
            if let Some(node) = node_x {
                let dx = with_values::<B, _>(&w, |wv| {
                    crate::op_timing::time(Pass::InputGrad.label(&d), || input_grad(&d, wv, dy))
                });
                grads.register::<B>(node.id, write::<B>(dx, xs, &device));
            }
        });
    }
}

impl<B: ConvGemmBackend, C: CheckpointStrategy> ConvGemmBackend for Autodiff<B, C> {
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geom: Conv2dGeometry,
    ) -> FloatTensor<Self> {
        match ConvGemmBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xp = x.primitive().clone();
                let wp = weight.primitive().clone();
                let out = B::conv2d_gemm(xp.clone(), wp.clone(), geom);
                prep.finish((xp, wp, geom), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv2d_gemm(
                x.into_primitive(),
                weight.into_primitive(),
                geom,
            )),
        }
    }
}

/// Dense conv2d of `x: [B, IC, H, W]` with `weight: [OC, IC, K, K]` (stride, padding and
/// kernel from `geom`) plus the optional `bias: [OC]`: im2col + GEMM on the CPU backends,
/// [`burn::tensor::module::conv2d`] elsewhere. Differentiable in `x`, `weight` and `bias`.
pub fn dense_conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    geom: &Conv2dGeometry,
) -> Tensor<4> {
    if !is_sparse_cpu_device(&x.device()) {
        let s = geom.stride;
        let p = geom.padding;
        return burn::tensor::module::conv2d(
            x,
            weight,
            bias,
            ConvOptions::new([s, s], [p, p], [1, 1], 1),
        );
    }
    let y = Tensor::<4>::from_dispatch(<Dispatch as ConvGemmBackend>::conv2d_gemm(
        x.into_dispatch(),
        weight.into_dispatch(),
        *geom,
    ));
    match bias {
        Some(b) => {
            let oc = b.dims()[0];
            y + b.reshape([1, oc, 1, 1])
        }
        None => y,
    }
}
