//! A MiniLM-size BERT encoder (6 layers, hidden 384, 12 heads, FFN 1536; post-LN) built
//! from plain tensor ops, run twice: with every encoder linear on the SparseProp kernels
//! (90 % sparse) and with burn's dense autodiff on the masked weights. Forward output and
//! every gradient (input, each linear's values vs dense dW at the non-zeros, biases) must
//! agree within 1e-4 (relative to each tensor's scale).
//!
//! This stands in for the full BERT check until the `bert` module is merged: the encoder
//! arithmetic here is the same as BERT's, only the linear layers differ between the runs.

use crate::sparseprop_common;

use std::sync::Arc;

use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use shears_models::sparseprop::{SparsePattern, SparseWeight, sparse_linear};
use sparseprop_common::{Rng, assert_close32};

const HIDDEN: usize = 384;
const FFN: usize = 1536;
const HEADS: usize = 12;
const LAYERS: usize = 6;
const BATCH: usize = 2;
const SEQ: usize = 7;

struct Lin {
    dense: Vec<f32>,
    pattern: Arc<SparsePattern>,
    values: Vec<f32>,
    bias: Vec<f32>,
}

/// One run's trainable tensors for a linear: either sparse values or the dense weight.
struct LinParams {
    w: Tensor<2>,
    values: Tensor<1>,
    bias: Tensor<1>,
}

fn make_lin(rng: &mut Rng, out: usize, inp: usize, sparsity: f64) -> Lin {
    let mask = rng.mask(out * inp, sparsity);
    let scale = 1.0 / ((1.0 - sparsity) * inp as f64).sqrt() as f32;
    let dense: Vec<f32> = rng
        .vec(out * inp)
        .into_iter()
        .zip(&mask)
        .map(|(v, &m)| if m { v * scale } else { 0.0 })
        .collect();
    let (pattern, values) = SparsePattern::from_dense(out, inp, &dense, Some(&mask)).unwrap();
    let bias = rng.vec(out).into_iter().map(|v| v * 0.1).collect();
    Lin {
        dense,
        pattern: Arc::new(pattern),
        values,
        bias,
    }
}

fn t1(v: &[f32], dev: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), dev).require_grad()
}

fn layer_norm(x: Tensor<3>) -> Tensor<3> {
    let mean = x.clone().mean_dim(2);
    let xc = x - mean;
    let var = xc.clone().powi_scalar(2).mean_dim(2);
    xc / (var + 1e-12).sqrt()
}

fn encoder(x: Tensor<3>, lins: &[Lin], params: &[LinParams], sparse: bool) -> Tensor<3> {
    let apply = |h: Tensor<3>, i: usize| {
        let p = &params[i];
        if sparse {
            let w = SparseWeight {
                values: p.values.clone(),
                pattern: lins[i].pattern.clone(),
            };
            sparse_linear(h, &w, Some(p.bias.clone()))
        } else {
            h.matmul(p.w.clone().transpose().unsqueeze()) + p.bias.clone().unsqueeze()
        }
    };
    let dh = HIDDEN / HEADS;
    let mut h = x;
    for l in 0..LAYERS {
        let base = l * 6;
        let heads = |t: Tensor<3>| t.reshape([BATCH, SEQ, HEADS, dh]).swap_dims(1, 2);
        let q = heads(apply(h.clone(), base));
        let k = heads(apply(h.clone(), base + 1));
        let v = heads(apply(h.clone(), base + 2));
        let att = softmax(q.matmul(k.swap_dims(2, 3)) / (dh as f64).sqrt(), 3);
        let ctx = att.matmul(v).swap_dims(1, 2).reshape([BATCH, SEQ, HIDDEN]);
        h = layer_norm(h + apply(ctx, base + 3));
        let f = apply(gelu(apply(h.clone(), base + 4)), base + 5);
        h = layer_norm(h + f);
    }
    h
}

fn vec_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn minilm_size_encoder_sparse_equals_dense_masked() {
    let mut rng = Rng::new(21);
    let mut lins = Vec::new();
    for _ in 0..LAYERS {
        for (out, inp) in [
            (HIDDEN, HIDDEN),
            (HIDDEN, HIDDEN),
            (HIDDEN, HIDDEN),
            (HIDDEN, HIDDEN),
            (FFN, HIDDEN),
            (HIDDEN, FFN),
        ] {
            lins.push(make_lin(&mut rng, out, inp, 0.9));
        }
    }
    let x = rng.vec(BATCH * SEQ * HIDDEN);
    let r = rng.vec(BATCH * SEQ * HIDDEN);
    let dev = Device::flex().autodiff();

    let mut results = Vec::new();
    for sparse in [true, false] {
        let params: Vec<LinParams> = lins
            .iter()
            .map(|l| LinParams {
                w: Tensor::<2>::from_data(
                    TensorData::new(l.dense.clone(), [l.pattern.rows(), l.pattern.cols()]),
                    &dev,
                )
                .require_grad(),
                values: t1(&l.values, &dev),
                bias: t1(&l.bias, &dev),
            })
            .collect();
        let xt = Tensor::<3>::from_data(TensorData::new(x.clone(), [BATCH, SEQ, HIDDEN]), &dev)
            .require_grad();
        let y = encoder(xt.clone(), &lins, &params, sparse);
        let rt = Tensor::<3>::from_data(TensorData::new(r.clone(), [BATCH, SEQ, HIDDEN]), &dev);
        let grads = (y.clone() * rt).sum().backward();
        let dx = vec_of(xt.grad(&grads).unwrap());
        let per_lin: Vec<(Vec<f32>, Vec<f32>)> = params
            .iter()
            .zip(&lins)
            .map(|(p, l)| {
                let dw = if sparse {
                    vec_of(p.values.grad(&grads).unwrap())
                } else {
                    l.pattern.gather(&vec_of(p.w.grad(&grads).unwrap()))
                };
                (dw, vec_of(p.bias.grad(&grads).unwrap()))
            })
            .collect();
        results.push((vec_of(y), dx, per_lin));
    }
    let (s, d) = (&results[0], &results[1]);
    assert_close32("encoder output", &s.0, &d.0);
    assert_close32("encoder dX", &s.1, &d.1);
    for (i, ((sw, sb), (dw, db))) in s.2.iter().zip(&d.2).enumerate() {
        assert_close32(&format!("linear {i} dW at nnz"), sw, dw);
        assert_close32(&format!("linear {i} db"), sb, db);
    }
}
