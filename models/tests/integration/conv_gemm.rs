//! The im2col + GEMM conv2d (`shears_models::conv_gemm`) against a direct f64 convolution:
//! forward, `dX`, `dW` and the bias gradient, over seeded random shapes and the edge cases
//! (1×1 pointwise, stride 2 with and without padding, padding wider than the kernel reach,
//! a kernel exactly as large as the padded input, batch 1 and batches larger than the
//! thread count, the 1024 output positions of a CIFAR image), on both CPU backends, with and
//! without a gradient for the input.

use burn::tensor::{Device, Tensor, TensorData};
use shears_models::conv_gemm::{ConvDims, dense_conv2d};
use shears_models::conv3x3;
use shears_models::sparseprop::conv::Conv2dGeometry;
use shears_models::sparseprop::simd::Isa;

/// `(batch, c_in, c_out, h, w, k, stride, pad)`.
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

/// A seeded xorshift generator of values in [-0.5, 0.5) (also used by `linear_gemm`).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next() + 0.5) * n as f32) as usize % n
    }
    pub(crate) fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = vec![
        (3, 4, 5, 8, 8, 1, 1, 0),   // pointwise: the image is its own column matrix
        (1, 4, 5, 7, 9, 1, 2, 0),   // 1×1 stride 2 (the torchvision downsample)
        (4, 3, 6, 9, 7, 3, 1, 1),   // the ResNet 3×3
        (5, 3, 2, 9, 10, 3, 2, 1),  // stride 2, odd and even sides
        (2, 2, 3, 5, 5, 3, 1, 3),   // padding wider than the kernel reaches: zero border
        (2, 2, 3, 3, 4, 5, 1, 1),   // kernel as tall as the padded input: one output row
        (1, 6, 4, 11, 11, 7, 2, 3), // the torchvision stem, batch 1 (parallel GEMM path)
        (3, 1, 1, 1, 1, 3, 1, 1),   // one pixel
        (3, 2, 3, 32, 32, 3, 1, 1), // the CIFAR stage-1 geometry: 1024 positions
        (2, 3, 2, 64, 32, 3, 2, 1), // stride 2 onto 32×16 = 512 positions
        // The direct 3×3 kernels (`conv3x3`) where the CPU has AVX2 (AVX-512 for widths of 16):
        (5, 3, 16, 8, 8, 3, 1, 1), // the ResNet stem's 3 input channels, stage-3 width
        (3, 5, 6, 16, 16, 3, 1, 1), // output channels not a multiple of the 4-channel dW tile
        (1, 4, 9, 3, 24, 3, 1, 1), // batch 1, three vectors a row, 9 = 2·4 + 1 channels
    ];
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..12 {
        let k = [1, 2, 3, 5][r.below(4)];
        let pad = r.below(k + 1);
        let stride = 1 + r.below(3);
        let h = (k + r.below(9)).saturating_sub(2 * pad).max(1);
        let w = (k + r.below(9)).saturating_sub(2 * pad).max(1);
        v.push((
            1 + r.below(5),
            1 + r.below(6),
            1 + r.below(7),
            h,
            w,
            k,
            stride,
            pad,
        ));
    }
    v
}

/// Direct convolution in f64: `(y, dx, dw, db)` for upstream gradient `g`.
#[allow(clippy::type_complexity)]
fn reference(c: Case, x: &[f32], wt: &[f32], b: &[f32], g: &[f32]) -> [Vec<f64>; 4] {
    let (n, ci, co, h, w, k, s, p) = c;
    let oh = (h + 2 * p - k) / s + 1;
    let ow = (w + 2 * p - k) / s + 1;
    let mut y = vec![0.0f64; n * co * oh * ow];
    let mut dx = vec![0.0f64; n * ci * h * w];
    let mut dw = vec![0.0f64; co * ci * k * k];
    let mut db = vec![0.0f64; co];
    for bi in 0..n {
        for o in 0..co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let yi = ((bi * co + o) * oh + oy) * ow + ox;
                    let gy = g[yi] as f64;
                    let mut acc = b[o] as f64;
                    db[o] += gy;
                    for c_ in 0..ci {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = (oy * s + ky, ox * s + kx);
                                if iy < p || ix < p || iy - p >= h || ix - p >= w {
                                    continue;
                                }
                                let xi = ((bi * ci + c_) * h + iy - p) * w + ix - p;
                                let wi = ((o * ci + c_) * k + ky) * k + kx;
                                acc += x[xi] as f64 * wt[wi] as f64;
                                dx[xi] += wt[wi] as f64 * gy;
                                dw[wi] += x[xi] as f64 * gy;
                            }
                        }
                    }
                    y[yi] = acc;
                }
            }
        }
    }
    [y, dx, dw, db]
}

