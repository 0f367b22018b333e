//! Sparsity reports: per parameter and overall, as a struct, a table and JSON.
//!
//! A report counts exact zeros (`0.0` and `-0.0`) in the stored values. When masks are
//! given it also shows each mask's sparsity and the totals over the masked parameters,
//! next to the current target, so a schedule that does not do what it should is visible.

use std::fmt::Write as _;
use std::path::Path;

use burn::module::Module;
use safetensors::tensor::{Dtype, SafeTensors};
use serde::Serialize;

use super::mask::{MaskError, MaskSet, ParamValues, read_values};
use super::params::{ParamNaming, list_params};

/// Zero counts of one parameter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamSparsity {
    /// The parameter name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Number of elements.
    pub numel: usize,
    /// Number of elements equal to zero.
    pub zeros: usize,
    /// `zeros / numel` (`0` for an empty tensor).
    pub sparsity: f64,
    /// The sparsity of its mask, when it has one.
    pub mask_sparsity: Option<f64>,
}

/// Totals over a group of parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Totals {
    /// Number of elements.
    pub numel: usize,
    /// Number of zeros.
    pub zeros: usize,
    /// `zeros / numel` (`0` when empty).
    pub sparsity: f64,
}

impl Totals {
    fn of<'a>(params: impl Iterator<Item = &'a ParamSparsity>) -> Self {
        let (numel, zeros) = params.fold((0, 0), |(n, z), p| (n + p.numel, z + p.zeros));
        Self {
            numel,
            zeros,
            sparsity: ratio(zeros, numel),
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Per-parameter and overall sparsity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SparsityReport {
    /// One row per float parameter, in model (or file) order.
    pub params: Vec<ParamSparsity>,
    /// Over every listed parameter.
    pub overall: Totals,
    /// Over the parameters with at least two dimensions (the usual prunable set).
    pub prunable: Totals,
    /// Over the parameters that have masks (`None` without masks).
    pub masked: Option<Totals>,
    /// The current sparsity target, when known.
    pub target: Option<f64>,
    /// Tensors not counted (not floating point), by name.
    pub skipped: Vec<String>,
}

/// Errors building a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Values could not be read from the model.
    #[error(transparent)]
    Mask(#[from] MaskError),
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid burn record.
    #[error("{path}: not a valid burn record (burnpack): {message}")]
    Burnpack {
        /// The file.
        path: String,
        /// The reader's message.
        message: String,
    },
    /// The file is not valid safetensors.
    #[error("{path}: not a valid safetensors file: {message}")]
    Format {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
}

impl SparsityReport {
    /// A report from explicit values; `masks` adds mask sparsities and masked totals.
    pub fn from_values(
        values: &[ParamValues],
        masks: Option<&MaskSet>,
        target: Option<f64>,
    ) -> Self {
        let params = values
            .iter()
            .map(|p| {
                let zeros = p.values.iter().filter(|v| **v == 0.0).count();
                ParamSparsity {
                    name: p.info.name.clone(),
                    shape: p.info.shape.clone(),
                    numel: p.values.len(),
                    zeros,
                    sparsity: ratio(zeros, p.values.len()),
                    mask_sparsity: masks
                        .and_then(|m| m.get(&p.info.name))
                        .map(|m| m.sparsity()),
                }
            })
            .collect();
        Self::from_rows(params, masks.is_some(), target, Vec::new())
    }

    fn from_rows(
        params: Vec<ParamSparsity>,
        with_masks: bool,
        target: Option<f64>,
        skipped: Vec<String>,
    ) -> Self {
        Self {
            overall: Totals::of(params.iter()),
            prunable: Totals::of(params.iter().filter(|p| p.shape.len() >= 2)),
            masked: with_masks
                .then(|| Totals::of(params.iter().filter(|p| p.mask_sparsity.is_some()))),
            params,
            target,
            skipped,
        }
    }

    /// A report of every float parameter of `module`.
    pub fn from_module<M: Module>(
        module: &M,
        naming: &dyn ParamNaming,
        masks: Option<&MaskSet>,
        target: Option<f64>,
    ) -> Result<Self, ReportError> {
        let params = list_params(module, naming);
        let values = read_values(module, naming, &params)?;
        Ok(Self::from_values(&values, masks, target))
    }

    /// A report of every floating-point tensor of a safetensors file.
    pub fn from_safetensors(path: &Path) -> Result<Self, ReportError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ReportError::Io {
            path: name.clone(),
            source,
        })?;
        Self::from_safetensors_bytes(&bytes, &name)
    }

    /// A report of every floating-point tensor of a burn record (`model.bpk`, burn-store's
    /// Burnpack format, as `shears export --format burn` writes), under the module's own
    /// parameter paths.
    pub fn from_burnpack(path: &Path) -> Result<Self, ReportError> {
        use burn::tensor::DType;
        let name = path.display().to_string();
        let format = |e: burn_pack::Error| ReportError::Burnpack {
            path: name.clone(),
            message: e.to_string(),
        };
        // The reader's own message would not say which I/O error it met.
        let io = |source| ReportError::Io {
            path: name.clone(),
            source,
        };
        if std::fs::metadata(path).map_err(io)?.is_dir() {
            return Err(io(std::io::ErrorKind::IsADirectory.into()));
        }
        let mut tensors = burn_pack::Reader::from_file(path)
            .and_then(burn_pack::Reader::into_tensors)
            .map_err(format)?;
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        let mut params = Vec::new();
        let mut skipped = Vec::new();
        for t in tensors {
            let (tname, dtype, shape, _, bytes) = t.into_parts().map_err(format)?;
            let width = match dtype {
                DType::F64 => 8,
                DType::F32 | DType::Flex32 => 4,
                DType::F16 | DType::BF16 => 2,
                _ => {
                    skipped.push(tname);
                    continue;
                }
            };
            params.push(float_row(tname, shape.as_slice(), width, &bytes));
        }
        Ok(Self::from_rows(params, false, None, skipped))
    }

    /// A report of every floating-point tensor of safetensors `bytes` (`source_name`
    /// names them in errors).
    /// Files in compressed-tensors' `sparse-bitmask` layout are read back dense first.
    pub fn from_safetensors_bytes(bytes: &[u8], source_name: &str) -> Result<Self, ReportError> {
        use shears_models::compressed;
        let format = |message: String| ReportError::Format {
            path: source_name.to_string(),
            message,
        };
        let st = SafeTensors::deserialize(bytes).map_err(|e| format(e.to_string()))?;
        if compressed::is_compressed(st.names().into_iter()) {
            let dense = compressed::read_all(bytes)
                .map_err(|e| format(e.to_string()))
                .and_then(|t| compressed::decompress(t).map_err(|e| format(e.to_string())))
                .and_then(|t| compressed::write_all(&t, None).map_err(|e| format(e.to_string())))?;
            return Self::from_safetensors_bytes(&dense, source_name);
        }
        // Name order: safetensors files do not keep the writer's order.
        let mut entries: Vec<_> = st.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut params = Vec::new();
        let mut skipped = Vec::new();
        for (name, view) in entries {
            let width = match view.dtype() {
                Dtype::F64 => 8,
                Dtype::F32 => 4,
                Dtype::F16 | Dtype::BF16 => 2,
                Dtype::F8_E4M3 | Dtype::F8_E5M2 => 1,
                _ => {
                    skipped.push(name.to_string());
                    continue;
                }
            };
            params.push(float_row(
                name.to_string(),
                view.shape(),
                width,
                view.data(),
            ));
        }
        Ok(Self::from_rows(params, false, None, skipped))
    }

    /// A fixed-width table for humans.
    pub fn to_table(&self) -> String {
        let width = self
            .params
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(0)
            .max(28);
        let with_masks = self.masked.is_some();
        let mut out = String::new();
        let _ = write!(
            out,
            "{:<width$}  {:>18}  {:>11}  {:>11}  {:>9}",
            "parameter", "shape", "numel", "zeros", "sparsity"
        );
        if with_masks {
            let _ = write!(out, "  {:>9}", "mask");
        }
        out.push('\n');
        for p in &self.params {
            let shape = format!("{:?}", p.shape);
            let _ = write!(
                out,
                "{:<width$}  {:>18}  {:>11}  {:>11}  {:>8.2}%",
                p.name,
                shape,
                p.numel,
                p.zeros,
                100.0 * p.sparsity
            );
            if with_masks {
                match p.mask_sparsity {
                    Some(s) => {
                        let _ = write!(out, "  {:>8.2}%", 100.0 * s);
                    }
                    None => {
                        let _ = write!(out, "  {:>9}", "-");
                    }
                }
            }
            out.push('\n');
        }
        let mut total = |label: &str, t: &Totals| {
            let _ = writeln!(
                out,
                "{:<width$}  {:>18}  {:>11}  {:>11}  {:>8.2}%",
                label,
                "",
                t.numel,
                t.zeros,
                100.0 * t.sparsity
            );
        };
        total("overall", &self.overall);
        total("overall (>= 2 dims)", &self.prunable);
        if let Some(m) = &self.masked {
            total("masked parameters", m);
        }
        if let Some(t) = self.target {
            let _ = writeln!(out, "target sparsity: {:.2}%", 100.0 * t);
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(
                out,
                "not counted (not floating point): {}",
                self.skipped.join(", ")
            );
        }
        out
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }
}

/// Counts little-endian words of `N` bytes whose bits under `magnitude` are all zero.
/// The row of a tensor whose `data` holds little-endian floats of `width` bytes (8, 4, 2
/// or 1); `-0.0` counts as zero.
fn float_row(name: String, shape: &[usize], width: usize, data: &[u8]) -> ParamSparsity {
    let zeros = match width {
        8 => count_zero_words::<8>(data, 0x7fff_ffff_ffff_ffff),
        4 => count_zero_words::<4>(data, 0x7fff_ffff),
        2 => count_zero_words::<2>(data, 0x7fff),
        _ => count_zero_words::<1>(data, 0x7f),
    };
    let numel: usize = shape.iter().product();
    ParamSparsity {
        name,
        shape: shape.to_vec(),
        numel,
        zeros,
        sparsity: ratio(zeros, numel),
        mask_sparsity: None,
    }
}

fn count_zero_words<const N: usize>(data: &[u8], magnitude: u64) -> usize {
    data.chunks_exact(N)
        .filter(|w| {
            let mut bits = 0u64;
            for (i, b) in w.iter().enumerate() {
                bits |= (*b as u64) << (8 * i);
            }
            bits & magnitude == 0
        })
        .count()
}
