//! The Hugging Face Hub's parquet files of GLUE and SQuAD: the examples they load to (checked
//! against expectations written by tests/fixtures/data/gen_parquet.py from the same Python
//! values, and against the JSON-lines reader on the same rows), the dispatch by extension, and
//! the errors on broken files.

use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;
use shears::data::glue::{
    GLUE_TASKS, GlueTask, load_glue_file, load_glue_hub_jsonl, load_glue_hub_parquet, load_glue_tsv,
};
use shears::data::squad::{
    SquadExample, load_squad_file, load_squad_hub_jsonl, load_squad_hub_parquet,
};
use shears::data::{DataError, Label, TextExample};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data")
}

fn parquet_dir() -> PathBuf {
    fixtures().join("parquet")
}

fn expected() -> Value {
    let p = parquet_dir().join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Exact comparison with the generator's examples (scores are float32 values written as
/// their exact float64 expansion, so `f64::from(score)` must equal them bit for bit).
fn assert_text_examples(got: &[TextExample], want: &Value, what: &str) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: number of examples");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.id, w["id"].as_str().unwrap(), "{what}");
        assert_eq!(g.text, w["text"].as_str().unwrap(), "{what} {}", g.id);
        assert_eq!(
            g.text_pair.as_deref(),
            w["text_pair"].as_str(),
            "{what} {}",
            g.id
        );
        match (&g.label, &w["label"]) {
            (Label::Missing, Value::Null) => {}
            (Label::Class(c), l) if l.get("class").is_some() => {
                assert_eq!(*c as u64, l["class"].as_u64().unwrap(), "{what} {}", g.id)
            }
            (Label::Score(s), l) if l.get("score").is_some() => {
                assert_eq!(
                    f64::from(*s),
                    l["score"].as_f64().unwrap(),
                    "{what} {}",
                    g.id
                )
            }
            (g_l, w_l) => panic!("{what} {}: label {g_l:?} vs expected {w_l}", g.id),
        }
    }
}

fn assert_squad_examples(got: &[SquadExample], want: &Value, what: &str) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: number of examples");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.id, w["id"].as_str().unwrap(), "{what}");
        assert_eq!(g.title, w["title"].as_str().unwrap(), "{what} {}", g.id);
        assert_eq!(
            g.question,
            w["question"].as_str().unwrap(),
            "{what} {}",
            g.id
        );
        assert_eq!(g.context, w["context"].as_str().unwrap(), "{what} {}", g.id);
        let answers: Vec<(String, usize)> = w["answers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a[0].as_str().unwrap().to_owned(),
                    a[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        assert_eq!(g.answers, answers, "{what} {}", g.id);
        assert_eq!(
            g.is_impossible,
            w["is_impossible"].as_bool().unwrap(),
            "{what} {}",
            g.id
        );
    }
}

/// The GLUE fixtures: (file stem, task).
const GLUE_FILES: [(&str, GlueTask); 7] = [
    ("glue-sst2-train", GlueTask::Sst2),
    ("glue-sst2-test", GlueTask::Sst2),
    ("glue-mrpc-validation", GlueTask::Mrpc),
    ("glue-mnli-validation_matched", GlueTask::Mnli),
    ("glue-mnli-test_matched", GlueTask::Mnli),
    ("glue-stsb-train", GlueTask::Stsb),
    ("glue-stsb-test", GlueTask::Stsb),
];

