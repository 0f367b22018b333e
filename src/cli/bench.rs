//! `shears bench`: sparse kernels against the dense path, measured in the same run.

use clap::{Args, Subcommand};

/// The benchmarks `shears bench` runs.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// SparseProp linear and conv kernels (forward and backward) against burn dense.
    Sparseprop(SparsepropArgs),
}

/// Options of `shears bench sparseprop`.
#[derive(Debug, Args)]
pub struct SparsepropArgs {
    /// Print rows as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `shears bench`.
pub fn execute(_cmd: BenchCommand) -> anyhow::Result<()> {
    Err(super::not_implemented("bench sparseprop", "SparseProp"))
}
