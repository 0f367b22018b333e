//! Model-agnostic weight I/O: reading PyTorch-ecosystem checkpoints (`*.safetensors`, and
//! `torch.save` pickles `*.bin` / `*.pt` / `*.pth`) into any burn module, and exporting a
//! module back to safetensors under the same names.
//!
//! Checkpoint keys and burn parameter paths are tied together by a [`KeyMap`], one per model
//! family (`BertKeys` for BERT, `ResNetKeys` for the ResNets). Modules are expected to name
//! their fields after the checkpoint keys, so a map is usually the identity plus a few rules
//! (optional prefixes, legacy aliases, optional heads, buffers to skip).
//!
//! Every float tensor a module exposes through [`ModuleVisitor::visit_float`] /
//! [`ModuleMapper::map_float`] takes part, which includes burn
//! [`RunningState`](burn::module::RunningState) buffers such as batch-norm running statistics.
//!
//! Every error names the file (and the tensor key where there is one): see [`WeightsError`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor, TensorData};

/// An error reading, matching or writing checkpoint tensors. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is neither a readable safetensors nor a readable PyTorch checkpoint, or one of
    /// its tensors is malformed.
    #[error("{}: cannot read checkpoint: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A tensor has an element type that cannot become f32 weights.
    #[error("{}: tensor `{key}` has unsupported dtype {dtype}", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// The dtype, as the file names it.
        dtype: String,
    },
    /// A tensor's shape differs from the model's parameter.
    #[error(
        "{}: tensor `{key}` has shape {found:?}, the model expects {expected:?}",
        path.display()
    )]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor key (checkpoint name).
        key: String,
        /// The shape of the model parameter.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// Required tensors are absent from the checkpoint.
    #[error("{}: missing {} tensor(s): {}", path.display(), keys.len(), keys.join(", "))]
    MissingKeys {
        /// The file.
        path: PathBuf,
        /// The checkpoint names that were not found.
        keys: Vec<String>,
    },
    /// The checkpoint has tensors the model does not use (strict loading only).
    #[error(
        "{}: {} unexpected tensor(s), not used by the model: {}",
        path.display(),
        keys.len(),
        keys.join(", ")
    )]
    UnexpectedKeys {
        /// The file.
        path: PathBuf,
        /// The unused checkpoint keys.
        keys: Vec<String>,
    },
    /// A safetensors file could not be written.
    #[error("{}: cannot write safetensors: {message}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// How a model family's burn parameter paths relate to checkpoint keys.
///
/// All methods have defaults: `impl KeyMap for MyKeys {}` is the identity mapping with every
/// tensor required and no aliases. See [`IdentityKeys`].
pub trait KeyMap {
    /// The checkpoint key of the parameter at the dotted burn path `burn_path`.
    fn to_file(&self, burn_path: &str) -> String {
        burn_path.to_string()
    }

    /// The burn path of the checkpoint key `key` (inverse of [`to_file`](Self::to_file)).
    fn burn_path(&self, key: &str) -> String {
        key.to_string()
    }

    /// A prefix that checkpoint keys may carry or lack (e.g. `bert.` before a backbone);
    /// the loader tries both forms and counts the ones found only after toggling it.
    fn optional_prefix(&self) -> Option<&str> {
        None
    }

    /// A legacy name under which `key` may be stored (e.g. `LayerNorm.gamma`), tried after
    /// `key` itself.
    fn alias(&self, _key: &str) -> Option<String> {
        None
    }

    /// Whether a parameter may be absent from a checkpoint and then keeps its fresh
    /// initialisation (e.g. a task head).
    fn is_optional(&self, _key: &str) -> bool {
        false
    }

    /// Whether an unused checkpoint key is a buffer skipped on purpose (reported in
    /// [`LoadReport::skipped_buffers`], not as unexpected).
    fn is_known_buffer(&self, _key: &str) -> bool {
        false
    }
}

/// The identity [`KeyMap`]: checkpoint keys equal burn paths, everything is required.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityKeys;

