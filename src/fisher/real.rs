//! The float types the Fisher inverses run in, and the lane-wise kernels they share.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub, SubAssign};

use rayon::prelude::*;

/// `f32` (as the reference implementations) or `f64`.
pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + 'static
{
    /// The value nearest to `v`.
    fn from_f64(v: f64) -> Self;
    /// As `f64`.
    fn to_f64(self) -> f64;
}

impl Real for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
}

/// Lanes of the partial sums: wide enough for 8 × f32 AVX registers, two of them in flight.
const LANES: usize = 16;

/// Columns of `x` per block in [`rows_dot`]: 16 KiB of f32, so the block stays in the L1
/// cache while every row of the thread's share multiplies it.
const COLS: usize = 4096;

/// Whether this CPU runs the AVX2 + FMA instantiations (detected at run time; the build
/// targets the baseline x86-64, so the plain instantiation is SSE2).
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Calls `$generic::<T>($args)` through a `#[target_feature(enable = "avx2,fma")]` wrapper
/// when the CPU has them, plainly otherwise. The generic kernels are `#[inline(always)]`, so
/// the wrapper compiles them with 256-bit vectors; every lane does the same scalar operations
/// in the same order either way, so both give the same bits.
macro_rules! dispatch {
    ($generic:ident::<$t:ty>($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if avx2() {
                // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                return unsafe { wide::$generic::<$t>($($arg),*) };
            }
        }
        $generic::<$t>($($arg),*)
    }};
}

/// The AVX2 + FMA instantiations of the kernels below.
#[cfg(target_arch = "x86_64")]
mod wide {
    use super::Real;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_lanes<T: Real>(a: &[T], b: &[T]) -> T {
        super::dot_lanes(a, b)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy_lanes<T: Real>(alpha: T, x: &[T], y: &mut [T]) {
        super::axpy_lanes(alpha, x, y)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_dot_block<T: Real>(g: &[T], d: usize, x: &[T], out: &mut [T]) {
        super::rows_dot_block(g, d, x, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sub_combination_lanes<T: Real>(
        g: &[T],
        d: usize,
        lo: usize,
        w: &[T],
        out: &mut [T],
    ) {
        super::sub_combination_lanes(g, d, lo, w, out)
    }
}

/// `Σ a[i]·b[i]` with `LANES` independent partial sums (vectorisable, and more accurate than
/// one running sum).
pub(crate) fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    debug_assert_eq!(a.len(), b.len());
    dispatch!(dot_lanes::<T>(a, b))
}

#[inline(always)]
fn dot_lanes<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::default(); LANES];
    let (ca, ra) = a.split_at(a.len() - a.len() % LANES);
    let (cb, rb) = b.split_at(ca.len());
    for (x, y) in ca.chunks_exact(LANES).zip(cb.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = T::default();
    for (x, y) in ra.iter().zip(rb) {
        tail += *x * *y;
    }
    reduce(acc) + tail
}

/// Pairwise reduction of the lanes.
#[inline(always)]
fn reduce<T: Real>(mut acc: [T; LANES]) -> T {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            let v = acc[l + width];
            acc[l] += v;
        }
    }
    acc[0]
}

/// `y += alpha · x`.
pub(crate) fn axpy<T: Real>(alpha: T, x: &[T], y: &mut [T]) {
    debug_assert_eq!(x.len(), y.len());
    dispatch!(axpy_lanes::<T>(alpha, x, y))
}

#[inline(always)]
fn axpy_lanes<T: Real>(alpha: T, x: &[T], y: &mut [T]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * *xi;
    }
}

/// `[dot(g₀, x), …, dot(g_{m−1}, x)]` for the rows of the row-major `m × d` matrix `g`, bit
/// for bit [`dot`]'s values: parallel over rows (each thread a contiguous share), `x` read
/// in blocks of [`COLS`] that stay in cache while the share's rows pass over them (row by
/// row, `x` would be streamed from memory `m` times).
pub(crate) fn rows_dot<T: Real>(g: &[T], d: usize, x: &[T]) -> Vec<T> {
    debug_assert_eq!(x.len(), d);
    let m = g.len().checked_div(d).unwrap_or(0);
    let mut out = vec![T::default(); m];
    if m == 0 {
        return out;
    }
    let per = m.div_ceil(rayon::current_num_threads().max(1)).max(1);
    out.par_chunks_mut(per).enumerate().for_each(|(t, o)| {
        let rows = &g[t * per * d..(t * per + o.len()) * d];
        dispatch_rows_dot(rows, d, x, o);
    });
    out
}

fn dispatch_rows_dot<T: Real>(g: &[T], d: usize, x: &[T], out: &mut [T]) {
    dispatch!(rows_dot_block::<T>(g, d, x, out))
}

