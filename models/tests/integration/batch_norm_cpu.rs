//! The fused training-mode batch norm (`shears_models::batch_norm_cpu`) against burn's
//! autodiff through the plain formula `(x − mean)/√(var + ε)·γ + β` (biased variance):
//! output, batch statistics and the gradients of `x`, `γ` and `β`, on both CPU backends,
//! with inputs far from zero mean (where a one-pass variance would lose digits).

use burn::tensor::{Device, Tensor, TensorData};
use shears_models::batch_norm_cpu::batch_norm_train;

fn seeded(n: usize, seed: u64, scale: f32, offset: f32) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale + offset
        })
        .collect()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, e)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - e).abs() <= tol * e.abs().max(1.0),
            "{what}[{i}]: {a} vs {e}"
        );
    }
}

fn check(device: &Device, [b, c, h, w]: [usize; 4], offset: f32, seed: u64) {
    let ad = device.clone().autodiff();
    let n = b * c * h * w;
    let xv = seeded(n, seed, 4.0, offset);
    let gv = seeded(n, seed + 1, 2.0, 0.0);
    let (wv, bv) = (seeded(c, seed + 2, 1.0, 1.0), seeded(c, seed + 3, 1.0, 0.0));
    let leaf = |v: &[f32]| {
        Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &ad).require_grad()
    };
    let x4 = |v: &[f32]| {
        Tensor::<4>::from_data(TensorData::new(v.to_vec(), [b, c, h, w]), &ad).require_grad()
    };
    let g = Tensor::<4>::from_data(TensorData::new(gv, [b, c, h, w]), &ad);

    // Reference: the formula in tensor ops, differentiated by burn.
    let (x_r, w_r, b_r) = (x4(&xv), leaf(&wv), leaf(&bv));
    let mean = x_r.clone().mean_dim(0).mean_dim(2).mean_dim(3);
    let centered = x_r.clone() - mean.clone();
    let var = (centered.clone() * centered.clone())
        .mean_dim(0)
        .mean_dim(2)
        .mean_dim(3);
    let y_r = centered / (var.clone() + 1e-5).sqrt() * w_r.clone().reshape([1, c, 1, 1])
        + b_r.clone().reshape([1, c, 1, 1]);
    let grads_r = (y_r.clone() * g.clone()).sum().backward();

    let (x_f, w_f, b_f) = (x4(&xv), leaf(&wv), leaf(&bv));
    let (y_f, mean_f, var_f) = batch_norm_train(x_f.clone(), w_f.clone(), b_f.clone(), 1e-5);
    let grads_f = (y_f.clone() * g).sum().backward();

    let what = |s: &str| format!("{s} {:?} offset {offset}", [b, c, h, w]);
    close(&what("y"), &values(y_f), &values(y_r), 2e-4);
    close(
        &what("mean"),
        &values(mean_f),
        &values(mean.reshape([c])),
        1e-5,
    );
    close(
        &what("var"),
        &values(var_f),
        &values(var.reshape([c])),
        1e-3,
    );
    let grad = |t: &Tensor<4>, gr| values(t.grad(gr).unwrap());
    close(
        &what("dX"),
        &grad(&x_f, &grads_f),
        &grad(&x_r, &grads_r),
        2e-3,
    );
    let grad1 = |t: &Tensor<1>, gr| values(t.grad(gr).unwrap());
    close(
        &what("dγ"),
        &grad1(&w_f, &grads_f),
        &grad1(&w_r, &grads_r),
        1e-3,
    );
    close(
        &what("dβ"),
        &grad1(&b_f, &grads_f),
        &grad1(&b_r, &grads_r),
        1e-4,
    );
}

#[test]
fn fused_training_batch_norm_equals_the_formula_differentiated_by_burn() {
    for (i, shape) in [[4, 3, 5, 7], [1, 2, 1, 1], [2, 16, 8, 8], [8, 4, 3, 3]]
        .into_iter()
        .enumerate()
    {
        for offset in [0.0, 3.0] {
            check(&Device::flex(), shape, offset, 11 + i as u64);
        }
    }
    check(&Device::ndarray(), [3, 5, 4, 4], 1.0, 99);
}

