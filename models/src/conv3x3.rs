//! Direct 3×3 convolution, stride 1, padding 1, on NCHW images: the forward, the input
//! gradient and the weight gradient of the dense conv without an im2col matrix.
//!
//! Nearly every conv of a CIFAR ResNet has this geometry. The im2col path of
//! [`conv_gemm`](crate::conv_gemm) copies each input nine times into a column matrix (and
//! back through col2im for `dX`) for products whose inner size is only `9·IC` (144 on the
//! 16-channel stage); on an AVX2 EPYC those copies were a quarter of a ResNet-20 training
//! step. Here each image is copied once into zero-bordered planes `[C, H+2, W+2]` and the
//! kernels read the nine taps straight from them:
//!
//! - **forward** `y[o, p] = Σ_c Σ_t w[o, c, t] · x̂[c, p + off(t)]`: a register tile of 2
//!   output channels × 6 vectors of output pixels (12 accumulators), each tap one vector
//!   load per pixel vector and one broadcast weight per channel (12 FMAs per 8 loads),
//!   over groups of images stored channel-major so a tile's taps stay in L1/L2;
//! - **dX** is the same convolution of the zero-bordered `dY` with the weights transposed
//!   (`[IC, OC]`) and flipped (`t → 8 − t`);
//! - **dW** `dW[o, c, t] = Σ_b Σ_p dy[b, o, p] · x̂[b, c, p + off(t)]`: a tile of 4 output
//!   channels × the 3 taps of one kernel row, summed over every pixel vector of a group of
//!   images that fits in L2, then reduced across lanes once per group.
//!
//! Pixel vectors run along the image width and never cross a row, so the width must be a
//! multiple of the vector length ([`isa_for`] picks an instruction set for which it is, or
//! none); all padding lives in the bordered copies. Images run in parallel (rayon), `dW`
//! with one accumulator per worker summed in a fixed order (deterministic for a given thread
//! count).

use rayon::prelude::*;

use crate::conv_gemm::ConvDims;
use crate::multiversion;
use crate::output;
use crate::sparseprop::simd::{Isa, Simd};

/// Output channels of the forward register tile.
const FWD_OC: usize = 2;
/// Pixel vectors of the forward register tile: 2 × 6 accumulators, one pixel vector and two
/// broadcast weights fit the 16 AVX2 registers (a 4 × 3 tile spilled an accumulator).
const FWD_V: usize = 6;
/// Bytes of bordered input one forward group of images may span.
const FWD_GROUP_BYTES: usize = 256 * 1024;
/// Output channels of the `dW` register tile (× the 3 taps of a kernel row).
const OCB: usize = 4;
/// Bytes of padded input and output gradient one `dW` group of images may span (half the
/// 1 MiB L2 of the machines this runs on, leaving room for the weights and the stack).
const GROUP_BYTES: usize = 512 * 1024;

/// Lanes of a pixel vector for `isa`.
fn lanes(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 16,
        Isa::Avx2Fma | Isa::Portable => 8,
    }
}

/// The instruction set the direct kernels run a conv `d` with on this CPU, or `None` when
/// they do not apply: not a 3×3 stride-1 pad-1 conv, a width that is not a multiple of 8,
/// or a CPU without AVX2 + FMA (or `SHEARS_SPARSEPROP_ISA=portable`), where the im2col
/// path is faster than 8-lane arrays. AVX-512 is used when the width is a multiple of 16.
pub fn isa_for(d: &ConvDims) -> Option<Isa> {
    if d.k != 3 || d.stride != 1 || d.pad != 1 || d.oh != d.h || d.ow != d.w {
        return None;
    }
    let hw = Isa::detect();
    if hw == Isa::Avx512 && d.w.is_multiple_of(16) {
        Some(Isa::Avx512)
    } else if hw >= Isa::Avx2Fma && d.w.is_multiple_of(8) {
        Some(Isa::Avx2Fma)
    } else {
        None
    }
}

/// The bordered planes of one geometry.
#[derive(Debug, Clone, Copy)]
struct Planes {
    h: usize,
    w: usize,
    lanes: usize,
}

impl Planes {
    fn new(isa: Isa, d: &ConvDims) -> Self {
        assert!(
            d.k == 3 && d.stride == 1 && d.pad == 1 && d.oh == d.h && d.ow == d.w,
            "conv3x3: needs a 3×3 kernel, stride 1 and padding 1"
        );
        let lanes = lanes(isa);
        assert!(
            d.w.is_multiple_of(lanes),
            "conv3x3: width {} is not a multiple of {lanes}",
            d.w
        );
        Self {
            h: d.h,
            w: d.w,
            lanes,
        }
    }

