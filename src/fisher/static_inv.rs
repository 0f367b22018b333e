//! The static M-FAC inverse (pruning): precompute once over `m` gradients, then query.

use rayon::prelude::*;

use super::real::{Real, dot, rows_dot, sub_combination};
use super::{FisherError, check_finite, check_len, inverse_damp};

/// Columns per parallel work item of the `O(d·m)` passes.
const CHUNK: usize = 4096;

/// `F⁻¹` of `F = λI + (1/m) Σ gₖgₖᵀ` in the M-FAC form
///
/// ```text
/// vₖ = λ⁻¹gₖ − Σ_{j<k} (vⱼᵀgₖ / cⱼ)·vⱼ,   cₖ = m + gₖᵀvₖ,   F⁻¹ = λ⁻¹I − Σₖ vₖvₖᵀ / cₖ
/// ```
///
/// (`vₖ = H_{k−1}⁻¹gₖ`), the `vₖ` overwriting the gradients in place: memory `m·d + m`.
#[derive(Debug, Clone)]
pub struct StaticInverse<T> {
    d: usize,
    m: usize,
    lambda_inv: T,
    /// `vₖ`, row-major `m × d`.
    v: Vec<T>,
    c: Vec<T>,
}

impl<T: Real> StaticInverse<T> {
    /// Builds the inverse from `m` gradients of `d` entries, row-major in `grads` (consumed:
    /// the rows become the `vₖ`), with dampening `damp = λ > 0`. `O(d·m²)`.
    pub fn new(mut grads: Vec<T>, m: usize, d: usize, damp: f64) -> Result<Self, FisherError> {
        let lambda_inv = T::from_f64(inverse_damp(damp)?);
        if m == 0 {
            return Err(FisherError::Empty { what: "gradient" });
        }
        if d == 0 {
            return Err(FisherError::Empty { what: "parameter" });
        }
        check_len("gradients (m × d)", m * d, grads.len())?;
        check_finite("gradients", &grads)?;
        let mt = T::from_f64(m as f64);
        let mut c: Vec<T> = Vec::with_capacity(m);
        let mut row = vec![T::default(); d];
        for k in 0..m {
            let (done, rest) = grads.split_at_mut(k * d);
            let g = &mut rest[..d];
            row.copy_from_slice(g);
            // aⱼ = vⱼᵀgₖ / cⱼ for every earlier row.
            let coef: Vec<T> = rows_dot(done, d, &row)
                .into_iter()
                .zip(&c)
                .map(|(a, &cj)| a / cj)
                .collect();
            // vₖ = λ⁻¹gₖ − Σ aⱼvⱼ, column chunk by column chunk, with gₖᵀvₖ alongside.
            let gv: f64 = g
                .par_chunks_mut(CHUNK)
                .enumerate()
                .map(|(ci, out)| {
                    let lo = ci * CHUNK;
                    let hi = lo + out.len();
                    for x in out.iter_mut() {
                        *x = lambda_inv * *x;
                    }
                    sub_combination(done, d, lo, &coef, out);
                    dot(&row[lo..hi], out).to_f64()
                })
                .sum();
            c.push(mt + T::from_f64(gv));
        }
        Ok(Self {
            d,
            m,
            lambda_inv,
            v: grads,
            c,
        })
    }

    /// Number of parameters `d`.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Number of gradients `m`.
    pub fn num_grads(&self) -> usize {
        self.m
    }

