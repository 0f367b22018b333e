//! Recipes are parsed strictly: every bad input is an error naming file, line and
//! column; good input resolves exactly (variables, `eval`, `--set`).

use std::path::{Path, PathBuf};
use std::process::Command;

use shears::recipe::modifiers::{
    FinalSparsity, InitSparsity, InterFunc, MaskType, Modifier, Params,
};
use shears::recipe::yaml::{Mark, Typed};
use shears::recipe::{Override, Recipe, RecipeError};

fn load(text: &str) -> Result<Recipe, RecipeError> {
    Recipe::from_str_at(text, Path::new("r.yaml"), &[])
}

fn err(text: &str) -> String {
    load(text)
        .expect_err("the recipe must be rejected")
        .to_string()
}

const GOOD: &str = "\
num_epochs: 30
prune_end: eval(num_epochs - 4)
lr: 8e-5
pruning_modifiers:
  - !GMPruningModifier
    params: [\"re:bert.encoder.layer.*.attention.self.(query|key|value).weight\"]
    init_sparsity: 0.7
    final_sparsity: 0.9
    start_epoch: 2
    end_epoch: eval(prune_end)
    update_frequency: 4.0
    inter_func: cubic
    mask_type: \"2:4\"
    global_sparsity: true
training_modifiers:
  - !LearningRateFunctionModifier
    lr_func: cyclic_linear
    init_lr: eval(lr)
    final_lr: eval(lr * 0.1)
    start_epoch: 2
    end_epoch: eval(num_epochs)
    cycle_epochs: 4
";

#[test]
fn a_sparseml_recipe_resolves_exactly() {
    let r = load(GOOD).unwrap();
    assert_eq!(r.modifiers.len(), 2);
    let Modifier::GMPruningModifier(p) = &r.modifiers[0].modifier else {
        panic!("expected GMP, got {:?}", r.modifiers[0].modifier)
    };
    assert_eq!(
        p.params,
        Params::List(vec![
            "re:bert.encoder.layer.*.attention.self.(query|key|value).weight".into()
        ])
    );
    assert_eq!(p.init_sparsity, InitSparsity::Value(0.7));
    assert_eq!(p.final_sparsity, FinalSparsity::Value(0.9));
    assert_eq!(
        (p.start_epoch, p.end_epoch, p.update_frequency),
        (Some(2.0), Some(26.0), Some(4.0))
    );
    assert_eq!(p.inter_func, InterFunc::Cubic);
    assert_eq!(p.mask_type, MaskType::NM { n: 2, m: 4 });
    assert!(r.modifiers[0].modifier.is_global());
    assert_eq!(r.modifiers[0].mark, Mark::File { line: 5, col: 5 });
    let Modifier::LearningRateFunctionModifier(l) = &r.modifiers[1].modifier else {
        panic!("expected an LR modifier")
    };
    assert_eq!(l.init_lr, 8e-5);
    assert_eq!(l.final_lr, 8e-5 * 0.1);
    assert_eq!(
        r.variable("prune_end").unwrap().typed(),
        Some(Typed::Int(26))
    );
}

#[test]
fn the_resolved_recipe_reloads_to_the_same_recipe() {
    let r = load(GOOD).unwrap();
    let text = r.resolved_yaml();
    assert!(!text.contains("eval("), "{text}");
    let again = load(&text).unwrap();
    assert_eq!(
        again
            .modifiers
            .iter()
            .map(|m| &m.modifier)
            .collect::<Vec<_>>(),
        r.modifiers.iter().map(|m| &m.modifier).collect::<Vec<_>>()
    );
}

#[test]
fn unknown_keys_name_line_column_and_the_allowed_keys() {
    let text = GOOD.replace("    inter_func: cubic\n", "    inter_fnc: cubic\n");
    let e = err(&text);
    assert!(
        e.starts_with(
            "r.yaml:12:5: pruning_modifiers[0]: unknown field `inter_fnc`, expected one of"
        ),
        "{e}"
    );
    assert!(e.contains("`inter_func`"), "{e}");
}

#[test]
fn out_of_range_values_name_their_position() {
    let e = err(&GOOD.replace("final_sparsity: 0.9", "final_sparsity: 1.5"));
    assert!(
        e.starts_with("r.yaml:8:21: pruning_modifiers[0].final_sparsity: 1.5 is out of range"),
        "{e}"
    );
    let e = err(&GOOD.replace("inter_func: cubic", "inter_func: cubical"));
    assert!(
        e.starts_with("r.yaml:12:17: pruning_modifiers[0].inter_func: unknown variant `cubical`"),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "start_epoch: 2\n    end_epoch: eval(prune_end)",
        "start_epoch: soon\n    end_epoch: eval(prune_end)",
    ));
    assert!(e.starts_with("r.yaml:9:18: pruning_modifiers[0].start_epoch: expected a number, found the string `soon`"), "{e}");
    let e = err(&GOOD.replace("mask_type: \"2:4\"", "mask_type: \"4:2\""));
    assert!(
        e.starts_with("r.yaml:13:16: pruning_modifiers[0].mask_type:"),
        "{e}"
    );
}

