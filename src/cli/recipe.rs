//! `shears recipe`: inspect recipes.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Recipe subcommands.
#[derive(Debug, Subcommand)]
pub enum RecipeCommand {
    /// Dry run: resolve, validate and explain a recipe.
    Check(CheckArgs),
}

/// Options of `shears recipe check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The recipe file (YAML).
    pub recipe: PathBuf,
}

/// Runs `shears recipe`.
pub fn execute(_cmd: RecipeCommand) -> anyhow::Result<()> {
    Err(super::not_implemented("recipe check", "foundation"))
}
