//! Parity of the BERT backbone with PyTorch/transformers on the real all-MiniLM-L6-v2
//! checkpoint (reference: `tests/fixtures/gen_bert_reference.py`).

use crate::bert_common;

use bert_common::*;
use burn::tensor::{Device, Tensor};
use shears_models::bert::{
    BertModel, ModelSource, Pretrained, l2_normalize, load_pretrained, mean_pool,
};

fn load(device: &Device) -> Pretrained<BertModel> {
    let files = ModelSource::Local(minilm_dir()).resolve().unwrap();
    load_pretrained::<BertModel>(&files, device).unwrap()
}

#[allow(deprecated)]
fn devices() -> Vec<(&'static str, Device)> {
    vec![("flex", Device::flex()), ("ndarray", Device::ndarray())]
}

#[test]
fn minilm_loads_every_tensor_and_reports_the_position_ids_buffer() {
    let p = load(&Device::flex());
    // 6 layers x 16 tensors + 5 embedding tensors + 2 pooler tensors.
    assert_eq!(p.report.loaded.len(), 6 * 16 + 5 + 2);
    assert!(p.report.initialized.is_empty(), "{}", p.report);
    assert!(p.report.unexpected.is_empty(), "{}", p.report);
    assert_eq!(p.report.skipped_buffers, vec!["embeddings.position_ids"]);
    assert_eq!(p.report.prefix_adjusted, 0);
}

#[test]
fn minilm_hidden_states_and_mean_pooling_match_transformers() {
    let reference = read_json("minilm_reference.json");
    let columns: Vec<usize> = reference["hidden_columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as usize)
        .collect();
    let ref_slices = flat_f32(&reference["hidden_slices"]);
    let ref_row_sums = flat_f32(&reference["hidden_row_sums"]);
    let ref_mean = flat_f32(&reference["mean_pooled"]);
    let ref_pooler = flat_f32(&reference["pooler_first16"]);
    for (name, device) in devices() {
        let p = load(&device);
        let input = fixture_batch(&reference, &device);
        let out = p.model.forward(&input);
        let hidden = out.last_hidden_state.clone();
        let [batch, seq, width] = hidden.dims();
        assert_eq!(batch, 10);
        assert_eq!(width, 384);
        let h = values(hidden.clone());
        let mut slices = Vec::new();
        let mut row_sums = Vec::new();
        for b in 0..batch {
            for s in 0..seq {
                let row = &h[(b * seq + s) * width..(b * seq + s + 1) * width];
                slices.extend(columns.iter().map(|&c| row[c]));
                row_sums.push(row.iter().sum::<f32>());
            }
        }
        assert_close(
            &format!("{name}: hidden slices"),
            &slices,
            &ref_slices,
            1e-4,
        );
        // A sum of 384 values: allow for the summation order.
        assert_close(
            &format!("{name}: hidden row sums"),
            &row_sums,
            &ref_row_sums,
            1e-3,
        );
        let mean = values(mean_pool(hidden, input.attention_mask.clone()));
        assert_close(&format!("{name}: mean pooled"), &mean, &ref_mean, 1e-4);
        let pooler = out.pooler_output.unwrap().slice([0..batch, 0..16]);
        assert_close(
            &format!("{name}: pooler"),
            &values(pooler),
            &ref_pooler,
            1e-4,
        );
    }
}

#[test]
fn minilm_tokenizer_reproduces_the_reference_batch() {
    let reference = read_json("minilm_reference.json");
    let device = Device::flex();
    let p = load(&device);
    let tok = p
        .tokenizer
        .expect("tokenizer.json is in the model directory");
    let encodings: Vec<_> = reference["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| match i.get("text_pair") {
            Some(pair) => tok.encode_pair(i["text"].as_str().unwrap(), pair.as_str().unwrap()),
            None => tok.encode(i["text"].as_str().unwrap()),
        })
        .collect::<Result<_, _>>()
        .unwrap();
    let batch = tok.batch(&encodings, &device).unwrap();
    for (field, t) in [
        ("input_ids", batch.input_ids),
        ("token_type_ids", batch.token_type_ids),
        ("attention_mask", batch.attention_mask),
    ] {
        let ours: Vec<i64> = t.into_data().convert::<i64>().try_into_vec().unwrap();
        let expected: Vec<i64> = u32_rows(&reference[field])
            .concat()
            .into_iter()
            .map(i64::from)
            .collect();
        assert_eq!(ours, expected, "{field}");
    }
}

#[test]
fn minilm_sentence_similarity_is_the_documented_value() {
    let reference = read_json("minilm_reference.json");
    let device = Device::flex();
    let p = load(&device);
    let tok = p.tokenizer.unwrap();
    let embed = |s: &str| -> Tensor<2> {
        let input = tok.batch(&[tok.encode(s).unwrap()], &device).unwrap();
        let h = p.model.forward(&input).last_hidden_state;
        l2_normalize(mean_pool(h, input.attention_mask))
    };
    let a = embed("A man is eating food.");
    let b = embed("A man is eating a piece of bread.");
    let cos = values((a * b).sum())[0];
    assert!((cos - 0.755).abs() <= 1e-3, "cos = {cos}");
    let ref_cos = reference["cos_food_bread"].as_f64().unwrap() as f32;
    assert!(
        (cos - ref_cos).abs() <= 1e-5,
        "cos = {cos}, transformers {ref_cos}"
    );
}