#[test]
fn cross_field_problems_point_at_the_modifier() {
    let e = err(&GOOD.replace("init_sparsity: 0.7", "init_sparsity: 0.95"));
    assert!(
        e.starts_with(
            "r.yaml:5:5: pruning_modifiers[0]: init_sparsity 0.95 is above final_sparsity 0.9"
        ),
        "{e}"
    );
    let e = err(&GOOD.replace("    cycle_epochs: 4\n", ""));
    assert!(
        e.starts_with(
            "r.yaml:16:5: training_modifiers[0]: `cycle_epochs` (or `cycle_steps`) is required"
        ),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "start_epoch: 2\n    end_epoch: eval(prune_end)",
        "start_epoch: 2\n    end_step: 100",
    ));
    assert!(e.contains("one window uses one unit"), "{e}");
}

#[test]
fn bad_yaml_is_a_syntax_error_with_position() {
    let e = err("a: 1\nb: [1, 2\nc: 3\n");
    assert!(e.starts_with("r.yaml:3:"), "{e}");
    assert!(e.contains("invalid YAML"), "{e}");
    let e = err("a: 1\na: 2\n");
    assert_eq!(e, "r.yaml:2:1: invalid YAML: duplicate key `a`");
}

#[test]
fn unknown_and_unimplemented_modifiers_are_errors() {
    let e = err("m_modifiers:\n  - !FancyPruningModifier\n    x: 1\n");
    assert!(
        e.starts_with(
            "r.yaml:2:5: m_modifiers[0]: unknown variant `FancyPruningModifier`, expected one of"
        ),
        "{e}"
    );
    let e = err("m_modifiers:\n  - !QuantizationModifier\n    start_epoch: 0\n");
    assert!(
        e.contains("SparseML modifier that shears does not implement"),
        "{e}"
    );
    // oBERT's modifier: parsed with SparseML's names, its fields checked with positions.
    let obs = "m_modifiers:\n  - !OBSPruningModifier\n    params: __ALL_PRUNABLE__\n    init_sparsity: 0.1\n    final_sparsity: 0.5\n    start_epoch: 0\n    end_epoch: 2\n    update_frequency: 1\n    num_grads: {0.0: 64, 0.3: 128}\n    mask_type: block4\n    fisher_block_size: 32\n    grad_sampler_kwargs: {batch_size: 8}\n";
    let r = load(obs).unwrap();
    let Modifier::OBSPruningModifier(o) = &r.modifiers[0].modifier else {
        panic!("expected OBS")
    };
    let n = o.num_grads.as_ref().unwrap();
    assert_eq!((n.at(0.1), n.at(0.3), n.at(0.5)), (64, 128, 128));
    let e = err(&obs.replace("fisher_block_size: 32", "fisher_block_size: 30"));
    assert!(
        e.starts_with("r.yaml:2:5: m_modifiers[0]: fisher_block_size must be a multiple of 4"),
        "{e}"
    );
    let e = err(&obs.replace("batch_size: 8", "batchsize: 8"));
    assert!(
        e.contains("grad_sampler_kwargs.batchsize: unknown option"),
        "{e}"
    );
    let e = err(&obs.replace("0.3: 128", "0.3: 0"));
    assert!(
        e.starts_with("r.yaml:9:17: m_modifiers[0].num_grads: num_grads must be at least 1"),
        "{e}"
    );
    let e = err(&obs.replace("mask_type: block4", "mask_type: \"2:4\""));
    assert!(e.contains("not available for OBS"), "{e}");
    let e = err("m_modifiers:\n  - params: x\n");
    assert!(e.contains("tagged mapping"), "{e}");
}

