//! Optimal Brain Surgeon pruning with an inverse empirical Fisher (oBERT, Kurtic et al. 2022;
//! M-FAC pruning, Frantar et al. 2021).
//!
//! For each pruned tensor an inverse Fisher `F⁻¹` (see [`crate::fisher`]; one per tensor,
//! usually block-diagonal) scores every weight by the loss increase its removal costs when the
//! other weights compensate, and gives that compensation:
//!
//! * **unstructured**: `ρ_q = w_q² / (2·[F⁻¹]_qq)`, ranked globally over all tensors; the
//!   update for the newly pruned set `P` is `δw = −F⁻¹ u` with `u_q = w_q / [F⁻¹]_qq` on `P`
//!   and 0 elsewhere (oBERT's simultaneous update);
//! * **block4**: groups `Q` of 4 consecutive entries of the flattened weight,
//!   `ρ_Q = ½ w_Qᵀ (F⁻¹_QQ)⁻¹ w_Q`, and `u_Q = (F⁻¹_QQ)⁻¹ w_Q` on newly pruned groups.
//!
//! Weights (groups) already pruned stay pruned and do not count against the new selection;
//! after the update every pruned weight is set to exactly `0.0`. The number pruned is exactly
//! `round(target · N)` units (weights or groups) over all tensors.

#[cfg(test)]
use crate::fisher::Real;
use crate::fisher::{BlockInverse, StaticInverse};
use crate::sparsity::mask::{Mask, MaskError, MaskSet, pruned_count};
use crate::sparsity::selection::ParamInfo;

/// What an inverse Fisher must answer for OBS.
pub trait InverseFisher {
    /// `diag(F⁻¹)`.
    fn diag(&self) -> Vec<f32>;
    /// `F⁻¹x`.
    fn ihvp(&self, x: &[f32]) -> Vec<f32>;
    /// `F⁻¹_QQ`, row-major.
    fn submatrix(&self, q: &[usize]) -> Vec<f32>;
}

impl InverseFisher for BlockInverse<f32> {
    fn diag(&self) -> Vec<f32> {
        BlockInverse::diag(self)
    }
    fn ihvp(&self, x: &[f32]) -> Vec<f32> {
        BlockInverse::ihvp(self, x).expect("OBS passes vectors of the tensor's length")
    }
    fn submatrix(&self, q: &[usize]) -> Vec<f32> {
        BlockInverse::submatrix(self, q)
    }
}

impl InverseFisher for StaticInverse<f32> {
    fn diag(&self) -> Vec<f32> {
        StaticInverse::diag(self)
    }
    fn ihvp(&self, x: &[f32]) -> Vec<f32> {
        StaticInverse::ihvp(self, x).expect("OBS passes vectors of the tensor's length")
    }
    fn submatrix(&self, q: &[usize]) -> Vec<f32> {
        StaticInverse::submatrix(self, q)
    }
}

/// The unit OBS removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObsStructure {
    /// Single weights.
    Unstructured,
    /// Groups of 4 consecutive entries of the flattened weight (oBERT's `block4`).
    Block4,
}

impl ObsStructure {
    fn size(self) -> usize {
        match self {
            ObsStructure::Unstructured => 1,
            ObsStructure::Block4 => 4,
        }
    }
}

/// One tensor to prune: its values (updated in place) and its current mask.
#[derive(Debug, Clone)]
pub struct ObsTensor {
    /// Name and shape.
    pub info: ParamInfo,
    /// The flattened weight (row-major).
    pub values: Vec<f32>,
    /// The weights already pruned (`None`: none).
    pub mask: Option<Mask>,
}

/// The scores of every unit of every tensor (`+∞` for units that cannot be scored, `-∞`
/// never used: already-pruned units are reported separately).
#[derive(Debug, Clone, PartialEq)]
pub struct ObsScores {
    /// Per tensor, per unit, the loss increase `ρ`.
    pub scores: Vec<Vec<f64>>,
    /// Per tensor, per unit, whether the unit is already pruned.
    pub pruned: Vec<Vec<bool>>,
}

