//! `shears bench sparseprop --against FILE`: PyTorch's times (the JSON that
//! `benches/sparseprop_torch.py` prints) are matched to the rows by layer and shape, the ratio
//! is PyTorch's time over SparseProp's, and a file that lacks a measured shape or is not that
//! JSON is an error naming the file.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["bench", "sparseprop", "--layer", "linear", "--reps", "1"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn against_file_adds_the_pytorch_column() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("torch.json");
    let torch = serde_json::json!([
        {"layer": "linear", "shape": "B=128 512->256", "fwd_ms": 0.25, "bwd_ms": 1.5},
        {"layer": "linear", "shape": "B=64 768->3072", "fwd_ms": 3.0, "bwd_ms": 7.0},
        {"layer": "conv2d", "shape": "B=1 1->1 4x4 k3 s1 p0", "fwd_ms": 9.0, "bwd_ms": 9.0}
    ]);
    std::fs::write(&file, torch.to_string()).unwrap();
    let f = file.to_str().unwrap();

    let out = bench(&["--sparsity", "95,99", "--json", "--against", f]);
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    // Two linear shapes × two sparsities × fwd/bwd.
    assert_eq!(rows.len(), 8);
    for r in &rows {
        let want = torch
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["shape"] == r["shape"])
            .unwrap();
        let key = if r["pass"] == "fwd" {
            "fwd_ms"
        } else {
            "bwd_ms"
        };
        assert_eq!(r["torch_ms"], want[key], "{r}");
        let ratio = r["torch_ms"].as_f64().unwrap() / r["sparse_ms"].as_f64().unwrap();
        // (serde_json's float parsing may differ from the printed value in the last bit)
        let got = r["vs_torch"].as_f64().unwrap();
        assert!(
            (got - ratio).abs() <= 1e-12 * ratio,
            "{r}: {got} vs {ratio}"
        );
    }

    // The table prints the column and one summary line per sparsity ≥ 95 %.
    let out = bench(&["--sparsity", "90,95", "--against", f]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("torch_ms") && text.contains("vs_torch"),
        "{text}"
    );
    assert_eq!(
        text.matches("beats PyTorch dense fwd+bwd on").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("at 95%: ") && text.contains(" of 2 shapes"),
        "{text}"
    );

    // A shape the file lacks is an error naming the file and the shape.
    std::fs::write(&file, serde_json::json!([torch[0]]).to_string()).unwrap();
    let out = bench(&["--sparsity", "95", "--against", f]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(err.contains(f) && err.contains("B=64 768->3072"), "{err}");

    // Not the script's JSON: an error with the line and column.
    std::fs::write(&file, "[\n  {\"layer\": \"linear\"}\n]").unwrap();
    let out = bench(&["--sparsity", "95", "--against", f]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(err.contains(f) && err.contains("line 2"), "{err}");
}
