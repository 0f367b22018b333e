//! Sparse conv2d kernels on raw f32 buffers (square kernels, stride ≥ 1, zero padding, no
//! dilation or groups), batch-vectorised.
//!
//! The weight `[OC, IC, K, K]` is a [`SparsePattern`] over `[OC, IC·K·K]`. Activations are
//! channel-major with the batch innermost (`[C, H, W, B]`), so one non-zero `(oc, ic, kh, kw)`
//! and one output row `p` turn into a single contiguous FMA over `(q, b)` for stride 1
//! (`O[oc, p, q, :] += v · X[ic, p + kh − pad, q + kw − pad, :]` for all valid `q` at once), or
//! one FMA of length `B` per output column for stride 2. Padding is implicit: only the valid
//! output range of each kernel offset is visited, no padded copy is made.
//! * Forward: parallel over output channels (each thread owns `O[oc]`), output rows in
//!   blocks that stay in cache while the channel's non-zeros are applied.
//! * Backward, one pass: parallel over input channels (each thread owns `dX[ic]` and the
//!   value gradients of the non-zeros reading channel `ic`, found through the CSC index);
//!   every visited segment updates `dX` and accumulates `⟨dO, X⟩` in the same sweep; the
//!   segments are visited input row by input row, so X and dX stay in cache.

use rayon::prelude::*;

use super::layout::SparsePattern;
use super::simd::{Isa, Simd, axpy, axpy_dot, weighted_sum};
use super::transpose::transpose;
use crate::multiversion;

/// Static shape of a sparse conv2d: channels, square kernel, stride and zero padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dGeometry {
    /// Number of input channels.
    pub in_channels: usize,
    /// Number of output channels.
    pub out_channels: usize,
    /// Kernel side `K` (the kernel is `K × K`).
    pub kernel: usize,
    /// Stride (same in both directions), ≥ 1.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl Conv2dGeometry {
    /// Output spatial size `(OH, OW)` for an `H × W` input, or `None` if the kernel does not
    /// fit the padded input or the stride is 0.
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        if self.stride == 0 || self.kernel == 0 {
            return None;
        }
        let (hp, wp) = (h + 2 * self.padding, w + 2 * self.padding);
        if hp < self.kernel || wp < self.kernel {
            return None;
        }
        Some((
            (hp - self.kernel) / self.stride + 1,
            (wp - self.kernel) / self.stride + 1,
        ))
    }

    /// Columns of the flattened weight, `IC·K·K`.
    pub fn weight_cols(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }
}

/// Spatial sizes of one call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    k: usize,
    s: usize,
    pad: usize,
}

impl Dims {
    /// Valid output index range `[lo, hi)` along one axis of size `n` (input) / `on`
    /// (output) for kernel offset `t`: those `o` with `0 ≤ s·o + t − pad < n`.
    #[inline(always)]
    fn range(&self, t: usize, n: usize, on: usize) -> (usize, usize) {
        let lo = if self.pad > t {
            (self.pad - t).div_ceil(self.s)
        } else {
            0
        };
        let hi = if n + self.pad > t {
            (n - 1 + self.pad - t) / self.s + 1
        } else {
            0
        };
        (lo.min(on), hi.min(on))
    }

