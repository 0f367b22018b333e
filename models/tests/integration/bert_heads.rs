//! Task heads, checkpoint variants (`bert.` prefix, `pytorch_model.bin`, missing / unexpected
//! heads, legacy names) and HF export round trips, on tiny random models whose reference
//! logits come from transformers (`tests/fixtures/gen_bert_reference.py`).

use crate::bert_common;

use std::collections::BTreeMap;

use bert_common::*;
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use shears_models::bert::weights::{Checkpoint, collect_hf_tensors, load_into};
use shears_models::bert::{
    BertConfig, BertError, BertForQuestionAnswering, BertForSequenceClassification, BertModel,
    ClassificationTargets, ModelSource, load_pretrained, save_pretrained,
};

fn tiny_cls_dir() -> std::path::PathBuf {
    fixtures().join("tiny_cls")
}
fn tiny_qa_dir() -> std::path::PathBuf {
    fixtures().join("tiny_qa")
}

fn load_cls(device: &Device) -> (BertForSequenceClassification, BertConfig) {
    let files = ModelSource::Local(tiny_cls_dir()).resolve().unwrap();
    let p = load_pretrained::<BertForSequenceClassification>(&files, device).unwrap();
    assert!(p.report.is_exact(), "{}", p.report);
    (p.model, p.config)
}

#[test]
fn classifier_from_pytorch_bin_with_bert_prefix_matches_transformers() {
    let device = Device::flex();
    let reference = read_json("tiny_cls_reference.json");
    let (model, config) = load_cls(&device);
    assert_eq!(config.num_labels(), 3);
    assert_eq!(model.num_labels(), 3);
    let logits = model.forward(&fixture_batch(&reference, &device)).logits;
    assert_eq!(logits.dims(), [3, 3]);
    assert_close(
        "classifier logits",
        &values(logits),
        &flat_f32(&reference["logits"]),
        1e-5,
    );
}

#[test]
fn qa_from_safetensors_with_bert_prefix_matches_transformers() {
    let device = Device::flex();
    let reference = read_json("tiny_qa_reference.json");
    let files = ModelSource::Local(tiny_qa_dir()).resolve().unwrap();
    let p = load_pretrained::<BertForQuestionAnswering>(&files, &device).unwrap();
    assert!(p.report.is_exact(), "{}", p.report);
    let out = p.model.forward(&fixture_batch(&reference, &device));
    assert_close(
        "start logits",
        &values(out.start_logits),
        &flat_f32(&reference["start_logits"]),
        1e-5,
    );
    assert_close(
        "end logits",
        &values(out.end_logits),
        &flat_f32(&reference["end_logits"]),
        1e-5,
    );
}

#[test]
fn backbone_from_a_classifier_checkpoint_reports_the_unused_head() {
    let device = Device::flex();
    let ckpt = Checkpoint::read(tiny_cls_dir().join("pytorch_model.bin")).unwrap();
    let config = BertConfig::from_file(tiny_cls_dir().join("config.json")).unwrap();
    let (_, report) = load_into(BertModel::new(&config, true, &device), &ckpt).unwrap();
    assert_eq!(
        report.unexpected,
        vec!["classifier.bias", "classifier.weight"]
    );
    assert!(report.initialized.is_empty());
    // Every backbone tensor sits under `bert.` in the file.
    assert_eq!(report.prefix_adjusted, report.loaded.len());
    assert_eq!(report.loaded.len(), ckpt.keys().count() - 2);
}

#[test]
fn classifier_from_a_qa_checkpoint_initialises_pooler_and_head_and_reports_them() {
    let device = Device::flex();
    let ckpt = Checkpoint::read(tiny_qa_dir().join("model.safetensors")).unwrap();
    let config = BertConfig::from_file(tiny_qa_dir().join("config.json")).unwrap();
    let (_, report) =
        load_into(BertForSequenceClassification::new(&config, &device), &ckpt).unwrap();
    assert_eq!(
        report.initialized,
        vec![
            "bert.pooler.dense.weight",
            "bert.pooler.dense.bias",
            "classifier.weight",
            "classifier.bias"
        ]
    );
    assert_eq!(
        report.unexpected,
        vec!["qa_outputs.bias", "qa_outputs.weight"]
    );
    assert!(!report.is_exact());
}

