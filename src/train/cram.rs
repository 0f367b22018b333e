//! CrAM, the compression-aware minimizer (Peste et al., ICLR 2023), as a [`StepRule`].
//!
//! One step on a batch, the update rule of the reference `TopkCrAM`
//! (`../shared/docs/methods.md` §3.2, and [`CramModifier`](crate::recipe::modifiers::CramModifier)):
//!
//! 1. g at θ (the clean pass: BatchNorm updates its running statistics; the step's loss is
//!    this pass's);
//! 2. θ′ = θ + ρ·g for every parameter with a gradient;
//! 3. a level drawn from the plan's set as a function of (seed, step) only;
//! 4. the magnitude mask of θ′ at that level (one selection pass: `select_nth_unstable`),
//!    θ̂ = mask ⊙ θ′;
//! 5. ĝ at θ̂ on the same batch (the [`GradientSource`] reseeds dropout identically), with
//!    BatchNorm normalising by the batch statistics but not updating its running
//!    statistics; ĝ masked when `sparse_grad`;
//! 6. the base optimizer (through the [`MaskedOptimizer`], with the pruning modifiers'
//!    masks) steps from θ — the kept original, never θ′ — with ĝ + g (CrAM+) or ĝ.
//!
//! Weights the pruning modifiers have pruned stay zero in θ′ too: g is masked with their
//! masks before the ascent step, so θ′ (and SparseProp's packed patterns) never revive them.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::Tensor;

use super::engine::EngineError;
use super::grads::GradientSource;
use super::order::mix;
use super::step::{PlainStep, StepOutcome, StepRule};
use crate::recipe::plan::CramPlan;
use crate::sparsity::enforce::{MaskedOptimizer, ParamFlags, apply_masks, mask_gradients};
use crate::sparsity::mask::{MaskKind, MaskSet, compute_masks, read_values};
use crate::sparsity::selection::{ParamInfo, ParamSelector};

/// Switches the normalisation layers of a model between their usual training behaviour
/// (`false`) and batch statistics without running-statistics updates (`true`), for the
/// perturbed pass. Families without running statistics do nothing.
pub type FreezeBatchStats<M> = fn(&mut M, bool);

/// The CrAM step rule (see the module docs). Outside the plan's window it is the plain rule.
pub struct CramStep<M> {
    plan: CramPlan,
    selected: Vec<ParamInfo>,
    seed: u64,
    freeze: FreezeBatchStats<M>,
}

/// What a CrAM step did besides the base step (for logs and tests).
#[derive(Debug, Clone)]
pub struct CramTrace {
    /// The level drawn: sparsity and structure.
    pub level: (f64, MaskKind),
    /// The compression mask of θ′.
    pub masks: MaskSet,
}

impl<M: Module> CramStep<M> {
    /// The rule for `plan` over the model's parameters `all` (those the plan's `params`
    /// select are compressed), drawing levels from `seed`.
    pub fn new(
        plan: CramPlan,
        all: &[ParamInfo],
        seed: u64,
        freeze: FreezeBatchStats<M>,
    ) -> Result<Self, EngineError> {
        let selected = ParamSelector::new(&plan.params, &plan.ignore)?
            .select(all)
            .matched;
        if selected.is_empty() {
            return Err(EngineError::nothing_selected(
                &plan.label,
                &plan.params,
                all,
            ));
        }
        Ok(Self {
            plan,
            selected,
            seed,
            freeze,
        })
    }

    /// The level drawn at step `t`: uniform over the plan's levels, a function of the seed
    /// and `t` only.
    pub fn level_at(&self, t: u64) -> (f64, MaskKind) {
        let n = self.plan.levels.len() as u64;
        let i = mix(mix(self.seed, 0xC7A3), t) % n.max(1);
        self.plan.levels[i as usize]
    }

