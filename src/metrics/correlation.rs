//! Correlation coefficients, defined as scipy defines them.

use super::{MetricError, check_lengths};

/// Pearson's correlation coefficient (`scipy.stats.pearsonr`); NaN when either input is
/// constant (as scipy).
pub fn pearson(x: &[f64], y: &[f64]) -> Result<f64, MetricError> {
    check_lengths(x.len(), y.len())?;
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return Ok(f64::NAN);
    }
    Ok((sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0))
}

/// Ranks `1..=n` with ties given their average rank (`scipy.stats.rankdata`, method
/// `"average"`).
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        // Positions i..=j (0-based) share the average of ranks i+1..=j+1.
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = avg;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation (`scipy.stats.spearmanr`): Pearson's coefficient of the
/// average ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> Result<f64, MetricError> {
    check_lengths(x.len(), y.len())?;
    pearson(&average_ranks(x), &average_ranks(y))
}