#[test]
fn sections_are_strict_too() {
    let e = err("training:\n  batch_size: 32\n  batchsize: 16\n");
    assert!(
        e.starts_with("r.yaml:3:3: training: unknown field `batchsize`"),
        "{e}"
    );
    let e = err("optimizer:\n  name: lamb\n  lr: 1\n");
    assert!(e.starts_with("r.yaml:2:9: optimizer.name: unknown variant `lamb`, expected one of `adamw`, `adam`, `sgd`"), "{e}");
    let e = err("device: tpu\n");
    assert!(
        e.starts_with(
            "r.yaml:1:9: device: unknown device `tpu` (known: flex, ndarray, wgpu[:N], cuda[:N])"
        ),
        "{e}"
    );
    let e = err("device: flex:1\n");
    assert!(
        e.starts_with(
            "r.yaml:1:9: device: device `flex:1`: flex is one CPU device and takes no index"
        ),
        "{e}"
    );
    let e = err("training:\n  batch_size: 8\n  devices: [flex, wgpu:x]\n");
    assert!(e.starts_with("r.yaml:3:"), "{e}");
    assert!(
        e.contains("training.devices") && e.contains("`wgpu:x`"),
        "{e}"
    );
    let e = err("stages:\n  - a\n");
    assert!(e.contains("unknown top-level key"), "{e}");
}

#[test]
fn eval_errors_and_cycles_are_reported() {
    let e = err("a: eval(b + 1)\nb: eval(a * 2)\n");
    assert!(e.contains("cycle"), "{e}");
    let e = err("a: 1\nx_modifiers:\n  - !EpochRangeModifier\n    end_epoch: eval(c)\n");
    assert!(
        e.starts_with("r.yaml:4:16: x_modifiers[0].end_epoch: unknown variable `c`"),
        "{e}"
    );
}

#[test]
fn overrides_set_variables_and_section_keys() {
    let o = |s: &str| s.parse::<Override>().unwrap();
    let r = Recipe::from_str_at(
        GOOD,
        Path::new("r.yaml"),
        &[
            o("num_epochs=10"),
            o("training.batch_size=8"),
            o("device=ndarray"),
        ],
    )
    .unwrap();
    let Modifier::LearningRateFunctionModifier(l) = &r.modifiers[1].modifier else {
        panic!()
    };
    assert_eq!(l.end_epoch, Some(10.0));
    let Modifier::GMPruningModifier(p) = &r.modifiers[0].modifier else {
        panic!()
    };
    assert_eq!(p.end_epoch, Some(6.0));
    assert_eq!(r.training.as_ref().unwrap().batch_size, 8);
    assert_eq!(r.device, Some(shears::device::DeviceKind::Ndarray.into()));
    let e = Recipe::from_str_at(GOOD, Path::new("r.yaml"), &[o("num_epoch=3")])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--set num_epoch=3: the recipe has no variable `num_epoch`"),
        "{e}"
    );
    let e = Recipe::from_str_at(GOOD, Path::new("r.yaml"), &[o("lr=fast")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--set lr"), "{e}");
    assert!("novalue".parse::<Override>().is_err());
}

#[test]
fn markdown_front_matter_keeps_line_numbers() {
    let text = "---\nx_modifiers:\n  - !EpochRangeModifier\n    end_epochs: 3\n---\n# Notes\n";
    let e = Recipe::from_str_at(text, Path::new("r.md"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("r.md:4:5: x_modifiers[0]: unknown field `end_epochs`"),
        "{e}"
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_recipes() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("recipes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "md")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_recipe_passes_the_check() {
    let recipes = shipped_recipes();
    assert!(recipes.len() >= 2, "{recipes:?}");
    for path in recipes {
        let r = Recipe::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            r.warnings.is_empty(),
            "{}: {:?}",
            path.display(),
            r.warnings
        );
    }
}

/// A top-level variable that no `eval(...)` reads changes nothing: a warning with its
/// position and the closest field name, carried by `recipe check` and printed by the CLI.
#[test]
fn variables_nothing_reads_are_warnings_with_a_suggestion() {
    let text = "fianl_sparsity: 0.9\nfinal_sparsity: 0.8\nend: 5\nlast: eval(end)\nsparsity: 0.7\nzzqx: 3\npruning_modifiers:\n  - !GMPruningModifier\n    params: __ALL_PRUNABLE__\n    init_sparsity: 0.1\n    final_sparsity: eval(sparsity)\n    start_epoch: 1\n    end_epoch: eval(last)\n    update_frequency: 1\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vars.yaml");
    std::fs::write(&path, text).unwrap();
    let r = Recipe::load(&path, &[]).unwrap();
    let keys: Vec<&str> = r.warnings.iter().map(|w| w.key.as_str()).collect();
    // `end` is read by `last`, which a modifier reads; `sparsity` is read directly.
    assert_eq!(keys, ["fianl_sparsity", "final_sparsity", "zzqx"]);
    assert_eq!(r.warnings[0].mark.to_string(), "1:1");
    assert!(
        r.warnings[0]
            .message
            .contains("did you mean `final_sparsity`"),
        "{}",
        r.warnings[0]
    );
    assert!(
        r.warnings[1]
            .message
            .contains("write `final_sparsity: eval(final_sparsity)`"),
        "{}",
        r.warnings[1]
    );
    assert_eq!(r.warnings[2].mark.to_string(), "6:1");
    assert!(!r.warnings[2].message.contains("did you mean"));
    let report = shears::recipe::check::check(&r, None);
    assert_eq!(report.warnings.len(), 3, "{:?}", report.warnings);
    assert!(report.warnings[0].ends_with(&r.warnings[0].message));
    // Once some eval reads them, the warnings are gone.
    let fixed = text.replace(
        "eval(sparsity)",
        "eval(fianl_sparsity - final_sparsity + sparsity + zzqx - 3)",
    );
    std::fs::write(&path, fixed).unwrap();
    assert!(Recipe::load(&path, &[]).unwrap().warnings.is_empty());
    // The CLI prints them and still succeeds.
    let out = Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["recipe", "check", "--quiet"])
        .arg(dir.path().join("vars.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0 warnings"), "{stdout}");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["recipe", "check", "--quiet"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("vars.yaml:1:1: `fianl_sparsity`: no eval(...) reads this variable"),
        "{stdout}"
    );
    assert!(stdout.contains("3 warnings"), "{stdout}");
}

#[test]
fn the_cli_exits_non_zero_with_a_position_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "x_modifiers:\n  - !EpochRangeModifier\n    end_epoch: -3\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["recipe", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:2:5: x_modifiers[0]: end_epoch -3 is negative",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let ok = Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["recipe", "check", "--quiet"])
        .args(shipped_recipes())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// `data.task`, `data.label_from`, `model.teacher`, `model.head`, the SparseProp switch and
