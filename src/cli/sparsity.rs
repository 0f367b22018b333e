//! `shears sparsity`: zero fraction per tensor of a safetensors file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use shears::sparsity::report::SparsityReport;

/// Print the fraction of zeros per tensor and overall.
///
/// Reads dense safetensors files and compressed-tensors `sparse-bitmask` ones (`shears
/// export --format compressed`) alike.
///
/// Example: `shears sparsity runs/quickstart/model/model.safetensors --json`
#[derive(Debug, Args)]
pub struct SparsityArgs {
    /// A `.safetensors` file, or a model directory holding `model.safetensors`.
    pub file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `shears sparsity`.
pub fn execute(args: SparsityArgs) -> anyhow::Result<()> {
    let file = if args.file.is_dir() {
        args.file.join(shears::export::WEIGHTS_FILE)
    } else {
        args.file.clone()
    };
    let report = SparsityReport::from_safetensors(&file)
        .with_context(|| format!("cannot report the sparsity of {}", args.file.display()))?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}
