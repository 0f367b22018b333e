//! `shears eval`: evaluate an exported model on a recipe's task.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use shears::device::DeviceSpec;
use shears::recipe::Override;
use shears::train::engine::evaluate_model;

/// Evaluate an exported model on the dev split of a recipe's task.
///
/// The recipe supplies the task, the data files, the dev split and `max_seq_length`; the
/// model directory (config.json, model.safetensors, tokenizer) supplies the weights.
/// Prints the metrics as JSON. Layers of a pruned model at least
/// `training.sparseprop_min_sparsity` sparse run the SparseProp kernels as in training
/// (`training.sparseprop`, default `auto`: on CPU devices); `--set training.sparseprop=off`
/// keeps them dense.
///
/// Example: `shears eval --model runs/quickstart/model --recipe recipes/quickstart.yaml`
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct EvalArgs {
    /// Exported model directory (a run's `model/`, an HF directory, a burn record directory
    /// from `shears export --format burn`), or a weights file (`*.safetensors`, `*.pth`,
    /// `*.bpk`) of an image model.
    #[arg(long)]
    pub model: PathBuf,
    /// Recipe whose task and data are used.
    #[arg(long)]
    pub recipe: PathBuf,
    /// Override a variable or a section key (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<Override>,
    /// Where to compute: flex, ndarray, wgpu[:N] or cuda[:N] (overrides the recipe's `device`).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
}

/// Runs `shears eval`.
pub fn execute(args: EvalArgs) -> anyhow::Result<()> {
    let recipe = super::load_recipe(&args.recipe, &args.overrides)?;
    let device = args.device.or(recipe.device).unwrap_or_default();
    let (metrics, n) = evaluate_model(&recipe, &args.model, device, std::path::Path::new("."))
        .with_context(|| format!("cannot evaluate {}", args.model.display()))?;
    let out = serde_json::json!({
        "model": args.model.display().to_string(),
        "task": recipe.data.as_ref().map(|d| d.task.to_string()),
        "examples": n,
        "metrics": metrics,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
