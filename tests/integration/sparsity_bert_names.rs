//! The sparsity core sees shears' BERT under its Hugging Face names: the names it lists
//! equal the keys of the model's own HF export, and every encoder linear has its input
//! along dim 1 (PyTorch layout `[out, in]`).

use burn::tensor::Device;
use shears::sparsity::params::{HfNames, module_params};
use shears::sparsity::selection::ParamSelector;
use shears_models::bert::BertConfig;
use shears_models::bert::heads::BertForSequenceClassification;

#[test]
fn bert_parameters_carry_their_hf_names() {
    let device = Device::flex();
    let config = BertConfig::new(50, 16, 2, 2, 32).with_num_labels(3);
    let model = BertForSequenceClassification::new(&config, &device);
    let params = module_params(&model, &HfNames);
    let names: Vec<&str> = params.iter().map(|p| p.info.name.as_str()).collect();
    assert!(
        names.contains(&"bert.encoder.layer.1.attention.self.query.weight"),
        "{names:?}"
    );
    assert!(names.contains(&"classifier.weight"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains("self_attention")),
        "{names:?}"
    );

    // The SparseML-style pattern of the shipped recipes selects exactly the 12 encoder
    // linears (2 layers x 6), each [out, in] with input dim 1.
    let selector = ParamSelector::new(
        &[r"re:(bert\.)?encoder\.layer\.\d+\.(attention\.(self\.(query|key|value)|output\.dense)|intermediate\.dense|output\.dense)\.weight".to_string()],
        &[],
    )
    .unwrap();
    let infos: Vec<_> = params.iter().map(|p| p.info.clone()).collect();
    let selected = selector.select(&infos);
    assert_eq!(selected.matched.len(), 12);
    for p in &selected.matched {
        assert_eq!(p.input_dim, Some(1), "{}", p.name);
        let expected_in = if p.name.contains("output.dense") && !p.name.contains("attention") {
            32
        } else {
            16
        };
        assert_eq!(p.shape[1], expected_in, "{}", p.name);
    }
}