#[test]
fn glue_parquet_files_load_to_expected_examples() {
    let want = expected();
    for (stem, task) in GLUE_FILES {
        let file = parquet_dir().join(format!("{stem}.parquet"));
        let loaded = load_glue_hub_parquet(&file, task).unwrap();
        assert_eq!(loaded.dropped, 0, "{stem}");
        assert_text_examples(&loaded.examples, &want[stem], stem);
    }
    // The fixtures cover what they should: several row groups, -1 test labels, float labels.
    let sst2 = load_glue_hub_parquet(
        parquet_dir().join("glue-sst2-train.parquet"),
        GlueTask::Sst2,
    )
    .unwrap();
    assert_eq!(sst2.examples.len(), 30);
    assert!(sst2.examples.iter().any(|e| e.text.contains('\t')));
    assert!(sst2.examples.iter().any(|e| e.text.contains('\n')));
    assert!(sst2.examples.iter().any(|e| e.text.contains('🙂')));
    assert!(sst2.examples.iter().any(|e| e.text.is_empty()));
    let test = load_glue_hub_parquet(
        parquet_dir().join("glue-mnli-test_matched.parquet"),
        GlueTask::Mnli,
    )
    .unwrap();
    assert!(test.examples.iter().all(|e| e.label == Label::Missing));
    assert_eq!(test.examples[0].id, "1000");
    let stsb = load_glue_hub_parquet(
        parquet_dir().join("glue-stsb-train.parquet"),
        GlueTask::Stsb,
    )
    .unwrap();
    assert!(
        stsb.examples
            .iter()
            .all(|e| matches!(e.label, Label::Score(s) if (0.0..=5.0).contains(&s)))
    );
}

#[test]
fn glue_parquet_equals_jsonl_of_the_same_rows() {
    for (stem, task) in GLUE_FILES {
        let parquet =
            load_glue_hub_parquet(parquet_dir().join(format!("{stem}.parquet")), task).unwrap();
        let jsonl = load_glue_hub_jsonl(parquet_dir().join(format!("{stem}.jsonl")), task).unwrap();
        assert_eq!(parquet, jsonl, "{stem}");
    }
}

#[test]
fn squad_parquet_files_load_to_expected_examples() {
    let want = expected();
    for stem in ["squad-train", "squad_v2-validation"] {
        let parquet =
            load_squad_hub_parquet(parquet_dir().join(format!("{stem}.parquet"))).unwrap();
        assert_squad_examples(&parquet, &want[stem], stem);
        let jsonl = load_squad_hub_jsonl(parquet_dir().join(format!("{stem}.jsonl"))).unwrap();
        assert_eq!(parquet, jsonl, "{stem}");
    }
    let v2 = load_squad_hub_parquet(parquet_dir().join("squad_v2-validation.parquet")).unwrap();
    assert_eq!(v2.iter().filter(|e| e.is_impossible).count(), 3);
    assert!(v2.iter().any(|e| e.answers.len() == 3));
    // answer_start counts characters: the answers sit where it says despite the non-ASCII
    // text (and the tab) before them.
    for e in &v2 {
        for (text, start) in &e.answers {
            let got: String = e
                .context
                .chars()
                .skip(*start)
                .take(text.chars().count())
                .collect();
            assert_eq!(&got, text, "{}", e.id);
        }
    }
}

