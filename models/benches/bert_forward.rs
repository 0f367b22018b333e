//! MiniLM-L6 (all-MiniLM-L6-v2 shape) forward throughput, batch 32 x seq 64, in tokens/s, on
//! the Flex and NdArray CPU backends. Weights are random (same arithmetic as the real ones).
//!
//! Run: `cargo bench -p shears-models --bench bert_forward`.
//! The PyTorch CPU figure for the same shape: `python3 models/benches/bert_forward_torch.py`.

use std::time::Duration;

use burn::tensor::{Device, Int, Tensor};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use shears_models::bert::{BertConfig, BertInput, BertModel};

const BATCH: usize = 32;
const SEQ: usize = 64;

fn input(config: &BertConfig, device: &Device) -> BertInput {
    let ids: Vec<i64> = (0..BATCH * SEQ)
        .map(|i| ((i * 7919) % (config.vocab_size - 1000)) as i64 + 1000)
        .collect();
    let input_ids = Tensor::<1, Int>::from_data(ids.as_slice(), device).reshape([BATCH, SEQ]);
    BertInput {
        input_ids,
        token_type_ids: Tensor::<2, Int>::zeros([BATCH, SEQ], device),
        attention_mask: Tensor::<2, Int>::ones([BATCH, SEQ], device),
    }
}

fn bench(c: &mut Criterion) {
    let config = BertConfig::minilm_l6();
    let mut group = c.benchmark_group("minilm_l6_forward_b32_s64");
    group.throughput(Throughput::Elements((BATCH * SEQ) as u64));
    group.sample_size(10);
    // One forward is ~seconds on a shared CPU: flat sampling keeps the run short.
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(3));
    group.measurement_time(Duration::from_secs(10));
    #[allow(deprecated)]
    let devices = [("flex", Device::flex()), ("ndarray", Device::ndarray())];
    for (name, device) in devices {
        device.seed(0);
        let model = BertModel::new(&config, true, &device);
        let x = input(&config, &device);
        group.bench_function(name, |b| {
            b.iter(|| {
                let out = model.forward(&x).last_hidden_state;
                // Materialise the result so that lazy backends cannot skip work.
                out.into_data()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