    /// Row length of a bordered plane.
    fn wp(&self) -> usize {
        self.w + 2
    }

    /// Length of a bordered plane `[H+2, W+2]`.
    fn bordered(&self) -> usize {
        (self.h + 2) * self.wp()
    }

    /// Length of an image plane `[H, W]`.
    fn plane(&self) -> usize {
        self.h * self.w
    }

    /// Offset in the bordered plane of the top-left tap of each pixel vector (vector `v`
    /// covers output pixels `v·lanes ..` of the plane, within one row).
    fn taps(&self) -> Vec<usize> {
        let per_row = self.w / self.lanes;
        (0..self.plane() / self.lanes)
            .map(|v| (v / per_row) * self.wp() + (v % per_row) * self.lanes)
            .collect()
    }

    /// Copies `x: [C, H, W]` into the bordered planes `xb: [C, H+2, W+2]` (every element of
    /// `xb` written).
    fn border(&self, x: &[f32], xb: &mut [f32]) {
        let (w, wp) = (self.w, self.wp());
        for (src, dst) in x
            .chunks_exact(self.plane())
            .zip(xb.chunks_exact_mut(self.bordered()))
        {
            dst[..wp].fill(0.0);
            dst[(self.h + 1) * wp..].fill(0.0);
            for (s, d) in src.chunks_exact(w).zip(dst[wp..].chunks_exact_mut(wp)) {
                d[0] = 0.0;
                d[1..=w].copy_from_slice(s);
                d[w + 1] = 0.0;
            }
        }
    }
}

/// Packs `w(o, c, t)` for `o < cout`, `c < cin`, `t < 9` as `[⌈cout/2⌉, cin, 9, 2]` (the
/// forward tile's channel pairs), zero for a missing last channel.
fn pack(cout: usize, cin: usize, w: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let blocks = cout.div_ceil(FWD_OC);
    let mut out = vec![0.0f32; blocks * cin * 9 * FWD_OC];
    for o in 0..cout {
        for c in 0..cin {
            for t in 0..9 {
                out[((o / FWD_OC * cin + c) * 9 + t) * FWD_OC + o % FWD_OC] = w(o, c, t);
            }
        }
    }
    out
}

/// One group of images: `y: [images, cout, H·W] = conv(xb, packed weights)` with the
/// bordered input laid out channel-major, `xb: [cin, group, H+2, W+2]`, so that the
/// pixel vectors of all the group's images form one list, in (image, vector) order: vector
/// `v` has its top-left tap at `taps[v]` within a channel's run of bordered planes and its
/// first pixel at `out[v]` within the group's output, channel 0; `offs[c·9 + t]` is the
/// offset of tap `t` of channel `c` from a vector's top-left tap.
///
/// # Safety
/// The CPU supports `S`; `taps`, `out` and `offs` lie inside `xb` and `y` as built by
/// [`convolve`], `wpk` holds the packed weights of `cout` channels over `offs.len() / 9`
/// input channels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_group<S: Simd>(
    xb: &[f32],
    wpk: &[f32],
    taps: &[usize],
    out: &[usize],
    offs: &[usize],
    plane: usize,
    cout: usize,
    y: &mut [f32],
) {
    let n = taps.len().min(out.len());
    if n == 0 || cout == 0 {
        return;
    }
    assert!(wpk.len() >= cout.div_ceil(FWD_OC) * offs.len() * FWD_OC);
    let (x0, w0, y0) = (xb.as_ptr(), wpk.as_ptr(), y.as_mut_ptr());
    for blk in 0..cout.div_ceil(FWD_OC) {
        let wblk = unsafe { w0.add(blk * offs.len() * FWD_OC) };
        for g in (0..n).step_by(FWD_V) {
            // The last tile repeats the last vector: it stores the same values twice.
            let v: [usize; FWD_V] = std::array::from_fn(|i| (g + i).min(n - 1));
            let at: [usize; FWD_V] = v.map(|v| taps[v]);
            let mut acc = [[unsafe { S::zero() }; FWD_V]; FWD_OC];
            for (ct, &off) in offs.iter().enumerate() {
                let wq = unsafe { wblk.add(ct * FWD_OC) };
                let wv: [S::V; FWD_OC] = std::array::from_fn(|o| unsafe { S::splat(*wq.add(o)) });
                for (i, &a) in at.iter().enumerate() {
                    // SAFETY: a vector's taps lie inside its image's bordered plane of
                    // channel c: the top-left tap is at most (H−1)·(W+2) + W − lanes, plus
                    // the tap's offset ≤ 2·(W+2) + 2, plus lanes − 1 < (H+2)·(W+2).
                    let x = unsafe { S::load(x0.add(a + off)) };
                    for (acc_o, w) in acc.iter_mut().zip(&wv) {
                        acc_o[i] = unsafe { S::fma(*w, x, acc_o[i]) };
                    }
                }
            }
            for (o, acc_o) in acc.iter().enumerate() {
                let oc = blk * FWD_OC + o;
                if oc < cout {
                    for (&vi, a) in v.iter().zip(acc_o) {
                        // SAFETY: `oc < cout`, and a vector's pixels lie in one plane.
                        unsafe { S::store(y0.add(out[vi] + oc * plane), *a) };
                    }
                }
            }
        }
    }
}

