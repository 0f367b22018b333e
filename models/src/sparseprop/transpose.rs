//! The layout change of the SparseProp kernels: a row-major `rows × cols` matrix into a
//! row-major `cols × rows` one (`[B, C·H·W]` ↔ `[C·H·W, B]`, the batch innermost).
//!
//! Parallel over blocks of 64 output rows (= source columns). Inside a block, 8 × 8 tiles are
//! transposed in registers on x86-64 with AVX2 (8 row loads, 24 shuffles, 8 row stores),
//! chosen at run time; the edges that do not fill a tile, and CPUs without AVX2, go through a
//! 16 × 16 tile copied into a local array and written out column by column. The output is
//! written once, never zeroed first.
//!
//! The register path matters: the scalar tile writes each float with its own store, and a
//! sparse conv fed NCHW changes the layout five times per step (input and output of the
//! forward, input, output gradient and input gradient of the backward). The ResNets avoid
//! that by passing channel-major [`FeatureMap`](crate::feature_map::FeatureMap)s between
//! sparse layers; the NCHW entry points still transpose.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::simd::Isa;

/// Output rows (source columns) per parallel task.
const BLOCK: usize = 64;

/// Transposes a row-major `rows × cols` matrix into a row-major `cols × rows` one, with the
/// widest tile transpose this CPU supports ([`Isa::detect`]).
pub fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    transpose_with(src, rows, cols, Isa::detect())
}

/// [`transpose`] with the instruction set given: [`Isa::Portable`] takes the scalar tiles
/// everywhere, any x86 set the AVX2 register tiles (if the CPU has AVX2).
pub(crate) fn transpose_with(src: &[f32], rows: usize, cols: usize, isa: Isa) -> Vec<f32> {
    assert_eq!(src.len(), rows * cols, "transpose: buffer/shape mismatch");
    let n = rows * cols;
    let mut dst: Vec<f32> = Vec::with_capacity(n);
    if n == 0 {
        return dst;
    }
    let registers = registers(isa);
    dst.spare_capacity_mut()[..n]
        .par_chunks_mut(BLOCK * rows)
        .enumerate()
        .for_each(|(bi, out)| block(src, rows, cols, bi * BLOCK, registers, out));
    // SAFETY: the chunks cover all `n` slots and every slot of every chunk was written: the
    // register tiles cover rows 0..full_r × columns c0..full_c, the two scalar calls the rest.
    unsafe { dst.set_len(n) };
    dst
}

/// Whether the AVX2 register tiles may run with `isa` on this CPU.
fn registers(isa: Isa) -> bool {
    cfg!(target_arch = "x86_64") && isa > Isa::Portable && isa.supported()
}

/// [`transpose_with`] on the calling thread only, into `dst` (`rows × cols` slots, every one
/// written): for callers that are already one task of a parallel loop (the SparseProp
/// linear forward transposes one panel of tokens per task).
pub(crate) fn transpose_into(
    src: &[f32],
    rows: usize,
    cols: usize,
    isa: Isa,
    dst: &mut [MaybeUninit<f32>],
) {
    assert_eq!(src.len(), rows * cols, "transpose: buffer/shape mismatch");
    assert_eq!(dst.len(), rows * cols, "transpose: output/shape mismatch");
    if rows * cols == 0 {
        return;
    }
    let registers = registers(isa);
    for (bi, out) in dst.chunks_mut(BLOCK * rows).enumerate() {
        block(src, rows, cols, bi * BLOCK, registers, out);
    }
}

/// Writes output rows `c0..` (source columns; as many as `out` holds, each `rows` long) of
/// the transpose of the row-major `rows × cols` matrix `src`, every slot of `out`.
fn block(
    src: &[f32],
    rows: usize,
    cols: usize,
    c0: usize,
    registers: bool,
    out: &mut [MaybeUninit<f32>],
) {
    let c1 = c0 + out.len() / rows;
    let (full_r, full_c) = if registers {
        (rows / 8 * 8, c0 + (c1 - c0) / 8 * 8)
    } else {
        (0, c0)
    };
    #[cfg(target_arch = "x86_64")]
    if full_r > 0 && full_c > c0 {
        // SAFETY: `registers` implies the CPU has AVX2 (`Isa::supported`), and every tile
        // lies inside `src` (rows < full_r ≤ rows, columns < full_c ≤ c1 ≤ cols) and inside
        // `out` (output rows c0..full_c, entries < full_r).
        unsafe { x86::tiles(src, cols, rows, c0, full_r, full_c, out) };
    }
    // The rest: columns full_c..c1 of rows 0..full_r, and every column of rows full_r..rows
    // (all of the block when the register path is off).
    scalar(src, cols, rows, c0, (0, full_r), (full_c, c1), out);
    scalar(src, cols, rows, c0, (full_r, rows), (c0, c1), out);
}

