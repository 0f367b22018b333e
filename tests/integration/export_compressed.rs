//! compressed-tensors' `sparse-bitmask` layout against the Python package that defines it
//! (fixture written by `tests/fixtures/compressed_tensors/make_fixture.py` with
//! compressed-tensors 0.12.2): shears compresses the same tensors to the same bytes, reads
//! the package's files back to the package's own decompression, and `export` of a model
//! directory keeps its other files and says what it compressed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shears::export::{DEFAULT_MIN_SPARSITY, write_compressed};
use shears::sparsity::report::SparsityReport;
use shears_models::compressed::{self, RawTensor};
use shears_models::weights::Checkpoint;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compressed_tensors")
        .join(name)
}

fn read(path: &Path) -> BTreeMap<String, RawTensor> {
    compressed::read_all(&std::fs::read(path).unwrap()).unwrap()
}

fn targets() -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("targets.json")).unwrap()).unwrap();
    v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn shears_compresses_to_the_packages_bytes() {
    let dense = read(&fixture("dense.safetensors"));
    let want = read(&fixture("compressed.safetensors"));
    let targets = targets();
    let mut got = BTreeMap::new();
    for (name, t) in dense {
        if targets.iter().any(|p| format!("{p}.weight") == name) {
            got.extend(compressed::compress(&name, &t).unwrap());
        } else {
            got.insert(name, t);
        }
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, t) in &want {
        assert_eq!(&got[k], t, "{k}");
    }
}

#[test]
fn the_packages_files_read_back_to_its_own_decompression() {
    let back = compressed::decompress(read(&fixture("compressed.safetensors"))).unwrap();
    let theirs = read(&fixture("decompressed.safetensors"));
    for (k, t) in &theirs {
        assert_eq!(&back[k], t, "{k}");
    }
    // Uncompressed tensors pass through; every dense tensor is there again.
    let dense = read(&fixture("dense.safetensors"));
    assert_eq!(
        back.keys().collect::<Vec<_>>(),
        dense.keys().collect::<Vec<_>>()
    );
    assert_eq!(back["classifier.weight"], dense["classifier.weight"]);
    // The model loaders see dense values.
    let ckpt = Checkpoint::read(fixture("compressed.safetensors")).unwrap();
    let q = "encoder.layer.0.attention.self.query.weight";
    let t = ckpt.get(q).unwrap();
    assert_eq!(t.shape, vec![12, 20]);
    let values: Vec<f32> = t.data.clone().unwrap().try_to_vec().unwrap();
    let want: Vec<f32> = dense[q]
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values, want);
}

#[test]
fn exporting_a_model_directory_compresses_its_sparse_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(
        fixture("dense.safetensors"),
        model.join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        model.join("config.json"),
        r#"{"model_type": "bert", "hidden_size": 8}"#,
    )
    .unwrap();
    std::fs::write(model.join("tokenizer.json"), "{}").unwrap();
    let out = tmp.path().join("out");
    let done = write_compressed(&model, &out, DEFAULT_MIN_SPARSITY).unwrap();
    let mut names: Vec<String> = done
        .compressed
        .iter()
        .map(|n| n.trim_end_matches(".weight").to_string())
        .collect();
    names.sort();
    assert_eq!(names, targets());
    assert_eq!(done.sparsity_structure, "unstructured");
    // The file holds exactly the package's tensors.
    let got = read(&out.join("model.safetensors"));
    let want = read(&fixture("compressed.safetensors"));
    assert_eq!(got, want);
    assert_eq!(
        done.compressed_bytes,
        std::fs::metadata(out.join("model.safetensors"))
            .unwrap()
            .len()
    );
    assert_eq!(
        done.dense_bytes,
        std::fs::metadata(fixture("dense.safetensors"))
            .unwrap()
            .len()
    );
    // Global sparsity: zeros over every float element of the dense file.
    let report = SparsityReport::from_safetensors(&fixture("dense.safetensors")).unwrap();
    let (z, n): (usize, usize) = report
        .params
        .iter()
        .fold((0, 0), |(z, n), p| (z + p.zeros, n + p.numel));
    assert!((done.global_sparsity - z as f64 / n as f64).abs() < 1e-12);
    // The report of the compressed file equals the dense one.
    let again = SparsityReport::from_safetensors(&out.join("model.safetensors")).unwrap();
    assert_eq!(again.params, report.params);
    // config.json keeps its keys and gains the sparsity config.
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "bert");
    let q = &cfg["quantization_config"];
    assert_eq!(q["quant_method"], "compressed-tensors");
    assert_eq!(q["sparsity_config"]["format"], "sparse-bitmask");
    let mut t: Vec<String> = q["sparsity_config"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    t.sort();
    assert_eq!(t, targets());
    assert_eq!(
        std::fs::read(out.join("tokenizer.json")).unwrap(),
        b"{}".to_vec()
    );
    // A compressed model is not compressed twice.
    let e = write_compressed(&out, &tmp.path().join("again"), DEFAULT_MIN_SPARSITY)
        .unwrap_err()
        .to_string();
    assert!(e.contains("compressed already"), "{e}");
}

#[test]
fn two_four_models_are_labelled_two_four() {
    let tmp = tempfile::tempdir().unwrap();
    let dense = read(&fixture("dense.safetensors"));
    let only: BTreeMap<String, RawTensor> = dense
        .into_iter()
        .filter(|(k, _)| k == "two_four.weight" || k.ends_with(".bias"))
        .collect();
    let file = tmp.path().join("w.safetensors");
    std::fs::write(&file, compressed::write_all(&only, None).unwrap()).unwrap();
    let done = write_compressed(&file, &tmp.path().join("o"), DEFAULT_MIN_SPARSITY).unwrap();
    assert_eq!(done.sparsity_structure, "2:4");
    assert_eq!(done.compressed, vec!["two_four.weight".to_string()]);
}