/// [`rows_dot`] for one share of rows: the lane sums of every row advance block by block in
/// the order [`dot_lanes`] uses, so each result is the same.
#[inline(always)]
fn rows_dot_block<T: Real>(g: &[T], d: usize, x: &[T], out: &mut [T]) {
    let main = d - d % LANES;
    let mut acc = vec![[T::default(); LANES]; out.len()];
    for c0 in (0..main).step_by(COLS) {
        let c1 = (c0 + COLS).min(main);
        let xc = &x[c0..c1];
        for (r, a) in acc.iter_mut().enumerate() {
            let gr = &g[r * d + c0..r * d + c1];
            for (gs, xs) in gr.chunks_exact(LANES).zip(xc.chunks_exact(LANES)) {
                for l in 0..LANES {
                    a[l] += gs[l] * xs[l];
                }
            }
        }
    }
    for (r, (a, o)) in acc.into_iter().zip(out.iter_mut()).enumerate() {
        let mut tail = T::default();
        for (gi, xi) in g[r * d + main..(r + 1) * d].iter().zip(&x[main..]) {
            tail += *gi * *xi;
        }
        *o = reduce(a) + tail;
    }
}

/// `out[i] += Σⱼ (−w[j])·g[j, lo + i]`, j in order: bit for bit `axpy(−w[j], …, out)` for
/// j = 0, 1, …, with `out` loaded and stored once per four rows instead of once per row.
pub(crate) fn sub_combination<T: Real>(g: &[T], d: usize, lo: usize, w: &[T], out: &mut [T]) {
    dispatch!(sub_combination_lanes::<T>(g, d, lo, w, out))
}

#[inline(always)]
fn sub_combination_lanes<T: Real>(g: &[T], d: usize, lo: usize, w: &[T], out: &mut [T]) {
    let n = out.len();
    let row = |j: usize| &g[j * d + lo..j * d + lo + n];
    let mut j = 0;
    while j + 4 <= w.len() {
        let (a0, a1, a2, a3) = (-w[j], -w[j + 1], -w[j + 2], -w[j + 3]);
        let (r0, r1, r2, r3) = (row(j), row(j + 1), row(j + 2), row(j + 3));
        for ((((o, x0), x1), x2), x3) in out.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
            let mut v = *o;
            v += a0 * *x0;
            v += a1 * *x1;
            v += a2 * *x2;
            v += a3 * *x3;
            *o = v;
        }
        j += 4;
    }
    while j < w.len() {
        axpy_lanes(-w[j], row(j), out);
        j += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded f32 values with magnitudes from 0.01 to 100 (so that a change of summation
    /// order would show in the last bits).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        super::super::reference::random(n, seed)
            .into_iter()
            .enumerate()
            .map(|(i, v)| v as f32 * 10f32.powi((i % 5) as i32 - 2))
            .collect()
    }

    /// The blocked kernels give exactly the bits of the row-by-row ones they replace (`dot`
    /// per row; `axpy` per row in order), over several column blocks, a tail that is not a
    /// whole lane group, and a row count that is not a multiple of four or of the threads.
    #[test]
    fn blocked_kernels_equal_the_row_by_row_ones_bit_for_bit() {
        let (m, d) = (7, 2 * COLS + 37);
        let g = values(m * d, 1);
        let x = values(d, 2);
        let want: Vec<u32> = g.chunks(d).map(|r| dot(r, &x).to_bits()).collect();
        let got: Vec<u32> = rows_dot(&g, d, &x).iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want);

        let w = values(m, 3);
        let (lo, n) = (COLS - 5, COLS + 11);
        let mut want = x[..n].to_vec();
        for (j, &wj) in w.iter().enumerate() {
            axpy(-wj, &g[j * d + lo..j * d + lo + n], &mut want);
        }
        let mut got = x[..n].to_vec();
        sub_combination(&g, d, lo, &w, &mut got);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want));
    }

    /// The AVX2 + FMA instantiations give the plain (SSE2) ones' bits: the same lane
    /// operations in the same order, only wider registers.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_instantiations_give_the_plain_bits() {
        if !avx2() {
            return;
        }
        let (m, d) = (5, COLS + 21);
        let g = values(m * d, 4);
        let x = values(d, 5);
        let w = values(m, 6);
        // SAFETY: AVX2 and FMA checked above.
        unsafe {
            assert_eq!(
                dot_lanes(&g[..d], &x).to_bits(),
                wide::dot_lanes(&g[..d], &x).to_bits()
            );
            let (mut plain, mut wide_out) = (vec![0.0f32; m], vec![0.0f32; m]);
            rows_dot_block(&g, d, &x, &mut plain);
            wide::rows_dot_block(&g, d, &x, &mut wide_out);
            assert_eq!(plain, wide_out);
            let (mut a, mut b) = (x.clone(), x.clone());
            sub_combination_lanes(&g, d, 0, &w, &mut a);
            wide::sub_combination_lanes(&g, d, 0, &w, &mut b);
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}