impl KeyMap for IdentityKeys {}

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
    /// Reads a checkpoint: `*.safetensors` by extension, anything else as a PyTorch file
    /// (`*.bin`, `*.pt`, `*.pth`, zip or legacy pickle).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
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

    /// Removes a tensor (e.g. a classifier of another size, to keep the model's fresh one).
    pub fn remove(&mut self, key: &str) -> Option<StoredTensor> {
        self.tensors.remove(key)
    }

    /// Inserts (or replaces) a tensor.
    pub fn insert(&mut self, key: impl Into<String>, tensor: StoredTensor) {
        self.tensors.insert(key.into(), tensor);
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

    /// Whether the checkpoint has a tensor under `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the checkpoint has no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    fn format_error(&self, message: String) -> WeightsError {
        WeightsError::Format {
            path: self.path.clone(),
            message,
        }
    }

    fn insert_bytes(
        &mut self,
        key: String,
        dtype: &str,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    ) -> Result<(), WeightsError> {
        let data = match float_dtype(dtype) {
            Some(dt) => {
                let bad = |message: String| self.format_error(format!("tensor `{key}`: {message}"));
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

    fn read_safetensors(path: &Path) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut ckpt = Self {
            path: path.to_path_buf(),
            tensors: BTreeMap::new(),
        };
        // compressed-tensors' sparse-bitmask files are read back dense.
        let tensors = crate::compressed::read_all(&bytes)
            .map_err(|e| ckpt.format_error(format!("not a valid safetensors file: {e}")))?;
        let tensors = if crate::compressed::is_compressed(tensors.keys().map(String::as_str)) {
            crate::compressed::decompress(tensors).map_err(|e| ckpt.format_error(e.to_string()))?
        } else {
            tensors
        };
        for (key, t) in tensors {
            let dtype = format!("{:?}", t.dtype);
            ckpt.insert_bytes(key, &dtype, t.shape, t.data)?;
        }
        Ok(ckpt)
    }

    fn read_pytorch(path: &Path) -> Result<Self, WeightsError> {
        use burn::store::pytorch_reader::{DType as PtDType, PytorchReader};
        let mut ckpt = Self {
            path: path.to_path_buf(),
            tensors: BTreeMap::new(),
        };
        if let Err(source) = std::fs::metadata(path) {
            return Err(WeightsError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        let reader = PytorchReader::new(path)
            .map_err(|e| ckpt.format_error(format!("not a readable PyTorch checkpoint: {e}")))?;
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
            if float_dtype(dtype).is_some() {
                let bytes = tensor
                    .read()
                    .map_err(|e| ckpt.format_error(format!("tensor `{key}`: {e}")))?;
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
}

/// The burn record file of a model directory (burn-store's native format, as `shears export
/// --format burn` writes it). Its tensors carry the burn module's parameter paths, so it is
/// loaded into a module built from `config.json` ([`load_burn_record`]), not through a
/// family's checkpoint name mapping.
pub const BURN_RECORD_FILE: &str = "model.bpk";

/// Whether `file` is a burn record (`*.bpk`: burn-store's native format, as `shears export
/// --format burn` writes it).
pub fn is_burn_record(file: &Path) -> bool {
    file.extension().is_some_and(|e| e == "bpk")
}

/// Reads the burn record `file` into `model` (built from the model's config) under the
/// module's own parameter paths, strictly: a tensor of the module missing from the record
/// ([`WeightsError::MissingKeys`]), a record tensor the module does not have
/// ([`WeightsError::UnexpectedKeys`], e.g. a record of another configuration) or a shape
/// that differs ([`WeightsError::Format`]) is an error naming the file.
pub fn load_burn_record<M: Module>(
    mut model: M,
    file: &Path,
) -> Result<(M, LoadReport), WeightsError> {
    use burn::store::{BurnpackStore, ModuleSnapshot};
    if !file.is_file() {
        return Err(WeightsError::Io {
            path: file.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "burn record not found"),
        });
    }
    let mut store = BurnpackStore::from_file(file).allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| WeightsError::Format {
            path: file.to_path_buf(),
            message: format!("cannot load the burn record: {e}"),
        })?;
    if !result.missing.is_empty() {
        return Err(WeightsError::MissingKeys {
            path: file.to_path_buf(),
            keys: result.missing.into_iter().map(|(k, _)| k).collect(),
        });
    }
    if !result.unused.is_empty() {
        return Err(WeightsError::UnexpectedKeys {
            path: file.to_path_buf(),
            keys: result.unused,
        });
    }
    let report = LoadReport {
        source: file.to_path_buf(),
        loaded: result.applied,
        ..LoadReport::default()
    };
    Ok((model, report))
}

/// What [`load_into`] did with each parameter and each checkpoint key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// The checkpoint file.
    pub source: PathBuf,
    /// Model parameters (checkpoint names) filled from the checkpoint.
    pub loaded: Vec<String>,
    /// Optional model parameters absent from the checkpoint that keep their fresh
    /// initialisation (a missing required tensor is an error).
    pub initialized: Vec<String>,
    /// Checkpoint keys no parameter used.
    pub unexpected: Vec<String>,
    /// Checkpoint buffers that are not parameters, skipped on purpose
    /// (see [`KeyMap::is_known_buffer`]).
    pub skipped_buffers: Vec<String>,
    /// Parameters found under a legacy name: `(checkpoint key, model name)`.
    pub legacy_names: Vec<(String, String)>,
    /// Number of parameters found only after adding or stripping the optional key prefix.
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
                format!(
                    " ({} after adding or stripping the key prefix)",
                    self.prefix_adjusted
                )
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

struct Loader<'a, K: KeyMap + ?Sized> {
    ckpt: &'a Checkpoint,
    keys: &'a K,
    path: Vec<String>,
    used: BTreeSet<String>,
    report: LoadReport,
    missing: Vec<String>,
    errors: Vec<WeightsError>,
}

impl<K: KeyMap + ?Sized> Loader<'_, K> {
    /// Finds the checkpoint key for a parameter's checkpoint name: the name itself, then with
    /// the optional prefix toggled, then the aliases of both. The flag says "via the prefix".
    fn lookup(&self, name: &str) -> Option<(String, bool)> {
        let mut candidates = vec![(name.to_string(), false)];
        if let Some(prefix) = self.keys.optional_prefix() {
            match name.strip_prefix(prefix) {
                Some(stripped) => candidates.push((stripped.to_string(), true)),
                None => candidates.push((format!("{prefix}{name}"), true)),
            }
        }
        let legacy: Vec<_> = candidates
            .iter()
            .filter_map(|(k, p)| self.keys.alias(k).map(|a| (a, *p)))
            .collect();
        candidates.extend(legacy);
        candidates.into_iter().find(|(k, _)| self.ckpt.contains(k))
    }

    fn strip<'k>(&self, key: &'k str) -> &'k str {
        match self.keys.optional_prefix() {
            Some(prefix) => key.strip_prefix(prefix).unwrap_or(key),
            None => key,
        }
    }
}

