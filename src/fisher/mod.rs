//! Inverse empirical Fisher products without forming the Fisher (M-FAC, Frantar, Kurtic,
//! Alistarh 2021; oBERT's block inverses, Kurtic et al. 2022).
//!
//! All forms work with the dampened empirical Fisher of `m` gradients `gᵢ ∈ ℝᵈ`,
//!
//! ```text
//! F = λ·I + (1/m)·Σᵢ gᵢ gᵢᵀ,
//! ```
//!
//! whose inverse is `m` Sherman–Morrison updates of `λ⁻¹·I` (the `m +` in each denominator is
//! the `1/m` of each term; the result does not depend on the gradients' order):
//!
//! * [`StaticInverse`] — the static algorithm (pruning): `O(d·m²)` precompute in place over the
//!   `m × d` gradient matrix, then `F⁻¹x` in `O(d·m)`, one element in `O(m)`, the diagonal in
//!   `O(d·m)`.
//! * [`BlockInverse`] — a block-diagonal Fisher over blocks of `B` consecutive entries with
//!   explicit `B × B` inverses updated per gradient (oBERT): memory `O(d·B)`, gradients
//!   streamed one by one, `B = d` is the full inverse.
//! * [`DynamicInverse`] — the sliding window (optimizer): a ring of the last `m` gradients and
//!   their Gram matrix; `F⁻¹x` in `O(d·m + m²)`, a window update in `O(d·m + m³)`.
//!
//! No autodiff here: plain slices, `f32` like the references or `f64` (tests), parallel over
//! the cores with rayon where the work is `O(d·m)` or more. Dot products and updates run over
//! fixed-width lanes that the compiler vectorises; on x86-64 an AVX2 + FMA instantiation is
//! chosen at run time (the build stays baseline x86-64), giving the same bits as the plain one.
//! Products of the `m × d` matrix with a vector read the vector in cache-sized blocks.

mod block;
mod dynamic;
mod real;
mod static_inv;

pub use block::BlockInverse;
pub use dynamic::DynamicInverse;
pub use real::Real;
pub use static_inv::StaticInverse;

/// Bad input to a Fisher inverse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FisherError {
    /// The dampening λ is not a positive finite number.
    #[error("damp (λ) = {0}: the dampening must be a positive finite number")]
    Damp(f64),
    /// A dimension is zero.
    #[error("{what} is 0: the Fisher needs at least one {what}")]
    Empty {
        /// `gradient` or `parameter`.
        what: &'static str,
    },
    /// A vector or matrix has the wrong length.
    #[error("{what}: expected {expected} values, got {got}")]
    Length {
        /// Which input.
        what: &'static str,
        /// The length the Fisher's dimensions imply.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// More gradients were added than the inverse was built for.
    #[error("{m} gradients were announced and a further one was added")]
    TooManyGradients {
        /// The announced count.
        m: usize,
    },
    /// A value is NaN or infinite.
    #[error("{what} holds a non-finite value at index {index}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Where.
        index: usize,
    },
}

/// Checks `damp` and returns λ⁻¹.
fn inverse_damp(damp: f64) -> Result<f64, FisherError> {
    if damp.is_finite() && damp > 0.0 {
        Ok(1.0 / damp)
    } else {
        Err(FisherError::Damp(damp))
    }
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), FisherError> {
    if expected == got {
        Ok(())
    } else {
        Err(FisherError::Length {
            what,
            expected,
            got,
        })
    }
}

fn check_finite<T: Real>(what: &'static str, v: &[T]) -> Result<(), FisherError> {
    match v.iter().position(|x| !x.to_f64().is_finite()) {
        Some(index) => Err(FisherError::NonFinite { what, index }),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod reference {
    //! An explicit dense Fisher and its inverse (Gauss–Jordan in f64), for tests.

    /// `F = λI + (1/m) Σ gᵢgᵢᵀ` as a dense `d × d` matrix.
    pub fn fisher(grads: &[f64], m: usize, d: usize, damp: f64) -> Vec<f64> {
        let mut f = vec![0.0; d * d];
        for i in 0..d {
            f[i * d + i] = damp;
        }
        for g in grads.chunks(d).take(m) {
            for a in 0..d {
                for b in 0..d {
                    f[a * d + b] += g[a] * g[b] / m as f64;
                }
            }
        }
        f
    }

    /// The inverse of a symmetric positive definite `d × d` matrix.
    pub fn invert(a: &[f64], d: usize) -> Vec<f64> {
        let mut m = a.to_vec();
        let mut inv = vec![0.0; d * d];
        for i in 0..d {
            inv[i * d + i] = 1.0;
        }
        for col in 0..d {
            let piv = (col..d)
                .max_by(|&x, &y| m[x * d + col].abs().total_cmp(&m[y * d + col].abs()))
                .unwrap();
            for k in 0..d {
                m.swap(col * d + k, piv * d + k);
                inv.swap(col * d + k, piv * d + k);
            }
            let p = m[col * d + col];
            for k in 0..d {
                m[col * d + k] /= p;
                inv[col * d + k] /= p;
            }
            for r in 0..d {
                if r != col {
                    let f = m[r * d + col];
                    if f != 0.0 {
                        for k in 0..d {
                            m[r * d + k] -= f * m[col * d + k];
                            inv[r * d + k] -= f * inv[col * d + k];
                        }
                    }
                }
            }
        }
        inv
    }

    /// `A x` for a dense `d × d` matrix.
    pub fn matvec(a: &[f64], x: &[f64]) -> Vec<f64> {
        let d = x.len();
        (0..d)
            .map(|i| (0..d).map(|j| a[i * d + j] * x[j]).sum())
            .collect()
    }

    /// Seeded values in about [-1, 1].
    pub fn random(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// The largest |a − b| relative to the largest |b|.
    pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-300);
        a.iter()
            .zip(b)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }
}