    /// One CrAM step at step `t` (see the module docs); also returns what it did.
    pub fn cram_step<O: Optimizer>(
        &self,
        t: u64,
        model: M,
        source: &mut dyn GradientSource<M>,
        optim: &mut MaskedOptimizer<O>,
        lr: f64,
    ) -> Result<(M, StepOutcome, CramTrace), EngineError> {
        let naming = optim.naming();
        let clean = source.grads(&model)?;
        let g = mask_gradients(&model, clean.grads, optim.masks(), naming);
        let perturbed = ascend(model.clone(), &g, self.plan.rho);
        let level = self.level_at(t);
        let label = |source| EngineError::Mask {
            modifier: self.plan.label.clone(),
            source,
        };
        let values = read_values(&perturbed, naming, &self.selected).map_err(label)?;
        let masks = compute_masks(&values, level.0, level.1, self.plan.scope).map_err(label)?;
        let mut compressed = apply_masks(perturbed, &masks, naming)?;
        (self.freeze)(&mut compressed, true);
        let at_compressed = source.grads(&compressed)?;
        let g_hat = if self.plan.sparse_grad {
            mask_gradients(&compressed, at_compressed.grads, &masks, naming)
        } else {
            at_compressed.grads
        };
        drop(compressed);
        let total = if self.plan.plus {
            add_gradients(&model, g_hat, g)
        } else {
            g_hat
        };
        let model = optim.step(lr, model, total);
        Ok((
            model,
            StepOutcome {
                loss: clean.loss,
                examples: clean.examples,
            },
            CramTrace { level, masks },
        ))
    }
}

impl<M: Module> StepRule<M> for CramStep<M> {
    fn step<O: Optimizer>(
        &mut self,
        t: u64,
        model: M,
        source: &mut dyn GradientSource<M>,
        optim: &mut MaskedOptimizer<O>,
        lr: f64,
    ) -> Result<(M, StepOutcome), EngineError> {
        if !self.plan.active_at(t) {
            return PlainStep.step(t, model, source, optim, lr);
        }
        let (model, outcome, _) = self.cram_step(t, model, source, optim, lr)?;
        Ok((model, outcome))
    }
}

/// θ + ρ·g for every float parameter with a gradient in `grads`.
pub fn ascend<M: Module>(model: M, grads: &GradientsParams, rho: f64) -> M {
    struct Ascend<'a> {
        grads: &'a GradientsParams,
        rho: f64,
    }
    impl ModuleMapper for Ascend<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, tensor, mapper) = param.consume();
            let Some(g) = self.grads.get::<D>(id) else {
                return Param::from_mapped_value(id, tensor, mapper);
            };
            let flags = ParamFlags::capture(&tensor);
            let moved = flags.restore(tensor.inner() + g.mul_scalar(self.rho), id);
            Param::from_mapped_value(id, moved, mapper)
        }
    }
    model.map(&mut Ascend { grads, rho })
}

/// `a + b`, parameter by parameter (a parameter with a gradient in only one keeps it).
pub fn add_gradients<M: Module>(
    model: &M,
    mut a: GradientsParams,
    mut b: GradientsParams,
) -> GradientsParams {
    struct Add<'a> {
        a: &'a mut GradientsParams,
        b: &'a mut GradientsParams,
        out: GradientsParams,
    }
    impl ModuleVisitor for Add<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let sum = match (self.a.remove::<D>(param.id), self.b.remove::<D>(param.id)) {
                (Some(x), Some(y)) => x + y,
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => return,
            };
            self.out.register::<D>(param.id, sum);
        }
    }
    let mut add = Add {
        a: &mut a,
        b: &mut b,
        out: GradientsParams::new(),
    };
    model.visit(&mut add);
    add.out
}

#[cfg(test)]
mod tests {
    use burn::optim::SgdConfig;
    use burn::optim::momentum::MomentumConfig;
    use std::collections::HashMap;

    use burn::tensor::{Device, Int, TensorData};
    use shears_models::resnet::{ResNet, ResNetConfig};

    use super::*;
    use crate::arch::Architecture;
    use crate::arch::resnet::ResNetFamily;
    use crate::loss::cross_entropy_with_label_smoothing;
    use crate::sparsity::mask::Scope;
    use crate::sparsity::params::{BurnPaths, PathStack, list_params, module_params};
    use crate::train::grads::StepGrads;

    /// Cross-entropy of a ResNet on one fixed batch.
    struct FixedBatch {
        x: Tensor<4>,
        y: Tensor<1, Int>,
    }

    impl GradientSource<ResNet> for FixedBatch {
        fn grads(&mut self, model: &ResNet) -> Result<StepGrads, EngineError> {
            let loss = cross_entropy_with_label_smoothing(
                model.forward(self.x.clone()),
                self.y.clone(),
                0.0,
            )
            .expect("valid batch");
            let value = loss.clone().into_scalar::<f64>();
            Ok(StepGrads {
                grads: GradientsParams::from_grads(loss.backward(), model),
                loss: value,
                examples: self.y.dims()[0],
            })
        }
    }