#[test]
fn wrong_number_of_labels_is_a_shape_error_naming_file_and_key() {
    let device = Device::flex();
    let ckpt = Checkpoint::read(tiny_cls_dir().join("pytorch_model.bin")).unwrap();
    let config = BertConfig::from_file(tiny_cls_dir().join("config.json"))
        .unwrap()
        .with_num_labels(5);
    let err = load_into(BertForSequenceClassification::new(&config, &device), &ckpt).unwrap_err();
    match &err {
        BertError::ShapeMismatch {
            path,
            key,
            expected,
            found,
        } => {
            assert!(path.ends_with("tiny_cls/pytorch_model.bin"));
            assert_eq!(key, "classifier.weight");
            assert_eq!(expected, &vec![5, 32]);
            assert_eq!(found, &vec![3, 32]);
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("pytorch_model.bin"));
}

/// The tiny classifier's tensors as an in-memory checkpoint, with `edit` applied to the keys.
fn edited_checkpoint(edit: impl Fn(&str) -> Option<String>) -> Checkpoint {
    let device = Device::flex();
    let (model, _) = load_cls(&device);
    Checkpoint::from_f32(
        "edited.safetensors",
        collect_hf_tensors(&model)
            .into_iter()
            .filter_map(|(k, s, v)| edit(&k).map(|k| (k, s, v))),
    )
}

#[test]
fn missing_backbone_tensor_is_an_error_listing_it() {
    let device = Device::flex();
    let config = BertConfig::from_file(tiny_cls_dir().join("config.json")).unwrap();
    let ckpt = edited_checkpoint(|k| {
        (k != "bert.encoder.layer.1.attention.self.key.bias").then(|| k.to_string())
    });
    match load_into(BertForSequenceClassification::new(&config, &device), &ckpt) {
        Err(BertError::MissingKeys { keys, .. }) => {
            assert_eq!(keys, vec!["bert.encoder.layer.1.attention.self.key.bias"])
        }
        other => panic!("expected MissingKeys, got {other:?}"),
    }
}

#[test]
fn legacy_gamma_beta_names_and_no_prefix_load_to_the_same_logits() {
    let device = Device::flex();
    let reference = read_json("tiny_cls_reference.json");
    let config = BertConfig::from_file(tiny_cls_dir().join("config.json")).unwrap();
    let ckpt = edited_checkpoint(|k| {
        let k = k.strip_prefix("bert.").unwrap_or(k);
        Some(
            k.replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta"),
        )
    });
    let (model, report) =
        load_into(BertForSequenceClassification::new(&config, &device), &ckpt).unwrap();
    assert!(report.is_exact(), "{report}");
    // 1 embedding norm + 2 per layer, weight and bias each.
    assert_eq!(report.legacy_names.len(), 2 * (1 + 2 * 2));
    let logits = model.forward(&fixture_batch(&reference, &device)).logits;
    assert_close(
        "logits",
        &values(logits),
        &flat_f32(&reference["logits"]),
        1e-5,
    );
}

#[test]
fn export_writes_exactly_the_hf_keys_and_shapes() {
    let device = Device::flex();
    let (model, config) = load_cls(&device);
    let dir = tempfile::tempdir().unwrap();
    save_pretrained(&model, &config, dir.path()).unwrap();
    let hf = Checkpoint::read(tiny_cls_dir().join("pytorch_model.bin")).unwrap();
    let ours = Checkpoint::read(dir.path().join("model.safetensors")).unwrap();
    let shapes = |c: &Checkpoint| -> BTreeMap<String, Vec<usize>> {
        c.keys()
            .map(|k| (k.to_string(), c.get(k).unwrap().shape.clone()))
            .collect()
    };
    assert_eq!(shapes(&ours), shapes(&hf));
    // Values are the HF values, bit for bit.
    for key in hf.keys() {
        let a = hf.get(key).unwrap().data.as_ref().unwrap();
        let b = ours.get(key).unwrap().data.as_ref().unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes(), "{key}");
    }
    let exported = BertConfig::from_file(dir.path().join("config.json")).unwrap();
    assert_eq!(exported.num_labels(), 3);
    assert_eq!(exported.hidden_size, config.hidden_size);
    assert_eq!(
        exported.extra["architectures"],
        serde_json::json!(["BertForSequenceClassification"])
    );
}

fn random_batch(device: &Device) -> shears_models::bert::BertInput {
    let reference = read_json("tiny_cls_reference.json");
    fixture_batch(&reference, device)
}

#[test]
fn random_classifier_round_trips_through_export_with_identical_logits() {
    let device = Device::flex();
    device.seed(7);
    let config = BertConfig::from_file(tiny_cls_dir().join("config.json"))
        .unwrap()
        .with_num_labels(4);
    let model = BertForSequenceClassification::new(&config, &device);
    let input = random_batch(&device);
    let before = values(model.forward(&input).logits);
    let dir = tempfile::tempdir().unwrap();
    save_pretrained(&model, &config, dir.path()).unwrap();
    let files = ModelSource::Local(dir.path().to_path_buf())
        .resolve()
        .unwrap();
    let p = load_pretrained::<BertForSequenceClassification>(&files, &device).unwrap();
    assert!(p.report.is_exact(), "{}", p.report);
    assert_eq!(p.config.num_labels(), 4);
    let after = values(p.model.forward(&input).logits);
    assert_eq!(before, after);
}