fn structure_err(t: &ObsTensor, unit: usize) -> MaskError {
    MaskError::Indivisible {
        param: t.info.name.clone(),
        shape: t.info.shape.clone(),
        dim: t.info.shape.len().saturating_sub(1),
        size: t.values.len(),
        kind: crate::sparsity::mask::MaskKind::Block { size: unit },
        group: unit,
    }
}

/// Solves the small SPD system `A x = b` (`n × n`, row-major) by Gaussian elimination with
/// partial pivoting, in f64.
fn solve(a: &[f64], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut m = a.to_vec();
    let mut x = b.to_vec();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&p, &q| m[p * n + col].abs().total_cmp(&m[q * n + col].abs()))
            .unwrap_or(col);
        if piv != col {
            for k in 0..n {
                m.swap(col * n + k, piv * n + k);
            }
            x.swap(col, piv);
        }
        let p = m[col * n + col];
        for r in col + 1..n {
            let f = m[r * n + col] / p;
            if f != 0.0 {
                for k in col..n {
                    m[r * n + k] -= f * m[col * n + k];
                }
                x[r] -= f * x[col];
            }
        }
    }
    for col in (0..n).rev() {
        let mut s = x[col];
        for k in col + 1..n {
            s -= m[col * n + k] * x[k];
        }
        x[col] = s / m[col * n + col];
    }
    x
}

/// The OBS scores of every unit (see the module docs).
pub fn scores<F: InverseFisher>(
    tensors: &[ObsTensor],
    inverses: &[F],
    structure: ObsStructure,
) -> Result<ObsScores, MaskError> {
    let unit = structure.size();
    let mut out = ObsScores {
        scores: Vec::with_capacity(tensors.len()),
        pruned: Vec::with_capacity(tensors.len()),
    };
    for (t, inv) in tensors.iter().zip(inverses) {
        if t.values.len() % unit != 0 {
            return Err(structure_err(t, unit));
        }
        let n = t.values.len() / unit;
        let keep = t.mask.as_ref().map(|m| m.keep());
        let pruned: Vec<bool> = (0..n)
            .map(|u| keep.is_some_and(|k| (0..unit).all(|j| !k[u * unit + j])))
            .collect();
        let s: Vec<f64> = match structure {
            ObsStructure::Unstructured => {
                let diag = inv.diag();
                t.values
                    .iter()
                    .zip(&diag)
                    .map(|(&w, &d)| {
                        let (w, d) = (w as f64, d as f64);
                        if d > 0.0 {
                            w * w / (2.0 * d)
                        } else {
                            f64::INFINITY
                        }
                    })
                    .collect()
            }
            ObsStructure::Block4 => (0..n)
                .map(|u| {
                    let q: Vec<usize> = (u * 4..u * 4 + 4).collect();
                    let a: Vec<f64> = inv.submatrix(&q).iter().map(|&x| x as f64).collect();
                    let w: Vec<f64> = q.iter().map(|&i| t.values[i] as f64).collect();
                    let y = solve(&a, &w);
                    let r = 0.5 * w.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>();
                    if r.is_finite() { r } else { f64::INFINITY }
                })
                .collect(),
        };
        out.scores.push(s);
        out.pruned.push(pruned);
    }
    Ok(out)
}

