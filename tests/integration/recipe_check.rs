//! `recipe check` against the real all-MiniLM-L6-v2 checkpoint (from
//! `scripts/fetch-assets.sh`): exact matches, counts and warnings; and run directories.

use std::path::{Path, PathBuf};

use shears::recipe::{Recipe, check::check};
use shears::run_dir::{RESOLVED_RECIPE, RunDir, RunDirError};

fn minilm() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-assets.sh",
        dir.display()
    );
    dir
}

fn recipe(params: &str) -> Recipe {
    let text = format!(
        "model:\n  source: {}\npruning_modifiers:\n  - !GlobalMagnitudePruningModifier\n    params: {params}\n    init_sparsity: 0.3\n    final_sparsity: 0.8\n    start_epoch: 1\n    end_epoch: 5\n    update_frequency: 2\n",
        minilm().display()
    );
    Recipe::from_str_at(&text, Path::new("r.yaml"), &[]).unwrap()
}

#[test]
fn encoder_linears_of_minilm_are_matched_exactly() {
    let r = recipe(
        r#"["re:encoder\\.layer\\.\\d+\\.(attention\\.(self\\.(query|key|value)|output\\.dense)|intermediate\\.dense|output\\.dense)\\.weight"]"#,
    );
    let report = check(&r, None);
    assert_eq!(report.matches.len(), 1);
    let m = &report.matches[0];
    // 6 layers x 6 linears; 4 of 384x384 and 2 of 384x1536 per layer (config.json).
    assert_eq!(m.params.len(), 36);
    let total: usize = m.params.iter().map(|t| t.numel()).sum();
    assert_eq!(total, 6 * (4 * 384 * 384 + 2 * 384 * 1536));
    assert!(m.unmatched.is_empty());
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    // Schedule: updates at epochs 1, 3 and the end 5; cubic from 30 % to 80 %.
    let s: Vec<f64> = report.schedule.iter().map(|r| r.value).collect();
    assert_eq!(s.len(), 3);
    assert!((s[0] - 0.3).abs() < 1e-12 && (s[2] - 0.8).abs() < 1e-12);
    assert!((s[1] - (0.3 + 0.5 * (1.0 - 0.5f64.powi(3)))).abs() < 1e-12);
}

#[test]
fn all_prunable_warns_about_embeddings_and_pooler() {
    let report = check(&recipe("__ALL_PRUNABLE__"), None);
    let m = &report.matches[0];
    // Every 2-D tensor: 36 encoder linears, 3 embedding tables, the pooler.
    assert_eq!(m.params.len(), 40);
    let warned: Vec<&String> = report
        .warnings
        .iter()
        .filter(|w| w.contains("costs accuracy"))
        .collect();
    assert_eq!(warned.len(), 4, "{:?}", report.warnings);
    assert!(
        warned
            .iter()
            .any(|w| w.contains("embeddings.word_embeddings.weight"))
    );
    assert!(warned.iter().any(|w| w.contains("pooler.dense.weight")));
}

#[test]
fn a_pattern_matching_nothing_is_a_warning() {
    let report = check(
        &recipe(r#"["re:bert\\.encoder\\..*", "encoder.layer.0.output.dense.weight"]"#),
        None,
    );
    assert_eq!(report.matches[0].params.len(), 1);
    assert_eq!(
        report.matches[0].unmatched,
        vec!["re:bert\\.encoder\\..*".to_string()]
    );
    assert_eq!(report.warnings.len(), 1);
    assert!(
        report.warnings[0].contains("matches no parameter"),
        "{:?}",
        report.warnings
    );
    // The names it was probably meant for: the encoder's own (no `bert.` prefix).
    assert!(
        report.warnings[0].contains("closest names are `encoder.layer."),
        "{:?}",
        report.warnings
    );
}

#[test]
fn run_directories_keep_what_is_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe("__ALL_PRUNABLE__");
    let dir = tmp.path().join("run");
    let run = RunDir::prepare(dir.clone(), &r, false).unwrap();
    let saved = std::fs::read_to_string(run.path.join(RESOLVED_RECIPE)).unwrap();
    // The saved recipe is the resolved one and loads back to the same modifiers.
    let again = Recipe::from_str_at(&saved, Path::new("again.yaml"), &[]).unwrap();
    assert_eq!(again.modifiers[0].modifier, r.modifiers[0].modifier);
    // A second run into the same directory is refused (nothing is overwritten) ...
    assert!(matches!(
        RunDir::prepare(dir.clone(), &r, false),
        Err(RunDirError::NotEmpty(_))
    ));
    // ... unless it resumes; resuming needs an existing run.
    assert!(RunDir::prepare(dir, &r, true).is_ok());
    assert!(matches!(
        RunDir::prepare(tmp.path().join("none"), &r, true),
        Err(RunDirError::NothingToResume(_))
    ));
    assert!(RunDir::choose(&r, None).starts_with("runs"));
}

