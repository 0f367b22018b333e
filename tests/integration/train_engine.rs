//! The training engine on a small BERT (2 layers, hidden 32, MiniLM's real tokenizer) and a
//! small sentence task: exact resume, exact final sparsity, report = exported file.
//!
//! burn keeps one random generator per process and the tests of this binary run in
//! parallel: every draw happens under `shears::rng`'s lock (the engine's, and this file's
//! model initialisation), so each run stays a function of its seed.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use shears::device::DeviceSpec;
use shears::recipe::Recipe;
use shears::run_dir::RunDir;
use shears::sparsity::mask::pruned_count;
use shears::sparsity::report::SparsityReport;
use shears::train::engine::{EngineOptions, RunEnd, RunOutcome, evaluate_model, run};
use shears_models::bert::{BertConfig, BertForSequenceClassification, save_pretrained};

pub(crate) fn minilm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/all-MiniLM-L6-v2")
}

/// A random 2-layer BERT classifier with MiniLM's tokenizer files.
pub(crate) fn tiny_model(dir: &Path) {
    let config = BertConfig::new(30522, 32, 2, 2, 64).with_num_labels(2);
    let device = Device::flex();
    // Seeded under the engine's RNG lock: other tests of this binary train concurrently.
    let model = {
        let _rng = shears::rng::seeded(&device, 7);
        let model = BertForSequenceClassification::new(&config, &device);
        // burn initialises lazily: draw every parameter now, under the lock.
        shears::rng::materialize(&model);
        model
    };
    save_pretrained(&model, &config, dir).unwrap();
    for f in ["tokenizer.json", "vocab.txt"] {
        std::fs::copy(minilm_dir().join(f), dir.join(f)).unwrap();
    }
}

/// 120 short sentences whose label is whether a positive word occurs.
pub(crate) fn data_file(path: &Path) {
    let pos = ["good", "great", "fine", "lovely", "superb"];
    let neg = ["bad", "awful", "dull", "poor", "boring"];
    let nouns = ["movie", "film", "story", "cast", "plot", "script"];
    let mut out = String::from("id\ttext\tlabel\n");
    for i in 0..120 {
        let (words, label) = if i % 2 == 0 { (&pos, 1) } else { (&neg, 0) };
        let w = words[i / 2 % 5];
        let n = nouns[i / 3 % 6];
        let text = match i % 3 {
            0 => format!("a {w} {n}"),
            1 => format!("the {n} was {w} , really {w}"),
            _ => format!("what a {w} {n} it turned out to be"),
        };
        out.push_str(&format!("s{i}\t{text}\t{label}\n"));
    }
    std::fs::write(path, out).unwrap();
}

pub(crate) fn recipe_text(model: &Path, data: &Path) -> String {
    format!(
        r#"
model:
  source: {model}
  head: classification
  num_labels: 2
  teacher: self
data:
  task: text-classification
  train: {data}
  id_column: id
  text_column: text
  label_column: label
  dev_fraction: 0.2
  max_seq_length: 32
training:
  seed: 3
  batch_size: 8
  gradient_accumulation_steps: 2
  max_grad_norm: 1.0
  checkpoint_every_steps: 4
  log_every_steps: 1000
optimizer:
  name: adamw
  lr: 1.0e-3
  weight_decay: 0.01
training_modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: 4
  - !LearningRateFunctionModifier
    lr_func: cyclic_linear
    init_lr: 1.0e-3
    final_lr: 1.0e-4
    cycle_epochs: 0.5
    start_epoch: 1
    end_epoch: 4
pruning_modifiers:
  - !GlobalMagnitudePruningModifier
    params: ['re:bert\.encoder\.layer\.\d+\..*dense\.weight', 're:bert\.encoder\.layer\.\d+\.attention\.self\.(query|key|value)\.weight']
    init_sparsity: 0.3
    final_sparsity: 0.65
    start_epoch: 1
    end_epoch: 3
    update_frequency: 0.5
distillation_modifiers:
  - !DistillationModifier
    hardness: 0.5
    temperature: 2.0
    start_epoch: 1
"#,
        model = model.display(),
        data = data.display()
    )
}

/// The tiny model, the sentences and the standard recipe (GMP + KD) under `dir`: the
/// recipe, the model directory and the recipe file.
pub(crate) fn tiny_recipe(dir: &Path) -> (Recipe, PathBuf, PathBuf) {
    let model = dir.join("tiny");
    tiny_model(&model);
    let data = dir.join("sentences.tsv");
    data_file(&data);
    let path = dir.join("recipe.yaml");
    std::fs::write(&path, recipe_text(&model, &data)).unwrap();
    (Recipe::load(&path, &[]).unwrap(), model, path)
}

