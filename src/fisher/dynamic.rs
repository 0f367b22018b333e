//! The dynamic M-FAC inverse (optimizer): a sliding window of the last `m` gradients.

use rayon::prelude::*;

use super::real::{Real, axpy, dot, rows_dot, sub_combination};
use super::{FisherError, check_finite, check_len, inverse_damp};

const CHUNK: usize = 4096;

/// `F⁻¹` of `F = λI + (1/m) Σ gₖgₖᵀ` over a window of the last `m` gradients (slots not yet
/// filled hold zero gradients, which add nothing). State: the ring `G` (`m × d`), its Gram
/// matrix `K = GGᵀ`, and, rebuilt after every window change in `O(m³)`,
///
/// ```text
/// D_ij = λ⁻¹K_ij − Σ_{k<i} D_ki D_kj / c_k  (j ≥ i),   c_i = m + D_ii,
/// B_k  = λ⁻¹e_k − Σ_{j<k} (D_jk / c_j)·B_j       (so that v_k = Σ_j B_kj g_j),
/// ```
///
/// and `F⁻¹x = λ⁻¹x − Gᵀ(Bᵀ((B·Gx) ⊘ c))` in `O(d·m + m²)`.
#[derive(Debug, Clone)]
pub struct DynamicInverse<T> {
    d: usize,
    m: usize,
    lambda_inv: T,
    g: Vec<T>,
    k: Vec<T>,
    dm: Vec<T>,
    c: Vec<T>,
    b: Vec<T>,
    next: usize,
}

impl<T: Real> DynamicInverse<T> {
    /// An empty window of `m` gradients of `d` entries (`F = λI` until gradients arrive).
    pub fn new(d: usize, m: usize, damp: f64) -> Result<Self, FisherError> {
        let lambda_inv = T::from_f64(inverse_damp(damp)?);
        if d == 0 {
            return Err(FisherError::Empty { what: "parameter" });
        }
        if m == 0 {
            return Err(FisherError::Empty { what: "gradient" });
        }
        let mut s = Self {
            d,
            m,
            lambda_inv,
            g: vec![T::default(); m * d],
            k: vec![T::default(); m * m],
            dm: vec![T::default(); m * m],
            c: vec![T::default(); m],
            b: vec![T::default(); m * m],
            next: 0,
        };
        s.rebuild();
        Ok(s)
    }

    /// The window size `m`.
    pub fn window(&self) -> usize {
        self.m
    }

    /// The number of parameters `d`.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// The window (`m × d`, row-major, ring order) and the slot the next gradient replaces:
    /// all the state (the rest is rebuilt from it).
    pub fn state(&self) -> (&[T], usize) {
        (&self.g, self.next)
    }

    /// Restores a state from [`state`](Self::state): the Gram matrix is recomputed from the
    /// window (bit for bit what the pushes computed) and the factors rebuilt.
    pub fn restore(&mut self, window: Vec<T>, next: usize) -> Result<(), FisherError> {
        check_len("window (m × d)", self.m * self.d, window.len())?;
        check_finite("window", &window)?;
        if next >= self.m {
            return Err(FisherError::Length {
                what: "next slot",
                expected: self.m,
                got: next,
            });
        }
        let (d, m) = (self.d, self.m);
        self.g = window;
        // `dot` is symmetric bit for bit, so the order of the pushes does not matter.
        let g = &self.g;
        self.k.par_chunks_mut(m).enumerate().for_each(|(r, row)| {
            let gr = &g[r * d..(r + 1) * d];
            for (j, k) in row.iter_mut().enumerate() {
                *k = dot(&g[j * d..(j + 1) * d], gr);
            }
        });
        self.next = next;
        self.rebuild();
        Ok(())
    }

    /// Replaces the oldest gradient of the window by `grad`: `O(d·m + m³)`.
    pub fn push(&mut self, grad: &[T]) -> Result<(), FisherError> {
        check_len("gradient", self.d, grad.len())?;
        check_finite("gradient", grad)?;
        let (d, m, r) = (self.d, self.m, self.next);
        self.g[r * d..(r + 1) * d].copy_from_slice(grad);
        let kr: Vec<T> = rows_dot(&self.g, d, grad);
        for (j, &v) in kr.iter().enumerate() {
            self.k[r * m + j] = v;
            self.k[j * m + r] = v;
        }
        self.rebuild();
        self.next = (r + 1) % m;
        Ok(())
    }

    /// Rebuilds `D`, `c` and `B` from `K` (`O(m³)`).
    fn rebuild(&mut self) {
        let m = self.m;
        let li = self.lambda_inv;
        let mt = T::from_f64(m as f64);
        for i in 0..m {
            // Row i of D from K and the rows above it.
            let mut row: Vec<T> = self.k[i * m..(i + 1) * m].iter().map(|&x| li * x).collect();
            for kk in 0..i {
                let f = self.dm[kk * m + i] / self.c[kk];
                // Row kk of D is zero left of its diagonal.
                axpy(-f, &self.dm[kk * m + kk..(kk + 1) * m], &mut row[kk..]);
            }
            for x in row.iter_mut().take(i) {
                *x = T::default();
            }
            self.c[i] = mt + row[i];
            self.dm[i * m..(i + 1) * m].copy_from_slice(&row);
        }
        for kk in 0..m {
            let mut row = vec![T::default(); m];
            row[kk] = li;
            for j in 0..kk {
                let f = self.dm[j * m + kk] / self.c[j];
                // Row j of B is zero right of its diagonal.
                axpy(-f, &self.b[j * m..j * m + j + 1], &mut row[..=j]);
            }
            self.b[kk * m..(kk + 1) * m].copy_from_slice(&row);
        }
    }

