//! Layer benchmarks: SparseProp kernels against the dense path the layers run otherwise (burn's
//! matmul for linears, [`dense_conv2d`] for convs) on the same device, in the same run,
//! interleaved and repeated (medians). Used by `shears bench sparseprop` and the criterion bench.

use std::sync::Arc;
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use serde::Serialize;

use super::conv::Conv2dGeometry;
use super::layout::SparsePattern;
use super::ops::{SparseWeight, sparse_conv2d, sparse_linear};
use crate::conv_gemm::dense_conv2d;

/// A layer shape to benchmark. Serialised as `{"layer": "linear"|"conv2d", ...fields}`, the
/// form `benches/sparseprop_torch.py` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "layer")]
pub enum BenchShape {
    /// Linear `[batch, d_in] → [batch, d_out]`.
    #[serde(rename = "linear")]
    Linear {
        /// Batch size.
        batch: usize,
        /// Input features.
        d_in: usize,
        /// Output features.
        d_out: usize,
    },
    /// Square conv2d `[batch, c_in, size, size]`, `k × k` kernel.
    #[serde(rename = "conv2d")]
    Conv {
        /// Batch size.
        batch: usize,
        /// Input channels.
        c_in: usize,
        /// Output channels.
        c_out: usize,
        /// Input height and width.
        size: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        padding: usize,
    },
}

impl BenchShape {
    /// The layer kind, `linear` or `conv2d`.
    pub fn layer(&self) -> &'static str {
        match self {
            BenchShape::Linear { .. } => "linear",
            BenchShape::Conv { .. } => "conv2d",
        }
    }

    /// A compact description, e.g. `B=64 768->3072` or `B=128 16->16 32x32 k3 s1 p1`.
    pub fn describe(&self) -> String {
        match *self {
            BenchShape::Linear { batch, d_in, d_out } => format!("B={batch} {d_in}->{d_out}"),
            BenchShape::Conv {
                batch,
                c_in,
                c_out,
                size,
                kernel,
                stride,
                padding,
            } => format!("B={batch} {c_in}->{c_out} {size}x{size} k{kernel} s{stride} p{padding}"),
        }
    }
}

/// The shapes of issue 7 / methods.md §4.8: the two reference configs, the BERT FFN linear,
/// and the three ResNet-20 stage convs.
pub fn standard_shapes() -> Vec<BenchShape> {
    let rn = |c, size| BenchShape::Conv {
        batch: 128,
        c_in: c,
        c_out: c,
        size,
        kernel: 3,
        stride: 1,
        padding: 1,
    };
    vec![
        BenchShape::Linear {
            batch: 128,
            d_in: 512,
            d_out: 256,
        },
        BenchShape::Linear {
            batch: 64,
            d_in: 768,
            d_out: 3072,
        },
        BenchShape::Conv {
            batch: 64,
            c_in: 128,
            c_out: 128,
            size: 32,
            kernel: 3,
            stride: 1,
            padding: 0,
        },
        rn(16, 32),
        rn(32, 16),
        rn(64, 8),
    ]
}

/// The sparsities of issue 7.
pub const STANDARD_SPARSITIES: [f64; 5] = [0.8, 0.9, 0.95, 0.98, 0.99];

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Layer shapes.
    pub shapes: Vec<BenchShape>,
    /// Sparsities in `[0, 1)`.
    pub sparsities: Vec<f64>,
    /// Timed repetitions per measurement (the median is reported), after one warm-up.
    pub reps: usize,
    /// The (non-autodiff) device; backward runs on its autodiff version.
    pub device: Device,
    /// Seed of the random masks and inputs.
    pub seed: u64,
}

impl BenchConfig {
    /// The standard shapes and sparsities on `device` with `reps` repetitions.
    pub fn standard(device: Device, reps: usize) -> Self {
        Self {
            shapes: standard_shapes(),
            sparsities: STANDARD_SPARSITIES.to_vec(),
            reps,
            device,
            seed: 7,
        }
    }
}

/// Forward or backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pass {
    /// Forward only (no autodiff).
    Fwd,
    /// Backward only (`dX` and the weight gradient), graph built outside the timer.
    Bwd,
}

