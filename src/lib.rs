//! # shears
//!
//! Recipe-driven sparsification for [burn](https://burn.dev) models: masks and sparsity
//! reports, schedules, pruners, optimizers, distillation, the recipe engine, the
//! training loop, data sets and metrics.
//!
//! The models and the sparse kernels live in the `shears-models` crate.

pub mod arch;
pub mod data;
pub mod device;
pub mod distill;
pub mod export;
pub mod fisher;
pub mod loss;
pub mod metrics;
pub mod obs;
pub mod plot;
pub mod profile;
pub mod recipe;
pub mod rng;
pub mod run_dir;
pub mod schedule;
pub mod sparsity;
pub mod suggest;
pub mod tensor_index;
pub mod train;
