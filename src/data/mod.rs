//! Data sets and tasks: GLUE and SQuAD (original files, and the Hugging Face Hub's parquet files or
//! JSON-lines exports), generic sentence(-pair) classification/regression files,
//! MNIST-style idx files, CIFAR binaries and image folders, augmentation, and batching into
//! burn tensors.
//!
//! Every loader returns [`DataError`] (naming the file and the row/record/offset) on bad
//! input; none panics. Offline sets live in the git-ignored `assets/` folder fetched by
//! `scripts/fetch-assets.sh`; a missing folder is [`DataError::MissingAsset`].

pub mod augment;
pub mod batch;
pub mod cifar;
pub mod error;
pub mod glue;
pub mod idx;
pub mod image_batch;
pub mod images;
mod parquet_rows;
pub mod squad;
pub mod text;

pub use error::{DataError, Location};
pub use images::ImageExample;
pub use squad::SquadExample;
pub use text::{Label, TextExample};
