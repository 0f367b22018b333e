//! Integration tests of the `shears` crate, one binary: linking burn once instead of once per
//! file saves minutes on every cold build (see the README's set-up times).

mod backend_swap;
mod bench_sparseprop;
mod bench_train;
mod cli_infer;
mod data_batch;
mod data_image_batch;
mod data_images;
mod data_parallel;
mod data_parquet;
mod data_squad;
mod data_text;
mod distill;
mod export_compressed;
mod fuzz_inputs;
mod loss;
mod metrics_reference;
mod optim_adamw;
mod optim_weight_decay;
mod plot_curves;
mod quickstart;
mod recipe_check;
mod recipe_images;
mod recipe_strict;
mod resnet_cifar;
#[cfg(unix)]
mod run_failures;
mod schedule_lr;
mod schedule_sparsity;
mod schedule_warmup_cosine;
mod sparsity_bert_names;
mod sparsity_checkpoint;
mod sparsity_enforce;
mod sparsity_masks;
mod sparsity_params;
mod sparsity_report;
mod train_engine;