/// `distill_output_keys` are enums of the recipe grammar: a typo is an error at its position.
#[test]
fn task_head_teacher_and_keys_are_parsed_with_positions() {
    let base =
        "model:\n  source: m\n  teacher: self\ndata:\n  task: glue/sst2\n  label_from: sign\n";
    let r = load(base).unwrap();
    let m = r.model.as_ref().unwrap();
    assert_eq!(
        m.teacher,
        Some(shears::recipe::sections::TeacherSpec::SelfSnapshot)
    );
    let d = r.data.as_ref().unwrap();
    assert_eq!(d.task.to_string(), "glue/sst2");
    assert_eq!(
        d.label_from,
        Some(shears::recipe::sections::LabelFrom::Sign)
    );
    let cases = [
        (
            base.replace("glue/sst2", "glue/sst3"),
            "r.yaml:5:9",
            "unknown GLUE task `sst3`",
        ),
        (
            base.replace("glue/sst2", "sentiment"),
            "r.yaml:5:9",
            "unknown task `sentiment`",
        ),
        (base.replace("sign", "signum"), "r.yaml:6:15", "signum"),
        (
            base.replace("teacher: self", "teacher: ''"),
            "r.yaml:3:12",
            "`teacher` is empty",
        ),
        (format!("{base}  \n"), "", ""),
        (
            base.replace("source: m\n", "source: m\n  head: qa_head\n"),
            "r.yaml:3:9",
            "qa_head",
        ),
        (
            format!("{base}training:\n  batch_size: 8\n  sparseprop: always\n"),
            "r.yaml:9:15",
            "always",
        ),
        (
            format!(
                "{base}distillation_modifiers:\n  - !DistillationModifier\n    distill_output_keys: [logit]\n"
            ),
            "r.yaml:9:27",
            "logit",
        ),
    ];
    for (text, at, what) in cases {
        if at.is_empty() {
            assert!(load(&text).is_ok());
            continue;
        }
        let e = err(&text);
        assert!(
            e.contains(at) && e.contains(what),
            "{e}\n(expected {at} … {what})"
        );
    }
}

const CRAM: &str = "\
training_modifiers:
  - !EpochRangeModifier
    end_epoch: 10
  - !CrAMModifier
    rho: 0.2
    sparsities: [0.5, 0.7, 0.9]
    ignore: [conv1.weight]
";

