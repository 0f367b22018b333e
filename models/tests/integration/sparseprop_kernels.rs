//! Raw SparseProp kernels against a straightforward dense masked computation in f64, over
//! random shapes, odd batch sizes, empty rows/columns/channels, 0 % and 100 % sparsity,
//! strides 1/2, paddings, kernels 1/3/7, for every instruction set this CPU supports.

use crate::sparseprop_common;

use shears_models::sparseprop::simd::Isa;
use shears_models::sparseprop::{Conv2dGeometry, SparsePattern, conv, linear};
use sparseprop_common::{Rng, assert_close};

fn isas() -> Vec<Isa> {
    [Isa::Portable, Isa::Avx2Fma, Isa::Avx512]
        .into_iter()
        .filter(|i| i.supported())
        .collect()
}

/// Dense reference of the linear layer: y = x·Wᵀ, dx = dy·W, dW = dyᵀ·x (all f64).
fn dense_linear(
    w: &[f32],
    x: &[f32],
    dy: &[f32],
    (b, out, inp): (usize, usize, usize),
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0f64; b * out];
    let mut dx = vec![0.0f64; b * inp];
    let mut dw = vec![0.0f64; out * inp];
    for n in 0..b {
        for i in 0..out {
            for j in 0..inp {
                let wij = w[i * inp + j] as f64;
                y[n * out + i] += wij * x[n * inp + j] as f64;
                dx[n * inp + j] += wij * dy[n * out + i] as f64;
                dw[i * inp + j] += dy[n * out + i] as f64 * x[n * inp + j] as f64;
            }
        }
    }
    (y, dx, dw)
}

fn check_linear(rng: &mut Rng, b: usize, out: usize, inp: usize, sparsity: f64, empty_row: bool) {
    let mut mask = rng.mask(out * inp, sparsity);
    if empty_row && out > 1 {
        let r = rng.range(0, out - 1);
        mask[r * inp..(r + 1) * inp].fill(false);
        let c = rng.range(0, inp - 1);
        for i in 0..out {
            mask[i * inp + c] = false;
        }
    }
    let dense: Vec<f32> = rng
        .vec(out * inp)
        .into_iter()
        .zip(&mask)
        .map(|(v, &m)| if m { v } else { 0.0 })
        .collect();
    let (pattern, values) = SparsePattern::from_dense(out, inp, &dense, Some(&mask)).unwrap();
    let x = rng.vec(b * inp);
    let dy = rng.vec(b * out);
    let (y_ref, dx_ref, dw_ref) = dense_linear(&dense, &x, &dy, (b, out, inp));
    let dval_ref: Vec<f64> = pattern
        .flat_indices()
        .into_iter()
        .map(|i| dw_ref[i])
        .collect();
    for isa in isas() {
        let tag = format!("linear {isa:?} B={b} {inp}->{out} s={sparsity}");
        let y = linear::forward(&pattern, &values, &x, b, isa);
        assert_close(&format!("{tag} y"), &y, &y_ref);
        let (dx, dval) = linear::backward(&pattern, &values, &x, &dy, b, isa);
        assert_close(&format!("{tag} dx"), &dx, &dx_ref);
        assert_close(&format!("{tag} dW at nnz"), &dval, &dval_ref);
    }
}

#[test]
fn linear_random_shapes_match_dense() {
    let mut rng = Rng::new(1);
    for case in 0..40 {
        let b = rng.range(1, 150);
        let out = rng.range(1, 70);
        let inp = rng.range(1, 90);
        let s = [0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0][case % 7];
        check_linear(&mut rng, b, out, inp, s, case % 3 == 0);
    }
}

#[test]
fn linear_edge_batches_and_sparsities() {
    let mut rng = Rng::new(2);
    // Batch sizes around the vector widths (8, 16) and their 4× blocks (32, 64).
    // Beyond 64 per thread the kernels work in panels of 64 tokens (a partial last one).
    for b in [
        1, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 127, 128, 129, 191, 300,
    ] {
        for s in [0.0, 0.9, 1.0] {
            check_linear(&mut rng, b, 13, 21, s, true);
        }
    }
}

