//! SQuAD: loading the official and Hub formats, windows against transformers' reference,
//! the gold-answer round trip through pre- and postprocessing, and postprocessing rules.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::Device;
use serde_json::Value;
use shears::data::DataError;
use shears::data::batch::SquadBatcher;
use shears::data::squad::{
    SquadExample, SquadFeature, SquadPostprocessConfig, SquadPreprocessConfig,
    load_squad_hub_jsonl, load_squad_json, postprocess_squad, preprocess_squad,
};
use shears::metrics::squad::{squad_v1, squad_v2};
use tokenizers::Tokenizer;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/squad")
}

fn assets() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    assert!(
        p.join("models").is_dir(),
        "{} is missing: run scripts/fetch-assets.sh",
        p.join("models").display()
    );
    p
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn minilm() -> Tokenizer {
    Tokenizer::from_file(assets().join("models/all-MiniLM-L6-v2/tokenizer.json")).unwrap()
}

/// A WordPiece tokenizer over the fixture's words, set up as BERT's (uncased).
fn tiny() -> Tokenizer {
    let wp = WordPiece::from_file(fixtures().join("tiny_vocab.txt").to_str().unwrap())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = Tokenizer::new(wp);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, true)));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    let sep = tok.token_to_id("[SEP]").unwrap();
    let cls = tok.token_to_id("[CLS]").unwrap();
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    tok
}

fn assert_matches_expected(got: &[SquadExample], want: &Value) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.id, w["id"].as_str().unwrap());
        assert_eq!(g.title, w["title"].as_str().unwrap());
        assert_eq!(g.question, w["question"].as_str().unwrap());
        assert_eq!(g.context, w["context"].as_str().unwrap());
        assert_eq!(g.is_impossible, w["is_impossible"].as_bool().unwrap());
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
        assert_eq!(g.answers, answers, "{}", g.id);
    }
}

#[test]
fn official_and_hub_files_load_to_expected_examples() {
    let want = read_json(&fixtures().join("expected.json"));
    let v1 = load_squad_json(fixtures().join("squad_v1.json")).unwrap();
    assert_matches_expected(&v1, &want["v1"]);
    let v2 = load_squad_json(fixtures().join("squad_v2.json")).unwrap();
    assert_matches_expected(&v2, &want["v2"]);
    assert!(v2.iter().filter(|e| e.is_impossible).count() == 3);
    let hub = load_squad_hub_jsonl(fixtures().join("squad_v2_hub.jsonl")).unwrap();
    assert_matches_expected(&hub, &want["v2"]);
    // Every answer is where answer_start says (characters, not bytes: the fixture has
    // non-ASCII text before some answers).
    for e in v1.iter().chain(&v2) {
        for (text, start) in &e.answers {
            let got: String = e
                .context
                .chars()
                .skip(*start)
                .take(text.chars().count())
                .collect();
            assert_eq!(&got, text);
        }
    }
}

#[test]
fn bad_squad_files_are_errors_naming_file_and_question() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.json");
    std::fs::write(
        &p,
        r#"{"data":[{"title":"t","paragraphs":[{"context":"short","qas":[
            {"id":"a","question":"q","answers":[{"text":"short","answer_start":0}]},
            {"id":"b","question":"q","answers":[{"text":"longer text","answer_start":2}]}]}]}]}"#,
    )
    .unwrap();
    let e = load_squad_json(&p).unwrap_err();
    assert!(
        matches!(&e, DataError::BadValue { at, column, .. }
            if at.to_string() == "record 2" && column.contains("qas[1].answers[0]")),
        "{e}"
    );
    assert!(e.to_string().contains("bad.json"));
    std::fs::write(&p, r#"{"data":[{"paragraphs":[{"qas":[]}]}]}"#).unwrap();
    let e = load_squad_json(&p).unwrap_err();
    assert!(
        matches!(&e, DataError::Malformed { .. }) && e.to_string().contains("context"),
        "{e}"
    );
}

#[test]
fn minilm_windows_match_transformers() {
    let examples = load_squad_json(fixtures().join("squad_v1.json")).unwrap();
    let features =
        preprocess_squad(&minilm(), &examples, &SquadPreprocessConfig::default()).unwrap();
    let want = read_json(&fixtures().join("minilm_windows.json"));
    let want = want.as_array().unwrap();
    assert_eq!(features.len(), want.len());
    let mut window_of = HashMap::new();
    for (f, w) in features.iter().zip(want) {
        assert_eq!(f.example_index as u64, w["example"].as_u64().unwrap());
        let k = window_of.entry(f.example_index).or_insert(0usize);
        assert_eq!(f.window, *k);
        *k += 1;
        let ids: Vec<u32> = w["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(f.input_ids, ids);
        assert!(f.input_ids.len() <= 384);
        let types: Vec<u32> = w["token_type_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(f.token_type_ids, types);
        let offsets: Vec<Option<(usize, usize)>> = w["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                o.as_array().map(|a| {
                    (
                        a[0].as_u64().unwrap() as usize,
                        a[1].as_u64().unwrap() as usize,
                    )
                })
            })
            .collect();
        assert_eq!(f.offsets, offsets);
        assert_eq!(
            f.start_position as u64,
            w["start_position"].as_u64().unwrap()
        );
        assert_eq!(f.end_position as u64, w["end_position"].as_u64().unwrap());
    }
}