pub(crate) fn start(recipe: &Recipe, dir: &Path, resume: bool, stop_after: Option<u64>) -> RunEnd {
    let dir = RunDir::prepare(dir.to_path_buf(), recipe, resume).unwrap();
    run(
        recipe,
        &EngineOptions {
            run_dir: dir.path,
            device: DeviceSpec::FLEX,
            resume,
            base_dir: PathBuf::from("."),
            stop_after,
            interrupt: None,
        },
    )
    .unwrap()
}

pub(crate) fn finished(end: RunEnd) -> RunOutcome {
    match end {
        RunEnd::Finished(o) => *o,
        RunEnd::Stopped { step, .. } => panic!("stopped at {step}"),
    }
}

pub(crate) fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Whether two safetensors files hold the same tensors (names, dtypes, shapes, bytes) and
/// the same header metadata; the header's key order is not significant (it comes from a
/// hash map).
pub(crate) fn same_safetensors(a: &Path, b: &Path) -> bool {
    let (ba, bb) = (bytes(a), bytes(b));
    let (ta, tb) = (
        safetensors::SafeTensors::deserialize(&ba).unwrap(),
        safetensors::SafeTensors::deserialize(&bb).unwrap(),
    );
    let meta = |x: &[u8]| {
        safetensors::SafeTensors::read_metadata(x)
            .unwrap()
            .1
            .metadata()
            .clone()
            .unwrap_or_default()
    };
    let mut na = ta.names();
    let mut nb = tb.names();
    na.sort();
    nb.sort();
    na == nb
        && meta(&ba) == meta(&bb)
        && na.iter().all(|n| {
            let (x, y) = (ta.tensor(n).unwrap(), tb.tensor(n).unwrap());
            x.dtype() == y.dtype() && x.shape() == y.shape() && x.data() == y.data()
        })
}

#[test]
fn resumed_runs_equal_uninterrupted_ones_and_sparsity_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let (recipe, model, path) = tiny_recipe(tmp.path());

    // A: uninterrupted.
    let a_dir = tmp.path().join("a");
    let a = finished(start(&recipe, &a_dir, false, None));
    // About 96 training sentences (20 % dev by id hash), batches of 8, 2 per step.
    let spe = (a.history[0].step as f64 / a.history[0].epoch).round() as u64;
    assert!((5..=8).contains(&spe), "{spe} steps per epoch");
    assert_eq!(a.report.steps, 4 * spe, "4 epochs");

    // B: stopped one step before the first pruning step and the teacher snapshot (mid-epoch,
    // between checkpoints), resumed in two more sessions; the second crosses both.
    let b_dir = tmp.path().join("b");
    match start(&recipe, &b_dir, false, Some(spe - 1)) {
        RunEnd::Stopped { step, .. } => assert_eq!(step, spe - 1),
        RunEnd::Finished(_) => panic!("should stop"),
    }
    match start(&recipe, &b_dir, true, Some(6)) {
        RunEnd::Stopped { step, .. } => assert_eq!(step, spe + 5),
        RunEnd::Finished(_) => panic!("should stop"),
    }
    let b = finished(start(&recipe, &b_dir, true, None));

    // C: killed after step 13 without a checkpoint there: the latest complete one (12)
    // is used, the steps after it are redone.
    let c_dir = tmp.path().join("c");
    assert!(matches!(
        start(&recipe, &c_dir, false, Some(13)),
        RunEnd::Stopped { step: 13, .. }
    ));
    let ckpts = c_dir.join("checkpoints");
    std::fs::remove_dir_all(ckpts.join("step-000000013")).unwrap();
    std::fs::write(ckpts.join("latest"), "step-000000012").unwrap();
    let c = finished(start(&recipe, &c_dir, true, None));

    let final_ckpt = |d: &Path| d.join(format!("checkpoints/step-{:09}", a.report.steps));
    for (name, other) in [("b", &b_dir), ("c", &c_dir)] {
        for (file, what) in [
            ("model.safetensors", "weights"),
            ("masks-prune-0.safetensors", "masks"),
            ("optimizer.safetensors", "optimizer state"),
        ] {
            assert!(
                same_safetensors(
                    &final_ckpt(&a_dir).join(file),
                    &final_ckpt(other).join(file)
                ),
                "run {name}: final {what} differ from the uninterrupted run"
            );
        }
        assert!(
            same_safetensors(
                &a_dir.join("model/model.safetensors"),
                &other.join("model/model.safetensors")
            ),
            "run {name}: exported weights differ"
        );
    }
    assert_eq!(a.last.metrics, b.last.metrics);
    assert_eq!(a.last.metrics, c.last.metrics);
    assert_eq!(a.history, b.history);

    // Realised sparsity equals the target after rounding: 2 layers × (4·32² + 2·32·64).
    let numel = 2 * (4 * 32 * 32 + 2 * 32 * 64);
    let zeros_expected = pruned_count(0.65, numel);
    let file = SparsityReport::from_safetensors(&a_dir.join("model/model.safetensors")).unwrap();
    let pruned: Vec<_> = file
        .params
        .iter()
        .filter(|p| a.report.sparsity.params.contains_key(&p.name))
        .collect();
    assert_eq!(pruned.len(), 12);
    assert_eq!(pruned.iter().map(|p| p.numel).sum::<usize>(), numel);
    assert_eq!(
        pruned.iter().map(|p| p.zeros).sum::<usize>(),
        zeros_expected
    );
    assert_eq!(
        a.report.sparsity.global,
        zeros_expected as f64 / numel as f64
    );
    for p in &pruned {
        assert_eq!(a.report.sparsity.params[&p.name], p.sparsity, "{}", p.name);
    }
    // Nothing else was pruned: the embeddings have no zeros.
    let emb = file
        .params
        .iter()
        .find(|p| p.name.ends_with("word_embeddings.weight"))
        .unwrap();
    assert_eq!(emb.zeros, 0);

    // The dense evaluation is the one at the first pruning step (epoch 1).
    let dense = a.dense.as_ref().unwrap();
    assert_eq!(dense.step, spe);
    assert_eq!(dense.sparsity, 0.0);
    assert!(a.report.metrics.contains_key("dev_dense"));
    // The teacher snapshot was written once, at the distillation start.
    assert!(a_dir.join("teacher-self/model.safetensors").is_file());

    // A resume with another recipe is refused, naming the reason, and the record of the
    // original recipe is kept.
    let other = Recipe::load(&path, &["training.seed=4".parse().unwrap()]).unwrap();
    let before = std::fs::read(b_dir.join("recipe.resolved.yaml")).unwrap();
    let e = RunDir::prepare(b_dir.clone(), &other, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("differs from the recipe.resolved.yaml"), "{e}");
    assert_eq!(
        std::fs::read(b_dir.join("recipe.resolved.yaml")).unwrap(),
        before
    );
    // The engine checks the digest in the checkpoint too (a directory prepared by hand).
    let e = run(
        &other,
        &EngineOptions {
            run_dir: b_dir.clone(),
            device: DeviceSpec::FLEX,
            resume: true,
            base_dir: PathBuf::from("."),
            stop_after: None,
            interrupt: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("differs from the one the run started with"),
        "{e}"
    );

    glue_regression_from_parquet(tmp.path(), &model);
    squad_with_pruning_and_distillation(tmp.path(), &model);
    a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp.path(), &path);
}