#[test]
fn random_qa_model_round_trips_through_export_with_identical_logits() {
    let device = Device::flex();
    device.seed(11);
    let config = BertConfig::from_file(tiny_qa_dir().join("config.json")).unwrap();
    let model = BertForQuestionAnswering::new(&config, &device);
    let input = random_batch(&device);
    let before = model.forward(&input);
    let dir = tempfile::tempdir().unwrap();
    save_pretrained(&model, &config, dir.path()).unwrap();
    let files = ModelSource::Local(dir.path().to_path_buf())
        .resolve()
        .unwrap();
    let p = load_pretrained::<BertForQuestionAnswering>(&files, &device).unwrap();
    assert!(p.report.is_exact(), "{}", p.report);
    let after = p.model.forward(&input);
    assert_eq!(values(before.start_logits), values(after.start_logits));
    assert_eq!(values(before.end_logits), values(after.end_logits));
    // The QA model has no pooler, like HF's.
    let ckpt = Checkpoint::read(dir.path().join("model.safetensors")).unwrap();
    assert!(ckpt.keys().all(|k| !k.contains("pooler")));
    assert!(
        ckpt.get("qa_outputs.weight")
            .is_some_and(|t| t.shape == vec![2, 32])
    );
}

#[test]
fn dropout_is_active_only_in_training() {
    let device = Device::flex();
    let (model, _) = load_cls(&device);
    let input = random_batch(&device);
    let eval = values(model.forward(&input).logits);
    assert_eq!(eval, values(model.forward(&input).logits));

    let ad = device.autodiff();
    let train = model.fork(&ad);
    let input_ad = random_batch(&ad);
    let t1 = values(train.forward(&input_ad).logits);
    let t2 = values(train.forward(&input_ad).logits);
    assert_ne!(t1, t2, "dropout must change training outputs");
    let valid = train.valid();
    let v = values(valid.forward(&input_ad).logits);
    assert_close("valid() logits", &v, &eval, 1e-6);
}

#[test]
fn losses_follow_their_definitions() {
    let device = Device::flex();
    let config = BertConfig::from_file(tiny_cls_dir().join("config.json")).unwrap();
    let model = BertForSequenceClassification::new(&config, &device);
    let logits_v = [0.5f32, -1.0, 2.0, 0.0, 0.3, -0.7];
    let logits = || Tensor::<2>::from_data(TensorData::new(logits_v.to_vec(), [2, 3]), &device);

    // Cross-entropy: mean of -log softmax(row)[label].
    let labels = Tensor::<1, Int>::from_data([2i64, 0], &device);
    let ce = values(model.loss(logits(), ClassificationTargets::Labels(labels)))[0];
    let lse = |r: &[f32]| r.iter().map(|x| x.exp()).sum::<f32>().ln();
    let expected =
        ((lse(&logits_v[0..3]) - logits_v[2]) + (lse(&logits_v[3..6]) - logits_v[3])) / 2.0;
    assert!((ce - expected).abs() < 1e-5, "{ce} vs {expected}");

    // Multi-label: mean over all entries of softplus(x) - t x.
    let targets = [1.0f32, 0.0, 1.0, 0.0, 0.0, 1.0];
    let t = Tensor::<2>::from_data(TensorData::new(targets.to_vec(), [2, 3]), &device);
    let bce = values(model.loss(logits(), ClassificationTargets::MultiLabel(t)))[0];
    let expected: f32 = logits_v
        .iter()
        .zip(targets)
        .map(|(x, t)| (1.0 + x.exp()).ln() - t * x)
        .sum::<f32>()
        / 6.0;
    assert!((bce - expected).abs() < 1e-5, "{bce} vs {expected}");

    // Regression: mean squared error.
    let y = [1.0f32, 1.0, 1.0, -1.0, -1.0, -1.0];
    let t = Tensor::<2>::from_data(TensorData::new(y.to_vec(), [2, 3]), &device);
    let mse = values(model.loss(logits(), ClassificationTargets::Regression(t)))[0];
    let expected: f32 = logits_v
        .iter()
        .zip(y)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f32>()
        / 6.0;
    assert!((mse - expected).abs() < 1e-6, "{mse} vs {expected}");
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("model.safetensors");
    std::fs::write(&bad, b"not a safetensors file").unwrap();
    let err = Checkpoint::read(&bad).unwrap_err();
    assert!(matches!(err, BertError::Checkpoint { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"));

    let bin = dir.path().join("pytorch_model.bin");
    std::fs::write(&bin, b"garbage").unwrap();
    let err = Checkpoint::read(&bin).unwrap_err();
    assert!(err.to_string().contains("pytorch_model.bin"), "{err}");

    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"vocab_size": 10, "hidden_size": 30, "num_hidden_layers": 1,
            "num_attention_heads": 4, "intermediate_size": 8}"#,
    )
    .unwrap();
    match BertConfig::from_file(&cfg) {
        Err(BertError::InvalidConfig { path, reason }) => {
            assert_eq!(path, cfg);
            assert!(reason.contains("num_attention_heads"), "{reason}");
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    std::fs::write(&cfg, r#"{"vocab_size": 10, "hidden_act": "tanhh"}"#).unwrap();
    assert!(matches!(
        BertConfig::from_file(&cfg),
        Err(BertError::ConfigParse { .. })
    ));
    // A directory without weights.
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(
        tiny_cls_dir().join("config.json"),
        empty.path().join("config.json"),
    )
    .unwrap();
    match ModelSource::Local(empty.path().to_path_buf()).resolve() {
        Err(BertError::MissingFile { what, .. }) => assert_eq!(what, "weights"),
        other => panic!("expected MissingFile, got {other:?}"),
    }
}
