//! Sparsity reports (struct, table, JSON) and `shears sparsity FILE [--json]`.

use std::borrow::Cow;
use std::process::Command;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Device;
use safetensors::tensor::{Dtype, View};
use shears::sparsity::enforce::apply_masks;
use shears::sparsity::mask::{MaskKind, Scope, compute_module_masks};
use shears::sparsity::params::{BurnPaths, list_params};
use shears::sparsity::report::SparsityReport;

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// A file with known zeros: 7 of 16 float elements, 4 of 10 in tensors with >= 2 dims.
fn sample_file() -> Vec<u8> {
    let f32s: Vec<u8> = [0.0f32, 1.0, -0.0, 2.0, 0.0, 3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    // f16: +0, -0, 1.0, smallest subnormal (non-zero).
    let f16s: Vec<u8> = [0x0000u16, 0x8000, 0x3c00, 0x0001]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let bf16s: Vec<u8> = [0x0000u16, 0x3f80, 0x3f80, 0xbf80]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let i64s: Vec<u8> = [0i64, 0, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
    let f64s: Vec<u8> = [0.0f64, 1e-300]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let tensors = vec![
        (
            "enc.a.weight",
            Raw {
                dtype: Dtype::F32,
                shape: vec![2, 3],
                bytes: f32s,
            },
        ),
        (
            "enc.b.bias",
            Raw {
                dtype: Dtype::F16,
                shape: vec![4],
                bytes: f16s,
            },
        ),
        (
            "enc.c.weight",
            Raw {
                dtype: Dtype::BF16,
                shape: vec![2, 2],
                bytes: bf16s,
            },
        ),
        (
            "ids",
            Raw {
                dtype: Dtype::I64,
                shape: vec![3],
                bytes: i64s,
            },
        ),
        (
            "scale",
            Raw {
                dtype: Dtype::F64,
                shape: vec![2],
                bytes: f64s,
            },
        ),
    ];
    safetensors::serialize(tensors, None).unwrap()
}

#[test]
fn report_counts_zeros_of_every_float_dtype() {
    let r = SparsityReport::from_safetensors_bytes(&sample_file(), "sample").unwrap();
    let rows: Vec<(&str, usize, usize)> = r
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.numel, p.zeros))
        .collect();
    assert_eq!(
        rows,
        [
            ("enc.a.weight", 6, 3),
            ("enc.b.bias", 4, 2),
            ("enc.c.weight", 4, 1),
            ("scale", 2, 1)
        ]
    );
    assert_eq!((r.overall.numel, r.overall.zeros), (16, 7));
    assert_eq!(r.overall.sparsity, 7.0 / 16.0);
    assert_eq!((r.prunable.numel, r.prunable.zeros), (10, 4));
    assert_eq!(r.skipped, ["ids"]);
    assert_eq!(r.masked, None);
    let table = r.to_table();
    assert!(table.contains("enc.a.weight"), "{table}");
    assert!(table.contains("43.75%"), "{table}");
    let err = SparsityReport::from_safetensors_bytes(&[1, 2, 3], "broken.safetensors").unwrap_err();
    assert!(err.to_string().contains("broken.safetensors"), "{err}");
}

#[test]
fn report_of_a_masked_model_shows_mask_and_target() {
    #[derive(Module, Debug)]
    struct Net {
        a: Linear,
        b: Linear,
    }
    let device = Device::flex();
    device.seed(4);
    let net = Net {
        a: LinearConfig::new(10, 6).init(&device),
        b: LinearConfig::new(6, 5).init(&device),
    };
    let weights: Vec<_> = list_params(&net, &BurnPaths)
        .into_iter()
        .filter(|p| p.name.ends_with("weight"))
        .collect();
    let masks = compute_module_masks(
        &net,
        &BurnPaths,
        &weights,
        0.4,
        MaskKind::Unstructured,
        Scope::Global,
    )
    .unwrap();
    let net = apply_masks(net, &masks, &BurnPaths).unwrap();
    let r = SparsityReport::from_module(&net, &BurnPaths, Some(&masks), Some(0.4)).unwrap();
    let masked = r.masked.unwrap();
    assert_eq!(masked.numel, 90);
    assert_eq!(masked.zeros, 36); // round(0.4 · 90); random init has no exact zeros
    assert_eq!(masked.sparsity, 0.4);
    assert_eq!(r.target, Some(0.4));
    assert_eq!(r.params.len(), 4);
    for p in &r.params {
        assert_eq!(
            p.mask_sparsity.is_some(),
            p.name.ends_with("weight"),
            "{}",
            p.name
        );
    }
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["masked"]["zeros"], 36);
    assert_eq!(json["target"], 0.4);
    assert_eq!(json["params"][0]["name"], "a.weight");
}

#[test]
fn cli_prints_json_and_table_and_names_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    std::fs::write(&file, sample_file()).unwrap();
    let bin = env!("CARGO_BIN_EXE_shears");

    let out = Command::new(bin)
        .args(["sparsity", file.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["overall"]["zeros"], 7);
    assert_eq!(json["overall"]["numel"], 16);
    assert_eq!(json["params"][1]["name"], "enc.b.bias");
    assert_eq!(json["params"][1]["zeros"], 2);

    let out = Command::new(bin)
        .args(["sparsity", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("43.75%"), "{table}");

    let missing = dir.path().join("missing.safetensors");
    let out = Command::new(bin)
        .args(["sparsity", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("missing.safetensors"), "{err}");
}
