//! Loading ResNet checkpoints (`*.safetensors`, torchvision / `torch.save` `*.pth` / `*.bin`)
//! and exporting them, through the generic [`crate::weights`] I/O.

use std::path::Path;

use burn::tensor::Device;

use super::ResNetError;
use super::config::ResNetConfig;
use super::model::ResNet;
use crate::weights::{
    self as generic, Checkpoint, ExportTensor, ExportValues, KeyMap, LoadReport, WeightsError,
};

/// The ResNet [`KeyMap`]: burn paths already equal the PyTorch state-dict keys (running
/// statistics included), so the map is the identity; torch's `*.num_batches_tracked` buffers
/// are accepted and skipped (reported in [`LoadReport::skipped_buffers`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ResNetKeys;

impl KeyMap for ResNetKeys {
    fn is_known_buffer(&self, key: &str) -> bool {
        key.ends_with(".num_batches_tracked")
    }
}

/// What to do with the classifier (`linear` / `fc`) of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassifierInit {
    /// Load it; a shape mismatch (another class count) is an error.
    #[default]
    Load,
    /// Ignore the checkpoint's classifier and keep the model's fresh one (fine-tuning on
    /// another task); its tensors are reported in [`LoadReport::skipped_buffers`].
    Fresh,
    /// Load it when its shape matches the model's, else keep the fresh one as in `Fresh`.
    FreshIfShapeDiffers,
}

impl ResNet {
    /// Loads `ckpt` into this model, strictly: every parameter and running statistic must be
    /// in the checkpoint with the same shape, and every checkpoint key must be used (except
    /// `num_batches_tracked` and, with a fresh classifier, the classifier's tensors).
    /// Errors name the file and the keys.
    pub fn load_checkpoint(
        self,
        ckpt: &Checkpoint,
        classifier: ClassifierInit,
    ) -> Result<(Self, LoadReport), ResNetError> {
        let prefix = format!("{}.", self.arch.classifier_name());
        let cls_keys: Vec<String> = ckpt
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        let fresh = match classifier {
            ClassifierInit::Load => false,
            ClassifierInit::Fresh => true,
            ClassifierInit::FreshIfShapeDiffers => {
                let w = ckpt.get(&format!("{prefix}weight"));
                let expected = self.classifier().weight.lazy_shape().to_vec();
                w.is_none_or(|t| t.shape != expected)
            }
        };
        let (model, mut report) = if fresh {
            let mut trimmed = ckpt.clone();
            for k in &cls_keys {
                trimmed.remove(k);
            }
            let keys = FreshClassifier {
                prefix: prefix.clone(),
            };
            let (model, mut report) = generic::load_into(self, &trimmed, &keys)?;
            report.skipped_buffers.extend(cls_keys);
            (model, report)
        } else {
            generic::load_into(self, ckpt, &ResNetKeys)?
        };
        report.skipped_buffers.sort();
        let report = generic::require_exact(report)?;
        Ok((model, report))
    }

    /// Builds `config` on `device` and loads the checkpoint file `path` into it (see
    /// [`load_checkpoint`](Self::load_checkpoint)).
    pub fn load_file(
        config: &ResNetConfig,
        path: impl AsRef<Path>,
        classifier: ClassifierInit,
        device: &Device,
    ) -> Result<(Self, LoadReport), ResNetError> {
        let ckpt = Checkpoint::read(path)?;
        config.init(device).load_checkpoint(&ckpt, classifier)
    }
}

/// [`ResNetKeys`] with the classifier optional (freshly initialised).
struct FreshClassifier {
    prefix: String,
}

impl KeyMap for FreshClassifier {
    fn is_optional(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
    }

    fn is_known_buffer(&self, key: &str) -> bool {
        ResNetKeys.is_known_buffer(key)
    }
}

/// Every tensor of `model` as a PyTorch state dict would hold it: parameters and running
/// statistics (f32, state-dict names), plus an I64 scalar `*.num_batches_tracked` per batch
/// norm, so `load_state_dict(strict=True)` accepts the file.
pub fn state_dict_tensors(model: &ResNet) -> Vec<ExportTensor> {
    let mut tensors: Vec<ExportTensor> = generic::collect_tensors(model, &ResNetKeys)
        .into_iter()
        .map(|(k, shape, values)| ExportTensor::f32(k, shape, values))
        .collect();
    for (name, bn) in model.bn_layers() {
        tensors.push(ExportTensor {
            key: format!("{name}.num_batches_tracked"),
            shape: vec![],
            values: ExportValues::I64(vec![bn.num_batches_tracked() as i64]),
        });
    }
    tensors
}

/// Writes `model` to a safetensors file under its PyTorch state-dict names (see
/// [`state_dict_tensors`]). Returns the keys written.
pub fn save_safetensors(
    model: &ResNet,
    path: impl AsRef<Path>,
) -> Result<Vec<String>, WeightsError> {
    generic::write_safetensors(&state_dict_tensors(model), path.as_ref())
}
