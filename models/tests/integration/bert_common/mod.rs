//! Helpers shared by the `bert_*` integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use serde_json::Value;
use shears_models::bert::BertInput;

/// `models/tests/fixtures/bert`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert")
}

/// The all-MiniLM-L6-v2 directory under the repository's `assets/`.
pub fn minilm_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file() && dir.join("tokenizer.json").is_file(),
        "{} is missing: run scripts/fetch-assets.sh",
        dir.display()
    );
    dir
}

/// Reads a JSON fixture.
pub fn read_json(name: &str) -> Value {
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON array of arrays of integers.
pub fn u32_rows(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// A JSON (nested) array of numbers, flattened.
pub fn flat_f32(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat_f32).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number: {other}"),
    }
}

/// The batch stored in a reference fixture (`input_ids`, `token_type_ids`, `attention_mask`).
pub fn fixture_batch(reference: &Value, device: &Device) -> BertInput {
    BertInput::from_rows(
        &u32_rows(&reference["input_ids"]),
        &u32_rows(&reference["token_type_ids"]),
        &u32_rows(&reference["attention_mask"]),
        device,
    )
    .unwrap()
}

/// All values of a float tensor.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Largest absolute difference (panics on a length mismatch).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Asserts `max |a - b| <= tol` with a readable message.
pub fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "{what}: max abs diff {d:e} > {tol:e}");
}
