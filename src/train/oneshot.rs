//! One-shot compression of a trained model (`shears prune`): magnitude masks at one or
//! several levels (global or per tensor, unstructured or N:M), optional BatchNorm
//! re-calibration, evaluation on the recipe's dev/test split, and an export per level.
//!
//! Every level starts again from the model as saved (a fresh load, so no level sees
//! another's masks or statistics). BatchNorm re-calibration follows the CrAM reference
//! ("BNT"): reset the running statistics, then `batches` training-mode forward passes
//! without gradients over batches drawn, cycling, from a calibration set of `examples`
//! training examples (a seeded sample; with the recipe's training augmentation), the
//! statistics updated with `momentum` (0.1 as the reference; `None` averages the batches
//! plainly, PyTorch's `momentum=None`).

use std::path::{Path, PathBuf};

use burn::module::Module;

use super::engine::{EngineError, ModelAt, TaskVisitor, dispatch};
use super::grads::TaskSampler;
use super::obs_prune::obs_prune;
use super::order::{batch, epoch_order};
use super::task::{Metrics, Task};
use crate::arch::Architecture;
use crate::device::DeviceSpec;
use crate::recipe::Recipe;
use crate::sparsity::enforce::apply_masks;
use crate::sparsity::mask::{MaskKind, Scope, compute_module_masks};
use crate::sparsity::params::list_params;
use crate::sparsity::selection::ParamSelector;

/// BatchNorm re-calibration after pruning.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Forward passes (the reference: 100).
    pub batches: usize,
    /// Examples per pass (the reference: 128).
    pub batch_size: usize,
    /// Size of the calibration set drawn from the training split (the reference: 1000).
    pub examples: usize,
    /// Running-statistics momentum (0.1), or `None` for a plain average of the passes.
    pub momentum: Option<f64>,
    /// Seed of the calibration sample and of its augmentation.
    pub seed: u64,
}

/// How weights are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum OneShotMethod {
    /// The smallest `|w|` go (global or per tensor, unstructured or N:M).
    Magnitude,
    /// OBS with a block-diagonal inverse Fisher and its weight update (global; unstructured
    /// or block4), see [`super::obs_prune`].
    Obs(super::obs_prune::ObsConfig),
}

/// What `shears prune` does.
#[derive(Debug, Clone, PartialEq)]
pub struct OneShot {
    /// Magnitude or OBS.
    pub method: OneShotMethod,
    /// The levels: target sparsity and mask structure (N:M: sparsity `1 − N/M`).
    pub levels: Vec<(f64, MaskKind)>,
    /// Parameters pruned: names, `re:` patterns, `__ALL_PRUNABLE__`.
    pub params: Vec<String>,
    /// Names or patterns excluded.
    pub ignore: Vec<String>,
    /// One threshold over all parameters, or one per tensor.
    pub scope: Scope,
    /// Re-calibrate BatchNorm after pruning (families without BatchNorm skip it).
    pub calibration: Option<Calibration>,
    /// Export each pruned model to `DIR/sparsity-0.90` (`DIR/2of4` for N:M).
    pub out: Option<PathBuf>,
}

/// The result at one level (the first row is the model as saved: level `None`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LevelResult {
    /// The target sparsity (`None`: the unpruned model).
    pub target: Option<f64>,
    /// `unstructured` or `N:M`.
    pub structure: String,
    /// Zeros over the pruned parameters after pruning, as a fraction.
    pub realised: f64,
    /// Whether BatchNorm statistics were re-calibrated.
    pub recalibrated: bool,
    /// The metrics on the dev/test split.
    pub metrics: Metrics,
    /// Where the pruned model was exported.
    pub export: Option<PathBuf>,
}

/// The directory name of a level's export.
pub fn level_dir(sparsity: f64, kind: MaskKind) -> String {
    match kind {
        MaskKind::NM { n, m } => format!("{n}of{m}"),
        _ => format!("sparsity-{sparsity:.2}"),
    }
}

