//! Classification losses: cross-entropy with label smoothing, as PyTorch defines it.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Deserializer};

/// Invalid loss inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LossError {
    /// The smoothing ε is outside `[0, 1]` (or not finite).
    #[error("training.label_smoothing = {0} is out of range: it is a fraction in [0, 1]")]
    LabelSmoothing(f64),
    /// Logits and targets disagree on the batch size.
    #[error("{logits} rows of logits for {targets} targets")]
    BatchSize {
        /// Rows of the logits.
        logits: usize,
        /// Number of targets.
        targets: usize,
    },
}

/// `Ok(epsilon)` when it is a valid label smoothing (finite, in `[0, 1]`).
pub fn check_label_smoothing(epsilon: f64) -> Result<f64, LossError> {
    if epsilon.is_finite() && (0.0..=1.0).contains(&epsilon) {
        Ok(epsilon)
    } else {
        Err(LossError::LabelSmoothing(epsilon))
    }
}

/// Deserialises `training.label_smoothing`, rejecting values outside `[0, 1]` (the recipe
/// error then names the field's line and column).
pub fn deserialize_label_smoothing<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "{v} is out of range: label smoothing is a fraction in [0, 1]"
        )))
    }
}

/// Mean cross-entropy of `logits` (`[batch, classes]`) against class indices `targets`
/// (`[batch]`) with label smoothing `epsilon`, equal to PyTorch's
/// `F.cross_entropy(logits, targets, label_smoothing=epsilon)`: per example
/// `(1 − ε)·(−log p[y]) + ε·mean_k(−log p[k])` with `p = softmax(logits)`, averaged over the
/// batch. `epsilon = 0` is the plain cross-entropy. Differentiable; returns a `[1]` tensor.
/// Targets must be in `0..classes` (the data loaders check labels).
pub fn cross_entropy_with_label_smoothing(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    epsilon: f64,
) -> Result<Tensor<1>, LossError> {
    let epsilon = check_label_smoothing(epsilon)?;
    let [n, _] = logits.dims();
    let [t] = targets.dims();
    if n != t {
        return Err(LossError::BatchSize {
            logits: n,
            targets: t,
        });
    }
    let logp = log_softmax(logits, 1);
    let nll = logp.clone().gather(1, targets.reshape([n, 1])).neg();
    let per_example = if epsilon == 0.0 {
        nll
    } else {
        let smooth = logp.mean_dim(1).neg();
        nll.mul_scalar(1.0 - epsilon) + smooth.mul_scalar(epsilon)
    };
    Ok(per_example.mean())
}
