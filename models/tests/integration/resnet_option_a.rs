//! The option-A shortcut's gather (`shears_models::resnet::option_a::subsample_pad`, a backend
//! extension with its own backward) against the same shortcut in burn's tensor ops
//! (`subsample_pad_burn`, reshape + narrow + cat, differentiated by burn): values and input
//! gradients equal bit for bit, in both layouts, with odd rows/columns and with and without
//! padding, on both CPU backends; and the kept entries counted exactly.

use burn::tensor::{Device, Tensor, TensorData};
use shears_models::resnet::option_a::{subsample_pad, subsample_pad_burn};

use crate::sparseprop_common::Rng;

/// `n` values in [0.5, 1.5): never 0, so that zeros in a result are the shortcut's own.
fn seeded(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.unif() as f32 + 0.5).collect()
}

fn values(t: Tensor<4>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

/// `(y, dL/dx)` of `f` at `x` for `L = Σ y·r`.
fn run(
    device: &Device,
    dims: [usize; 4],
    xv: &[f32],
    rv: &[f32],
    f: impl Fn(Tensor<4>) -> Tensor<4>,
) -> (Vec<usize>, Vec<f32>, Vec<f32>) {
    let ad = device.clone().autodiff();
    let x = Tensor::<4>::from_data(TensorData::new(xv.to_vec(), dims), &ad).require_grad();
    let y = f(x.clone());
    let shape = y.dims().to_vec();
    let r = Tensor::<4>::from_data(
        TensorData::new(rv[..shape.iter().product()].to_vec(), y.dims()),
        &ad,
    );
    let grads = (y.clone() * r).sum().backward();
    let dx = x.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap();
    (shape, values(y), dx)
}

#[test]
fn gather_equals_burn_ops_in_values_and_gradients() {
    #[allow(deprecated)]
    let devices = [Device::flex(), Device::ndarray()];
    // (shape, [c, h, w], pad): NCHW and CHWB, even and odd rows/columns.
    let cases: [([usize; 4], [usize; 3], usize); 6] = [
        ([2, 4, 8, 8], [1, 2, 3], 2),
        ([3, 5, 7, 6], [1, 2, 3], 1),
        ([2, 3, 5, 9], [1, 2, 3], 0),
        ([4, 8, 8, 3], [0, 1, 2], 2),
        ([5, 7, 6, 2], [0, 1, 2], 3),
        ([1, 1, 1, 1], [1, 2, 3], 1),
    ];
    for device in &devices {
        for (k, &(dims, axes, pad)) in cases.iter().enumerate() {
            let n: usize = dims.iter().product();
            let xv = seeded(n, 11 + k as u64);
            let rv = seeded(4 * n + 64 * pad + 64, 101 + k as u64);
            let (s_got, y_got, dx_got) =
                run(device, dims, &xv, &rv, |x| subsample_pad(x, axes, pad));
            let (s_want, y_want, dx_want) =
                run(device, dims, &xv, &rv, |x| subsample_pad_burn(x, axes, pad));
            let what = format!("{device:?} {dims:?} axes {axes:?} pad {pad}");
            assert_eq!(s_got, s_want, "{what}: shape");
            assert_eq!(y_got, y_want, "{what}: values");
            assert_eq!(dx_got, dx_want, "{what}: dX");
            // Every kept entry is one nonzero input (inputs are never 0): ⌈h/2⌉·⌈w/2⌉ of
            // each plane, and as many nonzero input gradients.
            let [c, h, w] = axes;
            let other = (0..4).find(|a| !axes.contains(a)).unwrap();
            let kept = dims[other] * dims[c] * dims[h].div_ceil(2) * dims[w].div_ceil(2);
            assert_eq!(y_got.iter().filter(|&&v| v != 0.0).count(), kept, "{what}");
            assert_eq!(dx_got.iter().filter(|&&v| v != 0.0).count(), kept, "{what}");
        }
    }
}
