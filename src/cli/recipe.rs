//! `shears recipe`: inspect recipes without running them.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::path::Path;

use shears::device::DeviceSpec;
use shears::recipe::{Override, Recipe, check};
use shears::run_dir::RunDir;
use shears::train::engine::{EngineOptions, RunEnd, run, step_plan};
use shears::train::progress::format_duration;

/// Recipe subcommands.
#[derive(Debug, Subcommand)]
pub enum RecipeCommand {
    /// Dry run: resolve and validate a recipe, list the parameters each modifier
    /// matches in the model (when its weights are on disk) and the sparsity schedule.
    ///
    /// Examples:
    ///   shears recipe check recipes/quickstart.yaml
    ///   shears recipe check recipes/minilm-movies-gmp.yaml --set final_sparsity=0.9 --steps-per-epoch 298
    ///   shears recipe check recipes/quickstart.yaml --quiet --estimate
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),
}

/// Options of `shears recipe check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The recipe files (YAML, or Markdown with YAML front matter).
    #[arg(required = true)]
    pub recipes: Vec<PathBuf>,
    /// Override a variable or a section key, e.g. `--set final_sparsity=0.9`,
    /// `--set training.seed=3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<Override>,
    /// Optimizer steps per epoch, to show the schedule by step (default: counted from the
    /// recipe's training data when it can be read).
    #[arg(long)]
    pub steps_per_epoch: Option<u64>,
    /// Do not read the training data (no step count; models on the Hub are never
    /// downloaded for it).
    #[arg(long, conflicts_with = "estimate")]
    pub no_data: bool,
    /// Time this many optimizer steps of the real run (default 5, in a scratch directory
    /// that is removed) and estimate the training time of the whole run.
    #[arg(long, value_name = "STEPS", num_args = 0..=1, default_missing_value = "5")]
    pub estimate: Option<u64>,
    /// Where to time the steps (default: the recipe's `device`, else flex).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Print only the verdict and warnings, not the resolved recipe.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `shears recipe`.
pub fn execute(cmd: RecipeCommand) -> anyhow::Result<()> {
    match cmd {
        RecipeCommand::Check(args) => {
            let mut failed = 0;
            for path in &args.recipes {
                match Recipe::load(path, &args.overrides) {
                    Ok(recipe) => {
                        let hub = recipe
                            .model
                            .as_ref()
                            .and_then(|m| m.source.as_deref())
                            .filter(|s| s.starts_with("hf:"));
                        let counted = if args.no_data {
                            None
                        } else if let Some(source) = hub {
                            // Counting needs the tokenizer: a dry run does not download.
                            println!(
                                "steps: not counted (`{source}` is on the Hugging Face Hub and \
                                 `recipe check` downloads nothing; pass --steps-per-epoch)"
                            );
                            None
                        } else {
                            match step_plan(&recipe, Path::new(".")) {
                                Ok(plan) => Some(plan),
                                Err(e) => {
                                    println!("steps: not counted (the data cannot be read: {e})");
                                    None
                                }
                            }
                        };
                        let spe = args.steps_per_epoch.or(counted.map(|p| p.steps_per_epoch));
                        let report = check::check(&recipe, spe);
                        if !args.quiet {
                            println!("{}", recipe.resolved_yaml());
                            print!("{}", report.render());
                        } else {
                            for w in &report.warnings {
                                println!("warning: {w}");
                            }
                        }
                        if let Some(p) = counted {
                            println!(
                                "steps: {} training examples, {} optimizer steps per epoch, {} in all",
                                p.train_examples, p.steps_per_epoch, p.total_steps
                            );
                            if let Some(steps) = args.estimate {
                                estimate(&recipe, path, steps, p.total_steps, args.device)?;
                            }
                        }
                        println!(
                            "{}: ok ({} modifiers, {} warnings)",
                            path.display(),
                            recipe.modifiers.len(),
                            report.warnings.len()
                        );
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                return Err(anyhow::anyhow!(
                    "{failed} of {} recipes failed the check",
                    args.recipes.len()
                ))
                .context("recipe check");
            }
            Ok(())
        }
    }
}

/// Runs `steps` optimizer steps of `recipe` in a scratch directory (removed afterwards) and
/// prints the training time of all `total` steps at the measured rate.
fn estimate(
    recipe: &Recipe,
    path: &Path,
    steps: u64,
    total: u64,
    device: Option<DeviceSpec>,
) -> anyhow::Result<()> {
    if steps == 0 {
        anyhow::bail!("--estimate: the number of steps to time must be at least 1");
    }
    let device = device.or(recipe.device).unwrap_or_default();
    let scratch = std::env::temp_dir().join(format!("shears-estimate-{}", std::process::id()));
    let result = (|| {
        let dir = RunDir::prepare(scratch.clone(), recipe, false)?;
        let opts = EngineOptions {
            run_dir: dir.path,
            device,
            resume: false,
            base_dir: PathBuf::from("."),
            stop_after: Some(steps.min(total.saturating_sub(1)).max(1)),
            interrupt: None,
        };
        anyhow::Ok(run(recipe, &opts)?)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    let timed = result.with_context(|| format!("--estimate on {}", path.display()))?;
    match timed {
        RunEnd::Stopped {
            step, step_seconds, ..
        } => println!(
            "estimate: {:.3} s per optimizer step on {device} ({step} steps timed, the first left out) \
             -> {total} steps take about {} (evaluations and checkpoints not included)",
            step_seconds,
            format_duration(step_seconds * total as f64)
        ),
        RunEnd::Finished(_) => println!("estimate: the whole run took less than the timed steps"),
    }
    Ok(())
}
