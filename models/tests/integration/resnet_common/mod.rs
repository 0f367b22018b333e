//! Helpers shared by the `resnet_*` integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;
use shears_models::resnet::{ResNet, ResNetConfig};
use shears_models::weights::{Checkpoint, IdentityKeys, collect_tensors};

/// `models/tests/fixtures/resnet`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resnet")
}

/// Reads `resnet_reference.json` (written by `gen_resnet.py`).
pub fn reference() -> Value {
    let path = fixtures().join("resnet_reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A pretrained CIFAR-10 ResNet in the shared assets (beside the checkout).
pub fn pretrained_cifar(file: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/assets/resnet_cifar10")
        .join(file);
    assert!(
        path.is_file(),
        "{} is missing: the pretrained CIFAR-10 ResNets live in shared/assets/resnet_cifar10 \
         beside the repository checkout",
        path.display()
    );
    path
}

/// The first `n` CIFAR-10 test images, normalised with the ImageNet mean / std, as
/// `[n, 3, 32, 32]`, and their labels.
pub fn cifar_test_images(n: usize, device: &Device) -> (Tensor<4>, Vec<u8>) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/data/cifar-10/test_batch.bin");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the CIFAR-10 test batch is missing: run scripts/fetch-assets.sh cifar10",
            path.display()
        )
    });
    assert!(bytes.len() >= n * 3073, "{}: too short", path.display());
    const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    const STD: [f32; 3] = [0.229, 0.224, 0.225];
    let mut values = Vec::with_capacity(n * 3072);
    let mut labels = Vec::with_capacity(n);
    for rec in bytes.chunks(3073).take(n) {
        labels.push(rec[0]);
        for (i, &p) in rec[1..].iter().enumerate() {
            let c = i / 1024;
            values.push((p as f32 / 255.0 - MEAN[c]) / STD[c]);
        }
    }
    let x = Tensor::from_data(TensorData::new(values, [n, 3, 32, 32]), device);
    (x, labels)
}

/// The deterministic value formula of `gen_resnet.py` (`det_value`).
pub fn det_value(key: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let phase = 0.1 * (key.bytes().map(|b| b as u64).sum::<u64>() % 61) as f64;
    let (amp, off) = if key.ends_with("running_var") {
        (0.2, 1.0)
    } else if key.ends_with("running_mean") {
        (0.1, 0.0)
    } else if key.ends_with("weight") && shape.len() == 1 {
        (0.1, 1.0)
    } else if key.ends_with("bias") && shape.len() == 1 {
        (0.1, 0.0)
    } else if shape.len() == 4 {
        (1.5 / ((shape[1] * shape[2] * shape[3]) as f64).sqrt(), 0.0)
    } else if shape.len() == 2 {
        (1.0 / (shape[1] as f64).sqrt(), 0.0)
    } else {
        panic!("no formula for {key} {shape:?}")
    };
    (0..n)
        .map(|i| (off + amp * (0.37 * i as f64 + phase).sin()) as f32)
        .collect()
}

/// A checkpoint with the deterministic weights of every tensor of `config`'s model.
pub fn det_checkpoint(config: &ResNetConfig) -> Checkpoint {
    let model = ResNet::new(config, &Device::flex());
    let tensors = collect_tensors(&model, &IdentityKeys)
        .into_iter()
        .map(|(k, shape, _)| {
            let v = det_value(&k, &shape);
            (k, shape, v)
        });
    Checkpoint::from_f32("deterministic", tensors)
}

/// A JSON (nested) array of numbers, flattened.
pub fn flat_f32(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat_f32).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number: {other}"),
    }
}

/// The values of a tensor as f32.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Asserts `max |got − want| ≤ tol`.
pub fn assert_abs(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (worst, at) = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (g, w))| ((g - w).abs(), i))
        .fold((0.0f32, 0usize), |a, b| if b.0 > a.0 { b } else { a });
    assert!(
        worst <= tol,
        "{what}: max abs error {worst} at {at} (got {}, want {}), tolerance {tol}",
        got[at],
        want[at]
    );
}
