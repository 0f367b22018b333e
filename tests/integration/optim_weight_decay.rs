//! Weight decay by parameter group in `MaskedOptimizer` against PyTorch's optimizers with
//! two parameter groups (tests/fixtures/optim/gen_weight_decay.py): SGD with momentum and
//! L2 decay, Adam with L2 decay, AdamW with decoupled decay, a `no_decay` pattern list, and
//! a mask on the decayed weight.

use burn::module::{Module, Param};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, Optimizer, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};
use serde::Deserialize;
use shears::sparsity::enforce::{DecayKind, MaskedOptimizer, NoDecay, WeightDecay};
use shears::sparsity::mask::{Mask, MaskSet};

#[derive(Module, Debug)]
struct Tiny {
    weight: Param<Tensor<2>>,
    bias: Param<Tensor<1>>,
    norm_weight: Param<Tensor<1>>,
}

impl Tiny {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        (x.matmul(self.weight.val()) + self.bias.val().unsqueeze::<2>())
            * self.norm_weight.val().unsqueeze::<2>()
    }
}

#[derive(Deserialize)]
struct Params {
    weight: Vec<f32>,
    bias: Vec<f32>,
    norm_weight: Vec<f32>,
}

#[derive(Deserialize)]
struct Batch {
    x: Vec<f32>,
    t: Vec<f32>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    wd: f64,
    after: Vec<Params>,
}

#[derive(Deserialize)]
struct Fixture {
    init: Params,
    mask: Vec<f32>,
    batches: Vec<Batch>,
    cases: Vec<Case>,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("../fixtures/optim/weight_decay.json")).unwrap()
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn tiny(p: &Params, device: &Device) -> Tiny {
    let t1 = |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), device);
    Tiny {
        weight: Param::from_tensor(Tensor::from_data(
            TensorData::new(p.weight.clone(), [3, 2]),
            device,
        )),
        bias: Param::from_tensor(t1(&p.bias)),
        norm_weight: Param::from_tensor(t1(&p.norm_weight)),
    }
}

fn values<const D: usize>(p: &Param<Tensor<D>>) -> Vec<f32> {
    p.val().into_data().iter::<f32>().collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6,
            "{what}[{i}]: {g} vs torch {w} (diff {})",
            (g - w).abs()
        );
    }
}

/// Runs the fixture's three steps with `optim` wrapped in a MaskedOptimizer with `decay`
/// (and the fixture's mask on `weight` when `masked`), comparing after every step.
fn check<O: Optimizer>(
    case: &str,
    optim: O,
    lr: f64,
    exclude: NoDecay,
    kind: DecayKind,
    masked: bool,
) {
    let f = fixture();
    let c = f.cases.iter().find(|c| c.name == case).unwrap();
    let device = device();
    let mut model = tiny(&f.init, &device);
    let decay = WeightDecay::new(kind, c.wd).unwrap().with_exclude(exclude);
    let mut opt = MaskedOptimizer::new(optim).with_weight_decay(decay);
    if masked {
        let keep: Vec<bool> = f.mask.iter().map(|&m| m != 0.0).collect();
        let mut masks = MaskSet::new();
        masks.insert("weight", Mask::new(vec![3, 2], keep).unwrap());
        model = opt.set_masks(model, masks).unwrap();
    }
    for (step, (b, want)) in f.batches.iter().zip(&c.after).enumerate() {
        let x = Tensor::<2>::from_data(TensorData::new(b.x.clone(), [4, 3]), &device);
        let t = Tensor::<2>::from_data(TensorData::new(b.t.clone(), [4, 2]), &device);
        let loss = (model.forward(x) - t).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(lr, model, grads);
        let at = format!("{case} step {}", step + 1);
        assert_close(
            &values(&model.weight),
            &want.weight,
            &format!("{at} weight"),
        );
        assert_close(&values(&model.bias), &want.bias, &format!("{at} bias"));
        assert_close(
            &values(&model.norm_weight),
            &want.norm_weight,
            &format!("{at} norm_weight"),
        );
        if masked {
            for (v, m) in values(&model.weight).iter().zip(&f.mask) {
                if *m == 0.0 {
                    assert_eq!(v.to_bits(), 0f32.to_bits(), "{at}: pruned weight {v}");
                }
            }
        }
    }
}

fn sgd() -> impl Optimizer {
    SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(0.9)
                .with_dampening(0.0)
                .with_nesterov(false),
        ))
        .build()
}

fn adam_betas() -> (f32, f32, f32) {
    (0.9, 0.999, 1e-8)
}

#[test]
fn sgd_momentum_with_l2_on_matrices_only_matches_torch() {
    check(
        "sgd",
        sgd(),
        0.1,
        NoDecay::one_dimensional(),
        DecayKind::L2,
        false,
    );
}