/// Prunes the model at `model` (a model directory or weights file of the recipe's family)
/// at every level of `job`, evaluating each on the recipe's dev split on `device`.
pub fn prune_one_shot(
    recipe: &Recipe,
    model: &Path,
    job: &OneShot,
    device: DeviceSpec,
    base_dir: &Path,
) -> Result<Vec<LevelResult>, EngineError> {
    dispatch(
        recipe,
        base_dir,
        ModelAt::Export(model),
        Prune {
            spec: model,
            job,
            device,
        },
    )
}

struct Prune<'a> {
    spec: &'a Path,
    job: &'a OneShot,
    device: DeviceSpec,
}

const LABEL: &str = "shears prune";

impl TaskVisitor for Prune<'_> {
    type Output = Vec<LevelResult>;

    fn visit<A: Architecture, T: Task<Model = A::Model>>(
        self,
        arch: A,
        task: T,
    ) -> Result<Vec<LevelResult>, EngineError> {
        let device = self.device.device()?;
        let spec = self.spec.display().to_string();
        let naming = arch.naming();
        let dense = arch.load(&spec, &device)?;
        let all = list_params(&dense, &naming);
        let selected = ParamSelector::new(&self.job.params, &self.job.ignore)?
            .select(&all)
            .matched;
        if selected.is_empty() {
            return Err(EngineError::nothing_selected(LABEL, &self.job.params, &all));
        }
        let mut out = vec![LevelResult {
            target: None,
            structure: "dense".into(),
            realised: realised(&dense, &naming, &selected)?,
            recalibrated: false,
            metrics: task.evaluate(&dense, &device)?,
            export: None,
        }];
        drop(dense);
        for &(sparsity, kind) in &self.job.levels {
            // A fresh load per level: clones would share BatchNorm statistics.
            let (masks, mut model) = match &self.job.method {
                OneShotMethod::Magnitude => {
                    let model = arch.load(&spec, &device)?;
                    let masks = compute_module_masks(
                        &model,
                        &naming,
                        &selected,
                        sparsity,
                        kind,
                        self.job.scope,
                    )
                    .map_err(|source| EngineError::Mask {
                        modifier: LABEL.into(),
                        source,
                    })?;
                    let model = apply_masks(model, &masks, &naming)?;
                    (masks, model)
                }
                OneShotMethod::Obs(cfg) => {
                    let ad = device.clone().autodiff();
                    let model = arch.load(&spec, &ad)?;
                    let mut sampler = TaskSampler::new(&task, &ad, cfg.seed, A::norm_in_eval);
                    let (model, masks) = obs_prune(
                        model,
                        &mut sampler,
                        &naming,
                        &selected,
                        None,
                        0.0,
                        sparsity,
                        cfg,
                        0,
                        LABEL,
                    )?;
                    (masks, model.valid())
                }
            };
            let recalibrated = match &self.job.calibration {
                Some(c) => recalibrate(&arch, &task, &mut model, c, &device),
                None => false,
            };
            let metrics = task.evaluate(&model, &device)?;
            let export = match &self.job.out {
                Some(dir) => {
                    let d = dir.join(level_dir(sparsity, kind));
                    arch.export(&model, &d)?;
                    Some(d)
                }
                None => None,
            };
            out.push(LevelResult {
                target: Some(sparsity),
                structure: match kind {
                    MaskKind::NM { n, m } => format!("{n}:{m}"),
                    _ => "unstructured".into(),
                },
                realised: masks.sparsity(),
                recalibrated,
                metrics,
                export,
            });
        }
        Ok(out)
    }
}

