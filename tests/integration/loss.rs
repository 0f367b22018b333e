//! Cross-entropy with label smoothing against PyTorch's
//! `F.cross_entropy(logits, y, label_smoothing=ε)` (tests/fixtures/loss/gen_label_smoothing.py):
//! the loss and its gradient with respect to the logits, ε ∈ {0, 0.1}.

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;
use shears::loss::{LossError, cross_entropy_with_label_smoothing};

#[derive(Deserialize)]
struct Case {
    n: usize,
    k: usize,
    epsilon: f64,
    logits: Vec<f32>,
    labels: Vec<i64>,
    loss: f64,
    grad: Vec<f32>,
}

#[derive(Deserialize)]
struct File {
    cases: Vec<Case>,
}

fn cases() -> Vec<Case> {
    serde_json::from_str::<File>(include_str!("../fixtures/loss/label_smoothing.json"))
        .unwrap()
        .cases
}

#[test]
fn matches_torch_loss_and_gradient() {
    let device = Device::flex().autodiff();
    let cases = cases();
    assert_eq!(cases.len(), 8);
    assert!(cases.iter().any(|c| c.epsilon == 0.0) && cases.iter().any(|c| c.epsilon == 0.1));
    for c in cases {
        let logits = Tensor::<2>::from_data(TensorData::new(c.logits.clone(), [c.n, c.k]), &device)
            .require_grad();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(c.labels.clone(), [c.n]), &device);
        let loss = cross_entropy_with_label_smoothing(logits.clone(), labels, c.epsilon).unwrap();
        assert_eq!(loss.dims(), [1]);
        let got = loss.clone().into_scalar::<f64>();
        assert!(
            (got - c.loss).abs() <= 1e-6,
            "n={} k={} ε={}: {got} vs torch {}",
            c.n,
            c.k,
            c.epsilon,
            c.loss
        );
        let grads = loss.backward();
        let g: Vec<f32> = logits
            .grad(&grads)
            .unwrap()
            .into_data()
            .iter::<f32>()
            .collect();
        for (i, (a, b)) in g.iter().zip(&c.grad).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6,
                "grad[{i}] ε={}: {a} vs {b}",
                c.epsilon
            );
        }
    }
}

/// Independent identity: with ε = 1 the loss is the mean over examples of
/// `logsumexp(z) − mean(z)` (the cross-entropy against the uniform distribution).
#[test]
fn full_smoothing_is_cross_entropy_against_uniform() {
    let device = Device::flex();
    let z = [[1.0f32, 2.0, -3.0], [0.5, 0.5, 4.0]];
    let want: f64 = z
        .iter()
        .map(|r| {
            let lse = r.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln();
            lse - r.iter().map(|&v| f64::from(v)).sum::<f64>() / 3.0
        })
        .sum::<f64>()
        / 2.0;
    let logits = Tensor::<2>::from_data(
        TensorData::new(z.iter().flatten().copied().collect::<Vec<_>>(), [2, 3]),
        &device,
    );
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &device);
    let got = cross_entropy_with_label_smoothing(logits, labels, 1.0)
        .unwrap()
        .into_scalar::<f64>();
    assert!((got - want).abs() <= 1e-6, "{got} vs {want}");
}

#[test]
fn bad_inputs_are_errors() {
    let device = Device::flex();
    let logits = Tensor::<2>::zeros([2, 3], &device);
    let labels = Tensor::<1, Int>::zeros([2], &device);
    for eps in [-0.1, 1.5, f64::NAN] {
        let e =
            cross_entropy_with_label_smoothing(logits.clone(), labels.clone(), eps).unwrap_err();
        assert!(matches!(e, LossError::LabelSmoothing(_)));
        assert!(e.to_string().contains("training.label_smoothing"), "{e}");
    }
    let e = cross_entropy_with_label_smoothing(logits, Tensor::<1, Int>::zeros([3], &device), 0.1)
        .unwrap_err();
    assert_eq!(
        e,
        LossError::BatchSize {
            logits: 2,
            targets: 3
        }
    );
}
