//! The README's main job, `shears run recipes/quickstart.yaml`, at reduced size (96 training
//! and 64 dev sentences, batches of 16: 24 steps) on the real all-MiniLM-L6-v2: the whole
//! pipeline runs (dense fine-tuning, teacher snapshot, GMP with KD, export), the realised
//! sparsity is the target after rounding, `report.json` agrees with `shears sparsity` on the
//! exported file, and `shears eval` on the export reproduces the final dev metrics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shears::sparsity::mask::pruned_count;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shears(args: &[&str]) -> Output {
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

const SMALL: [&str; 6] = [
    "--set",
    "data.max_train_examples=96",
    "--set",
    "data.max_dev_examples=64",
    "--set",
    "training.batch_size=16",
];

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn quickstart_runs_end_to_end_at_reduced_size() {
    assert!(
        root()
            .join("assets/models/all-MiniLM-L6-v2/model.safetensors")
            .is_file()
            && root()
                .join("assets/data/movie-reviews/movie_sentences.tsv")
                .is_file(),
        "assets are missing: run scripts/fetch-assets.sh"
    );
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let run_s = run.display().to_string();
    let mut args = vec!["run", "recipes/quickstart.yaml", "--out", &run_s];
    args.extend(SMALL);
    let out = shears(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("dense  (step      6): accuracy"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sparse (step     24): accuracy"),
        "{stdout}"
    );

    let report = json(&run.join("report.json"));
    assert_eq!(report["steps"], 24);
    assert_eq!(report["task"], "text-classification");
    // The 36 encoder linears of MiniLM-L6: 6 · (4·384² + 2·384·1536) weights, 70 % pruned.
    let numel = 6 * (4 * 384 * 384 + 2 * 384 * 1536);
    let zeros = pruned_count(0.7, numel);
    assert_eq!(report["sparsity"]["target"], 0.7);
    assert_eq!(
        report["sparsity"]["global"].as_f64().unwrap(),
        zeros as f64 / numel as f64
    );
    let params = report["sparsity"]["params"].as_object().unwrap();
    assert_eq!(params.len(), 36);

    // `shears sparsity` on the exported file agrees, parameter by parameter.
    let model = run.join("model");
    let file = model.join("model.safetensors").display().to_string();
    let sp = shears(&["sparsity", &file, "--json"]);
    let sp: serde_json::Value = serde_json::from_slice(&sp.stdout).unwrap();
    let mut counted = (0u64, 0u64);
    for p in sp["params"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        if let Some(v) = params.get(name) {
            assert_eq!(p["sparsity"], *v, "{name}");
            counted.0 += p["zeros"].as_u64().unwrap();
            counted.1 += p["numel"].as_u64().unwrap();
        } else {
            // Not pruned (a pretrained tensor may hold a few exact zeros of its own).
            assert!(p["sparsity"].as_f64().unwrap() < 0.001, "{name} was pruned");
        }
    }
    assert_eq!(counted, (zeros as u64, numel as u64));
    for f in ["config.json", "tokenizer.json", "vocab.txt"] {
        assert!(model.join(f).is_file(), "export lacks {f}");
    }

    // `shears eval` on the export reproduces the final dev metrics.
    let model_s = model.display().to_string();
    let mut args = vec![
        "eval",
        "--model",
        &model_s,
        "--recipe",
        "recipes/quickstart.yaml",
    ];
    args.extend(SMALL);
    let ev = shears(&args);
    let ev: serde_json::Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert_eq!(ev["examples"], 64);
    assert_eq!(ev["metrics"], report["metrics"]["dev"]);
    assert!(report["metrics"]["dev_dense"]["accuracy"].is_f64());

    // The run directory holds the log, the evaluation history and the checkpoints.
    let history = json(&run.join("history.json"));
    let steps: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [6, 12, 18, 24]);
    assert!(run.join("train.log").is_file());
    assert!(run.join("checkpoints/latest").is_file());
    assert!(run.join("teacher-self/model.safetensors").is_file());
}
