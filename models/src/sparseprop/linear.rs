//! Sparse linear kernels on raw f32 buffers: `Y = X·Wᵀ`, `dX = dY·W`, `dW` at the non-zeros.
//!
//! Activations are processed feature-major (`Xᵀ ∈ R^{in×B}`, each feature's batch vector
//! contiguous) so that every non-zero turns into a vector FMA over the batch.
//! * Forward: parallel over output rows (CSR); each thread owns whole rows of `Yᵀ`; the
//!   batch is walked in register blocks of 4 vectors, so each output block stays in
//!   registers across the row's non-zeros.
//! * Backward, one pass: parallel over input features `j` (CSC index); for each `j` the
//!   thread keeps `dXᵀ[j, block]` and `Xᵀ[j, block]` in registers and, for every non-zero
//!   `(i, j)`, loads `dYᵀ[i, block]` once to update both `dXᵀ[j]` and the value gradient
//!   `⟨dYᵀ[i], Xᵀ[j]⟩`. Race-free (each `j` and each non-zero belongs to one thread), with no
//!   barrier per row.

use rayon::prelude::*;

use super::layout::SparsePattern;
use super::simd::{Isa, Simd, weighted_sum};
use super::transpose::{transpose, transpose_into};
use crate::multiversion;

/// Splits `0..n` into about `parts` consecutive ranges of roughly equal `weight(i)` totals,
/// where `prefix` is the prefix sum of weights (`n + 1` entries), each range non-empty.
fn balanced_ranges(prefix: &[u32], n: usize, parts: usize, per_item: usize) -> Vec<(usize, usize)> {
    // Cost of item i: its nnz plus a fixed overhead so that empty rows still count.
    let total = prefix[n] as usize + per_item * n;
    let parts = parts.max(1).min(n.max(1));
    let target = total.div_ceil(parts).max(1);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    let mut acc = 0usize;
    for i in 0..n {
        acc += (prefix[i + 1] - prefix[i]) as usize + per_item;
        if acc >= target {
            out.push((start, i + 1));
            start = i + 1;
            acc = 0;
        }
    }
    if start < n {
        out.push((start, n));
    }
    out
}

fn task_count() -> usize {
    rayon::current_num_threads() * 8
}

/// Forward on one block of rows: `yt[(i - r0)·b ..] = Σ_k val[k] · xt[col[k]·b ..]`.
#[inline(always)]
unsafe fn forward_rows<S: Simd>(
    row_ptr: &[u32],
    col_idx: &[u32],
    values: &[f32],
    xt: &[f32],
    b: usize,
    r0: usize,
    yt: &mut [f32],
) {
    let xp = xt.as_ptr();
    let rows = yt.len() / b.max(1);
    unsafe {
        for li in 0..rows {
            let i = r0 + li;
            let (k0, k1) = (row_ptr[i] as usize, row_ptr[i + 1] as usize);
            let out = yt.as_mut_ptr().add(li * b);
            weighted_sum::<S>(
                b,
                k1 - k0,
                |t| {
                    let k = k0 + t;
                    (
                        *values.get_unchecked(k),
                        xp.add(*col_idx.get_unchecked(k) as usize * b),
                    )
                },
                out,
            );
        }
    }
}

multiversion!(fn forward_rows_mv => forward_rows(
    row_ptr: &[u32], col_idx: &[u32], values: &[f32], xt: &[f32], b: usize, r0: usize, yt: &mut [f32]
));

