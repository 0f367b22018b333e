//! `shears sparsity`: zero fraction per tensor of a safetensors file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use shears::sparsity::report::SparsityReport;

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
pub fn execute(args: SparsityArgs) -> anyhow::Result<()> {
    let report = SparsityReport::from_safetensors(&args.file)
        .with_context(|| format!("cannot report the sparsity of {}", args.file.display()))?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}
