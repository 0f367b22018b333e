//! ResNet architecture names, state-dict names, strict loading errors, export round trip,
//! fresh classifiers and the prunable-layer hooks.

use crate::resnet_common;

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};
use resnet_common::*;
use shears_models::batch_norm::BnMode;
use shears_models::resnet::{
    ClassifierInit, PrunableLayerMut, ResNet, ResNetArch, ResNetConfig, ResNetError, Shortcut,
    save_safetensors, state_dict_tensors,
};
use shears_models::sparseprop::Execution;
use shears_models::weights::{Checkpoint, WeightsError};

const R20: &str = "resnet20-12fca82f.safetensors";

#[test]
fn architecture_names_parse() {
    let cifar = |depth, shortcut| ResNetArch::Cifar { depth, shortcut };
    for (name, arch) in [
        ("resnet20", cifar(20, Shortcut::A)),
        ("ResNet-56", cifar(56, Shortcut::A)),
        ("resnet110", cifar(110, Shortcut::A)),
        ("resnet20b", cifar(20, Shortcut::B)),
        ("resnet32_b", cifar(32, Shortcut::B)),
        ("cifar-resnet50", cifar(50, Shortcut::A)),
        ("resnet18", ResNetArch::Torchvision18),
        ("resnet34", ResNetArch::Torchvision34),
        ("resnet50", ResNetArch::Torchvision50),
    ] {
        assert_eq!(ResNetArch::parse(name).unwrap(), arch, "{name}");
    }
    for bad in ["resnet21", "resnet", "vgg16", "resnet18x", ""] {
        match ResNetArch::parse(bad) {
            Err(ResNetError::UnknownArch { name }) => assert_eq!(name, bad),
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert_eq!(ResNetConfig::parse("resnet50").unwrap().num_classes, 1000);
    assert_eq!(ResNetConfig::parse("resnet44").unwrap().num_classes, 10);
}

fn state_dict_keys(arch: &str) -> Vec<String> {
    let model = ResNetConfig::parse(arch).unwrap().init(&Device::flex());
    state_dict_tensors(&model)
        .into_iter()
        .map(|t| t.key)
        .collect()
}

#[test]
fn state_dict_names_equal_torch() {
    // torchvision: resnet18 has 122 state-dict entries, resnet34 218, resnet50 320.
    assert_eq!(state_dict_keys("resnet18").len(), 122);
    assert_eq!(state_dict_keys("resnet34").len(), 218);
    let r50 = state_dict_keys("resnet50");
    assert_eq!(r50.len(), 320);
    for key in [
        "conv1.weight",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "layer1.0.conv3.weight",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.running_mean",
        "layer4.2.bn3.bias",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(r50.contains(&key.to_string()), "{key}");
    }
    // The CIFAR files: exactly the keys of the pretrained checkpoint (+ num_batches_tracked).
    let ckpt = Checkpoint::read(pretrained_cifar(R20)).unwrap();
    let mut ours: Vec<String> = state_dict_keys("resnet20")
        .into_iter()
        .filter(|k| !k.ends_with("num_batches_tracked"))
        .collect();
    ours.sort();
    let theirs: Vec<String> = ckpt.keys().map(str::to_string).collect();
    assert_eq!(ours, theirs);
    let b = state_dict_keys("resnet20b");
    assert!(b.contains(&"layer2.0.shortcut.0.weight".to_string()));
    assert!(b.contains(&"layer3.0.shortcut.1.running_var".to_string()));
}

#[test]
fn export_round_trip_is_exact() {
    let device = Device::flex();
    let config = ResNetConfig::parse("resnet20").unwrap();
    let src = pretrained_cifar(R20);
    let (model, _) = ResNet::load_file(&config, &src, ClassifierInit::Load, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let keys = save_safetensors(&model, &out).unwrap();
    assert_eq!(keys.len(), 97 + 19);
    let a = Checkpoint::read(&src).unwrap();
    let b = Checkpoint::read(&out).unwrap();
    for key in a.keys() {
        let (ta, tb) = (a.get(key).unwrap(), b.get(key).unwrap());
        assert_eq!(ta.shape, tb.shape, "{key}");
        assert_eq!(ta.data, tb.data, "{key}");
    }
    let nbt = b.get("layer3.2.bn2.num_batches_tracked").unwrap();
    assert_eq!((nbt.dtype.as_str(), nbt.shape.len()), ("I64", 0));
    // And it loads back strictly.
    ResNet::load_file(&config, &out, ClassifierInit::Load, &device).unwrap();
}

fn ckpt_map(edit: impl Fn(&mut BTreeMap<String, (Vec<usize>, Vec<f32>)>)) -> Checkpoint {
    let det = det_checkpoint(&ResNetConfig::parse("resnet20").unwrap());
    let mut map: BTreeMap<String, (Vec<usize>, Vec<f32>)> = det
        .keys()
        .map(|k| {
            let t = det.get(k).unwrap();
            let v = t.data.clone().unwrap().try_to_vec::<f32>().unwrap();
            (k.to_string(), (t.shape.clone(), v))
        })
        .collect();
    edit(&mut map);
    Checkpoint::from_f32(
        "edited.safetensors",
        map.into_iter().map(|(k, (s, v))| (k, s, v)),
    )
}

fn load(ckpt: &Checkpoint, classes: usize, cls: ClassifierInit) -> Result<ResNet, ResNetError> {
    let config = ResNetConfig::parse("resnet20")
        .unwrap()
        .with_num_classes(classes);
    config
        .init(&Device::flex())
        .load_checkpoint(ckpt, cls)
        .map(|(m, _)| m)
}

#[test]
fn loading_errors_name_the_file_and_the_keys() {
    let missing = ckpt_map(|m| {
        m.remove("layer2.1.bn1.running_var");
    });
    match load(&missing, 10, ClassifierInit::Load) {
        Err(ResNetError::Weights(e @ WeightsError::MissingKeys { .. })) => {
            let msg = e.to_string();
            assert!(msg.contains("edited.safetensors") && msg.contains("layer2.1.bn1.running_var"));
        }
        other => panic!("{other:?}"),
    }
    let unexpected = ckpt_map(|m| {
        m.insert("layer9.0.conv1.weight".into(), (vec![2], vec![0.0, 1.0]));
    });
    match load(&unexpected, 10, ClassifierInit::Load) {
        Err(ResNetError::Weights(WeightsError::UnexpectedKeys { path, keys })) => {
            assert!(path.ends_with("edited.safetensors"));
            assert_eq!(keys, vec!["layer9.0.conv1.weight"]);
        }
        other => panic!("{other:?}"),
    }
    let exact = ckpt_map(|_| {});
    match load(&exact, 100, ClassifierInit::Load) {
        Err(ResNetError::Weights(WeightsError::ShapeMismatch {
            key,
            expected,
            found,
            ..
        })) => {
            assert_eq!(key, "linear.weight");
            assert_eq!((expected, found), (vec![100, 64], vec![10, 64]));
        }
        other => panic!("{other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pth");
    std::fs::write(&bad, b"not a checkpoint").unwrap();
    let err = Checkpoint::read(&bad).unwrap_err();
    assert!(matches!(err, WeightsError::Format { .. }), "{err}");
    assert!(err.to_string().contains("bad.pth"));
    let err = Checkpoint::read(dir.path().join("absent.safetensors")).unwrap_err();
    assert!(matches!(err, WeightsError::Io { .. }), "{err}");
}

#[test]
fn a_fresh_classifier_replaces_one_of_another_class_count() {
    let device = Device::flex();
    let ckpt = Checkpoint::read(pretrained_cifar(R20)).unwrap();
    let config = ResNetConfig::parse("resnet20")
        .unwrap()
        .with_num_classes(100);
    for how in [ClassifierInit::Fresh, ClassifierInit::FreshIfShapeDiffers] {
        let (model, report) = config.init(&device).load_checkpoint(&ckpt, how).unwrap();
        assert_eq!(model.num_classes(), 100);
        assert_eq!(report.initialized, vec!["linear.weight", "linear.bias"]);
        assert!(
            report
                .skipped_buffers
                .contains(&"linear.weight".to_string())
        );
        assert_eq!(
            values(model.conv1.weight.val()),
            ckpt.get("conv1.weight")
                .unwrap()
                .data
                .clone()
                .unwrap()
                .try_to_vec::<f32>()
                .unwrap()
        );
    }
    // Same class count: FreshIfShapeDiffers loads it.
    let config = ResNetConfig::parse("resnet20").unwrap();
    let (_, report) = config
        .init(&device)
        .load_checkpoint(&ckpt, ClassifierInit::FreshIfShapeDiffers)
        .unwrap();
    assert!(report.initialized.is_empty());
    // reset_classifier swaps it after loading.
    let (mut model, _) = config
        .init(&device)
        .load_checkpoint(&ckpt, ClassifierInit::Load)
        .unwrap();
    model.reset_classifier(7, &device);
    assert_eq!(model.num_classes(), 7);
    assert_eq!(
        model.forward(Tensor::zeros([1, 3, 32, 32], &device)).dims(),
        [1, 7]
    );
}

#[test]
fn prunable_layers_are_named_like_the_state_dict_and_switch_sparse() {
    let device = Device::flex();
    let count = |arch: &str| {
        let mut m = ResNetConfig::parse(arch).unwrap().init(&device);
        let names: Vec<String> = m
            .prunable_layers_mut()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names
    };
    let r20 = count("resnet20");
    assert_eq!(r20.len(), 19 + 1);
    assert_eq!(r20.first().unwrap(), "conv1");
    assert_eq!(r20.last().unwrap(), "linear");
    assert!(r20.contains(&"layer3.2.conv2".to_string()));
    assert_eq!(count("resnet20b").len(), 19 + 2 + 1);
    assert_eq!(count("resnet18").len(), 1 + 16 + 3 + 1);
    let r50 = count("resnet50");
    assert_eq!(r50.len(), 1 + 48 + 4 + 1);
    assert!(r50.contains(&"layer4.0.downsample.0".to_string()));
    assert_eq!(r50.last().unwrap(), "fc");

    // Sparse execution on a pruned model gives the dense outputs.
    let config = ResNetConfig::parse("resnet20b").unwrap();
    let (mut model, _) = config
        .init(&device)
        .load_checkpoint(&det_checkpoint(&config), ClassifierInit::Load)
        .unwrap();
    model.set_bn_mode(BnMode::Eval);
    // Prune half of every conv (the weights at even flat indices).
    for (_, layer) in model.prunable_layers_mut() {
        if let PrunableLayerMut::Conv(conv) = layer {
            let dims = conv.weight.dims();
            let n: usize = dims.iter().product();
            let mask: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
            let mask = Tensor::<4>::from_data(TensorData::new(mask, dims), &device);
            conv.weight = conv.weight.clone().map(|w| w * mask);
        }
    }
    let (x, _) = cifar_test_images(4, &device);
    let dense = values(model.forward(x.clone()));
    let switched = model
        .set_sparse_where(|name| name != "linear", Execution::Sparse)
        .unwrap();
    assert_eq!(switched.len(), 21);
    assert!(switched.iter().all(|(_, s)| (*s - 0.5).abs() < 0.01));
    assert!(
        model
            .prunable_layer_names()
            .iter()
            .all(|(n, sparse)| *sparse == (n != "linear"))
    );
    let sparse = values(model.forward(x.clone()));
    assert_abs("sparse vs dense", &sparse, &dense, 1e-4);
    model.set_dense();
    assert!(model.prunable_layer_names().iter().all(|(_, s)| !s));
}

/// Logits, input gradient and every parameter gradient (in module order) of one training
/// step's loss `Σ logits · c` for a fixed `c`.
fn train_step_grads(model: &ResNet, x: &Tensor<4>) -> Vec<(String, Vec<f32>)> {
    use burn::module::Module;
    let x = x.clone().require_grad();
    let logits = model.forward(x.clone());
    let [b, k] = logits.dims();
    let c = det_value("loss", &[b, k, 1, 1]);
    let c = Tensor::<2>::from_data(TensorData::new(c, [b, k]), &x.device());
    let grads = (logits.clone() * c).sum().backward();
    let mut out = vec![
        ("logits".to_string(), values(logits)),
        ("dx".to_string(), values(x.grad(&grads).unwrap())),
    ];
    let grads = burn::optim::GradientsParams::from_grads(grads, model);
    let mut params = Vec::new();
    model.visit(&mut ParamGrads {
        grads: &grads,
        out: &mut params,
    });
    out.extend(params);
    out
}

/// Collects the gradient of every float parameter that has one.
struct ParamGrads<'a> {
    grads: &'a burn::optim::GradientsParams,
    out: &'a mut Vec<(String, Vec<f32>)>,
}

impl burn::module::ModuleVisitor for ParamGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.out.push((format!("{:?}", param.id), values(g)));
        }
    }
}

