//! The SparseProp autodiff path (backend extension + custom backward) against burn's dense
//! autodiff on the masked weight, on Flex and NdArray: forward, dX, the value gradients
//! (= dense dW at the non-zeros) and db; plus the layers, conversions and auto-selection.

use crate::sparseprop_common;

use std::sync::Arc;

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Bool, Device, Tensor, TensorData};
use shears_models::sparseprop::{
    Conv2dGeometry, Execution, SparseConv2d, SparseLinear, SparsePattern, SparseWeight,
    is_sparse_cpu_device, select, sparse_conv2d, sparse_linear,
};
use sparseprop_common::{Rng, assert_close32};

fn devices() -> Vec<Device> {
    vec![Device::flex().autodiff(), Device::ndarray().autodiff()]
}

fn vec_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D], dev: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), dev)
}

fn masked(rng: &mut Rng, n: usize, sparsity: f64) -> (Vec<f32>, Vec<bool>) {
    let mask = rng.mask(n, sparsity);
    let w = rng
        .vec(n)
        .into_iter()
        .zip(&mask)
        .map(|(v, &m)| if m { v } else { 0.0 })
        .collect();
    (w, mask)
}

fn check_linear(dev: &Device, rng: &mut Rng, lead: &[usize], out: usize, inp: usize, s: f64) {
    let (w, mask) = masked(rng, out * inp, s);
    let (pattern, values) = SparsePattern::from_dense(out, inp, &w, Some(&mask)).unwrap();
    let pattern = Arc::new(pattern);
    let b: usize = lead.iter().product();
    let x = rng.vec(b * inp);
    let bias = rng.vec(out);
    let r = rng.vec(b * out);
    let nnz = values.len();

    // Sparse path, with a 3-D input [lead0, lead1, in].
    let xs = tensor(x.clone(), [lead[0], lead[1], inp], dev).require_grad();
    let vs = tensor(values, [nnz], dev).require_grad();
    let bs = tensor(bias.clone(), [out], dev).require_grad();
    let weight = SparseWeight {
        values: vs.clone(),
        pattern: pattern.clone(),
    };
    let ys = sparse_linear(xs.clone(), &weight, Some(bs.clone()));
    let rs = tensor(r.clone(), [lead[0], lead[1], out], dev);
    let gs = (ys.clone() * rs).sum().backward();

    // Dense masked path with burn's own autodiff.
    let xd = tensor(x, [b, inp], dev).require_grad();
    let wd = tensor(w, [out, inp], dev).require_grad();
    let bd = tensor(bias, [out], dev).require_grad();
    let yd = xd.clone().matmul(wd.clone().transpose()) + bd.clone().unsqueeze();
    let gd = (yd.clone() * tensor(r, [b, out], dev)).sum().backward();

    let tag = format!("{dev:?} linear {lead:?}x{inp}->{out} s={s}");
    assert_close32(&format!("{tag} y"), &vec_of(ys), &vec_of(yd));
    assert_close32(
        &format!("{tag} dx"),
        &vec_of(xs.grad(&gs).unwrap()),
        &vec_of(xd.grad(&gd).unwrap()),
    );
    let dw = vec_of(wd.grad(&gd).unwrap());
    assert_close32(
        &format!("{tag} dvalues"),
        &vec_of(vs.grad(&gs).unwrap()),
        &pattern.gather(&dw),
    );
    assert_close32(
        &format!("{tag} db"),
        &vec_of(bs.grad(&gs).unwrap()),
        &vec_of(bd.grad(&gd).unwrap()),
    );
}

#[test]
fn linear_autodiff_matches_dense_autodiff() {
    let mut rng = Rng::new(11);
    for dev in devices() {
        for (lead, out, inp, s) in [
            ([3, 7], 17, 29, 0.9),
            ([1, 1], 5, 3, 0.0),
            ([2, 33], 40, 64, 0.95),
            ([5, 13], 9, 31, 0.5),
        ] {
            check_linear(&dev, &mut rng, &lead, out, inp, s);
        }
    }
}

