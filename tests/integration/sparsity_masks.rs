//! Mask computation against brute-force references on random tensors: global and
//! layer-wise unstructured, N:M along the input dimension, block4, ties and odd sizes.
//!
//! The references below enumerate elements by explicit multi-indices and fully sort
//! them, independently of the library's packed-key selection.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shears::sparsity::mask::{
    MaskKind, MaskSet, ParamValues, Scope, compute_masks, compute_masks_per_param, pruned_count,
};
use shears::sparsity::selection::ParamInfo;

/// Random values; with `ties`, drawn from a handful of levels so many are equal.
fn random_param(
    rng: &mut StdRng,
    name: &str,
    shape: &[usize],
    dim: Option<usize>,
    ties: bool,
) -> ParamValues {
    let n: usize = shape.iter().product();
    let values = (0..n)
        .map(|_| {
            if ties {
                (rng.random_range(-3i32..=3) as f32) * 0.5
            } else {
                rng.random_range(-1.0f32..1.0)
            }
        })
        .collect();
    ParamValues {
        info: ParamInfo::new(name, shape.to_vec()).with_input_dim(dim),
        values,
    }
}

/// All multi-indices of `shape` in row-major order.
fn multi_indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for &d in shape {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                (0..d).map(move |i| {
                    let mut p = prefix.clone();
                    p.push(i);
                    p
                })
            })
            .collect();
    }
    out
}

fn flat(shape: &[usize], idx: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (i, d)| acc * d + i)
}

/// Reference: sort (|v|, param, flat index) and prune the first round(s·n).
fn reference_unstructured(params: &[ParamValues], s: f64) -> Vec<Vec<bool>> {
    let mut all: Vec<(f32, usize, usize)> = Vec::new();
    for (t, p) in params.iter().enumerate() {
        for (i, v) in p.values.iter().enumerate() {
            all.push((v.abs(), t, i));
        }
    }
    all.sort_by(|a, b| {
        a.0.partial_cmp(&b.0)
            .unwrap()
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
    });
    let k = (s * all.len() as f64).round() as usize;
    let mut keep: Vec<Vec<bool>> = params.iter().map(|p| vec![true; p.values.len()]).collect();
    for &(_, t, i) in &all[..k] {
        keep[t][i] = false;
    }
    keep
}

type Block = (f32, usize, usize, Vec<usize>);

/// Reference block mask: blocks of `b` along the input dim, scored by mean |v| in f64
/// (rounded to f32), ties by (param, flat index of the block's first element).
fn reference_block(params: &[ParamValues], s: f64, b: usize, global: bool) -> Vec<Vec<bool>> {
    let mut blocks: Vec<Vec<Block>> = Vec::new();
    for (t, p) in params.iter().enumerate() {
        let shape = &p.info.shape;
        let dim = p.info.input_dim.unwrap();
        let mut list = Vec::new();
        for idx in multi_indices(shape) {
            if idx[dim] % b != 0 {
                continue;
            }
            let members: Vec<usize> = (0..b)
                .map(|j| {
                    let mut k = idx.clone();
                    k[dim] += j;
                    flat(shape, &k)
                })
                .collect();
            let mean = members
                .iter()
                .map(|&e| p.values[e].abs() as f64)
                .sum::<f64>()
                / b as f64;
            list.push((mean as f32, t, members[0], members));
        }
        blocks.push(list);
    }
    let mut keep: Vec<Vec<bool>> = params.iter().map(|p| vec![true; p.values.len()]).collect();
    let groups: Vec<Vec<Block>> = if global {
        vec![blocks.into_iter().flatten().collect()]
    } else {
        blocks
    };
    for mut g in groups {
        g.sort_by(|a, b| {
            a.0.partial_cmp(&b.0)
                .unwrap()
                .then(a.1.cmp(&b.1))
                .then(a.2.cmp(&b.2))
        });
        let k = (s * g.len() as f64).round() as usize;
        for (_, t, _, members) in &g[..k] {
            for &e in members {
                keep[*t][e] = false;
            }
        }
    }
    keep
}

/// Reference N:M at the pattern's own sparsity: in every group of `m` along the input dim,
/// prune the `m - n` smallest (ties: lower flat index first).
fn reference_nm_full(p: &ParamValues, n: usize, m: usize) -> Vec<bool> {
    let shape = &p.info.shape;
    let dim = p.info.input_dim.unwrap();
    let mut keep = vec![true; p.values.len()];
    for idx in multi_indices(shape) {
        if idx[dim] % m != 0 {
            continue;
        }
        let mut members: Vec<(f32, usize)> = (0..m)
            .map(|j| {
                let mut k = idx.clone();
                k[dim] += j;
                let e = flat(shape, &k);
                (p.values[e].abs(), e)
            })
            .collect();
        members.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
        for &(_, e) in &members[..m - n] {
            keep[e] = false;
        }
    }
    keep
}

