//! ResNets with PyTorch state-dict names, prunable convs and torch batch-norm semantics.
//!
//! * CIFAR ResNet-20/32/44/56/110 (`pytorch_resnet_cifar10` layout, shortcut option A or B)
//!   and torchvision ResNet-18/34/50 ([`ResNetArch`], [`ResNetConfig`]).
//! * Every conv is a [`PrunableConv2d`](crate::conv::PrunableConv2d), the classifier a
//!   [`PrunableLinear`](crate::linear::PrunableLinear), every norm a
//!   [`BatchNorm2d`](crate::batch_norm::BatchNorm2d) whose [`BnMode`](crate::batch_norm::BnMode)
//!   is set on the whole model with [`ResNet::set_bn_mode`].
//! * [`ResNet::prunable_layers_mut`] lists the prunable layers by state-dict name to switch
//!   them sparse / dense.
//! * [`ResNet::load_file`] / [`ResNet::load_checkpoint`] read safetensors and torchvision
//!   `.pth` files strictly ([`ResNetKeys`]); [`save_safetensors`] writes them back.
//!
//! ```no_run
//! use burn::tensor::Device;
//! use shears_models::resnet::{ClassifierInit, ResNet, ResNetConfig, save_safetensors};
//! use shears_models::batch_norm::BnMode;
//!
//! let device = Device::flex();
//! let config = ResNetConfig::parse("resnet20")?;
//! let (mut model, report) =
//!     ResNet::load_file(&config, "resnet20.safetensors", ClassifierInit::Load, &device)?;
//! model.set_bn_mode(BnMode::Eval);
//! save_safetensors(&model, "copy.safetensors")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod block;
mod config;
mod model;
pub mod option_a;
mod weights;

pub use block::Block;
pub use config::{ResNetArch, ResNetConfig, Shortcut};
pub use model::{PrunableLayerMut, ResNet};
pub use weights::{ClassifierInit, ResNetKeys, save_safetensors, state_dict_tensors};

use crate::weights::WeightsError;

/// An error building or loading a ResNet.
#[derive(Debug, thiserror::Error)]
pub enum ResNetError {
    /// The architecture name is not one of the known ones.
    #[error(
        "unknown ResNet architecture {name:?} (expected resnet18, resnet34, resnet50, \
         resnet20, resnet32, resnet44, resnet56, resnet110, optionally with a `b` suffix for \
         CIFAR shortcut option B)"
    )]
    UnknownArch {
        /// The name as given.
        name: String,
    },
    /// Reading, matching or writing the weights failed (the message names file and key).
    #[error(transparent)]
    Weights(#[from] WeightsError),
}