#[test]
fn files_dispatch_by_extension() {
    let want = expected();
    // GLUE: parquet and JSON lines.
    for (stem, task) in GLUE_FILES {
        for ext in ["parquet", "jsonl"] {
            let loaded = load_glue_file(parquet_dir().join(format!("{stem}.{ext}")), task).unwrap();
            assert_text_examples(&loaded.examples, &want[stem], &format!("{stem}.{ext}"));
        }
    }
    // GLUE: every original TSV file (checked against its expectations in data_text.rs), labelled
    // or not, told apart by its header alone.
    let glue = fixtures().join("glue");
    let tsv_expected: Value =
        serde_json::from_str(&std::fs::read_to_string(glue.join("expected.json")).unwrap())
            .unwrap();
    let mut unlabelled = 0;
    for key in tsv_expected.as_object().unwrap().keys() {
        let (folder, file) = key.split_once('/').unwrap();
        let task = GLUE_TASKS
            .into_iter()
            .find(|t| t.folder_name() == folder)
            .unwrap();
        let labelled = !file.starts_with("test");
        let direct = load_glue_tsv(glue.join(key), task, labelled).unwrap();
        assert_eq!(
            load_glue_file(glue.join(key), task).unwrap(),
            direct,
            "{key}"
        );
        unlabelled += usize::from(!labelled);
    }
    assert_eq!(
        unlabelled,
        9 + 1,
        "every task's test file and MNLI's test_mismatched"
    );
    // SQuAD: parquet, JSON lines, and .json both as an official file and as JSON lines.
    for stem in ["squad-train", "squad_v2-validation"] {
        for ext in ["parquet", "jsonl"] {
            let got = load_squad_file(parquet_dir().join(format!("{stem}.{ext}"))).unwrap();
            assert_squad_examples(&got, &want[stem], &format!("{stem}.{ext}"));
        }
    }
    let squad = fixtures().join("squad");
    let squad_expected: Value =
        serde_json::from_str(&std::fs::read_to_string(squad.join("expected.json")).unwrap())
            .unwrap();
    for (file, key) in [("squad_v1.json", "v1"), ("squad_v2.json", "v2")] {
        let got = load_squad_file(squad.join(file)).unwrap();
        assert_squad_examples(&got, &squad_expected[key], file);
    }
    let tmp = tempfile::tempdir().unwrap();
    let as_json = tmp.path().join("squad_v2-validation.json");
    std::fs::copy(parquet_dir().join("squad_v2-validation.jsonl"), &as_json).unwrap();
    let got = load_squad_file(&as_json).unwrap();
    assert_squad_examples(&got, &want["squad_v2-validation"], "rows in a .json file");
    // Unknown extensions.
    let e = load_glue_file(tmp.path().join("x.csv"), GlueTask::Sst2).unwrap_err();
    assert!(
        matches!(&e, DataError::Config(m) if m.contains("x.csv")),
        "{e}"
    );
    let e = load_squad_file(tmp.path().join("x.txt")).unwrap_err();
    assert!(
        matches!(&e, DataError::Config(m) if m.contains("x.txt")),
        "{e}"
    );
}

#[test]
fn truncated_and_non_parquet_files_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(parquet_dir().join("glue-sst2-train.parquet")).unwrap();
    for (name, content) in [
        ("half.parquet", bytes[..bytes.len() / 2].to_vec()),
        ("no-footer.parquet", bytes[..bytes.len() - 3].to_vec()),
        ("empty.parquet", Vec::new()),
        (
            "text.parquet",
            b"sentence\tlabel\nnot parquet at all\t1\n".to_vec(),
        ),
    ] {
        let p = tmp.path().join(name);
        std::fs::write(&p, content).unwrap();
        let e = load_glue_hub_parquet(&p, GlueTask::Sst2).unwrap_err();
        assert!(
            matches!(&e, DataError::Parquet { path, .. } if *path == p),
            "{name}: {e}"
        );
        assert!(e.to_string().contains(name), "{e}");
        assert!(e.to_string().contains("not a readable parquet file"), "{e}");
        let e = load_squad_hub_parquet(&p).unwrap_err();
        assert!(
            matches!(&e, DataError::Parquet { .. }) && e.to_string().contains(name),
            "{e}"
        );
    }
    // A missing file is an I/O error naming it.
    let e = load_glue_hub_parquet(tmp.path().join("nope.parquet"), GlueTask::Sst2).unwrap_err();
    assert!(
        matches!(&e, DataError::Io { .. }) && e.to_string().contains("nope.parquet"),
        "{e}"
    );
    // A damaged page header in the third row group (footer intact): an error naming the file
    // and the group's first row (7 + 7 + 1), never a panic.
    let src = parquet_dir().join("glue-sst2-train.parquet");
    let meta = SerializedFileReader::new(std::fs::File::open(&src).unwrap()).unwrap();
    let chunk = meta.metadata().row_group(2).column(0);
    let start = chunk
        .dictionary_page_offset()
        .unwrap_or(chunk.data_page_offset()) as usize;
    let mut damaged = bytes.clone();
    damaged[start] ^= 0x5a;
    damaged[start + 1] ^= 0x5a;
    let p = tmp.path().join("damaged.parquet");
    std::fs::write(&p, damaged).unwrap();
    let e = load_glue_hub_parquet(&p, GlueTask::Sst2).unwrap_err();
    assert!(
        matches!(&e, DataError::Malformed { at, .. } if at.to_string() == "row 15"),
        "{e}"
    );
    assert!(e.to_string().contains("damaged.parquet"), "{e}");
}

