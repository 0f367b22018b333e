//! Reading HF checkpoints (`model.safetensors`, `pytorch_model.bin`) into any BERT module, and
//! exporting a module back to an HF-layout `model.safetensors`.
//!
//! The file formats and the matching live in the model-agnostic [`crate::weights`]; this
//! module supplies the BERT key rules ([`BertKeys`], built on [`super::names`]) and keeps the
//! BERT-flavoured API returning [`BertError`]. A checkpoint may carry the `bert.` prefix or not
//! and may or may not have a head: missing heads (and poolers) keep their fresh initialisation
//! and are listed in the [`LoadReport`]; unexpected keys are listed too, never silently dropped.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

use burn::module::Module;

use crate::weights::{self as generic, KeyMap};
pub use crate::weights::{LoadReport, StoredTensor};

use super::error::BertError;
use super::names;

/// The BERT [`KeyMap`]: burn paths ↔ HF names through [`names::to_hf`] / [`names::from_hf`],
/// optional `bert.` prefix, legacy `LayerNorm.gamma/beta` aliases, optional pooler and heads,
/// `embeddings.position_ids` skipped as a known buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct BertKeys;

impl KeyMap for BertKeys {
    fn to_file(&self, burn_path: &str) -> String {
        names::to_hf(burn_path)
    }

    fn burn_path(&self, key: &str) -> String {
        names::from_hf(key)
    }

    fn optional_prefix(&self) -> Option<&str> {
        Some(names::BACKBONE_PREFIX)
    }

    fn alias(&self, key: &str) -> Option<String> {
        names::legacy_alias(key)
    }

    fn is_optional(&self, key: &str) -> bool {
        names::is_optional(key)
    }

    fn is_known_buffer(&self, key: &str) -> bool {
        names::is_known_buffer(key)
    }
}

/// All tensors of a checkpoint file, by key: the generic [`crate::weights::Checkpoint`] with
/// constructors returning [`BertError`]. Dereferences to the generic checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint(pub generic::Checkpoint);

impl Checkpoint {
    /// Reads a checkpoint: `*.safetensors`, or a PyTorch file (`*.bin`, `*.pt`, `*.pth`).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, BertError> {
        Ok(Self(generic::Checkpoint::read(path)?))
    }

    /// Builds a checkpoint from f32 tensors in memory (`path` only labels error messages).
    pub fn from_f32(
        path: impl Into<PathBuf>,
        tensors: impl IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
    ) -> Self {
        Self(generic::Checkpoint::from_f32(path, tensors))
    }

    /// The generic checkpoint.
    pub fn into_inner(self) -> generic::Checkpoint {
        self.0
    }
}

impl Deref for Checkpoint {
    type Target = generic::Checkpoint;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Checkpoint {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<generic::Checkpoint> for Checkpoint {
    fn from(c: generic::Checkpoint) -> Self {
        Self(c)
    }
}

/// Loads the checkpoint into `model`, matching parameters by HF name.
///
/// Accepts keys with or without the `bert.` prefix and legacy `LayerNorm.gamma/beta` names.
/// Missing pooler / head tensors keep the model's fresh values and are reported; a missing
/// backbone tensor, a shape mismatch or a non-float tensor for a parameter is an error naming
/// the file and key.
pub fn load_into<M: Module>(model: M, ckpt: &Checkpoint) -> Result<(M, LoadReport), BertError> {
    Ok(generic::load_into(model, &ckpt.0, &BertKeys)?)
}

/// Collects every float parameter of a module as `(HF name, shape, f32 values)`, in module
/// order. These are effective values ([`Param::val`](burn::module::Param::val)), so any
/// reparameterisation or mask applied through the parameter is folded in.
pub fn collect_hf_tensors<M: Module>(model: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    generic::collect_tensors(model, &BertKeys)
}

/// Writes every float parameter of `model` to an HF-layout safetensors file (HF names,
/// linears `[out, in]`, f32, metadata `format = pt`). Returns the keys written.
pub fn export_safetensors<M: Module>(model: &M, path: &Path) -> Result<Vec<String>, BertError> {
    Ok(generic::export_safetensors(model, &BertKeys, path)?)
}