/// Logits peaked (10) at the tokens that start and end the first gold answer exactly, or at
/// `[CLS]` when the window does not contain it.
fn peaked_logits(
    examples: &[SquadExample],
    features: &[SquadFeature],
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for f in features {
        let n = f.input_ids.len() + 3; // extra positions: logits of a padded batch
        let (mut s, mut e) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (s_tok, e_tok) = match examples[f.example_index].answers.first() {
            Some((text, start)) => {
                let end = start + text.chars().count();
                let st = f
                    .offsets
                    .iter()
                    .position(|o| o.is_some_and(|o| o.0 == *start));
                let et = f.offsets.iter().position(|o| o.is_some_and(|o| o.1 == end));
                match (st, et) {
                    (Some(a), Some(b)) => (a, b),
                    _ => (0, 0),
                }
            }
            None => (0, 0),
        };
        s[s_tok] = 10.0;
        e[e_tok] = 10.0;
        starts.push(s);
        ends.push(e);
    }
    (starts, ends)
}

/// Runs the round trip and checks the window structure the fixture is meant to exercise.
fn round_trip(tok: &Tokenizer, cfg: SquadPreprocessConfig) {
    let v1 = load_squad_json(fixtures().join("squad_v1.json")).unwrap();
    let features = preprocess_squad(tok, &v1, &cfg).unwrap();
    assert!(features.iter().all(|f| f.input_ids.len() <= cfg.max_length));
    // Some answer is found only in a later window, and some answer straddles the end of a
    // window (it starts inside the window's context but ends after it).
    let mut only_later = false;
    let mut straddles = false;
    for (i, e) in v1.iter().enumerate() {
        let (text, start) = &e.answers[0];
        let end = start + text.chars().count();
        let wins: Vec<&SquadFeature> = features.iter().filter(|f| f.example_index == i).collect();
        let has: Vec<bool> = wins.iter().map(|f| f.start_position > 0).collect();
        assert!(has.iter().any(|&h| h), "answer of {} in no window", e.id);
        only_later |= !has[0];
        for f in &wins {
            let last_end = f.offsets.iter().flatten().map(|o| o.1).max().unwrap();
            straddles |= *start < last_end && end > last_end;
            if f.start_position > 0 {
                assert_eq!(f.offsets[f.start_position].unwrap().0, *start);
                assert_eq!(f.offsets[f.end_position].unwrap().1, end);
            }
        }
    }
    assert!(
        only_later && straddles,
        "fixture does not exercise the windows"
    );
    let (s, e) = peaked_logits(&v1, &features);
    let preds =
        postprocess_squad(&v1, &features, &s, &e, &SquadPostprocessConfig::default()).unwrap();
    let map: HashMap<String, String> = preds.into_iter().map(|p| (p.id, p.text)).collect();
    let scores = squad_v1(&v1, &map).unwrap();
    assert_eq!(scores.exact_match, 100.0);
    assert_eq!(scores.f1, 100.0);

    let v2 = load_squad_json(fixtures().join("squad_v2.json")).unwrap();
    let features = preprocess_squad(tok, &v2, &cfg).unwrap();
    let (s, e) = peaked_logits(&v2, &features);
    let post = SquadPostprocessConfig {
        version_2: true,
        ..SquadPostprocessConfig::default()
    };
    let preds = postprocess_squad(&v2, &features, &s, &e, &post).unwrap();
    for (p, ex) in preds.iter().zip(&v2) {
        assert_eq!(p.text.is_empty(), ex.is_impossible, "{}", ex.id);
    }
    let map: HashMap<String, String> = preds.into_iter().map(|p| (p.id, p.text)).collect();
    let scores = squad_v2(&v2, &map).unwrap();
    assert_eq!(scores.all.exact, 100.0);
    assert_eq!(scores.all.f1, 100.0);
    assert_eq!(scores.no_ans.unwrap().total, 3);
}

#[test]
fn round_trip_gives_perfect_scores_with_a_tiny_wordpiece() {
    let tok = tiny();
    round_trip(
        &tok,
        SquadPreprocessConfig {
            max_length: 64,
            doc_stride: 24,
        },
    );
    round_trip(
        &tok,
        SquadPreprocessConfig {
            max_length: 48,
            doc_stride: 16,
        },
    );
}