/// The fraction of zeros over the selected parameters.
fn realised<M: burn::module::Module>(
    model: &M,
    naming: &dyn crate::sparsity::params::ParamNaming,
    selected: &[crate::sparsity::selection::ParamInfo],
) -> Result<f64, EngineError> {
    let values = crate::sparsity::mask::read_values(model, naming, selected).map_err(|source| {
        EngineError::Mask {
            modifier: LABEL.into(),
            source,
        }
    })?;
    let (zeros, n) = values.iter().fold((0usize, 0usize), |(z, n), p| {
        (
            z + p.values.iter().filter(|v| **v == 0.0).count(),
            n + p.values.len(),
        )
    });
    Ok(zeros as f64 / n.max(1) as f64)
}

/// BatchNorm re-calibration (see the module docs); `false` when the family has no
/// running statistics or the task no training examples.
pub fn recalibrate<A: Architecture, T: Task<Model = A::Model>>(
    arch: &A,
    task: &T,
    model: &mut A::Model,
    c: &Calibration,
    device: &burn::tensor::Device,
) -> bool {
    let n = task.train_len();
    if n == 0 || c.batches == 0 || !arch.begin_recalibration(model, c.momentum) {
        return false;
    }
    let mut sample = epoch_order(n, c.seed, 0, true);
    sample.truncate(c.examples.clamp(1, n));
    let size = c.batch_size.clamp(1, sample.len());
    let cycle: Vec<usize> = sample
        .iter()
        .cycle()
        .take(c.batches * size)
        .copied()
        .collect();
    for b in 0..c.batches {
        let xb = task.batch(batch(&cycle, size, b), b as u64, device);
        let _ = task.outputs(model, &xb);
    }
    arch.end_recalibration(model);
    true
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor};
    use shears_models::resnet::{ResNet, ResNetConfig};

    use super::*;
    use crate::arch::resnet::ResNetFamily;
    use crate::data::batch::Normalize;
    use crate::data::image_batch::ImageBatchConfig;
    use crate::data::images::ImageExample;
    use crate::train::task::image::ImageClassificationTask;

    fn images(n: usize, salt: usize) -> Vec<ImageExample> {
        (0..n)
            .map(|i| ImageExample {
                pixels: (0..3 * 8 * 8)
                    .map(|p| ((p * 31 + i * 97 + salt * 13) % 251) as u8)
                    .collect(),
                channels: 3,
                height: 8,
                width: 8,
                label: i % 10,
            })
            .collect()
    }

    fn task() -> ImageClassificationTask<ResNet> {
        let normalize = Normalize {
            mean: vec![0.5; 3],
            std: vec![0.25; 3],
        };
        ImageClassificationTask::new(
            images(30, 0),
            images(5, 1),
            ImageBatchConfig::train(normalize, None, 3),
            0.0,
            8,
        )
        .unwrap()
    }

    fn vec1(t: Tensor<1>) -> Vec<f64> {
        t.try_into_vec_as::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    /// The per-channel mean and unbiased variance of `x: [B, C, H, W]`, in f64.
    fn channel_stats(x: Tensor<4>) -> (Vec<f64>, Vec<f64>) {
        let [b, c, h, w] = x.dims();
        let v: Vec<f32> = x.try_into_vec_as::<f32>().unwrap();
        let n = (b * h * w) as f64;
        let mut mean = vec![0.0; c];
        let mut var = vec![0.0; c];
        for ch in 0..c {
            let vals: Vec<f64> = (0..b)
                .flat_map(|i| (0..h * w).map(move |p| (i, p)))
                .map(|(i, p)| v[(i * c + ch) * h * w + p] as f64)
                .collect();
            mean[ch] = vals.iter().sum::<f64>() / n;
            var[ch] = vals.iter().map(|x| (x - mean[ch]).powi(2)).sum::<f64>() / (n - 1.0);
        }
        (mean, var)
    }

    fn check(momentum: Option<f64>) {
        let device = Device::flex();
        let arch = ResNetFamily::new("resnet20", 10, None).unwrap();
        let task = task();
        let mut model = {
            let _rng = crate::rng::seeded(&device, 9);
            let model = ResNet::new(&ResNetConfig::parse("resnet20").unwrap(), &device);
            crate::rng::materialize(&model);
            model
        };
        let c = Calibration {
            batches: 5,
            batch_size: 8,
            examples: 20,
            momentum,
            seed: 4,
        };
        assert!(recalibrate(&arch, &task, &mut model, &c, &device));

        // Reference for the first BatchNorm (its input is conv1's output): statistics of
        // the same calibration batches folded from mean 0 / variance 1.
        let mut sample = epoch_order(30, 4, 0, true);
        sample.truncate(20);
        let cycle: Vec<usize> = sample.iter().cycle().take(40).copied().collect();
        let (mut rm, mut rv) = (vec![0.0f64; 16], vec![1.0f64; 16]);
        for b in 0..5 {
            let xb = task.batch(batch(&cycle, 8, b), b as u64, &device);
            let (m, v) = channel_stats(model.conv1.forward(xb.images));
            let f = momentum.unwrap_or(1.0 / (b + 1) as f64);
            for ch in 0..16 {
                rm[ch] = (1.0 - f) * rm[ch] + f * m[ch];
                rv[ch] = (1.0 - f) * rv[ch] + f * v[ch];
            }
        }
        let bn = &model.bn1;
        for (got, want) in [(vec1(bn.running_mean()), rm), (vec1(bn.running_var()), rv)] {
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
            }
        }
        assert_eq!(bn.momentum, 0.1, "the usual momentum is restored");
    }

    #[test]
    fn recalibration_with_momentum_equals_the_reference_average() {
        check(Some(0.1));
    }

    #[test]
    fn recalibration_without_momentum_is_the_plain_mean_of_the_passes() {
        check(None);
    }

    #[test]
    fn obs_one_shot_realises_the_target_zeroes_the_pruned_and_moves_the_kept_weights() {
        use crate::obs::ObsStructure;
        use crate::sparsity::mask::read_values;
        use crate::sparsity::params::{BurnPaths, list_params};
        use crate::train::obs_prune::{ObsConfig, obs_prune};

        let ad = Device::flex().autodiff();
        let task = task();
        let model = {
            let _rng = crate::rng::seeded(&ad, 11);
            let model = ResNet::new(&ResNetConfig::parse("resnet20").unwrap(), &ad);
            crate::rng::materialize(&model);
            model
        };
        let selected: Vec<_> = list_params(&model, &BurnPaths)
            .into_iter()
            .filter(|p| p.name.starts_with("layer3.") && p.name.ends_with("conv2.weight"))
            .collect();
        assert_eq!(selected.len(), 3);
        let before = read_values(&model, &BurnPaths, &selected).unwrap();
        let cfg = ObsConfig {
            num_grads: 4,
            damp: 1e-3,
            block_size: 16,
            recomputations: 2,
            batch_size: 6,
            structure: ObsStructure::Unstructured,
            seed: 1,
        };
        let mut sampler = crate::train::grads::TaskSampler::new(
            &task,
            &ad,
            cfg.seed,
            <ResNetFamily as crate::arch::Architecture>::norm_in_eval,
        );
        let (model, masks) = obs_prune(
            model,
            &mut sampler,
            &BurnPaths,
            &selected,
            None,
            0.0,
            0.6,
            &cfg,
            0,
            "test",
        )
        .unwrap();
        let n: usize = selected.iter().map(|p| p.numel()).sum();
        assert_eq!(masks.pruned(), crate::sparsity::mask::pruned_count(0.6, n));
        let after = read_values(&model, &BurnPaths, &selected).unwrap();
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            let keep = masks.get(&a.info.name).unwrap().keep();
            for ((x0, x1), k) in b.values.iter().zip(&a.values).zip(keep) {
                if !k {
                    assert_eq!(*x1, 0.0);
                } else if x0 != x1 {
                    moved += 1;
                }
            }
        }
        assert!(
            moved > n / 10,
            "the OBS update moved only {moved} kept weights"
        );
        // The weights still train: gradients flow into the updated parameters.
        assert!(after[0].values.iter().all(|v| v.is_finite()));
    }
}
