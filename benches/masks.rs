//! Mask computation at MiniLM-L6 scale: the 36 encoder linears (10.6 M weights), global
//! magnitude at 90 % (unstructured and block4) and 2:4 layer-wise — the work done at
//! every pruning step of a GMP run.
//!
//! `cargo bench --bench masks`

use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shears::sparsity::mask::{MaskKind, ParamValues, Scope, compute_masks};
use shears::sparsity::selection::ParamInfo;

fn minilm_encoder_linears() -> Vec<ParamValues> {
    let mut rng = StdRng::seed_from_u64(0);
    let mut out = Vec::new();
    for layer in 0..6 {
        for (name, shape) in [
            ("attention.self.query", [384, 384]),
            ("attention.self.key", [384, 384]),
            ("attention.self.value", [384, 384]),
            ("attention.output.dense", [384, 384]),
            ("intermediate.dense", [1536, 384]),
            ("output.dense", [384, 1536]),
        ] {
            let n = shape[0] * shape[1];
            out.push(ParamValues {
                info: ParamInfo::new(
                    format!("encoder.layer.{layer}.{name}.weight"),
                    shape.to_vec(),
                )
                .with_input_dim(Some(1)),
                values: (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
            });
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let params = minilm_encoder_linears();
    let mut g = c.benchmark_group("masks_minilm_encoder");
    g.sample_size(10);
    g.bench_function("global_unstructured_90", |b| {
        b.iter(|| compute_masks(&params, 0.9, MaskKind::Unstructured, Scope::Global).unwrap())
    });
    g.bench_function("global_block4_90", |b| {
        b.iter(|| compute_masks(&params, 0.9, MaskKind::Block { size: 4 }, Scope::Global).unwrap())
    });
    g.bench_function("layerwise_2of4", |b| {
        b.iter(|| {
            compute_masks(&params, 0.5, MaskKind::NM { n: 2, m: 4 }, Scope::LayerWise).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