fn keeps(set: &MaskSet, params: &[ParamValues]) -> Vec<Vec<bool>> {
    params
        .iter()
        .map(|p| set.get(&p.info.name).unwrap().keep().to_vec())
        .collect()
}

type ShapeSpec = (&'static [usize], Option<usize>);

const SHAPES: &[ShapeSpec] = &[
    (&[7, 5], Some(0)),
    (&[1, 1], Some(0)),
    (&[13], None),
    (&[3, 4, 3], Some(1)),
    (&[11, 9], Some(1)),
    (&[2, 3, 5, 1], Some(1)),
];

fn random_params(rng: &mut StdRng, shapes: &[ShapeSpec], ties: bool) -> Vec<ParamValues> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, (s, d))| random_param(rng, &format!("p{i}"), s, *d, ties))
        .collect()
}

#[test]
fn unstructured_global_and_layerwise_match_brute_force() {
    let mut rng = StdRng::seed_from_u64(7);
    for trial in 0..40 {
        let params = random_params(&mut rng, SHAPES, trial % 2 == 0);
        let random_s = rng.random_range(0.0..1.0);
        for &s in &[0.0, 0.1, 0.33, 0.5, 0.7, 0.9, 0.97, 1.0, random_s] {
            let got = compute_masks(&params, s, MaskKind::Unstructured, Scope::Global).unwrap();
            assert_eq!(
                keeps(&got, &params),
                reference_unstructured(&params, s),
                "global s={s}"
            );
            let n: usize = params.iter().map(|p| p.values.len()).sum();
            assert_eq!(got.pruned(), (s * n as f64).round() as usize);

            let got = compute_masks(&params, s, MaskKind::Unstructured, Scope::LayerWise).unwrap();
            for p in &params {
                let want = reference_unstructured(std::slice::from_ref(p), s).remove(0);
                let mask = got.get(&p.info.name).unwrap();
                assert_eq!(mask.keep(), want.as_slice(), "layer s={s}");
                assert_eq!(mask.pruned(), (s * p.values.len() as f64).round() as usize);
            }
        }
    }
}

#[test]
fn exact_count_is_rounded_not_thresholded() {
    // All values equal: a threshold test `|w| <= tau` would prune everything.
    let p = ParamValues {
        info: ParamInfo::new("w", vec![3, 3]),
        values: vec![0.25; 9],
    };
    for (s, k) in [
        (0.5, 5),
        (0.3, 3),
        (0.05, 0),
        (0.06, 1),
        (0.94, 8),
        (0.95, 9),
    ] {
        assert_eq!(pruned_count(s, 9), k);
        let got = compute_masks(
            std::slice::from_ref(&p),
            s,
            MaskKind::Unstructured,
            Scope::Global,
        )
        .unwrap();
        let keep = got.get("w").unwrap().keep();
        assert_eq!(keep.iter().filter(|k| !**k).count(), k);
        // Lowest flat indices go first among ties.
        assert!(keep[..k].iter().all(|x| !x) && keep[k..].iter().all(|x| *x));
    }
}

#[test]
fn per_param_targets_match_brute_force() {
    let mut rng = StdRng::seed_from_u64(3);
    let params = random_params(&mut rng, SHAPES, true);
    let targets: Vec<f64> = (0..params.len()).map(|i| 0.15 * i as f64).collect();
    let got = compute_masks_per_param(&params, &targets, MaskKind::Unstructured).unwrap();
    for (p, &s) in params.iter().zip(&targets) {
        let want = reference_unstructured(std::slice::from_ref(p), s).remove(0);
        assert_eq!(got.get(&p.info.name).unwrap().keep(), want.as_slice());
    }
    assert!(compute_masks_per_param(&params, &targets[1..], MaskKind::Unstructured).is_err());
}

#[test]
fn block4_matches_brute_force() {
    let mut rng = StdRng::seed_from_u64(11);
    let shapes: &[ShapeSpec] = &[
        (&[8, 3], Some(0)),
        (&[4, 4], Some(1)),
        (&[5, 12], Some(1)),
        (&[3, 4, 2, 3], Some(1)),
        (&[4, 1], Some(0)),
    ];
    for trial in 0..30 {
        let params = random_params(&mut rng, shapes, trial % 2 == 1);
        let random_s = rng.random_range(0.0..1.0);
        for &s in &[0.0, 0.25, 0.5, 0.6, 0.9, 1.0, random_s] {
            for (scope, global) in [(Scope::Global, true), (Scope::LayerWise, false)] {
                let got = compute_masks(&params, s, MaskKind::Block { size: 4 }, scope).unwrap();
                assert_eq!(
                    keeps(&got, &params),
                    reference_block(&params, s, 4, global),
                    "s={s} {scope:?}"
                );
                assert_eq!(got.pruned() % 4, 0);
            }
        }
    }
}