/// One OBS pruning step to `target` (a fraction of the units of all `tensors` together):
/// scores, the global selection, the weight update and the new masks. The tensors' values
/// are updated in place (pruned weights exactly 0); returns the masks keyed by name.
pub fn prune_step<F: InverseFisher>(
    tensors: &mut [ObsTensor],
    inverses: &[F],
    target: f64,
    structure: ObsStructure,
) -> Result<MaskSet, MaskError> {
    if !(target.is_finite() && (0.0..=1.0).contains(&target)) {
        return Err(MaskError::InvalidSparsity { value: target });
    }
    let unit = structure.size();
    let sc = scores(tensors, inverses, structure)?;
    let total: usize = sc.scores.iter().map(Vec::len).sum();
    let k = pruned_count(target, total);
    let forced: usize = sc.pruned.iter().flatten().filter(|p| **p).count();
    // The k − forced lowest scores among the units still in place (ties: lower index first).
    let mut free: Vec<(f64, usize, usize)> = sc
        .scores
        .iter()
        .enumerate()
        .flat_map(|(t, s)| s.iter().enumerate().map(move |(u, &v)| (v, t, u)))
        .filter(|&(_, t, u)| !sc.pruned[t][u])
        .collect();
    let new = k.saturating_sub(forced).min(free.len());
    if new > 0 && new < free.len() {
        free.select_nth_unstable_by(new - 1, |a, b| {
            a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
        });
    }
    let mut newly: Vec<Vec<bool>> = sc.scores.iter().map(|s| vec![false; s.len()]).collect();
    for &(_, t, u) in &free[..new] {
        newly[t][u] = true;
    }
    let mut set = MaskSet::new();
    for (ti, (t, inv)) in tensors.iter_mut().zip(inverses).enumerate() {
        let n = t.values.len();
        if newly[ti].iter().any(|x| *x) {
            let mut u = vec![0.0f32; n];
            match structure {
                ObsStructure::Unstructured => {
                    let diag = inv.diag();
                    for (i, &p) in newly[ti].iter().enumerate() {
                        if p && diag[i] > 0.0 {
                            u[i] = t.values[i] / diag[i];
                        }
                    }
                }
                ObsStructure::Block4 => {
                    for (g, &p) in newly[ti].iter().enumerate() {
                        if p {
                            let q: Vec<usize> = (g * 4..g * 4 + 4).collect();
                            let a: Vec<f64> = inv.submatrix(&q).iter().map(|&x| x as f64).collect();
                            let w: Vec<f64> = q.iter().map(|&i| t.values[i] as f64).collect();
                            for (j, y) in solve(&a, &w).into_iter().enumerate() {
                                u[q[j]] = y as f32;
                            }
                        }
                    }
                }
            }
            let delta = inv.ihvp(&u);
            for (w, d) in t.values.iter_mut().zip(&delta) {
                *w -= d;
            }
        }
        let keep: Vec<bool> = (0..n)
            .map(|i| !(sc.pruned[ti][i / unit] || newly[ti][i / unit]))
            .collect();
        for (w, &k) in t.values.iter_mut().zip(&keep) {
            if !k {
                *w = 0.0;
            }
        }
        let mask = Mask::new(t.info.shape.clone(), keep)?;
        t.mask = Some(mask.clone());
        set.insert(t.info.name.clone(), mask);
    }
    Ok(set)
}

