//! [`PrunableConv2d`]: its SparseProp path (forward, dX and dW through autodiff) equals the
//! dense conv of the masked weight, on Flex and NdArray, incl. stride 2 and padding 1.

use crate::sparseprop_common;

use burn::module::Param;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use shears_models::conv::{PrunableConv2d, PrunableConv2dConfig};
use shears_models::sparseprop::Execution;
use sparseprop_common::{Rng, assert_close32};

fn devices() -> Vec<Device> {
    vec![Device::flex().autodiff(), Device::ndarray().autodiff()]
}

fn vec_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D], dev: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), dev)
}

#[allow(clippy::too_many_arguments)]
fn check(
    dev: &Device,
    rng: &mut Rng,
    (b, ic, oc, h, w): (usize, usize, usize, usize, usize),
    k: usize,
    stride: usize,
    padding: usize,
    bias: bool,
    sparsity: f64,
) {
    let n = oc * ic * k * k;
    let mask = rng.mask(n, sparsity);
    let wv: Vec<f32> = rng
        .vec(n)
        .into_iter()
        .zip(&mask)
        .map(|(v, &m)| if m { v } else { 0.0 })
        .collect();
    let bv = rng.vec(oc);
    let xv = rng.vec(b * ic * h * w);

    let mut layer: PrunableConv2d = PrunableConv2dConfig::new(ic, oc, k)
        .with_stride(stride)
        .with_padding(padding)
        .with_bias(bias)
        .init(dev);
    layer.weight = Param::from_tensor(tensor(wv.clone(), [oc, ic, k, k], dev));
    if bias {
        layer.bias = Some(Param::from_tensor(tensor(bv.clone(), [oc], dev)));
    }
    let sparsity_seen = layer.set_sparse(Execution::Sparse).unwrap();
    assert!(layer.is_sparse());
    let zeros = mask.iter().filter(|m| !**m).count() as f64 / n as f64;
    assert!((sparsity_seen - zeros).abs() < 1e-9 || sparsity_seen >= zeros);

    // Sparse path.
    let xs = tensor(xv.clone(), [b, ic, h, w], dev).require_grad();
    let ys = layer.forward(xs.clone());
    let gs = (ys.clone() * ys.clone()).sum().backward();
    let dxs = vec_of(xs.grad(&gs).unwrap());
    let dws = vec_of(layer.weight.grad(&gs).unwrap());

    // Dense masked conv with burn's own autodiff.
    let xd = tensor(xv, [b, ic, h, w], dev).require_grad();
    let wd = tensor(wv, [oc, ic, k, k], dev).require_grad();
    let bd = bias.then(|| tensor(bv, [oc], dev));
    let opts = ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1);
    let yd = conv2d(xd.clone(), wd.clone(), bd, opts);
    let gd = (yd.clone() * yd.clone()).sum().backward();
    let dxd = vec_of(xd.grad(&gd).unwrap());
    let dwd = vec_of(wd.grad(&gd).unwrap());

    let what = format!("b{b} ic{ic} oc{oc} {h}x{w} k{k} s{stride} p{padding}");
    assert_eq!(ys.dims(), yd.dims(), "{what}");
    assert_close32(&format!("{what}: forward"), &vec_of(ys), &vec_of(yd));
    assert_close32(&format!("{what}: dX"), &dxs, &dxd);
    // The sparse path's weight gradient is the dense one at the kept positions, 0 elsewhere.
    let dwd_masked: Vec<f32> = dwd
        .iter()
        .zip(&mask)
        .map(|(g, &m)| if m { *g } else { 0.0 })
        .collect();
    assert_close32(&format!("{what}: dW"), &dws, &dwd_masked);

    // Back to dense: the same forward as the dense masked conv.
    layer.set_dense();
    assert!(!layer.is_sparse());
    let yback = layer.forward(tensor(vec_of(xs.clone().detach()), [b, ic, h, w], dev));
    let yref = conv2d(
        xs.detach(),
        layer.weight.val().detach(),
        layer.bias.as_ref().map(|b| b.val().detach()),
        ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1),
    );
    assert_close32(&format!("{what}: dense"), &vec_of(yback), &vec_of(yref));
}

#[test]
fn sparse_forward_and_backward_equal_the_dense_masked_conv() {
    let mut rng = Rng::new(11);
    for dev in devices() {
        check(&dev, &mut rng, (2, 3, 8, 9, 9), 3, 1, 1, false, 0.7);
        check(&dev, &mut rng, (3, 8, 16, 10, 10), 3, 2, 1, true, 0.9);
        check(&dev, &mut rng, (2, 16, 8, 7, 7), 1, 2, 0, false, 0.5);
        check(&dev, &mut rng, (1, 4, 6, 11, 8), 3, 1, 0, true, 0.0);
        check(&dev, &mut rng, (2, 3, 8, 16, 16), 7, 2, 3, false, 0.8);
    }
}

#[test]
fn config_defaults_are_torch_like() {
    let dev = Device::flex();
    let conv = PrunableConv2dConfig::new(16, 32, 3)
        .with_stride(2)
        .with_padding(1)
        .init(&dev);
    assert_eq!(conv.weight.dims(), [32, 16, 3, 3]);
    assert!(conv.bias.is_none());
    assert_eq!(conv.geometry().stride, 2);
    assert!(!conv.is_sparse());
    // kaiming_normal_(fan_out, relu): std = sqrt(2 / (32 * 9)).
    let v = vec_of(conv.weight.val());
    let std = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    let expected = (2.0f32 / (32.0 * 9.0)).sqrt();
    assert!(
        (std - expected).abs() < 0.15 * expected,
        "{std} vs {expected}"
    );
    let y = conv.forward(Tensor::zeros([1, 16, 8, 8], &dev));
    assert_eq!(y.dims(), [1, 32, 4, 4]);
}