#[test]
fn nm_at_full_pattern_sparsity_matches_brute_force() {
    let mut rng = StdRng::seed_from_u64(5);
    let patterns = [(2, 4), (4, 8), (1, 4), (3, 4), (1, 2), (5, 8), (2, 3)];
    for trial in 0..20 {
        let ties = trial % 2 == 0;
        for &(n, m) in &patterns {
            let shapes: Vec<(Vec<usize>, usize)> = vec![
                (vec![m * 3, 5], 0),
                (vec![7, m * 2], 1),
                (vec![3, m, 3, 3], 1),
                (vec![m, 1], 0),
            ];
            let params: Vec<ParamValues> = shapes
                .iter()
                .enumerate()
                .map(|(i, (s, d))| random_param(&mut rng, &format!("nm{i}"), s, Some(*d), ties))
                .collect();
            let s = (m - n) as f64 / m as f64;
            for scope in [Scope::Global, Scope::LayerWise] {
                let got = compute_masks(&params, s, MaskKind::NM { n, m }, scope).unwrap();
                for p in &params {
                    assert_eq!(
                        got.get(&p.info.name).unwrap().keep(),
                        reference_nm_full(p, n, m).as_slice(),
                        "{n}:{m} {scope:?} {:?}",
                        p.info.shape
                    );
                }
            }
        }
    }
}

/// Below the pattern's sparsity, N:M prunes exactly round(s·n) elements with at most
/// m − n per group, and the pruned magnitude is the minimum over all such choices
/// (checked exhaustively on small tensors).
#[test]
fn nm_gradual_is_exact_capped_and_optimal() {
    let mut rng = StdRng::seed_from_u64(9);
    let (n, m) = (2, 4);
    // Shape [4, 3] with input dim 0: one group of 4 per column.
    let groups: Vec<Vec<usize>> = (0..3)
        .map(|c| (0..4).map(|r| r * 3 + c).collect())
        .collect();
    for trial in 0..60 {
        let p = random_param(&mut rng, "w", &[4, 3], Some(0), trial % 3 == 0);
        for k in 0..=6usize {
            let s = k as f64 / 12.0;
            let got = compute_masks(
                std::slice::from_ref(&p),
                s,
                MaskKind::NM { n, m },
                Scope::Global,
            )
            .unwrap();
            let keep = got.get("w").unwrap().keep();
            let pruned: Vec<usize> = (0..12).filter(|&e| !keep[e]).collect();
            assert_eq!(pruned.len(), k);
            for g in &groups {
                assert!(g.iter().filter(|e| !keep[**e]).count() <= m - n);
            }
            let cost: f64 = pruned.iter().map(|&e| p.values[e].abs() as f64).sum();
            let mut best = f64::INFINITY;
            for subset in 0u32..(1 << 12) {
                if subset.count_ones() as usize != k {
                    continue;
                }
                let feasible = groups
                    .iter()
                    .all(|g| g.iter().filter(|&&e| (subset >> e) & 1 == 1).count() <= m - n);
                if feasible {
                    let c: f64 = (0..12)
                        .filter(|e| (subset >> e) & 1 == 1)
                        .map(|e| p.values[e].abs() as f64)
                        .sum();
                    best = best.min(c);
                }
            }
            assert!(
                (cost - best).abs() < 1e-9,
                "k={k}: cost {cost} vs best {best}"
            );
        }
    }
}

#[test]
fn structured_errors_name_the_parameter() {
    let mut rng = StdRng::seed_from_u64(1);
    let odd = random_param(&mut rng, "encoder.odd.weight", &[6, 3], Some(0), false);
    let nm = MaskKind::NM { n: 2, m: 4 };
    let err = compute_masks(std::slice::from_ref(&odd), 0.5, nm, Scope::Global).unwrap_err();
    assert!(err.to_string().contains("encoder.odd.weight"), "{err}");
    let block = MaskKind::Block { size: 4 };
    let err = compute_masks(std::slice::from_ref(&odd), 0.5, block, Scope::LayerWise).unwrap_err();
    assert!(err.to_string().contains("encoder.odd.weight"), "{err}");
    let unknown = random_param(&mut rng, "emb.weight", &[8, 4], None, false);
    let err = compute_masks(std::slice::from_ref(&unknown), 0.5, nm, Scope::Global).unwrap_err();
    assert!(err.to_string().contains("emb.weight"), "{err}");
    // Unstructured masks do not need a layout.
    assert!(compute_masks(&[odd, unknown], 0.5, MaskKind::Unstructured, Scope::Global).is_ok());
}

#[test]
fn masks_are_deterministic_across_runs_and_threads() {
    let mut rng = StdRng::seed_from_u64(21);
    let params = random_params(&mut rng, SHAPES, true);
    let first = compute_masks(&params, 0.6, MaskKind::Unstructured, Scope::Global).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let params = params.clone();
            std::thread::spawn(move || {
                compute_masks(&params, 0.6, MaskKind::Unstructured, Scope::Global).unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), first);
    }
}
