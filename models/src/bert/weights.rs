//! Reading HF checkpoints (`model.safetensors`, `pytorch_model.bin`) into any BERT module, and
//! exporting a module back to an HF-layout `model.safetensors`.
//!
//! Keys go through [`super::names`] only. A checkpoint may carry the `bert.` prefix or not and
//! may or may not have a head: missing heads (and poolers) keep their fresh initialisation and
//! are listed in the [`LoadReport`]; unexpected keys are listed too, never silently dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor, TensorData};

use super::error::BertError;
use super::names;

/// One tensor of a checkpoint.
#[derive(Debug, Clone)]
pub struct StoredTensor {
    /// Extents, outermost first.
    pub shape: Vec<usize>,
    /// Element type as the file names it (`F32`, `I64`, ...).
    pub dtype: String,
    /// The values as f32, for floating-point tensors; `None` for integer / bool tensors.
    pub data: Option<TensorData>,
}

/// All tensors of a checkpoint file, by key.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
    tensors: BTreeMap<String, StoredTensor>,
}

fn float_dtype(name: &str) -> Option<DType> {
    match name {
        "F64" => Some(DType::F64),
        "F32" => Some(DType::F32),
        "F16" => Some(DType::F16),
        "BF16" => Some(DType::BF16),
        _ => None,
    }
}

impl Checkpoint {
    /// Removes a tensor (e.g. a task head of another size, to keep the model's fresh one).
    pub fn remove(&mut self, key: &str) -> Option<StoredTensor> {
        self.tensors.remove(key)
    }

    /// Reads a checkpoint: `*.safetensors`, or a PyTorch file (`*.bin`, `*.pt`, `*.pth`).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, BertError> {
        let path = path.as_ref();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "safetensors" {
            Self::read_safetensors(path)
        } else {
            Self::read_pytorch(path)
        }
    }

    /// Builds a checkpoint from f32 tensors in memory (`path` only labels error messages).
    pub fn from_f32(
        path: impl Into<PathBuf>,
        tensors: impl IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
    ) -> Self {
        let tensors = tensors
            .into_iter()
            .map(|(key, shape, values)| {
                let data = TensorData::new(values, shape.clone());
                let t = StoredTensor {
                    shape,
                    dtype: "F32".to_string(),
                    data: Some(data),
                };
                (key, t)
            })
            .collect();
        Self {
            path: path.into(),
            tensors,
        }
    }

    fn insert_bytes(
        &mut self,
        key: String,
        dtype: &str,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    ) -> Result<(), BertError> {
        let data = match float_dtype(dtype) {
            Some(dt) => {
                let bad = |message: String| BertError::Checkpoint {
                    path: self.path.clone(),
                    message: format!("tensor `{key}`: {message}"),
                };
                let data = TensorData::try_from_bytes_vec(bytes, shape.clone(), dt)
                    .map_err(|e| bad(e.to_string()))?;
                Some(data.try_cast_as::<f32>().map_err(|e| bad(e.to_string()))?)
            }
            None => None,
        };
        self.tensors.insert(
            key,
            StoredTensor {
                shape,
                dtype: dtype.to_string(),
                data,
            },
        );
        Ok(())
    }

    fn read_safetensors(path: &Path) -> Result<Self, BertError> {
        let bytes = std::fs::read(path).map_err(|source| BertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let st =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| BertError::Checkpoint {
                path: path.to_path_buf(),
                message: format!("not a valid safetensors file: {e}"),
            })?;
        let mut ckpt = Self {
            path: path.to_path_buf(),
            tensors: BTreeMap::new(),
        };
        for (key, view) in st.tensors() {
            let dtype = format!("{:?}", view.dtype());
            ckpt.insert_bytes(key, &dtype, view.shape().to_vec(), view.data().to_vec())?;
        }
        Ok(ckpt)
    }

    fn read_pytorch(path: &Path) -> Result<Self, BertError> {
        use burn::store::pytorch_reader::{DType as PtDType, PytorchReader};
        let reader = PytorchReader::new(path).map_err(|e| BertError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("not a readable PyTorch checkpoint: {e}"),
        })?;
        let mut ckpt = Self {
            path: path.to_path_buf(),
            tensors: BTreeMap::new(),
        };
        for (key, tensor) in reader.into_tensors() {
            let dtype = match tensor.dtype() {
                PtDType::F64 => "F64",
                PtDType::F32 => "F32",
                PtDType::F16 => "F16",
                PtDType::BF16 => "BF16",
                PtDType::I64 => "I64",
                PtDType::I32 => "I32",
                PtDType::I16 => "I16",
                PtDType::I8 => "I8",
                PtDType::U64 => "U64",
                PtDType::U32 => "U32",
                PtDType::U16 => "U16",
                PtDType::U8 => "U8",
                PtDType::Bool => "BOOL",
            };
            let shape = tensor.shape().to_vec();
            // Only floating-point tensors are read; the others are listed by shape and dtype.
            let bytes = if float_dtype(dtype).is_some() {
                tensor.read().map_err(|e| BertError::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!("tensor `{key}`: {e}"),
                })?
            } else {
                Vec::new()
            };
            if float_dtype(dtype).is_some() {
                ckpt.insert_bytes(key, dtype, shape, bytes)?;
            } else {
                ckpt.tensors.insert(
                    key,
                    StoredTensor {
                        shape,
                        dtype: dtype.to_string(),
                        data: None,
                    },
                );
            }
        }
        Ok(ckpt)
    }

    /// The file this checkpoint was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor under `key`.
    pub fn get(&self, key: &str) -> Option<&StoredTensor> {
        self.tensors.get(key)
    }
}