#[test]
fn sparse_blocks_in_channel_major_layout_train_like_the_dense_path() {
    // Option A (parameter-free shortcut, subsampling and channel padding in either layout)
    // and option B (1×1 projection convs); 13×13 images make the stride-2 stages odd-sized
    // (13 → 7 → 4).
    let device = Device::flex().autodiff();
    for arch in ["resnet20", "resnet20b"] {
        let config = ResNetConfig::parse(arch).unwrap();
        let (mut model, _) = config
            .init(&device)
            .load_checkpoint(&det_checkpoint(&config), ClassifierInit::Load)
            .unwrap();
        model.set_bn_mode(BnMode::Train);
        // Parameter key → (layer name, mask) of every conv weight.
        let mut masks = BTreeMap::new();
        for (name, layer) in model.prunable_layers_mut() {
            if let PrunableLayerMut::Conv(conv) = layer {
                let dims = conv.weight.dims();
                let n: usize = dims.iter().product();
                let mask: Vec<f32> = (0..n).map(|i| f32::from((i * 7) % 3 != 0)).collect();
                masks.insert(format!("{:?}", conv.weight.id), (name, mask.clone()));
                let mask = Tensor::<4>::from_data(TensorData::new(mask, dims), &device);
                // Detached: every step below starts its own graph at the parameters.
                conv.weight = conv
                    .weight
                    .clone()
                    .map(|w| (w * mask).detach().require_grad());
            }
        }
        let x = Tensor::<4>::from_data(
            TensorData::new(det_value("images", &[4, 3, 13, 13]), [4, 3, 13, 13]),
            &device,
        );
        let dense = train_step_grads(&model, &x);
        // Every conv sparse (one layout change at the first block), then only stage 2 (layout
        // changes into and out of it, the shortcut of layer2.0 changes with its input).
        type Select = fn(&str) -> bool;
        let selections: [(&str, Select); 2] = [
            ("all convs", |n| n != "linear" && n != "conv1"),
            ("stage 2 only", |n| n.starts_with("layer2.")),
        ];
        for (what, select) in selections {
            model.set_sparse_where(select, Execution::Sparse).unwrap();
            let sparse = train_step_grads(&model, &x);
            assert_eq!(sparse.len(), dense.len(), "{arch} {what}: gradient count");
            for ((key, got), (_, want)) in sparse.iter().zip(&dense) {
                // A sparse layer's weight gradient is the dense one on its pattern, 0 off it.
                let (name, want) = match masks.get(key) {
                    Some((name, mask)) if select(name) => (
                        name.as_str(),
                        want.iter().zip(mask).map(|(g, m)| g * m).collect(),
                    ),
                    Some((name, _)) => (name.as_str(), want.clone()),
                    None => (key.as_str(), want.clone()),
                };
                // f32 through twenty training-mode batch norms (whose backward divides by
                // small batch deviations): 2e-4 relative to the largest entry.
                let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                assert_abs(&format!("{arch} {what}: {name}"), got, &want, 2e-4 * scale);
            }
            model.set_dense();
        }
    }
}
