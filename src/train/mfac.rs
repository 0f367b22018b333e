//! The M-FAC optimizer (Frantar, Kurtic, Alistarh 2021) as a [`StepRule`]: one sliding-window
//! inverse Fisher ([`DynamicInverse`]) over every trained parameter, flattened in module order.
//!
//! A step, as the reference `MFAC` optimizer:
//!
//! ```text
//! g ← ∇L(θ) + wd·θ            (masked; the decay skips `optimizer.no_decay`)
//! push g into the window;  u ← F⁻¹g
//! v ← μ·v + (1 − μ)·u;  u ← v (momentum μ > 0)
//! θ ← θ − lr·u                (through the masked optimizer: pruned weights stay 0)
//! ```
//!
//! The window starts as `m` zero gradients, so the first steps precondition with the few
//! gradients seen so far and scale every other direction by `1/λ`: with a small λ, give the
//! run a learning-rate warm-up (or a larger λ) until the window has filled. Pruned
//! coordinates have zero gradients (they add nothing to the window) and their preconditioned
//! direction is masked before the step. State (the window and the momentum) is saved with
//! every checkpoint, and the Gram matrix is rebuilt from the window on resume, bit for bit.
//! Memory: `m·d` floats for `d` trained parameters.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};

use super::engine::EngineError;
use super::grads::GradientSource;
use super::step::{StepOutcome, StepRule};
use crate::fisher::DynamicInverse;
use crate::sparsity::enforce::{MaskedOptimizer, WeightDecay, mask_gradients};
use crate::sparsity::params::module_params;

/// The M-FAC rule's settings.
#[derive(Debug, Clone)]
pub struct MfacConfig {
    /// Window size `m`.
    pub num_grads: usize,
    /// Dampening λ.
    pub damp: f64,
    /// Momentum μ (0: none).
    pub momentum: f64,
    /// L2 weight decay added to the gradient (by parameter group).
    pub decay: Option<WeightDecay>,
}

/// The M-FAC step rule (see the module docs).
pub struct MfacStep {
    cfg: MfacConfig,
    /// Built at the first step, when the model's parameters are known.
    inv: Option<DynamicInverse<f32>>,
    velocity: Vec<f32>,
}

/// A trained parameter in the flattened order.
struct Slot {
    id: ParamId,
    name: String,
    shape: Vec<usize>,
    offset: usize,
}

fn slots<M: Module>(model: &M) -> Vec<Slot> {
    let mut offset = 0;
    module_params(model, &crate::sparsity::params::BurnPaths)
        .into_iter()
        .map(|p| {
            let s = Slot {
                id: p.id,
                name: p.info.name.clone(),
                shape: p.info.shape.clone(),
                offset,
            };
            offset += p.info.numel();
            s
        })
        .collect()
}

/// The values of every float parameter with a gradient, flattened; parameters without one
/// (running statistics) contribute zeros.
fn flatten(grads: &GradientsParams, slots: &[Slot], d: usize) -> Vec<f32> {
    fn get<const D: usize>(g: &GradientsParams, id: ParamId) -> Option<Vec<f32>> {
        g.get::<D>(id).and_then(|t| t.try_into_vec_as::<f32>().ok())
    }
    let mut out = vec![0.0f32; d];
    for s in slots {
        let v = match s.shape.len() {
            1 => get::<1>(grads, s.id),
            2 => get::<2>(grads, s.id),
            3 => get::<3>(grads, s.id),
            4 => get::<4>(grads, s.id),
            _ => None,
        };
        if let Some(v) = v {
            out[s.offset..s.offset + v.len()].copy_from_slice(&v);
        }
    }
    out
}

/// Reads the values of the parameters in `slots` into their places of the flattened vector.
struct Values<'a> {
    slots: &'a std::collections::HashMap<ParamId, &'a Slot>,
    out: Vec<f32>,
}

impl ModuleVisitor for Values<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // By id, not by position: the slots may be a subset of the module's floats.
        if let Some(s) = self.slots.get(&param.id)
            && let Ok(v) = param.val().try_into_vec_as::<f32>()
        {
            self.out[s.offset..s.offset + v.len()].copy_from_slice(&v);
        }
    }
}