/// What [`load_into`] did with each parameter and each checkpoint key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// The checkpoint file.
    pub source: PathBuf,
    /// Model parameters (HF names) filled from the checkpoint.
    pub loaded: Vec<String>,
    /// Model parameters absent from the checkpoint that keep their fresh initialisation
    /// (pooler and task heads only; a missing backbone tensor is an error).
    pub initialized: Vec<String>,
    /// Checkpoint keys no parameter used (e.g. another head, `cls.predictions.*`).
    pub unexpected: Vec<String>,
    /// Checkpoint buffers that are not parameters, skipped on purpose
    /// (`embeddings.position_ids`).
    pub skipped_buffers: Vec<String>,
    /// Parameters found under a legacy name: `(checkpoint key, HF name)`.
    pub legacy_names: Vec<(String, String)>,
    /// Number of parameters found only after adding or stripping the `bert.` prefix.
    pub prefix_adjusted: usize,
}

impl LoadReport {
    /// True when every parameter came from the checkpoint and every key was used.
    pub fn is_exact(&self) -> bool {
        self.initialized.is_empty() && self.unexpected.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: loaded {} tensor(s){}",
            self.source.display(),
            self.loaded.len(),
            if self.prefix_adjusted > 0 {
                format!(" ({} via the `bert.` prefix)", self.prefix_adjusted)
            } else {
                String::new()
            }
        )?;
        let mut list = |title: &str, items: &[String]| {
            if items.is_empty() {
                Ok(())
            } else {
                writeln!(f, "  {title} ({}): {}", items.len(), items.join(", "))
            }
        };
        list("newly initialised", &self.initialized)?;
        list("unexpected, not used", &self.unexpected)?;
        list("buffers skipped", &self.skipped_buffers)?;
        for (from, to) in &self.legacy_names {
            writeln!(f, "  legacy name {from} -> {to}")?;
        }
        Ok(())
    }
}

struct Loader<'a> {
    ckpt: &'a Checkpoint,
    path: Vec<String>,
    used: BTreeSet<String>,
    report: LoadReport,
    missing: Vec<String>,
    errors: Vec<BertError>,
}