    /// Output rows per cache block: about 64 KiB of output row data.
    fn row_block(&self) -> usize {
        (16384 / (self.ow * self.b).max(1)).max(1)
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_channel<S: Simd>(
    row_ptr: &[u32],
    col_idx: &[u32],
    values: &[f32],
    xt: &[f32],
    d: &Dims,
    oc: usize,
    out: &mut [f32],
) {
    let (b, kk) = (d.b, d.k * d.k);
    let (k0, k1) = (row_ptr[oc] as usize, row_ptr[oc + 1] as usize);
    let pb = d.row_block();
    let op = out.as_mut_ptr();
    let xp = xt.as_ptr();
    let mut p0 = 0;
    while p0 < d.oh {
        let p1 = (p0 + pb).min(d.oh);
        for k in k0..k1 {
            let col = col_idx[k] as usize;
            let (ic, r) = (col / kk, col % kk);
            let (kh, kw) = (r / d.k, r % d.k);
            let v = values[k];
            let (qlo, qhi) = d.range(kw, d.w, d.ow);
            let (plo, phi) = d.range(kh, d.h, d.oh);
            if qlo >= qhi {
                continue;
            }
            for p in p0.max(plo)..p1.min(phi) {
                let ih = d.s * p + kh - d.pad;
                let xrow = ((ic * d.h + ih) * d.w) * b;
                let orow = p * d.ow * b;
                unsafe {
                    if d.s == 1 {
                        let iw = qlo + kw - d.pad;
                        axpy::<S>(
                            (qhi - qlo) * b,
                            v,
                            xp.add(xrow + iw * b),
                            op.add(orow + qlo * b),
                        );
                    } else {
                        for q in qlo..qhi {
                            let iw = d.s * q + kw - d.pad;
                            axpy::<S>(b, v, xp.add(xrow + iw * b), op.add(orow + q * b));
                        }
                    }
                }
            }
        }
        p0 = p1;
    }
}

multiversion!(fn forward_channel_mv => forward_channel(
    row_ptr: &[u32], col_idx: &[u32], values: &[f32], xt: &[f32], d: &Dims, oc: usize, out: &mut [f32]
));

/// One non-zero of the weight as the output-stationary forward uses it: the offset of the
/// input element it multiplies for output position `(0, 0)` and batch 0 (negative where
/// padding is involved), its kernel offsets and its value.
#[derive(Clone, Copy)]
struct Tap {
    base: isize,
    kh: usize,
    kw: usize,
    v: f32,
}

/// The taps of every output channel, channel `oc`'s at `taps[start[oc]..start[oc + 1]]`, in
/// the pattern's (CSR) order.
fn taps(
    pattern: &SparsePattern,
    values: &[f32],
    d: &Dims,
    ic_stride: usize,
) -> (Vec<Tap>, Vec<usize>) {
    let kk = d.k * d.k;
    let (row_ptr, col_idx) = (pattern.row_ptr(), pattern.col_idx());
    let taps = col_idx
        .iter()
        .zip(values)
        .map(|(&col, &v)| {
            let col = col as usize;
            let (ic, r) = (col / kk, col % kk);
            let (kh, kw) = (r / d.k, r % d.k);
            let pad = d.pad as isize;
            let base = (ic * ic_stride) as isize
                + ((kh as isize - pad) * d.w as isize + (kw as isize - pad)) * d.b as isize;
            Tap { base, kh, kw, v }
        })
        .collect();
    (taps, row_ptr.iter().map(|&r| r as usize).collect())
}

/// Output row `p` of every output channel, output-stationary: for each output position
/// `(p, q)` the taps whose input element exists are gathered once, then each block of
/// `8 × LANES` (then `4 ×`, …) batch entries is accumulated in registers over those taps and
/// stored once ([`weighted_sum`])
/// (the channel-stationary [`forward_channel`] reads and writes the output once per
/// non-zero). The taps are applied in the same order as there, so the sums are the same.
/// The taps whose input row exists are selected once per channel and row (`row`); in the
/// interior columns, where every kernel column lands inside the input, they are all live and
/// used as they are, and only the border columns filter them.
/// `out` is the address of the `[OC, OH, OW, B]` output; this call writes exactly the
/// entries of row `p`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_row<S: Simd>(
    taps: &[Tap],
    start: &[usize],
    xt: &[f32],
    d: &Dims,
    p: usize,
    out: usize,
    row: &mut Vec<(isize, f32, usize)>,
    live: &mut Vec<(isize, f32)>,
) {
    let b = d.b;
    let xp = xt.as_ptr();
    let out = out as *mut f32;
    let ih0 = d.s * p;
    let row_pos = (ih0 * d.w * b) as isize;
    // Output columns q whose kernel window lies inside the input (pad ≤ s·q and
    // s·q + k − 1 < w + pad): [q_in, q_out).
    let q_in = d.pad.div_ceil(d.s).min(d.ow);
    let q_out = if d.w + d.pad >= d.k {
        ((d.w + d.pad - d.k) / d.s + 1).min(d.ow)
    } else {
        0
    }
    .max(q_in);
    for oc in 0..start.len() - 1 {
        row.clear();
        row.extend(
            taps[start[oc]..start[oc + 1]]
                .iter()
                .filter(|t| {
                    let ih = ih0 + t.kh;
                    ih >= d.pad && ih - d.pad < d.h
                })
                .map(|t| (t.base + row_pos, t.v, t.kw)),
        );
        let orow = ((oc * d.oh + p) * d.ow) * b;
        for q in 0..d.ow {
            let iw0 = d.s * q;
            let pos = (iw0 * b) as isize;
            unsafe {
                if (q_in..q_out).contains(&q) {
                    weighted_sum::<S>(
                        b,
                        row.len(),
                        |t| {
                            let (off, v, _) = *row.get_unchecked(t);
                            (v, xp.offset(off + pos))
                        },
                        out.add(orow + q * b),
                    );
                    continue;
                }
                live.clear();
                live.extend(
                    row.iter()
                        .filter(|&&(_, _, kw)| {
                            let iw = iw0 + kw;
                            iw >= d.pad && iw - d.pad < d.w
                        })
                        .map(|&(off, v, _)| (off + pos, v)),
                );
                weighted_sum::<S>(
                    b,
                    live.len(),
                    |t| {
                        let (off, v) = *live.get_unchecked(t);
                        (v, xp.offset(off))
                    },
                    out.add(orow + q * b),
                );
            }
        }
    }
}

multiversion!(fn forward_row_mv => forward_row(
    taps: &[Tap], start: &[usize], xt: &[f32], d: &Dims, p: usize, out: usize,
    row: &mut Vec<(isize, f32, usize)>, live: &mut Vec<(isize, f32)>
));

/// Batches at least this large take the output-stationary forward ([`forward_row`]);
/// smaller ones the channel-stationary one, whose FMAs run along `(q, b)` together.
const ROW_FORWARD_MIN_BATCH: usize = 16;

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn backward_channel<S: Simd>(
    col_ptr: &[u32],
    csc_row: &[u32],
    val_csc: &[f32],
    xt: &[f32],
    dot: &[f32],
    d: &Dims,
    ic: usize,
    dx: &mut [f32],
    dval: &mut [f32],
) {
    let (b, kk) = (d.b, d.k * d.k);
    let c0 = ic * kk;
    let e_base = col_ptr[c0] as usize;
    let dxp = dx.as_mut_ptr();
    let xp = unsafe { xt.as_ptr().add(ic * d.h * d.w * b) };
    let gp = dot.as_ptr();
    // Input-row-stationary: every segment that reads input row `ih` (all kernel offsets and
    // their non-zeros) runs while that row of X and of dX is in the L1 cache; only the rows
    // of dO stream in. (Output-row blocks made every segment fetch X, dX and dO from L2.)
    for ih in 0..d.h {
        let xrow = ih * d.w * b;
        for r in 0..kk {
            let (kh, kw) = (r / d.k, r % d.k);
            // The output row p with s·p + kh − pad = ih, if any.
            let t = ih + d.pad;
            if t < kh || !(t - kh).is_multiple_of(d.s) {
                continue;
            }
            let p = (t - kh) / d.s;
            if p >= d.oh {
                continue;
            }
            let (qlo, qhi) = d.range(kw, d.w, d.ow);
            if qlo >= qhi {
                continue;
            }
            for e in col_ptr[c0 + r] as usize..col_ptr[c0 + r + 1] as usize {
                let oc = csc_row[e] as usize;
                let v = val_csc[e];
                let grow = ((oc * d.oh + p) * d.ow) * b;
                let acc = unsafe {
                    if d.s == 1 {
                        let iw = qlo + kw - d.pad;
                        axpy_dot::<S>(
                            (qhi - qlo) * b,
                            v,
                            gp.add(grow + qlo * b),
                            xp.add(xrow + iw * b),
                            dxp.add(xrow + iw * b),
                        )
                    } else {
                        let mut acc = 0.0f32;
                        for q in qlo..qhi {
                            let iw = d.s * q + kw - d.pad;
                            acc += axpy_dot::<S>(
                                b,
                                v,
                                gp.add(grow + q * b),
                                xp.add(xrow + iw * b),
                                dxp.add(xrow + iw * b),
                            );
                        }
                        acc
                    }
                };
                dval[e - e_base] += acc;
            }
        }
    }
}

multiversion!(fn backward_channel_mv => backward_channel(
    col_ptr: &[u32], csc_row: &[u32], val_csc: &[f32], xt: &[f32], dot: &[f32], d: &Dims,
    ic: usize, dx: &mut [f32], dval: &mut [f32]
));

fn dims(geom: &Conv2dGeometry, b: usize, h: usize, w: usize) -> Dims {
    let (oh, ow) = geom
        .output_size(h, w)
        .expect("sparse conv2d: kernel larger than the padded input (checked by the caller)");
    Dims {
        b,
        h,
        w,
        oh,
        ow,
        k: geom.kernel,
        s: geom.stride,
        pad: geom.padding,
    }
}

fn check(pattern: &SparsePattern, values: &[f32], geom: &Conv2dGeometry) {
    assert_eq!(
        pattern.rows(),
        geom.out_channels,
        "sparse conv2d: pattern rows ≠ OC"
    );
    assert_eq!(
        pattern.cols(),
        geom.weight_cols(),
        "sparse conv2d: pattern cols ≠ IC·K·K"
    );
    assert_eq!(
        values.len(),
        pattern.nnz(),
        "sparse conv2d: values/pattern mismatch"
    );
}

/// Channel-major forward: `xt: [IC, H, W, B]` → `[OC, OH, OW, B]`.
pub fn forward_channel_major(
    pattern: &SparsePattern,
    values: &[f32],
    geom: &Conv2dGeometry,
    xt: &[f32],
    (b, h, w): (usize, usize, usize),
    isa: Isa,
) -> Vec<f32> {
    check(pattern, values, geom);
    assert_eq!(
        xt.len(),
        geom.in_channels * h * w * b,
        "sparse conv2d: input shape mismatch"
    );
    let d = dims(geom, b, h, w);
    let plane = d.oh * d.ow * b;
    if plane > 0 && b >= ROW_FORWARD_MIN_BATCH {
        let n = geom.out_channels * plane;
        let (taps, start) = taps(pattern, values, &d, h * w * b);
        let mut out: Vec<f32> = Vec::with_capacity(n);
        let addr = out.as_mut_ptr() as usize;
        (0..d.oh).into_par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(row, live), p| {
                forward_row_mv(isa, &taps, &start, xt, &d, p, addr, row, live);
            },
        );
        // SAFETY: the rows 0..OH of every channel cover all `n` entries, and each
        // `forward_row` call wrote every entry of its row (rows are disjoint across calls).
        unsafe { out.set_len(n) };
        return out;
    }
    let mut out = vec![0.0f32; geom.out_channels * plane];
    if plane == 0 {
        return out;
    }
    out.par_chunks_mut(plane).enumerate().for_each(|(oc, o)| {
        forward_channel_mv(
            isa,
            pattern.row_ptr(),
            pattern.col_idx(),
            values,
            xt,
            &d,
            oc,
            o,
        );
    });
    out
}

