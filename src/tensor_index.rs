//! The list of tensors in a `.safetensors` file (names, dtypes, shapes), read from its
//! header alone, without loading any weights.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The key (`encoder.layer.0.attention.self.query.weight`).
    pub name: String,
    /// The safetensors dtype (`F32`, `F16`, `BF16`, `I64`, ...).
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Why a safetensors header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TensorIndexError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The header is not a safetensors header.
    #[error("{path}: not a safetensors file: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the byte offset where it applies.
        message: String,
    },
}

/// Headers above this size are rejected as corrupt (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 * 1024 * 1024;

/// Reads the tensor list of a safetensors file, in the order of their data offsets.
pub fn read_safetensors_index(path: &Path) -> Result<Vec<TensorInfo>, TensorIndexError> {
    let io = |source| TensorIndexError::Io {
        path: path.to_path_buf(),
        source,
    };
    let format = |message: String| TensorIndexError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| {
        format(format!(
            "the file has {file_len} bytes, fewer than the 8-byte header length"
        ))
    })?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER || n + 8 > file_len {
        return Err(format(format!(
            "header length {n} at offset 0 exceeds the file size ({file_len} bytes) or the 100 MB limit"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(io)?;
    let json: serde_json::Value = serde_json::from_slice(&header).map_err(|e| {
        format(format!(
            "the JSON header (bytes 8..{}) is invalid: {e}",
            8 + n
        ))
    })?;
    let obj = json
        .as_object()
        .ok_or_else(|| format("the JSON header is not an object".into()))?;
    let data_len = file_len - 8 - n;
    let mut out = Vec::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| format(format!("tensor `{name}`: {what}"));
        let dtype = v["dtype"]
            .as_str()
            .ok_or_else(|| bad("no dtype"))?
            .to_string();
        let shape = v["shape"]
            .as_array()
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| {
                d.as_u64()
                    .map(|d| d as usize)
                    .ok_or_else(|| bad("a shape entry is not an integer"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let offsets = v["data_offsets"]
            .as_array()
            .ok_or_else(|| bad("no data_offsets"))?;
        let (begin, end) = match offsets.as_slice() {
            [a, b] => (
                a.as_u64().ok_or_else(|| bad("bad data_offsets"))?,
                b.as_u64().ok_or_else(|| bad("bad data_offsets"))?,
            ),
            _ => return Err(bad("data_offsets is not [begin, end]")),
        };
        if begin > end || end > data_len {
            return Err(bad(&format!(
                "data_offsets [{begin}, {end}] lie outside the {data_len} data bytes"
            )));
        }
        out.push((
            begin,
            TensorInfo {
                name: name.clone(),
                dtype,
                shape,
            },
        ));
    }
    out.sort_by_key(|(b, _)| *b);
    Ok(out.into_iter().map(|(_, t)| t).collect())
}
