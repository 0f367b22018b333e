//! `shears export`: a run's model, from its end or any checkpoint, in the format a user
//! loads elsewhere.
//!
//! * [`ExportFormat::Hf`]: the family's own layout (Hugging Face directory for BERT, torch
//!   state-dict names for ResNets), as `shears run` writes at the end.
//! * [`ExportFormat::Compressed`]: the same, with the sparse weights in compressed-tensors'
//!   `sparse-bitmask` layout ([`crate::export`]).
//! * [`ExportFormat::Burn`]: a burn record (`model.bpk`, burn-store's native format) of
//!   the shears-models module, next to the family's `config.json` (and tokenizer files),
//!   for applications that load it with `burn-store` into the same module types.
//!
//! The source is the run's final model (`RUN/model`) or one of its checkpoints
//! (`RUN/checkpoints/step-N`); the run's resolved recipe names the family, and its data
//! are read (the family's head depends on the task, as in training).
//! Pruned weights are exactly zero in every checkpoint (the optimizer keeps them so), so
//! the masks need no re-application.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Device;

use super::checkpoint::CheckpointStore;
use super::engine::{EngineError, ModelAt, TaskVisitor, dispatch};
use super::task::Task;
use crate::arch::Architecture;
use crate::device::DeviceKind;
use crate::export::{CompressedExport, ExportError, write_compressed};
use crate::recipe::Recipe;
use crate::run_dir::RESOLVED_RECIPE;

/// The burn record file of a `burn` export.
pub use shears_models::weights::BURN_RECORD_FILE as BURN_RECORD;
/// The weights file every family exports.
const WEIGHTS_FILE: &str = "model.safetensors";

/// What `shears export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// The family's layout (`shears run`'s own export).
    Hf,
    /// compressed-tensors' `sparse-bitmask`.
    Compressed,
    /// A burn record of the module.
    Burn,
}

/// Which of a run's models to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPoint {
    /// The final model when the run finished, else the latest checkpoint.
    Default,
    /// The latest checkpoint.
    Latest,
    /// The checkpoint of this optimizer step.
    Step(u64),
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOutcome {
    /// The directory written.
    pub dir: PathBuf,
    /// What was exported: `RUN/model` or `RUN/checkpoints/step-N`.
    pub source: PathBuf,
    /// The optimizer step of the checkpoint exported (`None` for the final model).
    pub step: Option<u64>,
    /// For `compressed`: what was compressed and the sizes.
    pub compressed: Option<CompressedExport>,
}