/// Channel-major backward in one pass: from `xt: [IC, H, W, B]` and `dot: [OC, OH, OW, B]`
/// returns `(dxt: [IC, H, W, B], dvalues)` with `dvalues` in value order.
pub fn backward_channel_major(
    pattern: &SparsePattern,
    values: &[f32],
    geom: &Conv2dGeometry,
    xt: &[f32],
    dot: &[f32],
    (b, h, w): (usize, usize, usize),
    isa: Isa,
) -> (Vec<f32>, Vec<f32>) {
    check(pattern, values, geom);
    let d = dims(geom, b, h, w);
    assert_eq!(
        xt.len(),
        geom.in_channels * h * w * b,
        "sparse conv2d: input shape mismatch"
    );
    assert_eq!(
        dot.len(),
        geom.out_channels * d.oh * d.ow * b,
        "sparse conv2d: gradient shape mismatch"
    );
    let nnz = pattern.nnz();
    let plane = h * w * b;
    let mut dxt = vec![0.0f32; geom.in_channels * plane];
    let mut dval_csc = vec![0.0f32; nnz];
    if plane == 0 || d.oh * d.ow * b == 0 {
        return (dxt, vec![0.0; nnz]);
    }
    let val_csc = pattern.values_in_csc_order(values);
    let col_ptr = pattern.col_ptr();
    let kk = geom.kernel * geom.kernel;
    let mut tasks = Vec::with_capacity(geom.in_channels);
    let mut rest_v: &mut [f32] = &mut dval_csc;
    for (ic, dx) in dxt.chunks_mut(plane).enumerate() {
        let n = (col_ptr[(ic + 1) * kk] - col_ptr[ic * kk]) as usize;
        let (hv, tv) = rest_v.split_at_mut(n);
        tasks.push((ic, dx, hv));
        rest_v = tv;
    }
    tasks.into_par_iter().for_each(|(ic, dx, dv)| {
        backward_channel_mv(
            isa,
            col_ptr,
            pattern.csc_row(),
            &val_csc,
            xt,
            dot,
            &d,
            ic,
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

/// NCHW forward: `x: [B, IC, H, W]` → `[B, OC, OH, OW]`.
pub fn forward(
    pattern: &SparsePattern,
    values: &[f32],
    geom: &Conv2dGeometry,
    x: &[f32],
    (b, h, w): (usize, usize, usize),
    isa: Isa,
) -> Vec<f32> {
    let xt = transpose(x, b, geom.in_channels * h * w);
    let ot = forward_channel_major(pattern, values, geom, &xt, (b, h, w), isa);
    let n = ot.len() / b.max(1);
    transpose(&ot, n, b)
}

/// NCHW backward: from `x: [B, IC, H, W]` and `dy: [B, OC, OH, OW]` returns
/// `(dx: [B, IC, H, W], dvalues)` with `dvalues` in value order.
pub fn backward(
    pattern: &SparsePattern,
    values: &[f32],
    geom: &Conv2dGeometry,
    x: &[f32],
    dy: &[f32],
    (b, h, w): (usize, usize, usize),
    isa: Isa,
) -> (Vec<f32>, Vec<f32>) {
    let n_out = dy.len() / b.max(1);
    let (xt, dyt) = rayon::join(
        || transpose(x, b, geom.in_channels * h * w),
        || transpose(dy, b, n_out),
    );
    let (dxt, dval) = backward_channel_major(pattern, values, geom, &xt, &dyt, (b, h, w), isa);
    (transpose(&dxt, geom.in_channels * h * w, b), dval)
}
