//! Knowledge distillation, as SparseML's `DistillationModifier` computes it.
//!
//! For each distilled output (class `logits`; `start_logits` and `end_logits` for QA):
//!
//! ```text
//! kd = T² · Σ KL( softmax(teacher / T) ‖ softmax(student / T) ) / n_items
//! ```
//!
//! with the softmax over the last dimension and `n_items = numel / size(last dim)` (the
//! batch size for sentence classification). The KD terms of several outputs are averaged,
//! and the loss is `(1 − hardness) · task + hardness · kd`. The teacher's logits are
//! constants: compute them on a non-autodiff device or with `.inner()`.

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

/// A model output that distillation can use (`distill_output_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKey {
    /// Class logits `[batch, classes]` (classification and regression heads).
    Logits,
    /// Start-position logits `[batch, tokens]` (extractive QA).
    StartLogits,
    /// End-position logits `[batch, tokens]` (extractive QA).
    EndLogits,
}

impl OutputKey {
    /// The name recipes use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Logits => "logits",
            Self::StartLogits => "start_logits",
            Self::EndLogits => "end_logits",
        }
    }
}

/// The KD term for one output (a scalar tensor).
pub fn kd_loss<const D: usize>(
    student: Tensor<D>,
    teacher: Tensor<D>,
    temperature: f64,
) -> Tensor<1> {
    let dims = student.dims();
    let last = dims[D - 1].max(1);
    let n_items = dims.iter().product::<usize>() / last;
    let log_q = log_softmax(student.div_scalar(temperature), D - 1);
    let log_p = log_softmax(teacher.div_scalar(temperature), D - 1);
    let kl = log_p.clone().exp().mul(log_p.sub(log_q));
    kl.sum()
        .mul_scalar(temperature * temperature / n_items.max(1) as f64)
}

/// `(1 − hardness) · task + hardness · mean(kd_terms)`.
pub fn combine(task: Tensor<1>, kd_terms: Vec<Tensor<1>>, hardness: f64) -> Tensor<1> {
    if kd_terms.is_empty() || hardness == 0.0 {
        return task;
    }
    let n = kd_terms.len() as f64;
    let kd = kd_terms
        .into_iter()
        .reduce(|a, b| a.add(b))
        .expect("checked non-empty")
        .div_scalar(n);
    if hardness == 1.0 {
        kd
    } else {
        task.mul_scalar(1.0 - hardness).add(kd.mul_scalar(hardness))
    }
}
