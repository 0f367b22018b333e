//! Tokenization equals the reference ids of HF's tokenizers on the all-MiniLM-L6-v2 vocabulary
//! (`tests/fixtures/gen_bert_reference.py`: pure-Python `BertTokenizerLegacy` for the cases,
//! the fast tokenizer for SQuAD-style windows).

use crate::bert_common;

use bert_common::*;
use burn::tensor::Device;
use serde_json::Value;
use shears_models::bert::{BertTokenizer, Encoded, Truncation, TruncationStrategy};

fn encode_case(tok: &BertTokenizer, case: &Value) -> Encoded {
    let text = case["text"].as_str().unwrap();
    match case.get("text_pair") {
        Some(pair) => tok.encode_pair(text, pair.as_str().unwrap()).unwrap(),
        None => tok.encode(text).unwrap(),
    }
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check_cases(tok: &BertTokenizer, what: &str) {
    let reference = read_json("tokenizer_reference.json");
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let enc = encode_case(tok, case);
        assert_eq!(enc.ids, u32s(&case["input_ids"]), "{what}: ids of {case}");
        assert_eq!(
            enc.type_ids,
            u32s(&case["token_type_ids"]),
            "{what}: type ids of {case}"
        );
    }
}

#[test]
fn tokenizer_json_matches_reference_ids() {
    let tok = BertTokenizer::from_file(minilm_dir().join("tokenizer.json")).unwrap();
    check_cases(&tok, "tokenizer.json");
}

#[test]
fn vocab_txt_wordpiece_matches_reference_ids() {
    let tok = BertTokenizer::from_vocab(minilm_dir().join("vocab.txt"), true).unwrap();
    check_cases(&tok, "vocab.txt");
}

#[test]
fn padding_from_tokenizer_json_is_off_and_batches_pad_to_the_longest() {
    let device = Device::flex();
    let tok = BertTokenizer::from_file(minilm_dir().join("tokenizer.json")).unwrap();
    // tokenizer.json itself pads to 128; we must not.
    let short = tok.encode("Hi").unwrap();
    assert_eq!(short.ids, vec![101, 7632, 102]);
    let long = tok.encode("How old are you?").unwrap();
    let batch = tok.batch(&[short, long.clone()], &device).unwrap();
    assert_eq!(batch.input_ids.dims(), [2, long.len()]);
    let mask: Vec<i64> = batch
        .attention_mask
        .into_data()
        .convert::<i64>()
        .try_into_vec()
        .unwrap();
    let n = long.len();
    let mut expected = vec![1, 1, 1];
    expected.resize(n, 0);
    expected.extend(vec![1; n]);
    assert_eq!(mask, expected);
}

#[test]
fn truncation_strategies_cut_the_right_sequence() {
    let tok = BertTokenizer::from_file(minilm_dir().join("tokenizer.json")).unwrap();
    let a = "one two three four five six seven eight";
    let b = "alpha beta gamma";
    let trunc = |strategy| {
        tok.clone()
            .with_truncation(Some(Truncation {
                max_length: 10,
                strategy,
                stride: 0,
            }))
            .unwrap()
            .encode_pair(a, b)
            .unwrap()
    };
    let full = tok.encode_pair(a, b).unwrap();
    let count = |e: &Encoded, s: usize| e.sequence_ids.iter().filter(|x| **x == Some(s)).count();
    assert_eq!((count(&full, 0), count(&full, 1)), (8, 3));
    // 10 = 3 specials + 7 content tokens.
    let first = trunc(TruncationStrategy::OnlyFirst);
    assert_eq!(
        (first.len(), count(&first, 0), count(&first, 1)),
        (10, 4, 3)
    );
    let longest = trunc(TruncationStrategy::LongestFirst);
    assert_eq!(
        (longest.len(), count(&longest, 0), count(&longest, 1)),
        (10, 4, 3)
    );
    let b_long = "alpha beta gamma delta epsilon zeta eta theta iota";
    let second = tok
        .clone()
        .with_truncation(Some(Truncation {
            max_length: 10,
            strategy: TruncationStrategy::OnlySecond,
            stride: 0,
        }))
        .unwrap()
        .encode_pair("one two", b_long)
        .unwrap();
    assert_eq!(
        (second.len(), count(&second, 0), count(&second, 1)),
        (10, 2, 5)
    );
}

#[test]
fn qa_windows_match_the_reference_ids_offsets_and_sequence_ids() {
    let reference = read_json("tokenizer_reference.json");
    let qa = &reference["qa"];
    let tok = BertTokenizer::from_file(minilm_dir().join("tokenizer.json")).unwrap();
    let windows = tok
        .encode_qa_windows(
            qa["question"].as_str().unwrap(),
            qa["context"].as_str().unwrap(),
            qa["max_length"].as_u64().unwrap() as usize,
            qa["stride"].as_u64().unwrap() as usize,
        )
        .unwrap();
    let expected = qa["windows"].as_array().unwrap();
    assert!(expected.len() > 1, "the case must overflow");
    assert_eq!(windows.len(), expected.len());
    for (i, (w, e)) in windows.iter().zip(expected).enumerate() {
        assert_eq!(w.ids, u32s(&e["input_ids"]), "window {i} ids");
        assert_eq!(
            w.type_ids,
            u32s(&e["token_type_ids"]),
            "window {i} type ids"
        );
        let offsets: Vec<(usize, usize)> = e["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o[0].as_u64().unwrap() as usize,
                    o[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        assert_eq!(w.offsets, offsets, "window {i} offsets");
        let seq_ids: Vec<Option<usize>> = e["sequence_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().map(|v| v as usize))
            .collect();
        assert_eq!(w.sequence_ids, seq_ids, "window {i} sequence ids");
    }
}

#[test]
fn missing_tokenizer_file_is_an_error_naming_it() {
    let err = BertTokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/tokenizer.json"),
        "{err}"
    );
}
