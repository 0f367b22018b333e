//! Text loaders: GLUE TSV and Hub rows, generic TSV/CSV/JSONL files, the deterministic split,
//! bad-data errors, and the real offline sentence sets.

use std::path::{Path, PathBuf};

use serde_json::Value;
use shears::data::DataError;
use shears::data::glue::{
    GLUE_TASKS, GlueSplit, GlueTask, glue_tsv_path, load_glue_hub_jsonl, load_glue_tsv,
};
use shears::data::text::{
    Header, Label, LabelSpec, TextColumns, TextExample, TextFileConfig, TextFormat, fnv1a_64,
    is_dev_id, load_text, movie_ratings, movie_sentences, split_by_id_hash, uci_sentences,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data")
}

fn assets() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    assert!(
        p.join("data").is_dir(),
        "{} is missing: run scripts/fetch-assets.sh",
        p.join("data").display()
    );
    p
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Compares loaded examples with the generator's expectations.
fn assert_examples(got: &[TextExample], want: &Value, what: &str) {
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
                let want = l["score"].as_f64().unwrap();
                assert!((f64::from(*s) - want).abs() < 1e-6, "{what} {}", g.id)
            }
            (g_l, w_l) => panic!("{what} {}: label {g_l:?} vs expected {w_l}", g.id),
        }
    }
}

#[test]
fn glue_tsv_files_load_to_expected_examples() {
    let dir = fixtures().join("glue");
    let expected = read_json(&dir.join("expected.json"));
    let mut checked = 0;
    for (key, want) in expected.as_object().unwrap() {
        let (folder, file) = key.split_once('/').unwrap();
        let task = GLUE_TASKS
            .into_iter()
            .find(|t| t.folder_name() == folder)
            .unwrap();
        let labelled = !file.starts_with("test");
        let loaded = load_glue_tsv(dir.join(key), task, labelled).unwrap();
        assert_eq!(loaded.dropped, 0);
        assert_examples(&loaded.examples, want, key);
        checked += 1;
    }
    // Train or dev and test of all nine tasks, plus MNLI's four evaluation files.
    assert_eq!(checked, 9 * 2 + 3);
}

#[test]
fn glue_split_paths_follow_the_original_layout() {
    let p = glue_tsv_path("/g", GlueTask::Mnli, GlueSplit::DevMismatched).unwrap();
    assert_eq!(p, Path::new("/g/MNLI/dev_mismatched.tsv"));
    let p = glue_tsv_path("/g", GlueTask::Sst2, GlueSplit::Test).unwrap();
    assert_eq!(p, Path::new("/g/SST-2/test.tsv"));
    assert!(matches!(
        glue_tsv_path("/g", GlueTask::Rte, GlueSplit::DevMismatched),
        Err(DataError::Config(_))
    ));
    assert_eq!(GlueTask::from_name("STS-B"), Some(GlueTask::Stsb));
    assert_eq!(GlueTask::Mnli.num_labels(), 3);
    assert_eq!(GlueTask::Stsb.num_labels(), 1);
}

#[test]
fn glue_hub_rows_load_to_expected_examples() {
    let dir = fixtures().join("glue_hub");
    let expected = read_json(&dir.join("expected.json"));
    for (file, task) in [
        ("sst2-train.jsonl", GlueTask::Sst2),
        ("mnli-test_matched.jsonl", GlueTask::Mnli),
        ("stsb-validation.jsonl", GlueTask::Stsb),
    ] {
        let loaded = load_glue_hub_jsonl(dir.join(file), task).unwrap();
        assert_examples(&loaded.examples, &expected[file], file);
    }
}