#[test]
fn cram_fields_are_parsed_strictly_with_positions() {
    let r = load(CRAM).unwrap();
    let Modifier::CrAMModifier(c) = &r.modifiers[1].modifier else {
        panic!("expected CrAM, got {:?}", r.modifiers[1].modifier)
    };
    assert_eq!(c.rho.0, 0.2);
    let levels: Vec<f64> = c.sparsities.as_ref().unwrap().iter().map(|f| f.0).collect();
    assert_eq!(levels, vec![0.5, 0.7, 0.9]);
    assert!(c.plus && c.sparse_grad && c.global_sparsity);
    assert_eq!(c.params, Params::AllPrunable);

    let e = err(&CRAM.replace("    rho: 0.2\n", "    rho: 0.2\n    sparse_gard: false\n"));
    assert!(
        e.starts_with(
            "r.yaml:6:5: training_modifiers[1]: unknown field `sparse_gard`, expected one of"
        ),
        "{e}"
    );
    let e = err(&CRAM.replace("rho: 0.2", "rho: -0.2"));
    assert!(
        e.starts_with("r.yaml:5:10: training_modifiers[1].rho: -0.2 is out of range"),
        "{e}"
    );
    let e = err(&CRAM.replace("[0.5, 0.7, 0.9]", "[0.5, 1.7]"));
    assert!(
        e.starts_with("r.yaml:6:23: training_modifiers[1].sparsities[1]: 1.7 is out of range"),
        "{e}"
    );
    let e = err(&CRAM.replace(
        "sparsities: [0.5, 0.7, 0.9]",
        "nm_patterns: [\"2:4\", \"unstructured\"]",
    ));
    assert!(
        e.starts_with("r.yaml:6:26: training_modifiers[1].nm_patterns[1]: `unstructured` is not an N:M pattern"),
        "{e}"
    );
    let e = err(&CRAM.replace(
        "    sparsities: [0.5, 0.7, 0.9]\n",
        "    sparsities: [0.5]\n    nm_patterns: [\"2:4\"]\n",
    ));
    assert!(
        e.starts_with(
            "r.yaml:4:5: training_modifiers[1]: give `sparsities` or `nm_patterns`, not both"
        ),
        "{e}"
    );
    let e = err(&CRAM.replace("    sparsities: [0.5, 0.7, 0.9]\n", ""));
    assert!(e.contains("give the compression levels"), "{e}");
    let e = err(&CRAM.replace("[0.5, 0.7, 0.9]", "[0.5, 1.0]"));
    assert!(e.contains("would prune every weight"), "{e}");
    let twice = format!("{CRAM}  - !CrAMModifier\n    rho: 0.1\n    sparsities: [0.5]\n");
    assert!(err(&twice).contains("a recipe takes one !CrAMModifier"));
}

/// `optimizer: {name: mfac, num_grads, damp}`: M-FAC's fields are parsed, belong to
/// `mfac` only, are range-checked with positions, and CrAM refuses M-FAC as its base.
#[test]
fn mfac_optimizer_fields_are_strict() {
    let base = "optimizer:\n  name: mfac\n  lr: 1.0e-3\n  num_grads: 64\n  damp: 1.0e-6\n";
    let r = load(base).unwrap();
    let o = r.optimizer.as_ref().unwrap();
    assert_eq!(o.name, shears::recipe::sections::OptimizerKind::Mfac);
    assert_eq!((o.num_grads, o.damp), (Some(64), Some(1e-6)));

    let e = err(&base.replace("name: mfac", "name: sgd"));
    assert!(
        e.starts_with("r.yaml:4:3: optimizer.num_grads: `num_grads` is an M-FAC setting"),
        "{e}"
    );
    let e = err(&base.replace("num_grads: 64", "num_grads: 0"));
    assert!(
        e.starts_with("r.yaml:4:3: optimizer.num_grads: num_grads must be at least 1"),
        "{e}"
    );
    let e = err(&base.replace("damp: 1.0e-6", "damp: 0.0"));
    assert!(
        e.starts_with("r.yaml:5:3: optimizer.damp: damp 0 must be > 0"),
        "{e}"
    );
    let e = err(&base.replace("name: mfac", "name: mfca"));
    assert!(e.starts_with("r.yaml:2:9: optimizer.name:"), "{e}");

    let with_cram = format!("{base}{CRAM}");
    let e = err(&with_cram);
    assert!(
        e.starts_with(
            "r.yaml:9:5: training_modifiers[1]: !CrAMModifier needs a first-order base optimizer"
        ),
        "{e}"
    );
}
