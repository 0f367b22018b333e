//! `shears run`: run a recipe end to end.

use std::path::PathBuf;

use clap::Args;

/// Run a recipe end to end.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The recipe file (YAML).
    pub recipe: PathBuf,
}

/// Runs `shears run`.
pub fn execute(_args: RunArgs) -> anyhow::Result<()> {
    Err(super::not_implemented("run", "training engine"))
}
