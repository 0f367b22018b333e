//! `shears bench train`: the benchmarked step is the recipe's own step (the same batches in
//! every mode), the masked modes hold exactly the asked sparsity, SparseProp runs where
//! asked and nowhere else, the phases add up to no more than the step, and bad requests
//! are errors.

use std::path::Path;
use std::process::Command;

use shears::device::DeviceSpec;
use shears::recipe::Recipe;
use shears::train::bench::{BenchError, StepMode, bench_mode, bench_recipe};
use shears::train::engine::EngineOptions;

use crate::train_engine::{same_safetensors, tiny_recipe};

fn options(dir: &Path) -> EngineOptions {
    std::fs::create_dir_all(dir).unwrap();
    EngineOptions {
        run_dir: dir.to_path_buf(),
        device: DeviceSpec::FLEX,
        resume: false,
        base_dir: ".".into(),
        stop_after: None,
        interrupt: None,
    }
}

#[test]
fn modes_share_batches_and_hold_the_asked_sparsity() {
    let tmp = tempfile::tempdir().unwrap();
    let (recipe, model, _) = tiny_recipe(tmp.path());
    let export = tmp.path().join("reference");
    let modes = [StepMode::Dense, StepMode::Masked, StepMode::Sparseprop];
    let benches: Vec<_> = modes
        .iter()
        .map(|&mode| {
            let opts = options(&tmp.path().join(mode.name()));
            let to = (mode == StepMode::Dense).then_some(export.as_path());
            bench_mode(&recipe, &opts, mode, 0.9, 1, 3, to).unwrap()
        })
        .collect();
    // The tiny BERT's pruned parameters: 2 layers × (4 × 32·32 + 2 × 32·64) = 16,384 weights,
    // 90 % of which is 14,745.6: 14,746 zeros.
    let exact = 14_746.0 / 16_384.0;
    for (mode, b) in modes.iter().zip(&benches) {
        assert_eq!(b.family, "bert");
        assert_eq!(b.step_seconds.len(), 3, "{mode:?}");
        // Batch size 8, two micro-batches per step.
        assert_eq!(b.examples, 3 * 2 * 8, "{mode:?}");
        assert_eq!(b.batch_shapes.len(), 3);
        for step in &b.batch_shapes {
            assert_eq!(step.len(), 2);
            for s in step {
                assert!(
                    s.len() == 2 && s[0] == 8 && (1..=32).contains(&s[1]),
                    "{s:?}"
                );
            }
        }
        assert_eq!(
            b.batch_shapes, benches[0].batch_shapes,
            "{mode:?}: other batches"
        );
        let wall: f64 = b.step_seconds.iter().sum();
        assert!(
            b.phases.total() <= wall + 1e-9,
            "{mode:?}: {:?} > {wall}",
            b.phases
        );
        use shears::profile::StepPhase::*;
        for phase in [Data, Forward, Backward, Clip, Optimizer] {
            assert!(b.phases.get(phase) > 0.0, "{mode:?}: no time in {phase:?}");
        }
    }
    let [dense, masked, sparse] = &benches[..] else {
        panic!("three modes ran")
    };
    assert_eq!((dense.sparsity, dense.sparse_layers), (0.0, 0));
    assert!(
        (masked.sparsity - exact).abs() < 1e-12,
        "{}",
        masked.sparsity
    );
    assert_eq!(masked.sparse_layers, 0);
    assert!(
        (sparse.sparsity - exact).abs() < 1e-12,
        "{}",
        sparse.sparsity
    );
    // The 12 pruned linears (q, k, v, attention output, intermediate, output; 2 layers).
    assert_eq!(sparse.sparse_layers, 12);
    // Op times: every timed micro-batch (3 steps × 2) runs the 2 layers' GELU forward and
    // backward, and in SparseProp mode the 12 sparse linears forward and backward; the
    // dense modes never call a SparseProp kernel; the ops fit inside their phases.
    use shears::profile::StepPhase::{Backward, Clip, Forward};
    let calls =
        |b: &shears::train::bench::StepBench, op: &str| b.ops.get(op).map_or(0, |t| t.calls);
    for b in [dense, masked, sparse] {
        assert_eq!(calls(b, "GELU fwd"), 3 * 2 * 2, "{:?}", b.ops);
        assert_eq!(calls(b, "GELU bwd"), 3 * 2 * 2, "{:?}", b.ops);
        let ours: f64 = b.ops.values().map(|t| t.seconds).sum();
        let phases = b.phases.get(Forward) + b.phases.get(Backward) + b.phases.get(Clip);
        assert!(ours <= phases + 1e-9, "{ours} > {phases}: {:?}", b.ops);
    }
    for b in [dense, masked] {
        assert!(
            !b.ops.keys().any(|k| k.starts_with("SparseProp")),
            "{:?}",
            b.ops
        );
    }
    assert_eq!(calls(sparse, "SparseProp linear fwd"), 3 * 2 * 12);
    assert_eq!(calls(sparse, "SparseProp linear bwd"), 3 * 2 * 12);
    // The reference model is the recipe's model as the first step sees it.
    assert!(same_safetensors(
        &model.join("model.safetensors"),
        &export.join("model.safetensors")
    ));
}

