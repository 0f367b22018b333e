//! `shears infer` end to end on the real all-MiniLM-L6-v2 (from scripts/fetch-assets.sh):
//! the embeddings it prints reproduce the sentence-transformers documentation value
//! cos("A man is eating food.", "A man is eating a piece of bread.") = 0.755, on both CPU
//! backends; bad input is an error naming the file and line.

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
    Command::new(env!("CARGO_BIN_EXE_shears"))
        .args([
            "infer",
            "--model",
            &minilm(),
            "--task",
            "embed",
            "--device",
            device,
            "--input",
        ])
        .arg(input)
        .output()
        .unwrap()
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
