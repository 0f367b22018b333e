//! The vectorised GELU (`shears_models::activation`) against burn's own `gelu` (scalar libm
//! `erf`) and its autodiff backward, on every instruction set this CPU has, on both CPU
//! backends, over a dense grid, the tails, and random values.

use burn::tensor::{Device, Tensor, TensorData};
use shears_models::activation::{gelu, gelu_backward_slice_on, gelu_slice_on};
use shears_models::sparseprop::simd::Isa;

/// −12 .. 12 in steps of 1/128, the tails, signed zeros and tiny values, and seeded
/// values of spread 4.
fn inputs() -> Vec<f32> {
    let mut v: Vec<f32> = (-1536..=1536).map(|i| i as f32 / 128.0).collect();
    v.extend([
        0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 30.0, -30.0, 1e4, -1e4, 3e38, -3e38,
    ]);
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..20_000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let u = (s >> 40) as f32 / (1u64 << 24) as f32;
        v.push((u - 0.5) * 8.0);
    }
    v
}

fn values(t: Tensor<1>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn burn_gelu_and_grad(x: &[f32], g: &[f32], device: &Device) -> (Vec<f32>, Vec<f32>) {
    let ad = device.clone().autodiff();
    let xt = Tensor::<1>::from_data(TensorData::new(x.to_vec(), [x.len()]), &ad).require_grad();
    let gt = Tensor::<1>::from_data(TensorData::new(g.to_vec(), [g.len()]), &ad);
    let y = burn::tensor::activation::gelu(xt.clone());
    let grads = (y.clone() * gt).sum().backward();
    (values(y.inner()), values(xt.grad(&grads).unwrap()))
}

fn isas() -> Vec<Isa> {
    [Isa::Portable, Isa::Avx2Fma, Isa::Avx512]
        .into_iter()
        .filter(|i| i.supported())
        .collect()
}

#[test]
fn kernels_match_burn_on_every_instruction_set() {
    let x = inputs();
    // Upstream gradients of both signs and several scales.
    let g: Vec<f32> = (0..x.len()).map(|i| ((i % 7) as f32 - 3.0) * 0.5).collect();
    let (want_y, want_dx) = burn_gelu_and_grad(&x, &g, &Device::flex());
    for isa in isas() {
        let mut y = x.clone();
        gelu_slice_on(isa, &mut y);
        let mut dx = g.clone();
        gelu_backward_slice_on(isa, &x, &mut dx);
        for i in 0..x.len() {
            let scale = x[i].abs().max(1.0);
            assert!(
                (y[i] - want_y[i]).abs() <= 4e-7 * scale,
                "{isa:?}: gelu({}) = {} (burn {})",
                x[i],
                y[i],
                want_y[i]
            );
            assert!(
                (dx[i] - want_dx[i]).abs() <= 1e-6 * g[i].abs().max(1.0),
                "{isa:?}: dgelu({}) · {} = {} (burn {})",
                x[i],
                g[i],
                dx[i],
                want_dx[i]
            );
        }
        // Exactly zero far left, exactly x far right, NaN stays NaN.
        let mut edge = vec![-30.0f32, 30.0, f32::NAN];
        gelu_slice_on(isa, &mut edge);
        assert_eq!(edge[0].abs(), 0.0, "{isa:?}");
        assert_eq!(edge[1], 30.0, "{isa:?}");
        assert!(edge[2].is_nan(), "{isa:?}");
    }
}

#[test]
fn tensor_gelu_and_its_gradient_match_burn_on_both_cpu_backends() {
    let x = inputs()[..4096].to_vec();
    let g: Vec<f32> = (0..x.len()).map(|i| (i % 5) as f32 - 2.0).collect();
    // burn's Flex GELU is the reference on both backends: NdArray's backward loses the
    // left tail (it returns 0 for gelu'(−5.37) ≈ −1.15·10⁻⁶).
    let (want_y, want_dx) = burn_gelu_and_grad(&x, &g, &Device::flex());
    for device in [Device::flex(), Device::ndarray()] {
        let ad = device.clone().autodiff();
        let leaf =
            Tensor::<1>::from_data(TensorData::new(x.clone(), [x.len()]), &ad).require_grad();
        let xt = leaf.clone().reshape([16, 16, 16]);
        let gt = Tensor::<1>::from_data(TensorData::new(g.clone(), [g.len()]), &ad)
            .reshape([16, 16, 16]);
        let y = gelu(xt.clone());
        assert_eq!(y.dims(), [16, 16, 16]);
        let grads = (y.clone() * gt).sum().backward();
        let y = values(y.inner().reshape([4096]));
        let dx = values(leaf.grad(&grads).unwrap());
        for i in 0..x.len() {
            assert!((y[i] - want_y[i]).abs() <= 4e-7 * x[i].abs().max(1.0));
            assert!(
                (dx[i] - want_dx[i]).abs() <= 2e-6,
                "{device:?} at {}: {} vs {}",
                x[i],
                dx[i],
                want_dx[i]
            );
        }
        // Without autodiff too.
        let plain = Tensor::<1>::from_data(TensorData::new(x.clone(), [x.len()]), &device);
        assert_eq!(values(gelu(plain)), y);
    }
}
