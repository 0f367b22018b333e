//! # shears-models
//!
//! burn modules and the ops they run on, for the `shears` sparsification toolkit:
//! BERT with Hugging Face fidelity, ResNets, weight I/O, the SparseProp backend
//! extension (sparse CPU kernels with a custom autodiff backward and a dense
//! fallback on GPU backends), and CPU kernels for the ops burn is slow at here: BERT's GELU
//! and dropout, the ResNets' dense conv2d (im2col + GEMM) and training-mode batch norm, the
//! gradient norm of clipping (same extension mechanism, burn's ops on GPUs).
//!
//! This crate knows nothing of recipes, schedules or training: those live in `shears`.

pub mod activation;
pub mod attention;
pub mod batch_norm;
pub mod batch_norm_cpu;
pub mod bert;
pub mod compressed;
pub mod conv;
pub mod conv3x3;
pub mod conv_gemm;
pub mod dropout;
pub mod feature_map;
pub mod layer_norm;
pub mod linear;
pub mod linear_gemm;
pub mod op_timing;
pub mod output;
pub mod reduce;
pub mod resnet;
pub mod sparseprop;
pub mod weights;