/// An absurd learning rate makes the loss non-finite within a few steps: the run stops with
/// an error naming the step, and the latest checkpoint is an earlier, finite one.
fn a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp: &Path, recipe_path: &Path) {
    let recipe = Recipe::load(
        recipe_path,
        &[
            "optimizer.name=sgd".parse().unwrap(),
            "optimizer.lr=1.0e30".parse().unwrap(),
            "training.max_grad_norm=1.0e30".parse().unwrap(),
            "training.checkpoint_every_steps=1".parse().unwrap(),
        ],
    )
    .unwrap();
    // The recipe's LR modifier starts at epoch 1: the first epoch runs at optimizer.lr.
    let dir = tmp.join("nan");
    let run_dir = RunDir::prepare(dir.clone(), &recipe, false).unwrap();
    let e = run(
        &recipe,
        &EngineOptions {
            run_dir: run_dir.path,
            device: DeviceSpec::FLEX,
            resume: false,
            base_dir: PathBuf::from("."),
            stop_after: None,
            interrupt: None,
        },
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("the loss is "), "{msg}");
    let step: u64 = msg
        .split("at step ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap()
        .parse()
        .unwrap();
    let latest = std::fs::read_to_string(dir.join("checkpoints/latest")).unwrap();
    assert_eq!(
        latest,
        format!("step-{step:09}"),
        "the last good step is kept"
    );
    // The checkpoint is complete and readable.
    let file = SparsityReport::from_safetensors(
        &dir.join(format!("checkpoints/{latest}/model.safetensors")),
    )
    .unwrap();
    assert!(!file.params.is_empty());
}

/// SQuAD v1.1 (official JSON) with a QA head built afresh on the tiny backbone: GMP to 50 %
/// with distillation of the start and end logits from `teacher: self`; EM/F1 on dev, and
/// `evaluate_model` on the export reproduces them.
fn squad_with_pruning_and_distillation(tmp: &Path, model: &Path) {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/squad/squad_v1.json");
    let text = format!(
        r#"
model:
  source: {model}
  head: qa
  teacher: self
data:
  task: squad
  train: {file}
  dev: {file}
  max_seq_length: 48
  doc_stride: 16
training:
  batch_size: 4
optimizer:
  name: adam
  lr: 1.0e-3
training_modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: 3
pruning_modifiers:
  - !GMPruningModifier
    params: ['re:bert\.encoder\.layer\.\d+\.(intermediate|output)\.dense\.weight']
    init_sparsity: 0.2
    final_sparsity: 0.5
    start_epoch: 1
    end_epoch: 2
    update_frequency: 0.5
distillation_modifiers:
  - !DistillationModifier
    hardness: 0.5
    temperature: 2.0
    distill_output_keys: [start_logits, end_logits]
    start_epoch: 1
"#,
        model = model.display(),
        file = file.display()
    );
    let path = tmp.join("squad.yaml");
    std::fs::write(&path, text).unwrap();
    let recipe = Recipe::load(&path, &[]).unwrap();
    let out = finished(start(&recipe, &tmp.join("squad"), false, None));
    let keys: Vec<&String> = out.report.metrics["dev"].keys().collect();
    assert_eq!(keys, ["exact_match", "f1"]);
    // Layer-wise (GMPruningModifier): each of the 4 FFN matrices (32·64) exactly at 50 %.
    assert_eq!(out.report.sparsity.params.len(), 4);
    for (name, s) in &out.report.sparsity.params {
        assert_eq!(
            *s,
            pruned_count(0.5, 32 * 64) as f64 / (32.0 * 64.0),
            "{name}"
        );
    }
    let questions = shears::data::squad::load_squad_file(&file).unwrap().len();
    let (again, n) = evaluate_model(
        &recipe,
        &tmp.join("squad/model"),
        DeviceSpec::FLEX,
        Path::new("."),
    )
    .unwrap();
    assert_eq!(n, questions);
    assert_eq!(again, out.report.metrics["dev"]);
}

/// STS-B (a GLUE regression task) from the Hub's parquet layout: a one-label head trained
/// with MSE, Pearson/Spearman on dev, and `evaluate_model` on the export reproduces them.
fn glue_regression_from_parquet(tmp: &Path, model: &Path) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/parquet");
    let text = format!(
        r#"
model:
  source: {model}
  head: classification
data:
  task: glue/stsb
  train: {train}
  dev: {train}
  max_seq_length: 32
training:
  batch_size: 8
optimizer:
  name: sgd
  lr: 1.0e-2
  momentum: 0.9
training_modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: 2
"#,
        model = model.display(),
        train = data.join("glue-stsb-train.parquet").display()
    );
    let path = tmp.join("stsb.yaml");
    std::fs::write(&path, text).unwrap();
    let recipe = Recipe::load(&path, &[]).unwrap();
    let out = finished(start(&recipe, &tmp.join("stsb"), false, None));
    let rows = shears::data::glue::load_glue_file(
        data.join("glue-stsb-train.parquet"),
        shears::data::glue::GlueTask::Stsb,
    )
    .unwrap()
    .examples
    .len();
    assert_eq!(out.report.steps, 2 * rows.div_ceil(8) as u64);
    let keys: Vec<&String> = out.report.metrics["dev"].keys().collect();
    assert_eq!(keys, ["pearson", "spearmanr"]);
    assert_eq!(out.report.sparsity.global, 0.0);
    assert!(out.dense.is_none());
    let (again, n) = evaluate_model(
        &recipe,
        &tmp.join("stsb/model"),
        DeviceSpec::FLEX,
        Path::new("."),
    )
    .unwrap();
    assert_eq!(n, rows);
    assert_eq!(again, out.report.metrics["dev"]);

    // A missing data file is an error naming it.
    let bad = Recipe::load(
        &path,
        &["data.train=nowhere/train.parquet".parse().unwrap()],
    )
    .unwrap();
    let dir = RunDir::prepare(tmp.join("bad"), &bad, false).unwrap();
    let e = run(
        &bad,
        &EngineOptions {
            run_dir: dir.path,
            device: DeviceSpec::FLEX,
            resume: false,
            base_dir: PathBuf::from("."),
            stop_after: None,
            interrupt: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nowhere/train.parquet"), "{e}");
}

/// Training on a split without labels (a GLUE test file, labels -1 or absent) is a clear
/// error naming the example, not a crash in the loss.
#[test]
fn unlabelled_training_examples_are_refused() {
    use shears::data::{Label, TextExample};
    use shears::train::task::{SequenceClassificationTask, TaskKind, TextSplits};
    let tokenizer =
        shears_models::bert::BertTokenizer::from_file(minilm_dir().join("tokenizer.json"))
            .expect("run scripts/fetch-assets.sh minilm-l6");
    let ex = |id: &str, label| TextExample {
        id: id.into(),
        text: "a fine film".into(),
        text_pair: None,
        label,
    };
    let splits = TextSplits {
        train: vec![ex("t0", Label::Class(1)), ex("test-7", Label::Missing)],
        dev: vec![ex("d0", Label::Class(0))],
        other_dev: Vec::new(),
        dropped: 0,
    };
    let e = SequenceClassificationTask::new(
        TaskKind::TextClassification,
        &splits,
        &tokenizer,
        16,
        2,
        8,
    )
    .expect_err("an unlabelled training example must be refused")
    .to_string();
    assert!(
        e.starts_with("data.train: training example test-7 has no label"),
        "{e}"
    );
}

/// CrAM+ (AdamW base, sampled sparsities, on top of GMP and distillation): a run stopped
/// and resumed equals the uninterrupted one bit for bit (the level is a function of seed
/// and step, the perturbed pass reuses the step's dropout), and GMP's pruned weights stay
/// exactly zero through the perturbed passes.
#[test]
fn cram_runs_resume_exactly_and_keep_the_pruned_weights_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let data = tmp.path().join("sentences.tsv");
    data_file(&data);
    let text = recipe_text(&model, &data).replace(
        "pruning_modifiers:\n",
        "  - !CrAMModifier\n    rho: 0.05\n    sparsities: [0.5, 0.7]\n    params: ['re:bert\\.encoder\\.layer\\.\\d+\\..*\\.weight$']\n    ignore: ['re:.*LayerNorm.*']\n    end_epoch: 3\npruning_modifiers:\n",
    );
    let path = tmp.path().join("recipe.yaml");
    std::fs::write(&path, &text).unwrap();
    let recipe = Recipe::load(&path, &[]).unwrap();
    assert!(
        recipe
            .modifiers
            .iter()
            .any(|m| m.modifier.tag() == "CrAMModifier")
    );

    let a_dir = tmp.path().join("a");
    let a = finished(start(&recipe, &a_dir, false, None));
    let spe = (a.history[0].step as f64 / a.history[0].epoch).round() as u64;
    let b_dir = tmp.path().join("b");
    assert!(matches!(
        start(&recipe, &b_dir, false, Some(spe + 1)),
        RunEnd::Stopped { .. }
    ));
    let b = finished(start(&recipe, &b_dir, true, None));
    assert!(
        same_safetensors(
            &a_dir.join("model/model.safetensors"),
            &b_dir.join("model/model.safetensors")
        ),
        "the resumed CrAM run differs from the uninterrupted one"
    );
    assert_eq!(a.history, b.history);

    // The plain run (no CrAM) ends elsewhere: the rule did act.
    let plain_path = tmp.path().join("plain.yaml");
    std::fs::write(&plain_path, recipe_text(&model, &data)).unwrap();
    let plain = Recipe::load(&plain_path, &[]).unwrap();
    let p_dir = tmp.path().join("p");
    finished(start(&plain, &p_dir, false, None));
    assert!(!same_safetensors(
        &a_dir.join("model/model.safetensors"),
        &p_dir.join("model/model.safetensors")
    ));

    let numel = 2 * (4 * 32 * 32 + 2 * 32 * 64);
    let file = SparsityReport::from_safetensors(&a_dir.join("model/model.safetensors")).unwrap();
    let zeros: usize = file
        .params
        .iter()
        .filter(|p| a.report.sparsity.params.contains_key(&p.name))
        .map(|p| p.zeros)
        .sum();
    assert_eq!(zeros, pruned_count(0.65, numel));
}

/// `!OBSPruningModifier` (oBERT) in the loop: gradual OBS with recomputations and a
/// sparsity-indexed `num_grads` reaches the target exactly, and a resumed run equals the
/// uninterrupted one bit for bit (the Fisher's mini-batches depend on the seed and the step).
#[test]
fn obs_pruning_runs_reach_the_target_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let data = tmp.path().join("sentences.tsv");
    data_file(&data);
    let text = recipe_text(&model, &data)
        .replace("  - !GlobalMagnitudePruningModifier\n", "  - !OBSPruningModifier\n")
        .replace(
            "    update_frequency: 0.5\n",
            "    update_frequency: 0.5\n    num_grads: {0.0: 4, 0.5: 6}\n    damp: 1.0e-4\n    fisher_block_size: 16\n    num_recomputations: 2\n    grad_sampler_kwargs: {batch_size: 4}\n",
        );
    let path = tmp.path().join("recipe.yaml");
    std::fs::write(&path, &text).unwrap();
    let recipe = Recipe::load(&path, &[]).unwrap();
    let a_dir = tmp.path().join("a");
    let a = finished(start(&recipe, &a_dir, false, None));
    let spe = (a.history[0].step as f64 / a.history[0].epoch).round() as u64;
    let b_dir = tmp.path().join("b");
    assert!(matches!(
        start(&recipe, &b_dir, false, Some(spe + 2)),
        RunEnd::Stopped { .. }
    ));
    let b = finished(start(&recipe, &b_dir, true, None));
    assert!(
        same_safetensors(
            &a_dir.join("model/model.safetensors"),
            &b_dir.join("model/model.safetensors")
        ),
        "the resumed OBS run differs from the uninterrupted one"
    );
    assert_eq!(a.history, b.history);
    let numel = 2 * (4 * 32 * 32 + 2 * 32 * 64);
    let file = SparsityReport::from_safetensors(&a_dir.join("model/model.safetensors")).unwrap();
    let zeros: usize = file
        .params
        .iter()
        .filter(|p| a.report.sparsity.params.contains_key(&p.name))
        .map(|p| p.zeros)
        .sum();
    assert_eq!(zeros, pruned_count(0.65, numel));
    // OBS moved the weights it kept: the result differs from magnitude pruning's.
    let gmp_path = tmp.path().join("gmp.yaml");
    std::fs::write(&gmp_path, recipe_text(&model, &data)).unwrap();
    let g_dir = tmp.path().join("g");
    finished(start(
        &Recipe::load(&gmp_path, &[]).unwrap(),
        &g_dir,
        false,
        None,
    ));
    assert!(!same_safetensors(
        &a_dir.join("model/model.safetensors"),
        &g_dir.join("model/model.safetensors")
    ));
}