#[test]
fn no_decay_patterns_select_the_excluded_group() {
    let exclude = NoDecay::from_patterns(&["bias".to_string()]).unwrap();
    check("sgd_patterns", sgd(), 0.1, exclude, DecayKind::L2, false);
}

#[test]
fn l2_decay_keeps_pruned_weights_at_zero_and_matches_torch() {
    check(
        "sgd_masked",
        sgd(),
        0.1,
        NoDecay::one_dimensional(),
        DecayKind::L2,
        true,
    );
}

#[test]
fn adam_with_l2_matches_torch() {
    let (b1, b2, eps) = adam_betas();
    let adam = AdamConfig::new()
        .with_beta_1(b1)
        .with_beta_2(b2)
        .with_epsilon(eps)
        .build();
    check(
        "adam",
        adam,
        0.01,
        NoDecay::one_dimensional(),
        DecayKind::L2,
        false,
    );
}

#[test]
fn adamw_with_decoupled_decay_matches_torch() {
    let (b1, b2, eps) = adam_betas();
    let adamw = AdamWConfig::new()
        .with_beta_1(b1)
        .with_beta_2(b2)
        .with_epsilon(eps)
        .with_weight_decay(0.0)
        .build();
    check(
        "adamw",
        adamw,
        0.01,
        NoDecay::one_dimensional(),
        DecayKind::Decoupled,
        false,
    );
}

/// With zero gradients the only change is the decay itself: decayed parameters become
/// exactly `θ − lr·wd·θ` (SGD, first step: the momentum buffer is `wd·θ`) or `θ·(1 − lr·wd)`
/// (AdamW), excluded ones stay bit-identical.
#[test]
fn excluded_parameters_see_no_decay() {
    let f = fixture();
    let device = Device::flex();
    for kind in [DecayKind::L2, DecayKind::Decoupled] {
        let model = tiny(&f.init, &device);
        let zero_grads = |m: &Tiny| {
            let mut g = GradientsParams::new();
            g.register(m.weight.id, Tensor::<2>::zeros([3, 2], &device));
            g.register(m.bias.id, Tensor::<1>::zeros([2], &device));
            g.register(m.norm_weight.id, Tensor::<1>::zeros([2], &device));
            g
        };
        let (lr, wd) = (0.1, 0.05);
        let decay = WeightDecay::new(kind, wd).unwrap();
        let grads = zero_grads(&model);
        let after = match kind {
            DecayKind::L2 => MaskedOptimizer::new(sgd())
                .with_weight_decay(decay)
                .step(lr, model, grads),
            DecayKind::Decoupled => {
                MaskedOptimizer::new(AdamWConfig::new().with_weight_decay(0.0).build())
                    .with_weight_decay(decay)
                    .step(lr, model, grads)
            }
        };
        let want: Vec<f32> = f
            .init
            .weight
            .iter()
            .map(|&w| match kind {
                DecayKind::L2 => w - (lr as f32) * ((wd as f32) * w),
                DecayKind::Decoupled => w * (1.0 - lr * wd) as f32,
            })
            .collect();
        assert_close(&values(&after.weight), &want, &format!("{kind:?} weight"));
        assert_ne!(values(&after.weight), f.init.weight);
        assert_eq!(values(&after.bias), f.init.bias, "{kind:?}: bias decayed");
        assert_eq!(
            values(&after.norm_weight),
            f.init.norm_weight,
            "{kind:?}: norm weight decayed"
        );
    }
}

#[test]
fn exclusion_rules() {
    let hf = NoDecay::one_dimensional();
    assert!(hf.excludes("encoder.layer.0.output.LayerNorm.weight", &[768]));
    assert!(hf.excludes("classifier.bias", &[2]));
    assert!(hf.excludes("scale", &[]));
    assert!(!hf.excludes("classifier.weight", &[768, 2]));
    let p = NoDecay::from_patterns(&["__1D__".into(), "re:.*embeddings".into()]).unwrap();
    assert!(p.excludes("bert.embeddings.word_embeddings.weight", &[100, 8]));
    assert!(p.excludes("x.bias", &[8]));
    assert!(!p.excludes("x.weight", &[8, 8]));
    assert!(!NoDecay::nothing().excludes("x.bias", &[8]));
    let f = NoDecay::predicate(|name, _| name.ends_with("bias"));
    assert!(f.excludes("x.bias", &[8]) && !f.excludes("ln.weight", &[8]));
    assert!(NoDecay::from_patterns(&["re:(".into()]).is_err());
    assert!(WeightDecay::new(DecayKind::L2, -0.1).is_err());
    assert!(WeightDecay::new(DecayKind::L2, f64::NAN).is_err());
}