/// Legal but almost surely wrong schedules: a `self` teacher from step 0, pruning that
/// would end after training, epochs without an LR modifier.
#[test]
fn suspicious_schedules_are_warnings() {
    let text = "model:\n  source: nowhere\n  teacher: self\ntraining_modifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: 4\n  - !LearningRateFunctionModifier\n    lr_func: linear\n    init_lr: 1.0e-4\n    final_lr: 1.0e-5\n    start_epoch: 0\n    end_epoch: 2\n  - !DistillationModifier\n    hardness: 1.0\n    start_epoch: 0\npruning_modifiers:\n  - !GMPruningModifier\n    params: __ALL_PRUNABLE__\n    init_sparsity: 0.1\n    final_sparsity: 0.8\n    start_epoch: 1\n    end_epoch: 6\n    update_frequency: 1\n";
    let r = Recipe::from_str_at(text, Path::new("s.yaml"), &[]).unwrap();
    let report = check(&r, Some(10));
    let w = &report.warnings;
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        w.iter()
            .any(|x| x.contains("teacher is the untrained student")
                && x.contains("labels are never used")),
        "{w:?}"
    );
    assert!(
        w.iter().any(|x| x.contains("ends at epoch 6")
            && x.contains("training ends at epoch 4")
            && x.contains("80.0 %")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|x| x.contains("epochs 2–4 (of 4)") && x.contains("1.000e-5")),
        "{w:?}"
    );
    // The same recipe made sound: distillation after a dense phase, pruning and LR
    // inside training.
    let sound = text
        .replace(
            "hardness: 1.0\n    start_epoch: 0",
            "hardness: 1.0\n    start_epoch: 1",
        )
        .replace("end_epoch: 6", "end_epoch: 3")
        .replace("    end_epoch: 2\n", "    end_epoch: 4\n");
    let r = Recipe::from_str_at(&sound, Path::new("s.yaml"), &[]).unwrap();
    let report = check(&r, Some(10));
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

/// `recipe check` counts the optimizer steps from the data (what a real run then takes)
/// and `--estimate` times a few real steps; `--no-data` skips both.
#[test]
fn check_counts_the_steps_of_the_real_run_and_estimates_its_time() {
    use crate::train_engine::{finished, start, tiny_recipe};
    let tmp = tempfile::tempdir().unwrap();
    let (recipe, _model, path) = tiny_recipe(tmp.path());
    let run = finished(start(&recipe, &tmp.path().join("run"), false, None));
    let first = &run.history[0];
    let spe = (first.step as f64 / first.epoch).round() as u64;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["recipe", "check", "--quiet", "--estimate", "3"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "optimizer steps per epoch, {} in all",
            run.report.steps
        )) && stdout.contains(&format!(" {spe} optimizer steps per epoch")),
        "{stdout}"
    );
    let per_step: f64 = stdout
        .split("estimate: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no estimate: {stdout}"));
    assert!(per_step > 0.0 && per_step < 60.0, "{per_step}");
    assert!(stdout.contains(&format!("-> {} steps take about", run.report.steps)));

    // A model on the Hub is not downloaded for the count.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shears"))
        .args([
            "recipe",
            "check",
            "--quiet",
            "--set",
            "model.source=hf:org/name",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("steps: not counted (`hf:org/name` is on the Hugging Face Hub"),
        "{stdout}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["recipe", "check", "--quiet", "--no-data"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !stdout.contains("steps:"),
        "{stdout}"
    );
}

/// `recipe check` says what the shipped CrAM recipes' modifier does: global magnitude levels
/// for CrAM-Multi, per-group N:M patterns for CrAM+ N:M.
#[test]
fn check_describes_the_shipped_cram_recipes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, expected) in [
        (
            "recipes/resnet20-cifar10-cram.yaml",
            "CrAM+ with rho 0.2, one level per step from {50%, 70%, 90%} (global magnitude, sparse gradient)",
        ),
        (
            "recipes/resnet20-cifar10-cram-nm.yaml",
            "CrAM+ with rho 0.2, one level per step from {2:4, 4:8} (per-group magnitude, sparse gradient)",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shears"))
            .current_dir(root)
            .args(["recipe", "check", "--no-data", file])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(expected), "{file}:\n{text}");
    }
}
