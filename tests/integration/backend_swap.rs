//! The same recipe on every backend this build has (Flex, NdArray, and wgpu when built
//! with `--features wgpu`; CI runs this file on Mesa's software Vulkan), with nothing
//! changed but the device: the tiny BERT with GMP + distillation and SparseProp `on`
//! (so the pruned layers take the sparse kernels on CPU and the dense masked path on a
//! GPU). Losses agree within float tolerance, the masks are identical at the end, every
//! export loads and evaluates the same on every backend, and the sparsity read from each
//! export is the same. The same for ResNet-20 with BatchNorm (3 fine-tune-and-prune steps
//! through the CLI). Also: a wgpu device that does not exist is an error, not a panic.

use std::path::Path;

use shears::device::{DeviceKind, DeviceSpec};
use shears::sparsity::report::SparsityReport;
use shears::train::engine::{EngineOptions, RunOutcome, evaluate_model, run};

use super::data_parallel::{max_diff_same_masks, tiny_recipe_without_dropout};
use super::train_engine::finished;

fn kinds() -> Vec<DeviceKind> {
    DeviceKind::ALL
        .into_iter()
        .filter(|k| k.is_available() && *k != DeviceKind::Cuda)
        .collect()
}

fn run_on(recipe: &shears::recipe::Recipe, dir: &Path, kind: DeviceKind) -> RunOutcome {
    let dir = shears::run_dir::RunDir::prepare(dir.to_path_buf(), recipe, false).unwrap();
    finished(
        run(
            recipe,
            &EngineOptions {
                run_dir: dir.path,
                device: kind.into(),
                resume: false,
                base_dir: ".".into(),
                stop_after: None,
                interrupt: None,
            },
        )
        .unwrap_or_else(|e| panic!("{kind}: {e}")),
    )
}

#[test]
fn one_recipe_runs_the_same_on_every_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe_without_dropout(
        tmp.path(),
        None,
        "  sparseprop: on\n  sparseprop_min_sparsity: 0.3\n",
    );
    let kinds = kinds();
    assert!(kinds.len() >= 2);
    let runs: Vec<(DeviceKind, RunOutcome)> = kinds
        .iter()
        .map(|&k| (k, run_on(&recipe, &tmp.path().join(k.to_string()), k)))
        .collect();
    let (k0, a) = &runs[0];
    let file_a = a.model_dir.clone().unwrap().join("model.safetensors");
    let report_a = SparsityReport::from_safetensors(&file_a).unwrap();
    for (k, b) in &runs[1..] {
        assert_eq!(a.report.steps, b.report.steps);
        for (ra, rb) in a.history.iter().zip(&b.history) {
            let (la, lb) = (ra.train_loss.unwrap_or(0.0), rb.train_loss.unwrap_or(0.0));
            assert!(
                (la - lb).abs() < 1e-3,
                "{k0} vs {k}: loss {la} vs {lb} at step {}",
                ra.step
            );
        }
        let dir_b = b.model_dir.clone().unwrap();
        let worst = max_diff_same_masks(
            &file_a,
            &dir_b.join("model.safetensors"),
            &format!("{k0} vs {k}"),
        );
        eprintln!("{k0} vs {k}: final weights differ by at most {worst:e}");
        assert!(worst < 1e-5, "{k0} vs {k}: final weights differ by {worst}");
        assert_eq!(a.report.sparsity, b.report.sparsity, "{k0} vs {k}");
        // `shears sparsity` on the export reads the same figures.
        let report_b = SparsityReport::from_safetensors(&dir_b.join("model.safetensors")).unwrap();
        assert_eq!(report_a.to_json(), report_b.to_json(), "{k0} vs {k}");
    }
    // Every export loads and evaluates on every backend, with the same metrics.
    for (k, out) in &runs {
        let dir = out.model_dir.clone().unwrap();
        let (m0, n0) = evaluate_model(&recipe, &dir, DeviceSpec::FLEX, Path::new(".")).unwrap();
        for &other in &kinds {
            let (m, n) = evaluate_model(&recipe, &dir, other.into(), Path::new(".")).unwrap();
            assert_eq!(n, n0);
            for (key, v) in &m0 {
                let w = m[key];
                assert!(
                    (v - w).abs() < 1e-9,
                    "export of {k} evaluated on {other}: {key} {v} vs {w}"
                );
            }
        }
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn a_missing_wgpu_adapter_is_an_error_not_a_panic() {
    let e = "wgpu:4096"
        .parse::<DeviceSpec>()
        .unwrap()
        .device()
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("`wgpu:4096` not found") && msg.contains("wgpu adapter"),
        "{msg}"
    );
}

/// ResNet-20 with BatchNorm (training-mode statistics, running averages) fine-tuned and
/// pruned for 3 steps from the pretrained CIFAR weights, with SparseProp `on`, through the
/// CLI on every backend: the same masks and final weights (BN running statistics included)
/// within float tolerance.
#[test]
fn a_resnet_with_batch_norm_runs_the_same_on_every_backend() {
    super::resnet_cifar::require_cifar();
    let tmp = tempfile::tempdir().unwrap();
    let runs: Vec<(DeviceKind, _)> = kinds()
        .into_iter()
        .map(|k| {
            let dir = tmp.path().join(k.to_string());
            super::resnet_cifar::shears(&[
                "run",
                "recipes/resnet20-cifar10-finetune-prune.yaml",
                "--out",
                dir.to_str().unwrap(),
                "--device",
                &k.to_string(),
                "--set",
                "data.max_train_examples=128",
                "--set",
                "data.max_dev_examples=32",
                "--set",
                "training.batch_size=64",
                "--set",
                "training.max_steps=3",
                "--set",
                "training.sparseprop_min_sparsity=0.45",
                "--set",
                "training.sparseprop=on",
            ]);
            (k, dir.join("model/model.safetensors"))
        })
        .collect();
    let (k0, a) = &runs[0];
    for (k, b) in &runs[1..] {
        let worst = max_diff_same_masks(a, b, &format!("{k0} vs {k}: ResNet-20"));
        eprintln!("{k0} vs {k}: ResNet-20 weights differ by at most {worst:e}");
        assert!(
            worst < 1e-3,
            "{k0} vs {k}: ResNet-20 weights differ by {worst}"
        );
    }
}