/// One result row.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// `linear` or `conv2d`.
    pub layer: String,
    /// Shape description ([`BenchShape::describe`]).
    pub shape: String,
    /// Fraction of zero weights.
    pub sparsity: f64,
    /// `fwd` or `bwd`.
    pub pass: Pass,
    /// Median dense time (ms): burn's matmul for linears, the im2col + GEMM conv for convs.
    pub dense_ms: f64,
    /// Median SparseProp time (ms).
    pub sparse_ms: f64,
    /// `dense_ms / sparse_ms`.
    pub speedup: f64,
}

/// A small deterministic generator (xorshift64*) for masks.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A uniformly random keep-mask of `n` entries with exactly `round((1 − sparsity)·n)` kept.
pub fn random_mask(n: usize, sparsity: f64, seed: u64) -> Vec<bool> {
    let keep = ((1.0 - sparsity) * n as f64).round() as usize;
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for i in 0..keep.min(n) {
        let j = i + (rng.next() % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    let mut mask = vec![false; n];
    for &i in &idx[..keep.min(n)] {
        mask[i] = true;
    }
    mask
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Milliseconds that `f` takes on `device`, waiting for the device to finish the work `f`
/// queued (GPU backends run asynchronously; on a CPU the wait is free).
fn ms(device: &Device, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    // A device that cannot sync has failed its op; the bench then times what it did.
    let _ = device.sync();
    t.elapsed().as_secs_f64() * 1e3
}

/// The four closures timed for one (shape, sparsity), in this order: dense fwd, sparse fwd,
/// dense bwd, sparse bwd. Each runs its op once and returns the op's own elapsed time in ms
/// (for bwd: only the `backward()` call; the graph is built and its forward finished
/// outside the timer). On a GPU each time includes waiting for the device to finish.
pub type Timers = [Box<dyn FnMut() -> f64>; 4];

fn linear_timers(
    batch: usize,
    d_in: usize,
    d_out: usize,
    sparsity: f64,
    cfg: &BenchConfig,
) -> Timers {
    let dev = cfg.device.clone().inner();
    let ad = dev.clone().autodiff();
    let mask = random_mask(d_out * d_in, sparsity, cfg.seed);
    let pattern = Arc::new(SparsePattern::from_mask(d_out, d_in, &mask).expect("valid mask"));
    let nnz = pattern.nnz();
    let vals = Tensor::<1>::random([nnz], Distribution::Normal(0.0, 0.05), &dev).into_data();
    let mk = |d: &Device| SparseWeight {
        values: Tensor::from_data(vals.clone(), d),
        pattern: pattern.clone(),
    };
    let (w_fwd, w_bwd) = (mk(&dev), mk(&ad));
    let wd = w_fwd.to_dense().transpose();
    let wd_t = Tensor::<2>::from_data(wd.to_data(), &dev);
    let x = Tensor::<2>::random([batch, d_in], Distribution::Normal(0.0, 1.0), &dev);
    let xd = x.to_data();
    let (x1, x2, wd1) = (x.clone(), x, wd_t.clone());
    let xa = Tensor::<2>::from_data(xd, &ad);
    let wa = Tensor::<2>::from_data(wd_t.into_data(), &ad);
    let (xa2, wb) = (xa.clone(), w_bwd);
    let [d1, d2, d3, d4] = [dev.clone(), dev, ad.clone(), ad];
    [
        Box::new(move || ms(&d1, || drop(x1.clone().matmul(wd1.clone())))),
        Box::new(move || ms(&d2, || drop(sparse_linear(x2.clone(), &w_fwd, None)))),
        Box::new(move || {
            let x = xa.clone().require_grad();
            let w = wa.clone().require_grad();
            let y = x.matmul(w).sum();
            let _ = d3.sync();
            ms(&d3, || drop(y.backward()))
        }),
        Box::new(move || {
            let x = xa2.clone().require_grad();
            let w = SparseWeight {
                values: wb.values.clone().require_grad(),
                pattern: wb.pattern.clone(),
            };
            let y = sparse_linear(x, &w, None).sum();
            let _ = d4.sync();
            ms(&d4, || drop(y.backward()))
        }),
    ]
}

fn conv_timers(
    (batch, c_in, c_out, size): (usize, usize, usize, usize),
    geom: Conv2dGeometry,
    sparsity: f64,
    cfg: &BenchConfig,
) -> Timers {
    let dev = cfg.device.clone().inner();
    let ad = dev.clone().autodiff();
    let k = geom.kernel;
    let cols = c_in * k * k;
    let mask = random_mask(c_out * cols, sparsity, cfg.seed);
    let pattern = Arc::new(SparsePattern::from_mask(c_out, cols, &mask).expect("valid mask"));
    let nnz = pattern.nnz();
    let vals = Tensor::<1>::random([nnz], Distribution::Normal(0.0, 0.05), &dev).into_data();
    let mk = |d: &Device| SparseWeight {
        values: Tensor::from_data(vals.clone(), d),
        pattern: pattern.clone(),
    };
    let (w_fwd, w_bwd) = (mk(&dev), mk(&ad));
    let wd: TensorData = w_fwd.to_dense().reshape([c_out, c_in, k, k]).into_data();
    let wd1 = Tensor::<4>::from_data(wd.clone(), &dev);
    let wa = Tensor::<4>::from_data(wd, &ad);
    let x = Tensor::<4>::random(
        [batch, c_in, size, size],
        Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let xa = Tensor::<4>::from_data(x.to_data(), &ad);
    let (x1, x2, xa2) = (x.clone(), x, xa.clone());
    let [d1, d2, d3, d4] = [dev.clone(), dev, ad.clone(), ad];
    [
        Box::new(move || {
            ms(&d1, || {
                drop(dense_conv2d(x1.clone(), wd1.clone(), None, &geom));
            })
        }),
        Box::new(move || {
            ms(&d2, || {
                drop(sparse_conv2d(x2.clone(), &w_fwd, None, &geom));
            })
        }),
        Box::new(move || {
            let x = xa.clone().require_grad();
            let w = wa.clone().require_grad();
            let y = dense_conv2d(x, w, None, &geom).sum();
            let _ = d3.sync();
            ms(&d3, || drop(y.backward()))
        }),
        Box::new(move || {
            let x = xa2.clone().require_grad();
            let w = SparseWeight {
                values: w_bwd.values.clone().require_grad(),
                pattern: w_bwd.pattern.clone(),
            };
            let y = sparse_conv2d(x, &w, None, &geom).sum();
            let _ = d4.sync();
            ms(&d4, || drop(y.backward()))
        }),
    ]
}

/// Runs one shape at one sparsity: one warm-up of each, then `reps` interleaved rounds of
/// dense fwd, sparse fwd, dense bwd, sparse bwd; returns the fwd and bwd rows (medians).
pub fn run_case(shape: &BenchShape, sparsity: f64, cfg: &BenchConfig) -> [BenchRow; 2] {
    let mut timers = case_timers(shape, sparsity, cfg);
    for t in timers.iter_mut() {
        t();
    }
    let mut samples = [(); 4].map(|_| Vec::with_capacity(cfg.reps));
    for _ in 0..cfg.reps.max(1) {
        for (t, s) in timers.iter_mut().zip(samples.iter_mut()) {
            s.push(t());
        }
    }
    let [df, sf, db, sb] = samples.map(median);
    let row = |pass, dense_ms: f64, sparse_ms: f64| BenchRow {
        layer: shape.layer().to_string(),
        shape: shape.describe(),
        sparsity,
        pass,
        dense_ms,
        sparse_ms,
        speedup: dense_ms / sparse_ms,
    };
    [row(Pass::Fwd, df, sf), row(Pass::Bwd, db, sb)]
}

/// Builds the [`Timers`] of one shape at one sparsity (random mask, weights and input from
/// `cfg.seed`).
pub fn case_timers(shape: &BenchShape, sparsity: f64, cfg: &BenchConfig) -> Timers {
    match *shape {
        BenchShape::Linear { batch, d_in, d_out } => {
            linear_timers(batch, d_in, d_out, sparsity, cfg)
        }
        BenchShape::Conv {
            batch,
            c_in,
            c_out,
            size,
            kernel,
            stride,
            padding,
        } => conv_timers(
            (batch, c_in, c_out, size),
            Conv2dGeometry {
                in_channels: c_in,
                out_channels: c_out,
                kernel,
                stride,
                padding,
            },
            sparsity,
            cfg,
        ),
    }
}

/// Runs every shape × sparsity of `cfg`, calling `progress` after each row pair.
pub fn run(cfg: &BenchConfig, mut progress: impl FnMut(&[BenchRow])) -> Vec<BenchRow> {
    let mut rows = Vec::new();
    for shape in &cfg.shapes {
        for &s in &cfg.sparsities {
            let pair = run_case(shape, s, cfg);
            progress(&pair);
            rows.extend(pair);
        }
    }
    rows
}
