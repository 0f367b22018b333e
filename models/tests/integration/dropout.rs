//! The counter-based dropout (`shears_models::dropout`): the drop rate is `p` within
//! binomial bounds, survivors are scaled by exactly `1/(1 − p)`, the backward uses the very
//! mask of the forward, a mask is a function of its seed, and it is the
//! identity outside training, as burn's dropout.

use burn::nn::DropoutConfig;
use burn::tensor::{Device, Tensor, TensorData};
use shears_models::dropout::{DropMask, dropout};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn the_drop_rate_is_p_and_survivors_are_scaled_exactly() {
    let n = 1usize << 20;
    for p in [0.1f64, 0.5, 0.9] {
        let mask = DropMask::new(0x1234_5678_9abc_def0 ^ p.to_bits(), p);
        let mut v = vec![3.0f32; n];
        mask.apply_slice(&mut v);
        let dropped = v.iter().filter(|&&x| x == 0.0).count();
        // Binomial(n, p): within 6 standard deviations.
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (dropped as f64 - n as f64 * p).abs() < 6.0 * sd,
            "p {p}: {dropped} of {n} dropped"
        );
        let scaled = 3.0f32 * (1.0 / (1.0 - p)) as f32;
        assert!(v.iter().all(|&x| x == 0.0 || x == scaled), "p {p}");
        // The slice agrees with the per-element rule, and neighbours are not correlated:
        // P(both of a pair dropped) ≈ p².
        for i in (0..n).step_by(997) {
            assert_eq!(mask.keeps(i), v[i] != 0.0);
        }
        let both = (0..n - 1)
            .filter(|&i| v[i] == 0.0 && v[i + 1] == 0.0)
            .count() as f64;
        let want = (n - 1) as f64 * p * p;
        assert!(
            (both - want).abs() < 6.0 * (want * (1.0 - p * p)).sqrt(),
            "p {p}: {both} adjacent pairs dropped, expected {want}"
        );
    }
}

#[test]
fn backward_uses_the_forward_mask_and_seeds_decide_the_mask() {
    for device in [Device::flex(), Device::ndarray()] {
        let ad = device.clone().autodiff();
        let module = DropoutConfig::new(0.3).init();
        let run = || {
            let x = Tensor::<1>::from_data(
                TensorData::new(
                    (0..4096).map(|i| i as f32 + 1.0).collect::<Vec<_>>(),
                    [4096],
                ),
                &ad,
            )
            .require_grad();
            let g = Tensor::<1>::from_data(
                TensorData::new(
                    (0..4096).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<_>>(),
                    [4096],
                ),
                &ad,
            );
            let y = dropout(&module, x.clone().reshape([64, 64])).reshape([4096]);
            let grads = (y.clone() * g).sum().backward();
            (values(y.inner()), values(x.grad(&grads).unwrap()))
        };
        let (y, dx) = run();
        let scale = (1.0 / 0.7f64) as f32;
        for i in 0..4096 {
            let kept = y[i] != 0.0;
            let (xi, gi) = (i as f32 + 1.0, (i % 7) as f32 - 3.0);
            assert_eq!(
                y[i],
                if kept { xi * scale } else { 0.0 },
                "{device:?} y[{i}]"
            );
            assert_eq!(
                dx[i],
                if kept { gi * scale } else { 0.0 },
                "{device:?} dx[{i}]"
            );
        }
        // Every call draws a new seed from the device RNG: a new mask.
        assert_ne!(run().0, y, "{device:?}");
    }
    // A mask is a function of its seed and probability only.
    let keeps = |m: DropMask| (0..4096).map(|i| m.keeps(i)).collect::<Vec<_>>();
    assert_eq!(keeps(DropMask::new(7, 0.3)), keeps(DropMask::new(7, 0.3)));
    assert_ne!(keeps(DropMask::new(7, 0.3)), keeps(DropMask::new(8, 0.3)));
    // Seeds that differ only in their high half give other masks too.
    assert_ne!(
        keeps(DropMask::new(7, 0.3)),
        keeps(DropMask::new(7 | 1 << 40, 0.3))
    );
}

#[test]
fn identity_outside_training_and_at_zero_probability() {
    let device = Device::flex();
    let x = Tensor::<2>::from_data(
        TensorData::new(vec![1.0f32, -2.0, 3.0, 4.0], [2, 2]),
        &device,
    );
    // No autodiff: inference.
    let module = DropoutConfig::new(0.5).init();
    assert_eq!(values(dropout(&module, x.clone())), values(x.clone()));
    // p = 0 in training.
    let ad = device.autodiff();
    let xa = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, -2.0, 3.0, 4.0], [2, 2]), &ad);
    let zero = DropoutConfig::new(0.0).init();
    assert_eq!(values(dropout(&zero, xa.clone()).inner()), values(x));
}