/// Backward on one block of columns `j0..j0 + dxt.len()/b`: writes `dxt` rows and the value
/// gradients (in CSC order) of those columns into `dval` (which starts at `col_ptr[j0]`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn backward_cols<S: Simd>(
    col_ptr: &[u32],
    csc_row: &[u32],
    val_csc: &[f32],
    xt: &[f32],
    dyt: &[f32],
    b: usize,
    j0: usize,
    dxt: &mut [f32],
    dval: &mut [f32],
) {
    let w = S::LANES;
    let cols = dxt.len() / b.max(1);
    let e_base = col_ptr[j0] as usize;
    let gp = dyt.as_ptr();
    unsafe {
        for lj in 0..cols {
            let j = j0 + lj;
            let (e0, e1) = (col_ptr[j] as usize, col_ptr[j + 1] as usize);
            let xj = xt.as_ptr().add(j * b);
            let dx = dxt.as_mut_ptr().add(lj * b);
            for e in e0..e1 {
                *dval.get_unchecked_mut(e - e_base) = 0.0;
            }
            let mut c = 0;
            while c + 4 * w <= b {
                let (x0, x1, x2, x3) = (
                    S::load(xj.add(c)),
                    S::load(xj.add(c + w)),
                    S::load(xj.add(c + 2 * w)),
                    S::load(xj.add(c + 3 * w)),
                );
                let (mut d0, mut d1, mut d2, mut d3) = (S::zero(), S::zero(), S::zero(), S::zero());
                for e in e0..e1 {
                    let v = S::splat(*val_csc.get_unchecked(e));
                    let g = gp.add(*csc_row.get_unchecked(e) as usize * b + c);
                    let (g0, g1, g2, g3) = (
                        S::load(g),
                        S::load(g.add(w)),
                        S::load(g.add(2 * w)),
                        S::load(g.add(3 * w)),
                    );
                    d0 = S::fma(v, g0, d0);
                    d1 = S::fma(v, g1, d1);
                    d2 = S::fma(v, g2, d2);
                    d3 = S::fma(v, g3, d3);
                    let s01 = S::fma(g1, x1, S::fma(g0, x0, S::zero()));
                    let s23 = S::fma(g3, x3, S::fma(g2, x2, S::zero()));
                    *dval.get_unchecked_mut(e - e_base) += S::hsum(S::add(s01, s23));
                }
                S::store(dx.add(c), d0);
                S::store(dx.add(c + w), d1);
                S::store(dx.add(c + 2 * w), d2);
                S::store(dx.add(c + 3 * w), d3);
                c += 4 * w;
            }
            while c + w <= b {
                let x0 = S::load(xj.add(c));
                let mut d0 = S::zero();
                for e in e0..e1 {
                    let v = S::splat(*val_csc.get_unchecked(e));
                    let g0 = S::load(gp.add(*csc_row.get_unchecked(e) as usize * b + c));
                    d0 = S::fma(v, g0, d0);
                    *dval.get_unchecked_mut(e - e_base) += S::hsum(S::fma(g0, x0, S::zero()));
                }
                S::store(dx.add(c), d0);
                c += w;
            }
            if c < b {
                let tail = b - c;
                let mut acc = [0.0f32; 64];
                for e in e0..e1 {
                    let v = *val_csc.get_unchecked(e);
                    let g = gp.add(*csc_row.get_unchecked(e) as usize * b + c);
                    let mut s = 0.0f32;
                    for (t, a) in acc.iter_mut().enumerate().take(tail) {
                        let gt = *g.add(t);
                        *a += v * gt;
                        s += gt * *xj.add(c + t);
                    }
                    *dval.get_unchecked_mut(e - e_base) += s;
                }
                std::ptr::copy_nonoverlapping(acc.as_ptr(), dx.add(c), tail);
            }
        }
    }
}

multiversion!(fn backward_cols_mv => backward_cols(
    col_ptr: &[u32], csc_row: &[u32], val_csc: &[f32], xt: &[f32], dyt: &[f32], b: usize,
    j0: usize, dxt: &mut [f32], dval: &mut [f32]
));

/// Feature-major forward: `Yᵀ = W · Xᵀ` with `xt: [cols, b]`, returns `yt: [rows, b]`.
pub fn forward_feature_major(
    pattern: &SparsePattern,
    values: &[f32],
    xt: &[f32],
    b: usize,
    isa: Isa,
) -> Vec<f32> {
    assert_eq!(
        values.len(),
        pattern.nnz(),
        "sparse linear: values/pattern mismatch"
    );
    assert_eq!(
        xt.len(),
        pattern.cols() * b,
        "sparse linear: input shape mismatch"
    );
    let rows = pattern.rows();
    let mut yt = vec![0.0f32; rows * b];
    if b == 0 || rows == 0 {
        return yt;
    }
    let ranges = balanced_ranges(pattern.row_ptr(), rows, task_count(), 4);
    let mut slices = Vec::with_capacity(ranges.len());
    let mut rest: &mut [f32] = &mut yt;
    for &(r0, r1) in &ranges {
        let (head, tail) = rest.split_at_mut((r1 - r0) * b);
        slices.push((r0, head));
        rest = tail;
    }
    slices.into_par_iter().for_each(|(r0, out)| {
        forward_rows_mv(
            isa,
            pattern.row_ptr(),
            pattern.col_idx(),
            values,
            xt,
            b,
            r0,
            out,
        );
    });
    yt
}