/// The model a run holds at `point`: (the path, whether it is a checkpoint, its step).
fn pick_source(run: &Path, point: RunPoint) -> Result<(PathBuf, Option<u64>), EngineError> {
    let final_model = run.join("model");
    let latest = || -> Result<(PathBuf, Option<u64>), EngineError> {
        match CheckpointStore::new(run, usize::MAX).latest()? {
            Some((dir, state)) => Ok((dir, Some(state.step))),
            None => Err(EngineError::Config {
                field: "--checkpoint",
                message: format!("{} has no checkpoint", run.display()),
            }),
        }
    };
    match point {
        RunPoint::Default if final_model.join(WEIGHTS_FILE).is_file() => Ok((final_model, None)),
        RunPoint::Default | RunPoint::Latest => latest(),
        RunPoint::Step(step) => {
            let dir = run.join("checkpoints").join(format!("step-{step:09}"));
            if dir.join(WEIGHTS_FILE).is_file() {
                return Ok((dir, Some(step)));
            }
            let mut have: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter_map(|e| {
                            e.file_name()
                                .to_str()?
                                .strip_prefix("step-")
                                .and_then(|s| s.parse::<u64>().ok())
                                .map(|s| s.to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            have.sort_by_key(|s| s.parse::<u64>().unwrap_or(0));
            Err(EngineError::Config {
                field: "--checkpoint",
                message: format!(
                    "{} has no checkpoint of step {step} (checkpoints: {})",
                    run.display(),
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                ),
            })
        }
    }
}

/// Exports the model of run directory `run` at `point` as `format` into `out`; relative
/// paths of the run's recipe resolve against `base_dir`.
pub fn export_run(
    run: &Path,
    point: RunPoint,
    format: ExportFormat,
    out: &Path,
    base_dir: &Path,
) -> Result<ExportOutcome, EngineError> {
    let recipe_file = run.join(RESOLVED_RECIPE);
    if !recipe_file.is_file() {
        return Err(EngineError::Config {
            field: "RUN",
            message: format!(
                "{} is not a run directory (no {RESOLVED_RECIPE})",
                run.display()
            ),
        });
    }
    let recipe = Recipe::load(&recipe_file, &[]).map_err(|e| EngineError::Config {
        field: "RUN",
        message: e.to_string(),
    })?;
    let (source, step) = pick_source(run, point)?;
    let checkpoint = step.is_some();
    let at = if checkpoint {
        ModelAt::Recipe
    } else {
        ModelAt::Export(&source)
    };
    let compressed = write_model(&recipe, base_dir, at, &source, checkpoint, format, out)?;
    Ok(ExportOutcome {
        dir: out.to_path_buf(),
        source,
        step,
        compressed,
    })
}

/// Exports an exported model directory (or weights file) `model` as `format`: `compressed`
/// needs nothing else; `burn` needs the `recipe` that names the family (`hf` is refused:
/// the directory is in the family's layout already).
pub fn export_model(
    recipe: Option<&Recipe>,
    model: &Path,
    format: ExportFormat,
    out: &Path,
    base_dir: &Path,
) -> Result<Option<CompressedExport>, EngineError> {
    match format {
        ExportFormat::Compressed => Ok(Some(write_compressed(
            model,
            out,
            crate::export::DEFAULT_MIN_SPARSITY,
        )?)),
        ExportFormat::Hf => Err(EngineError::Config {
            field: "--format",
            message: format!(
                "{} is an exported model already; `hf` exports a run (give its run directory), or choose `compressed` or `burn`",
                model.display()
            ),
        }),
        ExportFormat::Burn => write_model(
            recipe.ok_or_else(|| EngineError::Config {
                field: "--recipe",
                message: format!(
                    "converting {} to a burn record needs the recipe that names its family",
                    model.display()
                ),
            })?,
            base_dir,
            ModelAt::Export(model),
            model,
            false,
            format,
            out,
        ),
    }
}

fn write_model(
    recipe: &Recipe,
    base_dir: &Path,
    at: ModelAt<'_>,
    source: &Path,
    checkpoint: bool,
    format: ExportFormat,
    out: &Path,
) -> Result<Option<CompressedExport>, EngineError> {
    dispatch(
        recipe,
        base_dir,
        at,
        Writer {
            source,
            checkpoint,
            format,
            out,
            device: DeviceKind::Flex.device()?,
        },
    )
}

struct Writer<'a> {
    source: &'a Path,
    checkpoint: bool,
    format: ExportFormat,
    out: &'a Path,
    device: Device,
}

impl TaskVisitor for Writer<'_> {
    type Output = Option<CompressedExport>;

    fn visit<A: Architecture, T: Task<Model = A::Model>>(
        self,
        arch: A,
        _task: T,
    ) -> Result<Self::Output, EngineError> {
        let model = if self.checkpoint {
            let fresh = arch.load_student(&self.device)?;
            arch.load_weights(fresh, &self.source.join(WEIGHTS_FILE))?
        } else {
            arch.load(&self.source.display().to_string(), &self.device)?
        };
        match self.format {
            ExportFormat::Hf => {
                arch.export(&model, self.out)?;
                Ok(None)
            }
            ExportFormat::Compressed => {
                let staging = staging_dir(self.out);
                arch.export(&model, &staging)?;
                let done =
                    write_compressed(&staging, self.out, crate::export::DEFAULT_MIN_SPARSITY);
                let _ = std::fs::remove_dir_all(&staging);
                Ok(Some(done?))
            }
            ExportFormat::Burn => {
                arch.export(&model, self.out)?;
                let weights = self.out.join(WEIGHTS_FILE);
                let record = self.out.join(BURN_RECORD);
                let mut store = BurnpackStore::from_file(&record).overwrite(true);
                model
                    .valid()
                    .save_into(&mut store)
                    .map_err(|e| ExportError::Input {
                        path: record.clone(),
                        message: format!("cannot write the burn record: {e}"),
                    })?;
                std::fs::remove_file(&weights).map_err(|source| EngineError::Io {
                    path: weights,
                    source,
                })?;
                Ok(None)
            }
        }
    }
}

/// A sibling of `out` to stage the dense export in.
fn staging_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    out.with_file_name(format!(".{name}.dense-staging"))
}
