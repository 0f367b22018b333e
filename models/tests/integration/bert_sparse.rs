//! A MiniLM-size BERT whose encoder linears run on the SparseProp kernels gives the same
//! hidden states and the same gradients (within 1e-4) as the dense model with the same
//! (masked) weights, forward and backward.

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use shears_models::bert::{BertConfig, BertInput, BertModel};
use shears_models::sparseprop::Execution;

/// Zeroes a deterministic pseudo-random 90 % of every 2-D `[out, in]` encoder weight.
struct Prune {
    path: Vec<String>,
    state: u64,
}

impl ModuleMapper for Prune {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        if D != 2 || !path.starts_with("encoder.") {
            return param;
        }
        let state = &mut self.state;
        param.map(|t| {
            let dims = t.dims();
            let n: usize = dims.iter().product();
            let keep: Vec<f32> = (0..n)
                .map(|_| {
                    *state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    if (*state >> 33).is_multiple_of(10) {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            let inner = t.inner();
            let mask = Tensor::<D>::from_data(TensorData::new(keep, dims), &inner.device());
            // A fresh leaf (not a `mul` node), so that both models can run backward.
            inner.mul(mask).autodiff().require_grad()
        })
    }
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    a.sub(b).abs().max().into_scalar::<f32>()
}

#[test]
fn sparse_encoder_equals_dense_masked_forward_and_backward() {
    let device = Device::flex().autodiff();
    let mut config = BertConfig::minilm_l6();
    config.vocab_size = 1000;
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    let dense = BertModel::new(&config, true, &device).map(&mut Prune {
        path: Vec::new(),
        state: 7,
    });
    let mut sparse = dense.clone();
    let sparsities = sparse.encoder.set_sparse(Execution::Sparse).unwrap();
    assert_eq!(sparsities.len(), 36);
    for s in &sparsities {
        assert!((s - 0.9).abs() < 0.01, "sparsity {s}");
    }

    let (batch, seq) = (3, 17);
    let ids: Vec<Vec<u32>> = (0..batch)
        .map(|b| (0..seq).map(|i| ((b * 31 + i * 7) % 1000) as u32).collect())
        .collect();
    let types: Vec<Vec<u32>> = (0..batch)
        .map(|_| (0..seq).map(|i| u32::from(i >= 9)).collect())
        .collect();
    let mask: Vec<Vec<u32>> = (0..batch)
        .map(|b| (0..seq).map(|i| u32::from(i < seq - 2 * b)).collect())
        .collect();
    let input = BertInput::from_rows(&ids, &types, &mask, &device).unwrap();
    let probe = Tensor::<3>::random(
        [batch, seq, 384],
        Distribution::Normal(0.0, 1.0),
        &device.clone().inner(),
    )
    .autodiff();

    let run = |model: &BertModel| {
        let out = model.forward(&input);
        let loss = out.last_hidden_state.clone().mul(probe.clone()).sum();
        let grads = GradientsParams::from_grads(loss.backward(), model);
        (out.last_hidden_state.inner(), grads)
    };
    let (h_dense, g_dense) = run(&dense);
    let (h_sparse, g_sparse) = run(&sparse);
    let d = max_abs_diff(h_dense, h_sparse);
    assert!(d <= 1e-4, "hidden states differ by {d}");

    let mut checked = 0;
    for (ld, ls) in dense.encoder.layer.iter().zip(&sparse.encoder.layer) {
        let pairs = [
            (
                &ld.attention.self_attention.query,
                &ls.attention.self_attention.query,
            ),
            (&ld.intermediate.dense, &ls.intermediate.dense),
            (&ld.output.dense, &ls.output.dense),
        ];
        for (a, b) in pairs {
            let keep = a.weight.val().inner().not_equal_elem(0.0).float();
            let ga = g_dense.get::<2>(a.weight.id).unwrap().mul(keep.clone());
            let gb = g_sparse.get::<2>(b.weight.id).unwrap();
            // The sparse path gives exactly zero gradient off the pattern ...
            assert_eq!(
                gb.clone()
                    .mul(keep.clone().neg().add_scalar(1.0))
                    .abs()
                    .max()
                    .into_scalar::<f32>(),
                0.0
            );
            // ... and the dense gradient at the non-zeros.
            let scale = ga.clone().abs().max().into_scalar::<f32>().max(1.0);
            let d = max_abs_diff(ga, gb) / scale;
            assert!(d <= 1e-4, "weight gradient differs by {d} (relative)");
            let (ba, bb) = (a.bias.as_ref().unwrap(), b.bias.as_ref().unwrap());
            let d = max_abs_diff(
                g_dense.get::<1>(ba.id).unwrap(),
                g_sparse.get::<1>(bb.id).unwrap(),
            );
            assert!(d <= 1e-4, "bias gradient differs by {d}");
            checked += 1;
        }
    }
    assert_eq!(checked, 18);
    let e = g_dense
        .get::<2>(dense.embeddings.word_embeddings.weight.id)
        .unwrap();
    let f = g_sparse
        .get::<2>(sparse.embeddings.word_embeddings.weight.id)
        .unwrap();
    assert!(max_abs_diff(e, f) <= 1e-4);
}
