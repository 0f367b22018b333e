//! `shears eval`: evaluate an exported model on a recipe's task.

use std::path::PathBuf;

use clap::Args;

/// Evaluate an exported model on the dev split of a recipe's task.
///
/// Example: `shears eval --model runs/quickstart/model --recipe recipes/quickstart.yaml`
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Exported model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Recipe whose task and data are used.
    #[arg(long)]
    pub recipe: PathBuf,
}

/// Runs `shears eval`.
pub fn execute(_args: EvalArgs) -> anyhow::Result<()> {
    Err(super::not_implemented("eval", "training engine"))
}
