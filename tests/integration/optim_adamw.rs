//! The fused AdamW (`shears::train::adamw::FusedAdamW`) equals burn's AdamW bit for bit —
//! weights and both moments, step after step, on both CPU backends, for tensors smaller
//! and larger than one parallel chunk — and keeps burn's state type.

use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::{Device, Tensor, TensorData};
use shears::train::adamw::FusedAdamW;

/// Seeded values of spread `scale` (an xorshift generator).
fn seeded(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

#[test]
fn fused_adamw_equals_burns_bit_for_bit() {
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let burn_adamw = AdamWConfig::new()
        .with_beta_1(b1)
        .with_beta_2(b2)
        .with_epsilon(eps)
        .with_weight_decay(0.0)
        .build();
    let fused = FusedAdamW::new(b1, b2, eps);
    #[allow(deprecated)]
    let devices = [Device::flex(), Device::ndarray()];
    for device in devices {
        // One chunk and several (32 Ki elements each), with a ragged end.
        for shape in [[7usize, 13], [301, 331]] {
            let n = shape[0] * shape[1];
            let tensor = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, shape), &device);
            let (mut w_ref, mut w) = (tensor(seeded(n, 1, 0.2)), tensor(seeded(n, 1, 0.2)));
            let (mut s_ref, mut s) = (None, None);
            for step in 0..5u64 {
                // Gradients of mixed scales, some exactly zero (pruned weights).
                let mut g = seeded(n, 10 + step, 2.0);
                for x in g.iter_mut().step_by(5) {
                    *x = 0.0;
                }
                let lr = 1e-3 / (step + 1) as f64;
                let (a, sa) = burn_adamw.step(lr, w_ref, tensor(g.clone()), s_ref);
                let (b, sb) = fused.step(lr, w, tensor(g), s);
                let (sa, sb) = (sa.unwrap(), sb.unwrap());
                assert_eq!(sa.momentum.time, sb.momentum.time);
                assert_eq!(sb.momentum.time, step as usize + 1);
                assert!(sb.momentum.max_moment_2.is_none());
                for (x, y, what) in [
                    (a.clone(), b.clone(), "weights"),
                    (
                        sa.momentum.moment_1.clone(),
                        sb.momentum.moment_1.clone(),
                        "moment 1",
                    ),
                    (
                        sa.momentum.moment_2.clone(),
                        sb.momentum.moment_2.clone(),
                        "moment 2",
                    ),
                ] {
                    let (x, y) = (values(x), values(y));
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert!(
                        bits(&x) == bits(&y),
                        "{device:?} {shape:?} step {step}: {what} differ"
                    );
                }
                (w_ref, w, s_ref, s) = (a, b, Some(sa), Some(sb));
            }
        }
    }
}