/// `relu(bn(x))` and `relu(bn(x) + r)` fused into the normalisation pass
/// (`batch_norm_train_then`) against the fused batch norm followed by burn's own ReLU and
/// add: outputs and the gradients of `x`, `γ`, `β` and `r` equal exactly (same roundings, the
/// ReLU's derivative 0 at 0), on both CPU backends.
fn check_activation(device: &Device, [b, c, h, w]: [usize; 4], add: bool, seed: u64) {
    use burn::tensor::activation::relu;
    use shears_models::batch_norm_cpu::{Activation, batch_norm_train_then};

    let ad = device.clone().autodiff();
    let n = b * c * h * w;
    let (xv, gv, rv) = (
        seeded(n, seed, 4.0, 0.5),
        seeded(n, seed + 1, 2.0, 0.0),
        seeded(n, seed + 4, 3.0, 0.0),
    );
    let (wv, bv) = (seeded(c, seed + 2, 1.0, 1.0), seeded(c, seed + 3, 1.0, 0.0));
    let leaf1 = |v: &[f32]| {
        Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &ad).require_grad()
    };
    let leaf4 = |v: &[f32]| {
        Tensor::<4>::from_data(TensorData::new(v.to_vec(), [b, c, h, w]), &ad).require_grad()
    };
    let g = Tensor::<4>::from_data(TensorData::new(gv, [b, c, h, w]), &ad);

    let (x_r, w_r, b_r, r_r) = (leaf4(&xv), leaf1(&wv), leaf1(&bv), leaf4(&rv));
    let (y, _, _) = batch_norm_train(x_r.clone(), w_r.clone(), b_r.clone(), 1e-5);
    let y_r = if add { relu(y + r_r.clone()) } else { relu(y) };
    let grads_r = (y_r.clone() * g.clone()).sum().backward();

    let (x_f, w_f, b_f, r_f) = (leaf4(&xv), leaf1(&wv), leaf1(&bv), leaf4(&rv));
    let act = if add {
        Activation::AddRelu(Box::new(r_f.clone()))
    } else {
        Activation::Relu
    };
    let (y_f, _, _) = batch_norm_train_then(x_f.clone(), w_f.clone(), b_f.clone(), 1e-5, act);
    let grads_f = (y_f.clone() * g).sum().backward();

    let what = |s: &str| format!("{s} {:?} add {add}", [b, c, h, w]);
    let zeros = values(y_r.clone()).iter().filter(|&&v| v == 0.0).count();
    assert!(zeros > 0 && zeros < n, "{}: the ReLU must cut", what("y"));
    close(&what("y"), &values(y_f), &values(y_r), 0.0);
    let grad4 = |t: &Tensor<4>, gr| values(t.grad(gr).unwrap());
    let grad1 = |t: &Tensor<1>, gr| values(t.grad(gr).unwrap());
    close(
        &what("dX"),
        &grad4(&x_f, &grads_f),
        &grad4(&x_r, &grads_r),
        0.0,
    );
    close(
        &what("dγ"),
        &grad1(&w_f, &grads_f),
        &grad1(&w_r, &grads_r),
        0.0,
    );
    close(
        &what("dβ"),
        &grad1(&b_f, &grads_f),
        &grad1(&b_r, &grads_r),
        0.0,
    );
    if add {
        close(
            &what("dR"),
            &grad4(&r_f, &grads_f),
            &grad4(&r_r, &grads_r),
            0.0,
        );
    } else {
        assert!(r_f.grad(&grads_f).is_none(), "{}: no residual", what("dR"));
    }
}

#[test]
fn fused_relu_and_residual_equal_the_separate_ops_exactly() {
    for (i, shape) in [[4, 3, 5, 7], [2, 16, 8, 8], [8, 4, 3, 3], [3, 2, 11, 13]]
        .into_iter()
        .enumerate()
    {
        for add in [false, true] {
            check_activation(&Device::flex(), shape, add, 31 + i as u64);
        }
    }
    check_activation(&Device::ndarray(), [3, 5, 4, 4], true, 77);
    check_activation(&Device::ndarray(), [3, 5, 4, 4], false, 78);
}
