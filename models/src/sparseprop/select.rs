//! Measured auto-selection between the dense and the sparse execution of a layer.
//!
//! As in the reference (methods.md §4.4), a layer runs sparse only if its sparsity exceeds a
//! threshold (80 % by default) **and** a one-time timing of forward + backward on a random
//! batch of its real input shape says the sparse kernels are faster than dense on the same
//! device. Decisions are cached per (layer kind, shape, batch, sparsity in 0.1 %, device) and
//! logged with the `log` crate (target `shears_models::sparseprop`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};

use super::conv::Conv2dGeometry;
use super::layout::SparsePattern;
use super::ops::{SparseWeight, is_sparse_cpu_device, sparse_conv2d, sparse_linear};
use crate::conv_gemm::dense_conv2d;

/// How a sparse layer executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Execution {
    /// Dense masked computation (burn matmul / conv2d on the dense weight).
    Dense,
    /// SparseProp kernels (CPU devices; dense masked elsewhere).
    Sparse,
    /// Decide once per input shape by measurement (see [`decide_linear`]).
    #[default]
    Auto,
}

/// The outcome of a measured selection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the sparse kernels were chosen.
    pub sparse: bool,
    /// Median dense forward + backward time in ms (`NaN` when not measured).
    pub dense_ms: f64,
    /// Median sparse forward + backward time in ms (`NaN` when not measured).
    pub sparse_ms: f64,
}

/// Sparsity at or below which a layer always runs dense.
pub const SPARSITY_THRESHOLD: f64 = 0.8;

const REPS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: &'static str,
    dims: Vec<usize>,
    sparsity_permille: u32,
    device: String,
}

fn cache() -> &'static Mutex<HashMap<Key, Decision>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Decision>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median wall time of `f` in ms over `reps` runs after one warm-up.
pub(crate) fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps.max(1))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn decide(
    kind: &'static str,
    dims: Vec<usize>,
    pattern: &SparsePattern,
    device: &Device,
    measure: impl FnOnce() -> (f64, f64),
) -> Decision {
    let key = Key {
        kind,
        dims,
        sparsity_permille: (pattern.sparsity() * 1000.0).round() as u32,
        device: format!("{:?}", device.clone().inner()),
    };
    if let Some(d) = cache().lock().expect("selection cache poisoned").get(&key) {
        return *d;
    }
    let decision = if pattern.sparsity() <= SPARSITY_THRESHOLD || !is_sparse_cpu_device(device) {
        Decision {
            sparse: false,
            dense_ms: f64::NAN,
            sparse_ms: f64::NAN,
        }
    } else {
        let (dense_ms, sparse_ms) = measure();
        Decision {
            sparse: sparse_ms < dense_ms,
            dense_ms,
            sparse_ms,
        }
    };
    log::info!(
        target: "shears_models::sparseprop",
        "{kind} {:?} sparsity {:.1}%: {} (dense {:.3} ms, sparse {:.3} ms fwd+bwd)",
        key.dims,
        pattern.sparsity() * 100.0,
        if decision.sparse { "sparse" } else { "dense" },
        decision.dense_ms,
        decision.sparse_ms
    );
    cache()
        .lock()
        .expect("selection cache poisoned")
        .insert(key, decision);
    decision
}

fn random_values(n: usize, device: &Device) -> Tensor<1> {
    Tensor::random([n], Distribution::Normal(0.0, 0.05), device)
}

/// Decides (once per shape) whether a linear layer with `pattern` (`[out, in]`) runs sparse
/// for inputs of `batch` rows on `device`.
pub fn decide_linear(pattern: &Arc<SparsePattern>, batch: usize, device: &Device) -> Decision {
    let dims = vec![batch, pattern.cols(), pattern.rows()];
    decide("linear", dims, pattern, device, || {
        let ad = device.clone().inner().autodiff();
        let x = Tensor::<2>::random([batch, pattern.cols()], Distribution::Normal(0.0, 1.0), &ad);
        let values = random_values(pattern.nnz(), &ad).require_grad();
        let weight = SparseWeight {
            values: values.clone(),
            pattern: pattern.clone(),
        };
        let dense_w = weight.to_dense().detach().require_grad();
        let dense = time_ms(REPS, || {
            let y = x.clone().matmul(dense_w.clone().transpose());
            let _ = y.sum().backward();
        });
        let sparse = time_ms(REPS, || {
            let y = sparse_linear(x.clone(), &weight, None);
            let _ = y.sum().backward();
        });
        (dense, sparse)
    })
}

/// Decides (once per shape) whether a conv2d layer runs sparse for `[batch, IC, h, w]` inputs.
pub fn decide_conv2d(
    pattern: &Arc<SparsePattern>,
    geom: &Conv2dGeometry,
    (batch, h, w): (usize, usize, usize),
    device: &Device,
) -> Decision {
    let dims = vec![
        batch,
        geom.in_channels,
        h,
        w,
        geom.out_channels,
        geom.kernel,
        geom.stride,
        geom.padding,
    ];
    decide("conv2d", dims, pattern, device, || {
        let ad = device.clone().inner().autodiff();
        let x = Tensor::<4>::random(
            [batch, geom.in_channels, h, w],
            Distribution::Normal(0.0, 1.0),
            &ad,
        );
        let values = random_values(pattern.nnz(), &ad).require_grad();
        let weight = SparseWeight {
            values,
            pattern: pattern.clone(),
        };
        let k = geom.kernel;
        let dense_w = weight
            .to_dense()
            .reshape([geom.out_channels, geom.in_channels, k, k])
            .detach()
            .require_grad();
        let dense = time_ms(REPS, || {
            let y = dense_conv2d(x.clone(), dense_w.clone(), None, geom);
            let _ = y.sum().backward();
        });
        let sparse = time_ms(REPS, || {
            let y = sparse_conv2d(x.clone(), &weight, None, geom);
            let _ = y.sum().backward();
        });
        (dense, sparse)
    })
}
