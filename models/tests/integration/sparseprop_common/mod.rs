//! Shared helpers for the SparseProp tests: a seeded generator, masks, a tolerance check.
#![allow(dead_code)]

/// xorshift64* generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unif(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in [lo, hi].
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// Uniform in [-1, 1).
    pub fn sym(&mut self) -> f32 {
        (self.unif() * 2.0 - 1.0) as f32
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.sym()).collect()
    }
    /// A keep-mask where each entry is kept with probability `1 - sparsity`.
    pub fn mask(&mut self, n: usize, sparsity: f64) -> Vec<bool> {
        (0..n).map(|_| self.unif() >= sparsity).collect()
    }
}

/// Asserts `max |got − want| ≤ 1e-4 · max(1, max |want|)` (relative to the tensor's scale).
pub fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let mut worst = (0.0f64, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (*g as f64 - w).abs();
        if d > worst.0 {
            worst = (d, i);
        }
    }
    assert!(
        worst.0 <= 1e-4 * scale,
        "{what}: max abs error {} at {} (got {}, want {}), scale {scale}",
        worst.0,
        worst.1,
        got[worst.1],
        want[worst.1]
    );
}

/// Same as [`assert_close`] for two f32 buffers.
pub fn assert_close32(what: &str, got: &[f32], want: &[f32]) {
    let w: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert_close(what, got, &w);
}
