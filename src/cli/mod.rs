//! Command-line interface: one module per subcommand, each with its own clap `Args`
//! and an `execute` function. Errors are reported with their full cause chain and a
//! non-zero exit code; nothing here panics on bad input.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_infer;
mod bench_train;
mod eval;
mod export;
mod infer;
mod plot;
mod prune;
mod recipe;
mod run;
mod sparsity;

/// Make neural networks sparse and keep them accurate.
///
/// shears runs SparseML-style recipes (gradual magnitude pruning, distillation, LR
/// schedules) on burn models, on CPU (Flex, NdArray) or GPU (wgpu, CUDA).
#[derive(Debug, Parser)]
#[command(name = "shears", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `shears`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a recipe end to end (training, pruning, evaluation, export).
    Run(run::RunArgs),
    /// Inspect recipes without running them.
    #[command(subcommand)]
    Recipe(recipe::RecipeCommand),
    /// Run a model on JSONL inputs (embeddings, class logits, QA span logits).
    Infer(infer::InferArgs),
    /// Evaluate an exported model on a recipe's task.
    Eval(eval::EvalArgs),
    /// Print the fraction of zeros per tensor of a safetensors file.
    Sparsity(sparsity::SparsityArgs),
    /// Prune a trained model once (magnitude, global or uniform, N:M), re-calibrate
    /// BatchNorm, and evaluate each level.
    Prune(prune::PruneArgs),
    /// Export a run or a model: Hugging Face layout, compressed-tensors or a burn record.
    Export(export::ExportArgs),
    /// Overlay the curves of runs and one-shot sweeps in one SVG chart.
    Plot(plot::PlotArgs),
    /// Measure sparse kernels against the dense path on the same device.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Prints `log` records (e.g. SparseProp's dense/sparse decisions) to stderr at the level
/// named by `SHEARS_LOG` (`error`, `warn`, `info`, `debug`, `trace`; default `warn`).
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("[{} {}] {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

/// Loads a recipe and prints its warnings (legal but probably wrong) to stderr.
fn load_recipe(
    path: &std::path::Path,
    overrides: &[shears::recipe::Override],
) -> Result<shears::recipe::Recipe, shears::recipe::RecipeError> {
    let recipe = shears::recipe::Recipe::load(path, overrides)?;
    for w in &recipe.warnings {
        eprintln!("warning: {}:{w}", path.display());
    }
    Ok(recipe)
}

fn init_logging() -> anyhow::Result<()> {
    let level = match std::env::var("SHEARS_LOG") {
        Ok(v) => v.parse::<log::LevelFilter>().map_err(|_| {
            anyhow::anyhow!("SHEARS_LOG={v}: expected off, error, warn, info, debug or trace")
        })?,
        Err(_) => log::LevelFilter::Warn,
    };
    static LOGGER: StderrLogger = StderrLogger;
    log::set_logger(&LOGGER).map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    log::set_max_level(level);
    Ok(())
}

/// Parses the command line, runs the subcommand and maps errors to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = init_logging() {
        eprintln!("error: {}", render(&err));
        return ExitCode::FAILURE;
    }
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Run(args) => run::execute(args),
        Command::Recipe(cmd) => ok(recipe::execute(cmd)),
        Command::Infer(args) => ok(infer::execute(args)),
        Command::Eval(args) => ok(eval::execute(args)),
        Command::Prune(args) => ok(prune::execute(args)),
        Command::Sparsity(args) => ok(sparsity::execute(args)),
        Command::Export(args) => ok(export::execute(args)),
        Command::Plot(args) => ok(plot::execute(args)),
        Command::Bench(cmd) => ok(bench::execute(cmd)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", render(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose message is already
/// part of the text (library errors often embed their source in their own message).
fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        if out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}