#[test]
fn round_trip_gives_perfect_scores_with_minilm_at_384_128() {
    round_trip(&minilm(), SquadPreprocessConfig::default());
}

fn one_feature(n: usize) -> (SquadExample, SquadFeature) {
    // Context of n one-character words "a b c ...", token k >= 1 is word k - 1.
    let words: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
    let context = words.join(" ");
    let mut offsets = vec![None];
    let mut pos = 0;
    for w in &words {
        offsets.push(Some((pos, pos + w.len())));
        pos += w.len() + 1;
    }
    let ex = SquadExample {
        id: "x".into(),
        title: String::new(),
        question: "q".into(),
        context,
        answers: vec![],
        is_impossible: true,
    };
    let f = SquadFeature {
        example_index: 0,
        example_id: "x".into(),
        window: 0,
        input_ids: vec![0; n + 1],
        token_type_ids: vec![1; n + 1],
        offsets,
        start_position: 0,
        end_position: 0,
    };
    (ex, f)
}

#[test]
fn postprocessing_respects_max_length_order_and_null_threshold() {
    let (ex, f) = one_feature(40);
    let (exs, fs) = (&[ex][..], &[f][..]);
    let mut s = vec![0.0f32; 41];
    let mut e = vec![0.0f32; 41];
    // The best pair (1, 31) is 31 tokens long: too long.
    s[1] = 9.0;
    e[31] = 9.0;
    s[2] = 4.0;
    e[3] = 5.0;
    let cfg = SquadPostprocessConfig::default();
    let p = postprocess_squad(exs, fs, &[s.clone()], &[e.clone()], &cfg).unwrap();
    // s[1] + e[3] = 14 beats s[2] + e[31] = 13 and s[2] + e[3] = 9: "w0 w1 w2".
    assert_eq!(p[0].text, "w0 w1 w2");
    // An end before the start is never chosen.
    let mut s2 = vec![0.0f32; 41];
    let mut e2 = vec![0.0f32; 41];
    s2[10] = 9.0;
    e2[5] = 9.0;
    e2[12] = 1.0;
    let p = postprocess_squad(exs, fs, &[s2], &[e2], &cfg).unwrap();
    assert_eq!(p[0].text, "w9 w10 w11");
    // v2: null score s[0] + e[0] = 20 against the best span 14: diff 6 > 0 gives "".
    s[0] = 10.0;
    e[0] = 10.0;
    let v2 = SquadPostprocessConfig {
        version_2: true,
        ..cfg
    };
    let p = postprocess_squad(exs, fs, &[s.clone()], &[e.clone()], &v2).unwrap();
    assert_eq!(p[0].text, "");
    assert!((p[0].null_score_diff - 6.0).abs() < 1e-6);
    // A threshold above the difference keeps the span.
    let lenient = SquadPostprocessConfig {
        null_score_diff_threshold: 6.5,
        ..v2
    };
    let p = postprocess_squad(exs, fs, &[s], &[e], &lenient).unwrap();
    assert_eq!(p[0].text, "w0 w1 w2");
    // Mismatched logits are an error, not a panic.
    let e = postprocess_squad(exs, fs, &[vec![0.0; 3]], &[vec![0.0; 3]], &cfg).unwrap_err();
    assert!(matches!(e, DataError::Config(_)));
}

#[test]
fn squad_batches_are_padded_with_masks_and_targets() {
    let v1 = load_squad_json(fixtures().join("squad_v1.json")).unwrap();
    let tok = tiny();
    let cfg = SquadPreprocessConfig {
        max_length: 64,
        doc_stride: 24,
    };
    let features = preprocess_squad(&tok, &v1, &cfg).unwrap();
    let items: Vec<SquadFeature> = features[..5].to_vec();
    let longest = items.iter().map(|f| f.input_ids.len()).max().unwrap();
    let b = SquadBatcher { pad_id: 0 }.batch(items.clone(), &Device::default());
    assert_eq!(b.input_ids.dims(), [5, longest]);
    let ids: Vec<i64> = b.input_ids.into_data().iter::<i64>().collect();
    let mask: Vec<i64> = b.attention_mask.into_data().iter::<i64>().collect();
    let starts: Vec<i64> = b.start_positions.into_data().iter::<i64>().collect();
    for (r, f) in items.iter().enumerate() {
        for k in 0..longest {
            let (id, m) = (ids[r * longest + k], mask[r * longest + k]);
            if k < f.input_ids.len() {
                assert_eq!((id, m), (i64::from(f.input_ids[k]), 1));
            } else {
                assert_eq!((id, m), (0, 0));
            }
        }
        assert_eq!(starts[r], f.start_position as i64);
    }
}
