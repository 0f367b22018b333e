//! `shears run`: run a recipe end to end.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use shears::device::DeviceKind;
use shears::recipe::{Override, Recipe};

/// Run a recipe end to end: train, prune, evaluate, export.
///
/// The run directory (default `runs/<recipe-name>-<timestamp>`) receives the resolved
/// recipe, logs, checkpoints, `report.json` and the exported model.
///
/// Examples:
///   shears run recipes/quickstart.yaml
///   shears run recipes/minilm-movies-gmp.yaml --set final_sparsity=0.9 --out runs/movies-90
///   shears run recipes/minilm-movies-gmp.yaml --out runs/movies-90 --resume
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// The recipe file (YAML).
    pub recipe: PathBuf,
    /// Output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where to compute (overrides the recipe's `device`).
    #[arg(long, value_enum)]
    pub device: Option<DeviceKind>,
    /// Override a variable or a section key, e.g. `--set final_sparsity=0.9` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<Override>,
    /// Continue the run in `--out` from its latest checkpoint.
    #[arg(long, requires = "out")]
    pub resume: bool,
}

/// Runs `shears run`.
pub fn execute(args: RunArgs) -> anyhow::Result<()> {
    let recipe = Recipe::load(&args.recipe, &args.overrides)?;
    let device = args.device.or(recipe.device).unwrap_or_default();
    device
        .device()
        .with_context(|| format!("--device {device}"))?;
    // The recipe is valid and the device exists; the training engine is the next piece.
    Err(super::not_implemented("run", "training engine")).with_context(|| {
        format!(
            "{} is valid (check it with `shears recipe check`)",
            args.recipe.display()
        )
    })
}
