//! Sparse models in a format other tools load: the `sparse-bitmask` layout of
//! compressed-tensors, which vLLM and llm-compressor read
//! ([`shears_models::compressed`] has the tensor layout).
//!
//! [`write_compressed`] turns an exported model (a directory with `model.safetensors` and
//! its `config.json` and tokenizer files, or a bare weights file) into a copy whose sparse
//! weights are stored compressed: every floating-point `*.weight` of at least two
//! dimensions with at least `min_sparsity` zeros. Other tensors are stored as they are.
//! `config.json` gains compressed-tensors' `quantization_config.sparsity_config`, as
//! llm-compressor writes it for sparse models. Reading such a model back
//! (`Checkpoint::read`, `shears sparsity`) decompresses it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shears_models::compressed::{self, CompressedError, RawTensor};

use crate::run_dir::{RunDirError, write_atomic};

/// The weights file of an exported model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The model configuration of an exported model directory.
pub const CONFIG_FILE: &str = "config.json";
/// Default of `min_sparsity`: weights with fewer zeros are stored dense (the bitmask would
/// cost more than the zeros save).
pub const DEFAULT_MIN_SPARSITY: f64 = 0.05;

/// Why a model could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The input is not what an export starts from.
    #[error("{path}: {message}")]
    Input {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file could not be written atomically.
    #[error(transparent)]
    Write(#[from] RunDirError),
    /// A tensor could not be compressed.
    #[error("{path}: {source}")]
    Compressed {
        /// The weights file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: CompressedError,
    },
}

/// What [`write_compressed`] wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CompressedExport {
    /// The weights file written.
    pub weights: PathBuf,
    /// The weights stored compressed (their names).
    pub compressed: Vec<String>,
    /// Zeros over all floating-point tensors of the model, as a fraction.
    pub global_sparsity: f64,
    /// `2:4` when every compressed weight keeps at most 2 of each 4 consecutive entries
    /// along its last axis, `unstructured` otherwise.
    pub sparsity_structure: String,
    /// Size of the dense weights file, bytes.
    pub dense_bytes: u64,
    /// Size of the compressed weights file, bytes.
    pub compressed_bytes: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn input(path: &Path, message: impl Into<String>) -> ExportError {
    ExportError::Input {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Writes the compressed copy of `model` (a model directory or a `.safetensors` file) into
/// the directory `out`: `model.safetensors` with the sparse weights compressed, and the
/// directory's other files, `config.json` with the sparsity config added.
pub fn write_compressed(
    model: &Path,
    out: &Path,
    min_sparsity: f64,
) -> Result<CompressedExport, ExportError> {
    let (weights, dir) = if model.is_dir() {
        let w = model.join(WEIGHTS_FILE);
        if !w.is_file() {
            return Err(input(model, format!("no {WEIGHTS_FILE} in this directory")));
        }
        (w, Some(model))
    } else if model.is_file() {
        (model.to_path_buf(), None)
    } else {
        return Err(input(model, "no such model directory or weights file"));
    };
    let bytes = std::fs::read(&weights).map_err(io(&weights))?;
    let tensors = compressed::read_all(&bytes)
        .map_err(|e| input(&weights, format!("not a valid safetensors file: {e}")))?;
    if compressed::is_compressed(tensors.keys().map(String::as_str)) {
        return Err(input(&weights, "the weights are compressed already"));
    }
    let (mut zeros, mut numel) = (0usize, 0usize);
    let mut out_tensors: BTreeMap<String, RawTensor> = BTreeMap::new();
    let mut names = Vec::new();
    let mut two_four = true;
    for (name, t) in tensors {
        let counted = compressed::zeros(&t);
        if let Some((z, n)) = counted {
            zeros += z;
            numel += n;
        }
        let sparse_enough =
            counted.is_some_and(|(z, n)| n > 0 && z as f64 >= min_sparsity * n as f64 && z > 0);
        if name.ends_with(".weight") && t.shape.len() >= 2 && sparse_enough {
            two_four &= compressed::is_two_four(&t);
            let parts =
                compressed::compress(&name, &t).map_err(|source| ExportError::Compressed {
                    path: weights.clone(),
                    source,
                })?;
            out_tensors.extend(parts);
            names.push(name);
        } else {
            out_tensors.insert(name, t);
        }
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let target = out.join(WEIGHTS_FILE);
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let data = compressed::write_all(&out_tensors, Some(metadata))
        .map_err(|e| input(&target, format!("cannot serialise: {e}")))?;
    write_atomic(&target, &data)?;
    let structure = if two_four && !names.is_empty() {
        "2:4"
    } else {
        "unstructured"
    };
    let global_sparsity = if numel == 0 {
        0.0
    } else {
        zeros as f64 / numel as f64
    };
    // The configuration: the source's, plus the sparsity config.
    let config_src = dir.map(|d| d.join(CONFIG_FILE));
    let mut config: serde_json::Value = match config_src.as_ref().filter(|p| p.is_file()) {
        Some(p) => serde_json::from_slice(&std::fs::read(p).map_err(io(p))?)
            .map_err(|e| input(p, format!("not valid JSON: {e}")))?,
        None => serde_json::json!({}),
    };
    let Some(obj) = config.as_object_mut() else {
        return Err(input(
            config_src.as_deref().unwrap_or(model),
            "config.json is not a JSON object",
        ));
    };
    let targets: Vec<&str> = names.iter().map(|n| compressed::prefix_of(n)).collect();
    obj.insert(
        "quantization_config".into(),
        serde_json::json!({
            "quant_method": "compressed-tensors",
            "sparsity_config": {
                "format": "sparse-bitmask",
                "global_sparsity": global_sparsity,
                "sparsity_structure": structure,
                "targets": targets,
                "ignore": [],
            },
            "transform_config": {},
        }),
    );
    let cfg_out = out.join(CONFIG_FILE);
    write_atomic(
        &cfg_out,
        &serde_json::to_vec_pretty(&config).expect("a JSON value serialises"),
    )?;
    // The directory's other files (tokenizer, ...), unchanged.
    if let Some(d) = dir {
        for entry in std::fs::read_dir(d).map_err(io(d))? {
            let path = entry.map_err(io(d))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if path.is_file()
                && !matches!(name.as_deref(), Some(WEIGHTS_FILE) | Some(CONFIG_FILE))
                && let Some(name) = name
            {
                let to = out.join(&name);
                std::fs::copy(&path, &to).map_err(io(&to))?;
            }
        }
    }
    Ok(CompressedExport {
        weights: target,
        compressed: names,
        global_sparsity,
        sparsity_structure: structure.to_string(),
        dense_bytes: bytes.len() as u64,
        compressed_bytes: data.len() as u64,
    })
}