#[test]
fn generic_files_load_to_expected_examples() {
    let dir = fixtures().join("text");
    let expected = read_json(&dir.join("expected.json"));
    let csv = TextFileConfig {
        format: TextFormat::Csv,
        header: Header::FirstRow,
        columns: TextColumns {
            id: Some("review_id".into()),
            text: "sentence".into(),
            text_pair: Some("other".into()),
            label: Some("sentiment".into()),
        },
        label: LabelSpec::ClassNames(vec!["negative".into(), "neutral".into(), "positive".into()]),
        drop_unlabeled: false,
    };
    let loaded = load_text(dir.join("pairs.csv"), &csv).unwrap();
    assert_examples(&loaded.examples, &expected["pairs.csv"], "pairs.csv");

    let tsv = TextFileConfig {
        format: TextFormat::Tsv { quoting: true },
        header: Header::FirstRow,
        columns: TextColumns {
            id: None,
            text: "text".into(),
            text_pair: None,
            label: Some("score".into()),
        },
        label: LabelSpec::Score,
        drop_unlabeled: false,
    };
    let loaded = load_text(dir.join("scores.tsv"), &tsv).unwrap();
    assert_examples(&loaded.examples, &expected["scores.tsv"], "scores.tsv");

    let jsonl = TextFileConfig {
        format: TextFormat::JsonLines,
        header: Header::FirstRow,
        columns: TextColumns {
            id: Some("id".into()),
            text: "text".into(),
            text_pair: None,
            label: Some("label".into()),
        },
        label: LabelSpec::ClassIndex { num_classes: 2 },
        drop_unlabeled: true,
    };
    let loaded = load_text(dir.join("sentences.jsonl"), &jsonl).unwrap();
    assert_eq!(loaded.dropped, 1);
    assert_examples(&loaded.examples, &expected["sentences.jsonl"], "jsonl");

    // Without drop_unlabeled the null label is an error naming line 3.
    let strict = TextFileConfig {
        drop_unlabeled: false,
        ..jsonl
    };
    let err = load_text(dir.join("sentences.jsonl"), &strict).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("sentences.jsonl") && msg.contains("line 3"),
        "{msg}"
    );
}