fn check_conv(
    dev: &Device,
    rng: &mut Rng,
    (b, ic, oc, h, w): (usize, usize, usize, usize, usize),
    g: (usize, usize, usize),
    s: f64,
) {
    let (k, stride, padding) = g;
    let geom = Conv2dGeometry {
        in_channels: ic,
        out_channels: oc,
        kernel: k,
        stride,
        padding,
    };
    let (oh, ow) = geom.output_size(h, w).unwrap();
    let cols = ic * k * k;
    let (wv, mask) = masked(rng, oc * cols, s);
    let (pattern, values) = SparsePattern::from_dense(oc, cols, &wv, Some(&mask)).unwrap();
    let pattern = Arc::new(pattern);
    let nnz = values.len();
    let x = rng.vec(b * ic * h * w);
    let bias = rng.vec(oc);
    let r = rng.vec(b * oc * oh * ow);

    let xs = tensor(x.clone(), [b, ic, h, w], dev).require_grad();
    let vs = tensor(values, [nnz], dev).require_grad();
    let bs = tensor(bias.clone(), [oc], dev).require_grad();
    let weight = SparseWeight {
        values: vs.clone(),
        pattern: pattern.clone(),
    };
    let ys = sparse_conv2d(xs.clone(), &weight, Some(bs.clone()), &geom);
    let gs = (ys.clone() * tensor(r.clone(), [b, oc, oh, ow], dev))
        .sum()
        .backward();

    let xd = tensor(x, [b, ic, h, w], dev).require_grad();
    let wd = tensor(wv, [oc, ic, k, k], dev).require_grad();
    let bd = tensor(bias, [oc], dev).require_grad();
    let opts = ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1);
    let yd = conv2d(xd.clone(), wd.clone(), Some(bd.clone()), opts);
    let gd = (yd.clone() * tensor(r, [b, oc, oh, ow], dev))
        .sum()
        .backward();

    let tag = format!("{dev:?} conv B={b} {ic}->{oc} {h}x{w} k{k} s{stride} p{padding} sp={s}");
    assert_close32(&format!("{tag} y"), &vec_of(ys), &vec_of(yd));
    assert_close32(
        &format!("{tag} dx"),
        &vec_of(xs.grad(&gs).unwrap()),
        &vec_of(xd.grad(&gd).unwrap()),
    );
    let dw = vec_of(wd.grad(&gd).unwrap());
    assert_close32(
        &format!("{tag} dvalues"),
        &vec_of(vs.grad(&gs).unwrap()),
        &pattern.gather(&dw),
    );
    assert_close32(
        &format!("{tag} db"),
        &vec_of(bs.grad(&gs).unwrap()),
        &vec_of(bd.grad(&gd).unwrap()),
    );
}

#[test]
fn conv_autodiff_matches_dense_autodiff() {
    let mut rng = Rng::new(12);
    for dev in devices() {
        check_conv(&dev, &mut rng, (3, 4, 5, 9, 8), (3, 1, 1), 0.8);
        check_conv(&dev, &mut rng, (9, 3, 6, 11, 11), (3, 2, 1), 0.9);
        check_conv(&dev, &mut rng, (2, 2, 3, 10, 9), (7, 2, 3), 0.5);
        check_conv(&dev, &mut rng, (17, 5, 4, 6, 6), (1, 1, 0), 0.0);
        check_conv(&dev, &mut rng, (4, 3, 3, 8, 8), (3, 1, 0), 0.95);
    }
}