/// The M-FAC optimizer in the loop, with GMP and distillation: pruned weights stay exactly
/// zero, and a run resumed from a checkpoint (window and momentum restored, the Gram matrix
/// rebuilt) equals the uninterrupted run bit for bit.
#[test]
fn mfac_runs_keep_sparsity_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let data = tmp.path().join("sentences.tsv");
    data_file(&data);
    let text = recipe_text(&model, &data).replace(
        "optimizer:\n  name: adamw\n  lr: 1.0e-3\n  weight_decay: 0.01\n",
        "optimizer:\n  name: mfac\n  lr: 1.0e-3\n  weight_decay: 0.01\n  momentum: 0.5\n  num_grads: 4\n  damp: 1.0e-2\n",
    );
    assert!(text.contains("name: mfac"));
    let path = tmp.path().join("recipe.yaml");
    std::fs::write(&path, &text).unwrap();
    let recipe = Recipe::load(&path, &[]).unwrap();
    let a_dir = tmp.path().join("a");
    let a = finished(start(&recipe, &a_dir, false, None));
    let spe = (a.history[0].step as f64 / a.history[0].epoch).round() as u64;
    let b_dir = tmp.path().join("b");
    assert!(matches!(
        start(&recipe, &b_dir, false, Some(spe + 3)),
        RunEnd::Stopped { .. }
    ));
    let b = finished(start(&recipe, &b_dir, true, None));
    assert!(
        same_safetensors(
            &a_dir.join("model/model.safetensors"),
            &b_dir.join("model/model.safetensors")
        ),
        "the resumed M-FAC run differs from the uninterrupted one"
    );
    assert_eq!(a.history, b.history);
    let numel = 2 * (4 * 32 * 32 + 2 * 32 * 64);
    let file = SparsityReport::from_safetensors(&a_dir.join("model/model.safetensors")).unwrap();
    let zeros: usize = file
        .params
        .iter()
        .filter(|p| a.report.sparsity.params.contains_key(&p.name))
        .map(|p| p.zeros)
        .sum();
    assert_eq!(zeros, pruned_count(0.65, numel));
    assert!(a.last.metrics.values().all(|v| v.is_finite()));

    // M-FAC settings on another optimizer are refused when the recipe loads, naming the fix.
    let wrong = text.replace("name: mfac", "name: sgd");
    std::fs::write(&path, wrong).unwrap();
    let e = Recipe::load(&path, &[]).expect_err("refused").to_string();
    assert!(
        e.contains("optimizer.num_grads") && e.contains("set `name: mfac`"),
        "{e}"
    );
}