impl MfacStep {
    /// The rule with `cfg` (the window is created at the first step).
    pub fn new(cfg: MfacConfig) -> Self {
        Self {
            cfg,
            inv: None,
            velocity: Vec::new(),
        }
    }

    fn inverse(&mut self, d: usize) -> Result<&mut DynamicInverse<f32>, EngineError> {
        if self.inv.as_ref().is_none_or(|i| i.dim() != d) {
            self.inv = Some(
                DynamicInverse::new(d, self.cfg.num_grads, self.cfg.damp).map_err(|source| {
                    EngineError::Fisher {
                        modifier: "optimizer (mfac)".into(),
                        source,
                    }
                })?,
            );
            self.velocity = vec![0.0; d];
        }
        Ok(self.inv.as_mut().expect("set above"))
    }
}

/// The flattened direction `u` as gradients of the model's parameters.
fn unflatten<M: Module>(model: &M, slots: &[Slot], u: &[f32]) -> GradientsParams {
    struct Out<'a> {
        slots: std::collections::HashMap<ParamId, &'a Slot>,
        u: &'a [f32],
        grads: GradientsParams,
    }
    impl ModuleVisitor for Out<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            // By id, not by position (see `Values`).
            let Some(s) = self.slots.get(&param.id) else {
                return;
            };
            let n: usize = s.shape.iter().product();
            let data = TensorData::new(self.u[s.offset..s.offset + n].to_vec(), s.shape.clone());
            let t = Tensor::<D>::from_data(data, &param.val().device());
            self.grads.register::<D>(param.id, t.inner());
        }
    }
    let mut out = Out {
        slots: slots.iter().map(|s| (s.id, s)).collect(),
        u,
        grads: GradientsParams::new(),
    };
    model.visit(&mut out);
    out.grads
}

const STATE_FILE: &str = "mfac-state.safetensors";

impl<M: Module> StepRule<M> for MfacStep {
    fn step<O: Optimizer>(
        &mut self,
        _t: u64,
        model: M,
        source: &mut dyn GradientSource<M>,
        optim: &mut MaskedOptimizer<O>,
        lr: f64,
    ) -> Result<(M, StepOutcome), EngineError> {
        let g = source.grads(&model)?;
        let slots = slots(&model);
        let d = slots
            .last()
            .map_or(0, |s| s.offset + s.shape.iter().product::<usize>());
        let grads = mask_gradients(&model, g.grads, optim.masks(), optim.naming());
        let has_grad: std::collections::HashSet<ParamId> = slots
            .iter()
            .filter(|s| flatten_one(&grads, s))
            .map(|s| s.id)
            .collect();
        let mut flat = flatten(&grads, &slots, d);
        if let Some(decay) = &self.cfg.decay {
            let by_id = slots.iter().map(|s| (s.id, s)).collect();
            let mut values = Values {
                slots: &by_id,
                out: vec![0.0; d],
            };
            model.visit(&mut values);
            let wd = decay.value as f32;
            for s in slots.iter().filter(|s| has_grad.contains(&s.id)) {
                let name = optim.naming().display_name(&s.name);
                if decay.applies_to(&name, &s.shape) {
                    let n: usize = s.shape.iter().product();
                    let range = s.offset..s.offset + n;
                    for (f, w) in flat[range.clone()].iter_mut().zip(&values.out[range]) {
                        *f += wd * w;
                    }
                }
            }
        }
        let momentum = self.cfg.momentum as f32;
        let inv = self.inverse(d)?;
        let err = |source| EngineError::Fisher {
            modifier: "optimizer (mfac)".into(),
            source,
        };
        inv.push(&flat).map_err(err)?;
        let mut u = inv.ihvp(&flat).map_err(err)?;
        if momentum > 0.0 {
            for (v, x) in self.velocity.iter_mut().zip(u.iter_mut()) {
                *v = momentum * *v + (1.0 - momentum) * *x;
                *x = *v;
            }
        }
        let kept: Vec<Slot> = slots
            .into_iter()
            .filter(|s| has_grad.contains(&s.id))
            .collect();
        let direction = unflatten(&model, &kept, &u);
        let model = optim.step(lr, model, direction);
        Ok((
            model,
            StepOutcome {
                loss: g.loss,
                examples: g.examples,
            },
        ))
    }