    /// `F⁻¹x`: `O(d·m + m²)`.
    pub fn ihvp(&self, x: &[T]) -> Result<Vec<T>, FisherError> {
        check_len("x", self.d, x.len())?;
        let (d, m) = (self.d, self.m);
        let a: Vec<T> = rows_dot(&self.g, d, x);
        // q = B a; w = Bᵀ (q ⊘ c).
        let q: Vec<T> = (0..m)
            .map(|kk| dot(&self.b[kk * m..(kk + 1) * m], &a))
            .collect();
        let mut w = vec![T::default(); m];
        for ((qk, ck), bk) in q.iter().zip(&self.c).zip(self.b.chunks_exact(m)) {
            axpy(*qk / *ck, bk, &mut w);
        }
        let mut out: Vec<T> = x.iter().map(|&xi| self.lambda_inv * xi).collect();
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, o)| {
            sub_combination(&self.g, d, ci * CHUNK, &w, o);
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::StaticInverse;
    use super::super::reference::{fisher, invert, matvec, random, rel_err};
    use super::*;

    #[test]
    fn a_partly_filled_window_counts_the_empty_slots_as_zero_gradients() {
        let (m, d, damp) = (8, 40, 1e-2);
        let g = random(3 * d, 31);
        let mut dy = DynamicInverse::<f64>::new(d, m, damp).unwrap();
        let x = random(d, 32);
        let before = dy.ihvp(&x).unwrap();
        assert!(rel_err(&before, &x.iter().map(|v| v / damp).collect::<Vec<_>>()) <= 1e-12);
        for row in g.chunks(d) {
            dy.push(row).unwrap();
        }
        let mut padded = g.clone();
        padded.resize(m * d, 0.0);
        let inv = invert(&fisher(&padded, m, d, damp), d);
        assert!(rel_err(&dy.ihvp(&x).unwrap(), &matvec(&inv, &x)) <= 1e-10);
    }

    #[test]
    fn the_sliding_window_equals_a_rebuild_from_scratch() {
        let (m, d, damp) = (16, 120, 1e-3);
        let stream = random((m + 11) * d, 33);
        let mut dy = DynamicInverse::<f64>::new(d, m, damp).unwrap();
        for row in stream.chunks(d) {
            dy.push(row).unwrap();
        }
        // The last m gradients, in any order.
        let last = stream[11 * d..].to_vec();
        let inv = invert(&fisher(&last, m, d, damp), d);
        let s = StaticInverse::new(last, m, d, damp).unwrap();
        let x = random(d, 34);
        let got = dy.ihvp(&x).unwrap();
        assert!(rel_err(&got, &matvec(&inv, &x)) <= 1e-10);
        assert!(rel_err(&got, &s.ihvp(&x).unwrap()) <= 1e-10);
    }

    #[test]
    fn a_restored_window_answers_bit_for_bit_like_the_original() {
        let (m, d) = (6, 50);
        let stream = random(9 * d, 37);
        let mut a = DynamicInverse::<f32>::new(d, m, 1e-2).unwrap();
        for row in stream.chunks(d) {
            let r: Vec<f32> = row.iter().map(|&v| v as f32).collect();
            a.push(&r).unwrap();
        }
        let (w, next) = a.state();
        let mut b = DynamicInverse::<f32>::new(d, m, 1e-2).unwrap();
        b.restore(w.to_vec(), next).unwrap();
        let x: Vec<f32> = random(d, 38).iter().map(|&v| v as f32).collect();
        assert_eq!(a.ihvp(&x).unwrap(), b.ihvp(&x).unwrap());
        let g: Vec<f32> = random(d, 39).iter().map(|&v| v as f32).collect();
        a.push(&g).unwrap();
        b.push(&g).unwrap();
        assert_eq!(a.ihvp(&x).unwrap(), b.ihvp(&x).unwrap());
    }

    #[test]
    fn f32_window_is_within_1e_4() {
        let (m, d, damp) = (32, 200, 1e-1);
        let stream = random((m + 5) * d, 35);
        let mut dy = DynamicInverse::<f32>::new(d, m, damp).unwrap();
        for row in stream.chunks(d) {
            let r: Vec<f32> = row.iter().map(|&v| v as f32).collect();
            dy.push(&r).unwrap();
        }
        let inv = invert(&fisher(&stream[5 * d..], m, d, damp), d);
        let x = random(d, 36);
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let got: Vec<f64> = dy.ihvp(&xf).unwrap().iter().map(|&v| v as f64).collect();
        assert!(
            rel_err(&got, &matvec(&inv, &x)) <= 1e-4,
            "{}",
            rel_err(&got, &matvec(&inv, &x))
        );
    }
}