    /// `F⁻¹x` in `O(d·m)`.
    pub fn ihvp(&self, x: &[T]) -> Result<Vec<T>, FisherError> {
        check_len("x", self.d, x.len())?;
        let d = self.d;
        let q: Vec<T> = rows_dot(&self.v, d, x)
            .into_iter()
            .zip(&self.c)
            .map(|(a, &ck)| a / ck)
            .collect();
        let mut out: Vec<T> = x.iter().map(|&xi| self.lambda_inv * xi).collect();
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, o)| {
            sub_combination(&self.v, d, ci * CHUNK, &q, o);
        });
        Ok(out)
    }

    /// `diag(F⁻¹)` in `O(d·m)`.
    pub fn diag(&self) -> Vec<T> {
        let d = self.d;
        let mut out = vec![self.lambda_inv; d];
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, o)| {
            let lo = ci * CHUNK;
            for (k, &ck) in self.c.iter().enumerate() {
                let vk = &self.v[k * d + lo..k * d + lo + o.len()];
                for (oi, &vi) in o.iter_mut().zip(vk) {
                    *oi -= vi * vi / ck;
                }
            }
        });
        out
    }

    /// `[F⁻¹]_ab` in `O(m)`.
    pub fn element(&self, a: usize, b: usize) -> T {
        let d = self.d;
        let mut s = if a == b {
            self.lambda_inv
        } else {
            T::default()
        };
        for (k, &ck) in self.c.iter().enumerate() {
            s -= self.v[k * d + a] * self.v[k * d + b] / ck;
        }
        s
    }

    /// The sub-matrix `F⁻¹_QQ` for the indices `q` (row-major `|q| × |q|`), e.g. the 4 × 4
    /// blocks of block-wise OBS.
    pub fn submatrix(&self, q: &[usize]) -> Vec<T> {
        q.iter()
            .flat_map(|&a| q.iter().map(move |&b| (a, b)))
            .map(|(a, b)| self.element(a, b))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::reference::{fisher, invert, matvec, random, rel_err};
    use super::*;

    fn to<T: Real>(v: &[f64]) -> Vec<T> {
        v.iter().map(|&x| T::from_f64(x)).collect()
    }

    fn back<T: Real>(v: &[T]) -> Vec<f64> {
        v.iter().map(|x| x.to_f64()).collect()
    }

    /// IHVP, diagonal and elements against the explicit inverse.
    fn check<T: Real>(m: usize, d: usize, damp: f64, tol: f64, seed: u64) {
        let g = random(m * d, seed);
        let inv = invert(&fisher(&g, m, d, damp), d);
        let s = StaticInverse::<T>::new(to(&g), m, d, damp).unwrap();
        let x = random(d, seed + 1);
        let want = matvec(&inv, &x);
        let got = back(&s.ihvp(&to::<T>(&x)).unwrap());
        assert!(
            rel_err(&got, &want) <= tol,
            "ihvp: {}",
            rel_err(&got, &want)
        );
        let diag: Vec<f64> = (0..d).map(|i| inv[i * d + i]).collect();
        assert!(rel_err(&back(&s.diag()), &diag) <= tol, "diag");
        for (a, b) in [(0, 0), (0, d - 1), (d / 2, d / 3), (d - 1, d - 1)] {
            let e = s.element(a, b).to_f64();
            let w = inv[a * d + b];
            assert!(
                (e - w).abs() <= tol * inv[0].abs().max(w.abs()),
                "element ({a}, {b}): {e} vs {w}"
            );
        }
        let q = [1, 2, 3, 4];
        let sub = back(&s.submatrix(&q));
        let inv = &inv;
        let want: Vec<f64> = q
            .iter()
            .flat_map(|&a| q.iter().map(move |&b| inv[a * d + b]))
            .collect();
        assert!(rel_err(&sub, &want) <= tol, "submatrix");
    }

    #[test]
    fn static_inverse_equals_the_explicit_inverse_in_f64() {
        check::<f64>(32, 200, 1e-3, 1e-10, 1);
        check::<f64>(7, 50, 0.5, 1e-10, 2);
        check::<f64>(32, 20, 1e-2, 1e-10, 3); // m > d
    }

    #[test]
    fn one_gradient_over_several_column_chunks_matches_the_closed_form() {
        // m = 1: F = λI + ggᵀ, F⁻¹x = (x − g·gᵀx / (λ + gᵀg)) / λ (Sherman–Morrison by hand).
        let (d, damp) = (9000, 0.3);
        let g = random(d, 4);
        let x = random(d, 5);
        let s = StaticInverse::<f64>::new(g.clone(), 1, d, damp).unwrap();
        let gx: f64 = g.iter().zip(&x).map(|(a, b)| a * b).sum();
        let gg: f64 = g.iter().map(|a| a * a).sum();
        let want: Vec<f64> = x
            .iter()
            .zip(&g)
            .map(|(xi, gi)| (xi - gi * gx / (damp + gg)) / damp)
            .collect();
        assert!(rel_err(&s.ihvp(&x).unwrap(), &want) <= 1e-12);
        let diag: Vec<f64> = g
            .iter()
            .map(|gi| (1.0 - gi * gi / (damp + gg)) / damp)
            .collect();
        assert!(rel_err(&s.diag(), &diag) <= 1e-12);
    }

    #[test]
    fn static_inverse_in_f32_is_within_1e_4() {
        check::<f32>(32, 200, 1e-1, 1e-4, 5);
        check::<f32>(16, 150, 1.0, 1e-4, 6);
    }

    #[test]
    fn the_order_of_the_gradients_does_not_matter() {
        let (m, d) = (12, 60);
        let g = random(m * d, 9);
        let mut rev = Vec::with_capacity(m * d);
        for k in (0..m).rev() {
            rev.extend_from_slice(&g[k * d..(k + 1) * d]);
        }
        let a = StaticInverse::<f64>::new(g, m, d, 1e-2).unwrap();
        let b = StaticInverse::<f64>::new(rev, m, d, 1e-2).unwrap();
        let x = random(d, 10);
        let (ya, yb) = (a.ihvp(&x).unwrap(), b.ihvp(&x).unwrap());
        assert!(rel_err(&ya, &yb) <= 1e-10);
        assert!(rel_err(&a.diag(), &b.diag()) <= 1e-10);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(
            StaticInverse::<f64>::new(vec![1.0; 6], 2, 3, 0.0).unwrap_err(),
            FisherError::Damp(0.0)
        );
        assert!(matches!(
            StaticInverse::<f64>::new(vec![1.0; 5], 2, 3, 1e-3),
            Err(FisherError::Length {
                expected: 6,
                got: 5,
                ..
            })
        ));
        assert!(matches!(
            StaticInverse::<f64>::new(vec![1.0, f64::NAN, 0.0], 1, 3, 1e-3),
            Err(FisherError::NonFinite { index: 1, .. })
        ));
        let s = StaticInverse::<f64>::new(vec![1.0; 6], 2, 3, 1e-3).unwrap();
        assert!(s.ihvp(&[1.0; 4]).is_err());
    }
}
