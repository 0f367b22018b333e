//! The block-diagonal inverse with explicit `B × B` blocks (oBERT).

use rayon::prelude::*;

use super::real::{Real, dot};
use super::{FisherError, check_finite, check_len, inverse_damp};

/// `F⁻¹` of the block-diagonal part of `F = λI + (1/m) Σ gₖgₖᵀ` over blocks of `B`
/// consecutive entries (the last block is zero-padded to `B`): one explicit `B × B` inverse
/// per block, starting at `λ⁻¹I` and updated with Sherman–Morrison as each gradient arrives,
///
/// ```text
/// u = F_b⁻¹ g_b,   F_b⁻¹ ← F_b⁻¹ − u uᵀ / (m + g_bᵀ u),
/// ```
///
/// so gradients are streamed and never stored: memory `⌈d/B⌉·B²`, time `O(d·B)` per gradient.
/// With `B = d` it is the full inverse.
#[derive(Debug, Clone)]
pub struct BlockInverse<T> {
    d: usize,
    block: usize,
    m: usize,
    added: usize,
    /// The block inverses, each `B × B` row-major, one after the other.
    inv: Vec<T>,
}

impl<T: Real> BlockInverse<T> {
    /// `λ⁻¹I` in blocks of `block` entries (clamped to `d`), for `m` gradients to come.
    pub fn new(d: usize, block: usize, m: usize, damp: f64) -> Result<Self, FisherError> {
        let li = T::from_f64(inverse_damp(damp)?);
        if d == 0 || block == 0 {
            return Err(FisherError::Empty { what: "parameter" });
        }
        if m == 0 {
            return Err(FisherError::Empty { what: "gradient" });
        }
        let block = block.min(d);
        let nb = d.div_ceil(block);
        let mut inv = vec![T::default(); nb * block * block];
        for b in 0..nb {
            for i in 0..block {
                inv[(b * block + i) * block + i] = li;
            }
        }
        Ok(Self {
            d,
            block,
            m,
            added: 0,
            inv,
        })
    }

    /// The block size `B`.
    pub fn block_size(&self) -> usize {
        self.block
    }

    /// Gradients added so far.
    pub fn num_added(&self) -> usize {
        self.added
    }

    /// Folds one gradient (`d` entries) into every block: `O(d·B)`.
    pub fn add_gradient(&mut self, g: &[T]) -> Result<(), FisherError> {
        check_len("gradient", self.d, g.len())?;
        check_finite("gradient", g)?;
        if self.added == self.m {
            return Err(FisherError::TooManyGradients { m: self.m });
        }
        let (bs, d) = (self.block, self.d);
        let mt = T::from_f64(self.m as f64);
        self.inv
            .par_chunks_mut(bs * bs)
            .enumerate()
            .for_each(|(b, f)| {
                let lo = b * bs;
                let mut gb = vec![T::default(); bs];
                let n = bs.min(d - lo);
                gb[..n].copy_from_slice(&g[lo..lo + n]);
                let u: Vec<T> = f.chunks_exact(bs).map(|row| dot(row, &gb)).collect();
                let denom = mt + dot(&gb, &u);
                for (i, row) in f.chunks_exact_mut(bs).enumerate() {
                    let ui = u[i] / denom;
                    for (x, &uj) in row.iter_mut().zip(&u) {
                        *x -= ui * uj;
                    }
                }
            });
        self.added += 1;
        Ok(())
    }

    /// `F⁻¹x` (block by block): `O(d·B)`.
    pub fn ihvp(&self, x: &[T]) -> Result<Vec<T>, FisherError> {
        check_len("x", self.d, x.len())?;
        let (bs, d) = (self.block, self.d);
        let mut out = vec![T::default(); d];
        out.par_chunks_mut(bs)
            .zip(self.inv.par_chunks(bs * bs))
            .enumerate()
            .for_each(|(b, (o, f))| {
                let xb = &x[b * bs..b * bs + o.len()];
                for (i, oi) in o.iter_mut().enumerate() {
                    *oi = dot(&f[i * bs..i * bs + xb.len()], xb);
                }
            });
        Ok(out)
    }

    /// `diag(F⁻¹)`.
    pub fn diag(&self) -> Vec<T> {
        let bs = self.block;
        (0..self.d)
            .map(|i| {
                let (b, r) = (i / bs, i % bs);
                self.inv[(b * bs + r) * bs + r]
            })
            .collect()
    }

