//! Enforcement: pruned weights are exactly 0 after every optimizer step (SGD with momentum
//! and weight decay, Adam, AdamW), gradients are masked before global-norm clipping, and
//! stale moments cannot revive weights when a mask is relaxed.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, Optimizer, SgdConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shears::sparsity::enforce::{MaskedOptimizer, verify_masked};
use shears::sparsity::mask::{Mask, MaskKind, MaskSet, Scope, compute_module_masks, read_values};
use shears::sparsity::params::{BurnPaths, list_params};
use shears::sparsity::selection::{ALL_PRUNABLE, ParamSelector};

#[derive(Module, Debug)]
struct Net {
    fc1: Linear,
    fc2: Linear,
}

impl Net {
    fn new(device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(6, 16).init(device),
            fc2: LinearConfig::new(16, 3).init(device),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.fc2.forward(relu(self.fc1.forward(x)))
    }
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn batch(
    rng: &mut StdRng,
    device: &Device,
    rows: usize,
    cols: usize,
    zero_col0: bool,
) -> Tensor<2> {
    let v: Vec<f32> = (0..rows * cols)
        .map(|i| {
            if zero_col0 && i % cols == 0 {
                0.0
            } else {
                rng.random_range(-1.0f32..1.0)
            }
        })
        .collect();
    Tensor::from_data(TensorData::new(v, [rows, cols]), device)
}

fn loss(model: &Net, x: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    (model.forward(x) - y).powi_scalar(2).mean()
}

/// Trains 1,000 steps with gradual global masks (50 % at step 0, 70 % at 250, 80 % at
/// 500) and checks after every step that every pruned weight is exactly 0, that the
/// realised sparsity equals the target to the element, and that the model still learns.
fn thousand_steps<O: Optimizer>(optim: O, lr: f64, seed: u64) {
    let device = device();
    device.seed(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Net::new(&device);
    let selected = ParamSelector::new(&[ALL_PRUNABLE.to_string()], &[])
        .unwrap()
        .select(&list_params(&model, &BurnPaths))
        .matched;
    assert_eq!(selected.len(), 2);
    let numel: usize = selected.iter().map(|p| p.numel()).sum();
    let mut opt = MaskedOptimizer::new(optim);
    // A fixed teacher to regress on.
    let teacher_w = batch(&mut rng, &device, 6, 3, false).inner();
    let mut first_loss = None;
    let mut last_loss = 0.0;
    for step in 0..1000u64 {
        if let Some(target) = match step {
            0 => Some(0.5),
            250 => Some(0.7),
            500 => Some(0.8),
            _ => None,
        } {
            let masks = compute_module_masks(
                &model,
                &BurnPaths,
                &selected,
                target,
                MaskKind::Unstructured,
                Scope::Global,
            )
            .unwrap();
            assert_eq!(masks.pruned(), (target * numel as f64).round() as usize);
            model = opt.set_masks(model, masks).unwrap();
        }
        let x = batch(&mut rng, &device, 32, 6, false);
        let y = Tensor::from_inner(x.clone().inner().matmul(teacher_w.clone()));
        let l = loss(&model, x, y);
        let value = l.clone().into_scalar::<f64>();
        first_loss.get_or_insert(value);
        last_loss = value;
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = opt.step(lr, model, grads);
        verify_masked(&model, opt.masks(), &BurnPaths)
            .unwrap_or_else(|e| panic!("step {step}: {e}"));
        // Realised sparsity of the stored weights is at least the mask's; the mask's is
        // exactly the target count.
        let values = read_values(&model, &BurnPaths, &selected).unwrap();
        let zeros: usize = values
            .iter()
            .map(|p| p.values.iter().filter(|v| **v == 0.0).count())
            .sum();
        assert!(zeros >= opt.masks().pruned(), "step {step}");
    }
    let first = first_loss.unwrap();
    assert!(
        last_loss < 0.5 * first,
        "did not learn: loss {first} -> {last_loss}"
    );
}

#[test]
fn sgd_momentum_weight_decay_keeps_pruned_weights_zero() {
    let sgd = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new()))
        .with_weight_decay(Some(WeightDecayConfig::new(1e-2)))
        .build();
    thousand_steps(sgd, 0.05, 1);
}

#[test]
fn adam_keeps_pruned_weights_zero() {
    let adam = AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(1e-3)))
        .build();
    thousand_steps(adam, 1e-2, 2);
}

#[test]
fn adamw_keeps_pruned_weights_zero() {
    let adamw = AdamWConfig::new().with_weight_decay(0.1).build();
    thousand_steps(adamw, 1e-2, 3);
}