    fn device() -> Device {
        Device::flex().autodiff()
    }

    /// A ResNet-20 initialised from `seed`.
    fn resnet(seed: u64, device: &Device) -> ResNet {
        let _rng = crate::rng::seeded(device, seed);
        let model = ResNet::new(&ResNetConfig::parse("resnet20").unwrap(), device);
        crate::rng::materialize(&model);
        model
    }

    /// Two equal ResNet-20s that share no state (`clone()` shares the running statistics).
    fn twins(seed: u64, device: &Device) -> (ResNet, ResNet) {
        let a = resnet(seed, device);
        let b = set_values(resnet(seed + 1000, device), &values(&a));
        assert_same(&values(&a), &values(&b));
        (a, b)
    }

    /// Bitwise equality of named values, reporting the first difference only.
    fn assert_same(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) {
        assert_eq!(a.len(), b.len());
        for ((n, x), (m, y)) in a.iter().zip(b) {
            assert_eq!(n, m);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            if bits(x) != bits(y) {
                let i = (0..x.len())
                    .find(|&i| x[i].to_bits() != y[i].to_bits())
                    .unwrap();
                panic!("{n}[{i}]: {} vs {}", x[i], y[i]);
            }
        }
    }

    fn batch(device: &Device) -> FixedBatch {
        let n = 6;
        let x: Vec<f32> = (0..n * 3 * 32 * 32)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        FixedBatch {
            x: Tensor::from_data(TensorData::new(x, [n, 3, 32, 32]), device),
            y: Tensor::from_data(TensorData::new(vec![0i64, 3, 7, 1, 9, 3], [n]), device),
        }
    }

    fn plan(rho: f64, levels: Vec<(f64, MaskKind)>, plus: bool, sparse_grad: bool) -> CramPlan {
        CramPlan {
            label: "training_modifiers[0] (!CrAMModifier)".into(),
            rho,
            levels,
            plus,
            sparse_grad,
            params: vec![
                "re:^layer\\d\\.\\d+\\.conv[12]\\.weight$".into(),
                "linear.weight".into(),
            ],
            ignore: vec![],
            scope: Scope::Global,
            start_step: 0,
            end_step: None,
        }
    }

    fn rule(p: CramPlan, model: &ResNet) -> CramStep<ResNet> {
        CramStep::new(
            p,
            &list_params(model, &BurnPaths),
            42,
            ResNetFamily::freeze_batch_stats,
        )
        .unwrap()
    }

    fn sgd() -> MaskedOptimizer<impl Optimizer> {
        let momentum = MomentumConfig::new().with_momentum(0.9).with_dampening(0.0);
        MaskedOptimizer::new(SgdConfig::new().with_momentum(Some(momentum)).build())
    }

    /// Every float parameter and running statistic, by burn path.
    fn values(model: &ResNet) -> Vec<(String, Vec<f32>)> {
        read_values(model, &BurnPaths, &list_params(model, &BurnPaths))
            .unwrap()
            .into_iter()
            .map(|p| (p.info.name, p.values))
            .collect()
    }

    /// The gradient of every parameter (zeros where `g` has none), by burn path.
    fn grad_values(model: &ResNet, g: &GradientsParams) -> HashMap<String, Vec<f32>> {
        fn get<const D: usize>(g: &GradientsParams, id: burn::module::ParamId) -> Option<Vec<f32>> {
            g.get::<D>(id).map(|t| t.try_into_vec_as::<f32>().unwrap())
        }
        module_params(model, &BurnPaths)
            .into_iter()
            .map(|p| {
                let n = p.info.numel();
                let v = match p.info.shape.len() {
                    1 => get::<1>(g, p.id),
                    2 => get::<2>(g, p.id),
                    4 => get::<4>(g, p.id),
                    d => panic!("unexpected rank {d}"),
                };
                (p.info.name, v.unwrap_or_else(|| vec![0.0; n]))
            })
            .collect()
    }