fn close(what: &str, c: Case, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what} {c:?}: length");
    for (i, (&a, &e)) in got.iter().zip(want).enumerate() {
        assert!(
            (a as f64 - e).abs() <= 1e-4 * e.abs().max(1.0),
            "{what} {c:?}[{i}]: {a} vs {e}"
        );
    }
}

fn geometry((_, ci, co, _, _, k, s, p): Case) -> Conv2dGeometry {
    Conv2dGeometry {
        in_channels: ci,
        out_channels: co,
        kernel: k,
        stride: s,
        padding: p,
    }
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

fn check(device: &Device, c: Case, input_grad: bool, seed: u64) {
    let (n, ci, co, h, w, k, s, p) = c;
    let mut r = Rng(seed | 1);
    let (xv, wv, bv) = (r.vec(n * ci * h * w), r.vec(co * ci * k * k), r.vec(co));
    let oh = (h + 2 * p - k) / s + 1;
    let ow = (w + 2 * p - k) / s + 1;
    let gv = r.vec(n * co * oh * ow);
    let [y_ref, dx_ref, dw_ref, db_ref] = reference(c, &xv, &wv, &bv, &gv);

    let ad = device.clone().autodiff();
    let mut x = Tensor::<4>::from_data(TensorData::new(xv, [n, ci, h, w]), &ad);
    if input_grad {
        x = x.require_grad();
    }
    let wt = Tensor::<4>::from_data(TensorData::new(wv, [co, ci, k, k]), &ad).require_grad();
    let b = Tensor::<1>::from_data(TensorData::new(bv, [co]), &ad).require_grad();
    let g = Tensor::<4>::from_data(TensorData::new(gv, [n, co, oh, ow]), &ad);
    let geom = geometry(c);
    let y = dense_conv2d(x.clone(), wt.clone(), Some(b.clone()), &geom);
    assert_eq!(y.dims(), [n, co, oh, ow], "{c:?}: output shape");
    let grads = (y.clone() * g).sum().backward();
    close("y", c, &values(y.inner()), &y_ref);
    close("dW", c, &values(wt.grad(&grads).unwrap()), &dw_ref);
    close("db", c, &values(b.grad(&grads).unwrap()), &db_ref);
    match x.grad(&grads) {
        Some(dx) => close("dX", c, &values(dx), &dx_ref),
        None => assert!(!input_grad, "{c:?}: no dX although the input requires it"),
    }
}

#[test]
fn forward_and_gradients_equal_a_direct_convolution() {
    for (i, c) in cases().into_iter().enumerate() {
        check(&Device::flex(), c, true, 17 + i as u64);
        check(&Device::flex(), c, false, 31 + i as u64);
    }
}

#[test]
fn the_ndarray_backend_runs_the_same_path() {
    for (i, c) in cases().into_iter().take(4).enumerate() {
        check(&Device::ndarray(), c, true, 101 + i as u64);
    }
}

#[test]
fn without_autodiff_the_forward_alone_is_right() {
    let c: Case = (3, 4, 6, 9, 7, 3, 1, 1);
    let (n, ci, co, h, w, k, _, _) = c;
    let mut r = Rng(7);
    let (xv, wv) = (r.vec(n * ci * h * w), r.vec(co * ci * k * k));
    let g = vec![0.0; n * co * h * w];
    let [y_ref, ..] = reference(c, &xv, &wv, &vec![0.0; co], &g);
    let device = Device::flex();
    let x = Tensor::<4>::from_data(TensorData::new(xv, [n, ci, h, w]), &device);
    let wt = Tensor::<4>::from_data(TensorData::new(wv, [co, ci, k, k]), &device);
    close(
        "y",
        c,
        &values(dense_conv2d(x, wt, None, &geometry(c))),
        &y_ref,
    );
}

/// The direct kernels on every instruction set this CPU runs (the portable one included,
/// which `dense_conv2d` never picks), over widths that fit each vector length, batches that
/// split into several L2 groups per worker, and channel counts off the register tiles.
#[test]
fn direct_3x3_kernels_equal_a_direct_convolution_on_every_instruction_set() {
    let cases: [Case; 5] = [
        (2, 3, 16, 8, 8, 3, 1, 1),
        (3, 5, 6, 16, 16, 3, 1, 1),
        (1, 1, 1, 1, 32, 3, 1, 1),
        (2, 7, 5, 4, 48, 3, 1, 1),
        // 139 KB a padded image: groups of 3 images, 20 images a worker → a short last group.
        (40, 16, 16, 32, 32, 3, 1, 1),
    ];
    let mut ran = 0;
    for isa in [Isa::Portable, Isa::Avx2Fma, Isa::Avx512] {
        if !isa.supported() {
            continue;
        }
        let lanes = if isa == Isa::Avx512 { 16 } else { 8 };
        for (i, &c) in cases.iter().enumerate() {
            let (n, ci, co, h, w, ..) = c;
            if w % lanes != 0 {
                continue;
            }
            let mut r = Rng(1000 + i as u64);
            let (xv, wv) = (r.vec(n * ci * h * w), r.vec(co * ci * 9));
            let gv = r.vec(n * co * h * w);
            let [y, dx, dw, _] = reference(c, &xv, &wv, &vec![0.0; co], &gv);
            let d = ConvDims::new([n, ci, h, w], &geometry(c)).unwrap();
            let tag = format!("{isa:?}");
            close(
                &format!("{tag} y"),
                c,
                &conv3x3::forward(isa, &d, &xv, &wv),
                &y,
            );
            close(
                &format!("{tag} dX"),
                c,
                &conv3x3::input_grad(isa, &d, &wv, &gv),
                &dx,
            );
            close(
                &format!("{tag} dW"),
                c,
                &conv3x3::weight_grad(isa, &d, &xv, &gv),
                &dw,
            );
            ran += 1;
        }
    }
    assert!(
        ran >= cases.len(),
        "the portable kernels alone run all {} cases; ran {ran}",
        cases.len()
    );
}

/// `dense_conv2d` runs the CIFAR ResNet's stride-1 3×3 convs on the direct kernels where the
/// CPU has AVX2, and everything else on im2col + GEMM.
#[test]
fn the_direct_kernels_take_the_stride_one_3x3_convs_of_a_cifar_resnet() {
    let dims = |c: Case| ConvDims::new([c.0, c.1, c.3, c.4], &geometry(c)).unwrap();
    let avx2 = Isa::detect() >= Isa::Avx2Fma;
    for side in [32, 16, 8] {
        let c: Case = (128, 16, 16, side, side, 3, 1, 1);
        assert_eq!(conv3x3::isa_for(&dims(c)).is_some(), avx2, "{c:?}");
    }
    for c in [
        (128, 16, 32, 32, 32, 3, 2, 1), // the stride-2 conv opening a stage
        (128, 16, 32, 32, 32, 1, 2, 0), // the 1×1 downsample of option B
        (2, 3, 4, 12, 12, 3, 1, 1),     // a width that is not a multiple of 8
    ] {
        assert_eq!(conv3x3::isa_for(&dims(c)), None, "{c:?}");
    }
}