    fn save_state(&self, dir: &Path) -> Result<(), EngineError> {
        let Some(inv) = &self.inv else {
            return Ok(());
        };
        let (window, next) = inv.state();
        let file = dir.join(STATE_FILE);
        crate::train::checkpoint::write_f32_tensors(
            &file,
            &[
                ("window", vec![inv.window(), inv.dim()], window),
                ("velocity", vec![self.velocity.len()], &self.velocity),
            ],
            &[("next", next.to_string())],
        )
        .map_err(|e| EngineError::Io {
            path: file.clone(),
            source: e,
        })
    }

    fn load_state(&mut self, dir: &Path) -> Result<(), EngineError> {
        let file = dir.join(STATE_FILE);
        if !file.is_file() {
            return Ok(());
        }
        let bad = |message: String| EngineError::Io {
            path: file.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, message),
        };
        let (tensors, meta) =
            crate::train::checkpoint::read_f32_tensors(&file).map_err(|e| bad(e.to_string()))?;
        let find = |n: &str| tensors.iter().find(|(k, _, _)| k == n);
        let (Some((_, wshape, window)), Some((_, _, velocity))) =
            (find("window"), find("velocity"))
        else {
            return Err(bad("missing `window` or `velocity`".into()));
        };
        let next: usize = meta
            .iter()
            .find(|(k, _)| k == "next")
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| bad("missing `next`".into()))?;
        if wshape.len() != 2 || wshape[0] != self.cfg.num_grads {
            return Err(bad(format!(
                "the window has shape {wshape:?}, the recipe asks for {} gradients",
                self.cfg.num_grads
            )));
        }
        let mut inv =
            DynamicInverse::new(wshape[1], wshape[0], self.cfg.damp).map_err(|source| {
                EngineError::Fisher {
                    modifier: "optimizer (mfac)".into(),
                    source,
                }
            })?;
        inv.restore(window.clone(), next)
            .map_err(|source| EngineError::Fisher {
                modifier: "optimizer (mfac)".into(),
                source,
            })?;
        self.inv = Some(inv);
        self.velocity = velocity.clone();
        Ok(())
    }
}