/// `shears export` of a run: the final checkpoint exported as `hf` equals the run's own
/// export; an earlier checkpoint exported `compressed` reads back to that checkpoint's
/// weights; a `burn` record loads into the shears-models module with the same values.
#[test]
fn runs_export_from_any_checkpoint_in_every_format() {
    use burn::store::{BurnpackStore, ModuleSnapshot};
    use shears::train::export::{ExportFormat, RunPoint, export_run};
    use shears_models::bert::BertArchitecture;
    use shears_models::bert::weights::collect_hf_tensors;
    use shears_models::weights::Checkpoint;

    let tmp = tempfile::tempdir().unwrap();
    let (recipe, _, _) = tiny_recipe(tmp.path());
    let run_dir = tmp.path().join("run");
    let a = finished(start(&recipe, &run_dir, false, None));
    let base = Path::new(".");

    let hf = tmp.path().join("hf");
    let done = export_run(
        &run_dir,
        RunPoint::Step(a.report.steps),
        ExportFormat::Hf,
        &hf,
        base,
    )
    .unwrap();
    assert_eq!(done.step, Some(a.report.steps));
    assert!(same_safetensors(
        &hf.join("model.safetensors"),
        &run_dir.join("model/model.safetensors")
    ));
    assert_eq!(
        bytes(&hf.join("config.json")),
        bytes(&run_dir.join("model/config.json"))
    );
    assert!(hf.join("tokenizer.json").is_file());

    // The checkpoint before the last (the last two are kept), compressed.
    let earlier = a.report.steps - 4;
    let ckpt_file = run_dir.join(format!("checkpoints/step-{earlier:09}/model.safetensors"));
    let comp = tmp.path().join("comp");
    let done = export_run(
        &run_dir,
        RunPoint::Step(earlier),
        ExportFormat::Compressed,
        &comp,
        base,
    )
    .unwrap();
    let c = done.compressed.unwrap();
    assert!(!c.compressed.is_empty() && c.compressed_bytes < c.dense_bytes);
    let ckpt = Checkpoint::read(&ckpt_file).unwrap();
    let back = Checkpoint::read(comp.join("model.safetensors")).unwrap();
    assert_eq!(
        back.keys().collect::<Vec<_>>(),
        ckpt.keys().collect::<Vec<_>>()
    );
    // Equal as numbers (a masked negative weight is -0.0 in the checkpoint; the format
    // stores zeros as absent, read back +0.0).
    let values = |c: &Checkpoint, k: &str| -> Vec<f32> {
        c.get(k)
            .unwrap()
            .data
            .clone()
            .unwrap()
            .try_to_vec::<f32>()
            .unwrap()
    };
    for k in ckpt.keys() {
        assert_eq!(values(&back, k), values(&ckpt, k), "{k}");
    }
    let sparse = SparsityReport::from_safetensors(&comp.join("model.safetensors")).unwrap();
    let dense = SparsityReport::from_safetensors(&ckpt_file).unwrap();
    assert_eq!(sparse.params, dense.params);
    // A step without a checkpoint is an error listing the ones there are.
    let e = export_run(
        &run_dir,
        RunPoint::Step(5),
        ExportFormat::Hf,
        &tmp.path().join("x"),
        base,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no checkpoint of step 5") && e.contains("24"),
        "{e}"
    );

    // The final model as a burn record.
    let rec = tmp.path().join("burn");
    export_run(&run_dir, RunPoint::Default, ExportFormat::Burn, &rec, base).unwrap();
    assert!(!rec.join("model.safetensors").exists());
    let config = BertConfig::from_file(rec.join("config.json")).unwrap();
    let device = Device::flex();
    let mut loaded = {
        let _rng = shears::rng::seeded(&device, 1);
        let m = BertForSequenceClassification::from_config(&config, &device);
        shears::rng::materialize(&m);
        m
    };
    let result = loaded
        .load_from(&mut BurnpackStore::from_file(rec.join("model.bpk")))
        .unwrap();
    assert!(result.missing.is_empty(), "{result:?}");
    let want = Checkpoint::read(run_dir.join("model/model.safetensors")).unwrap();
    for (k, shape, values) in collect_hf_tensors(&loaded) {
        let t = want.get(&k).unwrap_or_else(|| panic!("{k}"));
        assert_eq!(t.shape, shape, "{k}");
        assert_eq!(
            t.data.clone().unwrap().try_to_vec::<f32>().unwrap(),
            values,
            "{k}"
        );
    }
    // `shears sparsity` reads the record (under burn's parameter paths): the pruned
    // tensors have the same sizes and zero counts as in the HF export.
    let pruned = |r: &SparsityReport| {
        let mut v: Vec<(usize, usize)> = r
            .params
            .iter()
            .filter(|p| p.zeros > 0)
            .map(|p| (p.numel, p.zeros))
            .collect();
        v.sort();
        v
    };
    let from_record = SparsityReport::from_burnpack(&rec.join("model.bpk")).unwrap();
    let from_hf =
        SparsityReport::from_safetensors(&run_dir.join("model/model.safetensors")).unwrap();
    assert!(!pruned(&from_hf).is_empty());
    assert_eq!(pruned(&from_record), pruned(&from_hf));
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["sparsity", "--json"])
        .arg(&rec)
        .output()
        .unwrap();
    assert!(cli.status.success(), "{cli:?}");
    let json: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert!(json.to_string().contains("encoder"), "{json}");

    // `eval` reads the record directory like the HF export: the same metrics.
    let (on_record, n) = evaluate_model(&recipe, &rec, DeviceSpec::FLEX, base).unwrap();
    let (on_hf, n_hf) =
        evaluate_model(&recipe, &run_dir.join("model"), DeviceSpec::FLEX, base).unwrap();
    assert_eq!((on_record, n), (on_hf, n_hf));
    // So does `infer`: the same logits, to the digit.
    let input = tmp.path().join("input.txt");
    std::fs::write(
        &input,
        "{\"text\": \"a fine film\"}\n{\"text\": \"not good at all\"}\n",
    )
    .unwrap();
    let infer = |model: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shears"))
            .args(["infer", "--task", "classify", "--model"])
            .arg(model)
            .arg("--input")
            .arg(&input)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let from_record = infer(&rec);
    assert!(from_record.lines().count() == 2, "{from_record}");
    assert_eq!(from_record, infer(&run_dir.join("model")));
    // A record of another configuration is an error naming the file, not a panic.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["config.json", "vocab.txt"] {
        if rec.join(f).exists() {
            std::fs::copy(rec.join(f), other.join(f)).unwrap();
        }
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rec.join("config.json")).unwrap()).unwrap();
    cfg["num_hidden_layers"] = serde_json::json!(cfg["num_hidden_layers"].as_u64().unwrap() + 1);
    std::fs::write(other.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(rec.join("model.bpk"), other.join("model.bpk")).unwrap();
    let e = evaluate_model(&recipe, &other, DeviceSpec::FLEX, base)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.bpk") && e.contains("issing"), "{e}");
}

