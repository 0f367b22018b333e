//! Classification metrics, defined as scikit-learn defines them.

use super::{MetricError, check_lengths};

/// Fraction of predictions equal to the label (`sklearn.metrics.accuracy_score`).
pub fn accuracy(predictions: &[usize], labels: &[usize]) -> Result<f64, MetricError> {
    check_lengths(predictions.len(), labels.len())?;
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(correct as f64 / labels.len() as f64)
}

/// F1 of the positive class 1 (`sklearn.metrics.f1_score`, `average="binary"`):
/// `2 tp / (2 tp + fp + fn)`, and 0 when there are no true or predicted positives
/// (scikit-learn's `zero_division` default).
pub fn f1_binary(predictions: &[usize], labels: &[usize]) -> Result<f64, MetricError> {
    check_lengths(predictions.len(), labels.len())?;
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (&p, &l) in predictions.iter().zip(labels) {
        match (p == 1, l == 1) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let denom = 2 * tp + fp + fn_;
    Ok(if denom == 0 || tp == 0 {
        0.0
    } else {
        2.0 * tp as f64 / denom as f64
    })
}

/// Matthews correlation coefficient for any number of classes
/// (`sklearn.metrics.matthews_corrcoef`): with the confusion matrix `C`, `t_k` the true and
/// `p_k` the predicted count of class `k`, `c` the correct count and `s` the total,
/// `(c s - Σ p_k t_k) / sqrt((s² - Σ p_k²)(s² - Σ t_k²))`, and 0 when the denominator is 0.
pub fn matthews_corrcoef(predictions: &[usize], labels: &[usize]) -> Result<f64, MetricError> {
    check_lengths(predictions.len(), labels.len())?;
    let k = predictions.iter().chain(labels).max().map_or(0, |m| m + 1);
    let mut t = vec![0f64; k];
    let mut p = vec![0f64; k];
    let mut correct = 0f64;
    for (&pr, &l) in predictions.iter().zip(labels) {
        t[l] += 1.0;
        p[pr] += 1.0;
        if pr == l {
            correct += 1.0;
        }
    }
    let s = labels.len() as f64;
    let pt: f64 = p.iter().zip(&t).map(|(a, b)| a * b).sum();
    let pp: f64 = p.iter().map(|a| a * a).sum();
    let tt: f64 = t.iter().map(|a| a * a).sum();
    let cov_ytyp = correct * s - pt;
    let cov_ypyp = s * s - pp;
    let cov_ytyt = s * s - tt;
    if cov_ypyp * cov_ytyt == 0.0 {
        return Ok(0.0);
    }
    Ok(cov_ytyp / (cov_ytyt * cov_ypyp).sqrt())
}
