//! `shears export`: checkpoint to Hugging Face layout.

use std::path::PathBuf;

use clap::Args;

/// Export a run's checkpoint to Hugging Face layout (config.json, model.safetensors,
/// tokenizer files), with masks folded into the weights.
///
/// Example: `shears export runs/quickstart --out exported/`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Run directory holding the checkpoint.
    pub run: PathBuf,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `shears export`.
pub fn execute(_args: ExportArgs) -> anyhow::Result<()> {
    Err(super::not_implemented("export", "training engine"))
}