#[test]
fn bad_requests_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (recipe, _, path) = tiny_recipe(tmp.path());
    assert!(matches!(
        bench_recipe(&recipe, StepMode::Masked, 1.0, 4),
        Err(BenchError::Sparsity(_))
    ));
    // Without pruning modifiers, dense works and the sparse modes say what is missing.
    let text = std::fs::read_to_string(&path).unwrap();
    let unpruned = tmp.path().join("dense.yaml");
    let cut = text.find("pruning_modifiers:").unwrap();
    let rest = &text[cut..];
    let end = rest.find("distillation_modifiers:").unwrap();
    std::fs::write(&unpruned, format!("{}{}", &text[..cut], &rest[end..])).unwrap();
    let dense = Recipe::load(&unpruned, &[]).unwrap();
    let r = bench_recipe(&dense, StepMode::Dense, 0.9, 4).unwrap();
    assert!(r.model.unwrap().teacher.is_none());
    assert_eq!(r.training.unwrap().max_steps, Some(4));
    let e = bench_recipe(&dense, StepMode::Sparseprop, 0.9, 4).unwrap_err();
    assert!(matches!(e, BenchError::NothingPruned { .. }), "{e}");
    assert!(e.to_string().contains("dense.yaml"), "{e}");
    // The CLI: a non-zero exit naming the parameter.
    let out = Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["bench", "train"])
        .arg(&path)
        .args(["--steps", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--steps"));
}

#[test]
fn cli_prints_one_row_per_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, path) = tiny_recipe(tmp.path());
    let out = Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["bench", "train"])
        .arg(&path)
        .args(["--steps", "2", "--warmup", "0", "--modes", "dense,masked"])
        .args(["--sparsity", "0.5", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["mode"], "dense");
    assert_eq!(rows[1]["mode"], "masked");
    // 8,192 zeros of 16,384.
    assert_eq!(rows[1]["sparsity"], 0.5);
    assert_eq!(rows[0]["steps"], 2);
    assert_eq!(v["batch_shapes"].as_array().unwrap().len(), 2);
    assert!(v["pytorch"].is_null());
    // The top ops: slowest first, burn's remainder among them; GELU runs in both layers
    // for each of the step's 2 micro-batches.
    for r in rows {
        let ops = r["ops"].as_array().unwrap();
        let ms: Vec<f64> = ops.iter().map(|o| o["ms"].as_f64().unwrap()).collect();
        assert!(ms.windows(2).all(|w| w[0] >= w[1]), "{ms:?}");
        assert!(
            ops.iter()
                .any(|o| o["op"] == shears::train::bench::BURN_OPS && o["calls"].is_null())
        );
        assert!(
            ops.iter()
                .any(|o| o["op"] == "GELU fwd" && o["calls"] == 4.0),
            "{ops:?}"
        );
    }
    // The table lists them under the rows.
    let out = Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["bench", "train"])
        .arg(&path)
        .args([
            "--steps",
            "1",
            "--warmup",
            "0",
            "--modes",
            "dense",
            "--top-ops",
            "3",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let top = text
        .split("top ops, dense")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        top.lines().skip(1).filter(|l| l.starts_with("  ")).count(),
        3,
        "{text}"
    );
}

/// `--modes base,dense` on a CrAM recipe: the dense step is the recipe's CrAM step (two
/// forward/backward passes per micro-batch), the base step the AdamW step alone (one), on
/// the same batches; the table says what the rule costs. On a recipe without CrAM the two
/// modes run the same passes.
#[test]
fn base_mode_leaves_cram_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, path) = tiny_recipe(tmp.path());
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "pruning_modifiers:\n",
        "  - !CrAMModifier\n    rho: 0.05\n    sparsities: [0.5, 0.7]\n    params: ['re:bert\\.encoder\\.layer\\.\\d+\\..*\\.weight$']\n    ignore: ['re:.*LayerNorm.*']\npruning_modifiers:\n",
    );
    let cram_path = tmp.path().join("cram.yaml");
    std::fs::write(&cram_path, text).unwrap();
    let cram = Recipe::load(&cram_path, &[]).unwrap();
    let plain = Recipe::load(&path, &[]).unwrap();
    let has_cram = |r: &Recipe| {
        r.modifiers
            .iter()
            .any(|m| m.modifier.tag() == "CrAMModifier")
    };
    assert!(has_cram(
        &bench_recipe(&cram, StepMode::Dense, 0.9, 4).unwrap()
    ));
    let base = bench_recipe(&cram, StepMode::Base, 0.9, 4).unwrap();
    assert!(!has_cram(&base));
    // Base prunes nothing, like dense.
    assert!(
        base.modifiers
            .iter()
            .all(|m| m.modifier.as_pruning().is_none())
    );
    let gelu = |recipe: &Recipe, mode: StepMode| {
        let opts = options(
            &tmp.path()
                .join(format!("{}-{}", mode.name(), has_cram(recipe))),
        );
        let b = bench_mode(recipe, &opts, mode, 0.9, 0, 2, None).unwrap();
        (b.ops["GELU fwd"].calls, b.batch_shapes)
    };
    // 2 steps × 2 micro-batches × 2 layers, once per pass.
    let (cram_dense, shapes_dense) = gelu(&cram, StepMode::Dense);
    let (cram_base, shapes_base) = gelu(&cram, StepMode::Base);
    assert_eq!((cram_dense, cram_base), (2 * 2 * 2 * 2, 2 * 2 * 2));
    assert_eq!(shapes_dense, shapes_base);
    assert_eq!(
        gelu(&plain, StepMode::Base).0,
        gelu(&plain, StepMode::Dense).0
    );

    let out = Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["bench", "train"])
        .arg(&cram_path)
        .args(["--steps", "1", "--warmup", "0", "--modes", "base,dense"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("step rule: a dense step"), "{stdout}");
}