/// Writes the transpose of source rows `r0..r1` × columns `cs0..cs1` into `out` (output rows
/// `c0..`, each `rows` long), through 16 × 16 tiles held in a local array.
fn scalar(
    src: &[f32],
    cols: usize,
    rows: usize,
    c0: usize,
    (r0, r1): (usize, usize),
    (cs0, cs1): (usize, usize),
    out: &mut [MaybeUninit<f32>],
) {
    const T: usize = 16;
    let mut tile = [[0.0f32; T]; T];
    for rt in (r0..r1).step_by(T) {
        let re = (rt + T).min(r1);
        for cs in (cs0..cs1).step_by(T) {
            let ce = (cs + T).min(cs1);
            let (h, w) = (re - rt, ce - cs);
            for (i, t) in tile.iter_mut().enumerate().take(h) {
                let at = (rt + i) * cols + cs;
                t[..w].copy_from_slice(&src[at..at + w]);
            }
            for j in 0..w {
                let at = (cs - c0 + j) * rows + rt;
                for (o, t) in out[at..at + h].iter_mut().zip(&tile) {
                    o.write(t[j]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Transposes source rows `0..full_r` × columns `c0..full_c` (both ranges whole tiles of
    /// 8) into `out` (output rows `c0..`, each `rows` long), 8 × 8 tiles in registers.
    ///
    /// # Safety
    /// The CPU supports AVX2; `full_r ≤ rows`, `full_c ≤ cols`, `src` holds `rows × cols`
    /// floats and `out` at least `(full_c − c0) × rows`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tiles(
        src: &[f32],
        cols: usize,
        rows: usize,
        c0: usize,
        full_r: usize,
        full_c: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        debug_assert!(full_r <= rows && full_c <= cols && full_r.is_multiple_of(8));
        debug_assert!(out.len() >= (full_c - c0) * rows);
        let sp = src.as_ptr();
        let op = out.as_mut_ptr() as *mut f32;
        for r0 in (0..full_r).step_by(8) {
            for cs in (c0..full_c).step_by(8) {
                // SAFETY: rows r0..r0 + 8 and columns cs..cs + 8 are inside the source;
                // output rows cs − c0 .. + 8 at entries r0..r0 + 8 are inside `out`.
                unsafe {
                    tile(
                        sp.add(r0 * cols + cs),
                        cols,
                        op.add((cs - c0) * rows + r0),
                        rows,
                    )
                };
            }
        }
    }

    /// One 8 × 8 tile: `d[j·ds + i] = s[i·ss + j]`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn tile(s: *const f32, ss: usize, d: *mut f32, ds: usize) {
        unsafe {
            let r = |i: usize| _mm256_loadu_ps(s.add(i * ss));
            let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
            let (r4, r5, r6, r7) = (r(4), r(5), r(6), r(7));
            // Pairs of rows interleaved: t0 = r0₀ r1₀ r0₁ r1₁ | r0₄ r1₄ r0₅ r1₅, …
            let t0 = _mm256_unpacklo_ps(r0, r1);
            let t1 = _mm256_unpackhi_ps(r0, r1);
            let t2 = _mm256_unpacklo_ps(r2, r3);
            let t3 = _mm256_unpackhi_ps(r2, r3);
            let t4 = _mm256_unpacklo_ps(r4, r5);
            let t5 = _mm256_unpackhi_ps(r4, r5);
            let t6 = _mm256_unpacklo_ps(r6, r7);
            let t7 = _mm256_unpackhi_ps(r6, r7);
            // Columns j and j + 4 of four rows: s0 = r0₀ r1₀ r2₀ r3₀ | r0₄ r1₄ r2₄ r3₄, …
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let w = |j: usize, v: __m256| _mm256_storeu_ps(d.add(j * ds), v);
            w(0, _mm256_permute2f128_ps::<0x20>(s0, s4));
            w(1, _mm256_permute2f128_ps::<0x20>(s1, s5));
            w(2, _mm256_permute2f128_ps::<0x20>(s2, s6));
            w(3, _mm256_permute2f128_ps::<0x20>(s3, s7));
            w(4, _mm256_permute2f128_ps::<0x31>(s0, s4));
            w(5, _mm256_permute2f128_ps::<0x31>(s1, s5));
            w(6, _mm256_permute2f128_ps::<0x31>(s2, s6));
            w(7, _mm256_permute2f128_ps::<0x31>(s3, s7));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Isa, transpose_with};

    /// Every element lands at the swapped index on every instruction set this CPU has, for
    /// shapes that are not multiples of the tiles (8, 16) or the block (64), single
    /// rows/columns, the ResNet layout-change shapes, and empty.
    #[test]
    fn transpose_moves_every_element_to_the_swapped_index() {
        let isas: Vec<Isa> = [Isa::Portable, Isa::Avx2Fma, Isa::Avx512]
            .into_iter()
            .filter(|i| i.supported())
            .collect();
        for isa in isas {
            for (rows, cols) in [
                (0, 5),
                (5, 0),
                (1, 1),
                (1, 37),
                (37, 1),
                (7, 9),
                (8, 8),
                (9, 7),
                (17, 33),
                (16, 64),
                (24, 72),
                (65, 129),
                (128, 4096),
                (4096, 128),
                (3, 1000),
            ] {
                let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
                let t = transpose_with(&src, rows, cols, isa);
                assert_eq!(t.len(), rows * cols);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(
                            t[c * rows + r],
                            src[r * cols + c],
                            "{isa:?} {rows}×{cols} at ({r}, {c})"
                        );
                    }
                }
            }
        }
    }
}