    /// `[F⁻¹]_ab` (zero across blocks).
    pub fn element(&self, a: usize, b: usize) -> T {
        let bs = self.block;
        if a / bs != b / bs {
            return T::default();
        }
        self.inv[((a / bs) * bs + a % bs) * bs + b % bs]
    }

    /// The sub-matrix `F⁻¹_QQ` for the indices `q` (row-major `|q| × |q|`).
    pub fn submatrix(&self, q: &[usize]) -> Vec<T> {
        q.iter()
            .flat_map(|&a| q.iter().map(move |&b| (a, b)))
            .map(|(a, b)| self.element(a, b))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::StaticInverse;
    use super::super::reference::{fisher, invert, matvec, random, rel_err};
    use super::*;

    fn build(g: &[f64], m: usize, d: usize, block: usize, damp: f64) -> BlockInverse<f64> {
        let mut b = BlockInverse::new(d, block, m, damp).unwrap();
        for row in g.chunks(d) {
            b.add_gradient(row).unwrap();
        }
        b
    }

    #[test]
    fn one_block_of_size_d_is_the_full_inverse() {
        let (m, d, damp) = (16, 90, 1e-3);
        let g = random(m * d, 21);
        let b = build(&g, m, d, d, damp);
        let inv = invert(&fisher(&g, m, d, damp), d);
        let x = random(d, 22);
        assert!(rel_err(&b.ihvp(&x).unwrap(), &matvec(&inv, &x)) <= 1e-10);
        let s = StaticInverse::new(g, m, d, damp).unwrap();
        assert!(rel_err(&b.diag(), &s.diag()) <= 1e-10);
        assert!(rel_err(&b.ihvp(&x).unwrap(), &s.ihvp(&x).unwrap()) <= 1e-10);
    }

    #[test]
    fn blocks_are_the_inverses_of_the_diagonal_blocks() {
        let (m, d, bs, damp) = (10, 47, 10, 1e-2);
        let g = random(m * d, 23);
        let b = build(&g, m, d, bs, damp);
        let f = fisher(&g, m, d, damp);
        // The block-diagonal part of F, inverted explicitly.
        let mut fb = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                if i / bs == j / bs {
                    fb[i * d + j] = f[i * d + j];
                }
            }
        }
        let inv = invert(&fb, d);
        let x = random(d, 24);
        assert!(rel_err(&b.ihvp(&x).unwrap(), &matvec(&inv, &x)) <= 1e-10);
        let diag: Vec<f64> = (0..d).map(|i| inv[i * d + i]).collect();
        assert!(rel_err(&b.diag(), &diag) <= 1e-10);
        assert_eq!(b.element(3, 15), 0.0);
        assert!((b.element(41, 46) - inv[41 * d + 46]).abs() <= 1e-10 * inv[0].abs());
        let sub = b.submatrix(&[40, 41, 42, 43]);
        assert!((sub[1] - inv[40 * d + 41]).abs() <= 1e-10 * inv[0].abs());
    }

    #[test]
    fn f32_blocks_are_within_1e_4() {
        let (m, d, bs, damp) = (32, 64, 16, 1e-1);
        let g = random(m * d, 25);
        let mut b = BlockInverse::<f32>::new(d, bs, m, damp).unwrap();
        for row in g.chunks(d) {
            let r: Vec<f32> = row.iter().map(|&x| x as f32).collect();
            b.add_gradient(&r).unwrap();
        }
        let exact = build(&g, m, d, bs, damp);
        let x = random(d, 26);
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let got: Vec<f64> = b.ihvp(&xf).unwrap().iter().map(|&v| v as f64).collect();
        assert!(rel_err(&got, &exact.ihvp(&x).unwrap()) <= 1e-4);
    }

    #[test]
    fn more_gradients_than_announced_is_an_error() {
        let mut b = BlockInverse::<f64>::new(4, 2, 1, 1e-2).unwrap();
        b.add_gradient(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(
            b.add_gradient(&[1.0; 4]).unwrap_err(),
            FisherError::TooManyGradients { m: 1 }
        );
        assert!(b.add_gradient(&[1.0; 3]).is_err());
    }
}
