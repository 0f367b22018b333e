//! `shears export`: a run's model (its end or any checkpoint), or an exported model, in
//! the format another tool loads.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use shears::recipe::Override;
use shears::run_dir::RESOLVED_RECIPE;
use shears::train::export::{ExportFormat, RunPoint, export_model, export_run};

/// Export a run's model, or convert an exported model.
///
/// SOURCE is a run directory (its final model, or with --checkpoint one of its
/// checkpoints) or an exported model directory / weights file (with --format compressed,
/// or --format burn and --recipe).
///
/// Formats: `hf` is the family's own layout (Hugging Face directory for BERT, torch
/// state-dict names for ResNets) with masks folded in; `compressed` stores the sparse
/// weights in compressed-tensors' `sparse-bitmask` layout (vLLM, llm-compressor) and prints
/// the size against dense; `burn` writes a burn record (`model.bpk`) of the shears-models
/// module for burn applications.
///
/// Examples:
///   shears export runs/quickstart --format hf --checkpoint 300 --out exported/
///   shears export runs/quickstart --format compressed --out quickstart-compressed/
///   shears export runs/r20/model --format compressed --out r20-compressed/
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ExportArgs {
    /// A run directory, or an exported model directory or weights file.
    pub source: PathBuf,
    /// What to write.
    #[arg(long, value_enum, default_value = "hf")]
    pub format: Format,
    /// Output directory (default: `<SOURCE>-<format>` beside the source).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A run's checkpoint: `latest` or an optimizer step (default: the final model when
    /// the run finished, else the latest checkpoint).
    #[arg(long, value_name = "latest|STEP")]
    pub checkpoint: Option<String>,
    /// For an exported model and `--format burn`: the recipe that names its family.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Override a recipe variable or key (with --recipe).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<Override>,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The family's own layout (Hugging Face / torch names).
    Hf,
    /// compressed-tensors `sparse-bitmask`.
    Compressed,
    /// A burn record (`model.bpk`).
    Burn,
}

impl Format {
    fn lib(self) -> ExportFormat {
        match self {
            Format::Hf => ExportFormat::Hf,
            Format::Compressed => ExportFormat::Compressed,
            Format::Burn => ExportFormat::Burn,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Hf => "hf",
            Format::Compressed => "compressed",
            Format::Burn => "burn",
        }
    }
}

fn parse_point(arg: Option<&str>) -> anyhow::Result<RunPoint> {
    Ok(match arg {
        None => RunPoint::Default,
        Some("latest") => RunPoint::Latest,
        Some(s) => RunPoint::Step(s.parse().map_err(|_| {
            anyhow::anyhow!("--checkpoint {s}: expected `latest` or an optimizer step")
        })?),
    })
}

fn default_out(source: &Path, format: Format) -> PathBuf {
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    source.with_file_name(format!("{name}-{}", format.name()))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs `shears export`.
pub fn execute(args: ExportArgs) -> anyhow::Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.source, args.format));
    let base = Path::new(".");
    let compressed = if args.source.join(RESOLVED_RECIPE).is_file() {
        if args.recipe.is_some() {
            anyhow::bail!(
                "--recipe: {} is a run directory; its own recipe is used",
                args.source.display()
            );
        }
        let point = parse_point(args.checkpoint.as_deref())?;
        let done = export_run(&args.source, point, args.format.lib(), &out, base)
            .with_context(|| format!("cannot export {}", args.source.display()))?;
        match done.step {
            Some(step) => eprintln!(
                "exported checkpoint step {step} ({})",
                done.source.display()
            ),
            None => eprintln!("exported the final model ({})", done.source.display()),
        }
        done.compressed
    } else {
        if args.checkpoint.is_some() {
            anyhow::bail!(
                "--checkpoint: {} is not a run directory (no {RESOLVED_RECIPE})",
                args.source.display()
            );
        }
        let recipe = match &args.recipe {
            Some(r) => Some(super::load_recipe(r, &args.overrides)?),
            None => None,
        };
        export_model(recipe.as_ref(), &args.source, args.format.lib(), &out, base)
            .with_context(|| format!("cannot export {}", args.source.display()))?
    };
    if let Some(c) = compressed {
        println!(
            "{}: {} weights compressed ({}), global sparsity {:.2} %, {:.2} MiB -> {:.2} MiB ({:.1} % of dense)",
            c.weights.display(),
            c.compressed.len(),
            c.sparsity_structure,
            c.global_sparsity * 100.0,
            mib(c.dense_bytes),
            mib(c.compressed_bytes),
            100.0 * c.compressed_bytes as f64 / c.dense_bytes.max(1) as f64
        );
    }
    println!("{}", out.display());
    Ok(())
}
