//! `shears infer` end to end on the real all-MiniLM-L6-v2 (from scripts/fetch-assets.sh):
//! the embeddings it prints reproduce the sentence-transformers documentation value
//! cos("A man is eating food.", "A man is eating a piece of bread.") = 0.755, on both CPU
//! backends; bad input is an error naming the file and line; a pruned model's embeddings on
//! the SparseProp kernels equal its dense ones, and `shears bench infer` times both.

use std::path::Path;
use std::process::Command;

fn minilm() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-assets.sh",
        dir.display()
    );
    dir.display().to_string()
}

fn infer(input: &Path, device: &str) -> std::process::Output {
    infer_with(&minilm(), input, device)
}

fn infer_with(model: &str, input: &Path, device: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shears"))
        .args([
            "infer", "--model", model, "--task", "embed", "--device", device, "--input",
        ])
        .arg(input)
        .output()
        .unwrap()
}

/// all-MiniLM-L6-v2 with the 90 % smallest weights of each of its 36 encoder linears zeroed
/// (`round(0.9·n)` exactly: ties broken by position), written as an HF directory in `dir`.
fn pruned_minilm(dir: &Path) -> usize {
    let src = Path::new(&minilm()).to_path_buf();
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let linear = regex::Regex::new(
        r"^encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)\.weight$",
    )
    .unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut pruned = 0;
    for (name, view) in st.tensors() {
        let mut data = view.data().to_vec();
        if linear.is_match(&name) {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let mut v: Vec<f32> = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let mut order: Vec<usize> = (0..v.len()).collect();
            order.sort_by(|&a, &b| v[a].abs().total_cmp(&v[b].abs()).then(a.cmp(&b)));
            let k = (0.9 * v.len() as f64).round() as usize;
            for &i in &order[..k] {
                v[i] = 0.0;
            }
            data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            pruned += 1;
        }
        tensors.push((name.to_string(), view.dtype(), view.shape().to_vec(), data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, t, s, d)| {
            let view = safetensors::tensor::TensorView::new(*t, s.clone(), d);
            (n.clone(), view.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    pruned
}

fn embeddings(out: &std::process::Output) -> Vec<Vec<f64>> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn a_pruned_model_runs_sparse_with_the_dense_outputs_and_benches() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("pruned");
    std::fs::create_dir(&model).unwrap();
    assert_eq!(pruned_minilm(&model), 36);
    let model = model.display().to_string();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"A man is eating food.\"}\n{\"text\": \"The film never finds its rhythm, but the cast is wonderful.\"}\n",
    )
    .unwrap();
    let embed = |mode: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shears"));
        cmd.args(["infer", "--model", &model, "--task", "embed"]);
        if let Some(mode) = mode {
            cmd.args(["--sparseprop", mode]);
        }
        cmd.arg("--input").arg(&input).output().unwrap()
    };
    // `auto`, the default, runs a pruned model's linears sparse on the CPU, as `on` does.
    let sparse = embed(Some("on"));
    let by_default = embed(None);
    for out in [&sparse, &by_default] {
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            stderr.contains("SparseProp on 36 of 36 encoder linears"),
            "{stderr}"
        );
    }
    assert_eq!(embeddings(&sparse), embeddings(&by_default));
    let dense = embed(Some("off"));
    assert!(!String::from_utf8_lossy(&dense.stderr).contains("SparseProp on"));
    let (s, d) = (embeddings(&sparse), embeddings(&dense));
    assert_eq!(s.len(), 2);
    for (a, b) in s.iter().zip(&d) {
        assert_eq!(a.len(), 384);
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4, "sparse {x} vs dense {y}");
        }
    }

    let bench = Command::new(env!("CARGO_BIN_EXE_shears"))
        .args([
            "bench", "infer", "--model", &model, "--batch", "1,3", "--seq", "16", "--reps", "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&bench.stdout).unwrap();
    assert_eq!(j["sparse_layers"], 36);
    assert_eq!(j["layers"], 36);
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r["batch"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 3]
    );
    for r in rows {
        assert!(r["dense_ms"].as_f64().unwrap() > 0.0 && r["sparse_ms"].as_f64().unwrap() > 0.0);
    }

    let bad = Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["bench", "infer", "--model", &model, "--seq", "100000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("--seq 100000"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn embeddings_give_the_documented_similarity() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"A man is eating food.\"}\n{\"text\": \"A man is eating a piece of bread.\"}\n",
    )
    .unwrap();
    for device in ["flex", "ndarray"] {
        let out = infer(&input, device);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let v = |i: usize| -> Vec<f64> {
            lines[i]["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let (a, b) = (v(0), v(1));
        assert_eq!(a.len(), 384);
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let norm = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt();
        let cos = dot / (norm(&a) * norm(&b));
        assert!((cos - 0.755).abs() <= 0.001, "{device}: cos = {cos}");
    }
}

#[test]
fn a_bad_line_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("bad.jsonl");
    std::fs::write(&input, "{\"text\": \"fine\"}\n{\"txt\": \"typo\"}\n").unwrap();
    let out = infer(&input, "flex");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}:2", input.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
