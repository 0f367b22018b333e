//! [`ResNetFamily`]: CIFAR and torchvision ResNets (pending the `shears-models` ResNets).

use std::path::Path;

use super::ArchError;
use crate::recipe::Recipe;
use crate::train::engine::{EngineError, ModelAt, TaskVisitor};

/// Image classification tasks go through the ResNet family.
pub(crate) fn dispatch_image<V: TaskVisitor>(
    _recipe: &Recipe,
    _base: &Path,
    _at: ModelAt<'_>,
    _eval_batch: usize,
    _visitor: V,
) -> Result<V::Output, EngineError> {
    Err(EngineError::Model(ArchError::UnknownArchitecture(
        "image models are not built yet".into(),
    )))
}
