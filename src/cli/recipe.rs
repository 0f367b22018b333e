//! `shears recipe`: inspect recipes without running them.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use shears::recipe::{Override, Recipe, check};

/// Recipe subcommands.
#[derive(Debug, Subcommand)]
pub enum RecipeCommand {
    /// Dry run: resolve and validate a recipe, list the parameters each modifier
    /// matches in the model (when its weights are on disk) and the sparsity schedule.
    ///
    /// Examples:
    ///   shears recipe check recipes/quickstart.yaml
    ///   shears recipe check recipes/minilm-movies-gmp.yaml --set final_sparsity=0.9 --steps-per-epoch 298
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
    /// Optimizer steps per epoch, to show the schedule by step.
    #[arg(long)]
    pub steps_per_epoch: Option<u64>,
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
                        let report = check::check(&recipe, args.steps_per_epoch);
                        if !args.quiet {
                            println!("{}", recipe.resolved_yaml());
                            print!("{}", report.render());
                        } else {
                            for w in &report.warnings {
                                println!("warning: {w}");
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