impl<K: KeyMap + ?Sized> ModuleMapper for Loader<'_, K> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.keys.to_file(&self.path.join("."));
        let Some((key, via_prefix)) = self.lookup(&name) else {
            if self.keys.is_optional(&name) {
                self.report.initialized.push(name);
            } else {
                self.missing.push(name);
            }
            return param;
        };
        let stored = &self.ckpt.tensors[&key];
        self.used.insert(key.clone());
        let expected = param.lazy_shape().to_vec();
        if stored.shape != expected {
            self.errors.push(WeightsError::ShapeMismatch {
                path: self.ckpt.path.clone(),
                key,
                expected,
                found: stored.shape.clone(),
            });
            return param;
        }
        let Some(data) = &stored.data else {
            self.errors.push(WeightsError::UnsupportedDtype {
                path: self.ckpt.path.clone(),
                key,
                dtype: stored.dtype.clone(),
            });
            return param;
        };
        if via_prefix {
            self.report.prefix_adjusted += 1;
        }
        if self.strip(&key) != self.strip(&name) {
            self.report.legacy_names.push((key.clone(), name.clone()));
        }
        self.report.loaded.push(name);
        let tensor = Tensor::<D>::from_data(data.clone(), &param.lazy_device());
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// Loads `ckpt` into `model`, matching every float tensor of the module (parameters and
/// running-state buffers) to a checkpoint key through `keys`.
///
/// Missing optional tensors keep the model's fresh values and are reported; a missing
/// required tensor ([`WeightsError::MissingKeys`], all of them listed), a shape mismatch or a
/// non-float tensor for a parameter is an error naming the file and key. Unused checkpoint
/// keys are reported as [`LoadReport::unexpected`] (or `skipped_buffers`); callers that want
/// strict loading turn them into [`WeightsError::UnexpectedKeys`] (see [`require_exact`]).
pub fn load_into<M: Module, K: KeyMap + ?Sized>(
    model: M,
    ckpt: &Checkpoint,
    keys: &K,
) -> Result<(M, LoadReport), WeightsError> {
    let mut loader = Loader {
        ckpt,
        keys,
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
        return Err(WeightsError::MissingKeys {
            path: ckpt.path.clone(),
            keys: loader.missing,
        });
    }
    let mut report = loader.report;
    for key in ckpt.tensors.keys() {
        if loader.used.contains(key) {
            continue;
        }
        if keys.is_known_buffer(key) {
            report.skipped_buffers.push(key.clone());
        } else {
            report.unexpected.push(key.clone());
        }
    }
    Ok((model, report))
}