/// Dense reference of conv2d (NCHW), its dX and dW, in f64.
#[allow(clippy::type_complexity)]
fn dense_conv(
    w: &[f32],
    x: &[f32],
    dy: &[f32],
    g: &Conv2dGeometry,
    (b, h, wd): (usize, usize, usize),
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (oh, ow) = g.output_size(h, wd).unwrap();
    let (ic, oc, k) = (g.in_channels, g.out_channels, g.kernel);
    let mut y = vec![0.0f64; b * oc * oh * ow];
    let mut dx = vec![0.0f64; b * ic * h * wd];
    let mut dw = vec![0.0f64; oc * ic * k * k];
    for n in 0..b {
        for o in 0..oc {
            for p in 0..oh {
                for q in 0..ow {
                    let yi = ((n * oc + o) * oh + p) * ow + q;
                    for c in 0..ic {
                        for kh in 0..k {
                            for kw in 0..k {
                                let ih = (g.stride * p + kh) as isize - g.padding as isize;
                                let iw = (g.stride * q + kw) as isize - g.padding as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                    continue;
                                }
                                let xi = ((n * ic + c) * h + ih as usize) * wd + iw as usize;
                                let wi = ((o * ic + c) * k + kh) * k + kw;
                                y[yi] += w[wi] as f64 * x[xi] as f64;
                                dx[xi] += w[wi] as f64 * dy[yi] as f64;
                                dw[wi] += dy[yi] as f64 * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    (y, dx, dw)
}

#[allow(clippy::too_many_arguments)]
fn check_conv(
    rng: &mut Rng,
    (b, ic, oc, h, w): (usize, usize, usize, usize, usize),
    k: usize,
    stride: usize,
    padding: usize,
    sparsity: f64,
    empty_channel: bool,
) {
    let g = Conv2dGeometry {
        in_channels: ic,
        out_channels: oc,
        kernel: k,
        stride,
        padding,
    };
    let Some((oh, ow)) = g.output_size(h, w) else {
        return;
    };
    let cols = ic * k * k;
    let mut mask = rng.mask(oc * cols, sparsity);
    if empty_channel {
        let o = rng.range(0, oc - 1);
        mask[o * cols..(o + 1) * cols].fill(false);
        let c = rng.range(0, ic - 1);
        for o in 0..oc {
            mask[o * cols + c * k * k..o * cols + (c + 1) * k * k].fill(false);
        }
    }
    let dense: Vec<f32> = rng
        .vec(oc * cols)
        .into_iter()
        .zip(&mask)
        .map(|(v, &m)| if m { v } else { 0.0 })
        .collect();
    let (pattern, values) = SparsePattern::from_dense(oc, cols, &dense, Some(&mask)).unwrap();
    let x = rng.vec(b * ic * h * w);
    let dy = rng.vec(b * oc * oh * ow);
    let (y_ref, dx_ref, dw_ref) = dense_conv(&dense, &x, &dy, &g, (b, h, w));
    let dval_ref: Vec<f64> = pattern
        .flat_indices()
        .into_iter()
        .map(|i| dw_ref[i])
        .collect();
    for isa in isas() {
        let tag = format!(
            "conv {isa:?} B={b} {ic}->{oc} {h}x{w} k{k} s{stride} p{padding} sp={sparsity}"
        );
        let y = conv::forward(&pattern, &values, &g, &x, (b, h, w), isa);
        assert_close(&format!("{tag} y"), &y, &y_ref);
        let (dx, dval) = conv::backward(&pattern, &values, &g, &x, &dy, (b, h, w), isa);
        assert_close(&format!("{tag} dx"), &dx, &dx_ref);
        assert_close(&format!("{tag} dW at nnz"), &dval, &dval_ref);
    }
}

#[test]
fn conv_random_shapes_match_dense() {
    let mut rng = Rng::new(3);
    for case in 0..36 {
        let k = [1, 3, 7][case % 3];
        let stride = 1 + (case / 3) % 2;
        let padding = rng.range(0, k / 2 + 1);
        let b = rng.range(1, 19);
        let ic = rng.range(1, 6);
        let oc = rng.range(1, 6);
        let h = rng.range(k.saturating_sub(2 * padding).max(1), 13);
        let w = rng.range(k.saturating_sub(2 * padding).max(1), 13);
        let s = [0.0, 0.5, 0.9, 0.95, 1.0, 0.8][case % 6];
        check_conv(
            &mut rng,
            (b, ic, oc, h, w),
            k,
            stride,
            padding,
            s,
            case % 4 == 0,
        );
    }
}

#[test]
fn conv_edge_cases() {
    let mut rng = Rng::new(4);
    // Batch sizes around the vector widths (from 16 on, the output-stationary forward; 67
    // reaches its 4-vector blocks with 16 lanes, 211 = 128 + 64 + 16 + 3 every block of it:
    // 8, 4 and 1 vectors and the scalar tail), stride 2 with odd sizes, 0 % and 100 %.
    for b in [1, 8, 9, 15, 16, 17, 33, 67, 211] {
        for (stride, padding) in [(1, 1), (2, 1), (2, 0), (1, 0)] {
            for s in [0.0, 0.9, 1.0] {
                check_conv(&mut rng, (b, 3, 4, 7, 9), 3, stride, padding, s, true);
            }
        }
    }
    // A kernel exactly the padded input size, and a 7×7 with padding 3 on a tiny map.
    check_conv(&mut rng, (5, 2, 3, 5, 5), 7, 1, 1, 0.5, false);
    check_conv(&mut rng, (5, 2, 3, 3, 4), 7, 2, 3, 0.3, false);
}
