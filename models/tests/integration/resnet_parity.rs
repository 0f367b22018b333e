//! Parity of the ResNets with PyTorch (reference: `tests/fixtures/resnet/gen_resnet.py`):
//! the pretrained CIFAR-10 ResNet-20/56 on real test images, a torchvision-layout ResNet-18
//! with deterministic weights, train-mode and recalibration batch norm, and a `torch.save`
//! state dict.

use crate::resnet_common;

use burn::tensor::{Device, Tensor, TensorData};
use resnet_common::*;
use serde_json::Value;
use shears_models::batch_norm::BnMode;
use shears_models::resnet::{ClassifierInit, ResNet, ResNetArch, ResNetConfig};
use shears_models::weights::Checkpoint;

fn devices() -> Vec<(&'static str, Device)> {
    vec![("flex", Device::flex()), ("ndarray", Device::ndarray())]
}

fn load_pretrained(arch: &str, file: &str, device: &Device) -> ResNet {
    let config = ResNetConfig::parse(arch).unwrap();
    let (model, report) = ResNet::load_file(
        &config,
        pretrained_cifar(file),
        ClassifierInit::Load,
        device,
    )
    .unwrap();
    assert!(report.is_exact(), "{report}");
    model
}

#[test]
fn pretrained_cifar_resnets_match_torch_on_cifar10_test_images() {
    let reference = reference();
    for (name, device) in devices() {
        let (x, labels) = cifar_test_images(8, &device);
        let want_labels: Vec<u8> = reference["cifar_labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(labels, want_labels);
        for (arch, file) in [
            ("resnet20", "resnet20-12fca82f.safetensors"),
            ("resnet56", "resnet56-4bfd9763.safetensors"),
        ] {
            let mut model = load_pretrained(arch, file, &device);
            model.set_bn_mode(BnMode::Eval);
            let logits = model.forward(x.clone());
            assert_eq!(logits.dims(), [8, 10]);
            let want = flat_f32(&reference[format!("{arch}_logits")]);
            assert_abs(&format!("{name} {arch}"), &values(logits), &want, 1e-4);
        }
    }
}

#[test]
fn torchvision_resnet18_with_deterministic_weights_matches_torch() {
    let reference = &reference()["resnet18_det"];
    let config = ResNetConfig::parse("resnet18").unwrap();
    assert_eq!(config.arch, ResNetArch::Torchvision18);
    assert_eq!(config.num_classes, 1000);
    let ckpt = det_checkpoint(&config);
    let n = 2 * 3 * 64 * 64;
    let input: Vec<f32> = (0..n)
        .map(|j| (0.1 * j as f64 + 0.3).sin() as f32)
        .collect();
    let columns: Vec<usize> = reference["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as usize)
        .collect();
    for (name, device) in devices() {
        let (model, report) = config
            .init(&device)
            .load_checkpoint(&ckpt, ClassifierInit::Load)
            .unwrap();
        assert!(report.is_exact(), "{report}");
        let model = model.with_bn_mode(BnMode::Eval);
        let x = Tensor::<4>::from_data(TensorData::new(input.clone(), [2, 3, 64, 64]), &device);
        let logits = values(model.forward(x));
        assert_eq!(logits.len(), 2000);
        let picked: Vec<f32> = (0..2)
            .flat_map(|r| columns.iter().map(move |&c| (r, c)))
            .map(|(r, c)| logits[r * 1000 + c])
            .collect();
        assert_abs(
            &format!("{name} resnet18 columns"),
            &picked,
            &flat_f32(&reference["logits_columns"]),
            1e-4,
        );
        let sums: Vec<f32> = logits.chunks(1000).map(|r| r.iter().sum()).collect();
        let sq: Vec<f32> = logits
            .chunks(1000)
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect();
        assert_abs(
            &format!("{name} resnet18 row sums"),
            &sums,
            &flat_f32(&reference["logits_row_sums"]),
            2e-3,
        );
        let want_sq = flat_f32(&reference["logits_row_sq_sums"]);
        for (g, w) in sq.iter().zip(&want_sq) {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs() + 1e-3,
                "{name}: Σ logit² {g} vs {w}"
            );
        }
    }
}

fn check_bn_stats(what: &str, model: &ResNet, want: &Value) {
    let bns = model.bn_layers();
    assert_eq!(
        bns.len(),
        want.as_object().unwrap().len(),
        "{what}: BN count"
    );
    for (name, bn) in bns {
        let w = &want[&name];
        assert_abs(
            &format!("{what} {name}.running_mean"),
            &values(bn.running_mean()),
            &flat_f32(&w["running_mean"]),
            1e-5,
        );
        assert_abs(
            &format!("{what} {name}.running_var"),
            &values(bn.running_var()),
            &flat_f32(&w["running_var"]),
            1e-5 * 10.0,
        );
        assert_eq!(
            bn.num_batches_tracked(),
            w["num_batches_tracked"].as_u64().unwrap(),
            "{what} {name}.num_batches_tracked"
        );
    }
}

#[test]
fn train_mode_batch_norm_matches_torch_output_and_running_stats() {
    let reference = &reference()["train_bn"];
    for (name, device) in devices() {
        let (x, _) = cifar_test_images(8, &device);
        let mut model = load_pretrained("resnet20", "resnet20-12fca82f.safetensors", &device);
        // Frozen statistics first: same output as Train, running statistics untouched.
        model.set_bn_mode(BnMode::TrainFrozenStats);
        let before = values(model.bn1.running_mean());
        let frozen = values(model.forward(x.clone()));
        assert_eq!(values(model.bn1.running_mean()), before);
        assert_eq!(model.bn1.num_batches_tracked(), 0);

        model.set_bn_mode(BnMode::Train);
        let logits = values(model.forward(x.clone()));
        let want = flat_f32(&reference["logits"]);
        assert_abs(&format!("{name} train logits"), &logits, &want, 1e-4);
        assert_abs(&format!("{name} frozen logits"), &frozen, &want, 1e-4);
        check_bn_stats(&format!("{name} train"), &model, &reference["bn"]);
    }
}

#[test]
fn train_mode_on_an_autodiff_device_matches_torch_too() {
    // `BnMode::Auto` trains on an autodiff device, and the statistics survive `valid()`.
    let reference = &reference()["train_bn"];
    let device = Device::flex().autodiff();
    let (x, _) = cifar_test_images(8, &device);
    let model = load_pretrained("resnet20", "resnet20-12fca82f.safetensors", &device);
    let logits = values(model.forward(x));
    assert_abs(
        "autodiff train logits",
        &logits,
        &flat_f32(&reference["logits"]),
        1e-4,
    );
    check_bn_stats("autodiff train", &model, &reference["bn"]);
    use burn::module::Module;
    let valid = model.valid();
    assert_abs(
        "running mean after valid()",
        &values(valid.bn1.running_mean()),
        &flat_f32(&reference["bn"]["bn1"]["running_mean"]),
        1e-5,
    );
}

#[test]
fn recalibration_is_torch_momentum_none_cumulative_average() {
    let reference = &reference()["recalibrate"];
    for (name, device) in devices() {
        let (x, _) = cifar_test_images(8, &device);
        let mut model = load_pretrained("resnet20", "resnet20-12fca82f.safetensors", &device);
        model.set_bn_mode(BnMode::Recalibrate);
        assert_eq!(model.bn1.num_batches_tracked(), 0);
        let _ = model.forward(x.clone().narrow(0, 0, 4));
        let _ = model.forward(x.clone().narrow(0, 4, 4));
        check_bn_stats(&format!("{name} recalibrate"), &model, &reference["bn"]);
        model.set_bn_mode(BnMode::Eval);
        let logits = values(model.forward(x));
        assert_abs(
            &format!("{name} eval after recalibration"),
            &logits,
            &flat_f32(&reference["eval_logits"]),
            1e-4,
        );
    }
}

#[test]
fn torch_saved_state_dict_loads_and_matches_its_safetensors_twin() {
    let reference = reference();
    let device = Device::flex();
    let config = ResNetConfig::parse("resnet20b").unwrap();
    let pth = fixtures().join("resnet20b_det.pth");
    let ckpt = Checkpoint::read(&pth).unwrap();
    assert!(ckpt.keys().any(|k| k == "layer2.0.shortcut.0.weight"));
    let (from_pth, report) = config
        .init(&device)
        .load_checkpoint(&ckpt, ClassifierInit::Load)
        .unwrap();
    assert!(report.is_exact(), "{report}");
    // 19 batch norms + 2 option-B shortcut BNs, each with a `num_batches_tracked`.
    assert_eq!(report.skipped_buffers.len(), 21, "{report}");

    // The twin: the same formula written as safetensors by us, read back.
    let dir = tempfile::tempdir().unwrap();
    let (det, _) = config
        .init(&device)
        .load_checkpoint(&det_checkpoint(&config), ClassifierInit::Load)
        .unwrap();
    let twin_path = dir.path().join("twin.safetensors");
    shears_models::resnet::save_safetensors(&det, &twin_path).unwrap();
    let (twin, _) = ResNet::load_file(&config, &twin_path, ClassifierInit::Load, &device).unwrap();

    let (x, _) = cifar_test_images(8, &device);
    let a = values(from_pth.with_bn_mode(BnMode::Eval).forward(x.clone()));
    let b = values(twin.with_bn_mode(BnMode::Eval).forward(x));
    assert_eq!(
        a, b,
        "the .pth and its safetensors twin give different logits"
    );
    // The deterministic weights are not trained: these logits reach ~10³, so the tolerance is
    // 1e-4 relative to the largest logit (f32 resolution there is ~6e-5).
    let want = flat_f32(&reference["resnet20b_det_logits"]);
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    assert_abs("resnet20b .pth vs torch", &a, &want, 1e-4 * scale);
}
