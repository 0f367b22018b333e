//! `shears sparsity`: zero fraction per tensor of a weights file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use shears::sparsity::report::SparsityReport;
use shears::train::export::BURN_RECORD;

/// Print the fraction of zeros per tensor and overall.
///
/// Reads dense safetensors files, compressed-tensors `sparse-bitmask` ones (`shears export
/// --format compressed`) and burn records (`model.bpk`, `shears export --format burn`,
/// reported under the burn module's parameter paths) alike.
///
/// Example: `shears sparsity runs/quickstart/model/model.safetensors --json`
#[derive(Debug, Args)]
pub struct SparsityArgs {
    /// A `.safetensors` or `.bpk` file, or a model directory holding `model.safetensors`
    /// (or only `model.bpk`).
    pub file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `shears sparsity`.
pub fn execute(args: SparsityArgs) -> anyhow::Result<()> {
    let file = if args.file.is_dir() {
        let st = args.file.join(shears::export::WEIGHTS_FILE);
        let bpk = args.file.join(BURN_RECORD);
        if !st.exists() && bpk.is_file() {
            bpk
        } else {
            st
        }
    } else {
        args.file.clone()
    };
    let report = if shears_models::weights::is_burn_record(&file) {
        SparsityReport::from_burnpack(&file)
    } else {
        SparsityReport::from_safetensors(&file)
    }
    .with_context(|| format!("cannot report the sparsity of {}", args.file.display()))?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}