multiversion!(fn forward_group_mv => forward_group(
    xb: &[f32], wpk: &[f32], taps: &[usize], out: &[usize], offs: &[usize], plane: usize,
    cout: usize, y: &mut [f32]
));

/// `out: [B, cout, H, W]` = the 3×3 convolution of `x: [B, cin, H, W]` (zero border of 1)
/// with the packed weights; groups of images that fit in L2, in parallel.
fn convolve(
    isa: Isa,
    p: &Planes,
    batch: usize,
    cin: usize,
    cout: usize,
    x: &[f32],
    wpk: &[f32],
) -> Vec<f32> {
    let (plane, bordered) = (p.plane(), p.bordered());
    if cin == 0 {
        return output::zeroed(batch * cout * plane);
    }
    let group = (FWD_GROUP_BYTES / (cin * bordered * std::mem::size_of::<f32>()))
        .clamp(1, batch.div_ceil(rayon::current_num_threads()));
    let (taps, lanes) = (p.taps(), p.lanes);
    let nvec = taps.len();
    let group_taps: Vec<usize> = (0..group)
        .flat_map(|b| taps.iter().map(move |t| b * bordered + t))
        .collect();
    let group_out: Vec<usize> = (0..group)
        .flat_map(|b| (0..nvec).map(move |v| b * cout * plane + v * lanes))
        .collect();
    let offs: Vec<usize> = (0..cin * 9)
        .map(|ct| (ct / 9) * group * bordered + (ct % 9 / 3) * p.wp() + ct % 3)
        .collect();
    output::build(
        batch * cout * plane,
        (group * cout * plane).max(1),
        || vec![0.0f32; cin * group * bordered],
        |xb, i, yg| {
            let xg = &x[i * group * cin * plane..][..yg.len() / cout * cin];
            let images = xg.len() / (cin * plane);
            for (b, x_b) in xg.chunks_exact(cin * plane).enumerate() {
                for (c, src) in x_b.chunks_exact(plane).enumerate() {
                    p.border(src, &mut xb[(c * group + b) * bordered..][..bordered]);
                }
            }
            let n = images * nvec;
            let (t, o) = (&group_taps[..n], &group_out[..n]);
            forward_group_mv(isa, xb, wpk, t, o, &offs, plane, cout, yg);
        },
    )
}

/// The forward `y: [B, OC, H, W]` of `x: [B, IC, H, W]` with `w: [OC, IC, 3, 3]`, on the
/// instruction set `isa` (whose vector length must divide the width: see [`isa_for`]).
pub fn forward(isa: Isa, d: &ConvDims, x: &[f32], w: &[f32]) -> Vec<f32> {
    let p = Planes::new(isa, d);
    assert_eq!(
        x.len(),
        d.batch * d.c_in * p.plane(),
        "conv3x3: input length"
    );
    assert_eq!(w.len(), d.c_out * d.c_in * 9, "conv3x3: weight length");
    let wpk = pack(d.c_out, d.c_in, |o, c, t| w[(o * d.c_in + c) * 9 + t]);
    convolve(isa, &p, d.batch, d.c_in, d.c_out, x, &wpk)
}

/// The input gradient `dX: [B, IC, H, W]` from `w: [OC, IC, 3, 3]` and
/// `dy: [B, OC, H, W]`: the convolution of `dY` with the transposed, flipped weights.
pub fn input_grad(isa: Isa, d: &ConvDims, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let p = Planes::new(isa, d);
    assert_eq!(
        dy.len(),
        d.batch * d.c_out * p.plane(),
        "conv3x3: dY length"
    );
    assert_eq!(w.len(), d.c_out * d.c_in * 9, "conv3x3: weight length");
    let wpk = pack(d.c_in, d.c_out, |c, o, t| w[(o * d.c_in + c) * 9 + 8 - t]);
    convolve(isa, &p, d.batch, d.c_out, d.c_in, dy, &wpk)
}