    /// `model` with the named parameters replaced by `values`.
    fn set_values(model: ResNet, values: &[(String, Vec<f32>)]) -> ResNet {
        struct Set<'a> {
            stack: PathStack,
            values: HashMap<&'a str, &'a Vec<f32>>,
        }
        impl ModuleMapper for Set<'_> {
            fn enter_module(&mut self, name: &str, container_type: &str) {
                self.stack.enter(name, container_type);
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.stack.exit();
            }
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let (id, tensor, mapper) = param.consume();
                let Some(v) = self.values.get(self.stack.path().as_str()) else {
                    return Param::from_mapped_value(id, tensor, mapper);
                };
                let flags = ParamFlags::capture(&tensor);
                let data = TensorData::new(v.to_vec(), tensor.dims());
                let fresh = Tensor::<D>::from_data(data, &tensor.device());
                Param::from_mapped_value(id, flags.restore(fresh.inner(), id), mapper)
            }
        }
        model.map(&mut Set {
            stack: PathStack::default(),
            values: values.iter().map(|(n, v)| (n.as_str(), v)).collect(),
        })
    }

    fn running_stats(model: &ResNet) -> Vec<Vec<f32>> {
        model
            .bn_layers()
            .into_iter()
            .flat_map(|(_, bn)| [bn.running_mean(), bn.running_var()])
            .map(|t| t.try_into_vec_as::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn rho_zero_and_no_compression_is_the_base_step_with_the_gradient_doubled() {
        let device = device();
        let (a, b) = twins(1, &device);
        let mut src = batch(&device);
        let r = rule(
            plan(0.0, vec![(0.0, MaskKind::Unstructured)], true, true),
            &a,
        );
        let (mut o1, mut o2) = (sgd(), sgd());
        let (mut a, mut b) = (a, b);
        for t in 0..2 {
            a = r.cram_step(t, a, &mut src, &mut o1, 0.05).unwrap().0;
            let g = src.grads(&b).unwrap().grads;
            let doubled = add_gradients(&b, g, GradientsParams::new());
            let doubled = scale(&b, doubled, 2.0);
            b = o2.step(0.05, b, doubled);
        }
        assert_same(&values(&a), &values(&b));
    }

    fn scale(model: &ResNet, mut g: GradientsParams, s: f64) -> GradientsParams {
        struct Scale<'a>(&'a mut GradientsParams, f64);
        impl ModuleVisitor for Scale<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(x) = self.0.remove::<D>(param.id) {
                    self.0.register::<D>(param.id, x.mul_scalar(self.1));
                }
            }
        }
        model.visit(&mut Scale(&mut g, s));
        g
    }

    #[test]
    fn the_perturbed_pass_leaves_batchnorm_running_statistics_bit_identical() {
        let device = device();
        let (a, b) = twins(2, &device);
        let fresh = running_stats(&b);
        let mut src = batch(&device);
        let r = rule(
            plan(0.2, vec![(0.7, MaskKind::Unstructured)], true, true),
            &a,
        );
        let mut o = sgd();
        let _ = r.cram_step(0, a.clone(), &mut src, &mut o, 0.1).unwrap();
        // The reference: one clean training-mode pass on the same batch.
        let _ = src.grads(&b).unwrap();
        assert!(
            running_stats(&a) == running_stats(&b),
            "running statistics differ"
        );
        assert!(running_stats(&b) != fresh, "the clean pass updates them");
    }

    #[test]
    fn the_step_starts_from_theta_and_uses_the_gradient_at_the_compressed_perturbed_point() {
        let device = device();
        let (a, reference) = twins(3, &device);
        let mut src = batch(&device);
        let (rho, lr) = (0.5, 0.1);

        // Independently: θ′ = θ + ρg, a full sort of |θ′| over the selected tensors, the
        // gradient at the masked θ′ with frozen statistics, then θ − lr·ĝ⊙mask.
        let g = src.grads(&reference).unwrap().grads;
        let theta = values(&reference);
        let grads = grad_values(&reference, &g);
        let prime: Vec<(String, Vec<f32>)> = theta
            .iter()
            .map(|(n, v)| {
                let gv = &grads[n];
                (
                    n.clone(),
                    v.iter()
                        .zip(gv)
                        .map(|(w, g)| w + (rho as f32) * g)
                        .collect(),
                )
            })
            .collect();
        let selected: Vec<String> = rule(
            plan(rho, vec![(0.8, MaskKind::Unstructured)], false, true),
            &a,
        )
        .selected
        .iter()
        .map(|i| i.name.clone())
        .collect();
        let mut mags: Vec<f32> = prime
            .iter()
            .filter(|(n, _)| selected.contains(n))
            .flat_map(|(_, v)| v.iter().map(|x| x.abs()))
            .collect();
        let total = mags.len();
        mags.sort_by(|x, y| x.total_cmp(y));
        // The level: the first k at or above 80 % whose threshold is not tied (f32 ties
        // among ~270k magnitudes happen, and where depends on the machine's GEMM rounding).
        let k = ((0.8 * total as f64).round() as usize..total)
            .find(|&k| mags[k] > mags[k - 1])
            .expect("an untied threshold above 80 %");
        let level = k as f64 / total as f64;
        assert_eq!((level * total as f64).round() as usize, k);
        let tau = mags[k - 1];

        let r = rule(
            plan(rho, vec![(level, MaskKind::Unstructured)], false, true),
            &a,
        );
        let mut plain_sgd = MaskedOptimizer::new(SgdConfig::new().build());
        let (after, _, trace) = r.cram_step(0, a, &mut src, &mut plain_sgd, lr).unwrap();
        let pruned: usize = trace.masks.iter().map(|(_, m)| m.pruned()).sum();
        assert_eq!(
            pruned, k,
            "round(s·N) weights pruned over the parameter set"
        );
        let keep = |n: &str, x: f32| !selected.iter().any(|s| s == n) || x.abs() > tau;
        let mut compressed = set_values(
            reference.clone(),
            &prime
                .iter()
                .map(|(n, v)| {
                    (
                        n.clone(),
                        v.iter()
                            .map(|&x| if keep(n, x) { x } else { 0.0 })
                            .collect(),
                    )
                })
                .collect::<Vec<_>>(),
        );
        compressed.set_bn_mode(shears_models::batch_norm::BnMode::TrainFrozenStats);
        let g_hat = grad_values(&compressed, &src.grads(&compressed).unwrap().grads);
        for ((n, new), (_, old)) in values(&after).iter().zip(&theta) {
            let p = &prime.iter().find(|(m, _)| m == n).unwrap().1;
            for (i, (&w1, &w0)) in new.iter().zip(old).enumerate() {
                let gh = if keep(n, p[i]) { g_hat[n][i] } else { 0.0 };
                let want = w0 - (lr as f32) * gh;
                assert!(
                    (w1 - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{n}[{i}]: {w1} vs {want}"
                );
            }
        }
    }

    #[test]
    fn n_m_levels_keep_n_of_every_m_along_the_input_channels() {
        let device = device();
        let a = resnet(4, &device);
        let mut src = batch(&device);
        let p = plan(0.1, vec![(0.5, MaskKind::NM { n: 2, m: 4 })], true, true);
        let r = rule(p, &a);
        let mut o = sgd();
        let (_, _, trace) = r.cram_step(0, a, &mut src, &mut o, 0.1).unwrap();
        assert_eq!(trace.masks.len(), 19);
        for (name, mask) in trace.masks.iter() {
            let s = mask.shape().to_vec();
            let keep = mask.keep();
            if s.len() == 4 {
                // [OC, IC, KH, KW] viewed as [OC, KH, KW, IC]: groups of 4 input channels.
                let (oc, ic, kh, kw) = (s[0], s[1], s[2], s[3]);
                for o in 0..oc {
                    for y in 0..kh {
                        for x in 0..kw {
                            for g in 0..ic / 4 {
                                let kept = (0..4)
                                    .filter(|j| keep[((o * ic + g * 4 + j) * kh + y) * kw + x])
                                    .count();
                                assert_eq!(kept, 2, "{name} at ({o}, group {g}, {y}, {x})");
                            }
                        }
                    }
                }
            } else {
                // The torch-layout linear [out, in]: groups along `in`.
                for row in keep.chunks(s[1]) {
                    for g in row.chunks(4) {
                        assert_eq!(g.iter().filter(|k| **k).count(), 2, "{name}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_level_is_a_function_of_seed_and_step() {
        let device = device();
        let a = resnet(5, &device);
        let levels = vec![
            (0.5, MaskKind::Unstructured),
            (0.7, MaskKind::Unstructured),
            (0.9, MaskKind::Unstructured),
        ];
        let r1 = rule(plan(0.1, levels.clone(), true, true), &a);
        let r2 = rule(plan(0.1, levels.clone(), true, true), &a);
        let drawn: Vec<_> = (0..300).map(|t| r1.level_at(t)).collect();
        assert_eq!(drawn, (0..300).map(|t| r2.level_at(t)).collect::<Vec<_>>());
        for l in &levels {
            let c = drawn.iter().filter(|d| *d == l).count();
            assert!(
                (60..=140).contains(&c),
                "level {l:?} drawn {c} times of 300"
            );
        }
    }
}