/// Feature-major backward in one pass: from `xt: [cols, b]` and `dyt: [rows, b]`, returns
/// `(dxt: [cols, b], dvalues)` with `dvalues` in value (CSR) order.
pub fn backward_feature_major(
    pattern: &SparsePattern,
    values: &[f32],
    xt: &[f32],
    dyt: &[f32],
    b: usize,
    isa: Isa,
) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(
        values.len(),
        pattern.nnz(),
        "sparse linear: values/pattern mismatch"
    );
    assert_eq!(
        xt.len(),
        pattern.cols() * b,
        "sparse linear: input shape mismatch"
    );
    assert_eq!(
        dyt.len(),
        pattern.rows() * b,
        "sparse linear: gradient shape mismatch"
    );
    let cols = pattern.cols();
    let nnz = pattern.nnz();
    let mut dxt = vec![0.0f32; cols * b];
    let mut dval_csc = vec![0.0f32; nnz];
    if b == 0 || cols == 0 {
        return (dxt, vec![0.0; nnz]);
    }
    let val_csc = pattern.values_in_csc_order(values);
    let col_ptr = pattern.col_ptr();
    let ranges = balanced_ranges(col_ptr, cols, task_count(), 4);
    let mut tasks = Vec::with_capacity(ranges.len());
    let (mut rest_x, mut rest_v): (&mut [f32], &mut [f32]) = (&mut dxt, &mut dval_csc);
    for &(j0, j1) in &ranges {
        let (hx, tx) = rest_x.split_at_mut((j1 - j0) * b);
        let (hv, tv) = rest_v.split_at_mut((col_ptr[j1] - col_ptr[j0]) as usize);
        tasks.push((j0, hx, hv));
        rest_x = tx;
        rest_v = tv;
    }
    tasks.into_par_iter().for_each(|(j0, dx, dv)| {
        backward_cols_mv(
            isa,
            col_ptr,
            pattern.csc_row(),
            &val_csc,
            xt,
            dyt,
            b,
            j0,
            dx,
            dv,
        );
    });
    let mut dval = vec![0.0f32; nnz];
    for (e, &k) in pattern.csc_pos().iter().enumerate() {
        dval[k as usize] = dval_csc[e];
    }
    (dxt, dval)
}

/// Tokens (batch rows) per panel of the batch-major forward: a panel's activations,
/// `cols × PANEL` floats (96 KiB for 384 features, 384 KiB for 1,536), stay in the core's L2
/// cache while every row of the weight passes over them.
const PANEL: usize = 64;

/// The most floats of per-panel value gradients the panelled backward allocates.
const MAX_PARTIALS: usize = 16 << 20;

thread_local! {
    /// Per-thread scratch of the panelled forward (a panel's `Xᵀ` and `Yᵀ`) and backward
    /// (its `Xᵀ`, `dYᵀ` and `dXᵀ`), reused across calls so that no call faults in fresh pages.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Batch-major forward: `Y = X·Wᵀ` with `x: [b, cols]`, returns `y: [b, rows]`.
///
/// With at least one panel of [`PANEL`] tokens per thread, each parallel task takes one
/// panel through the whole layer: transpose its `PANEL × cols` rows into a thread-local
/// feature-major buffer, run the row kernel over it, transpose the result into its rows of
/// `y`. Against transposing the whole batch first, every non-zero then reads its
/// activations from L2 instead of from memory (the whole-batch `Xᵀ` of a BERT layer at
/// 4,096 tokens is 6–25 MB, its rows 16 KiB apart), and the two layout changes touch data
/// already in cache. Smaller batches split the rows across threads instead.
pub fn forward(pattern: &SparsePattern, values: &[f32], x: &[f32], b: usize, isa: Isa) -> Vec<f32> {
    let (rows, cols) = (pattern.rows(), pattern.cols());
    assert_eq!(
        values.len(),
        pattern.nnz(),
        "sparse linear: values/pattern mismatch"
    );
    assert_eq!(x.len(), b * cols, "sparse linear: input shape mismatch");
    if b < PANEL * rayon::current_num_threads() || rows == 0 || cols == 0 {
        let xt = transpose(x, b, cols);
        let yt = forward_feature_major(pattern, values, &xt, b, isa);
        return transpose(&yt, rows, b);
    }
    let n = b * rows;
    let mut y: Vec<f32> = Vec::with_capacity(n);
    y.spare_capacity_mut()[..n]
        .par_chunks_mut(PANEL * rows)
        .enumerate()
        .for_each(|(p, out)| {
            let t = out.len() / rows;
            let xs = &x[p * PANEL * cols..(p * PANEL + t) * cols];
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < (cols + rows) * t {
                    s.resize((cols + rows) * t, 0.0);
                }
                let (xt, yt) = s.split_at_mut(cols * t);
                let yt = &mut yt[..rows * t];
                transpose_into(xs, t, cols, isa, as_uninit(xt));
                forward_rows_mv(
                    isa,
                    pattern.row_ptr(),
                    pattern.col_idx(),
                    values,
                    xt,
                    t,
                    0,
                    yt,
                );
                transpose_into(yt, rows, t, isa, out);
            });
        });
    // SAFETY: the panels cover all `n` slots, and `transpose_into` writes every slot of its
    // output.
    unsafe { y.set_len(n) };
    y
}

