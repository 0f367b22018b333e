//! Saving and loading masks as a safetensors sidecar file.
//!
//! Each mask is a `BOOL` tensor (one byte per element, `1` = kept) named by its parameter
//! name, with the parameter's shape; the header metadata holds `format = shears-masks` and
//! `version = 1`. Because masks are keyed by name, they can be loaded into a freshly
//! initialised model (new `ParamId`s) and re-applied with
//! [`apply_masks`](super::enforce::apply_masks). The file is readable by any safetensors
//! library (in PyTorch it loads as `torch.bool` tensors).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};

use super::mask::{Mask, MaskSet};

/// The `format` metadata value of a mask file.
pub const MASK_FORMAT: &str = "shears-masks";
/// The `version` metadata value written.
pub const MASK_VERSION: &str = "1";

/// Errors reading or writing mask files.
#[derive(Debug, thiserror::Error)]
pub enum MaskFileError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The safetensors container is malformed.
    #[error("{source_name}: not a valid safetensors file: {message}")]
    Format {
        /// The file (or `<bytes>`).
        source_name: String,
        /// The parser's message.
        message: String,
    },
    /// The file is a safetensors file but not a mask file.
    #[error(
        "{source_name}: not a shears mask file (metadata `format` is {found:?}, expected `{MASK_FORMAT}`)"
    )]
    NotMasks {
        /// The file.
        source_name: String,
        /// The `format` value found.
        found: Option<String>,
    },
    /// A tensor of the wrong dtype or with values other than 0/1.
    #[error("{source_name}: mask `{name}`: {message}")]
    BadTensor {
        /// The file.
        source_name: String,
        /// The tensor name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

struct BoolView {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for BoolView {
    fn dtype(&self) -> Dtype {
        Dtype::BOOL
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn views(masks: &MaskSet) -> Vec<(String, BoolView)> {
    masks
        .iter()
        .map(|(name, m)| {
            (
                name.to_string(),
                BoolView {
                    shape: m.shape().to_vec(),
                    bytes: m.keep().iter().map(|k| *k as u8).collect(),
                },
            )
        })
        .collect()
}

fn metadata() -> HashMap<String, String> {
    HashMap::from([
        ("format".to_string(), MASK_FORMAT.to_string()),
        ("version".to_string(), MASK_VERSION.to_string()),
    ])
}

/// Serialises `masks` to safetensors bytes.
pub fn masks_to_bytes(masks: &MaskSet) -> Vec<u8> {
    safetensors::serialize(views(masks), Some(metadata()))
        .expect("bool views with consistent shapes always serialise")
}

/// Writes `masks` to `path` (overwriting it).
pub fn save_masks(masks: &MaskSet, path: &Path) -> Result<(), MaskFileError> {
    std::fs::write(path, masks_to_bytes(masks)).map_err(|source| MaskFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses mask bytes; `source_name` names the origin in errors.
pub fn masks_from_bytes(bytes: &[u8], source_name: &str) -> Result<MaskSet, MaskFileError> {
    let format_err = |message: String| MaskFileError::Format {
        source_name: source_name.to_string(),
        message,
    };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| format_err(e.to_string()))?;
    let found = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format").cloned());
    if found.as_deref() != Some(MASK_FORMAT) {
        return Err(MaskFileError::NotMasks {
            source_name: source_name.to_string(),
            found,
        });
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| format_err(e.to_string()))?;
    let mut set = MaskSet::new();
    for (name, view) in st.iter() {
        let bad = |message: String| MaskFileError::BadTensor {
            source_name: source_name.to_string(),
            name: name.to_string(),
            message,
        };
        if !matches!(view.dtype(), Dtype::BOOL | Dtype::U8) {
            return Err(bad(format!(
                "dtype {:?}, expected BOOL or U8",
                view.dtype()
            )));
        }
        let mut keep = Vec::with_capacity(view.data().len());
        for (i, b) in view.data().iter().enumerate() {
            match b {
                0 => keep.push(false),
                1 => keep.push(true),
                other => return Err(bad(format!("element {i} is {other}, expected 0 or 1"))),
            }
        }
        let mask = Mask::new(view.shape().to_vec(), keep).map_err(|e| bad(e.to_string()))?;
        set.insert(name, mask);
    }
    Ok(set)
}

/// Reads a mask file written by [`save_masks`].
pub fn load_masks(path: &Path) -> Result<MaskSet, MaskFileError> {
    let bytes = std::fs::read(path).map_err(|source| MaskFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    masks_from_bytes(&bytes, &path.display().to_string())
}
