//! Data parallel (`training.devices`): a step split over two CPU devices (Flex and NdArray,
//! so the shards really run on two backends) equals the one-device run with the same
//! global batch — the tiny BERT with GMP + distillation of `train_engine`, dropout off —
//! and resume stays exact; a device that cannot be the main one is refused with a message.

use std::path::Path;

use shears::recipe::Recipe;
use shears::train::engine::{EngineError, RunEnd, run};
use shears::train::grads::shard;

use super::resnet_cifar::tensors;
use super::train_engine::{data_file, finished, recipe_text, same_safetensors, start, tiny_model};

/// The tiny model with dropout off (the shards of a step draw their own dropout masks).
pub(crate) fn tiny_recipe_without_dropout(
    dir: &Path,
    devices: Option<&str>,
    training: &str,
) -> Recipe {
    let model = dir.join("tiny");
    tiny_model(&model);
    let cfg_path = model.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["hidden_dropout_prob"] = 0.0.into();
    cfg["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let data = dir.join("sentences.tsv");
    data_file(&data);
    let mut text = recipe_text(&model, &data);
    if let Some(d) = devices {
        text = text.replace("  seed: 3\n", &format!("  seed: 3\n  devices: {d}\n"));
    }
    text = text.replace("  seed: 3\n", &format!("  seed: 3\n{training}"));
    let path = dir.join("recipe.yaml");
    std::fs::write(&path, text).unwrap();
    Recipe::load(&path, &[]).unwrap()
}

/// The largest |a − b| over the f32 tensors of two safetensors files, asserting the same
/// tensor names, lengths and zero (pruned) positions: the same masks.
pub(crate) fn max_diff_same_masks(a: &Path, b: &Path, what: &str) -> f32 {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "{what}: the tensor names differ"
    );
    let mut worst = 0f32;
    for (name, x) in &ta {
        let y = &tb[name];
        assert_eq!(x.len(), y.len(), "{what}: {name}: the lengths differ");
        for (p, q) in x.iter().zip(y) {
            assert_eq!(*p == 0.0, *q == 0.0, "{what}: {name}: the masks differ");
            worst = worst.max((p - q).abs());
        }
    }
    worst
}

#[test]
fn shards_are_contiguous_and_differ_by_at_most_one() {
    let idx: Vec<usize> = (0..11).collect();
    let parts = shard(&idx, 3);
    assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [4, 4, 3]);
    assert_eq!(parts.concat(), idx);
    assert_eq!(
        shard(&idx[..1], 2)
            .iter()
            .map(|p| p.len())
            .collect::<Vec<_>>(),
        [1, 0]
    );
    assert_eq!(shard(&idx, 1), vec![&idx[..]]);
}

#[test]
fn two_devices_equal_one_device_with_the_same_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let one_dir = tmp.path().join("one");
    std::fs::create_dir_all(&one_dir).unwrap();
    let one = tiny_recipe_without_dropout(&one_dir, None, "");
    let two_dir = tmp.path().join("two");
    std::fs::create_dir_all(&two_dir).unwrap();
    let two = tiny_recipe_without_dropout(&two_dir, Some("[flex, ndarray]"), "");
    let a = finished(start(&one, &one_dir.join("run"), false, None));
    let b = finished(start(&two, &two_dir.join("run"), false, None));
    assert_eq!(a.report.steps, b.report.steps);

    // The same masks: the pruned positions of the exported weights are identical.
    let worst = max_diff_same_masks(
        &one_dir.join("run/model/model.safetensors"),
        &two_dir.join("run/model/model.safetensors"),
        "one device vs two",
    );
    // Only the order of float additions differs (the shards' gradients are summed).
    assert!(worst < 1e-4, "final weights differ by {worst}");
    assert_eq!(a.report.sparsity, b.report.sparsity);
    for (ra, rb) in a.history.iter().zip(&b.history) {
        assert!((ra.train_loss.unwrap_or(0.0) - rb.train_loss.unwrap_or(0.0)).abs() < 1e-3);
    }
}

#[test]
fn a_data_parallel_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe_without_dropout(tmp.path(), Some("[flex, ndarray]"), "");
    let a_dir = tmp.path().join("a");
    finished(start(&recipe, &a_dir, false, None));
    let b_dir = tmp.path().join("b");
    assert!(matches!(
        start(&recipe, &b_dir, false, Some(9)),
        RunEnd::Stopped { step: 9, .. }
    ));
    finished(start(&recipe, &b_dir, true, None));
    assert!(same_safetensors(
        &a_dir.join("model/model.safetensors"),
        &b_dir.join("model/model.safetensors")
    ));
}

#[test]
fn the_device_list_must_start_with_the_run_device() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe_without_dropout(tmp.path(), Some("[ndarray, flex]"), "");
    let dir = shears::run_dir::RunDir::prepare(tmp.path().join("run"), &recipe, false).unwrap();
    let err = run(
        &recipe,
        &shears::train::engine::EngineOptions {
            run_dir: dir.path,
            device: shears::device::DeviceSpec::FLEX,
            resume: false,
            base_dir: ".".into(),
            stop_after: None,
            interrupt: None,
        },
    )
    .unwrap_err();
    assert!(matches!(
        err,
        EngineError::Config {
            field: "training.devices",
            ..
        }
    ));
    assert!(err.to_string().contains("starts with `ndarray`"), "{err}");

    // Through the CLI the list is checked before the run directory is created.
    let out_dir = tmp.path().join("cli-run");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shears"))
        .arg("run")
        .arg(&recipe.path)
        .args(["--device", "flex", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("training.devices") && stderr.contains("starts with `ndarray`"),
        "{stderr}"
    );
    assert!(
        !out_dir.exists(),
        "a failed device check left {}",
        out_dir.display()
    );
}
