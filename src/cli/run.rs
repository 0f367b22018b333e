//! `shears run`: run a recipe end to end.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use shears::device::DeviceKind;
use shears::recipe::Override;
use shears::run_dir::RunDir;
use shears::train::engine::{EngineOptions, RunEnd, fmt_metrics, run};
use shears::train::progress::format_duration;

/// Run a recipe end to end: train, prune, evaluate, export.
///
/// The run directory (default: the recipe's `output.dir`, else
/// `runs/<recipe-name>-<timestamp>`) receives the resolved recipe, `train.log`,
/// `history.json` (every evaluation), checkpoints, `report.json`, `sparsity.txt` and the
/// exported model (`model/`, Hugging Face layout with the tokenizer).
///
/// Examples:
///   shears run recipes/quickstart.yaml
///   shears run recipes/minilm-movies-gmp.yaml --set final_sparsity=0.9 --out runs/movies-90
///   shears run recipes/minilm-movies-gmp.yaml --out runs/movies-90 --resume
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// The recipe file (YAML).
    pub recipe: PathBuf,
    /// Output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where to compute (overrides the recipe's `device`).
    #[arg(long, value_enum)]
    pub device: Option<DeviceKind>,
    /// Override a variable or a section key, e.g. `--set final_sparsity=0.9` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<Override>,
    /// Continue the run in `--out` (or the recipe's `output.dir`) from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many optimizer steps (with a checkpoint); continue later with `--resume`.
    #[arg(long, value_name = "STEPS")]
    pub stop_after: Option<u64>,
}

/// Runs `shears run`.
pub fn execute(args: RunArgs) -> anyhow::Result<()> {
    let recipe = super::load_recipe(&args.recipe, &args.overrides)?;
    let device = args.device.or(recipe.device).unwrap_or_default();
    device
        .device()
        .with_context(|| format!("--device {device}"))?;
    if args.resume
        && args.out.is_none()
        && recipe
            .output
            .as_ref()
            .and_then(|o| o.dir.as_ref())
            .is_none()
    {
        anyhow::bail!(
            "--resume needs --out DIR (or the recipe's output.dir) to know which run to continue"
        );
    }
    let dir = RunDir::choose(&recipe, args.out.as_deref());
    let dir = RunDir::prepare(dir, &recipe, args.resume)?;
    eprintln!("run directory: {}", dir.path.display());
    let opts = EngineOptions {
        run_dir: dir.path.clone(),
        device,
        resume: args.resume,
        base_dir: PathBuf::from("."),
        stop_after: args.stop_after,
    };
    let out = match run(&recipe, &opts)
        .with_context(|| format!("run of {} failed", args.recipe.display()))?
    {
        RunEnd::Finished(out) => out,
        RunEnd::Stopped { step, total } => {
            println!(
                "stopped at step {step}/{total}; continue with: shears run {} --out {} --resume",
                args.recipe.display(),
                dir.path.display()
            );
            return Ok(());
        }
    };
    let main = &out.main_metric;
    let pick = |m: &shears::train::task::Metrics| m.get(main).copied().unwrap_or(f64::NAN);
    println!("{}", out.sparsity_table.trim_end());
    println!();
    if let Some(dense) = &out.dense {
        println!(
            "dense  (step {:>6}): {main} {:.4}   [{}]",
            dense.step,
            pick(&dense.metrics),
            fmt_metrics(&dense.metrics)
        );
        println!(
            "sparse (step {:>6}): {main} {:.4}   [{}] at {:.1}% sparsity (target {:.1}%)",
            out.last.step,
            pick(&out.last.metrics),
            fmt_metrics(&out.last.metrics),
            out.report.sparsity.global * 100.0,
            out.report.sparsity.target * 100.0
        );
        println!(
            "change: {:+.2} points",
            (pick(&out.last.metrics) - pick(&dense.metrics)) * 100.0
        );
    } else {
        println!(
            "final (step {}): {}",
            out.last.step,
            fmt_metrics(&out.last.metrics)
        );
    }
    println!(
        "{} steps in {}; report: {}",
        out.report.steps,
        format_duration(out.report.wall_seconds),
        dir.path.join("report.json").display()
    );
    if let Some(m) = &out.model_dir {
        println!("model: {}", m.display());
    }
    Ok(())
}
