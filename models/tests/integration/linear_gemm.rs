//! The dense linear GEMM path (`shears_models::linear_gemm::dense_linear`) against a direct
//! f64 computation: `y = x·Wᵀ + b`, `dX`, `dW` and the bias gradient, for 2-D and 3-D inputs,
//! one row, more rows than threads, a single output, on both CPU backends, with and without
//! a gradient for the input and without a bias.

use burn::tensor::{Device, Tensor, TensorData};
use shears_models::linear_gemm::dense_linear;

use crate::conv_gemm::Rng;

/// `(leading dims, in, out, bias)`.
type Case = (Vec<usize>, usize, usize, bool);

fn cases() -> Vec<Case> {
    vec![
        (vec![1], 7, 5, true),       // one row
        (vec![9], 16, 1, true),      // one output
        (vec![2, 13], 33, 17, true), // 3-D input: batch × sequence
        (vec![64], 96, 80, false),   // no bias, more rows than threads
        (vec![3, 5], 384, 48, true), // wide input
    ]
}

/// `(y, dx, dw, db)` in f64 for upstream gradient `g`.
fn reference(
    n: usize,
    d_in: usize,
    d_out: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    g: &[f32],
) -> [Vec<f64>; 4] {
    let mut y = vec![0.0f64; n * d_out];
    let mut dx = vec![0.0f64; n * d_in];
    let mut dw = vec![0.0f64; d_out * d_in];
    let mut db = vec![0.0f64; d_out];
    for r in 0..n {
        for o in 0..d_out {
            let gy = g[r * d_out + o] as f64;
            db[o] += gy;
            let mut acc = b.get(o).map_or(0.0, |&v| v as f64);
            for i in 0..d_in {
                let (xv, wv) = (x[r * d_in + i] as f64, w[o * d_in + i] as f64);
                acc += xv * wv;
                dx[r * d_in + i] += wv * gy;
                dw[o * d_in + i] += xv * gy;
            }
            y[r * d_out + o] = acc;
        }
    }
    [y, dx, dw, db]
}

fn close(what: &str, c: &Case, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what} {c:?}: length");
    for (i, (&a, &e)) in got.iter().zip(want).enumerate() {
        assert!(
            (a as f64 - e).abs() <= 1e-4 * e.abs().max(1.0),
            "{what} {c:?}[{i}]: {a} vs {e}"
        );
    }
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

fn check<const D: usize>(device: &Device, c: &Case, input_grad: bool, seed: u64) {
    let (lead, d_in, d_out, has_bias) = c;
    let (d_in, d_out) = (*d_in, *d_out);
    let n: usize = lead.iter().product();
    let mut r = Rng(seed | 1);
    let (xv, wv) = (r.vec(n * d_in), r.vec(d_out * d_in));
    let bv = if *has_bias { r.vec(d_out) } else { Vec::new() };
    let gv = r.vec(n * d_out);
    let [y_ref, dx_ref, dw_ref, db_ref] = reference(n, d_in, d_out, &xv, &wv, &bv, &gv);

    let ad = device.clone().autodiff();
    let shape = |last: usize| -> [usize; D] {
        let mut s = [0; D];
        s[..D - 1].copy_from_slice(lead);
        s[D - 1] = last;
        s
    };
    let mut x = Tensor::<D>::from_data(TensorData::new(xv, shape(d_in)), &ad);
    if input_grad {
        x = x.require_grad();
    }
    let w = Tensor::<2>::from_data(TensorData::new(wv, [d_out, d_in]), &ad).require_grad();
    let b =
        has_bias.then(|| Tensor::<1>::from_data(TensorData::new(bv, [d_out]), &ad).require_grad());
    let g = Tensor::<D>::from_data(TensorData::new(gv, shape(d_out)), &ad);
    let y = dense_linear(x.clone(), w.clone(), b.clone());
    assert_eq!(y.dims(), shape(d_out), "{c:?}: output shape");
    let grads = (y.clone() * g).sum().backward();
    close("y", c, &values(y.inner()), &y_ref);
    close("dW", c, &values(w.grad(&grads).unwrap()), &dw_ref);
    if let Some(b) = b {
        close("db", c, &values(b.grad(&grads).unwrap()), &db_ref);
    }
    match x.grad(&grads) {
        Some(dx) => close("dX", c, &values(dx), &dx_ref),
        None => assert!(!input_grad, "{c:?}: no dX although the input requires it"),
    }
}

fn run(device: &Device, seed: u64) {
    for (i, c) in cases().iter().enumerate() {
        let s = seed + 7 * i as u64;
        match c.0.len() {
            1 => {
                check::<2>(device, c, true, s);
                check::<2>(device, c, false, s + 1);
            }
            _ => {
                check::<3>(device, c, true, s);
                check::<3>(device, c, false, s + 1);
            }
        }
    }
}

#[test]
fn forward_and_gradients_equal_a_direct_product() {
    run(&Device::flex(), 17);
}

#[test]
fn the_ndarray_backend_runs_the_same_path() {
    run(&Device::ndarray(), 101);
}