/// Adds to `dw: [cout, cin, 9]` the weight gradient of `images` images (bordered inputs
/// `xb: [images, cin, H+2, W+2]`, gradients `dy: [images, cout, H, W]`).
///
/// # Safety
/// The CPU supports `S`; the slices hold what is described above.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_group<S: Simd>(
    xb: &[f32],
    dy: &[f32],
    taps: &[usize],
    p: &Planes,
    cin: usize,
    cout: usize,
    images: usize,
    dw: &mut [f32],
) {
    let (bordered, plane, row, lanes) = (p.bordered(), p.plane(), p.wp(), S::LANES);
    debug_assert_eq!(lanes, p.lanes);
    assert!(xb.len() >= images * cin * bordered && dy.len() >= images * cout * plane);
    assert!(dw.len() >= cout * cin * 9 && cout > 0);
    let (x0, d0) = (xb.as_ptr(), dy.as_ptr());
    for blk in 0..cout.div_ceil(OCB) {
        // Channels past `cout` in the last block re-read the last channel; their sums are
        // dropped.
        let oc: [usize; OCB] = std::array::from_fn(|o| (blk * OCB + o).min(cout - 1));
        for c in 0..cin {
            for kh in 0..3 {
                let mut acc = [[unsafe { S::zero() }; 3]; OCB];
                for b in 0..images {
                    let xr = unsafe { x0.add((b * cin + c) * bordered + kh * row) };
                    let dyb = unsafe { d0.add(b * cout * plane) };
                    for (v, &at) in taps.iter().enumerate() {
                        // SAFETY: as in `forward_group`; `v·lanes + lanes ≤ H·W`.
                        let xv: [S::V; 3] =
                            std::array::from_fn(|kw| unsafe { S::load(xr.add(at + kw)) });
                        for (o, acc_o) in acc.iter_mut().enumerate() {
                            let g = unsafe { S::load(dyb.add(oc[o] * plane + v * lanes)) };
                            for (a, x) in acc_o.iter_mut().zip(&xv) {
                                *a = unsafe { S::fma(g, *x, *a) };
                            }
                        }
                    }
                }
                for (o, acc_o) in acc.iter().enumerate() {
                    if blk * OCB + o < cout {
                        let at = ((blk * OCB + o) * cin + c) * 9 + kh * 3;
                        for (kw, a) in acc_o.iter().enumerate() {
                            dw[at + kw] += unsafe { S::hsum(*a) };
                        }
                    }
                }
            }
        }
    }
}

multiversion!(fn weight_grad_group_mv => weight_grad_group(
    xb: &[f32], dy: &[f32], taps: &[usize], p: &Planes, cin: usize, cout: usize, images: usize,
    dw: &mut [f32]
));

/// The weight gradient `dW: [OC, IC, 3, 3]` from `x: [B, IC, H, W]` and
/// `dy: [B, OC, H, W]`, summed over the batch: one accumulator per worker over a contiguous
/// share of the batch, in groups of images that fit in L2, summed in worker order.
pub fn weight_grad(isa: Isa, d: &ConvDims, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let p = Planes::new(isa, d);
    let (cin, cout, plane, bordered) = (d.c_in, d.c_out, p.plane(), p.bordered());
    assert_eq!(x.len(), d.batch * cin * plane, "conv3x3: input length");
    assert_eq!(dy.len(), d.batch * cout * plane, "conv3x3: dY length");
    let len = cout * cin * 9;
    if d.batch == 0 || len == 0 || plane == 0 {
        return vec![0.0; len];
    }
    let taps = p.taps();
    let per_image = (cin * bordered + cout * plane) * std::mem::size_of::<f32>();
    let group = (GROUP_BYTES / per_image).max(1);
    let per = d.batch.div_ceil(rayon::current_num_threads());
    let partial: Vec<Vec<f32>> = x
        .par_chunks(per * cin * plane)
        .zip(dy.par_chunks(per * cout * plane))
        .map(|(xs, dys)| {
            let mut dw = vec![0.0f32; len];
            let mut xb = vec![0.0f32; group * cin * bordered];
            for (xg, dyg) in xs
                .chunks(group * cin * plane)
                .zip(dys.chunks(group * cout * plane))
            {
                let images = xg.len() / (cin * plane);
                p.border(xg, &mut xb[..images * cin * bordered]);
                weight_grad_group_mv(isa, &xb, dyg, &taps, &p, cin, cout, images, &mut dw);
            }
            dw
        })
        .collect();
    let mut parts = partial.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![0.0; len]);
    for part in parts {
        for (a, b) in dw.iter_mut().zip(&part) {
            *a += b;
        }
    }
    dw
}