impl Loader<'_> {
    /// Finds the checkpoint key for a model parameter's HF name.
    fn lookup(&self, hf: &str) -> Option<(String, bool)> {
        let mut candidates = vec![(hf.to_string(), false)];
        match hf.strip_prefix(names::BACKBONE_PREFIX) {
            Some(stripped) => candidates.push((stripped.to_string(), true)),
            None => candidates.push((format!("{}{hf}", names::BACKBONE_PREFIX), true)),
        }
        let legacy: Vec<_> = candidates
            .iter()
            .filter_map(|(k, p)| names::legacy_alias(k).map(|a| (a, *p)))
            .collect();
        candidates.extend(legacy);
        candidates
            .into_iter()
            .find(|(k, _)| self.ckpt.tensors.contains_key(k))
    }
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let hf = names::to_hf(&self.path.join("."));
        let Some((key, via_prefix)) = self.lookup(&hf) else {
            if names::is_optional(&hf) {
                self.report.initialized.push(hf);
            } else {
                self.missing.push(hf);
            }
            return param;
        };
        let stored = &self.ckpt.tensors[&key];
        self.used.insert(key.clone());
        let expected = param.lazy_shape().to_vec();
        if stored.shape != expected {
            self.errors.push(BertError::ShapeMismatch {
                path: self.ckpt.path.clone(),
                key,
                expected,
                found: stored.shape.clone(),
            });
            return param;
        }
        let Some(data) = &stored.data else {
            self.errors.push(BertError::UnsupportedDtype {
                path: self.ckpt.path.clone(),
                key,
                dtype: stored.dtype.clone(),
            });
            return param;
        };
        if via_prefix {
            self.report.prefix_adjusted += 1;
        }
        let plain = key
            .strip_prefix(names::BACKBONE_PREFIX)
            .unwrap_or(&key)
            .to_string();
        let hf_plain = hf.strip_prefix(names::BACKBONE_PREFIX).unwrap_or(&hf);
        if plain != hf_plain {
            self.report.legacy_names.push((key.clone(), hf.clone()));
        }
        self.report.loaded.push(hf);
        let tensor = Tensor::<D>::from_data(data.clone(), &param.lazy_device());
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// Loads the checkpoint into `model`, matching parameters by HF name.
///
/// Accepts keys with or without the `bert.` prefix and legacy `LayerNorm.gamma/beta` names.
/// Missing pooler / head tensors keep the model's fresh values and are reported; a missing
/// backbone tensor, a shape mismatch or a non-float tensor for a parameter is an error naming
/// the file and key.
pub fn load_into<M: Module>(model: M, ckpt: &Checkpoint) -> Result<(M, LoadReport), BertError> {
    let mut loader = Loader {
        ckpt,
        path: Vec::new(),
        used: BTreeSet::new(),
        report: LoadReport {
            source: ckpt.path.clone(),
            ..LoadReport::default()
        },
        missing: Vec::new(),
        errors: Vec::new(),
    };
    let model = model.map(&mut loader);
    if let Some(err) = loader.errors.into_iter().next() {
        return Err(err);
    }
    if !loader.missing.is_empty() {
        return Err(BertError::MissingKeys {
            path: ckpt.path.clone(),
            keys: loader.missing,
        });
    }
    let mut report = loader.report;
    for key in ckpt.tensors.keys() {
        if loader.used.contains(key) {
            continue;
        }
        if names::is_known_buffer(key) {
            report.skipped_buffers.push(key.clone());
        } else {
            report.unexpected.push(key.clone());
        }
    }
    Ok((model, report))
}

/// Collects every float parameter of a module as `(HF name, shape, f32 values)`, in module
/// order. These are effective values ([`Param::val`]), so any reparameterisation or mask
/// applied through the parameter is folded in.
pub fn collect_hf_tensors<M: Module>(model: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Collector {
        path: Vec<String>,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl ModuleVisitor for Collector {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data();
            let shape = data.shape().to_vec();
            let values = data
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("converted to f32 just above");
            self.out
                .push((names::to_hf(&self.path.join(".")), shape, values));
        }
    }
    let mut c = Collector {
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

/// Writes every float parameter of `model` to an HF-layout safetensors file (HF names,
/// linears `[out, in]`, f32, metadata `format = pt`). Returns the keys written.
pub fn export_safetensors<M: Module>(model: &M, path: &Path) -> Result<Vec<String>, BertError> {
    let tensors = collect_hf_tensors(model);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(k, shape, values)| {
            let b = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k, shape, b)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, shape, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (k.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BertError::Checkpoint {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let keys = views.iter().map(|(k, _)| k.clone()).collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| {
        BertError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("cannot write: {e}"),
        }
    })?;
    Ok(keys)
}