#[test]
fn schema_errors_name_the_file_and_the_column() {
    let dir = parquet_dir();
    // A missing column: named, with the columns that are there.
    let p = dir.join("bad-missing-column.parquet");
    match load_glue_hub_parquet(&p, GlueTask::Sst2).unwrap_err() {
        DataError::MissingColumn {
            path,
            at,
            column,
            available,
        } => {
            assert_eq!(path, p);
            assert_eq!(column, "sentence");
            assert_eq!(available, "text, label, idx");
            assert_eq!(at.to_string(), "schema");
        }
        e => panic!("unexpected {e}"),
    }
    // The wrong task for a file is a missing column too (MNLI has premise/hypothesis).
    let e = load_glue_hub_parquet(dir.join("glue-mrpc-validation.parquet"), GlueTask::Mnli)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("missing column `premise` (available: sentence1, sentence2, label, idx)"),
        "{e}"
    );
    // A column of the wrong type.
    let p = dir.join("bad-label-type.parquet");
    let e = load_glue_hub_parquet(&p, GlueTask::Sst2).unwrap_err();
    match &e {
        DataError::ColumnType {
            path,
            column,
            found,
            ..
        } => {
            assert_eq!(*path, p);
            assert_eq!(column, "label");
            assert_eq!(found, "string");
        }
        e => panic!("unexpected {e}"),
    }
    assert!(e.to_string().contains("bad-label-type.parquet"), "{e}");
    // STS-B's float labels are not class indices.
    let e = load_glue_hub_parquet(dir.join("glue-stsb-train.parquet"), GlueTask::Mrpc).unwrap_err();
    assert!(
        matches!(&e, DataError::ColumnType { column, found, .. } if column == "label" && found == "float32"),
        "{e}"
    );
    // SQuAD answers that are not the struct.
    let p = dir.join("bad-squad-answers.parquet");
    let e = load_squad_hub_parquet(&p).unwrap_err();
    assert!(
        matches!(&e, DataError::ColumnType { column, found, .. } if column == "answers" && found == "string"),
        "{e}"
    );
    assert!(e.to_string().contains("bad-squad-answers.parquet"), "{e}");
    // A GLUE file is not a SQuAD file.
    let e = load_squad_hub_parquet(dir.join("glue-sst2-train.parquet")).unwrap_err();
    assert!(
        matches!(&e, DataError::MissingColumn { column, .. } if column == "id"),
        "{e}"
    );
}

#[test]
fn bad_values_name_the_file_and_the_row() {
    let dir = parquet_dir();
    // A null sentence in row 5 (in the second row group of three rows each).
    let p = dir.join("bad-null-sentence.parquet");
    let e = load_glue_hub_parquet(&p, GlueTask::Sst2).unwrap_err();
    assert!(
        matches!(&e, DataError::BadValue { path, at, column, .. }
            if *path == p && at.to_string() == "row 5" && column == "sentence"),
        "{e}"
    );
    assert!(
        e.to_string().contains("bad-null-sentence.parquet: row 5"),
        "{e}"
    );
    // A negative answer_start in row 2.
    let p = dir.join("bad-squad-negative-start.parquet");
    let e = load_squad_hub_parquet(&p).unwrap_err();
    assert!(
        matches!(&e, DataError::BadValue { at, column, .. }
            if at.to_string() == "row 2" && column == "answers.answer_start"),
        "{e}"
    );
    // A codec this build leaves out (zstd): the file and the codec are named.
    let p = dir.join("bad-zstd.parquet");
    let e = load_glue_hub_parquet(&p, GlueTask::Sst2).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("bad-zstd.parquet") && msg.contains("zstd") && msg.contains("snappy"),
        "{msg}"
    );
}
