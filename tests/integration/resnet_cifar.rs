//! ResNets on the real CIFAR-10 through the CLI and the engine.
//!
//! * `shears eval` of the pretrained ResNet-20 and ResNet-56 files (the published
//!   `pytorch_resnet_cifar10` weights, `../shared/assets/resnet_cifar10/`) on the 10,000 test
//!   images gives their published accuracies, 91.73 % and 93.39 %, on Flex and NdArray.
//! * A short sparse ResNet-20 run (a 512-image subset, GMP of the 3×3 convolutions to 90 %
//!   with SparseProp on) stopped and resumed ends with the same weights, masks and optimizer
//!   state, bit for bit, as the uninterrupted run; the realised sparsity is the target after
//!   rounding; the export loads and `shears eval` reproduces the final accuracy.
//! * Three training steps with the sparse kernels equal the same steps on the dense path
//!   within float rounding.
//!
//! Needs `scripts/fetch-assets.sh cifar10`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shears::sparsity::mask::pruned_count;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shared_resnet(file: &str) -> PathBuf {
    root().join("../shared/assets/resnet_cifar10").join(file)
}

pub(crate) fn shears(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_shears"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shears {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn require_cifar() {
    assert!(
        root().join("assets/data/cifar-10/test_batch.bin").is_file(),
        "CIFAR-10 is missing: run scripts/fetch-assets.sh cifar10"
    );
}

fn eval_accuracy(arch: &str, file: &Path, device: &str) -> (f64, u64) {
    let out = shears(&[
        "eval",
        "--recipe",
        "recipes/resnet20-cifar10-dense.yaml",
        "--model",
        file.to_str().unwrap(),
        "--set",
        &format!("model.architecture={arch}"),
        "--device",
        device,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["metrics"]["accuracy"].as_f64().unwrap(),
        v["examples"].as_u64().unwrap(),
    )
}

#[test]
fn pretrained_resnets_reach_their_published_test_accuracy() {
    require_cifar();
    for device in ["flex", "ndarray"] {
        for (arch, file, correct) in [
            ("resnet20", "resnet20-12fca82f.safetensors", 9173),
            ("resnet56", "resnet56-4bfd9763.safetensors", 9339),
        ] {
            let (acc, n) = eval_accuracy(arch, &shared_resnet(file), device);
            assert_eq!(n, 10_000);
            assert_eq!(
                (acc * 10_000.0).round() as u64,
                correct,
                "{arch} on {device}: accuracy {acc}"
            );
        }
    }
}

/// The overrides that make `recipes/resnet20-cifar10-gmp.yaml` a 24-step run: 512 training
/// and 256 test images, batches of 64 (8 steps per epoch), 3 epochs, GMP from step 0 to
/// 90 % at step 16 (updates every 4 steps), fixed masks for the last epoch.
const SHORT: [&str; 16] = [
    "--set",
    "data.max_train_examples=512",
    "--set",
    "data.max_dev_examples=256",
    "--set",
    "training.batch_size=64",
    "--set",
    "num_epochs=3",
    "--set",
    "prune_start=0",
    "--set",
    "prune_end=2",
    "--set",
    "training.checkpoint_every_steps=4",
    "--set",
    "training.sparseprop_min_sparsity=0.5",
];

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run_short(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "recipes/resnet20-cifar10-gmp.yaml",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend(SHORT);
    args.extend(extra);
    shears(&args)
}

/// The tensors of a safetensors file, by name.
pub(crate) fn tensors(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
        .map(|(n, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, v)
        })
        .collect()
}

