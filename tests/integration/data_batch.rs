//! Tokenization of text examples against transformers, dynamic padding, length bucketing and
//! multi-threaded loading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, InMemDataset};
use burn::tensor::Device;
use serde_json::Value;
use shears::data::DataError;
use shears::data::batch::{
    BatchLabels, EncodedText, ReorderedDataset, TextBatcher, encode_texts, length_bucketed_order,
    pad_token_id,
};
use shears::data::glue::{GlueTask, load_glue_tsv};
use shears::data::text::{Label, TextExample};
use tokenizers::Tokenizer;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data")
}

fn minilm() -> Tokenizer {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/all-MiniLM-L6-v2");
    assert!(
        p.is_dir(),
        "{} is missing: run scripts/fetch-assets.sh",
        p.display()
    );
    Tokenizer::from_file(p.join("tokenizer.json")).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn encodings_match_transformers_and_ignore_the_forced_padding() {
    let tok = minilm();
    // The shipped tokenizer.json pads to 128; its pad id is the [PAD] token.
    assert_eq!(
        pad_token_id(&tok).unwrap(),
        tok.token_to_id("[PAD]").unwrap()
    );
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("text/minilm_encodings.json")).unwrap(),
    )
    .unwrap();
    let mut by_file: HashMap<&str, Vec<&Value>> = HashMap::new();
    for r in reference.as_array().unwrap() {
        by_file
            .entry(r["file"].as_str().unwrap())
            .or_default()
            .push(r);
    }
    for (file, task) in [
        ("MRPC/train.tsv", GlueTask::Mrpc),
        ("SST-2/dev.tsv", GlueTask::Sst2),
    ] {
        let loaded = load_glue_tsv(fixtures().join("glue").join(file), task, true).unwrap();
        let refs = &by_file[file];
        let encoded = encode_texts(&tok, &loaded.examples[..refs.len()], 24).unwrap();
        for (e, r) in encoded.iter().zip(refs) {
            assert_eq!(e.id, r["id"].as_str().unwrap());
            assert_eq!(e.input_ids, u32s(&r["input_ids"]), "{file} {}", e.id);
            assert_eq!(
                e.token_type_ids,
                u32s(&r["token_type_ids"]),
                "{file} {}",
                e.id
            );
        }
    }
}

fn item(len: usize, label: Label) -> EncodedText {
    EncodedText {
        id: format!("len{len}"),
        input_ids: (1..=len as u32).map(|i| 100 + i).collect(),
        token_type_ids: (0..len).map(|i| u32::from(i >= len / 2)).collect(),
        label,
    }
}

#[test]
fn batches_pad_to_the_longest_with_masks() {
    let items = vec![
        item(3, Label::Class(1)),
        item(7, Label::Class(0)),
        item(5, Label::Class(2)),
    ];
    let b = TextBatcher { pad_id: 9 }.batch(items.clone(), &Device::default());
    assert_eq!(b.input_ids.dims(), [3, 7]);
    let ids: Vec<i64> = b.input_ids.into_data().iter::<i64>().collect();
    let types: Vec<i64> = b.token_type_ids.into_data().iter::<i64>().collect();
    let mask: Vec<i64> = b.attention_mask.into_data().iter::<i64>().collect();
    for (r, it) in items.iter().enumerate() {
        for k in 0..7 {
            let at = r * 7 + k;
            if k < it.input_ids.len() {
                assert_eq!(ids[at], i64::from(it.input_ids[k]));
                assert_eq!(types[at], i64::from(it.token_type_ids[k]));
                assert_eq!(mask[at], 1);
            } else {
                assert_eq!((ids[at], types[at], mask[at]), (9, 0, 0));
            }
        }
    }
    let BatchLabels::Class(labels) = b.labels else {
        panic!("class labels expected")
    };
    assert_eq!(
        labels.into_data().iter::<i64>().collect::<Vec<i64>>(),
        vec![1, 0, 2]
    );

    let scores = vec![item(2, Label::Score(0.5)), item(4, Label::Score(-2.25))];
    let b = TextBatcher { pad_id: 0 }.batch(scores, &Device::default());
    let BatchLabels::Score(s) = b.labels else {
        panic!("scores expected")
    };
    assert_eq!(
        s.into_data().iter::<f32>().collect::<Vec<f32>>(),
        vec![0.5, -2.25]
    );
}

#[test]
fn mixed_label_kinds_are_rejected_before_batching() {
    let tok = minilm();
    let ex = |label| TextExample {
        id: "a".into(),
        text: "hi".into(),
        text_pair: None,
        label,
    };
    let e = encode_texts(&tok, &[ex(Label::Class(0)), ex(Label::Score(1.0))], 16).unwrap_err();
    assert!(matches!(e, DataError::Config(_)));
}

#[test]
fn length_bucketing_is_a_permutation_with_less_padding() {
    // Pseudo-random lengths in 5..125 (a multiplicative hash of the index).
    let lengths: Vec<usize> = (0..1000u64)
        .map(|i| 5 + ((i * 2_654_435_761) % 1_000_003 % 120) as usize)
        .collect();
    let order = length_bucketed_order(&lengths, 32, 8, 7);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_eq!(order, length_bucketed_order(&lengths, 32, 8, 7));
    assert_ne!(order, length_bucketed_order(&lengths, 32, 8, 8));
    let padding = |ord: &[usize]| -> usize {
        ord.chunks(32)
            .map(|b| {
                let m = b.iter().map(|&i| lengths[i]).max().unwrap();
                b.iter().map(|&i| m - lengths[i]).sum::<usize>()
            })
            .sum()
    };
    let plain: Vec<usize> = (0..1000).collect();
    let (bucketed, unbucketed) = (padding(&order), padding(&plain));
    assert!(bucketed * 4 < unbucketed, "{bucketed} vs {unbucketed}");
    // Only the last batch is short.
    assert_eq!(1000 % 32, 8);
    let last: Vec<usize> = order[992..].to_vec();
    assert_eq!(last.len(), 8);
}

#[test]
fn multi_threaded_loading_sees_every_item_once() {
    let items: Vec<EncodedText> = (0..103)
        .map(|i| item(1 + i % 17, Label::Class(i)))
        .collect();
    let lengths: Vec<usize> = items.iter().map(|i| i.input_ids.len()).collect();
    let order = length_bucketed_order(&lengths, 8, 4, 1);
    let data = ReorderedDataset::new(InMemDataset::new(items), order).unwrap();
    assert_eq!(data.len(), 103);
    let loader = DataLoaderBuilder::new(TextBatcher { pad_id: 0 })
        .batch_size(8)
        .num_workers(3)
        .build(data);
    let mut seen = Vec::new();
    for b in loader.iter() {
        let b = b.unwrap();
        let BatchLabels::Class(l) = b.labels else {
            panic!()
        };
        seen.extend(l.into_data().iter::<i64>().collect::<Vec<i64>>());
    }
    seen.sort();
    assert_eq!(seen, (0..103).collect::<Vec<i64>>());
    // An order pointing outside the data set is an error.
    let bad = ReorderedDataset::new(InMemDataset::new(vec![item(1, Label::Missing)]), vec![1]);
    assert!(bad.is_err());
}
