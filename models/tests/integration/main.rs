//! Integration tests of `shears-models`, one binary: linking burn once instead of once per
//! file saves minutes on every cold build.
#![allow(deprecated)] // Device::ndarray is deprecated in burn 0.22 but supported.

mod batch_norm_cpu;
mod bert_common;
mod bert_heads;
mod bert_parity;
mod bert_source;
mod bert_sparse;
mod bert_tokenizer;
mod conv_gemm;
mod dropout;
mod gelu;
mod linear_gemm;
mod prunable_conv;
mod resnet_common;
mod resnet_option_a;
mod resnet_parity;
mod resnet_weights;
mod sparseprop_autodiff;
mod sparseprop_common;
mod sparseprop_encoder;
mod sparseprop_kernels;