/// `buf` as slots that may be written (any `f32` slice is).
fn as_uninit(buf: &mut [f32]) -> &mut [std::mem::MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and only initialised floats are
    // written through the result.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast(), buf.len()) }
}

/// Batch-major backward: from `x: [b, cols]` and `dy: [b, rows]`, returns
/// `(dx: [b, cols], dvalues)` with `dvalues` in value (CSR) order.
///
/// Panelled like [`forward`] when every thread gets a panel: each task transposes its
/// tokens' `x` and `dy` into thread-local feature-major buffers, runs the column kernel over
/// them (its `dx` rows and its share of the value gradient), and transposes `dx` back into
/// its rows; the per-panel value gradients are then summed. Smaller batches transpose the
/// whole batch and split the columns across threads.
pub fn backward(
    pattern: &SparsePattern,
    values: &[f32],
    x: &[f32],
    dy: &[f32],
    b: usize,
    isa: Isa,
) -> (Vec<f32>, Vec<f32>) {
    let (rows, cols, nnz) = (pattern.rows(), pattern.cols(), pattern.nnz());
    // One value gradient per panel, summed in panel order (deterministic, unlike a per-thread
    // fold): bounded to 16 M floats, beyond which the whole batch goes through at once.
    let partials = b.div_ceil(PANEL) * nnz;
    if b < PANEL * rayon::current_num_threads() || rows == 0 || cols == 0 || partials > MAX_PARTIALS
    {
        let (xt, dyt) = rayon::join(|| transpose(x, b, cols), || transpose(dy, b, rows));
        let (dxt, dval) = backward_feature_major(pattern, values, &xt, &dyt, b, isa);
        return (transpose(&dxt, cols, b), dval);
    }
    assert_eq!(values.len(), nnz, "sparse linear: values/pattern mismatch");
    assert_eq!(x.len(), b * cols, "sparse linear: input shape mismatch");
    assert_eq!(dy.len(), b * rows, "sparse linear: gradient shape mismatch");
    let val_csc = pattern.values_in_csc_order(values);
    let n = b * cols;
    let mut dx: Vec<f32> = Vec::with_capacity(n);
    // Each panel's value gradient (CSC order), summed below in panel order.
    let partial: Vec<Vec<f32>> = dx.spare_capacity_mut()[..n]
        .par_chunks_mut(PANEL * cols)
        .enumerate()
        .map(|(p, out)| {
            let t = out.len() / cols;
            let xs = &x[p * PANEL * cols..(p * PANEL + t) * cols];
            let dys = &dy[p * PANEL * rows..(p * PANEL + t) * rows];
            let mut dval = vec![0.0f32; nnz];
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                let need = (2 * cols + rows) * t;
                if s.len() < need {
                    s.resize(need, 0.0);
                }
                let (xt, rest) = s.split_at_mut(cols * t);
                let (dyt, rest) = rest.split_at_mut(rows * t);
                let dxt = &mut rest[..cols * t];
                transpose_into(xs, t, cols, isa, as_uninit(xt));
                transpose_into(dys, t, rows, isa, as_uninit(dyt));
                backward_cols_mv(
                    isa,
                    pattern.col_ptr(),
                    pattern.csc_row(),
                    &val_csc,
                    xt,
                    dyt,
                    t,
                    0,
                    dxt,
                    &mut dval,
                );
                transpose_into(dxt, cols, t, isa, out);
            });
            dval
        })
        .collect();
    // SAFETY: the panels cover all `n` slots, and `transpose_into` writes every slot.
    unsafe { dx.set_len(n) };
    // Summed panel after panel (each pass streams two vectors), then put in CSR order.
    let mut panels = partial.into_iter();
    let mut sum = panels.next().unwrap_or_else(|| vec![0.0; nnz]);
    for p in panels {
        sum.iter_mut().zip(&p).for_each(|(s, v)| *s += v);
    }
    let mut dval = vec![0.0f32; nnz];
    for (&k, &v) in pattern.csc_pos().iter().zip(&sum) {
        dval[k as usize] = v;
    }
    (dx, dval)
}