/// The sparsities of `recomputations` sub-steps from `from` to `to` (linear, as oBERT).
pub fn recomputation_targets(from: f64, to: f64, recomputations: usize) -> Vec<f64> {
    let r = recomputations.max(1);
    (1..=r)
        .map(|j| {
            if j == r {
                to
            } else {
                from + (to - from) * j as f64 / r as f64
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fisher::reference::{fisher, random};

    fn to_f32<T: Real>(v: &[T]) -> Vec<f32> {
        v.iter().map(|x| x.to_f64() as f32).collect()
    }

    /// The quadratic loss ½ (w − w*)ᵀ F (w − w*) with F = λI + (1/m)Σggᵀ restricted to blocks
    /// of `bs` (the Fisher the block inverse inverts exactly).
    fn block_fisher(g: &[f64], m: usize, d: usize, bs: usize, damp: f64) -> Vec<f64> {
        let mut f = fisher(g, m, d, damp);
        for i in 0..d {
            for j in 0..d {
                if i / bs != j / bs {
                    f[i * d + j] = 0.0;
                }
            }
        }
        f
    }

    fn quad(f: &[f64], delta: &[f64]) -> f64 {
        let d = delta.len();
        let mut s = 0.0;
        for i in 0..d {
            for j in 0..d {
                s += delta[i] * f[i * d + j] * delta[j];
            }
        }
        0.5 * s
    }

    fn setup(d: usize, bs: usize, m: usize, damp: f64) -> (Vec<f64>, BlockInverse<f32>, Vec<f64>) {
        let g = random(m * d, 41);
        let mut inv = BlockInverse::<f32>::new(d, bs, m, damp).unwrap();
        for row in g.chunks(d) {
            inv.add_gradient(&to_f32(row)).unwrap();
        }
        let f = block_fisher(&g, m, d, bs, damp);
        (g, inv, f)
    }

    fn tensor(values: Vec<f32>) -> ObsTensor {
        ObsTensor {
            info: ParamInfo::new("w", vec![values.len()]),
            values,
            mask: None,
        }
    }

    #[test]
    fn pruning_one_weight_per_block_raises_the_quadratic_loss_by_the_sum_of_scores() {
        // Target = one weight per block of 8: each pruned weight is alone in its block, so the
        // simultaneous update is exact and the increase is Σρ.
        let (d, bs, m, damp) = (64, 8, 24, 0.05);
        let (_, inv, f) = setup(d, bs, m, damp);
        // Make each block's smallest score unique by giving one weight per block a small value.
        let mut w: Vec<f32> = to_f32(&random(d, 42)).iter().map(|x| x + 2.0).collect();
        for b in 0..d / bs {
            w[b * bs + (b % bs)] = 0.01 * (b as f32 + 1.0);
        }
        let before = w.clone();
        let mut ts = vec![tensor(w)];
        let sc = scores(&ts, std::slice::from_ref(&inv), ObsStructure::Unstructured).unwrap();
        let masks =
            prune_step(&mut ts, &[inv], 1.0 / bs as f64, ObsStructure::Unstructured).unwrap();
        let keep = masks.get("w").unwrap().keep().to_vec();
        assert_eq!(keep.iter().filter(|k| !**k).count(), d / bs);
        let mut sum_rho = 0.0;
        for b in 0..d / bs {
            let q = b * bs + (b % bs);
            assert!(!keep[q], "block {b}: the small weight goes");
            assert_eq!(ts[0].values[q], 0.0);
            sum_rho += sc.scores[0][q];
        }
        let delta: Vec<f64> = ts[0]
            .values
            .iter()
            .zip(&before)
            .map(|(a, b)| (*a - *b) as f64)
            .collect();
        let increase = quad(&f, &delta);
        assert!(
            (increase - sum_rho).abs() <= 1e-3 * sum_rho,
            "{increase} vs Σρ {sum_rho}"
        );
    }

    #[test]
    fn a_block4_group_costs_its_score() {
        let (d, bs, m, damp) = (32, 8, 16, 0.1);
        let (_, inv, f) = setup(d, bs, m, damp);
        let mut w: Vec<f32> = to_f32(&random(d, 43)).iter().map(|x| x + 3.0).collect();
        for j in 0..4 {
            w[12 + j] = 0.02 * (j as f32 - 1.5);
        }
        let before = w.clone();
        let mut ts = vec![tensor(w)];
        let sc = scores(&ts, std::slice::from_ref(&inv), ObsStructure::Block4).unwrap();
        let masks = prune_step(&mut ts, &[inv], 1.0 / 8.0, ObsStructure::Block4).unwrap();
        let keep = masks.get("w").unwrap().keep();
        assert_eq!(keep.iter().filter(|k| !**k).count(), 4);
        assert!((12..16).all(|i| !keep[i] && ts[0].values[i] == 0.0));
        let delta: Vec<f64> = ts[0]
            .values
            .iter()
            .zip(&before)
            .map(|(a, b)| (*a - *b) as f64)
            .collect();
        let rho = sc.scores[0][3];
        assert!(
            (quad(&f, &delta) - rho).abs() <= 1e-3 * rho,
            "{} vs {rho}",
            quad(&f, &delta)
        );
    }

    #[test]
    fn the_target_is_met_exactly_and_pruned_weights_stay_pruned() {
        let (d, bs, m, damp) = (200, 20, 8, 0.01);
        let w = to_f32(&random(d, 44));
        let mut ts = vec![tensor(w[..120].to_vec()), tensor(w[120..].to_vec())];
        ts[1].info.name = "v".into();
        let (mut i1, mut i2) = (
            BlockInverse::<f32>::new(120, bs, m, damp).unwrap(),
            BlockInverse::<f32>::new(80, bs, m, damp).unwrap(),
        );
        let g = random(m * d, 41);
        for row in g.chunks(d) {
            i1.add_gradient(&to_f32(&row[..120])).unwrap();
            i2.add_gradient(&to_f32(&row[120..])).unwrap();
        }
        let invs = [i1, i2];
        let first = prune_step(&mut ts, &invs, 0.3, ObsStructure::Unstructured).unwrap();
        assert_eq!(first.pruned(), 60);
        let before: Vec<Vec<bool>> = ts
            .iter()
            .map(|t| t.mask.clone().unwrap().keep().to_vec())
            .collect();
        let second = prune_step(&mut ts, &invs, 0.55, ObsStructure::Unstructured).unwrap();
        assert_eq!(second.pruned(), pruned_count(0.55, 200));
        for (t, b) in ts.iter().zip(&before) {
            let now = t.mask.as_ref().unwrap().keep();
            for (i, (&k0, &k1)) in b.iter().zip(now).enumerate() {
                assert!(k0 || !k1, "{}[{i}] was revived", t.info.name);
                if !k1 {
                    assert_eq!(t.values[i], 0.0);
                }
            }
        }
        let r = recomputation_targets(0.3, 0.9, 3);
        assert_eq!(r.len(), 3);
        assert!((r[0] - 0.5).abs() < 1e-12 && (r[1] - 0.7).abs() < 1e-12);
        assert_eq!(r[2], 0.9, "the last sub-step lands on the target exactly");
    }

    #[derive(serde::Deserialize)]
    struct Case {
        structure: String,
        target: f64,
        shapes: Vec<Vec<usize>>,
        block: usize,
        damp: f64,
        m: usize,
        weights: Vec<Vec<f64>>,
        keep: Vec<Vec<bool>>,
        grads: Vec<Vec<Vec<f64>>>,
        scores: Vec<Vec<f64>>,
        new_weights: Vec<Vec<f64>>,
        new_keep: Vec<Vec<bool>>,
    }

    #[derive(serde::Deserialize)]
    struct Fixture {
        cases: Vec<Case>,
    }

    /// Scores, selection and updates against numpy (explicit block inverses;
    /// tests/fixtures/obs/gen_obs.py).
    #[test]
    fn obs_steps_equal_the_numpy_reference() {
        let fx: Fixture =
            serde_json::from_str(include_str!("../tests/fixtures/obs/obs.json")).unwrap();
        for c in &fx.cases {
            let structure = match c.structure.as_str() {
                "unstructured" => ObsStructure::Unstructured,
                _ => ObsStructure::Block4,
            };
            let mut tensors = Vec::new();
            let mut invs = Vec::new();
            for (i, shape) in c.shapes.iter().enumerate() {
                let d = c.weights[i].len();
                let mut inv = BlockInverse::<f32>::new(d, c.block, c.m, c.damp).unwrap();
                for g in &c.grads[i] {
                    inv.add_gradient(&to_f32(g)).unwrap();
                }
                invs.push(inv);
                tensors.push(ObsTensor {
                    info: ParamInfo::new(format!("t{i}"), shape.clone()),
                    values: to_f32(&c.weights[i]),
                    mask: Some(Mask::new(shape.clone(), c.keep[i].clone()).unwrap()),
                });
            }
            let sc = scores(&tensors, &invs, structure).unwrap();
            for (got, want) in sc.scores.iter().zip(&c.scores) {
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (g - w).abs() <= 1e-3 * w.abs().max(1e-3),
                        "{}: score {g} vs {w}",
                        c.structure
                    );
                }
            }
            prune_step(&mut tensors, &invs, c.target, structure).unwrap();
            for (i, t) in tensors.iter().enumerate() {
                assert_eq!(
                    t.mask.as_ref().unwrap().keep(),
                    c.new_keep[i].as_slice(),
                    "{} t{i}",
                    c.structure
                );
                let scale = c.new_weights[i].iter().fold(0.0f64, |m, x| m.max(x.abs()));
                for (g, w) in t.values.iter().zip(&c.new_weights[i]) {
                    assert!(
                        (*g as f64 - w).abs() <= 1e-4 * scale,
                        "{} t{i}: {g} vs {w}",
                        c.structure
                    );
                }
            }
        }
    }
}