#[test]
fn fully_sparse_layer_gives_bias_only_and_zero_input_gradient() {
    // 100 % sparsity: no stored values; y = b exactly, dX = 0 exactly.
    for dev in devices() {
        let w = Tensor::<2>::zeros([6, 5], &dev);
        let bias = Tensor::<1>::from_floats([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &dev);
        let layer = SparseLinear::from_dense(w, None, Some(bias))
            .unwrap()
            .with_execution(Execution::Sparse);
        assert_eq!(layer.pattern.nnz(), 0);
        let x = Tensor::<2>::ones([3, 5], &dev).require_grad();
        let y = layer.forward(x.clone());
        let expected: Vec<f32> = (0..3)
            .flat_map(|_| [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            .collect();
        assert_eq!(vec_of(y.clone()), expected);
        let g = y.sum().backward();
        assert_eq!(vec_of(x.grad(&g).unwrap()), vec![0.0; 15]);
    }
}

#[test]
fn layers_round_trip_and_dense_execution_agrees() {
    let mut rng = Rng::new(13);
    let dev = Device::flex().autodiff();
    // Linear: from_dense with a mask keeps exactly the masked entries; to_dense restores them.
    let (w, mask) = masked(&mut rng, 12 * 10, 0.7);
    let wt = tensor(w.clone(), [12, 10], &dev);
    let mt = Tensor::<2, Bool>::from_data(TensorData::new(mask.clone(), [12, 10]), &dev);
    let layer = SparseLinear::from_dense(wt, Some(mt), None).unwrap();
    assert_eq!(layer.pattern.nnz(), mask.iter().filter(|&&m| m).count());
    assert_eq!(vec_of(layer.to_dense().0), w);

    // Dense execution (the GPU fallback formula) and sparse execution: same y and grads.
    let x = tensor(rng.vec(7 * 10), [7, 10], &dev);
    let mut outs = Vec::new();
    for exec in [Execution::Dense, Execution::Sparse] {
        let l = SparseLinear::from_dense(tensor(w.clone(), [12, 10], &dev), None, None)
            .unwrap()
            .with_execution(exec);
        let xi = x.clone().require_grad();
        let y = l.forward(xi.clone());
        let g = (y.clone() * y.clone()).sum().backward();
        outs.push((
            vec_of(y),
            vec_of(xi.grad(&g).unwrap()),
            vec_of(l.values.val().grad(&g).unwrap()),
        ));
    }
    assert_close32("dense vs sparse y", &outs[1].0, &outs[0].0);
    assert_close32("dense vs sparse dx", &outs[1].1, &outs[0].1);
    assert_close32("dense vs sparse dvalues", &outs[1].2, &outs[0].2);

    // Conv: round trip of a [OC, IC, K, K] weight.
    let (cw, _) = masked(&mut rng, 4 * 3 * 3 * 3, 0.6);
    let conv =
        SparseConv2d::from_dense(tensor(cw.clone(), [4, 3, 3, 3], &dev), None, None, 2, 1).unwrap();
    assert_eq!(vec_of(conv.to_dense().0), cw);
    let xc = tensor(rng.vec(2 * 3 * 9 * 9), [2, 3, 9, 9], &dev);
    let yd = conv
        .clone()
        .with_execution(Execution::Dense)
        .forward(xc.clone());
    let ys = conv.with_execution(Execution::Sparse).forward(xc);
    assert_eq!(ys.dims(), [2, 4, 5, 5]);
    assert_close32("conv dense vs sparse", &vec_of(ys), &vec_of(yd));
}

#[test]
fn gather_from_dense_sends_gradients_only_to_kept_weights() {
    // The integration path for a dense-parameter layer: gradients reach the dense weight at
    // the non-zeros and are exactly 0 at the pruned positions.
    let mut rng = Rng::new(14);
    let dev = Device::flex().autodiff();
    let (w, mask) = masked(&mut rng, 8 * 6, 0.75);
    let pattern = Arc::new(SparsePattern::from_mask(8, 6, &mask).unwrap());
    let wt = tensor(w.clone(), [8, 6], &dev).require_grad();
    let x = tensor(rng.vec(5 * 6), [5, 6], &dev);
    let weight = SparseWeight::gather_from_dense(wt.clone(), pattern.clone());
    let y = sparse_linear(x.clone(), &weight, None);
    let g = y.sum().backward();
    let dw = vec_of(wt.grad(&g).unwrap());
    // d(sum y)/dW[i, j] = Σ_b x[b, j] at kept positions.
    let xv = vec_of(x);
    for i in 0..8 {
        for j in 0..6 {
            let want = if mask[i * 6 + j] {
                (0..5).map(|b| xv[b * 6 + j]).sum::<f32>()
            } else {
                0.0
            };
            let got = dw[i * 6 + j];
            assert!(
                (got - want).abs() <= 1e-5,
                "dW[{i},{j}] = {got}, want {want}"
            );
            if !mask[i * 6 + j] {
                assert_eq!(got, 0.0, "pruned weight got a gradient");
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let dev = Device::flex();
    let w = Tensor::<2>::ones([3, 4], &dev);
    let m = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; 6], [2, 3]), &dev);
    assert!(SparseLinear::from_dense(w.clone(), Some(m), None).is_err());
    let b = Tensor::<1>::ones([4], &dev);
    assert!(SparseLinear::from_dense(w, None, Some(b)).is_err());
    let cw = Tensor::<4>::ones([2, 2, 3, 2], &dev);
    assert!(SparseConv2d::from_dense(cw, None, None, 1, 0).is_err());
}

#[test]
fn cpu_devices_are_detected() {
    assert!(is_sparse_cpu_device(&Device::flex()));
    assert!(is_sparse_cpu_device(&Device::ndarray().autodiff()));
}

#[test]
fn auto_selection_is_dense_at_low_sparsity_and_measured_above() {
    let dev = Device::flex();
    let mut rng = Rng::new(15);
    // 50 % sparse: below the threshold, dense without measuring.
    let low = Arc::new(SparsePattern::from_mask(32, 32, &rng.mask(32 * 32, 0.5)).unwrap());
    let d = select::decide_linear(&low, 8, &dev);
    assert!(!d.sparse && d.dense_ms.is_nan() && d.sparse_ms.is_nan());
    // 95 % sparse: measured; the choice is the faster one.
    let high = Arc::new(SparsePattern::from_mask(64, 96, &rng.mask(64 * 96, 0.95)).unwrap());
    let d = select::decide_linear(&high, 16, &dev);
    assert!(d.dense_ms > 0.0 && d.sparse_ms > 0.0);
    assert_eq!(d.sparse, d.sparse_ms < d.dense_ms);
    // Cached: the same decision on the second call.
    assert_eq!(select::decide_linear(&high, 16, &dev), d);
}
