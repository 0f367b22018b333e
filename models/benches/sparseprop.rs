//! criterion benches: SparseProp linear and conv2d (forward and backward) against burn dense
//! on Flex, at 90 % and 95 % sparsity, for the BERT FFN linear and a ResNet-20 conv.
//!
//! `cargo bench -p shears-models --bench sparseprop`. Each benchmark times only its op
//! (`iter_custom`); for the full table with ratios run `shears bench sparseprop`.

use std::time::Duration;

use burn::tensor::Device;
use criterion::{Criterion, criterion_group, criterion_main};
use shears_models::sparseprop::bench::{BenchConfig, BenchShape, case_timers};

fn bench(c: &mut Criterion) {
    let shapes = [
        BenchShape::Linear {
            batch: 64,
            d_in: 768,
            d_out: 3072,
        },
        BenchShape::Conv {
            batch: 128,
            c_in: 32,
            c_out: 32,
            size: 16,
            kernel: 3,
            stride: 1,
            padding: 1,
        },
    ];
    let mut group = c.benchmark_group("sparseprop");
    group.sample_size(10);
    for shape in shapes {
        for sparsity in [0.9, 0.95] {
            let cfg = BenchConfig {
                shapes: vec![shape],
                sparsities: vec![sparsity],
                reps: 1,
                device: Device::flex(),
                seed: 7,
            };
            let timers = case_timers(&shape, sparsity, &cfg);
            let names = ["dense fwd", "sparse fwd", "dense bwd", "sparse bwd"];
            for (mut timer, name) in timers.into_iter().zip(names) {
                let id = format!("{} s={sparsity} {name}", shape.describe());
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let total: f64 = (0..iters).map(|_| timer()).sum();
                        Duration::from_secs_f64(total / 1e3)
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