#[test]
fn sparse_resnet_runs_resume_exactly_and_export_reproduces_the_metrics() {
    require_cifar();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    // A: uninterrupted; B: stopped at step 7 (between checkpoints, mid-pruning) and resumed.
    run_short(&a, &[]);
    run_short(&b, &["--stop-after", "7"]);
    run_short(&b, &["--resume"]);
    let last = |d: &Path| d.join("checkpoints/step-000000024");
    for file in [
        "model.safetensors",
        "masks-prune-0.safetensors",
        "optimizer.safetensors",
    ] {
        assert_eq!(
            tensors(&last(&a).join(file)),
            tensors(&last(&b).join(file)),
            "{file}: the resumed run differs from the uninterrupted one"
        );
    }
    let (ra, rb) = (json(&a.join("report.json")), json(&b.join("report.json")));
    assert_eq!(ra["metrics"], rb["metrics"]);

    // SparseProp ran: the log names the switched convolutions.
    let log = std::fs::read_to_string(a.join("train.log")).unwrap();
    assert!(
        log.contains("SparseProp on") && log.contains("layer3.2.conv2.weight"),
        "{log}"
    );

    // Realised sparsity = round(0.9·N) zeros over the 18 pruned 3×3 convolutions.
    let weights = tensors(&a.join("model/model.safetensors"));
    let pruned: Vec<(&String, &Vec<f32>)> = weights
        .iter()
        .filter(|(n, _)| {
            n.starts_with("layer") && (n.ends_with("conv1.weight") || n.ends_with("conv2.weight"))
        })
        .collect();
    assert_eq!(pruned.len(), 18);
    let numel: usize = pruned.iter().map(|(_, v)| v.len()).sum();
    let zeros: usize = pruned
        .iter()
        .map(|(_, v)| v.iter().filter(|x| **x == 0.0).count())
        .sum();
    assert_eq!(zeros, pruned_count(0.9, numel));
    assert_eq!(
        ra["sparsity"]["global"].as_f64().unwrap(),
        zeros as f64 / numel as f64
    );
    assert!(weights["conv1.weight"].iter().all(|x| *x != 0.0));

    // The export is a ResNet-20 `shears eval` reads; it reproduces the final accuracy.
    let eval = |model: &Path, extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--recipe",
            "recipes/resnet20-cifar10-gmp.yaml",
            "--model",
            model.to_str().unwrap(),
            "--set",
            "data.max_dev_examples=256",
        ];
        args.extend(extra);
        let out = shears(&args);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["metrics"]["accuracy"], ra["metrics"]["dev"]["accuracy"]);
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // That eval runs the convolutions at least 80 % sparse on the SparseProp kernels (`auto`
    // on the CPU); on the dense path the accuracy is the same.
    let stderr = eval(&a.join("model"), &[]);
    assert!(stderr.contains("eval: SparseProp on"), "{stderr}");
    let stderr = eval(&a.join("model"), &["--set", "training.sparseprop=off"]);
    assert!(!stderr.contains("SparseProp on"), "{stderr}");
    // So does its burn record (`export --format burn`), read by `eval` and `sparsity`.
    let rec = tmp.path().join("record");
    shears(&[
        "export",
        a.to_str().unwrap(),
        "--format",
        "burn",
        "--out",
        rec.to_str().unwrap(),
    ]);
    assert!(rec.join("model.bpk").is_file() && !rec.join("model.safetensors").exists());
    eval(&rec, &[]);

    let log_a = std::fs::read_to_string(a.join("train.log")).unwrap();
    assert!(log_a.contains("SparseProp on"), "{log_a}");
}

/// SparseProp in the loop computes the masked dense function: the pretrained ResNet-20
/// pruned to 50 % at step 0, three SGD steps with the 3×3 convolutions on the sparse kernels
/// and the same three steps on the dense path end with the same weights up to float
/// rounding, and the same masks.
#[test]
fn sparseprop_training_steps_equal_the_dense_masked_ones() {
    require_cifar();
    let tmp = tempfile::tempdir().unwrap();
    let run = |dir: &Path, mode: &str| {
        shears(&[
            "run",
            "recipes/resnet20-cifar10-finetune-prune.yaml",
            "--out",
            dir.to_str().unwrap(),
            "--set",
            "data.max_train_examples=192",
            "--set",
            "data.max_dev_examples=64",
            "--set",
            "training.batch_size=64",
            "--set",
            "training.max_steps=3",
            "--set",
            "training.sparseprop_min_sparsity=0.45",
            "--set",
            &format!("training.sparseprop={mode}"),
        ]);
        tensors(&dir.join("model/model.safetensors"))
    };
    let (sparse_dir, dense_dir) = (tmp.path().join("sparse"), tmp.path().join("dense"));
    let sparse = run(&sparse_dir, "on");
    let dense = run(&dense_dir, "off");
    let log = std::fs::read_to_string(sparse_dir.join("train.log")).unwrap();
    assert!(
        log.contains("SparseProp on 18 of 20 prunable layers"),
        "{log}"
    );
    let log = std::fs::read_to_string(dense_dir.join("train.log")).unwrap();
    assert!(!log.contains("SparseProp on"), "{log}");
    let mut worst = 0f32;
    for (name, s) in &sparse {
        let d = &dense[name];
        for (x, y) in s.iter().zip(d) {
            assert_eq!(*x == 0.0, *y == 0.0, "{name}: masks differ");
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst < 1e-4, "sparse and dense steps differ by {worst}");
}