/// Several dev sets (`data.dev: {name: file, ...}`): each is evaluated, the first under
/// the plain metric names, the others as `name/metric`. Checked against identities: the
/// second set is the first with every label flipped, so its accuracy is one minus the
/// first's; and `evaluate_model` on each file alone gives the same figures.
#[test]
fn several_dev_sets_are_each_evaluated_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let data = tmp.path().join("sentences.tsv");
    data_file(&data);
    let flipped = tmp.path().join("flipped.tsv");
    let text = std::fs::read_to_string(&data).unwrap();
    let mut lines = text.lines();
    let mut out = format!("{}\n", lines.next().unwrap());
    for l in lines {
        let (rest, label) = l.rsplit_once('\t').unwrap();
        out.push_str(&format!("{rest}\t{}\n", 1 - label.parse::<u8>().unwrap()));
    }
    std::fs::write(&flipped, out).unwrap();
    let recipe_text = |dev: &str| {
        format!(
            r#"
model:
  source: {model}
  head: classification
  num_labels: 2
data:
  task: text-classification
  train: {data}
  dev: {dev}
  id_column: id
  text_column: text
  label_column: label
  max_seq_length: 32
training:
  batch_size: 16
optimizer:
  name: adamw
  lr: 1.0e-3
training_modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: 1
"#,
            model = model.display(),
            data = data.display(),
        )
    };
    let path = tmp.path().join("two-devs.yaml");
    std::fs::write(
        &path,
        recipe_text(&format!(
            "{{orig: {}, flipped: {}}}",
            data.display(),
            flipped.display()
        )),
    )
    .unwrap();
    let recipe = Recipe::load(&path, &[]).unwrap();
    let run = finished(start(&recipe, &tmp.path().join("run"), false, None));
    let dev = &run.report.metrics["dev"];
    let keys: Vec<&str> = dev.keys().map(String::as_str).collect();
    assert_eq!(keys, ["accuracy", "f1", "flipped/accuracy", "flipped/f1"]);
    assert!((dev["flipped/accuracy"] - (1.0 - dev["accuracy"])).abs() < 1e-12);
    for (file, prefix) in [(&data, ""), (&flipped, "flipped/")] {
        let single = tmp.path().join("single.yaml");
        std::fs::write(&single, recipe_text(&file.display().to_string())).unwrap();
        let (metrics, n) = evaluate_model(
            &Recipe::load(&single, &[]).unwrap(),
            &tmp.path().join("run/model"),
            DeviceSpec::FLEX,
            Path::new("."),
        )
        .unwrap();
        assert_eq!(n, 120);
        for (k, v) in metrics {
            assert_eq!(dev[&format!("{prefix}{k}")], v, "{prefix}{k}");
        }
    }

    // Several dev sets where a task has one, and a dev set named twice: errors at the key.
    let squad = tmp.path().join("squad.yaml");
    std::fs::write(
        &squad,
        "data:\n  task: squad\n  train: t.json\n  dev: {a: a.json, b: b.json}\n",
    )
    .unwrap();
    let e = Recipe::load(&squad, &[]).unwrap_err().to_string();
    assert!(
        e.contains("squad.yaml:4") && e.contains("several dev sets"),
        "{e}"
    );
}
