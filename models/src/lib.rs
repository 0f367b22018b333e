//! # shears-models
//!
//! burn modules and the ops they run on, for the `shears` sparsification toolkit:
//! BERT with Hugging Face fidelity, ResNets, weight I/O, and the SparseProp backend
//! extension (sparse CPU kernels with a custom autodiff backward and a dense
//! fallback on GPU backends).
//!
//! This crate knows nothing of recipes, schedules or training: those live in `shears`.

pub mod batch_norm;
pub mod bert;
pub mod compressed;
pub mod conv;
pub mod layer_norm;
pub mod linear;
pub mod resnet;
pub mod sparseprop;
pub mod weights;