/// Phase 1 trains densely (moments everywhere), phase 2 prunes every weight of input 0,
/// phase 3 feeds inputs whose feature 0 is always 0 (so those weights get exactly zero
/// gradient) and relaxes the mask. With the moments cleaned when the mask was set, the
/// revived weights must stay exactly 0; stale moments would move them.
fn relaxed_mask_does_not_revive<O: Optimizer>(optim: O, lr: f64) {
    let device = device();
    device.seed(5);
    let mut rng = StdRng::seed_from_u64(5);
    let mut model = LinearConfig::new(4, 3).init(&device);
    let teacher = batch(&mut rng, &device, 4, 3, false).inner();
    let mut opt = MaskedOptimizer::new(optim);
    let mut train = |model: Linear, opt: &mut MaskedOptimizer<O>, zero_col0: bool| {
        let x = batch(&mut rng, &device, 16, 4, zero_col0);
        let y = Tensor::from_inner(x.clone().inner().matmul(teacher.clone()));
        let l = (model.forward(x) - y).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(l.backward(), &model);
        opt.step(lr, model, grads)
    };
    for _ in 0..50 {
        model = train(model, &mut opt, false);
    }
    // Weight [d_in, d_out] = [4, 3]: prune row 0 (input feature 0).
    let keep: Vec<bool> = (0..12).map(|i| i >= 3).collect();
    let mut masks = MaskSet::new();
    masks.insert("weight", Mask::new(vec![4, 3], keep).unwrap());
    model = opt.set_masks(model, masks).unwrap();
    for _ in 0..50 {
        model = train(model, &mut opt, false);
        verify_masked(&model, opt.masks(), &BurnPaths).unwrap();
    }
    opt.clear_masks();
    let row0 = |m: &Linear| {
        m.weight
            .val()
            .inner()
            .slice([0..1, 0..3])
            .try_into_vec_as::<f32>()
            .unwrap()
    };
    for step in 0..50 {
        model = train(model, &mut opt, true);
        assert_eq!(row0(&model), [0.0; 3], "revived at step {step}");
    }
    // The other rows keep training.
    let rest = model
        .weight
        .val()
        .inner()
        .slice([1..4, 0..3])
        .try_into_vec_as::<f32>()
        .unwrap();
    assert!(rest.iter().all(|v| *v != 0.0));
}

#[test]
fn relaxed_mask_sgd_momentum_restarts_from_zero() {
    let sgd = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new()))
        .with_weight_decay(Some(WeightDecayConfig::new(1e-2)))
        .build();
    relaxed_mask_does_not_revive(sgd, 0.05);
}

#[test]
fn relaxed_mask_adam_restarts_from_zero() {
    relaxed_mask_does_not_revive(AdamConfig::new().build(), 1e-2);
}

#[test]
fn relaxed_mask_adamw_restarts_from_zero() {
    relaxed_mask_does_not_revive(AdamWConfig::new().with_weight_decay(0.1).build(), 1e-2);
}

/// Global-norm clipping sees the masked gradients: with plain SGD the update of a kept
/// weight is `lr · g · max_norm / (‖masked g‖ + 1e-6)`, where the norm runs over every
/// parameter's gradient with pruned coordinates zeroed.
#[test]
fn clipping_uses_masked_gradients() {
    let device = device();
    device.seed(9);
    let mut rng = StdRng::seed_from_u64(9);
    let model = Net::new(&device);
    let selected = list_params(&model, &BurnPaths)
        .into_iter()
        .filter(|p| p.shape.len() == 2)
        .collect::<Vec<_>>();
    let masks = compute_module_masks(
        &model,
        &BurnPaths,
        &selected,
        0.6,
        MaskKind::Unstructured,
        Scope::Global,
    )
    .unwrap();
    let max_norm = 1e-3;
    let lr = 0.5;
    let mut opt = MaskedOptimizer::new(SgdConfig::new().build()).with_max_grad_norm(max_norm);
    let model = opt.set_masks(model, masks.clone()).unwrap();
    let x = batch(&mut rng, &device, 8, 6, false);
    let y = batch(&mut rng, &device, 8, 3, false).mul_scalar(100.0);
    let l = loss(&model, x, y);
    let grads = GradientsParams::from_grads(l.backward(), &model);
    // Independent computation: read every gradient, zero pruned coordinates, norm.
    let params = shears::sparsity::params::module_params(&model, &BurnPaths);
    let mut host_grads = Vec::new();
    let mut sq = 0.0f64;
    for p in &params {
        let g: Vec<f32> = if p.info.shape.len() == 2 {
            grads
                .get::<2>(p.id)
                .unwrap()
                .try_into_vec_as::<f32>()
                .unwrap()
        } else {
            grads
                .get::<1>(p.id)
                .unwrap()
                .try_into_vec_as::<f32>()
                .unwrap()
        };
        let g: Vec<f32> = match masks.get(&p.info.name) {
            Some(m) => g
                .iter()
                .zip(m.keep())
                .map(|(v, k)| if *k { *v } else { 0.0 })
                .collect(),
            None => g,
        };
        sq += g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
        host_grads.push(g);
    }
    let norm = sq.sqrt();
    assert!(
        norm > 10.0 * max_norm,
        "the test needs clipping to be active"
    );
    let coef = max_norm / (norm + 1e-6);
    let before = read_values(&model, &BurnPaths, &list_params(&model, &BurnPaths)).unwrap();
    let model = opt.step(lr, model, grads);
    let after = read_values(&model, &BurnPaths, &list_params(&model, &BurnPaths)).unwrap();
    for ((b, a), g) in before.iter().zip(&after).zip(&host_grads) {
        for ((wb, wa), gv) in b.values.iter().zip(&a.values).zip(g) {
            let expected = wb - (lr * coef) as f32 * gv;
            assert!(
                (wa - expected).abs() <= 1e-6 * (1.0 + expected.abs()),
                "{}: {wa} vs {expected}",
                b.info.name
            );
        }
    }
    verify_masked(&model, &masks, &BurnPaths).unwrap();
}