/// Whether `grads` holds a gradient for the slot's parameter.
fn flatten_one(grads: &GradientsParams, s: &Slot) -> bool {
    match s.shape.len() {
        1 => grads.get::<1>(s.id).is_some(),
        2 => grads.get::<2>(s.id).is_some(),
        3 => grads.get::<3>(s.id).is_some(),
        4 => grads.get::<4>(s.id).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::optim::SgdConfig;
    use burn::tensor::Device;

    use super::*;
    use crate::fisher::reference::{fisher, invert, matvec};
    use crate::train::grads::StepGrads;

    /// `frozen` sits between the trained parameters and never gets a gradient (like a
    /// BatchNorm running statistic): the rule must still update `b`, which comes after it.
    #[derive(Module, Debug)]
    struct Tiny {
        w: Param<Tensor<2>>,
        frozen: Param<Tensor<1>>,
        b: Param<Tensor<1>>,
    }

    fn frozen(device: &Device) -> Param<Tensor<1>> {
        Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![2.0f32, 3.0], [2]),
            device,
        ))
    }

    /// Squared error of `x·w + b` against `y` on one of three fixed batches (cycled).
    struct Batches {
        calls: usize,
        device: Device,
    }

    fn batch(k: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
        let x: Vec<f32> = (0..12)
            .map(|i| ((i * 7 + k * 5) % 11) as f32 / 5.0 - 1.0)
            .collect();
        let y: Vec<f32> = (0..8)
            .map(|i| ((i * 3 + k) % 7) as f32 / 3.0 - 1.0)
            .collect();
        (
            Tensor::from_data(TensorData::new(x, [4, 3]), device),
            Tensor::from_data(TensorData::new(y, [4, 2]), device),
        )
    }

    impl GradientSource<Tiny> for Batches {
        fn grads(&mut self, model: &Tiny) -> Result<StepGrads, EngineError> {
            let (x, y) = batch(self.calls % 3, &self.device);
            self.calls += 1;
            let out = x.matmul(model.w.val()) + model.b.val().unsqueeze();
            let loss = (out - y).powi_scalar(2).mean();
            let value = loss.clone().into_scalar::<f64>();
            Ok(StepGrads {
                grads: GradientsParams::from_grads(loss.backward(), model),
                loss: value,
                examples: 4,
            })
        }
    }

    fn tiny(device: &Device) -> Tiny {
        let w: Vec<f32> = vec![0.3, -0.2, 0.1, 0.4, -0.5, 0.2];
        Tiny {
            w: Param::from_tensor(Tensor::from_data(TensorData::new(w, [3, 2]), device)),
            frozen: frozen(device),
            b: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![0.1, -0.1], [2]),
                device,
            )),
        }
    }

    fn flat(model: &Tiny) -> Vec<f64> {
        let mut v: Vec<f64> = model
            .w
            .val()
            .try_into_vec_as::<f32>()
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        v.extend(
            model
                .b
                .val()
                .try_into_vec_as::<f32>()
                .unwrap()
                .iter()
                .map(|&x| x as f64),
        );
        v
    }

    /// Three steps of the rule against the update computed by hand with an explicit inverse
    /// of the window's Fisher (zero rows for the slots not yet filled), momentum included.
    #[test]
    fn mfac_steps_equal_the_explicit_preconditioned_update() {
        let device = Device::flex().autodiff();
        let (m, damp, mu, lr) = (2usize, 0.1, 0.5, 0.05);
        let mut rule = MfacStep::new(MfacConfig {
            num_grads: m,
            damp,
            momentum: mu,
            decay: None,
        });
        let mut optim = MaskedOptimizer::new(SgdConfig::new().build());
        let mut model = tiny(&device);
        let mut src = Batches {
            calls: 0,
            device: device.clone(),
        };
        // The reference, in f64.
        let reference = tiny(&device);
        let mut theta = flat(&reference);
        let mut window: Vec<Vec<f64>> = Vec::new();
        let mut velocity = vec![0.0f64; 8];
        let mut ref_src = Batches {
            calls: 0,
            device: device.clone(),
        };
        for t in 0..3u64 {
            model = rule.step(t, model, &mut src, &mut optim, lr).unwrap().0;

            // Gradient at θ (the reference model holds θ).
            let cur = Tiny {
                w: Param::from_tensor(Tensor::from_data(
                    TensorData::new(theta[..6].iter().map(|&x| x as f32).collect(), [3, 2]),
                    &device,
                )),
                frozen: frozen(&device),
                b: Param::from_tensor(Tensor::from_data(
                    TensorData::new(theta[6..].iter().map(|&x| x as f32).collect(), [2]),
                    &device,
                )),
            };
            let g = ref_src.grads(&cur).unwrap().grads;
            let mut gv: Vec<f64> = g
                .get::<2>(cur.w.id)
                .unwrap()
                .try_into_vec_as::<f32>()
                .unwrap()
                .iter()
                .map(|&x| x as f64)
                .collect();
            gv.extend(
                g.get::<1>(cur.b.id)
                    .unwrap()
                    .try_into_vec_as::<f32>()
                    .unwrap()
                    .iter()
                    .map(|&x| x as f64),
            );
            window.push(gv.clone());
            if window.len() > m {
                window.remove(0);
            }
            let mut rows: Vec<f64> = window.iter().flatten().copied().collect();
            rows.resize(m * 8, 0.0);
            let u = matvec(&invert(&fisher(&rows, m, 8, damp), 8), &gv);
            for (v, x) in velocity.iter_mut().zip(&u) {
                *v = mu * *v + (1.0 - mu) * x;
            }
            for (th, v) in theta.iter_mut().zip(&velocity) {
                *th -= lr * v;
            }
            let got = flat(&model);
            for (i, (a, b)) in got.iter().zip(&theta).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "step {t}, entry {i}: {a} vs {b}"
                );
            }
            assert_eq!(
                model.frozen.val().try_into_vec_as::<f32>().unwrap(),
                vec![2.0, 3.0]
            );
        }
    }
}
