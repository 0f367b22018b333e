//! `shears sparsity`: zero fraction per tensor of a safetensors file.

use std::path::PathBuf;

use clap::Args;

/// Print the fraction of zeros per tensor and overall.
///
/// Example: `shears sparsity runs/quickstart/model/model.safetensors --json`
#[derive(Debug, Args)]
pub struct SparsityArgs {
    /// A `.safetensors` file.
    pub file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `shears sparsity`.
pub fn execute(_args: SparsityArgs) -> anyhow::Result<()> {
    Err(super::not_implemented("sparsity", "sparsity core"))
}
