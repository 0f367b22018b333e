//! Metrics against reference values computed by scikit-learn, scipy and the official SQuAD
//! evaluation logic (tests/fixtures/metrics/gen_metrics.py).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use shears::data::glue::GlueTask;
use shears::data::squad::SquadExample;
use shears::metrics::MetricError;
use shears::metrics::classification::{accuracy, f1_binary, matthews_corrcoef};
use shears::metrics::correlation::{average_ranks, pearson, spearman};
use shears::metrics::glue::{GluePredictions, glue_metrics, metric_names};
use shears::metrics::squad::{exact_match, f1_v1, normalize_answer, squad_v1, squad_v2};

fn reference() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics/reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-12, "{what}: {a} vs reference {b}");
}

#[test]
fn classification_metrics_match_scikit_learn() {
    let r = reference();
    for case in r["classification"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (p, l) = (usizes(&case["predictions"]), usizes(&case["labels"]));
        close(
            accuracy(&p, &l).unwrap(),
            case["accuracy"].as_f64().unwrap(),
            name,
        );
        close(
            matthews_corrcoef(&p, &l).unwrap(),
            case["matthews"].as_f64().unwrap(),
            name,
        );
        if let Some(f1) = case.get("f1") {
            close(f1_binary(&p, &l).unwrap(), f1.as_f64().unwrap(), name);
        }
    }
    assert_eq!(
        accuracy(&[1, 0], &[1]),
        Err(MetricError::LengthMismatch {
            predictions: 2,
            references: 1
        })
    );
    assert_eq!(f1_binary(&[], &[]), Err(MetricError::Empty));
}

#[test]
fn correlations_match_scipy() {
    let r = reference();
    for case in r["correlation"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (x, y) = (f64s(&case["x"]), f64s(&case["y"]));
        let (p, s) = (pearson(&x, &y).unwrap(), spearman(&x, &y).unwrap());
        match case["pearson"].as_f64() {
            Some(want) => close(p, want, name),
            None => assert!(p.is_nan(), "{name}: scipy gives NaN"),
        }
        match case["spearman"].as_f64() {
            Some(want) => close(s, want, name),
            None => assert!(s.is_nan(), "{name}: scipy gives NaN"),
        }
    }
    // Ties get the average of their ranks.
    assert_eq!(
        average_ranks(&[3.0, 1.0, 3.0, 2.0]),
        vec![3.5, 1.0, 3.5, 2.0]
    );
}

#[test]
fn glue_metric_sets_match_the_reference() {
    let r = reference();
    let mut tasks = 0;
    for case in r["glue"].as_array().unwrap() {
        let name = case["task"].as_str().unwrap();
        let task = GlueTask::from_name(name).unwrap();
        let (pc, lc, ps, ls): (Vec<usize>, Vec<usize>, Vec<f64>, Vec<f64>);
        let preds = if task.is_regression() {
            ps = f64s(&case["predictions"]);
            ls = f64s(&case["labels"]);
            GluePredictions::Scores {
                predictions: &ps,
                labels: &ls,
            }
        } else {
            pc = usizes(&case["predictions"]);
            lc = usizes(&case["labels"]);
            GluePredictions::Classes {
                predictions: &pc,
                labels: &lc,
            }
        };
        let got = glue_metrics(task, preds).unwrap();
        let want = case["metrics"].as_object().unwrap();
        let mut names: Vec<&str> = got.keys().copied().collect();
        let mut want_names: Vec<&str> = want.keys().map(String::as_str).collect();
        names.sort();
        want_names.sort();
        assert_eq!(names, want_names, "{name}");
        let mut listed: Vec<&str> = metric_names(task).to_vec();
        listed.sort();
        assert_eq!(listed, want_names, "{name}");
        for (k, v) in want {
            close(got[k.as_str()], v.as_f64().unwrap(), &format!("{name} {k}"));
        }
        tasks += 1;
    }
    assert_eq!(tasks, 9);
    let e = glue_metrics(
        GlueTask::Stsb,
        GluePredictions::Classes {
            predictions: &[1],
            labels: &[1],
        },
    );
    assert!(matches!(e, Err(MetricError::WrongKind(_))));
}

fn examples(cases: &Value) -> (Vec<SquadExample>, HashMap<String, String>) {
    let mut ex = Vec::new();
    let mut preds = HashMap::new();
    for c in cases.as_array().unwrap() {
        let id = c["id"].as_str().unwrap().to_owned();
        let answers: Vec<(String, usize)> = c["answers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a.as_str().unwrap().to_owned(), 0))
            .collect();
        preds.insert(id.clone(), c["prediction"].as_str().unwrap().to_owned());
        ex.push(SquadExample {
            id,
            title: String::new(),
            question: String::new(),
            context: String::new(),
            is_impossible: answers.is_empty(),
            answers,
        });
    }
    (ex, preds)
}

#[test]
fn squad_v1_matches_the_official_script() {
    let r = reference();
    let v1 = &r["squad_v1"];
    let (ex, preds) = examples(&v1["cases"]);
    for (c, e) in v1["cases"].as_array().unwrap().iter().zip(&ex) {
        let pred = &preds[&e.id];
        assert_eq!(
            normalize_answer(pred),
            c["normalized_prediction"].as_str().unwrap(),
            "{}",
            e.id
        );
        let em = e
            .answers
            .iter()
            .map(|(g, _)| exact_match(pred, g))
            .fold(0.0, f64::max);
        let f1 = e
            .answers
            .iter()
            .map(|(g, _)| f1_v1(pred, g))
            .fold(0.0, f64::max);
        close(em, c["exact_match"].as_f64().unwrap(), &e.id);
        close(f1, c["f1"].as_f64().unwrap(), &e.id);
    }
    let total = squad_v1(&ex, &preds).unwrap();
    close(
        total.exact_match,
        v1["total"]["exact_match"].as_f64().unwrap(),
        "EM",
    );
    close(total.f1, v1["total"]["f1"].as_f64().unwrap(), "F1");
    let mut missing = preds.clone();
    missing.remove("v1-3");
    assert_eq!(
        squad_v1(&ex, &missing),
        Err(MetricError::MissingPrediction("v1-3".into()))
    );
}

#[test]
fn squad_v2_matches_the_official_script() {
    let r = reference();
    let v2 = &r["squad_v2"];
    let (ex, preds) = examples(&v2["cases"]);
    let got = squad_v2(&ex, &preds).unwrap();
    let t = &v2["total"];
    close(got.all.exact, t["exact"].as_f64().unwrap(), "exact");
    close(got.all.f1, t["f1"].as_f64().unwrap(), "f1");
    assert_eq!(got.all.total as u64, t["total"].as_u64().unwrap());
    let has = got.has_ans.unwrap();
    close(
        has.exact,
        t["HasAns_exact"].as_f64().unwrap(),
        "HasAns_exact",
    );
    close(has.f1, t["HasAns_f1"].as_f64().unwrap(), "HasAns_f1");
    assert_eq!(has.total as u64, t["HasAns_total"].as_u64().unwrap());
    let no = got.no_ans.unwrap();
    close(no.exact, t["NoAns_exact"].as_f64().unwrap(), "NoAns_exact");
    close(no.f1, t["NoAns_f1"].as_f64().unwrap(), "NoAns_f1");
    assert_eq!(no.total as u64, t["NoAns_total"].as_u64().unwrap());
}