/// Turns a report with unexpected keys into [`WeightsError::UnexpectedKeys`].
pub fn require_exact(report: LoadReport) -> Result<LoadReport, WeightsError> {
    if report.unexpected.is_empty() {
        Ok(report)
    } else {
        Err(WeightsError::UnexpectedKeys {
            path: report.source.clone(),
            keys: report.unexpected,
        })
    }
}

/// Collects every float tensor of a module (parameters and running-state buffers) as
/// `(checkpoint name, shape, f32 values)`, in module order. These are effective values
/// ([`Param::val`]), so any reparameterisation or mask applied through the parameter is
/// folded in.
pub fn collect_tensors<M: Module, K: KeyMap + ?Sized>(
    model: &M,
    keys: &K,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Collector<'a, K: ?Sized> {
        keys: &'a K,
        path: Vec<String>,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl<K: KeyMap + ?Sized> ModuleVisitor for Collector<'_, K> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data().convert::<f32>();
            let shape = data.shape().to_vec();
            // `convert::<f32>` just made the element type f32, so this cannot fail.
            let values = data.try_into_vec::<f32>().unwrap_or_default();
            self.out
                .push((self.keys.to_file(&self.path.join(".")), shape, values));
        }
    }
    let mut c = Collector {
        keys,
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

/// The values of one tensor to write with [`write_safetensors`].
#[derive(Debug, Clone, PartialEq)]
pub enum ExportValues {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit integers (e.g. a batch norm's `num_batches_tracked`, shape `[]`).
    I64(Vec<i64>),
}

/// One named tensor to write with [`write_safetensors`].
#[derive(Debug, Clone, PartialEq)]
pub struct ExportTensor {
    /// Checkpoint key.
    pub key: String,
    /// Extents, outermost first (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: ExportValues,
}

impl ExportTensor {
    /// An f32 tensor.
    pub fn f32(key: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> Self {
        Self {
            key: key.into(),
            shape,
            values: ExportValues::F32(values),
        }
    }
}

/// Writes `tensors` to a safetensors file with metadata `format = pt` (so PyTorch tools read
/// it as a state dict). Returns the keys written, in order.
pub fn write_safetensors(
    tensors: &[ExportTensor],
    path: &Path,
) -> Result<Vec<String>, WeightsError> {
    let bytes: Vec<(safetensors::Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|t| match &t.values {
            ExportValues::F32(v) => (
                safetensors::Dtype::F32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            ExportValues::I64(v) => (
                safetensors::Dtype::I64,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        })
        .collect();
    let write_err = |message: String| WeightsError::Write {
        path: path.to_path_buf(),
        message,
    };
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, (dtype, b))| {
            safetensors::tensor::TensorView::new(*dtype, t.shape.clone(), b)
                .map(|v| (t.key.clone(), v))
                .map_err(|e| write_err(format!("tensor `{}`: {e}", t.key)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let keys = views.iter().map(|(k, _)| k.clone()).collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path)
        .map_err(|e| write_err(e.to_string()))?;
    Ok(keys)
}

/// Writes every float tensor of `model` (names through `keys`, f32) to a safetensors file.
/// Returns the keys written.
pub fn export_safetensors<M: Module, K: KeyMap + ?Sized>(
    model: &M,
    keys: &K,
    path: &Path,
) -> Result<Vec<String>, WeightsError> {
    let tensors: Vec<ExportTensor> = collect_tensors(model, keys)
        .into_iter()
        .map(|(k, shape, values)| ExportTensor::f32(k, shape, values))
        .collect();
    write_safetensors(&tensors, path)
}