#[test]
fn hash_split_matches_reference_fnv1a() {
    let split = read_json(&fixtures().join("text/split.json"));
    let frac = split["dev_fraction"].as_f64().unwrap();
    let ids: Vec<&str> = split["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for (id, h) in ids.iter().zip(split["hashes"].as_array().unwrap()) {
        assert_eq!(fnv1a_64(id.as_bytes()).to_string(), h.as_str().unwrap());
    }
    let examples: Vec<TextExample> = ids
        .iter()
        .rev()
        .map(|id| TextExample {
            id: (*id).to_owned(),
            text: String::new(),
            text_pair: None,
            label: Label::Missing,
        })
        .collect();
    let (train, dev) = split_by_id_hash(examples, frac);
    let mut dev_ids: Vec<&str> = dev.iter().map(|e| e.id.as_str()).collect();
    let mut want: Vec<&str> = split["dev"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    dev_ids.sort();
    want.sort();
    assert_eq!(dev_ids, want);
    assert_eq!(train.len() + dev.len(), ids.len());
    assert!(train.iter().all(|e| !is_dev_id(&e.id, frac)));
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn bad_text_files_are_errors_naming_file_and_row() {
    let tmp = tempfile::tempdir().unwrap();
    // Missing column in an RTE file.
    let p = write(
        tmp.path(),
        "rte.tsv",
        "index\tsentence1\tsentence2\n0\ta\tb\n",
    );
    match load_glue_tsv(&p, GlueTask::Rte, true).unwrap_err() {
        DataError::MissingColumn {
            path, at, column, ..
        } => {
            assert_eq!(path, p);
            assert_eq!(column, "label");
            assert_eq!(at.to_string(), "line 1");
        }
        e => panic!("unexpected {e}"),
    }
    // Ragged row on line 3 (a stray tab).
    let p = write(
        tmp.path(),
        "sst.tsv",
        "sentence\tlabel\ngood\t1\nbad\tmovie\t0\n",
    );
    let e = load_glue_tsv(&p, GlueTask::Sst2, true).unwrap_err();
    assert!(
        matches!(&e, DataError::RaggedRow { at, expected: 2, found: 3, .. } if at.to_string() == "line 3"),
        "{e}"
    );
    assert!(e.to_string().contains("sst.tsv"));
    // Unknown class name on line 2.
    let p = write(
        tmp.path(),
        "qnli.tsv",
        "index\tquestion\tsentence\tlabel\n0\tq\ts\tmaybe\n",
    );
    let e = load_glue_tsv(&p, GlueTask::Qnli, true).unwrap_err();
    assert!(
        matches!(&e, DataError::BadValue { at, column, .. } if at.to_string() == "line 2" && column == "label"),
        "{e}"
    );
    // Class index out of range.
    let p = write(tmp.path(), "cola.tsv", "src\t2\t\ttext\n");
    let e = load_glue_tsv(&p, GlueTask::Cola, true).unwrap_err();
    assert!(matches!(&e, DataError::BadValue { .. }), "{e}");
    // Malformed JSON line.
    let p = write(
        tmp.path(),
        "x.jsonl",
        "{\"sentence\": \"a\", \"label\": 1, \"idx\": 0}\n{oops\n",
    );
    let e = load_glue_hub_jsonl(&p, GlueTask::Sst2).unwrap_err();
    assert!(
        matches!(&e, DataError::Malformed { at, .. } if at.to_string() == "line 2"),
        "{e}"
    );
    // Missing file.
    let e = load_glue_tsv(tmp.path().join("nope.tsv"), GlueTask::Sst2, true).unwrap_err();
    assert!(matches!(&e, DataError::Io { .. }) && e.to_string().contains("nope.tsv"));
    // Unclosed quote in a CSV file.
    let p = write(tmp.path(), "q.csv", "text,label\n\"open,1\n");
    let cfg = TextFileConfig {
        format: TextFormat::Csv,
        header: Header::FirstRow,
        columns: TextColumns {
            id: None,
            text: "text".into(),
            text_pair: None,
            label: Some("label".into()),
        },
        label: LabelSpec::ClassIndex { num_classes: 2 },
        drop_unlabeled: false,
    };
    let e = load_text(&p, &cfg).unwrap_err();
    assert!(e.to_string().contains("q.csv"), "{e}");
}

#[test]
fn real_movie_sentences_have_the_expected_counts() {
    let loaded = movie_sentences(assets()).unwrap();
    assert_eq!(loaded.examples.len(), 10_568);
    assert_eq!(loaded.dropped, 37);
    let pos = loaded
        .examples
        .iter()
        .filter(|e| e.label == Label::Class(1))
        .count();
    assert_eq!(pos, 5_242);
    assert_eq!(loaded.examples.len() - pos, 5_326);
    let ratings = movie_ratings(assets()).unwrap();
    assert_eq!(ratings.examples.len(), 10_605);
    assert!(
        ratings
            .examples
            .iter()
            .all(|e| matches!(e.label, Label::Score(s) if (-4.0..=4.0).contains(&s)))
    );
    // The split is a partition, and stable.
    let (train, dev) = split_by_id_hash(loaded.examples.clone(), 0.1);
    assert_eq!(train.len() + dev.len(), 10_568);
    let (_, dev2) = split_by_id_hash(loaded.examples, 0.1);
    assert_eq!(dev, dev2);
    assert!(dev.len() > 900 && dev.len() < 1_200, "{}", dev.len());
}

#[test]
fn real_uci_sentences_have_the_expected_counts() {
    let loaded = uci_sentences(assets()).unwrap();
    assert_eq!(loaded.examples.len(), 3_000);
    assert_eq!(loaded.dropped, 3);
    let pos = loaded
        .examples
        .iter()
        .filter(|e| e.label == Label::Class(1))
        .count();
    assert_eq!(pos, 1_500);
    assert_eq!(loaded.examples[0].id, "amazon-0");
    assert_eq!(loaded.examples[2_999].id, "yelp-999");
}

#[test]
fn a_missing_assets_folder_says_how_to_fetch_it() {
    let e = movie_sentences("/nonexistent-assets").unwrap_err();
    assert!(e.to_string().contains("run scripts/fetch-assets.sh"), "{e}");
    let e = uci_sentences("/nonexistent-assets").unwrap_err();
    assert!(e.to_string().contains("run scripts/fetch-assets.sh"), "{e}");
}
